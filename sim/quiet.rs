//! After the faults stop and the chain has settled: a short workload on a network that no
//! longer drops, duplicates or delays anything past a deadline, then an idle spell, with every
//! peer request counted.
//!
//! The other checks judge safety and liveness, and they cannot see waste: a replica that
//! refuses every update makes its predecessor fall back to whole state transfers, which are
//! always correct, and a replica that polls the tail every tick still trims its sent list.
//! `checks::cost` holds these counts against what a healthy chain sends.

use super::world::{PeerSends, World};
use crate::core::Millis;

/// Operations each client runs in the quiet phase.
const OPS_PER_CLIENT: usize = 10;
/// How long the quiet workload may take before it counts as stuck.
const WORKLOAD_LIMIT_MS: Millis = 10_000;
/// After the last operation: time for the tail's progress to reach everyone (a few polls).
const DRAIN_MS: Millis = 500;
/// A chain with nothing to do must send nothing for this long.
pub const IDLE_MS: Millis = 1_000;

/// What the quiet phase measured.
#[derive(Clone, Debug)]
pub struct Quiet {
    /// Chain length during the phase (it does not change: no faults, nothing joins).
    pub members: usize,
    /// Updates the head issued.
    pub writes: u64,
    /// From the first operation until the sent lists drained.
    pub busy_ms: Millis,
    pub busy: PeerSends,
    pub idle: PeerSends,
}

impl World {
    pub fn quiet_phase(&mut self) -> Quiet {
        let members = self.zk.members().len();
        let issued_before = self.canon.len();
        let start = self.now();
        self.short_delays_only = true;
        self.peer_sends = PeerSends::default();
        self.add_workload(OPS_PER_CLIENT);
        self.finish_workload(start + WORKLOAD_LIMIT_MS, "on the quiet network after settling");
        let drained = self.now() + DRAIN_MS;
        self.run_until(drained);
        let busy = std::mem::take(&mut self.peer_sends);
        let busy_ms = self.now() - start;
        self.run_until(self.now() + IDLE_MS);
        Quiet {
            members,
            writes: self.canon.len() - issued_before,
            busy_ms,
            busy,
            idle: std::mem::take(&mut self.peer_sends),
        }
    }
}
