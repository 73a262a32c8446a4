//! A replica refuses an update from its predecessor that arrives past a gap only when it must:
//! the update lies beyond the reorder window, or the replica dropped updates it held for a gap
//! when its predecessor changed and has been given no state since (a predecessor that comes back
//! believes they were taken, and never resends them). Any other refusal costs the sender a whole
//! state transfer.
//!
//! Whether updates were dropped is worked out here from the replica's shape before and after each
//! step, not read from the replica's own flag.

use std::collections::BTreeSet;

use crate::core::{NodeId, PeerReply, Xid};
use crate::sim::shape::Shape;
use crate::sim::violation::{Invariant, Violation};

/// Processes that dropped held updates since they were last given a state.
#[derive(Default)]
pub struct DroppedHeld(BTreeSet<usize>);

impl DroppedHeld {
    pub fn after_step(&mut self, proc: usize, before: &Shape, after: &Shape) {
        if after.session != before.session || (!before.holds_state && after.holds_state) {
            self.0.remove(&proc);
        } else if after.pred != before.pred && before.reorder_len > 0 {
            self.0.insert(proc);
        }
    }

    /// `proc` installed a transferred state or handed its state to a puller (which becomes its
    /// predecessor and sends it everything after that state).
    pub fn state_given(&mut self, proc: usize) {
        self.0.remove(&proc);
    }

    pub fn forget(&mut self, proc: usize) {
        self.0.remove(&proc);
    }

    pub fn contains(&self, proc: usize) -> bool {
        self.0.contains(&proc)
    }
}

/// Replica `proc`, shaped `before`, with a reorder window of `max_reorder` and (`dropped`)
/// held updates dropped since it was last given a state, answered `reply` to update `xid` from
/// `src`, sent to its session `addressee`.
// One argument per fact the check judges by.
#[allow(clippy::too_many_arguments)]
pub fn check(
    max_reorder: usize,
    dropped: bool,
    proc: usize,
    before: &Shape,
    addressee: NodeId,
    src: NodeId,
    xid: Xid,
    reply: &PeerReply,
) -> Option<Violation> {
    if *reply != PeerReply::Refused || before.session != Some(addressee) || before.pred != Some(src) || !before.holds_state {
        return None;
    }
    if xid <= before.last_applied || dropped {
        return None;
    }
    let window = max_reorder as u64;
    (xid - before.last_applied <= window).then(|| {
        Violation::new(
            Invariant::GapRefusals,
            format!(
                "replica {proc} at xid {} refused update {xid} from its predecessor {src:x}, inside its reorder window of {window}, with no held update dropped",
                before.last_applied
            ),
        )
    })
}
