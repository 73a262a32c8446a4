//! After the quiet phase: first the tail, then a middle replica crashes while clients keep
//! working, on a network that otherwise behaves (no drops, duplicates or deadline-missing
//! delays). Every operation must still complete with a definite answer (the client code counts
//! an unknown outcome after settling as a liveness failure): the replica that becomes tail
//! acknowledges what its old successor never confirmed, to the head (head variant) or to the
//! waiting clients (tail variant, `cxidProcessed`). Under the fault phase's drops a lost
//! callback looks the same as one never sent; here the checks can tell them apart.
//!
//! When a middle goes, its predecessor gives the successor its state, and the successor brings
//! its own successor up to date update by update: one accepted state transfer in all
//! (`checks::cost`).

use crate::core::Millis;
use crate::sim::checks::cost;
use crate::sim::world::World;

const OPS_PER_CLIENT: usize = 10;
/// Let the workload get going so updates are in flight when the replica goes.
const CRASH_AFTER_MS: Millis = 60;
const WORKLOAD_LIMIT_MS: Millis = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Tail,
    Middle,
}

pub fn run(w: &mut World) {
    // With tiny bounds a busy head refuses writes until the tail's progress reaches it, and
    // with the second the crash takes to notice, an unlucky client can run out of time
    // without anything being wrong.
    if w.shape().tiny_bounds {
        return;
    }
    crash_under_load(w, Victim::Tail);
    if w.ok() {
        crash_under_load(w, Victim::Middle);
    }
}

fn crash_under_load(w: &mut World, victim: Victim) {
    let members = w.zk().members();
    let (position, needed) = match victim {
        Victim::Tail => (members.len().saturating_sub(1), 2),
        Victim::Middle => (1, 3),
    };
    if members.len() < needed {
        return;
    }
    let proc_at = |w: &World, i: usize| members.get(i).and_then(|m| w.proc_of_addr(&m.addr));
    let (Some(crashed), successor) = (proc_at(w, position), proc_at(w, position + 1)) else {
        return;
    };
    let start = w.now();
    w.checks_mut().take_accepted_transfers();
    w.add_workload(OPS_PER_CLIENT);
    w.run_until(start + CRASH_AFTER_MS);
    if !w.ok() {
        return;
    }
    w.note(&format!("failover: crash the {victim:?}, replica {crashed}"));
    w.crash(crashed);
    w.finish_workload(start + WORKLOAD_LIMIT_MS, &format!("across the crash of the {victim:?}"));
    let settled = w.now() + w.cfg().settle_time;
    w.run_until(settled);
    if w.ok() {
        if let Some(successor) = successor {
            let accepted = w.checks_mut().take_accepted_transfers();
            w.fail_all(cost::check_failover(&accepted, successor));
        }
    }
}
