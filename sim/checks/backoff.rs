//! A replica whose state transfer failed waits before it sends the next one to the same
//! successor: `retry_min_ms`, doubling with each failure in a row up to `retry_max_ms`, unless
//! something changed meanwhile (a view, its own state). A successor that keeps refusing must not
//! be flooded.
//!
//! Only a failure on the link's current epoch counts (replies carry it: the last transfer and
//! the updates sent after it); anything that may restart the link (a membership event, a
//! transfer or pulled state installed) forgets the replica's failures.

use std::collections::BTreeMap;

use crate::core::{Config, Millis, NodeId};
use crate::sim::world::World;

/// (process, incarnation, successor's session).
type Link = (usize, u32, NodeId);

#[derive(Default)]
pub struct TransferRetries {
    last_epoch: BTreeMap<Link, u64>,
    failed_at: BTreeMap<Link, Millis>,
    /// Failures in a row since the link last worked or restarted: each doubles the wait.
    in_a_row: BTreeMap<Link, u32>,
}

impl TransferRetries {
    /// A transfer, or an update sent after it on the same link epoch, failed. The first
    /// failure starts the wait; later ones of the same epoch find the link already waiting.
    pub fn failed(&mut self, link: Link, epoch: u64, now: Millis) {
        if self.last_epoch.get(&link) == Some(&epoch) && !self.failed_at.contains_key(&link) {
            self.failed_at.insert(link, now);
            *self.in_a_row.entry(link).or_default() += 1;
        }
    }

    /// The successor took the transfer: the wait starts again from the shortest.
    pub fn succeeded(&mut self, link: Link, epoch: u64) {
        if self.last_epoch.get(&link) == Some(&epoch) {
            self.in_a_row.remove(&link);
        }
    }

    pub fn forget(&mut self, proc: usize) {
        self.last_epoch.retain(|l, _| l.0 != proc);
        self.failed_at.retain(|l, _| l.0 != proc);
        self.in_a_row.retain(|l, _| l.0 != proc);
    }
}

pub fn check_send(w: &mut World, link: Link, epoch: u64) {
    let now = w.now();
    w.transfer_retries.last_epoch.insert(link, epoch);
    let Some(failed) = w.transfer_retries.failed_at.remove(&link) else {
        return;
    };
    let in_a_row = w.transfer_retries.in_a_row.get(&link).copied().unwrap_or(1);
    let cfg = Config::default();
    let doublings = in_a_row.saturating_sub(1).min(16);
    let wait = cfg.retry_min_ms.saturating_mul(1 << doublings).min(cfg.retry_max_ms);
    if now - failed < wait {
        w.violations.push(format!(
            "backoff: replica {} sent session {:x} a state transfer {} ms after the last one failed, failure {in_a_row} in a row ({wait} ms at least)",
            link.0,
            link.2,
            now - failed
        ));
    }
}
