//! The replica's protocol logic: a deterministic state machine.
//!
//! Inputs arrive as `on_*` calls (client requests, peer requests, replies to our own requests,
//! membership views, session events, timer ticks); outputs leave through the injected
//! [`Network`] and [`Coordinator`], and time comes from the injected [`Clock`]. No tokio, tonic
//! or ZooKeeper type appears here, so the same code runs in production and in the simulator.
//!
//! Where to look:
//! - `write_path`: the head's client writes and the tail's reads.
//! - `replication`: updates flowing down the chain, sent lists, the tail's acknowledgements.
//! - `reconfig`: reacting to membership views, state transfer, a new head pulling state.
//! - `session`: joining, the session lease, losing the session.
//! - `suspicion`: a successor that stops answering while both still reach ZooKeeper.

mod digest;
mod durability;
mod env;
mod membership;
mod reconfig;
mod replication;
mod session;
mod suspicion;
mod types;
mod write_path;

#[cfg(test)]
mod scripted;
#[cfg(any(test, feature = "sim"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use digest::{History, StateDigest, HISTORY_UPDATES};
pub use durability::{DiskCopy, Storage, StorageCommand};
pub use suspicion::{is_probe_epoch, EvictionRecord};
pub use write_path::WriteAccepted;

pub use env::{ChainMarker, Clock, Coordinator, Network, PeerReply, PeerRequest, PullAnswer, RequestKind};
pub use membership::View;
pub use types::*;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Limits and timings. Every queue the replica keeps has a bound here.
#[derive(Clone, Debug)]
pub struct Config {
    pub variant: Variant,
    /// Longest key a client may write or read, in bytes.
    pub max_key_bytes: usize,
    /// Client writes the head tracks until the tail confirms them; past this, `Busy`.
    pub max_pending_writes: usize,
    /// Updates forwarded but not yet known applied at the tail; the head refuses writes past it.
    pub max_sent: usize,
    /// Out-of-order updates held while a gap fills; past this, or this far ahead, refused.
    pub max_reorder: usize,
    /// How long after a confirmed-alive moment the session is trusted. Must be shorter than the
    /// ZooKeeper session timeout, so a replica stops acting before its successor takes over.
    pub lease_ms: Millis,
    /// How often a non-tail asks the tail how far it got, to trim its sent list.
    pub poll_interval_ms: Millis,
    pub retry_min_ms: Millis,
    pub retry_max_ms: Millis,
    /// How long a head that finds no state anywhere but in retained copies waits for the
    /// membership to stop changing before it adopts the best copy. After every session is lost
    /// at once (the root deleted, ZooKeeper cut off from all replicas) the replicas register
    /// again one by one, and the best copy may belong to the last of them.
    pub retained_settle_ms: Millis,
    /// How long a replica below the head may go without state from its predecessor before it
    /// joins again as a new replica. Our replicas resend a refused or lost transfer; other
    /// implementations send one when their successor changes and never again, so a replica
    /// that missed it would otherwise wait forever. Counted from the last sign of a transfer
    /// (see `note_transfer_receiving`), so a long transfer in progress never triggers it.
    pub stateless_rejoin_ms: Millis,
    /// Tail variant: writes one client (callback address) may have accepted at the head and
    /// not yet applied at the tail; past it that client's writes are refused (`Busy`). The
    /// tail queues at least this many callbacks per client, so an accepted write's callback is
    /// never dropped for want of room. 65,536 is what our client lets wait.
    pub max_writes_per_client: usize,
    /// How long a successor that owes us an answer may stay silent before this replica asks
    /// ZooKeeper to evict it (see `suspicion`); also how often the chain may lose a replica
    /// that way, and how long an evicted replica must reach the chain's tail before it joins
    /// again. 0 turns suspicion off.
    pub suspicion_ms: Millis,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            variant: Variant::Head,
            max_key_bytes: 1024,
            max_pending_writes: 20_000,
            max_sent: 100_000,
            max_reorder: 4096,
            lease_ms: 2_000,
            poll_interval_ms: 50,
            retry_min_ms: 20,
            retry_max_ms: 1_000,
            retained_settle_ms: 3_000,
            stateless_rejoin_ms: 10_000,
            max_writes_per_client: 65_536,
            // Off unless the embedding sets it: the runtime derives it from the ZooKeeper
            // session timeout (`NodeConfig::for_session`).
            suspicion_ms: 0,
        }
    }
}

/// How this replica feeds its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No successor, or we hold no state to give.
    Idle,
    /// The successor must get a full `stateTransfer` before anything else, at `retry_at`.
    NeedsTransfer { retry_at: Millis },
    /// We asked the successor which state it holds (`PeerRequest::Held`); the transfer, whole
    /// or only what it lacks, follows the answer and carries every update applied meanwhile.
    Asking,
    /// A transfer is on its way; updates sent after it queue behind it.
    Transferring,
    /// The successor has everything we sent; new updates go straight to it.
    Streaming,
}

/// What this process knows of the chain's held-state marker (`Coordinator::mark_chain_held`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Unknown,
    Asked,
    /// We created it: no replica ever held this chain's state, so we may start it empty at
    /// once. Used at most once, right when the answer arrives; otherwise it becomes `Existed`.
    Created,
    Existed,
    /// ZooKeeper did not answer; asked again after the next view.
    Unavailable,
}

#[derive(Clone, Debug, Default)]
struct HeadNotify {
    needed: bool,
    in_flight: bool,
    retry_at: Millis,
    /// When the call in flight was sent.
    sent_at: Millis,
    /// The head our calls have failed to reach, and since when (see `suspicion`).
    failing: Option<(NodeId, Millis)>,
}

#[derive(Clone, Debug, Default)]
struct Poll {
    in_flight: bool,
    next_at: Millis,
    /// When the poll in flight was sent.
    sent_at: Millis,
    /// The tail our polls have failed to reach, and since when (see `suspicion`).
    failing: Option<(NodeId, Millis)>,
}

#[derive(Clone, Debug, Default)]
struct Pull {
    in_flight: Option<NodeId>,
    next_at: Millis,
    /// Members that told us they hold no state, since the last view change.
    stateless: BTreeSet<NodeId>,
    /// Those of them that kept a copy from a lost session, and where it stands.
    retained: BTreeMap<NodeId, RetainedMark>,
    /// Whether the pull in flight asks for a retained copy.
    asked_retained: bool,
    /// Said once per view that our copy waits for replicas of its view to come back.
    said_copy_waits: bool,
    /// No state anywhere but in retained copies: the best is adopted at this time if the view
    /// has not changed by then.
    settle_until: Option<Millis>,
}

/// The state a replica held when it lost its session. It is not the chain's state (a replica
/// with a new session is a new node), but if every session was lost at once it is all that is
/// left, and a head that finds no state in the chain adopts the best copy instead of starting
/// empty. Copies rank by `RetainedMark`: a replica removed from the chain earlier (whose
/// unacknowledged updates another head may have reused xids for) last saw an older view than
/// the replicas that carried on, and among the members of one view, histories are prefixes of
/// each other, so the longest holds every acknowledged write.
#[derive(Clone, Debug)]
struct RetainedState {
    mark: RetainedMark,
    /// The addresses of the view `mark.view_version` names: the copy is offered only once they
    /// are all registered again (`ViewMark`).
    view_members: Vec<String>,
    store: Store,
    digest: StateDigest,
    /// Stands for a data dir refused as corrupt: there was a copy, nobody may adopt it, and
    /// while it is the best there is, no head starts the chain over (`with_storage`).
    refused: bool,
}

impl RetainedState {
    /// The copy as a state transfer from `src`, the process's current session. No sent list:
    /// whoever installs it passes the whole state on.
    fn into_transfer(self, src: NodeId) -> Transfer {
        Transfer {
            src,
            state_xid: self.mark.xid,
            state: self.store,
            sent: Vec::new(),
            base: None,
        }
    }
}

/// What one entry of the store counts for in `Describe::store_bytes`: its key's UTF-8 bytes and
/// its 4-byte value.
pub fn entry_bytes(key: &str) -> usize {
    key.len() + 4
}

/// `Describe::store_bytes` computed from scratch: O(keys), for installing a whole state.
pub fn store_bytes(store: &Store) -> usize {
    store.keys().map(|k| entry_bytes(k)).sum()
}

/// A snapshot for `chainctl status` and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    pub session_id: Option<NodeId>,
    pub role: Role,
    pub holds_state: bool,
    pub last_applied: Xid,
    pub tail_processed: Xid,
    pub sent_len: usize,
    pub reorder_len: usize,
    pub pending_len: usize,
    /// The lowest xid a client waits on (head variant), if any.
    pub oldest_pending: Option<Xid>,
    /// Whether the session lease is valid now (see `session.rs`).
    pub lease_valid: bool,
    pub keys: usize,
    /// Bytes of keys and values in the store (`store_bytes`): what a state transfer carries,
    /// less framing; the map's own overhead is not counted. Kept as a running count, so a
    /// metrics scrape never walks the store.
    pub store_bytes: usize,
    /// The copy kept from a lost session, if any (see `RetainedState`).
    pub retained: Option<RetainedMark>,
    /// Evicted from the chain and waiting to reach it again (see `suspicion`).
    pub parked: bool,
    /// The successor is still to get our state: a transfer is due, asked about, or on its way.
    pub transfer_owed: bool,
}

pub struct Replica<C, N, K> {
    cfg: Config,
    clock: C,
    net: N,
    coord: K,

    me: Option<NodeId>,
    view: View,
    /// `on_view`'s version of `view`.
    view_version: u64,
    /// Version of the newest view that listed this replica.
    member_version: u64,
    /// That view's members' addresses (see `ViewMark`).
    member_addrs: Vec<String>,
    pred: Option<NodeId>,
    succ: Option<Member>,

    /// Whether `store` is the chain's state (as of `last_applied`); a new replica holds none.
    holds_state: bool,
    store: Store,
    /// `store_bytes(&store)`, kept up to date by every change to `store`.
    store_bytes: usize,
    /// `StateDigest::of(&store)`, kept up to date the same way, and its recent values.
    digest: StateDigest,
    history: History,
    last_applied: Xid,
    /// Whether xid 0 was applied: the first update of a chain headed by an implementation that
    /// numbers from 0 (see `takes_first_xid_zero`).
    applied_xid_zero: bool,
    /// Highest xid known applied at the tail.
    tail_processed: Xid,
    /// Updates forwarded to the successor that the tail may not have applied, in xid order.
    sent: VecDeque<Update>,
    /// Updates from the predecessor that arrived ahead of a gap.
    reorder: BTreeMap<Xid, Update>,
    /// Updates held for a gap were dropped when the predecessor changed. A predecessor that
    /// comes back (our views can go A, B, A while A saw no change) believes we hold them and
    /// never resends them, so until a state transfer arrives an update past a gap is refused,
    /// which makes the sender fall back to a whole state transfer.
    dropped_held: bool,
    /// Head variant: clients waiting for their xid to reach the tail.
    pending: BTreeMap<Xid, ClientToken>,

    link: Link,
    link_epoch: u64,
    backoff: Millis,
    head_notify: HeadNotify,
    poll: Poll,
    pull: Pull,
    /// The replica we last gave our state to by `pullState`; it alone may pull again.
    pulled_by: Option<NodeId>,
    retained: Option<RetainedState>,
    marker: Marker,
    /// Since when this replica, below the head and without state, has waited for a transfer.
    awaiting_state_since: Millis,
    /// Tail variant, at the head: accepted writes not yet known applied at the tail, in xid
    /// order, with their client's callback address, and how many each client has.
    client_writes: VecDeque<(Xid, String)>,
    writes_per_client: BTreeMap<String, usize>,

    lease_until: Millis,

    link_watch: suspicion::LinkWatch,
    predecessor_watch: suspicion::PredecessorWatch,
    /// A predecessor known to be another implementation (`learn_predecessor_dialect`). Kept
    /// across session losses: a session id names one process for good.
    classic_pred: Option<NodeId>,
    evictions: suspicion::Evictions,
    /// Evicted from the chain: out of it until its tail answers again.
    parked: Option<suspicion::Parked>,
    durability: durability::Durability,
}

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    pub fn new(cfg: Config, clock: C, net: N, coord: K) -> Self {
        let backoff = cfg.retry_min_ms;
        Replica {
            cfg,
            clock,
            net,
            coord,
            me: None,
            view: View::default(),
            view_version: 0,
            member_version: 0,
            member_addrs: Vec::new(),
            pred: None,
            succ: None,
            holds_state: false,
            store: Store::new(),
            store_bytes: 0,
            digest: StateDigest::default(),
            history: History::default(),
            last_applied: 0,
            applied_xid_zero: false,
            tail_processed: 0,
            sent: VecDeque::new(),
            reorder: BTreeMap::new(),
            dropped_held: false,
            pending: BTreeMap::new(),
            link: Link::Idle,
            link_epoch: 0,
            backoff,
            head_notify: HeadNotify::default(),
            poll: Poll::default(),
            pull: Pull::default(),
            pulled_by: None,
            retained: None,
            marker: Marker::Unknown,
            awaiting_state_since: 0,
            client_writes: VecDeque::new(),
            writes_per_client: BTreeMap::new(),
            lease_until: 0,
            link_watch: suspicion::LinkWatch::default(),
            predecessor_watch: suspicion::PredecessorWatch::default(),
            classic_pred: None,
            evictions: suspicion::Evictions::default(),
            parked: None,
            durability: durability::Durability::default(),
        }
    }

    /// Ask the coordinator for a session; everything else follows from `on_joined`.
    pub fn start(&mut self) {
        self.coord.join();
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn session_id(&self) -> Option<NodeId> {
        self.me
    }
    pub fn view(&self) -> &View {
        &self.view
    }
    pub fn role(&self) -> Role {
        match self.me {
            Some(me) => self.view.role_of(me),
            None => Role::Outside,
        }
    }
    pub fn holds_state(&self) -> bool {
        self.holds_state
    }
    pub fn last_applied(&self) -> Xid {
        self.last_applied
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn sent(&self) -> impl Iterator<Item = &Update> {
        self.sent.iter()
    }
    pub fn net(&self) -> &N {
        &self.net
    }
    pub fn net_mut(&mut self) -> &mut N {
        &mut self.net
    }
    pub fn clock(&self) -> &C {
        &self.clock
    }
    pub fn coordinator(&self) -> &K {
        &self.coord
    }
    pub fn coordinator_mut(&mut self) -> &mut K {
        &mut self.coord
    }

    pub fn describe(&self) -> Describe {
        Describe {
            session_id: self.me,
            role: self.role(),
            holds_state: self.holds_state,
            last_applied: self.last_applied,
            tail_processed: self.tail_processed,
            sent_len: self.sent.len(),
            reorder_len: self.reorder.len(),
            pending_len: self.pending.len(),
            oldest_pending: self.pending.keys().next().copied(),
            lease_valid: self.lease_valid(),
            keys: self.store.len(),
            store_bytes: self.store_bytes,
            retained: self.retained.as_ref().map(|r| r.mark),
            parked: self.parked.is_some(),
            transfer_owed: matches!(self.link, Link::NeedsTransfer { .. } | Link::Asking | Link::Transferring),
        }
    }

    fn is_head_role(&self) -> bool {
        matches!(self.role(), Role::Head | Role::Single)
    }

    fn is_tail_role(&self) -> bool {
        matches!(self.role(), Role::Tail | Role::Single)
    }

    /// Timer: retries and periodic work. The runtime calls it every few milliseconds; nothing
    /// here depends on how often, only on `clock.now()`.
    pub fn on_tick(&mut self) {
        let now = self.clock.now();
        self.drive_link(now);
        self.drive_head_notify(now);
        self.drive_poll(now);
        self.drive_pull(now);
        self.drive_stateless_watchdog(now);
        self.drive_suspicion(now);
    }

    /// Serve a request that the sender addressed to session `to` (our runtime sends it along
    /// with every call; a foreign sender does not, and gets `None`). A process that lost its
    /// session and rejoined is a different replica: it must not answer for its old self, or a
    /// new head could take its "no state" for the old session's and start an empty chain.
    pub fn on_addressed_request(&mut self, to: Option<NodeId>, request: PeerRequest) -> PeerReply {
        if to.is_some() && to != self.me {
            // The sender treats a refusal of any request like "not from me, not now".
            return PeerReply::Refused;
        }
        let chain_sender = match &request {
            PeerRequest::Propose { src, .. } => Some(*src),
            PeerRequest::Transfer(t) => Some(t.src),
            _ => None,
        };
        if let Some(src) = chain_sender {
            self.learn_predecessor_dialect(src, to.is_none());
        }
        self.on_peer_request(request)
    }

    /// Serve a request from another replica: the one entry point for chain.proto's
    /// replica-to-replica calls.
    pub fn on_peer_request(&mut self, request: PeerRequest) -> PeerReply {
        let accepted = |ok: bool| if ok { PeerReply::Accepted } else { PeerReply::Refused };
        match request {
            PeerRequest::Propose { src, update } => accepted(self.on_propose(src, update)),
            PeerRequest::Transfer(t) => accepted(self.on_state_transfer(t)),
            PeerRequest::XidProcessed(xid) => accepted(self.on_xid_processed(xid)),
            PeerRequest::GetLatestXid => PeerReply::LatestXid(self.on_get_latest_xid()),
            PeerRequest::PullState { src, stateless, retained } => PeerReply::Pulled(self.on_pull_state(src, &stateless, retained)),
            PeerRequest::Held => PeerReply::Held(self.on_held()),
        }
    }

    /// The reply to something this replica sent with `Network::send`.
    pub fn on_peer_reply(&mut self, from: NodeId, epoch: u64, kind: RequestKind, reply: PeerReply) {
        let now = self.clock.now();
        if is_probe_epoch(epoch) {
            self.on_probe_reply(from, epoch, &reply, now);
            return;
        }
        match kind {
            RequestKind::Propose(_) | RequestKind::Transfer(_) | RequestKind::Held => self.on_link_reply(from, epoch, kind, reply, now),
            RequestKind::XidProcessed(_) => self.on_head_notify_reply(from, reply, now),
            RequestKind::GetLatestXid => self.on_poll_reply(from, reply, now),
            RequestKind::PullState => self.on_pull_reply(from, reply, now),
        }
    }
}
