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
use crate::sim::world::World;

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
}

/// Replica `proc`, shaped `before`, answered `reply` to update `xid` from `src`, sent to its
/// session `addressee`.
pub fn check(w: &mut World, proc: usize, before: &Shape, addressee: NodeId, src: NodeId, xid: Xid, reply: &PeerReply) {
    if *reply != PeerReply::Refused || before.session != Some(addressee) || before.pred != Some(src) || !before.holds_state {
        return;
    }
    if xid <= before.last_applied || w.dropped_held.0.contains(&proc) {
        return;
    }
    let window = w.cfg.max_reorder as u64;
    if xid - before.last_applied <= window {
        w.violations.push(format!(
            "gap refusal: replica {proc} at xid {} refused update {xid} from its predecessor {src:x}, inside its reorder window of {window}, with no held update dropped",
            before.last_applied
        ));
    }
}
