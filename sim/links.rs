//! What the simulator knows of each replica's link to its successor, worked out from what it
//! sees (the replica's shape after each step, the requests it sends, the answers it gets) rather
//! than read from the replica's own epochs and flags. `checks::transfer_causes` and
//! `checks::backoff` judge the replica's transfers against it.
//!
//! The model follows the protocol as docs/protocol.md describes it: a replica that holds the state and
//! gets a new successor (or comes to hold the state with one) sends it a state transfer at once,
//! unless it pulled the state from that successor; a failed request on the link since the last
//! transfer (refused, or no answer in time) makes the next transfer due after a backoff that
//! starts at `retry_min_ms` and doubles with each failure in a row; an accepted transfer ends
//! the run of failures.
//!
//! Link epochs (the core's name for the same idea) are the simulator's own here: one ends at each
//! transfer sent and whenever the replica's successor, state or session changes, and every
//! request carries the epoch it was sent in (`ReplyTo::link_epoch`). A failure counts only if
//! its request was sent in the current epoch.

use std::collections::BTreeMap;

use crate::core::{Config, Millis, NodeId, PeerReply, RequestKind, Xid};
use crate::sim::events::ReplyTo;
use crate::sim::shape::Shape;

/// (process, incarnation).
pub type Sender = (usize, u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No successor, or no state to send it.
    Idle,
    /// A transfer is due, no sooner than `at`.
    Due { at: Millis },
    /// A transfer was sent, or the successor holds the state already: updates flow.
    Active,
}

#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub epoch: u64,
    pub state: LinkState,
    /// The wait after the next failure.
    pub backoff: Millis,
    /// The process was paused since the transfer fell due, so it may send it late.
    pub paused: bool,
    /// The link started over during the step being carried out: the transfer is due at once.
    restarted: bool,
    /// The `pullState` in flight: its target, and whether it asked for a retained copy.
    pull: Option<(NodeId, bool)>,
    /// The `pullState` answered in the step being carried out.
    pulled: Option<(NodeId, bool)>,
    /// The replica asked its successor what it holds (`held`): the transfer that follows the
    /// answer belongs to the same attempt.
    asked: bool,
}

impl Link {
    fn new() -> Self {
        Link {
            epoch: 0,
            state: LinkState::Idle,
            backoff: retry_min(),
            paused: false,
            restarted: false,
            pull: None,
            pulled: None,
            asked: false,
        }
    }

    fn restart(&mut self, now: Millis) {
        self.state = LinkState::Due { at: now };
        self.backoff = retry_min();
        self.paused = false;
        self.restarted = true;
    }
}

/// The simulator's replicas keep the default retry intervals.
fn retry_min() -> Millis {
    Config::default().retry_min_ms
}

#[derive(Default)]
pub struct Links(BTreeMap<Sender, Link>);

impl Links {
    pub fn get(&self, sender: Sender) -> Link {
        self.0.get(&sender).copied().unwrap_or_else(Link::new)
    }

    fn entry(&mut self, sender: Sender) -> &mut Link {
        self.0.entry(sender).or_insert_with(Link::new)
    }

    pub fn forget(&mut self, proc: usize) {
        self.0.retain(|s, _| s.0 != proc);
    }

    pub fn paused(&mut self, proc: usize) {
        for (_, link) in self.0.range_mut((proc, 0)..=(proc, u32::MAX)) {
            link.paused = true;
        }
    }

    /// A step changed the replica's shape from `before` to `after`.
    pub fn after_step(&mut self, sender: Sender, before: &Shape, after: &Shape, now: Millis) {
        if after.session == before.session && after.succ == before.succ && after.holds_state == before.holds_state {
            return;
        }
        let link = self.entry(sender);
        link.epoch += 1;
        link.restart(now);
        if !(after.holds_state && after.succ.is_some()) {
            link.state = LinkState::Idle;
        }
    }

    pub fn pull_sent(&mut self, sender: Sender, to: NodeId, retained: bool) {
        self.entry(sender).pull = Some((to, retained));
    }

    pub fn pulling(&self, sender: Sender) -> bool {
        self.0.get(&sender).is_some_and(|l| l.pull.is_some())
    }

    /// The answer to a `pullState` from `from` is about to reach the replica.
    pub fn pull_answered(&mut self, sender: Sender, from: NodeId) {
        let link = self.entry(sender);
        if link.pull.is_some_and(|(to, _)| to == from) {
            link.pulled = link.pull.take();
        }
    }

    /// A step of the replica is over, with everything it sent carried out; `succ` is its
    /// successor now. A transfer that fell due at once and was not sent is right only if the
    /// replica took the state from that successor's answer to a plain (not retained) pull: the
    /// successor holds it already. Otherwise says what the successor was owed.
    pub fn step_done(&mut self, sender: Sender, succ: Option<NodeId>) -> Option<String> {
        let link = self.0.get_mut(&sender)?;
        let pulled = link.pulled.take();
        if !std::mem::take(&mut link.restarted) || !matches!(link.state, LinkState::Due { .. }) {
            return None;
        }
        link.state = LinkState::Active;
        if pulled.is_some_and(|(from, retained)| !retained && Some(from) == succ) {
            return None;
        }
        Some(match pulled {
            Some((from, true)) => format!("took a retained copy from session {from:x}"),
            Some((from, false)) => format!("pulled the state from session {from:x}, not its successor"),
            None => "came to hold the state or got a new successor".to_string(),
        })
    }

    /// The replica, shaped `before`, accepted a transfer of the state at `state_xid` whose sent
    /// list holds xids `sent`. It can catch its successor up update by update only if the link
    /// works and that sent list holds every
    /// xid after what the replica held; otherwise it starts the link over. (With every replica
    /// keeping the same number of sent updates, the sent list always does: README, Limits.)
    pub fn installed(&mut self, sender: Sender, before: &Shape, state_xid: Xid, sent: &[Xid], now: Millis) {
        if !before.holds_state || before.succ.is_none() || state_xid < before.last_applied {
            return;
        }
        let suffix = sent.iter().filter(|x| **x > before.last_applied).count() as u64;
        let link = self.entry(sender);
        if link.asked {
            // The transfer that follows the successor's answer is made from the new state.
            return;
        }
        if suffix != state_xid - before.last_applied || link.state != LinkState::Active {
            link.restart(now);
        }
    }

    /// The answer to a `kind` request arrives at `to`; `succ` is the replica's successor now.
    pub fn on_reply(&mut self, to: ReplyTo, succ: Option<NodeId>, kind: RequestKind, reply: &PeerReply, now: Millis) {
        let on_link = matches!(kind, RequestKind::Propose(_) | RequestKind::Transfer(_) | RequestKind::Held);
        let link = self.entry((to.proc, to.incarnation));
        if !on_link || to.link_epoch != link.epoch || succ != Some(to.addressee) || link.state != LinkState::Active {
            return;
        }
        match (kind, reply) {
            (RequestKind::Transfer(_), PeerReply::Accepted) => link.backoff = retry_min(),
            (_, PeerReply::Accepted) => {}
            // An answer: the transfer follows at once, whole or not.
            (RequestKind::Held, PeerReply::Held(_)) => {}
            _ => {
                // A question that failed ends the attempt: no transfer follows it.
                link.asked = false;
                link.state = LinkState::Due { at: now + link.backoff };
                link.backoff = (link.backoff * 2).min(Config::default().retry_max_ms);
                link.paused = false;
            }
        }
    }

    /// The replica sends its successor a transfer, or asks it what it holds, which starts a
    /// transfer; returns the link as it was, or `None` for the transfer that follows an answer
    /// (judged with the question).
    pub fn transfer_sent(&mut self, sender: Sender, kind: RequestKind) -> Option<Link> {
        let link = self.entry(sender);
        let was = *link;
        link.epoch += 1;
        let follows_answer = std::mem::replace(&mut link.asked, kind == RequestKind::Held);
        if follows_answer && kind != RequestKind::Held {
            return None;
        }
        link.state = LinkState::Active;
        link.restarted = false;
        Some(was)
    }
}
