//! Once faults stop and the chain settles, every member holds the state, at the last xid any
//! head issued: replication catches everyone up, not just the tail. And every sent list is
//! empty: the tail has applied everything, and each replica must have learned so (the head
//! from `xidProcessed`, the others by asking the tail), or sent lists only ever shrink by
//! hitting their bound.

use crate::sim::world::{Status, World};

pub fn check(w: &mut World) {
    let problems = problems(w);
    w.violations.extend(problems);
}

pub fn problems(w: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let latest = w.canon.len();
    for m in w.zk.members() {
        let Some(p) = w.proc_of_addr(&m.addr) else { continue };
        if w.procs[p].status != Status::Up {
            continue;
        }
        let Some(r) = w.procs[p].replica.as_ref() else { continue };
        if r.session_id() != Some(m.id) {
            continue;
        }
        if !r.is_synced() || r.last_applied() != latest {
            let msg = format!(
                "settled chain: replica {p} (session {:x}) is synced={} at xid {} after the chain settled; the last issued xid is {latest}",
                m.id,
                r.is_synced(),
                r.last_applied()
            );
            problems.push(msg);
        }
        let sent = r.describe().sent_len;
        if sent > 0 {
            problems.push(format!(
                "settled chain: replica {p} (session {:x}) still holds {sent} updates in its sent list after the tail applied everything",
                m.id
            ));
        }
    }
    problems
}
