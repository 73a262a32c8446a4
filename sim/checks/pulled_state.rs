//! Only a replica at the head that holds nothing takes a pulled state. One with a predecessor
//! gets the state from that predecessor, which orders every update it will be sent; one that
//! holds the state already keeps it (an answer from below is no newer). A pull answer that
//! lands after the asker gained either must change nothing.

use crate::sim::shape::Shape;
use crate::sim::violation::{Invariant, Violation};

/// Replica `proc`, shaped `before`, took an answer to its pull that carried a state, and became
/// `after`.
pub fn check(proc: usize, before: &Shape, after: &Shape) -> Option<Violation> {
    if !(before.holds_state || before.pred.is_some()) {
        return None;
    }
    let changed = after.holds_state != before.holds_state || after.last_applied != before.last_applied;
    changed.then(|| {
        let had = if before.holds_state {
            "holding the state"
        } else {
            "it had a predecessor"
        };
        Violation::new(
            Invariant::PulledState,
            format!("replica {proc} took a pulled state at xid {} while {had}", after.last_applied),
        )
    })
}
