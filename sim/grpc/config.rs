//! How a seed of the gRPC tier is configured; the seed draws the rest (`RunShape`).

use std::time::Duration;

use crate::core::Variant;

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
