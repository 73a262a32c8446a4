//! Plain data the replica core works with. Nothing here knows about gRPC or ZooKeeper.

use std::collections::BTreeMap;

/// A replica's ZooKeeper session id: it names the replica and fixes its place in the chain.
pub type NodeId = u64;
/// Position of an update in the chain's single write sequence; the first update is xid 1.
pub type Xid = u64;
/// Milliseconds on the injected monotonic clock.
pub type Millis = u64;
/// Opaque handle the runtime uses to find the client call a write belongs to.
pub type ClientToken = u64;

/// The key/value state. A `BTreeMap` so that iteration order (state transfer, tests) is
/// deterministic; keys whose value is 0 are not stored, because a missing key reads 0.
pub type Store = BTreeMap<String, i32>;

/// One replica as the coordinator lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub id: NodeId,
    /// `host:port` of its gRPC server.
    pub addr: String,
}

/// Which flavour of chain.proto the chain speaks; they differ only in how a client learns
/// that its write is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `HeadChainReplica`: the head answers the client once the tail reports the xid processed.
    Head,
    /// `TailChainReplica`: the head answers on acceptance, the tail calls the client back.
    Tail,
}

/// Where the tail variant's tail sends `cxidProcessed` once the update is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOrigin {
    pub host: String,
    pub port: i32,
    pub cxid: i32,
}

/// One entry of the write sequence: the absolute value the key takes at `xid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub xid: Xid,
    pub key: String,
    pub value: i32,
    pub origin: Option<ClientOrigin>,
}

/// The whole state of a replica as one message: what `stateTransfer` and `pullState` carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub src: NodeId,
    pub state_xid: Xid,
    pub state: Store,
    /// Updates at or below `state_xid` that the tail may not have applied yet, in xid order.
    pub sent: Vec<Update>,
    /// `None`: `state` is the whole state. `Some((xid, digest))`: `state` holds only the keys
    /// written after `xid` (value 0: deleted), for a receiver whose own state at `xid` has
    /// `digest` (`core::digest`).
    pub base: Option<(Xid, super::digest::StateDigest)>,
}

/// Where a retained copy of the state stands: the version of the last membership view that
/// listed its holder, then its xid. Copies compare in that order; see `RetainedState`.
/// The newest membership view that listed a replica while it held state: its version (the
/// root's pzxid) and its members' addresses. A copy kept from that view (retained, or on disk)
/// may be offered to a head looking for the chain's state only once every one of those
/// addresses is registered again: the copies of that view, and of any newer one, all belong to
/// replicas of that list or of lists they name (`reconfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewMark {
    pub version: u64,
    pub members: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetainedMark {
    pub view_version: u64,
    pub xid: Xid,
}

/// What a client asks the head to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Inc { key: String, delta: i32 },
    Del { key: String },
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Inc { key, .. } | WriteOp::Del { key } => key,
        }
    }
}

/// What is wrong with a key a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {bytes} bytes, the limit is {limit}")]
    TooLong { bytes: usize, limit: usize },
}

/// Why a write was refused before anything was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRejected {
    #[error("this replica is not the head")]
    NotHead,
    #[error("invalid key: {0}")]
    InvalidKey(KeyError),
    #[error("key {key:?} holds {current}; adding {delta} leaves the int32 range")]
    OutOfRange { key: String, current: i32, delta: i32 },
    #[error("too many writes in flight ({0}); retry later")]
    Busy(String),
    #[error("the head cannot take writes now: {0}")]
    Unavailable(&'static str),
}

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadRejected {
    #[error("this replica is not the tail")]
    NotTail,
    #[error("invalid key: {0}")]
    InvalidKey(KeyError),
    #[error("the tail cannot serve reads now: {0}")]
    Unavailable(&'static str),
}

/// How a write that was accepted by the head ended for the client waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The tail applied it: it is durable and visible to reads.
    Committed,
    /// The replica stopped tracking it (session lost): it may or may not have been applied.
    Unknown(&'static str),
}

/// The replica's place in the chain as its current view says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in the current view (not joined yet, or the view has not caught up).
    Outside,
    /// Alone: head and tail at once.
    Single,
    Head,
    Middle,
    Tail,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Outside => "outside",
            Role::Single => "head+tail",
            Role::Head => "head",
            Role::Middle => "middle",
            Role::Tail => "tail",
        }
    }
}
