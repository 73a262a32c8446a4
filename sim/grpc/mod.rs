//! The second, slower simulator tier: the *production* runtime under simulation. Replicas are
//! `runtime::node::start_with` with the real services, the real `TonicNetwork` (its batched
//! `Replicate` stream and the classic `proposeStateUpdate` fallback), the real timer, reply
//! and membership tasks; clients are the real `ChainClient`; tonic, hyper and h2 run unchanged.
//! Only the edges are simulated: connections are in-memory pipes with latency, stalls and
//! resets ([`transport`]), ZooKeeper is a coordinator task ([`coordinator`]), and time is
//! tokio's paused clock on a single-threaded runtime, so a seed replays the same run.
//!
//! What keeps a run deterministic: one thread, a clock that moves only when every task waits,
//! one ChaCha seed for every choice, no sockets, no `spawn_blocking`, no wall clock read by the
//! harness, `select!` only `biased`, and no tokio `watch` channel with two waiters (tokio picks
//! among a watch's waiter lists at random).

mod client;
mod config;
mod coordinator;
mod coverage;
mod dice;
mod faults;
mod nemesis;
mod report;
mod run;
pub mod run_shape;
mod trace;
mod transport;
mod world;

pub use crate::sim::report::variant_name;
pub use config::{DeliberatePanic, GrpcSimConfig};
pub use faults::{Fault, FAULTS};
pub use report::{replay_command, Report};
pub use run::run_seed_catching;
