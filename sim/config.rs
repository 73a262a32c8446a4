//! What a run of the core simulator is configured with; the seed draws the rest (`RunShape`).

use crate::core::{Millis, Variant};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub variant: Variant,
    /// At most this many replicas at the start (each run draws 1 to this many).
    pub initial_replicas: usize,
    pub max_replicas: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    /// The replicas' key length limit; clients now and then send keys just past it.
    pub max_key_bytes: usize,
    pub faults: bool,
    /// Per message, in millionths.
    pub drop_ppm: u64,
    pub dup_ppm: u64,
    pub session_timeout: Millis,
    pub rpc_timeout: Millis,
    pub op_timeout: Millis,
    pub tick: Millis,
    /// After the faults stop, how long the chain may take to settle; operations invoked later
    /// must all complete.
    pub settle_time: Millis,
    pub max_time: Millis,
    /// Draw session ids as a multi-server ensemble does, so new replicas sort anywhere.
    pub multi_server_ids: bool,
    pub max_pending_writes: usize,
    pub max_sent: usize,
    pub max_reorder: usize,
    pub print_trace: bool,
    /// Every replica keeps a write-ahead log on a simulated disk (`sim::disks`), and the
    /// nemesis may cut the power to all of them and rot their bytes.
    pub durable: bool,
    /// Test only: the world panics right after recording this event (counted from 1), to check
    /// that a panic still reports its seed. `None` (the default) changes nothing in the run.
    pub panic_at_event: Option<u64>,
}

impl SimConfig {
    pub fn new(seed: u64, variant: Variant) -> Self {
        SimConfig {
            seed,
            variant,
            initial_replicas: 3,
            max_replicas: 6,
            clients: 4,
            ops_per_client: 55,
            keys: 3,
            max_key_bytes: 16,
            faults: true,
            drop_ppm: 20_000,
            dup_ppm: 10_000,
            session_timeout: 1_000,
            rpc_timeout: 200,
            op_timeout: 1_500,
            tick: 10,
            settle_time: 3_000,
            max_time: 600_000,
            multi_server_ids: true,
            max_pending_writes: 64,
            max_sent: 128,
            max_reorder: 32,
            print_trace: false,
            durable: false,
            panic_at_event: None,
        }
    }

    pub fn total_ops(&self) -> usize {
        self.clients * self.ops_per_client
    }
}
