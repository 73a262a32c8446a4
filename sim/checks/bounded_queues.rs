//! Sent lists, reorder buffers and pending-client maps never exceed their configured bounds.

use crate::sim::world::World;

pub fn check(w: &mut World) {
    for (p, proc) in w.procs.iter().enumerate() {
        let Some(r) = proc.replica.as_ref() else { continue };
        let d = r.describe();
        let cfg = r.config();
        if d.sent_len > cfg.max_sent || d.reorder_len > cfg.max_reorder || d.pending_len > cfg.max_pending_writes {
            let msg = format!(
                "bounded queues: replica {p} has sent={} reorder={} pending={} (bounds {} / {} / {})",
                d.sent_len, d.reorder_len, d.pending_len, cfg.max_sent, cfg.max_reorder, cfg.max_pending_writes
            );
            w.violations.push(msg);
        }
    }
}
