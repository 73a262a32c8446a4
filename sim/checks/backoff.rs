//! A replica whose link to its successor failed sends the next state transfer after its backoff,
//! neither sooner nor later: `retry_min_ms`, doubling with each failure in a row up to
//! `retry_max_ms`, and back to `retry_min_ms` once a transfer is accepted or the link starts
//! over. A successor that keeps refusing must not be flooded, and one that recovered must not
//! wait for a backoff left over from failures that ended. "Later" allows one tick (the replica
//! retries on its timer) and does not apply across a pause.

use crate::core::{Millis, NodeId};
use crate::sim::links::{Link, LinkState};
use crate::sim::violation::{Invariant, Violation};

/// Replica `proc` sends session `to` a state transfer at `now` over the link `was`; the
/// replica's timer ticks every `tick` ms.
pub fn check_send(now: Millis, tick: Millis, proc: usize, to: NodeId, was: &Link) -> Option<Violation> {
    let LinkState::Due { at } = was.state else { return None };
    let wrong = if now < at {
        format!("{} ms before its backoff ran out", at - now)
    } else if now >= at + tick && !was.paused {
        format!("{} ms after its backoff ran out", now - at)
    } else {
        return None;
    };
    Some(Violation::new(
        Invariant::Backoff,
        format!(
            "replica {proc} sent session {to:x} a state transfer {wrong} (next backoff {} ms)",
            was.backoff
        ),
    ))
}
