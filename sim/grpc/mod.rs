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
mod coordinator;
mod coverage;
mod dice;
mod faults;
mod nemesis;
mod run;
pub mod run_shape;
mod trace;
mod transport;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::Variant;

use crate::sim::report::failure_report;
pub use crate::sim::report::variant_name;
pub use faults::{Fault, FAULTS};
pub use run::{replay_command, run_seed_catching};
use run_shape::RunShape;

#[derive(Clone, Debug)]
pub struct GrpcSimConfig {
    pub seed: u64,
    pub variant: Variant,
    /// At most this many replicas at the start (each run draws 1 to this many).
    pub initial_replicas: usize,
    pub max_replicas: usize,
    /// The initial replica that serves and sends only the classic calls (the stream refused),
    /// if the run starts with that many.
    pub classic_replica: usize,
    pub clients: usize,
    /// A client thinks this long (ms, uniform) before each operation.
    pub think_ms: (u64, u64),
    pub keys: usize,
    pub faults: bool,
    /// How long the nemesis acts, from the start.
    pub fault_time: Duration,
    pub session_timeout: Duration,
    /// Replica-to-replica deadline.
    pub rpc_timeout: Duration,
    pub transfer_timeout: Duration,
    /// Clients' deadline per call, and per operation with its retries.
    pub client_rpc_timeout: Duration,
    pub op_timeout: Duration,
    /// How long the chain gets to recover after the faults stop: operations invoked later
    /// must all complete.
    pub settle_time: Duration,
    /// How long clients go on after `settle_time`, every operation checked for completion;
    /// then the final reads.
    pub checked_time: Duration,
    pub max_time: Duration,
    pub print_trace: bool,
    /// Test only: panic on purpose, to check that a panic still reports its seed. `None` (the
    /// default) spawns nothing and changes nothing in the run.
    pub panic: Option<DeliberatePanic>,
}

/// Where and when a run panics on purpose ([`GrpcSimConfig::panic`]).
#[derive(Clone, Copy, Debug)]
pub enum DeliberatePanic {
    /// A task spawned on the seed's runtime panics this long after the start: tokio catches
    /// it and the run goes on, as with a panic in a replica's task.
    Task(Duration),
    /// The seed's main future panics this long after the start, unwinding out of the runtime.
    Main(Duration),
}

impl GrpcSimConfig {
    pub fn new(seed: u64, variant: Variant) -> Self {
        GrpcSimConfig {
            seed,
            variant,
            initial_replicas: 3,
            max_replicas: 5,
            classic_replica: 1,
            clients: 3,
            think_ms: (10, 150),
            keys: 3,
            faults: true,
            fault_time: Duration::from_secs(10),
            // The production minimum (zk::MIN_SESSION_TIMEOUT); the lease is half of it.
            session_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_millis(500),
            transfer_timeout: Duration::from_secs(2),
            client_rpc_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_secs(3),
            settle_time: Duration::from_secs(4),
            checked_time: Duration::from_secs(2),
            max_time: Duration::from_secs(600),
            print_trace: false,
            panic: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub variant: Variant,
    /// What the run drew before it started; `None` if it could not start.
    pub shape: Option<RunShape>,
    /// Hash of the trace: nemesis actions, sessions, every client operation and its outcome
    /// in order, the final reads and the final replica states.
    pub trace_hash: u64,
    pub events: u64,
    pub simulated_ms: u64,
    pub ops: usize,
    pub violations: Vec<String>,
    /// The production code's log events over the run, by message (see `coverage`).
    pub coverage: BTreeMap<String, u64>,
    /// Every panic on the seed's thread during the run, with where (`sim::panics`): one that
    /// unwound out of the runtime (the rest of the report then mostly empty) or one tokio
    /// caught in a spawned task (the run went on).
    pub panic: Option<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.panic.is_some() || !self.violations.is_empty()
    }

    /// `SEED=… variant=…` and the run's shape: the head of a failure report and of a replay.
    pub fn seed_line(&self) -> String {
        let mut line = format!("SEED={} variant={}", self.seed, variant_name(self.variant));
        if let Some(shape) = &self.shape {
            line.push_str(&format!(" {shape}"));
        }
        line
    }

    /// The failure report, seed and replay command included; `None` if the seed passed.
    pub fn failure(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        let out = match &self.panic {
            Some(p) => format!(
                "{} panicked: {p}\n({} ms simulated, {} operations)",
                self.seed_line(),
                self.simulated_ms,
                self.ops
            ),
            None => format!(
                "{} failed ({} ms simulated, {} operations):",
                self.seed_line(),
                self.simulated_ms,
                self.ops
            ),
        };
        Some(failure_report(out, &self.violations, &replay_command(self.seed, self.variant)))
    }
}
