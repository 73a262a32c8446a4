//! ZooKeeper as the replicas see it: sessions that expire when not heard from, ephemeral
//! znodes named by session id, and children watches delivered in order to each watcher, each
//! with its own delays. Session ids are drawn as a multi-server ensemble draws them: the top
//! byte is the id of the server that created the session, so a new replica can sort anywhere.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::{ChainMarker, EvictionRecord, Member, Millis, NodeId};

/// Drawn session ids are this far apart, so a scenario can place a session right after any
/// other (`ZkModel::free_id_after`); ZooKeeper's own ids on one server are consecutive, but
/// only their order matters here.
pub(super) const ID_ROOM: NodeId = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watcher {
    Replica(usize, u32),
    Client(usize),
}

#[derive(Clone, Debug)]
pub enum WatchEvent {
    Joined(NodeId),
    /// Members and the view's version, which grows with every change (ZooKeeper's pzxid).
    View(Vec<Member>, u64),
    Alive(Millis),
    SessionLost,
    Marker(ChainMarker),
    /// The chain's eviction record, as first read or changed (`core::suspicion`).
    Eviction(EvictionRecord),
}

pub(super) struct Session {
    pub(super) proc: usize,
    pub(super) last_heard: Millis,
    pub(super) expired: bool,
    pub(super) loss_told: bool,
}

#[derive(Default)]
pub struct ZkModel {
    pub(super) counter: u64,
    pub(super) sessions: BTreeMap<NodeId, Session>,
    pub(super) znodes: BTreeMap<NodeId, String>,
    pub(super) version: u64,
    pub(super) watchers: BTreeMap<Watcher, Millis>,
    /// What the replica learns from its own requests (registering, the heartbeat that renews
    /// the lease, the heartbeat that finds the session gone) travels apart from membership
    /// listings, which may lag behind: the production runtime keeps sending heartbeats while a
    /// listing fails and is retried.
    pub(super) session_lane: BTreeMap<Watcher, Millis>,
    /// A replica's membership notifications reach it no earlier than this (a slow listing),
    /// while its heartbeats, and so its lease, carry on.
    pub(super) membership_stalled_until: BTreeMap<usize, Millis>,
    /// The session each replica watcher's notifications belong to.
    pub(super) watcher_session: BTreeMap<Watcher, NodeId>,
    /// Replicas whose next session is created by the lowest-numbered server, so it sorts
    /// before every other member: the targeted scenarios need a particular replica at the head.
    pub(super) sorts_first: BTreeSet<usize>,
    /// The newest membership version sent to each replica watcher.
    pub(super) newest_listing: BTreeMap<Watcher, u64>,
    /// The newest membership version each replica watcher acted on: the runtime never goes
    /// back to an older listing.
    pub(super) acted_listing: BTreeMap<Watcher, u64>,
    /// Replicas whose next session takes the first free id after a given one, so it sorts
    /// right below that member.
    pub(super) sorts_after: BTreeMap<usize, NodeId>,
    /// The chain's persistent held-state marker exists.
    pub(super) marker: bool,
    /// The chain's eviction record, if one was ever written.
    pub(super) eviction: Option<EvictionRecord>,
}

impl ZkModel {
    pub fn add_client_watcher(&mut self, client: usize) {
        self.watchers.insert(Watcher::Client(client), 0);
    }

    /// When each watcher's last notification on a lane arrives: membership listings, or the
    /// session's own answers.
    pub(super) fn lane(&mut self, listing: bool) -> &mut BTreeMap<Watcher, Millis> {
        if listing {
            &mut self.watchers
        } else {
            &mut self.session_lane
        }
    }

    pub fn forget_replica_watchers(&mut self, proc: usize) {
        let other = |w: &Watcher| !matches!(w, Watcher::Replica(p, _) if *p == proc);
        self.watchers.retain(|w, _| other(w));
        self.session_lane.retain(|w, _| other(w));
        self.watcher_session.retain(|w, _| other(w));
        self.newest_listing.retain(|w, _| other(w));
        self.acted_listing.retain(|w, _| other(w));
    }

    /// ZooKeeper heard from this session within `within` ms: it is not about to expire.
    pub fn heard_recently(&self, session: NodeId, now: Millis, within: Millis) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| !s.expired && now.saturating_sub(s.last_heard) < within)
    }

    pub fn is_member(&self, session: NodeId) -> bool {
        self.znodes.contains_key(&session)
    }

    /// A session id no session has had that sorts right after `after` (before the next
    /// member): drawn ids leave room after each one (`ID_ROOM`).
    pub fn free_id_after(&self, after: NodeId) -> Option<NodeId> {
        let mut candidate = after.checked_add(1)?;
        while self.sessions.contains_key(&candidate) {
            candidate = candidate.checked_add(1)?;
        }
        let next_member = self.znodes.range(after + 1..).next().map_or(NodeId::MAX, |(id, _)| *id);
        (candidate < next_member && candidate % ID_ROOM != 0).then_some(candidate)
    }

    pub fn members(&self) -> Vec<Member> {
        self.znodes
            .iter()
            .map(|(id, addr)| Member {
                id: *id,
                addr: addr.clone(),
            })
            .collect()
    }
}
