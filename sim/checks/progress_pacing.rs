//! The tail's progress flows back, from the tail only, at a bounded rate whatever the network
//! does: only a replica that holds the state and has no successor sends `xidProcessed` (from
//! anyone else it would acknowledge updates the tail may not have), and after a refused or lost
//! one it waits `retry_min_ms` before the next; only a replica that holds the state polls the
//! tail, keeping one `getLatestXid` in flight and waiting `poll_interval_ms` after each answer.
//! A new session starts afresh. An evicted replica's probes of the chain's head and tail (also
//! `getLatestXid`, paced by the suspicion timeout: `core::suspicion`) are not polls.

use std::collections::BTreeMap;

use crate::core::{Config, Millis, PeerReply, RequestKind};
use crate::sim::shape::Shape;
use crate::sim::violation::{Invariant, Violation};

/// (process, incarnation).
type Sender = (usize, u32);

#[derive(Default)]
pub struct Pacing {
    notify_not_before: BTreeMap<Sender, Millis>,
    poll_in_flight: BTreeMap<Sender, bool>,
    poll_not_before: BTreeMap<Sender, Millis>,
}

impl Pacing {
    /// A process's session changed or it restarted: its timers start afresh.
    pub fn forget(&mut self, proc: usize) {
        self.notify_not_before.retain(|s, _| s.0 != proc);
        self.poll_in_flight.retain(|s, _| s.0 != proc);
        self.poll_not_before.retain(|s, _| s.0 != proc);
    }
}

/// The answer to `kind` from `sender` is about to be delivered to it, at `now`.
pub fn on_reply(pacing: &mut Pacing, now: Millis, sender: Sender, kind: RequestKind, reply: &PeerReply) {
    // The simulator's replicas keep the default intervals.
    let cfg = Config::default();
    match kind {
        RequestKind::XidProcessed(_) if *reply != PeerReply::Accepted => {
            pacing.notify_not_before.insert(sender, now + cfg.retry_min_ms);
        }
        RequestKind::GetLatestXid => {
            pacing.poll_in_flight.insert(sender, false);
            pacing.poll_not_before.insert(sender, now + cfg.poll_interval_ms);
        }
        _ => {}
    }
}

/// `sender`, shaped `shape`, sends a `kind` request at `now`.
pub fn on_send(pacing: &mut Pacing, shape: &Shape, now: Millis, sender: Sender, kind: RequestKind) -> Option<Violation> {
    if shape.parked {
        return None;
    }
    let early = |not_before: Option<&Millis>| not_before.is_some_and(|t| now < *t);
    let is_tail = shape.holds_state && shape.succ.is_none();
    let wrong = match kind {
        RequestKind::XidProcessed(_) if !is_tail => Some("xidProcessed while not a tail that holds the state"),
        RequestKind::GetLatestXid if !shape.holds_state => Some("getLatestXid while not holding the state"),
        RequestKind::XidProcessed(_) if early(pacing.notify_not_before.get(&sender)) => {
            Some("xidProcessed sooner than retry_min_ms after the last one failed")
        }
        RequestKind::GetLatestXid if pacing.poll_in_flight.get(&sender) == Some(&true) => Some("getLatestXid while one is in flight"),
        RequestKind::GetLatestXid if early(pacing.poll_not_before.get(&sender)) => {
            Some("getLatestXid sooner than poll_interval_ms after the last answer")
        }
        _ => None,
    };
    if kind == RequestKind::GetLatestXid {
        pacing.poll_in_flight.insert(sender, true);
    }
    wrong.map(|wrong| Violation::new(Invariant::ProgressPacing, format!("replica {} sent {wrong}", sender.0)))
}
