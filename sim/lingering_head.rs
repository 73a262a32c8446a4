//! Targeted scenario: an old head whose session ended, unaware of it, still retries an update
//! it issued before its lease ran out, while a new head pulls the state from the replica
//! below it, which still lists the old head as its predecessor.
//!
//! That replica must not hand its state out: the old head's retried update would reach it
//! afterwards, and the new head's first update would carry the same xid. So a replica answers a
//! pull only when its predecessor is the asker or a replica the asker found stateless. Random
//! faults almost never line this up: the old head must be cut from ZooKeeper and from its
//! successor at once with an update in flight, a newcomer must sort first, and the successor's
//! listings must show the newcomer's arrival but not the old head's departure.

use crate::core::Millis;
use crate::sim::events::Endpoint;
use crate::sim::scenario;
use crate::sim::world::World;

const OPS_PER_CLIENT: usize = 6;
const WAIT_MS: Millis = 5_000;

pub fn run(w: &mut World) {
    scenario::begin(w, 2);
    let members = w.zk().members();
    let (Some(old_head), Some(below)) = (
        members.first().and_then(|m| w.proc_of_addr(&m.addr)),
        members.get(1).and_then(|m| w.proc_of_addr(&m.addr)),
    ) else {
        return;
    };
    let start = w.now();
    w.note_at(
        start,
        &format!("lingering head: cut the old head, replica {old_head}, from ZooKeeper and from replica {below}"),
    );
    let to_zk = (Endpoint::Replica(old_head), Endpoint::Zk);
    let to_below = (Endpoint::Replica(old_head), Endpoint::Replica(below));
    w.net.cut(to_zk.0, to_zk.1);
    w.net.cut(to_below.0, to_below.1);
    // The replica below acts only on the listings handed to it here.
    w.stall_membership(below, start + 3 * WAIT_MS);
    // Writes reach the old head while its lease holds: it applies them and keeps trying to
    // pass them on.
    w.add_workload(OPS_PER_CLIENT);
    let t = w.dice.scenario.range(50, 300);
    w.run_to(start + t);

    // The newcomer cannot reach the old head either, so it cannot take the state from it;
    // once the old head's session ends it asks the replica below.
    let newcomer = w.procs().len();
    let to_newcomer = (Endpoint::Replica(old_head), Endpoint::Replica(newcomer));
    w.net.cut(to_newcomer.0, to_newcomer.1);
    w.next_session_sorts_first(newcomer);
    w.add_replica();
    let cuts = [to_zk, to_below, to_newcomer];
    if !scenario::run_until_listed(w, newcomer, w.now() + WAIT_MS) {
        return end_lingering(w, below, cuts);
    }
    // The replica below hears of the newcomer, not yet of the old head's departure.
    let with_newcomer = w.listing();
    w.deliver_listing(below, with_newcomer);
    let gone = scenario::run_until_unlisted(w, old_head, w.now() + WAIT_MS);
    w.note(&format!(
        "lingering head: replica {newcomer} joined at the head; the old head's session ended: {gone}"
    ));
    // The newcomer asks; then the old head's retries get through to the replica below.
    let t = w.dice.scenario.range(0, 400);
    w.run_to(w.now() + t);
    w.net.heal(to_below.0, to_below.1);
    let t = w.dice.scenario.range(200, 1_500);
    w.run_to(w.now() + t);
    end_lingering(w, below, cuts);
}

fn end_lingering(w: &mut World, below: usize, cuts: [(Endpoint, Endpoint); 3]) {
    for cut in cuts {
        w.net.heal(cut.0, cut.1);
    }
    scenario::end(w, &[below], "across a lingering old head");
}
