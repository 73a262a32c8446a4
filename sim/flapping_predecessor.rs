//! Targeted scenario: a replica's predecessor changes and changes back, A, B, A, while A never
//! sees B at all.
//!
//! A replica drops the updates it holds past a gap when its predecessor changes, but it has
//! already told A it took them, so A never sends them again. If A comes back as predecessor
//! without having noticed anything, the replica must refuse the next update past the gap, so
//! that A falls back to a state transfer; holding it instead would wait for the dropped
//! updates for ever (or until the reorder window overflows), and the chain below A would stop.
//! Random faults almost never line this up: B must join right below A and vanish again, the
//! replica must hear of both at once while it holds an update past a gap, and A must hear of
//! neither (its listing returned only after B had gone).

use crate::core::Millis;
use crate::sim::scenario;
use crate::sim::world::World;

/// Operations per client after the replica heard of B (see `end_flapping`).
const OPS_AFTER: usize = 3;
/// How long to wait for the replica to hold an update past a gap.
const HOLD_WAIT_MS: Millis = 3_000;

pub fn run(w: &mut World) {
    scenario::begin(w, 2);
    // A is any member with a successor and room for a session id between the two.
    let members = w.zk().members();
    let pairs: Vec<usize> = (0..members.len().saturating_sub(1))
        .filter(|&i| w.zk().free_id_after(members[i].id).is_some())
        .collect();
    let Some(i) = w.dice.scenario.pick(&pairs) else {
        w.note(&format!(
            "flapping predecessor: no two neighbours with room for B between them in {members:?}"
        ));
        return;
    };
    let (Some(a), Some(replica)) = (w.proc_of_addr(&members[i].addr), w.proc_of_addr(&members[i + 1].addr)) else {
        return;
    };
    let a_id = members[i].id;
    w.note(&format!("flapping predecessor: A is replica {a}, the replica below it {replica}"));
    let start = w.now();
    // Neither A nor the replica below it acts on ZooKeeper's notifications during the
    // scenario; the listings they do act on are handed to them below.
    let far = start + 2 * HOLD_WAIT_MS + w.cfg().session_timeout;
    w.stall_membership(a, far);
    w.stall_membership(replica, far);

    let b = w.procs().len();
    w.next_session_sorts_after(b, a_id);
    w.add_replica();
    let joined = scenario::run_until_listed(w, b, start + HOLD_WAIT_MS);
    let with_b = w.listing();
    if !joined || with_b.0.get(i + 1).and_then(|m| w.proc_of_addr(&m.addr)) != Some(b) {
        w.note("flapping predecessor: B did not sort right below A");
        return end_flapping(w, a, replica);
    }
    w.crash(b);
    let gone = scenario::run_until_unlisted(w, b, start + HOLD_WAIT_MS);
    let without_b = w.listing();
    // Now writes flow; wait for the replica to hold an update past a gap, then let it hear
    // of B's arrival and departure back to back.
    let until = w.now() + HOLD_WAIT_MS;
    while gone && w.now() < until && w.ok() && !holds_past_gap(w, replica) {
        if w.clients_done() {
            w.add_workload(1);
        }
        w.run_to(w.now() + 1);
    }
    if holds_past_gap(w, replica) {
        w.note(&format!("flapping predecessor: replica {replica} hears of B (replica {b}) coming and going while it holds updates past a gap; A (replica {a}) hears of neither"),
        );
        w.deliver_listing(replica, with_b);
        w.deliver_listing(replica, without_b);
    } else {
        w.note("flapping predecessor: the replica held nothing past a gap in time");
    }
    end_flapping(w, a, replica);
}

fn end_flapping(w: &mut World, a: usize, replica: usize) {
    // Fewer updates than the reorder window holds: a replica that waits for the dropped
    // updates instead of refusing stays stuck, rather than overflowing into a transfer.
    w.add_workload(OPS_AFTER);
    scenario::end(w, &[a, replica], "across a predecessor that came and went");
}

fn holds_past_gap(w: &World, p: usize) -> bool {
    w.procs()[p].replica.as_ref().is_some_and(|r| r.describe().reorder_len > 0)
}
