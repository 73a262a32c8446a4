//! A head with a valid lease keeps no client waiting for an xid the tail has confirmed. Clients
//! confirmed while the lease had lapsed are held (the xid may name another head's update), but
//! once the session proves alive again they are answered at once, not at the tail's next
//! progress, which may never come on an idle chain. With a data dir the head also waits for its
//! own disk (`core::durability`): the bound is then the lower of the tail's word and its disk.

use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

/// Adds what it finds to `found`.
pub fn check(w: &WorldView, found: &mut Vec<Violation>) {
    for (p, proc) in w.procs.iter().enumerate() {
        let Some(r) = proc.replica.as_ref() else { continue };
        let d = r.describe();
        let answerable = d.tail_processed.min(r.durable_xid());
        if let Some(oldest) = d.oldest_pending.filter(|x| d.lease_valid && *x <= answerable) {
            let msg = format!(
                "replica {p} holds a client waiting on xid {oldest} with its lease valid, the tail at {} and its disk at {}",
                d.tail_processed,
                r.durable_xid()
            );
            found.push(Violation::new(Invariant::HeldClients, msg));
        }
    }
}
