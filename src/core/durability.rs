//! Durable replicas (`--data-dir`): what waits for the disk.
//!
//! The core hands every applied update, every installed state and every view mark to an
//! injected [`Storage`] and hears back, through [`Replica::on_durable`], how far the disk has
//! got. An update is passed on (forwarded to the successor, or, at the tail, acknowledged) only
//! once it is durable here. So an update reaches a replica only after every replica above it has
//! it on disk, and the tail acknowledges (head variant: `xidProcessed`; tail variant: the
//! client's callback; `getLatestXid`) only what it has on disk itself: a write is acknowledged
//! once every replica it passed through has it on disk, and survives losing power to all of
//! them. The price is one group commit per replica on a write's way down the chain. The head
//! variant's head is the exception: it answers its clients itself, so it forwards at once and
//! answers only once the tail confirmed the write and its own disk has it (`mark_processed`),
//! which takes its fsync off the write's path.
//!
//! A copy is adopted after every replica lost power only once every replica of the view it is
//! from is registered again (`ViewMark`, `reconfig::all_registered`), and a data dir refused as
//! corrupt stands as a copy nobody may adopt, so that no head starts the chain over while the
//! data may be on a disk that is not back yet.
//!
//! What is on disk is, at every moment, either this session's state or the copy kept from a
//! lost session (`RetainedState`): a new session does not touch the disk until it installs a
//! state. A replica restarted on its data dir therefore starts with that copy as its retained
//! state, ranked by the view version it last marked, and the whole-chain restart goes through
//! the retained-copy adoption exactly as after every session was lost in memory. View marks are
//! written only while the replica holds the chain's state: a copy from an earlier history must
//! keep the old version it had, or it could outrank the chain's own copies.
//!
//! Without a `Storage` (memory-only, the default) everything counts as durable the moment it is
//! applied and nothing here changes the replica's behaviour.

use super::*;

/// What the core asks of its storage, in order (`storage::ReplicaLog::apply` carries it out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageCommand {
    /// Append this update (just applied) to the log.
    Append(Update),
    /// The state is now exactly `store` at `xid`, as a member of `view`: a state transfer
    /// installed, a retained copy adopted, or a new chain started empty. Later reports of
    /// progress carry `epoch`.
    Install {
        epoch: u64,
        store: Store,
        xid: Xid,
        view: ViewMark,
    },
    /// The newest view that lists this replica, while it holds the chain's state.
    MarkView(ViewMark),
}

/// Where the core's state goes to survive a power loss. `submit` only queues the command; the
/// runtime reports progress through `Replica::on_durable`, in the order commands were made.
pub trait Storage: Send {
    fn submit(&mut self, command: StorageCommand);
}

/// What a data dir held at start: the state of the last session that wrote it.
#[derive(Clone, Debug)]
pub struct DiskCopy {
    pub store: Store,
    pub xid: Xid,
    pub view: ViewMark,
    /// The data dir failed its checksums and was set aside: there was a copy, its content is
    /// lost to this replica (store empty, xid 0).
    pub refused: bool,
}

impl DiskCopy {
    /// What a data dir refused as corrupt leaves.
    pub fn refused() -> DiskCopy {
        DiskCopy {
            store: Store::new(),
            xid: 0,
            view: ViewMark::default(),
            refused: true,
        }
    }
}

#[derive(Default)]
pub(super) struct Durability {
    storage: Option<Box<dyn Storage>>,
    /// Bumped by every `install`; progress reported for an older one is about a state this
    /// replica no longer holds.
    epoch: u64,
    /// Highest xid on disk, in the current epoch.
    durable_xid: Xid,
    /// Applied, not yet on disk, in xid order: passed on as the disk catches up. Bounded by what
    /// the head lets into the chain (`max_pending_writes`, `max_writes_per_client`, `max_sent`).
    waiting: VecDeque<Update>,
}

impl Durability {
    pub(super) fn enabled(&self) -> bool {
        self.storage.is_some()
    }

    /// Applied updates not yet on disk.
    pub(super) fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// The highest applied xid that may be acknowledged: everything up to it is on disk.
    pub(super) fn acknowledgeable(&self, last_applied: Xid) -> Xid {
        if self.enabled() {
            last_applied.min(self.durable_xid)
        } else {
            last_applied
        }
    }
}

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    /// Make this replica durable: from now on it passes updates on only once `storage` has
    /// them. `copy` is what the storage held at start; it becomes the retained copy. A refused
    /// one becomes a retained copy that is never adopted but keeps a head that finds no other
    /// copy from starting the chain over empty: the chain's data may be on a disk whose replica
    /// is not back yet.
    pub fn with_storage(mut self, storage: Box<dyn Storage>, copy: Option<DiskCopy>) -> Self {
        self.durability.storage = Some(storage);
        if let Some(copy) = copy.filter(|c| c.refused || c.xid > 0 || !c.store.is_empty()) {
            let mut store = copy.store;
            store.retain(|_, v| *v != 0);
            let digest = StateDigest::of(&store);
            self.retained = Some(RetainedState {
                mark: RetainedMark {
                    view_version: copy.view.version,
                    xid: copy.xid,
                },
                view_members: copy.view.members,
                store,
                digest,
                refused: copy.refused,
            });
        }
        self
    }

    /// Highest xid durable here (`last_applied` when memory-only).
    pub fn durable_xid(&self) -> Xid {
        self.durability.acknowledgeable(self.last_applied)
    }

    /// The storage made everything up to `xid` of install `epoch` durable.
    pub fn on_durable(&mut self, epoch: u64, xid: Xid) {
        if epoch != self.durability.epoch || xid <= self.durability.durable_xid {
            return;
        }
        self.durability.durable_xid = self.durability.durable_xid.max(xid);
        if !self.pending.is_empty() {
            // Clients whose writes the tail confirmed may have waited for our own disk.
            self.mark_processed(self.tail_processed);
        }
        let mut ready = Vec::new();
        while self.durability.waiting.front().is_some_and(|u| u.xid <= xid) {
            ready.extend(self.durability.waiting.pop_front());
        }
        if self.succ.is_some() {
            for update in ready {
                self.pass_on(update);
            }
        } else if self.holds_state {
            // Also when nothing was waiting: the tail's acknowledgement covers only what is
            // durable, so a snapshot that landed may let it acknowledge more.
            self.applied_at_tail(&ready);
        }
    }

    /// Applied: pass it on now, or once it is durable.
    pub(super) fn persist_and_pass_on(&mut self, update: Update) {
        let head_of_head_variant = self.cfg.variant == Variant::Head && self.is_head_role() && self.succ.is_some();
        let Some(storage) = self.durability.storage.as_mut() else {
            self.pass_on(update);
            return;
        };
        storage.submit(StorageCommand::Append(update.clone()));
        if head_of_head_variant {
            // The head variant's head answers the client itself, and only once its own disk
            // has the write as well as the tail's word (`mark_processed`): it may forward first,
            // so that its fsync runs beside those below it instead of before them.
            self.pass_on(update);
        } else {
            self.durability.waiting.push_back(update);
        }
    }

    /// The state was replaced wholesale; `deferred` are updates it covers that still have to be
    /// passed on (forwarded, or called back at the tail) once it is on disk. `false`: memory
    /// only, pass them on now.
    pub(super) fn persist_install(&mut self, deferred: &[Update]) -> bool {
        let view = self.member_view();
        let Some(storage) = self.durability.storage.as_mut() else {
            return false;
        };
        self.durability.epoch += 1;
        self.durability.durable_xid = 0;
        storage.submit(StorageCommand::Install {
            epoch: self.durability.epoch,
            store: self.store.clone(),
            xid: self.last_applied,
            view,
        });
        // Those waiting from before are covered by the new state too.
        let mut waiting: Vec<Update> = std::mem::take(&mut self.durability.waiting).into();
        waiting.extend(deferred.iter().cloned());
        waiting.sort_by_key(|u| u.xid);
        waiting.dedup_by_key(|u| u.xid);
        self.durability.waiting = waiting.into();
        true
    }

    /// The sent list a state transfer carries: besides what went to the successor, what still
    /// waits for our disk. The state holds those updates too, and a receiver that acknowledges
    /// (a tail calling clients back) must know their clients.
    pub(super) fn sent_for_transfer(&self) -> Vec<Update> {
        let mut sent: Vec<Update> = self.sent.iter().cloned().collect();
        let newer = |u: &&Update| u.xid > 0 && sent.last().is_none_or(|last| u.xid > last.xid);
        let waiting: Vec<Update> = self.durability.waiting.iter().filter(newer).cloned().collect();
        sent.extend(waiting);
        sent
    }

    /// This replica became a member of a newer view while holding the chain's state.
    pub(super) fn persist_view(&mut self) {
        let view = self.member_view();
        if let Some(storage) = self.durability.storage.as_mut() {
            if self.holds_state {
                storage.submit(StorageCommand::MarkView(view));
            }
        }
    }

    /// The newest view that listed this replica, as its disk records it.
    fn member_view(&self) -> ViewMark {
        ViewMark {
            version: self.member_version,
            members: self.member_addrs.clone(),
        }
    }

    /// A new session: nothing waits any more (the disk keeps the copy it has; see the module
    /// documentation). Progress reports for it are ignored from now on.
    pub(super) fn forget_durability(&mut self) {
        self.durability.waiting.clear();
        self.durability.epoch += 1;
        self.durability.durable_xid = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn inc(c: &mut Cluster, key: &str, delta: i32) -> ClientToken {
        let (token, result) = c.inc(key, delta);
        assert!(result.is_ok(), "write refused: {result:?}");
        token
    }

    fn proposes_to(c: &Cluster, from: NodeId, to: NodeId) -> usize {
        c.pending_from(from)
            .iter()
            .filter(|m| m.to.id == to && matches!(m.request, PeerRequest::Propose { .. }))
            .count()
    }

    /// Restart every process on its disk with new sessions (old id * 10), all listed at once.
    fn restart_all(c: &mut Cluster, copies: BTreeMap<NodeId, Option<DiskCopy>>) -> Vec<NodeId> {
        let ids: Vec<NodeId> = copies.keys().map(|id| id * 10).collect();
        for (id, copy) in copies {
            // The same machine, at the same address, with a new session.
            c.machines.insert(id * 10, c.machine(id));
            c.add_durable(id * 10, copy);
        }
        c.set_view(&ids);
        c.settle_for(8);
        ids
    }

    #[test]
    fn a_write_moves_down_the_chain_only_as_each_disk_has_it() {
        let mut c = Cluster::durable(Config::default(), &[1, 2, 3]);
        c.auto_sync = false;
        let t = inc(&mut c, "k", 7);
        // The head variant's head forwards at once: it answers the client itself, later.
        assert_eq!(proposes_to(&c, 1, 2), 1);
        c.deliver_all();
        assert_eq!(c.get(2).last_applied(), 1);
        assert_eq!(c.get(3).last_applied(), 0, "the middle forwarded before its disk had it");
        c.sync_disk(2);
        c.deliver_all();
        assert_eq!(c.get(3).last_applied(), 1);
        // The tail applied it and may serve it, but acknowledges only what its disk has.
        c.settle();
        assert_eq!(c.outcome(t), None, "acknowledged before the tail's disk had it");
        assert_eq!(c.get(3).on_get_latest_xid(), Some(0));
        c.sync_disk(3);
        c.settle();
        // The tail has confirmed it; the head's own disk still lacks it.
        assert_eq!(c.get(1).describe().tail_processed, 1);
        assert_eq!(c.outcome(t), None, "acknowledged before the head's disk had it");
        c.sync_disk(1);
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
    }

    #[test]
    fn the_tail_variant_calls_a_client_back_only_once_the_tail_has_the_write_on_disk() {
        let cfg = Config {
            variant: Variant::Tail,
            ..Config::default()
        };
        let mut c = Cluster::durable(cfg, &[1, 2]);
        c.auto_sync = false;
        let origin = ClientOrigin {
            host: "client".into(),
            port: 9000,
            cxid: 1,
        };
        let (_, result) = c.write_at(1, WriteOp::Inc { key: "k".into(), delta: 1 }, Some(origin.clone()));
        assert!(result.is_ok());
        // The tail calls clients back without a word from the head: the head must have the
        // write on disk before the tail sees it.
        assert_eq!(proposes_to(&c, 1, 2), 0, "the head forwarded before its disk had it");
        c.sync_disk(1);
        c.settle();
        assert_eq!(c.get(2).last_applied(), 1);
        assert!(c.get(2).net().notified.is_empty(), "called back before the tail's disk had it");
        c.sync_disk(2);
        assert_eq!(c.get(2).net().notified, vec![origin]);
    }

    #[test]
    fn a_lone_replica_acknowledges_only_what_its_disk_has() {
        let mut c = Cluster::durable(Config::default(), &[1]);
        c.auto_sync = false;
        let t = inc(&mut c, "k", 1);
        c.settle();
        assert_eq!(c.outcome(t), None);
        c.sync_disk(1);
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
    }

    /// The transfers `from` sent `to`, whole (`None`) or since an xid.
    fn transfers(c: &Cluster, from: NodeId, to: NodeId) -> Vec<(Option<Xid>, usize)> {
        c.delivered
            .iter()
            .filter(|(f, m)| *f == from && m.to.id == to)
            .filter_map(|(_, m)| match &m.request {
                PeerRequest::Transfer(t) => Some((t.base.map(|(x, _)| x), t.state.len())),
                _ => None,
            })
            .collect()
    }

    /// A chain of three with 50 keys, whose tail 3 is then killed with its disk synced.
    fn tail_killed_with_its_disk() -> (Cluster, DiskCopy) {
        let mut c = Cluster::durable(Config::default(), &[1, 2, 3]);
        for i in 0..50 {
            inc(&mut c, &format!("k{i}"), i + 1);
        }
        c.settle();
        let copy = c.disks[&3].recover().expect("the tail's disk holds the state");
        assert_eq!(copy.xid, 50);
        c.crash(3);
        c.set_view(&[1, 2]);
        c.settle();
        (c, copy)
    }

    #[test]
    fn a_replica_back_on_its_disk_gets_only_the_keys_written_while_it_was_away() {
        let (mut c, copy) = tail_killed_with_its_disk();
        inc(&mut c, "k3", 100);
        inc(&mut c, "new", 7);
        c.del("k4").1.expect("del accepted");
        c.settle();
        // The same machine back under a new session, at the tail.
        c.machines.insert(30, 3);
        c.add_durable(30, Some(copy));
        c.set_view(&[1, 2, 30]);
        c.settle();
        // Three keys written since xid 50 (one of them deleted: sent as 0), not the 50 keys.
        assert_eq!(transfers(&c, 2, 30), vec![(Some(50), 3)]);
        assert_eq!(c.get(30).store(), c.get(2).store());
        assert_eq!(c.read("k3"), Ok(104));
        assert_eq!(c.read("k4"), Ok(0));
        assert_eq!(c.read("new"), Ok(7));
        let t = inc(&mut c, "k0", 1);
        c.settle();
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
    }

    #[test]
    fn a_copy_that_differs_at_its_xid_gets_the_whole_state() {
        // The copy claims xid 50 like the chain's, but holds another write under it: a head's
        // write nobody else saw, whose xid the chain gave to another one.
        let (mut c, mut copy) = tail_killed_with_its_disk();
        copy.store.insert("k49".into(), 1_000);
        c.machines.insert(30, 3);
        c.add_durable(30, Some(copy));
        c.set_view(&[1, 2, 30]);
        c.settle();
        assert_eq!(transfers(&c, 2, 30), vec![(None, 50)]);
        assert_eq!(c.get(30).store(), c.get(2).store());
        assert_eq!(c.read("k49"), Ok(50));
    }

    #[test]
    fn a_delta_for_a_state_the_receiver_does_not_hold_is_refused() {
        let (mut c, copy) = tail_killed_with_its_disk();
        c.machines.insert(30, 3);
        c.add_durable(30, Some(copy));
        c.set_view(&[1, 2, 30]);
        let held = c.get(30).on_held().expect("its disk's state");
        assert_eq!(held.0, 50);
        let delta = |base| Transfer {
            src: 2,
            state_xid: 51,
            state: [("k1".to_string(), 9)].into_iter().collect(),
            sent: Vec::new(),
            base: Some(base),
        };
        let wrong = (50, StateDigest(held.1 .0 ^ 1));
        assert_eq!(
            c.get_mut(30).on_peer_request(PeerRequest::Transfer(delta(wrong))),
            PeerReply::Refused
        );
        assert_eq!(
            c.get_mut(30).on_peer_request(PeerRequest::Transfer(delta((49, held.1)))),
            PeerReply::Refused
        );
        assert!(!c.get(30).holds_state());
        assert_eq!(
            c.get_mut(30).on_peer_request(PeerRequest::Transfer(delta(held))),
            PeerReply::Accepted
        );
        assert_eq!(c.get(30).store().get("k1"), Some(&9));
        assert_eq!(c.get(30).store().get("k2"), Some(&3));
    }

    #[test]
    fn every_replica_loses_power_and_the_chain_comes_back_from_its_disks() {
        let mut c = Cluster::durable(Config::default(), &[1, 2, 3]);
        let acked: Vec<ClientToken> = (0..5).map(|i| inc(&mut c, &format!("k{i}"), i + 1)).collect();
        c.settle();
        for t in &acked {
            assert_eq!(c.outcome(*t), Some(&WriteOutcome::Committed));
        }
        // One more write is on the head's disk only when the power goes.
        c.auto_sync = false;
        let _unacked = inc(&mut c, "late", 1);
        c.sync_disk(1);
        let copies = c.power_loss();
        c.auto_sync = true;
        let ids = restart_all(&mut c, copies);
        assert_eq!(c.head(), ids[0]);
        for i in 0..5 {
            assert_eq!(c.read(&format!("k{i}")), Ok(i + 1), "k{i} after the restart");
        }
        let t = inc(&mut c, "k0", 10);
        c.settle();
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
        assert_eq!(c.read("k0"), Ok(11));
    }

    #[test]
    fn the_disk_of_a_head_removed_earlier_loses_to_the_chain_that_carried_on() {
        let mut c = Cluster::durable(Config::default(), &[1, 2, 3]);
        inc(&mut c, "k", 1);
        c.settle();
        // Head 1 takes two writes that reach its own disk and nobody else, then dies: its copy
        // ends up *longer* than the chain's, so only the view it is from can rank it lower.
        c.auto_sync = false;
        inc(&mut c, "k", 100);
        inc(&mut c, "k", 1000);
        c.sync_disk(1);
        c.crash(1);
        c.auto_sync = true;
        // The chain goes on and gives xid 2 to another, acknowledged write.
        c.set_view(&[2, 3]);
        c.settle();
        let (t, r) = c.write_at(2, WriteOp::Inc { key: "k".into(), delta: 5 }, None);
        assert_eq!(r, Ok(WriteAccepted::Pending(2)));
        c.settle();
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
        // Power loss everywhere; the old head's disk still says k = 1101 at xid 3.
        let copies = c.power_loss();
        assert_eq!(
            copies[&1].as_ref().map(|d| (d.xid, d.store.get("k").copied())),
            Some((3, Some(1101)))
        );
        restart_all(&mut c, copies);
        assert_eq!(c.read("k"), Ok(6), "the old head's copy won");
    }

    #[test]
    fn a_copy_kept_on_disk_does_not_take_the_version_of_views_seen_before_it_holds_state_again() {
        let mut c = Cluster::durable(Config::default(), &[1, 2]);
        inc(&mut c, "k", 1);
        c.settle();
        // 2 loses its session and comes back as 20; until it gets the state, its disk keeps the
        // old copy under the old view's version, whatever views it sees meanwhile.
        let before = c.disks[&2].recover().map(|d| d.view.version);
        c.auto_sync = false;
        c.rejoin(2, 20);
        c.set_view(&[1, 20]);
        let marks_while_stateless = c.disks[&20]
            .0
            .lock()
            .map(|s| s.ops.iter().filter(|op| matches!(op, StorageCommand::MarkView(_))).count())
            .unwrap_or(0);
        assert_eq!(marks_while_stateless, 0, "a view was marked on the old copy");
        c.sync_disks();
        assert_eq!(c.disks[&20].recover().map(|d| d.view.version), before);
        c.auto_sync = true;
        c.settle();
        // Once it holds the state again, its disk holds that state under the new view.
        let now = c.disks[&20].recover();
        assert!(now
            .as_ref()
            .is_some_and(|d| d.view.version > before.unwrap_or(0) && d.store.get("k") == Some(&1)));
    }

    #[test]
    fn a_copy_waits_for_every_replica_of_its_view_before_it_is_adopted() {
        let mut c = Cluster::durable(Config::default(), &[1, 2]);
        inc(&mut c, "k", 1);
        c.settle();
        // 2 leaves the chain (its copy says: view of {1, 2}, k = 1); 1 goes on alone and
        // acknowledges more.
        c.crash(2);
        c.set_view(&[1]);
        c.settle();
        let t = inc(&mut c, "k", 10);
        c.settle();
        assert_eq!(c.outcome(t), Some(&WriteOutcome::Committed));
        let copies = c.power_loss();
        // 2's process comes back first, alone: its copy is not the newest, and it cannot know
        // that until 1 is back. It must wait, not adopt, however long the view stays the same.
        c.machines.insert(20, 2);
        c.add_durable(20, copies[&2].clone());
        c.set_view(&[20]);
        c.settle_for(20);
        assert!(!c.get(20).holds_state(), "adopted a copy while a replica of its view was missing");
        // 1 comes back with the newer copy: that one is adopted.
        c.machines.insert(10, 1);
        c.add_durable(10, copies[&1].clone());
        c.set_view(&[10, 20]);
        c.settle_for(8);
        assert_eq!(c.read("k"), Ok(11));
    }
}
