//! The tail's progress flows back at a bounded rate whatever the network does: after a refused
//! or lost `xidProcessed` the tail waits `retry_min_ms` before the next one; a replica polling
//! the tail keeps one `getLatestXid` in flight and waits `poll_interval_ms` after each answer.
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
    let wrong = match kind {
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
