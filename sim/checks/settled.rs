//! Once faults stop and the chain settles, every member holds the state, at the newest xid that
//! still counts: the highest any member holds or any client was told is done (an update only a
//! crashed head ever held is a dead branch). Replication catches everyone up, not just the
//! tail. And every sent list is
//! empty: the tail has applied everything, and each replica must have learned so (the head
//! from `xidProcessed`, the others by asking the tail), or sent lists only ever shrink by
//! hitting their bound.

use crate::sim::procs::Status;
use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

pub fn check(w: &WorldView) -> Vec<Violation> {
    let mut problems = Vec::new();
    let members: Vec<_> =
        w.zk.members()
            .into_iter()
            .filter_map(|m| {
                let p = w.proc_of_addr(&m.addr)?;
                let r = w.procs[p].replica.as_ref().filter(|_| w.procs[p].status == Status::Up)?;
                (r.session_id() == Some(m.id)).then_some((p, m, r))
            })
            .collect();
    let held = members
        .iter()
        .filter(|(_, _, r)| r.holds_state())
        .map(|(_, _, r)| r.last_applied())
        .max();
    let latest = held.unwrap_or(0).max(w.canon.last_acknowledged());
    for (p, m, r) in members {
        if !r.holds_state() || r.last_applied() != latest {
            let msg = format!(
                "replica {p} (session {:x}) holds_state={} at xid {} after the chain settled; the newest xid held or acknowledged is {latest}",
                m.id,
                r.holds_state(),
                r.last_applied()
            );
            problems.push(Violation::new(Invariant::Settled, msg));
        }
        let sent = r.describe().sent_len;
        if sent > 0 {
            problems.push(Violation::new(
                Invariant::Settled,
                format!(
                    "replica {p} (session {:x}) still holds {sent} updates in its sent list after the tail applied everything",
                    m.id
                ),
            ));
        }
    }
    problems
}
