//! Every state transfer has a cause. A replica holding the state sends its successor the whole
//! state only when:
//! - the successor is new to it, or it has just come to hold the state;
//! - a request on the link since its last transfer failed (refused, or no answer in time); a
//!   failure of a request sent before that transfer says nothing about the successor now;
//! - it installed a transfer from its predecessor and could not catch its successor up update by
//!   update.
//!
//! And the first two owe the successor a transfer at once, unless the replica took the state
//! from that successor's answer to a plain pull (the successor holds it already): a successor
//! left without the state refuses every update.
//!
//! Each is a transfer falling due in the simulator's own model of the link (`sim::links`),
//! which does not trust the replica's link epochs: a reply the replica took for current when it
//! was stale shows here as a transfer nothing made due.

use crate::core::NodeId;
use crate::sim::links::{Link, LinkState};
use crate::sim::violation::{Invariant, Violation};

pub fn check_send(proc: usize, to: NodeId, was: &Link) -> Option<Violation> {
    (!matches!(was.state, LinkState::Due { .. })).then(|| {
        Violation::new(
            Invariant::TransferCauses,
            format!("replica {proc} sent session {to:x} a state transfer with no cause (no new successor or state, no failure since its last transfer, no install that needs one); link {was:?}"),
        )
    })
}

/// Replica `proc`'s step left its successor `succ` owed a transfer it did not send: `what`.
pub fn check_owed(proc: usize, succ: Option<NodeId>, what: Option<String>) -> Option<Violation> {
    let (what, succ) = (what?, succ?);
    Some(Violation::new(
        Invariant::TransferCauses,
        format!("replica {proc} {what}, and sent its successor {succ:x} no state transfer"),
    ))
}
