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

use super::world::{Endpoint, World};
use crate::core::Millis;

const OPS_PER_CLIENT: usize = 6;
const WAIT_MS: Millis = 5_000;

impl World {
    pub fn lingering_head_phase(&mut self) {
        self.begin_scenario(2);
        let members = self.zk.members();
        let (Some(old_head), Some(below)) = (
            members.first().and_then(|m| self.proc_of_addr(&m.addr)),
            members.get(1).and_then(|m| self.proc_of_addr(&m.addr)),
        ) else {
            return;
        };
        let start = self.now();
        self.trace.note(
            start,
            &format!("lingering head: cut the old head, replica {old_head}, from ZooKeeper and from replica {below}"),
        );
        let to_zk = (Endpoint::Replica(old_head), Endpoint::Zk);
        let to_below = (Endpoint::Replica(old_head), Endpoint::Replica(below));
        self.blocked.insert(to_zk);
        self.blocked.insert(to_below);
        // The replica below acts only on the listings handed to it here.
        self.stall_membership(below, start + 3 * WAIT_MS);
        // Writes reach the old head while its lease holds: it applies them and keeps trying to
        // pass them on.
        self.add_workload(OPS_PER_CLIENT);
        let t = self.dice.scenario.range(50, 300);
        self.run_to(start + t);

        // The newcomer cannot reach the old head either, so it cannot take the state from it;
        // once the old head's session ends it asks the replica below.
        let newcomer = self.procs.len();
        let to_newcomer = (Endpoint::Replica(old_head), Endpoint::Replica(newcomer));
        self.blocked.insert(to_newcomer);
        self.next_session_sorts_first(newcomer);
        self.add_replica();
        let cuts = [to_zk, to_below, to_newcomer];
        if !self.run_until_listed(newcomer, self.now() + WAIT_MS) {
            return self.end_lingering(below, cuts);
        }
        // The replica below hears of the newcomer, not yet of the old head's departure.
        let with_newcomer = self.listing();
        self.deliver_listing(below, with_newcomer);
        let gone = self.run_until_unlisted(old_head, self.now() + WAIT_MS);
        self.trace.note(
            self.now(),
            &format!("lingering head: replica {newcomer} joined at the head; the old head's session ended: {gone}"),
        );
        // The newcomer asks; then the old head's retries get through to the replica below.
        let t = self.dice.scenario.range(0, 400);
        self.run_to(self.now() + t);
        self.blocked.remove(&to_below);
        let t = self.dice.scenario.range(200, 1_500);
        self.run_to(self.now() + t);
        self.end_lingering(below, cuts);
    }

    fn end_lingering(&mut self, below: usize, cuts: [(Endpoint, Endpoint); 3]) {
        for cut in cuts {
            self.blocked.remove(&cut);
        }
        self.end_scenario(&[below], "across a lingering old head");
    }
}
