//! Sent lists, reorder buffers and pending-client maps never exceed their configured bounds;
//! and the store's byte count, kept as a running total for metrics, matches the store.

use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

/// Adds what it finds to `found`.
pub fn check(w: &WorldView, found: &mut Vec<Violation>) {
    for (p, proc) in w.procs.iter().enumerate() {
        let Some(r) = proc.replica.as_ref() else { continue };
        let d = r.describe();
        // The bounds the run configured, not what the replica reports about itself.
        let (sent, reorder, pending) = (w.cfg.max_sent, w.cfg.max_reorder, w.cfg.max_pending_writes);
        if d.sent_len > sent || d.reorder_len > reorder || d.pending_len > pending {
            let msg = format!(
                "replica {p} has sent={} reorder={} pending={} (bounds {sent} / {reorder} / {pending})",
                d.sent_len, d.reorder_len, d.pending_len
            );
            found.push(Violation::new(Invariant::BoundedQueues, msg));
        }
        let counted = crate::core::store_bytes(r.store());
        if d.store_bytes != counted {
            let msg = format!("store bytes: replica {p} reports {} but its store holds {counted}", d.store_bytes);
            found.push(Violation::new(Invariant::BoundedQueues, msg));
        }
    }
}
