//! What the ZooKeeper glue is configured with and what it reports to the replica: its own module
//! so that the coordinator, the watcher and the session all depend on it rather than on the
//! module that gathers them.

use std::time::Duration;

/// Where replicas register when no root is configured.
pub const DEFAULT_ROOT: &str = "/headchain";

/// The shortest session timeout requested from ZooKeeper; shorter configured values are raised
/// to it (see the module notes). Raising is safe for leases: a longer session only makes other
/// replicas wait longer before they consider this one gone.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkConfig {
    /// `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// Absolute path of the membership znode, relative to the chroot if there is one.
    pub root: String,
    pub session_timeout: Duration,
}

impl ZkConfig {
    pub fn new(connect: impl Into<String>) -> ZkConfig {
        ZkConfig {
            connect: connect.into(),
            root: DEFAULT_ROOT.to_string(),
            session_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// Our znode is registered under this session id; it is our node id until `SessionLost`.
    Joined { session_id: u64 },
    /// Full membership snapshot, sorted by id (consumers must not rely on the order), and its
    /// version: the root's pzxid, ZooKeeper's transaction id of the last change of children,
    /// which only grows, even across a deleted and recreated root.
    View { members: Vec<crate::core::Member>, version: u64 },
    /// A ZooKeeper round trip that was *started* at `at` succeeded on our session, so the
    /// session cannot expire before `at` + session timeout.
    Alive { at: tokio::time::Instant },
    /// Our session is gone (expired, or our znode vanished, or we asked to rejoin); nothing
    /// more is sent until `request_join`.
    SessionLost,
    /// A listing of the members finished (after its `View`, if it changed anything).
    Listed,
    /// The answer to `request_chain_marker`.
    ChainMarker(crate::core::ChainMarker),
    /// The chain's eviction record, when first read and whenever it changes.
    Eviction(crate::core::EvictionRecord),
}
