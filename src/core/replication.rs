//! Updates flowing down the chain: applying, forwarding, the sent list, and how the tail's
//! progress flows back up (`xidProcessed` to the head, `getLatestXid` polled by the others).

use super::*;

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    fn apply(&mut self, update: &Update) {
        debug_assert!(
            update.xid == self.last_applied + 1 || self.takes_first_xid_zero(update.xid),
            "updates apply in xid order"
        );
        if update.xid == 0 {
            self.applied_xid_zero = true;
        }
        let old = self.store.get(&update.key).copied().unwrap_or(0);
        self.digest.set(&update.key, old, update.value);
        self.history.push(update.xid, &update.key, self.digest);
        if update.value == 0 {
            if self.store.remove(&update.key).is_some() {
                self.store_bytes -= super::entry_bytes(&update.key);
            }
        } else if self.store.insert(update.key.clone(), update.value).is_none() {
            self.store_bytes += super::entry_bytes(&update.key);
        }
        self.last_applied = update.xid;
    }

    /// Apply the next update of the sequence and hand it on (once it is durable, see
    /// `durability`): to the successor, or, at the tail, back up as an acknowledgement.
    pub(super) fn apply_and_pass_on(&mut self, update: Update) {
        self.apply(&update);
        self.persist_and_pass_on(update);
    }

    /// Hand on an applied (and durable) update.
    pub(super) fn pass_on(&mut self, update: Update) {
        if self.succ.is_some() {
            // Also when a state installed while it waited for the disk covers it: that state
            // came from our predecessor, and our successor may lack the update (a duplicate
            // costs it nothing).
            self.forward(&update);
            // A from-0 chain's xid 0 is not kept: `tail_processed == 0` cannot tell whether
            // the tail has it. A transfer still carries it in the state; only a tail-variant
            // callback for it can be lost if the tail fails before applying it.
            if update.xid == 0 {
                return;
            }
            // Listed already by that installed state's sent list.
            if self.sent.back().is_some_and(|u| u.xid >= update.xid) {
                return;
            }
            self.sent.push_back(update);
            // Only a middle replica cut off from the tail gets here (the head stops taking
            // writes first). Dropping the oldest entry is safe: a transfer whose sent list has
            // a hole makes the receiver send its successor the whole state instead.
            if self.sent.len() > self.cfg.max_sent {
                self.sent.pop_front();
            }
        } else {
            self.applied_at_tail(std::slice::from_ref(&update));
        }
    }

    pub(super) fn forward(&mut self, update: &Update) {
        // While a transfer is due, the update travels inside it instead.
        if !matches!(self.link, Link::Transferring | Link::Streaming) {
            return;
        }
        let (Some(me), Some(succ)) = (self.me, self.succ.clone()) else {
            return;
        };
        self.net.send(
            &succ,
            self.link_epoch,
            PeerRequest::Propose {
                src: me,
                update: update.clone(),
            },
        );
        self.watch_forwarded(update.xid);
    }

    /// This replica is the tail and `updates` have just become durable.
    pub(super) fn applied_at_tail(&mut self, updates: &[Update]) {
        if self.cfg.variant == Variant::Tail {
            for origin in updates.iter().filter_map(|u| u.origin.as_ref()) {
                self.net.notify_client(origin);
            }
        }
        self.mark_processed(self.durable_xid());
        if self.cfg.variant == Variant::Head && !self.is_head_role() {
            self.head_notify.needed = true;
            self.drive_head_notify(self.clock.now());
        }
    }

    /// Everything up to `xid` is applied at the tail: trim the sent list, answer clients.
    pub(super) fn mark_processed(&mut self, xid: Xid) {
        let xid = xid.min(self.last_applied);
        if xid > self.tail_processed {
            self.tail_processed = xid;
        }
        while self.sent.front().is_some_and(|u| u.xid <= self.tail_processed) {
            self.sent.pop_front();
        }
        while let Some((_, client)) = self.client_writes.front().filter(|(x, _)| *x <= self.tail_processed) {
            if let Some(n) = self.writes_per_client.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    self.writes_per_client.remove(client);
                }
            }
            self.client_writes.pop_front();
        }
        // An xid from the tail names our update only if no other head could have reused it:
        // with an expired lease our session may be gone and a new head may have issued the same
        // xids on a history that never saw ours. Such clients wait, and learn "unknown" when the
        // session loss arrives.
        if !self.lease_valid() {
            return;
        }
        // With a data dir, the head's own disk must have the write too (see `durability`).
        let done = self.tail_processed.min(self.durable_xid());
        // A transfer may carry the last xid there is (the wire allows any u64): none follows it.
        let still_waiting = match done.checked_add(1) {
            Some(next) => self.pending.split_off(&next),
            None => BTreeMap::new(),
        };
        for (_, token) in std::mem::replace(&mut self.pending, still_waiting) {
            self.net.complete_client(token, WriteOutcome::Committed);
        }
    }

    /// `proposeStateUpdate` from `src`. `true` is `rc = 0`: applied, already applied, or held
    /// until the gap before it fills.
    pub fn on_propose(&mut self, src: NodeId, update: Update) -> bool {
        if self.me.is_none() || self.pred != Some(src) || !self.holds_state {
            return false;
        }
        if self.takes_first_xid_zero(update.xid) {
            self.apply_and_pass_on(update);
            self.drain_reorder();
            return true;
        }
        if update.xid <= self.last_applied {
            return true;
        }
        if update.xid > self.last_applied + 1 {
            if self.dropped_held {
                return false;
            }
            if self.reorder.contains_key(&update.xid) {
                return true;
            }
            // Held xids all lie in the window after `last_applied`, so the window alone bounds
            // the buffer (to `max_reorder - 1` entries).
            if update.xid - self.last_applied > self.cfg.max_reorder as u64 {
                return false;
            }
            self.reorder.insert(update.xid, update);
            return true;
        }
        self.apply_and_pass_on(update);
        self.drain_reorder();
        true
    }

    /// Our heads number the first update 1, and `last_applied == 0` means nothing applied. Some
    /// other implementations number from 0: a replica that has applied nothing takes xid 0 as
    /// the chain's first update (then expects 1, as it would anyway). Once applied, a resend of
    /// xid 0 is acknowledged and ignored like any other duplicate.
    pub(super) fn takes_first_xid_zero(&self, xid: Xid) -> bool {
        xid == 0 && self.last_applied == 0 && !self.applied_xid_zero
    }

    pub(super) fn drain_reorder(&mut self) {
        while let Some(entry) = self.reorder.first_entry() {
            if *entry.key() > self.last_applied + 1 {
                break;
            }
            let update = entry.remove();
            if update.xid == self.last_applied + 1 {
                self.apply_and_pass_on(update);
            }
        }
    }

    /// `xidProcessed` at the head. Refused elsewhere and for an xid the head never issued.
    pub fn on_xid_processed(&mut self, xid: Xid) -> bool {
        if !self.is_head_role() || !self.holds_state || xid > self.last_applied {
            return false;
        }
        self.mark_processed(xid);
        true
    }

    /// `getLatestXid`: the last applied (and durable) xid, from the tail only.
    pub fn on_get_latest_xid(&self) -> Option<Xid> {
        (self.is_tail_role() && self.holds_state && self.lease_valid()).then_some(self.durable_xid())
    }

    /// The tail keeps at most one `xidProcessed` in flight; it always carries the latest xid,
    /// so one call acknowledges everything applied while the previous one travelled.
    pub(super) fn drive_head_notify(&mut self, now: Millis) {
        if self.cfg.variant != Variant::Head || !self.head_notify.needed || self.head_notify.in_flight {
            return;
        }
        if now < self.head_notify.retry_at || !self.holds_state || !self.is_tail_role() {
            return;
        }
        let Some(head) = self.view.head().cloned() else { return };
        if self.head_on_its_way_out(head.id, now) {
            return;
        }
        self.head_notify.needed = false;
        // Nothing applied yet: there is nothing to report, and to a head that numbers from 0,
        // `xidProcessed(0)` would acknowledge its first update, which we have not seen.
        let processed = self.durable_xid();
        if Some(head.id) == self.me || (processed == 0 && !self.applied_xid_zero) {
            return;
        }
        self.head_notify.in_flight = true;
        self.head_notify.sent_at = now;
        self.net.send(&head, 0, PeerRequest::XidProcessed(processed));
    }

    pub(super) fn on_head_notify_reply(&mut self, from: NodeId, reply: PeerReply, now: Millis) {
        self.head_notify.in_flight = false;
        // Silence from the head counts from the first call it failed to answer.
        if reply == PeerReply::Unreachable {
            if self.head_notify.failing.is_none_or(|(head, _)| head != from) {
                self.head_notify.failing = Some((from, self.head_notify.sent_at));
            }
        } else {
            self.head_notify.failing = None;
        }
        if reply != PeerReply::Accepted {
            // The head may not see itself as head yet; try again shortly, with the newest xid.
            self.head_notify.needed = true;
            self.head_notify.retry_at = now + self.cfg.retry_min_ms;
            return;
        }
        self.drive_head_notify(now);
    }

    pub(super) fn drive_poll(&mut self, now: Millis) {
        // The head variant's head hears from the tail through `xidProcessed`; polling as well
        // would only duplicate it. A former head still waiting on clients does poll.
        if self.cfg.variant == Variant::Head && self.is_head_role() {
            return;
        }
        let waiting = !self.sent.is_empty() || !self.pending.is_empty();
        if !waiting || self.poll.in_flight || now < self.poll.next_at || !self.holds_state || self.is_tail_role() {
            return;
        }
        let Some(tail) = self.view.tail().cloned() else { return };
        if Some(tail.id) == self.me {
            return;
        }
        self.poll.in_flight = true;
        self.poll.sent_at = now;
        self.net.send(&tail, 0, PeerRequest::GetLatestXid);
    }

    pub(super) fn on_poll_reply(&mut self, from: NodeId, reply: PeerReply, now: Millis) {
        self.poll.in_flight = false;
        // As for `xidProcessed`: silence from the tail counts from the first unanswered poll.
        if reply == PeerReply::Unreachable {
            if self.poll.failing.is_none_or(|(tail, _)| tail != from) {
                self.poll.failing = Some((from, self.poll.sent_at));
            }
        } else {
            self.poll.failing = None;
        }
        self.poll.next_at = now + self.cfg.poll_interval_ms;
        if let PeerReply::LatestXid(Some(xid)) = reply {
            if self.holds_state {
                self.mark_processed(xid);
            }
        }
    }

    pub(super) fn on_link_reply(&mut self, from: NodeId, epoch: u64, kind: RequestKind, reply: PeerReply, now: Millis) {
        let current = self.succ.as_ref().is_some_and(|s| s.id == from) && epoch == self.link_epoch;
        if !current {
            return;
        }
        self.watch_answered(kind, &reply, now);
        if kind == RequestKind::Held {
            self.on_held_reply(reply, now);
            return;
        }
        match (kind, reply) {
            (RequestKind::Transfer(_), PeerReply::Accepted) => {
                if self.link == Link::Transferring {
                    self.link = Link::Streaming;
                    self.backoff = self.cfg.retry_min_ms;
                }
            }
            (_, PeerReply::Accepted) => {}
            // Refused or lost: we no longer know what the successor holds, so it gets the whole
            // state again. Duplicates are harmless: the receiver skips xids it already applied.
            _ => {
                if matches!(self.link, Link::Transferring | Link::Streaming) {
                    self.link = Link::NeedsTransfer {
                        retry_at: now + self.backoff,
                    };
                    self.backoff = (self.backoff * 2).min(self.cfg.retry_max_ms);
                }
            }
        }
    }
}
