//! The tail's progress flows back, from the tail only, at a bounded rate whatever the network
//! does: only a replica that holds the state and has no successor sends `xidProcessed` (from
//! anyone else it would acknowledge updates the tail may not have), and after a refused or lost
//! one it waits `retry_min_ms` before the next; only a replica that holds the state polls the
//! tail, keeping one `getLatestXid` in flight and waiting `poll_interval_ms` after each answer.
//! A new session starts afresh.

use std::collections::BTreeMap;

use crate::core::{Config, Millis, PeerReply, RequestKind};
use crate::sim::world::World;

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

/// The answer to `kind` from `sender` is about to be delivered to it.
pub fn on_reply(w: &mut World, sender: Sender, kind: RequestKind, reply: &PeerReply) {
    // The simulator's replicas keep the default intervals.
    let cfg = Config::default();
    let now = w.now();
    match kind {
        RequestKind::XidProcessed(_) if *reply != PeerReply::Accepted => {
            w.pacing.notify_not_before.insert(sender, now + cfg.retry_min_ms);
        }
        RequestKind::GetLatestXid => {
            w.pacing.poll_in_flight.insert(sender, false);
            w.pacing.poll_not_before.insert(sender, now + cfg.poll_interval_ms);
        }
        _ => {}
    }
}

pub fn on_send(w: &mut World, sender: Sender, kind: RequestKind) {
    let now = w.now();
    let early = |not_before: Option<&Millis>| not_before.is_some_and(|t| now < *t);
    let shape = &w.procs[sender.0].shape;
    let is_tail = shape.holds_state && shape.succ.is_none();
    let wrong = match kind {
        RequestKind::XidProcessed(_) if !is_tail => Some("xidProcessed while not a tail that holds the state"),
        RequestKind::GetLatestXid if !shape.holds_state => Some("getLatestXid while not holding the state"),
        RequestKind::XidProcessed(_) if early(w.pacing.notify_not_before.get(&sender)) => {
            Some("xidProcessed sooner than retry_min_ms after the last one failed")
        }
        RequestKind::GetLatestXid if w.pacing.poll_in_flight.get(&sender) == Some(&true) => Some("getLatestXid while one is in flight"),
        RequestKind::GetLatestXid if early(w.pacing.poll_not_before.get(&sender)) => {
            Some("getLatestXid sooner than poll_interval_ms after the last answer")
        }
        _ => None,
    };
    if kind == RequestKind::GetLatestXid {
        w.pacing.poll_in_flight.insert(sender, true);
    }
    if let Some(wrong) = wrong {
        w.violations.push(format!("pacing: replica {} sent {wrong}", sender.0));
    }
}
