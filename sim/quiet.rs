//! After the faults stop and the chain has settled: a short workload on a network that no
//! longer drops, duplicates or delays anything past a deadline, then an idle spell, with every
//! peer request counted.
//!
//! The other checks judge safety and liveness, and they cannot see waste: a replica that
//! refuses every update makes its predecessor fall back to whole state transfers, which are
//! always correct, and a replica that polls the tail every tick still trims its sent list.
//! `checks::cost` holds these counts against what a healthy chain sends.

use crate::core::Millis;
use crate::sim::measure::{Quiet, IDLE_MS};
use crate::sim::world::World;

/// Operations each client runs in the quiet phase.
const OPS_PER_CLIENT: usize = 10;
/// How long the quiet workload may take before it counts as stuck.
const WORKLOAD_LIMIT_MS: Millis = 10_000;
/// After the last operation: time for the tail's progress to reach everyone (a few polls).
const DRAIN_MS: Millis = 500;

pub fn run(w: &mut World) -> Quiet {
    let members = w.zk().members().len();
    let issued_before = w.canon().len();
    let start = w.now();
    w.net.short_delays_only = true;
    // What the phase costs counts from here.
    w.take_peer_sends();
    w.add_workload(OPS_PER_CLIENT);
    w.finish_workload(start + WORKLOAD_LIMIT_MS, "on the quiet network after settling");
    let drained = w.now() + DRAIN_MS;
    w.run_until(drained);
    let busy = w.take_peer_sends();
    let busy_ms = w.now() - start;
    w.run_until(w.now() + IDLE_MS);
    Quiet {
        members,
        writes: w.canon().len() - issued_before,
        busy_ms,
        busy,
        idle: w.take_peer_sends(),
    }
}
