//! The three things the core is driven through: a clock, a network and a coordinator.
//!
//! The core never blocks and never waits: every trait call only hands work to the runtime,
//! which reports the outcome back through the `Replica::on_*` methods. Production implements
//! these with tokio, tonic and ZooKeeper; the simulator with a seeded event queue.

use super::digest::StateDigest;
use super::types::{ClientOrigin, ClientToken, Member, Millis, NodeId, RetainedMark, Transfer, Update, WriteOutcome, Xid};

/// Monotonic milliseconds. Virtual in the simulator, so the core never reads a wall clock.
pub trait Clock {
    fn now(&self) -> Millis;
}

/// A request one replica makes of another (chain.proto's replica-to-replica calls, plus the
/// `chainrep.ext` pull used when a replica joins at the head).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRequest {
    /// `proposeStateUpdate` from `src` to its successor.
    Propose { src: NodeId, update: Update },
    /// `stateTransfer` from a predecessor to a new successor.
    Transfer(Transfer),
    /// `xidProcessed`, tail to head: every xid up to this one is applied at the tail.
    XidProcessed(Xid),
    /// `getLatestXid`, asked of the tail to trim sent lists.
    GetLatestXid,
    /// `chainrep.ext.pullState`: a stateless new head asks a replica below it for the state,
    /// or, with `retained`, for the copy it kept when it lost an earlier session.
    PullState {
        src: NodeId,
        stateless: Vec<NodeId>,
        retained: bool,
    },
    /// `chainrep.ext.held`: a predecessor asks its new successor which state it holds, before
    /// choosing between the whole state and only what the successor lacks.
    Held,
}

impl PeerRequest {
    pub fn kind(&self) -> RequestKind {
        match self {
            PeerRequest::Propose { update, .. } => RequestKind::Propose(update.xid),
            PeerRequest::Transfer(t) => RequestKind::Transfer(t.state_xid),
            PeerRequest::XidProcessed(x) => RequestKind::XidProcessed(*x),
            PeerRequest::GetLatestXid => RequestKind::GetLatestXid,
            PeerRequest::PullState { .. } => RequestKind::PullState,
            PeerRequest::Held => RequestKind::Held,
        }
    }
}

/// Which request a reply answers, without its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Propose(Xid),
    Transfer(Xid),
    XidProcessed(Xid),
    GetLatestXid,
    PullState,
    Held,
}

/// The answer to a pull, as the responder decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullAnswer {
    State(Transfer),
    /// The responder still acts as head, or does not see the asker above it yet.
    NotNow,
    /// The responder holds no state itself.
    NoState,
    /// The responder holds no state, but kept a copy from a session it lost.
    Retained(RetainedMark),
}

/// What came back for a `PeerRequest`. Every request the core sends gets exactly one reply,
/// if only `Unreachable` after the runtime's deadline, with one exception: a runtime that
/// batches proposals may answer a batch once, for its last update (an `Accepted` for the last
/// one covers every one before it; `suspicion` uses it to see the successor keep up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerReply {
    /// `rc = 0`.
    Accepted,
    /// `rc = 1`: the peer does not take this from us now.
    Refused,
    /// Transport failure or deadline: the request may or may not have been applied.
    Unreachable,
    /// `getLatestXid`: `Some` when the peer answered as tail.
    LatestXid(Option<Xid>),
    Pulled(PullAnswer),
    /// `held`: the xid and digest of the state the peer holds (or kept from an earlier
    /// session, or read from its data dir), `None` if it has none it would build on.
    Held(Option<(Xid, StateDigest)>),
}

/// Everything the core sends out. Sends to one peer must be delivered in the order they were
/// made (the receiver copes with reordering, but in-order delivery keeps it cheap).
pub trait Network {
    /// `epoch` comes back with the reply, so replies to a superseded link are recognised.
    fn send(&mut self, to: &Member, epoch: u64, request: PeerRequest);
    /// Head variant: finish the client call waiting on `token`.
    fn complete_client(&mut self, token: ClientToken, outcome: WriteOutcome);
    /// Tail variant: `TailClient.cxidProcessed` on the client's own server. The runtime queues
    /// and retries it until a deadline (`runtime::callbacks`); the core hears nothing back.
    fn notify_client(&mut self, origin: &ClientOrigin);
}

/// Membership. Views and session loss flow into the core as events; this is what the core asks.
pub trait Coordinator {
    /// Open a new session and register under the root; the runtime then calls
    /// `Replica::on_joined` and feeds views. Called at start and after the session is lost.
    fn join(&mut self);
    /// Record, once and for good, that this chain has held state (a persistent marker beside
    /// the root), answered through `Replica::on_chain_marker`. Whoever creates the marker is the
    /// only replica that may start a brand-new chain without waiting for retained copies.
    fn mark_chain_held(&mut self);
    /// Give up the current session (its znode goes at once) and report it lost, so that this
    /// replica joins again as a new one at the tail: the way to get a fresh state transfer from
    /// a predecessor that will not send one again.
    fn rejoin(&mut self);
    /// Ask for `suspect` to be evicted from the chain: write the chain's eviction record, only if
    /// its version is still `seen_version` (`None`: there is none yet). Every replica hears of a
    /// new record through `Replica::on_eviction_record`; a lost race writes nothing. The
    /// record alone removes no one: the suspect leaves by itself, or is removed later.
    fn report_suspect(&mut self, suspect: NodeId, seen_version: Option<u64>);
    /// Delete `suspect`'s member znode (it was evicted and its lease is over).
    fn remove_member(&mut self, suspect: NodeId);
    /// Leave the chain but keep the session: our member znode goes, views keep coming, and
    /// losing the session is still reported. Used by an evicted replica (see `suspicion`).
    fn leave_chain(&mut self);
}

/// What `Coordinator::mark_chain_held` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainMarker {
    /// We created the marker: no replica of this chain has ever held state before.
    Created,
    /// The marker was there: the chain held state once, and its copies may be registering.
    Existed,
    /// ZooKeeper did not answer; nothing is known.
    Unavailable,
}
