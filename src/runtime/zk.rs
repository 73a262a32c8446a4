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

mod config;
mod coordinator;
mod eviction;
mod parse;
mod session;
mod watcher;

pub use config::{MembershipEvent, ZkConfig, DEFAULT_ROOT, MIN_SESSION_TIMEOUT};
pub use coordinator::ZkCoordinator;
pub use parse::{parse_connect_string, parse_member, parse_member_id, ConnectStringError, MemberError, PathError};
pub use watcher::ZkWatcher;
