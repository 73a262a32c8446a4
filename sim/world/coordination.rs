//! The world's side of ZooKeeper (`sim::zk` holds the model): sessions joining, pinging and
//! expiring, and watches delivered to each watcher in order, with its own delays.

use crate::core::{ChainMarker, EvictionRecord, Member, Millis, NodeId};
use crate::sim::events::{Endpoint, Ev};
use crate::sim::procs::Status;
use crate::sim::world::World;
use crate::sim::zk::{Session, WatchEvent, Watcher, ID_ROOM};

impl World {
    /// Deliver to one watcher, after everything already on its way to it.
    fn watch_send(&mut self, watcher: Watcher, event: WatchEvent) {
        let d = self.delay();
        // The runtime reads the eviction record when it lists the members.
        let listing = matches!(event, WatchEvent::View(..) | WatchEvent::Eviction(_));
        let free = self.zk.lane(listing).get(&watcher).copied().unwrap_or(0);
        let mut at = (self.now() + d).max(free + 1);
        match watcher {
            // A client whose ZooKeeper connection stalls keeps using its old view meanwhile.
            Watcher::Client(c) => at = at.max(self.clients[c].view_stalled_until),
            Watcher::Replica(p, _) if listing => {
                at = at.max(self.zk.membership_stalled_until.get(&p).copied().unwrap_or(0));
            }
            Watcher::Replica(..) => {}
        }
        self.zk.lane(listing).insert(watcher, at);
        if let (Watcher::Replica(..), WatchEvent::View(_, version)) = (watcher, &event) {
            self.zk.newest_listing.insert(watcher, *version);
        }
        self.schedule_at(at, Ev::ZkWatch { watcher, event });
    }

    /// `proc`'s next session sorts before every session there is now (see `sorts_first`).
    pub fn next_session_sorts_first(&mut self, proc: usize) {
        self.zk.sorts_first.insert(proc);
    }

    /// `proc`'s next session sorts right after session `after`, if an id there is free
    /// (`ZkModel::free_id_after`).
    pub fn next_session_sorts_after(&mut self, proc: usize, after: NodeId) {
        self.zk.sorts_after.insert(proc, after);
    }

    /// `proc`'s next session sorts right before session `before`, if an id there is free: in
    /// the room drawn ids leave after the id `ID_ROOM` below it.
    pub fn next_session_sorts_before(&mut self, proc: usize, before: NodeId) {
        self.zk.sorts_after.insert(proc, before.saturating_sub(ID_ROOM));
    }

    /// The membership and its version, as a listing would return it now.
    pub fn listing(&self) -> (Vec<Member>, u64) {
        (self.zk.members(), self.zk.version)
    }

    /// `proc` acts on a listing now, as its runtime would when a held-back listing finally
    /// returns; whatever older listings are still on their way to it are then ignored.
    pub fn deliver_listing(&mut self, proc: usize, (members, version): (Vec<Member>, u64)) {
        let watcher = Watcher::Replica(proc, self.procs[proc].incarnation);
        self.zk.acted_listing.insert(watcher, version);
        // Later listings queue behind this one, not behind the held-back ones it supersedes.
        self.zk.watchers.insert(watcher, self.now());
        self.with_replica(proc, |r| r.on_view(members, version));
    }

    /// Hold back `proc`'s membership listings until `until`; its heartbeats carry on.
    pub fn stall_membership(&mut self, proc: usize, until: Millis) {
        self.zk.membership_stalled_until.insert(proc, until);
    }

    fn broadcast_view(&mut self) {
        let members = self.zk.members();
        // ZooKeeper sends no notifications on an expired session: a replica cut off or paused
        // past its timeout hears nothing until it learns that its session is gone.
        let watchers: Vec<Watcher> = self
            .zk
            .watchers
            .keys()
            .copied()
            .filter(|w| match w {
                Watcher::Client(_) => true,
                Watcher::Replica(..) => self
                    .zk
                    .watcher_session
                    .get(w)
                    .is_some_and(|s| self.zk.sessions.get(s).is_some_and(|s| !s.expired)),
            })
            .collect();
        for w in watchers {
            self.watch_send(w, WatchEvent::View(members.clone(), self.zk.version));
        }
    }

    pub fn zk_join(&mut self, proc: usize, incarnation: u32) {
        if self.procs[proc].incarnation != incarnation || self.procs[proc].status == Status::Crashed {
            return;
        }
        if self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            // The runtime keeps retrying until ZooKeeper answers.
            let t = self.cfg.session_timeout / 4;
            self.schedule(t, Ev::ZkJoin { proc, incarnation });
            return;
        }
        self.zk.counter += 1;
        let mut server = if self.cfg.multi_server_ids { self.dice.zk.range(1, 4) } else { 1 };
        if self.zk.sorts_first.remove(&proc) {
            server = 0;
        }
        let mut id = (server << 56) | (self.zk.counter * ID_ROOM);
        if let Some(free) = self.zk.sorts_after.remove(&proc).and_then(|after| self.zk.free_id_after(after)) {
            id = free;
        }
        let now = self.now();
        self.zk.sessions.insert(
            id,
            Session {
                proc,
                last_heard: now,
                expired: false,
                loss_told: false,
            },
        );
        self.zk.znodes.insert(id, self.procs[proc].addr.clone());
        self.zk.version += 1;
        let watcher = Watcher::Replica(proc, incarnation);
        self.zk.watchers.entry(watcher).or_insert(now);
        self.zk.watcher_session.insert(watcher, id);
        self.watch_send(watcher, WatchEvent::Joined(id));
        self.watch_send(watcher, WatchEvent::Alive(now));
        self.broadcast_view();
        if let Some(record) = self.zk.eviction {
            self.watch_send(watcher, WatchEvent::Eviction(record));
        }
    }

    /// The session of `proc`'s incarnation `incarnation`, if it is live.
    fn live_session(&self, proc: usize, incarnation: u32) -> Option<NodeId> {
        let session = *self.zk.watcher_session.get(&Watcher::Replica(proc, incarnation))?;
        self.zk.sessions.get(&session).filter(|s| !s.expired).map(|_| session)
    }

    /// Creating the marker is atomic: exactly one replica ever hears `Created`. The runtime
    /// asks over its current session, and again on the next one if there is none now.
    pub fn zk_mark_chain_held(&mut self, proc: usize, incarnation: u32) {
        if !self.is_current(proc, incarnation) {
            return;
        }
        if self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) || self.live_session(proc, incarnation).is_none() {
            let t = self.cfg.session_timeout / 4;
            self.schedule(t, Ev::ZkMarkChainHeld { proc, incarnation });
            return;
        }
        let answer = if self.zk.marker {
            ChainMarker::Existed
        } else {
            self.zk.marker = true;
            ChainMarker::Created
        };
        self.watch_send(Watcher::Replica(proc, incarnation), WatchEvent::Marker(answer));
    }

    /// The replica deletes its znode and closes its session, then hears that it is lost.
    /// Cut off from ZooKeeper, the delete and close cannot go out: the znode stays until the
    /// session expires, but the replica moves on all the same.
    pub fn zk_leave(&mut self, proc: usize, incarnation: u32) {
        if !self.is_current(proc, incarnation) {
            return;
        }
        let Some(id) = self.live_session(proc, incarnation) else { return };
        let reached = !self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk);
        let now = self.now();
        if let Some(s) = self.zk.sessions.get_mut(&id) {
            s.expired |= reached;
            s.loss_told = true;
        }
        self.trace
            .note(now, &format!("replica {proc} gives up session {id:x} to join again"));
        if reached && self.zk.znodes.remove(&id).is_some() {
            self.zk.version += 1;
            self.broadcast_view();
        }
        self.watch_send(Watcher::Replica(proc, incarnation), WatchEvent::SessionLost);
    }

    pub fn zk_watch(&mut self, watcher: Watcher, event: WatchEvent) {
        match watcher {
            Watcher::Client(c) => {
                if let WatchEvent::View(members, _) = event {
                    self.clients[c].view = members;
                }
            }
            Watcher::Replica(proc, incarnation) => {
                if self.procs[proc].incarnation != incarnation {
                    return;
                }
                // A watch fires once and the runtime lists the children again: when the list
                // changed twice meanwhile, it sees only the newer one. Half the time the older
                // is skipped, so a replica can miss a member that came and went.
                if let WatchEvent::View(_, version) = &event {
                    let newest = self.zk.newest_listing.get(&watcher).copied().unwrap_or(0);
                    if *version < newest && self.dice.zk.chance(500_000) {
                        return;
                    }
                    if self.zk.acted_listing.get(&watcher).is_some_and(|acted| version <= acted) {
                        return;
                    }
                    self.zk.acted_listing.insert(watcher, *version);
                }
                self.with_replica(proc, |r| match event {
                    WatchEvent::Joined(id) => r.on_joined(id),
                    WatchEvent::View(members, version) => r.on_view(members, version),
                    WatchEvent::Alive(at) => r.on_session_alive(at),
                    WatchEvent::SessionLost => r.on_session_lost(),
                    WatchEvent::Marker(answer) => r.on_chain_marker(answer),
                    WatchEvent::Eviction(record) => r.on_eviction_record(record),
                });
            }
        }
    }

    /// The runtime's periodic round trip to ZooKeeper, which renews the lease.
    pub fn zk_ping(&mut self, proc: usize, incarnation: u32) {
        if self.procs[proc].incarnation != incarnation || self.procs[proc].status == Status::Crashed {
            return;
        }
        let t = self.cfg.session_timeout / 4;
        self.schedule(t, Ev::ZkPing { proc, incarnation });
        // An evicted replica has left the chain but keeps its session, and its runtime keeps
        // proving it alive.
        let session = self.procs[proc].replica.as_ref().and_then(|r| r.session_id());
        let parked = self.procs[proc].replica.as_ref().is_some_and(|r| r.is_parked());
        // Its session may have ended meanwhile (every session ended at once): its next round
        // trip tells it so, as for any other replica.
        let session = session.or_else(|| {
            parked
                .then(|| self.zk.watcher_session.get(&Watcher::Replica(proc, incarnation)).copied())
                .flatten()
        });
        let Some(session) = session else { return };
        if self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            return;
        }
        let sent_at = self.now();
        let d = self.delay();
        self.schedule(
            d,
            Ev::ZkPingArrive {
                proc,
                incarnation,
                session,
                sent_at,
            },
        );
    }

    pub fn zk_ping_arrive(&mut self, proc: usize, incarnation: u32, session: NodeId, sent_at: Millis) {
        let now = self.now();
        let watcher = Watcher::Replica(proc, incarnation);
        let Some(s) = self.zk.sessions.get_mut(&session) else { return };
        if s.expired {
            if !s.loss_told {
                s.loss_told = true;
                self.watch_send(watcher, WatchEvent::SessionLost);
            }
            return;
        }
        s.last_heard = now;
        if self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            return;
        }
        // The runtime renews the lease only by a round trip that finds no eviction record
        // naming it; finding one, it reports the record instead (`core::suspicion`).
        match self.zk.eviction.filter(|r| r.suspect == session) {
            Some(record) => self.watch_send(watcher, WatchEvent::Eviction(record)),
            None => self.watch_send(watcher, WatchEvent::Alive(sent_at)),
        }
    }

    pub fn zk_expiry(&mut self) {
        let now = self.now();
        let timeout = self.cfg.session_timeout;
        let expired: Vec<NodeId> = self
            .zk
            .sessions
            .iter()
            .filter(|(_, s)| !s.expired && now.saturating_sub(s.last_heard) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(s) = self.zk.sessions.get_mut(id) {
                s.expired = true;
                let proc = s.proc;
                self.trace.note(now, &format!("session {id:x} of replica {proc} expired"));
            }
            self.zk.znodes.remove(id);
            self.zk.version += 1;
        }
        if !expired.is_empty() {
            self.broadcast_view();
        }
        self.schedule(20, Ev::ZkExpiry);
    }

    /// Every session ends at once, as when an operator deletes the root (the production
    /// coordinator treats a vanished znode as a lost session) or ZooKeeper loses sight of every
    /// replica. Each replica hears of it at its next round trip.
    pub fn zk_expire_all(&mut self) {
        let now = self.now();
        for (id, s) in self.zk.sessions.iter_mut().filter(|(_, s)| !s.expired) {
            s.expired = true;
            self.trace.note(now, &format!("session {id:x} of replica {} ended", s.proc));
        }
        if !self.zk.znodes.is_empty() {
            self.zk.znodes.clear();
            self.zk.version += 1;
            self.broadcast_view();
        }
    }

    /// Replica watchers whose sessions are live: they hear every change of the record.
    fn live_replica_watchers(&self) -> Vec<Watcher> {
        self.zk
            .watchers
            .keys()
            .copied()
            .filter(|w| {
                matches!(w, Watcher::Replica(..))
                    && self
                        .zk
                        .watcher_session
                        .get(w)
                        .is_some_and(|s| self.zk.sessions.get(s).is_some_and(|s| !s.expired))
            })
            .collect()
    }

    /// The eviction record is written only on the version the reporter saw, so of two racing
    /// reporters one wins. A request that cannot reach ZooKeeper is lost: the core asks again
    /// a suspicion period later if it still suspects.
    pub fn zk_evict(&mut self, proc: usize, incarnation: u32, suspect: NodeId, seen_version: Option<u64>) {
        if !self.is_current(proc, incarnation) || self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            return;
        }
        let Some(reporter) = self.live_session(proc, incarnation) else {
            return;
        };
        let now = self.now();
        let current = self.zk.eviction.map(|r| r.version);
        if current != seen_version {
            self.trace.note(
                now,
                &format!("replica {proc} lost the race to evict {suspect:x}: the record is at {current:?}"),
            );
            return;
        }
        let record = EvictionRecord {
            version: current.map_or(0, |v| v + 1),
            reporter,
            suspect,
        };
        self.zk.eviction = Some(record);
        self.trace.note(
            now,
            &format!(
                "replica {proc} ({reporter:x}) records the eviction of {suspect:x}, version {}",
                record.version
            ),
        );
        for w in self.live_replica_watchers() {
            self.watch_send(w, WatchEvent::Eviction(record));
        }
    }

    /// An evicted replica deletes its own znode and keeps its session. Cut off from ZooKeeper,
    /// the runtime retries until its session ends.
    pub fn zk_leave_chain(&mut self, proc: usize, incarnation: u32) {
        if !self.is_current(proc, incarnation) {
            return;
        }
        let Some(id) = self.live_session(proc, incarnation) else { return };
        if self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            let t = self.cfg.session_timeout / 4;
            self.schedule(t, Ev::ZkLeaveChain { proc, incarnation });
            return;
        }
        if self.zk.znodes.remove(&id).is_some() {
            self.trace
                .note(self.now(), &format!("replica {proc} leaves the chain, keeping session {id:x}"));
            self.zk.version += 1;
            self.broadcast_view();
        }
    }

    /// The reporter deletes an evicted replica's znode once its lease is over.
    pub fn zk_remove(&mut self, proc: usize, incarnation: u32, suspect: NodeId) {
        if !self.is_current(proc, incarnation) || self.is_blocked(Endpoint::Replica(proc), Endpoint::Zk) {
            return;
        }
        if self.live_session(proc, incarnation).is_none() {
            return;
        }
        if self.zk.znodes.remove(&suspect).is_some() {
            self.trace.note(self.now(), &format!("replica {proc} removes evicted {suspect:x}"));
            self.zk.version += 1;
            self.broadcast_view();
        }
    }
}
