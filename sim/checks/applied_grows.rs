//! Within a session a replica's applied history only grows: once it holds the state it never
//! goes back to an older xid. It refuses a transfer behind what it holds, and takes a pulled or
//! retained state only while it holds none; going back would let it serve, or pass on, a state
//! older than one it already acknowledged.

use crate::sim::shape::Shape;
use crate::sim::world::World;

pub fn check(w: &mut World, proc: usize, before: &Shape, after: &Shape) {
    if after.session != before.session || !before.holds_state {
        return;
    }
    if !after.holds_state || after.last_applied < before.last_applied {
        w.violations.push(format!(
            "applied history: replica {proc} went from xid {} (holding the state) to xid {} (holding it: {}) within one session",
            before.last_applied, after.last_applied, after.holds_state
        ));
    }
}
