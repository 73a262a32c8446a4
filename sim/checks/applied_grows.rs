//! Within a session a replica's applied history only grows: once it holds the state it never
//! goes back to an older xid. It refuses a transfer behind what it holds, and takes a pulled or
//! retained state only while it holds none; going back would let it serve, or pass on, a state
//! older than one it already acknowledged.

use crate::sim::shape::Shape;
use crate::sim::violation::{Invariant, Violation};

pub fn check(proc: usize, before: &Shape, after: &Shape) -> Option<Violation> {
    if after.session != before.session || !before.holds_state {
        return None;
    }
    (!after.holds_state || after.last_applied < before.last_applied).then(|| {
        Violation::new(
            Invariant::AppliedGrows,
            format!(
                "replica {proc} went from xid {} (holding the state) to xid {} (holding it: {}) within one session",
                before.last_applied, after.last_applied, after.holds_state
            ),
        )
    })
}
