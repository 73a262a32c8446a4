//! What the simulator sees of a replica after each of its steps: the checks that judge what a
//! replica sends or refuses compare the shape before a step with the shape after it, instead of
//! trusting the replica's own bookkeeping (its link epochs, its flags).

use crate::core::{NodeId, Xid};
use crate::sim::env::SimReplica;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub session: Option<NodeId>,
    pub pred: Option<NodeId>,
    pub succ: Option<NodeId>,
    pub holds_state: bool,
    pub last_applied: Xid,
    pub reorder_len: usize,
    /// Evicted and out of the chain, probing it (`core::suspicion`).
    pub parked: bool,
}

impl Shape {
    pub fn of(r: &SimReplica) -> Self {
        let session = r.session_id();
        let neighbour =
            |f: fn(&crate::core::View, NodeId) -> Option<&crate::core::Member>| session.and_then(|me| f(r.view(), me)).map(|m| m.id);
        Shape {
            session,
            pred: neighbour(crate::core::View::predecessor),
            succ: neighbour(crate::core::View::successor),
            holds_state: r.holds_state(),
            last_applied: r.last_applied(),
            reorder_len: r.describe().reorder_len,
            parked: r.is_parked(),
        }
    }
}
