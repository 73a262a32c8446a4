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

use super::world::World;
use crate::core::Millis;

/// Operations per client after the replica heard of B (see `end_flapping`).
const OPS_AFTER: usize = 3;
/// How long to wait for the replica to hold an update past a gap.
const HOLD_WAIT_MS: Millis = 3_000;

impl World {
    pub fn flapping_predecessor_phase(&mut self) {
        self.begin_scenario(2);
        // A is any member with a successor and room for a session id between the two.
        let members = self.zk.members();
        let pairs: Vec<usize> = (0..members.len().saturating_sub(1))
            .filter(|&i| self.zk.free_id_after(members[i].id).is_some())
            .collect();
        let Some(i) = self.dice.scenario.pick(&pairs) else {
            self.trace.note(
                self.now(),
                &format!("flapping predecessor: no two neighbours with room for B between them in {members:?}"),
            );
            return;
        };
        let (Some(a), Some(replica)) = (self.proc_of_addr(&members[i].addr), self.proc_of_addr(&members[i + 1].addr)) else {
            return;
        };
        let a_id = members[i].id;
        self.trace.note(
            self.now(),
            &format!("flapping predecessor: A is replica {a}, the replica below it {replica}"),
        );
        let start = self.now();
        // Neither A nor the replica below it acts on ZooKeeper's notifications during the
        // scenario; the listings they do act on are handed to them below.
        let far = start + 2 * HOLD_WAIT_MS + self.cfg.session_timeout;
        self.stall_membership(a, far);
        self.stall_membership(replica, far);

        let b = self.procs.len();
        self.next_session_sorts_after(b, a_id);
        self.add_replica();
        let joined = self.run_until_listed(b, start + HOLD_WAIT_MS);
        let with_b = self.listing();
        if !joined || with_b.0.get(i + 1).and_then(|m| self.proc_of_addr(&m.addr)) != Some(b) {
            self.trace.note(self.now(), "flapping predecessor: B did not sort right below A");
            return self.end_flapping(a, replica);
        }
        self.crash(b);
        let gone = self.run_until_unlisted(b, start + HOLD_WAIT_MS);
        let without_b = self.listing();
        // Now writes flow; wait for the replica to hold an update past a gap, then let it hear
        // of B's arrival and departure back to back.
        let until = self.now() + HOLD_WAIT_MS;
        while gone && self.now() < until && self.violations.is_empty() && !self.holds_past_gap(replica) {
            if self.clients.iter().all(|c| c.is_done()) {
                self.add_workload(1);
            }
            self.run_to(self.now() + 1);
        }
        if self.holds_past_gap(replica) {
            self.trace.note(
                self.now(),
                &format!("flapping predecessor: replica {replica} hears of B (replica {b}) coming and going while it holds updates past a gap; A (replica {a}) hears of neither"),
            );
            self.deliver_listing(replica, with_b);
            self.deliver_listing(replica, without_b);
        } else {
            self.trace
                .note(self.now(), "flapping predecessor: the replica held nothing past a gap in time");
        }
        self.end_flapping(a, replica);
    }

    fn end_flapping(&mut self, a: usize, replica: usize) {
        // Fewer updates than the reorder window holds: a replica that waits for the dropped
        // updates instead of refusing stays stuck, rather than overflowing into a transfer.
        self.add_workload(OPS_AFTER);
        self.end_scenario(&[a, replica], "across a predecessor that came and went");
    }

    fn holds_past_gap(&self, p: usize) -> bool {
        self.procs[p].replica.as_ref().is_some_and(|r| r.describe().reorder_len > 0)
    }

    /// Run until `p`'s current session is (or, with `listed` false, is no longer) a member.
    fn run_until_membership(&mut self, p: usize, listed: bool, limit: Millis) -> bool {
        loop {
            let session = self.procs[p].replica.as_ref().and_then(|r| r.session_id());
            let member = self
                .zk
                .members()
                .iter()
                .any(|m| Some(m.id) == session && m.addr == self.procs[p].addr);
            let addr_listed = self.zk.members().iter().any(|m| m.addr == self.procs[p].addr);
            let done = if listed { member } else { !addr_listed };
            if done {
                return true;
            }
            if self.now() >= limit || !self.violations.is_empty() {
                return false;
            }
            self.run_to(self.now() + self.cfg.tick);
        }
    }

    pub fn run_until_listed(&mut self, p: usize, limit: Millis) -> bool {
        self.run_until_membership(p, true, limit)
    }

    pub fn run_until_unlisted(&mut self, p: usize, limit: Millis) -> bool {
        self.run_until_membership(p, false, limit)
    }
}
