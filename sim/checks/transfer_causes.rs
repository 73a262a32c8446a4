//! Every state transfer has a cause. A replica holding the state sends its successor the whole
//! state only when:
//! - the successor is new to it, or it has just come to hold the state;
//! - a request on the link since its last transfer failed (refused, or no answer in time); a
//!   failure of a request sent before that transfer says nothing about the successor now;
//! - it installed a transfer from its predecessor whose sent list cannot catch its successor up
//!   update by update (the successor may lack any xid after what this replica held before).
//!
//! The simulator keeps link eras of its own, instead of trusting the replica's epochs: an era
//! ends at each transfer sent and whenever the replica's successor, state or session changes,
//! and every request carries the era it was sent in (`ReplyTo::era`). The replica ends its epochs
//! at least there, so a reply the replica may act on is always of the current era here.

use std::collections::BTreeMap;

use crate::core::{NodeId, PeerReply, RequestKind, Transfer};
use crate::sim::shape::Shape;
use crate::sim::world::{ReplyTo, World};

/// (process, incarnation).
type Sender = (usize, u32);

#[derive(Default)]
pub struct TransferCauses {
    links: BTreeMap<Sender, Link>,
}

#[derive(Default)]
struct Link {
    era: u64,
    /// A transfer to the current successor has a cause.
    due: bool,
}

impl TransferCauses {
    pub fn era(&self, sender: Sender) -> u64 {
        self.links.get(&sender).map_or(0, |l| l.era)
    }

    pub fn forget(&mut self, proc: usize) {
        self.links.retain(|s, _| s.0 != proc);
    }

    pub fn after_step(&mut self, sender: Sender, before: &Shape, after: &Shape) {
        if after.session != before.session || after.succ != before.succ || after.synced != before.synced {
            let link = self.links.entry(sender).or_default();
            link.era += 1;
            // Pulling the state from the successor itself owes it nothing; allowing a transfer
            // anyway keeps this check from having to know which pull it was.
            link.due = after.synced && after.succ.is_some();
        }
    }

    /// The answer to a request on `sender`'s link, sent in `era` to `from`, is about to arrive.
    pub fn on_reply(&mut self, to: ReplyTo, succ: Option<NodeId>, kind: RequestKind, reply: &PeerReply) {
        let on_link = matches!(kind, RequestKind::Propose(_) | RequestKind::Transfer(_));
        let Some(link) = self.links.get_mut(&(to.proc, to.inc)) else {
            return;
        };
        if on_link && *reply != PeerReply::Accepted && to.era == link.era && succ == Some(to.addressee) {
            link.due = true;
        }
    }

    /// Whether installing `t` on a replica shaped `before` leaves its successor to be caught up
    /// by a whole transfer: the replica held the state, and `t`'s sent list lacks some xid after
    /// what it held. Marks the transfer due if so. (With every replica keeping the same number
    /// of sent updates this does not happen: see README, Limits.)
    pub fn before_install(&mut self, sender: Sender, before: &Shape, t: &Transfer) {
        if !before.synced || before.succ.is_none() || t.state_xid < before.last_applied {
            return;
        }
        let suffix = t.sent.iter().filter(|u| u.xid > before.last_applied).count() as u64;
        if suffix != t.state_xid - before.last_applied {
            self.links.entry(sender).or_default().due = true;
        }
    }
}

pub fn on_send(w: &mut World, sender: Sender, to: NodeId) {
    let link = w.transfer_causes.links.entry(sender).or_default();
    let due = std::mem::replace(&mut link.due, false);
    link.era += 1;
    if !due {
        w.violations.push(format!(
            "transfer cause: replica {} sent session {to:x} a state transfer with no cause (no new successor or state, no failure since its last transfer, no install that needs one)",
            sender.0
        ));
    }
}
