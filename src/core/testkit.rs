//! In-memory clock, network and coordinator, and a synchronous cluster harness for driving
//! replicas by hand in unit tests (and, with the `sim` feature, from the simulator).
//!
//! Everything here is deterministic: replicas live in a `BTreeMap`, outboxes are `Vec`s, and
//! messages are delivered in the order they were sent, sender by sender in id order.

use super::{
    ClientOrigin, ClientToken, Clock, Config, Coordinator, DiskCopy, Member, Millis, Network, NodeId, PeerReply, PeerRequest, ReadRejected,
    Replica, Role, Storage, StorageCommand, Store, ViewMark, WriteAccepted, WriteOp, WriteOutcome, WriteRejected, Xid,
};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// One clock shared by every replica of a cluster, moved only by the test.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(pub Rc<Cell<Millis>>);

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, now: Millis) {
        self.0.set(now);
    }
    pub fn advance(&self, ms: Millis) {
        self.0.set(self.0.get() + ms);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.get()
    }
}

/// A message a replica sent and nobody has delivered yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Member,
    pub epoch: u64,
    pub request: PeerRequest,
}

/// Records everything a replica hands to the network.
#[derive(Clone, Debug, Default)]
pub struct RecordingNet {
    pub outbox: Vec<Outgoing>,
    pub completed: Vec<(ClientToken, WriteOutcome)>,
    pub notified: Vec<ClientOrigin>,
}

impl RecordingNet {
    pub fn outcome_of(&self, token: ClientToken) -> Option<&WriteOutcome> {
        self.completed.iter().find(|(t, _)| *t == token).map(|(_, o)| o)
    }
}

impl Network for RecordingNet {
    fn send(&mut self, to: &Member, epoch: u64, request: PeerRequest) {
        self.outbox.push(Outgoing {
            to: to.clone(),
            epoch,
            request,
        });
    }
    fn complete_client(&mut self, token: ClientToken, outcome: WriteOutcome) {
        self.completed.push((token, outcome));
    }
    fn notify_client(&mut self, origin: &ClientOrigin) {
        self.notified.push(origin.clone());
    }
}

/// Records what a replica asks of its coordinator. Marker requests go unanswered unless a test
/// answers them (`Replica::on_chain_marker`), so a replica behaves as one whose ZooKeeper is
/// slow to answer: it waits out `retained_settle_ms`.
#[derive(Clone, Debug, Default)]
pub struct RecordingCoord {
    pub joins: usize,
    pub marker_requests: usize,
    pub rejoins: usize,
    /// `report_suspect` calls: the suspect and the record version the reporter saw.
    pub suspects: Vec<(NodeId, Option<u64>)>,
    pub leaves: usize,
    pub removals: Vec<NodeId>,
}

impl Coordinator for RecordingCoord {
    fn join(&mut self) {
        self.joins += 1;
    }
    fn mark_chain_held(&mut self) {
        self.marker_requests += 1;
    }
    fn rejoin(&mut self) {
        self.rejoins += 1;
    }
    fn report_suspect(&mut self, suspect: NodeId, seen_version: Option<u64>) {
        self.suspects.push((suspect, seen_version));
    }
    fn leave_chain(&mut self) {
        self.leaves += 1;
    }
    fn remove_member(&mut self, suspect: NodeId) {
        self.removals.push(suspect);
    }
}

pub type TestReplica = Replica<ManualClock, RecordingNet, RecordingCoord>;

pub fn member(id: NodeId) -> Member {
    Member {
        id,
        addr: format!("node-{id:x}:7000"),
    }
}

pub fn members(ids: &[NodeId]) -> Vec<Member> {
    ids.iter().copied().map(member).collect()
}

/// A replica on its own, joined as `id`, with a live lease and no view yet.
pub fn replica(cfg: Config, clock: &ManualClock, id: NodeId) -> TestReplica {
    let mut r = Replica::new(cfg, clock.clone(), RecordingNet::default(), RecordingCoord::default());
    r.start();
    r.on_joined(id);
    r.on_session_alive(clock.now());
    r
}

/// A replica's disk as a list of operations: the first `synced` of them survive a power loss,
/// the rest are lost. The test decides when a sync happens (`ModelDisk::sync`).
#[derive(Clone, Debug, Default)]
pub struct ModelDisk(pub Arc<Mutex<ModelDiskState>>);

#[derive(Debug, Default)]
pub struct ModelDiskState {
    pub ops: Vec<StorageCommand>,
    pub synced: usize,
}

impl ModelDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, ModelDiskState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make everything durable; returns what to report to the replica: the epoch of the last
    /// install and the last xid, if anything was written since the last sync.
    pub fn sync(&self) -> Option<(u64, Xid)> {
        let mut s = self.state();
        if s.synced == s.ops.len() {
            return None;
        }
        s.synced = s.ops.len();
        let (mut epoch, mut xid) = (0, 0);
        for op in &s.ops {
            match op {
                StorageCommand::Install { epoch: e, xid: x, .. } => (epoch, xid) = (*e, *x),
                StorageCommand::Append(u) => xid = u.xid,
                StorageCommand::MarkView(_) => {}
            }
        }
        Some((epoch, xid))
    }

    /// What recovery finds after a power loss: the synced operations replayed.
    pub fn recover(&self) -> Option<DiskCopy> {
        let s = self.state();
        let mut copy: Option<DiskCopy> = None;
        let mut view = ViewMark::default();
        for op in &s.ops[..s.synced] {
            match op {
                StorageCommand::Install { store, xid, view: v, .. } => {
                    view = v.clone();
                    copy = Some(DiskCopy {
                        store: store.clone(),
                        xid: *xid,
                        view: view.clone(),
                        refused: false,
                    });
                }
                StorageCommand::Append(u) => {
                    let c = copy.get_or_insert_with(|| DiskCopy {
                        store: Store::new(),
                        xid: 0,
                        view: view.clone(),
                        refused: false,
                    });
                    if u.value == 0 {
                        c.store.remove(&u.key);
                    } else {
                        c.store.insert(u.key.clone(), u.value);
                    }
                    c.xid = u.xid;
                }
                StorageCommand::MarkView(v) => {
                    view = v.clone();
                    if let Some(c) = copy.as_mut() {
                        c.view = view.clone();
                    }
                }
            }
        }
        copy
    }

    /// Operations not yet synced.
    pub fn unsynced(&self) -> usize {
        let s = self.state();
        s.ops.len() - s.synced
    }
}

impl Storage for ModelDisk {
    fn submit(&mut self, command: StorageCommand) {
        self.state().ops.push(command);
    }
}

/// Guards `deliver_all` against replicas that keep talking forever.
const MAX_ROUNDS: usize = 10_000;

/// A chain of replicas wired together through their recording networks.
pub struct Cluster {
    pub cfg: Config,
    pub clock: ManualClock,
    pub replicas: BTreeMap<NodeId, TestReplica>,
    /// Nodes whose lease `advance` does not renew, so that it runs out.
    pub lease_paused: BTreeSet<NodeId>,
    /// Requests delivered so far, for tests that count traffic.
    pub delivered: Vec<(NodeId, Outgoing)>,
    /// Old session id -> new one, for a process that lost its session and joined again: it
    /// keeps its address, so requests meant for its old self still reach it.
    pub aliases: BTreeMap<NodeId, NodeId>,
    next_token: ClientToken,
    /// The last membership set handed out and its version: a new set gets the next version,
    /// as ZooKeeper's pzxid grows with every change of children.
    view_version: (Vec<NodeId>, u64),
    /// Session id -> the id of the process's first session, whose address (`member`) it keeps:
    /// a process that joins again, or restarts on its disk, is still reached at its address.
    pub machines: BTreeMap<NodeId, NodeId>,
    /// Durable replicas (`Cluster::durable`): each process's disk, by its current session id.
    pub disks: BTreeMap<NodeId, ModelDisk>,
    /// Whether `deliver_all` syncs every disk between rounds.
    pub auto_sync: bool,
    /// Senders whose requests arrive without naming the session they are meant for, as those
    /// of another implementation of chain.proto do.
    pub classic: BTreeSet<NodeId>,
}

impl Cluster {
    pub fn new(cfg: Config) -> Self {
        Cluster {
            cfg,
            clock: ManualClock::new(),
            replicas: BTreeMap::new(),
            lease_paused: BTreeSet::new(),
            delivered: Vec::new(),
            aliases: BTreeMap::new(),
            next_token: 1,
            view_version: (Vec::new(), 0),
            machines: BTreeMap::new(),
            disks: BTreeMap::new(),
            auto_sync: false,
            classic: BTreeSet::new(),
        }
    }

    /// Like `with_nodes`, each replica with a `ModelDisk` that syncs between delivery rounds.
    pub fn durable(cfg: Config, ids: &[NodeId]) -> Self {
        let mut c = Cluster::new(cfg);
        c.auto_sync = true;
        let Some(&first) = ids.iter().min() else {
            return c;
        };
        c.add_durable(first, None);
        c.set_view(&[first]);
        c.tick_all();
        // A durable chain starts empty only as a brand-new chain: its first replica creates
        // the chain's marker (`Coordinator::mark_chain_held`).
        c.get_mut(first).on_chain_marker(super::ChainMarker::Created);
        c.sync_disks();
        c.advance(c.cfg.retained_settle_ms);
        c.tick_all();
        for &id in ids.iter().filter(|&&id| id != first) {
            c.add_durable(id, None);
        }
        c.set_view(ids);
        c.settle();
        c
    }

    /// Start a durable replica with session `id` on a fresh disk holding `copy` (what a data
    /// dir held at start), or an empty one.
    pub fn add_durable(&mut self, id: NodeId, copy: Option<DiskCopy>) {
        let disk = ModelDisk::default();
        if let Some(c) = &copy {
            let mut s = disk.state();
            s.ops.push(StorageCommand::Install {
                epoch: 0,
                store: c.store.clone(),
                xid: c.xid,
                view: c.view.clone(),
            });
            s.synced = 1;
        }
        let mut r = Replica::new(
            self.cfg.clone(),
            self.clock.clone(),
            RecordingNet::default(),
            RecordingCoord::default(),
        )
        .with_storage(Box::new(disk.clone()), copy);
        r.start();
        r.on_joined(id);
        r.on_session_alive(self.now());
        self.replicas.insert(id, r);
        self.disks.insert(id, disk);
    }

    /// Sync `id`'s disk and tell the replica.
    pub fn sync_disk(&mut self, id: NodeId) {
        let Some(done) = self.disks.get(&id).and_then(ModelDisk::sync) else {
            return;
        };
        if let Some(r) = self.replicas.get_mut(&id) {
            r.on_durable(done.0, done.1);
        }
    }

    pub fn sync_disks(&mut self) {
        for id in self.disks.keys().copied().collect::<Vec<_>>() {
            self.sync_disk(id);
        }
    }

    /// Every process loses power at once: replicas and their unsynced writes are gone; what
    /// each disk recovers is returned, by the old session id.
    pub fn power_loss(&mut self) -> BTreeMap<NodeId, Option<DiskCopy>> {
        self.replicas.clear();
        self.aliases.clear();
        std::mem::take(&mut self.disks)
            .into_iter()
            .map(|(id, d)| (id, d.recover()))
            .collect()
    }

    /// A cluster of `ids` that all see the same view and have exchanged every message.
    /// The lowest id starts the chain alone, as the first replica of a deployment does; the
    /// others join below it.
    pub fn with_nodes(cfg: Config, ids: &[NodeId]) -> Self {
        let mut c = Cluster::new(cfg);
        let Some(&first) = ids.iter().min() else {
            return c;
        };
        c.add(first);
        c.set_view(&[first]);
        // Alone, it starts the chain once the view has settled.
        c.tick_all();
        c.advance(c.cfg.retained_settle_ms);
        c.tick_all();
        for &id in ids.iter().filter(|&&id| id != first) {
            c.add(id);
        }
        c.set_view(ids);
        c.settle();
        c
    }

    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Start a fresh replica with session `id`; it sees no view until one is delivered.
    pub fn add(&mut self, id: NodeId) {
        let r = replica(self.cfg.clone(), &self.clock, id);
        self.replicas.insert(id, r);
    }

    /// The replica dies: it drops out of the cluster, and requests to it become `Unreachable`.
    pub fn crash(&mut self, id: NodeId) -> Option<TestReplica> {
        self.replicas.remove(&id)
    }

    /// The process `old` lost its session and joins again as `new`, with empty state.
    pub fn rejoin(&mut self, old: NodeId, new: NodeId) {
        let Some(mut r) = self.replicas.remove(&old) else {
            return;
        };
        r.on_session_lost();
        r.on_joined(new);
        r.on_session_alive(self.now());
        self.replicas.insert(new, r);
        self.aliases.insert(old, new);
        let machine = self.machine(old);
        self.machines.insert(new, machine);
        if let Some(disk) = self.disks.remove(&old) {
            self.disks.insert(new, disk);
        }
    }

    /// The process session `id` belongs to (see `machines`).
    pub fn machine(&self, id: NodeId) -> NodeId {
        self.machines.get(&id).copied().unwrap_or(id)
    }

    /// Which live replica a request addressed to `id` reaches.
    fn route(&self, mut id: NodeId) -> Option<NodeId> {
        while !self.replicas.contains_key(&id) {
            id = *self.aliases.get(&id)?;
        }
        Some(id)
    }

    pub fn get(&self, id: NodeId) -> &TestReplica {
        self.replicas.get(&id).unwrap_or_else(|| panic!("no replica {id}"))
    }

    pub fn get_mut(&mut self, id: NodeId) -> &mut TestReplica {
        self.replicas.get_mut(&id).unwrap_or_else(|| panic!("no replica {id}"))
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.replicas.keys().copied().collect()
    }

    /// Deliver the view `ids` to every live replica.
    pub fn set_view(&mut self, ids: &[NodeId]) {
        let targets = self.ids();
        self.set_view_for(&targets, ids);
    }

    /// Deliver the view `ids` to `targets` only: views reach replicas at different times.
    pub fn set_view_for(&mut self, targets: &[NodeId], ids: &[NodeId]) {
        let mut set = ids.to_vec();
        set.sort_unstable();
        if set != self.view_version.0 {
            self.view_version = (set, self.view_version.1 + 1);
        }
        let version = self.view_version.1;
        let view: Vec<Member> = ids
            .iter()
            .map(|&id| Member {
                id,
                addr: member(self.machine(id)).addr,
            })
            .collect();
        for t in targets {
            if let Some(r) = self.replicas.get_mut(t) {
                r.on_view(view.clone(), version);
            }
        }
    }

    /// Move time on and renew every lease that is not paused.
    pub fn advance(&mut self, ms: Millis) {
        self.clock.advance(ms);
        let now = self.now();
        for (id, r) in self.replicas.iter_mut() {
            if !self.lease_paused.contains(id) {
                r.on_session_alive(now);
            }
        }
    }

    pub fn tick_all(&mut self) {
        for r in self.replicas.values_mut() {
            r.on_tick();
        }
    }

    /// Messages waiting in `from`'s outbox.
    pub fn pending_from(&self, from: NodeId) -> &[Outgoing] {
        self.replicas.get(&from).map(|r| r.net().outbox.as_slice()).unwrap_or(&[])
    }

    pub fn in_flight(&self) -> usize {
        self.replicas.values().map(|r| r.net().outbox.len()).sum()
    }

    /// Take `from`'s `index`-th queued message out of its outbox.
    pub fn take(&mut self, from: NodeId, index: usize) -> Option<Outgoing> {
        let outbox = &mut self.replicas.get_mut(&from)?.net_mut().outbox;
        (index < outbox.len()).then(|| outbox.remove(index))
    }

    /// Serve `msg` at its target, or find the target gone; the sender hears nothing yet.
    pub fn serve(&mut self, msg: &Outgoing) -> PeerReply {
        self.serve_naming(msg, Some(msg.to.id))
    }

    /// Serve `msg` from `from` at its target: as `serve`, without the addressee if `from` is
    /// `classic`.
    fn serve_from(&mut self, from: NodeId, msg: &Outgoing) -> PeerReply {
        let addressee = (!self.classic.contains(&from)).then_some(msg.to.id);
        self.serve_naming(msg, addressee)
    }

    /// Serve `msg` as a request that names `addressee` as the session it is meant for.
    fn serve_naming(&mut self, msg: &Outgoing, addressee: Option<NodeId>) -> PeerReply {
        match self.route(msg.to.id).and_then(|id| self.replicas.get_mut(&id)) {
            Some(target) => target.on_addressed_request(addressee, msg.request.clone()),
            None => PeerReply::Unreachable,
        }
    }

    /// Serve `msg` and feed the reply back to `from`.
    pub fn deliver(&mut self, from: NodeId, msg: Outgoing) {
        let reply = self.serve_from(from, &msg);
        self.reply(from, &msg, reply);
        self.delivered.push((from, msg));
    }

    /// Feed `reply` back to `from` for `msg` without serving it anywhere.
    pub fn reply(&mut self, from: NodeId, msg: &Outgoing, reply: PeerReply) {
        if let Some(sender) = self.route(from).and_then(|id| self.replicas.get_mut(&id)) {
            sender.on_peer_reply(msg.to.id, msg.epoch, msg.request.kind(), reply);
        }
    }

    /// Deliver `from`'s oldest message.
    pub fn deliver_next(&mut self, from: NodeId) -> bool {
        match self.take(from, 0) {
            Some(msg) => {
                self.deliver(from, msg);
                true
            }
            None => false,
        }
    }

    /// `from`'s oldest message is lost before it arrives: the sender hears `Unreachable`.
    pub fn drop_next(&mut self, from: NodeId) -> bool {
        match self.take(from, 0) {
            Some(msg) => {
                self.reply(from, &msg, PeerReply::Unreachable);
                true
            }
            None => false,
        }
    }

    /// `from`'s oldest message arrives but its reply is lost: the sender hears `Unreachable`.
    pub fn lose_reply_next(&mut self, from: NodeId) -> bool {
        match self.take(from, 0) {
            Some(msg) => {
                self.serve_from(from, &msg);
                self.reply(from, &msg, PeerReply::Unreachable);
                true
            }
            None => false,
        }
    }

    /// Deliver messages until every outbox is empty: in rounds, each round taking every
    /// replica's whole outbox in id order, so each sender's messages keep their order.
    pub fn deliver_all(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut batch = Vec::new();
            for (id, r) in self.replicas.iter_mut() {
                for msg in r.net_mut().outbox.drain(..) {
                    batch.push((*id, msg));
                }
            }
            if batch.is_empty() {
                if self.auto_sync && self.disks.values().any(|d| d.unsynced() > 0) {
                    self.sync_disks();
                    continue;
                }
                return;
            }
            for (from, msg) in batch {
                self.deliver(from, msg);
            }
        }
        panic!("messages still flowing after {MAX_ROUNDS} rounds");
    }

    /// Let retries and polls run until nothing is left to say: `rounds` times, advance by
    /// the longest retry interval, tick everyone and deliver everything.
    pub fn settle_for(&mut self, rounds: usize) {
        self.deliver_all();
        for _ in 0..rounds {
            let step = self.cfg.retry_max_ms.max(self.cfg.poll_interval_ms) + 1;
            self.advance(step);
            self.tick_all();
            self.deliver_all();
        }
    }

    pub fn settle(&mut self) {
        self.settle_for(4);
    }

    /// Replicas that consider themselves head (or head and tail).
    pub fn heads(&self) -> Vec<NodeId> {
        let is_head = |r: &TestReplica| matches!(r.role(), Role::Head | Role::Single);
        self.replicas.iter().filter(|(_, r)| is_head(r)).map(|(id, _)| *id).collect()
    }

    pub fn tails(&self) -> Vec<NodeId> {
        let is_tail = |r: &TestReplica| matches!(r.role(), Role::Tail | Role::Single);
        self.replicas.iter().filter(|(_, r)| is_tail(r)).map(|(id, _)| *id).collect()
    }

    pub fn head(&self) -> NodeId {
        *self.heads().first().expect("no replica thinks it is the head")
    }

    pub fn tail(&self) -> NodeId {
        *self.tails().last().expect("no replica thinks it is the tail")
    }

    pub fn token(&mut self) -> ClientToken {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// A client write at replica `at`, with a fresh token.
    pub fn write_at(
        &mut self,
        at: NodeId,
        op: WriteOp,
        origin: Option<ClientOrigin>,
    ) -> (ClientToken, Result<WriteAccepted, WriteRejected>) {
        let token = self.token();
        let result = self.get_mut(at).client_write(token, op, origin);
        (token, result)
    }

    /// `increment(key, delta)` at the head.
    pub fn inc(&mut self, key: &str, delta: i32) -> (ClientToken, Result<WriteAccepted, WriteRejected>) {
        let head = self.head();
        self.write_at(head, WriteOp::Inc { key: key.into(), delta }, None)
    }

    pub fn del(&mut self, key: &str) -> (ClientToken, Result<WriteAccepted, WriteRejected>) {
        let head = self.head();
        self.write_at(head, WriteOp::Del { key: key.into() }, None)
    }

    /// `get(key)` at the tail.
    pub fn read(&self, key: &str) -> Result<i32, ReadRejected> {
        self.get(self.tail()).client_read(key)
    }

    /// How `token`'s write ended, at whichever replica completed it.
    pub fn outcome(&self, token: ClientToken) -> Option<&WriteOutcome> {
        self.replicas.values().find_map(|r| r.net().outcome_of(token))
    }
}
