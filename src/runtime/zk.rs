//! ZooKeeper glue: chain membership for replicas ([`ZkCoordinator`]) and a read-only view of it
//! for clients ([`ZkWatcher`]).
//!
//! Membership layout: under a root znode (default [`DEFAULT_ROOT`]) every replica owns one
//! EPHEMERAL child named by its ZooKeeper session id in lowercase hex without `0x`, whose data
//! is `host:port` on the first line. Children ordered by numeric session id form the chain:
//! lowest is head, highest is tail. Anything else under the root is ignored.
//!
//! zookeeper-async shapes much of this module; its traps, and how they are handled:
//! - `connect` to an address where nothing listens never returns and spins a core: connections
//!   are made with a retry delay, under a timeout, after a plain TCP probe that yields a readable
//!   error ("connection refused") for the logs.
//! - `connect` returns before the session handshake: a round trip confirms the session.
//! - There is no call returning the session id: a temporary EPHEMERAL_SEQUENTIAL znode is
//!   created with `create2` and its `ephemeral_owner` read back.
//! - After expiry the library silently opens a *new* session; ephemeral znodes and watches of
//!   the old one are gone and the only signal is `ZkState::NotConnected`. A listener turns that
//!   into a flag checked after every round trip, so a reply that came over a replacement session
//!   never counts as proof that our session is alive.
//! - Watches are not re-registered after a reconnect (no SetWatches), even when the session
//!   survives: the children are listed, and the watch re-armed, on every `Connected`.
//! - Dropping a client neither closes the session nor stops its background task, which keeps
//!   pinging, so the session (and our znode) would live as long as the process: every client is
//!   closed explicitly, or in the background when dropped.
//! - Requests issued while the client reconnects can hang until it does: every call has a
//!   timeout.
//! - Below about 1.5 s of session timeout the library's read-idle timer rounds down to zero
//!   seconds and it reconnects in a loop: session timeouts are raised to [`MIN_SESSION_TIMEOUT`].

mod coordinator;
mod eviction;
mod parse;
mod session;
mod watcher;

use std::time::Duration;

pub use coordinator::ZkCoordinator;
pub use parse::{parse_connect_string, parse_member, parse_member_id, ConnectStringError, MemberError, PathError};
pub use watcher::ZkWatcher;

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
