//! Reacting to membership: new predecessors and successors, state transfer, and a replica
//! that joins at the head pulling the state from below.
//!
//! Rule of thumb: whenever a replica that holds state gets a new successor, it sends that
//! successor its whole state and sent list (`stateTransfer`), as chain.proto's other
//! implementations do. The receiver replaces its state only if the transfer is at least as far
//! along as what it has, then passes on what its own successor lacks.

use super::*;

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    /// A new membership snapshot. Views reach replicas at different times; each acts on its own.
    /// A membership view. `version` orders views: it grows with every change of membership
    /// (ZooKeeper's pzxid of the root), across a deleted and recreated root too.
    pub fn on_view(&mut self, members: Vec<Member>, version: u64) {
        let role_before = self.role();
        self.view = View::new(members);
        if self.role() != role_before {
            // Failures seen in another role say nothing about the links this one depends on.
            self.head_notify.failing = None;
            self.poll.failing = None;
        }
        self.view_version = version;
        self.pull.stateless.clear();
        self.pull.retained.clear();
        self.pull.settle_until = None;
        self.pull.said_copy_waits = false;
        let Some(me) = self.me else { return };
        let now = self.clock.now();
        if self.view.contains(me) && version > self.member_version {
            self.member_version = version;
            self.member_addrs = self.view.members().iter().map(|m| m.addr.clone()).collect();
            self.persist_view();
        }

        if self.marker == Marker::Unavailable {
            self.marker = Marker::Unknown;
        }
        let pred = self.view.predecessor(me).map(|m| m.id);
        if pred != self.pred {
            // Held updates came from the old predecessor; the new one starts with a transfer.
            self.pred = pred;
            self.awaiting_state_since = now;
            self.dropped_held |= !self.reorder.is_empty();
            self.reorder.clear();
        }
        if self.pulled_by.is_some_and(|p| !self.view.contains(p)) {
            self.pulled_by = None;
        }

        let succ = self.view.successor(me).cloned();
        if succ != self.succ {
            self.succ = succ;
            self.restart_link(now);
        }
        if self.holds_state && self.is_tail_role() {
            // Everything we applied is durable now: tell the head (again: it may be new), and
            // in the tail variant call back the clients whose updates were still in flight.
            let in_flight: Vec<Update> = self.sent.iter().filter(|u| u.xid > self.tail_processed).cloned().collect();
            self.applied_at_tail(&in_flight);
        }
    }

    fn restart_link(&mut self, now: Millis) {
        self.link_epoch += 1;
        self.watch_new_link(now);
        self.backoff = self.cfg.retry_min_ms;
        self.link = if self.succ.is_some() && self.holds_state {
            Link::NeedsTransfer { retry_at: now }
        } else {
            Link::Idle
        };
        self.drive_link(now);
    }

    pub(super) fn drive_link(&mut self, now: Millis) {
        let Link::NeedsTransfer { retry_at } = self.link else { return };
        if now < retry_at || !self.holds_state {
            return;
        }
        let Some(succ) = self.succ.clone() else {
            self.link = Link::Idle;
            return;
        };
        // Ask first what the successor holds: a replica back on its data dir, or one that held
        // the state below our predecessor, may need only the keys written since.
        self.link_epoch += 1;
        self.link = Link::Asking;
        self.net.send(&succ, self.link_epoch, PeerRequest::Held);
    }

    /// The successor's answer to `Held`: send it the whole state, or only what it lacks.
    pub(super) fn on_held_reply(&mut self, reply: PeerReply, now: Millis) {
        if self.link != Link::Asking {
            return;
        }
        let held = match reply {
            // `None` also from a foreign successor, which does not know the question.
            PeerReply::Held(held) => held,
            // Refused: asked of a session the replica at that address is not (restarted before
            // its old session expired), or not now; a whole transfer would be refused too.
            _ => {
                self.link = Link::NeedsTransfer {
                    retry_at: now + self.backoff,
                };
                self.backoff = (self.backoff * 2).min(self.cfg.retry_max_ms);
                return;
            }
        };
        let Some(succ) = self.succ.clone() else {
            self.link = Link::Idle;
            return;
        };
        let transfer = match held.and_then(|base| self.delta_since(base)) {
            Some(delta) => {
                tracing::info!(
                    base_xid = delta.base.map_or(0, |(xid, _)| xid),
                    keys = delta.state.len(),
                    "the successor holds our state as of its last xid: sending only the keys written since"
                );
                delta
            }
            None => match self.snapshot() {
                Some(t) => t,
                None => {
                    // Not joined: nothing to send from yet.
                    self.link = Link::NeedsTransfer {
                        retry_at: now + self.backoff,
                    };
                    return;
                }
            },
        };
        self.link_epoch += 1;
        self.link = Link::Transferring;
        self.net.send(&succ, self.link_epoch, PeerRequest::Transfer(transfer));
    }

    fn snapshot(&self) -> Option<Transfer> {
        Some(Transfer {
            src: self.me?,
            state_xid: self.last_applied,
            state: self.store.clone(),
            sent: self.sent_for_transfer(),
            base: None,
        })
    }

    /// Only the keys written after `base`'s xid, if our state had `base`'s digest there (so
    /// the successor's state is ours as of then, whatever history led to it).
    fn delta_since(&self, base: (Xid, StateDigest)) -> Option<Transfer> {
        let (xid, digest) = base;
        if xid > self.last_applied || self.history.digest_at(xid) != Some(digest) {
            return None;
        }
        let state: Store = self
            .history
            .keys_after(xid)
            .into_iter()
            .map(|k| (k.to_string(), self.store.get(k).copied().unwrap_or(0)))
            .collect();
        Some(Transfer {
            src: self.me?,
            state_xid: self.last_applied,
            state,
            sent: self.sent_for_transfer(),
            base: Some(base),
        })
    }

    /// `held` from our predecessor: the state we would build on, whole or with what we lack.
    pub fn on_held(&self) -> Option<(Xid, StateDigest)> {
        if self.holds_state {
            return Some((self.last_applied, self.digest));
        }
        self.retained.as_ref().filter(|r| !r.refused).map(|r| (r.mark.xid, r.digest))
    }

    /// `stateTransfer` from `t.src`. Accepted only from the current predecessor and only if it
    /// is at least as far along as this replica; a refused transfer changes nothing.
    pub fn on_state_transfer(&mut self, t: Transfer) -> bool {
        if self.me.is_none() || self.pred != Some(t.src) {
            return false;
        }
        self.awaiting_state_since = self.clock.now();
        if self.holds_state && t.state_xid < self.last_applied {
            return false;
        }
        if !transfer_is_well_formed(&t) {
            return false;
        }
        let Some(t) = self.whole(t) else { return false };
        self.install(t, false);
        true
    }

    /// A transfer of only what we lack made whole, if we hold the state it builds on (the one
    /// `on_held` names); a whole transfer as it is.
    fn whole(&mut self, mut t: Transfer) -> Option<Transfer> {
        let Some(base) = t.base.take() else { return Some(t) };
        if self.on_held() != Some(base) {
            return None;
        }
        let mut state = if self.holds_state {
            self.store.clone()
        } else {
            self.retained.as_ref()?.store.clone()
        };
        for (key, value) in std::mem::take(&mut t.state) {
            if value == 0 {
                state.remove(&key);
            } else {
                state.insert(key, value);
            }
        }
        t.state = state;
        Some(t)
    }

    /// Replace our state with a transferred one and bring our successor up to it, unless
    /// `successor_has_it` (we pulled the state from the successor itself).
    fn install(&mut self, t: Transfer, successor_has_it: bool) {
        let was_synced = self.holds_state;
        let old_last = if was_synced { self.last_applied } else { 0 };
        let had_xid_zero = was_synced && self.applied_xid_zero;
        self.store = t.state;
        self.store.retain(|_, v| *v != 0);
        // The state is O(keys) to receive anyway; counting it once here keeps scrapes O(1).
        self.store_bytes = super::store_bytes(&self.store);
        self.digest = StateDigest::of(&self.store);
        self.history = History::starting_at(t.state_xid, self.digest);
        self.last_applied = t.state_xid;
        // At xid 0 a state is either empty (nothing applied, numbering from 1) or holds a
        // from-0 chain's first update; a resend of a `del` as xid 0 would change nothing anyway.
        self.applied_xid_zero = t.state_xid == 0 && (!self.store.is_empty() || t.sent.iter().any(|u| u.xid == 0));
        self.holds_state = true;
        self.retained = None;
        self.dropped_held = false;
        self.record_chain_held();
        // Our successor has at most `old_last`; it can be caught up update by update only if
        // the transfer's sent list holds every xid after that (its sender trims it, and bounds
        // it). Taken before we trim the list to our own bound: as the tail we owe each of
        // those updates' clients its callback, and as a middle forwarding them costs less than
        // a whole transfer.
        let is_new = |u: &&Update| u.xid > old_last || (u.xid == 0 && !had_xid_zero);
        let suffix: Vec<Update> = t.sent.iter().filter(is_new).cloned().collect();
        let zero_is_new = self.applied_xid_zero && !had_xid_zero;
        let suffix_complete = suffix.len() as u64 == self.last_applied - old_last + u64::from(zero_is_new);
        // Without xid 0, as in `apply_and_pass_on`: the suffix above still calls it back.
        self.sent = t.sent.into_iter().filter(|u| u.xid > 0).collect();
        // A sender with a larger bound (another implementation) may hand us more than we keep.
        // Dropping the oldest is safe as in `apply_and_pass_on`: a hole means a whole transfer.
        let excess = self.sent.len().saturating_sub(self.cfg.max_sent);
        self.sent.drain(..excess);
        self.reorder.retain(|xid, _| *xid > t.state_xid);

        // As the tail, the suffix's acknowledgements wait for the state to be on disk.
        let deferred: &[Update] = if self.succ.is_none() { &suffix } else { &[] };
        let persisted = self.persist_install(deferred);
        if self.succ.is_some() {
            if self.link == Link::Asking && !successor_has_it {
                // Nothing went out yet: the transfer that follows the successor's answer is
                // made then, from this state.
            } else if successor_has_it {
                self.link_epoch += 1;
                self.watch_new_link(self.clock.now());
                self.link = Link::Streaming;
            } else if was_synced && suffix_complete && matches!(self.link, Link::Transferring | Link::Streaming) {
                for u in &suffix {
                    self.forward(u);
                }
            } else {
                self.restart_link(self.clock.now());
            }
            self.mark_processed(self.tail_processed);
        } else if !persisted {
            self.applied_at_tail(&suffix);
        }
        self.drain_reorder();
    }

    /// `chainrep.ext.pullState` from `src`, a replica above us that holds no state.
    /// With `want_retained` the asker found no state anywhere and wants our retained copy; a
    /// replica that holds the chain's state by now answers with that instead.
    pub fn on_pull_state(&mut self, src: NodeId, stateless: &[NodeId], want_retained: bool) -> PullAnswer {
        let Some(me) = self.me else { return PullAnswer::NoState };
        let asker_above = src < me && self.view.contains(src);
        // Our predecessor must be the asker or a replica the asker found stateless: then no one
        // who could still send us updates sits between us, and the asker's xids cannot clash.
        let pred_ok = self.pred.is_some_and(|p| p == src || stateless.contains(&p));
        if !self.holds_state {
            // "No state" lets the asker skip us, and if everyone says it, start the chain
            // afresh. Say it only under the same conditions as handing out state: a replica
            // that does not see the asker above it may yet pull the state and act as head, and
            // one with an unasked replica above it sees a member the asker's view lacks (or is
            // answering for a session of its own process that held state) that may hold it.
            if !(asker_above && pred_ok) {
                return PullAnswer::NotNow;
            }
            return match &self.retained {
                None => PullAnswer::NoState,
                // Handed over for adoption only once every replica of its view is back: copies
                // of that view, or newer, may be on their way back (`all_registered`).
                Some(r) if want_retained && (r.refused || !self.all_registered(&r.view_members)) => PullAnswer::NotNow,
                Some(r) if want_retained => PullAnswer::State(r.clone().into_transfer(me)),
                Some(r) => PullAnswer::Retained(r.mark),
            };
        }
        // A replica we promised the state to is out of the running once it told the asker it
        // has none: it said so only seeing the asker above it, and a replica with a predecessor
        // drops pulled state. Otherwise a promisee that lost our answer, or got it too late,
        // would keep every later head from the state.
        let not_promised = self.pulled_by.is_none_or(|p| p == src || stateless.contains(&p));
        if !asker_above || !pred_ok || !not_promised || !self.lease_valid() {
            return PullAnswer::NotNow;
        }
        self.pulled_by = Some(src);
        let Some(t) = self.snapshot() else { return PullAnswer::NoState };
        // The asker, our predecessor from now on, starts from exactly this snapshot and sends us
        // every update after it: what an earlier predecessor sent and we dropped is superseded,
        // and refusing gaps would only cost whole transfers.
        self.dropped_held = false;
        PullAnswer::State(t)
    }

    /// A replica at the head with no state asks the replicas below it, in chain order, for it.
    pub(super) fn drive_pull(&mut self, now: Millis) {
        let Some(me) = self.me else { return };
        if self.holds_state || self.pred.is_some() || self.pull.in_flight.is_some() || now < self.pull.next_at {
            return;
        }
        if !self.view.contains(me) {
            return;
        }
        let below = self.view.below(me);
        match below.iter().find(|m| !self.pull.stateless.contains(&m.id)).cloned() {
            Some(target) => self.send_pull(me, &target, false),
            None => self.no_state_in_chain(me, now),
        }
    }

    fn send_pull(&mut self, me: NodeId, target: &Member, retained: bool) {
        self.pull.in_flight = Some(target.id);
        self.pull.asked_retained = retained;
        let stateless = self.pull.stateless.iter().copied().collect();
        self.net.send(
            target,
            0,
            PeerRequest::PullState {
                src: me,
                stateless,
                retained,
            },
        );
    }

    /// Every other member says it holds nothing (or there is no other member): the state died
    /// with its holders, or they all lost their sessions and kept copies (`RetainedState`).
    /// Either way, wait until the view has not changed for `retained_settle_ms`: replicas whose
    /// sessions ended at the same time as ours may still be registering again, and starting an
    /// empty chain before they do would wipe their copies. Then adopt the best copy, or start
    /// empty if there is none.
    fn no_state_in_chain(&mut self, me: NodeId, now: Millis) {
        if let Some(r) = &self.retained {
            if !self.all_registered(&r.view_members) {
                if !self.pull.said_copy_waits {
                    self.pull.said_copy_waits = true;
                    let missing: Vec<&String> = r.view_members.iter().filter(|a| !self.is_registered(a)).collect();
                    tracing::info!(
                        view = r.mark.view_version,
                        ?missing,
                        "no replica in the chain holds state: waiting for every replica of the view our copy is from to come back"
                    );
                }
                return;
            }
        }
        let own = self.retained.as_ref().map(|r| r.mark);
        // Ties go to the lowest id, so every asker picks the same copy.
        let other = self
            .pull
            .retained
            .iter()
            .map(|(id, mark)| (*mark, std::cmp::Reverse(*id)))
            .max()
            .map(|(mark, std::cmp::Reverse(id))| (mark, id));
        let settle_until = *self
            .pull
            .settle_until
            .get_or_insert(now.saturating_add(self.cfg.retained_settle_ms));
        if own.is_none() && other.is_none() {
            // No copy anywhere: either a brand-new chain, or one whose copies are still
            // registering. Only the replica that creates the chain's marker may tell the first
            // from the second without waiting.
            match self.marker {
                Marker::Created => {
                    self.marker = Marker::Existed;
                    tracing::info!(session = format_args!("{me:x}"), "a new chain: starting with empty state");
                    self.start_empty(now);
                    return;
                }
                Marker::Unknown => {
                    self.marker = Marker::Asked;
                    self.coord.mark_chain_held();
                }
                Marker::Asked | Marker::Existed | Marker::Unavailable => {}
            }
        }
        if now < settle_until {
            return;
        }
        if own.is_none() && other.is_none() {
            if self.view.members().len() == 1 {
                tracing::info!(session = format_args!("{me:x}"), "alone in the chain: starting with empty state");
            } else {
                tracing::warn!("no replica in the chain holds state: starting with empty state");
            }
            self.start_empty(now);
            return;
        }
        match other {
            Some((mark, holder)) if own.is_none_or(|own| mark > own) => {
                let Some(target) = self.view.members().iter().find(|m| m.id == holder).cloned() else {
                    self.pull.retained.remove(&holder);
                    return;
                };
                tracing::warn!(
                    holder = format_args!("{holder:x}"),
                    xid = mark.xid,
                    "no replica in the chain holds state: pulling the best copy kept from a lost session"
                );
                self.send_pull(me, &target, true);
            }
            _ => {
                if self.retained.as_ref().is_some_and(|r| r.refused) {
                    // Our data dir was refused as corrupt and no better copy has come back:
                    // the chain's data may be on a disk whose replica is still away.
                    if !self.pull.said_copy_waits {
                        self.pull.said_copy_waits = true;
                        tracing::warn!("no replica in the chain holds state, and our data dir was refused as corrupt: waiting for a replica with a copy to come back");
                    }
                    return;
                }
                let Some(r) = self.retained.take() else { return };
                tracing::warn!(
                    xid = r.mark.xid,
                    "no replica in the chain holds state: adopting the copy this process kept from its lost session"
                );
                self.install(r.into_transfer(me), false);
            }
        }
    }

    /// The answer to `Coordinator::mark_chain_held`.
    pub fn on_chain_marker(&mut self, answer: ChainMarker) {
        self.marker = match answer {
            ChainMarker::Created => Marker::Created,
            ChainMarker::Existed => Marker::Existed,
            ChainMarker::Unavailable => Marker::Unavailable,
        };
        if self.marker == Marker::Created {
            // Still a stateless head that found no state anywhere? Then start now.
            self.drive_pull(self.clock.now());
            if self.marker == Marker::Created {
                self.marker = Marker::Existed;
            }
        }
    }

    /// A replica that holds the chain's state makes sure the chain's marker exists, so a head
    /// that later finds no state anywhere knows to wait for retained copies. Our own heads
    /// create it before they take the first write; this covers chains started by another
    /// implementation.
    fn record_chain_held(&mut self) {
        if matches!(self.marker, Marker::Unknown | Marker::Unavailable) {
            self.marker = Marker::Asked;
            self.coord.mark_chain_held();
        }
    }

    /// Whether every one of `addrs` is registered in the current view. A copy kept from the view
    /// that listed `addrs` is offered, to a head adopting the best copy, only then: any copy as
    /// recent as it or more belongs to one of them or to a replica of a view one of them names,
    /// so once the whole list answered, the best copy is among the answers or waits in turn.
    fn all_registered(&self, addrs: &[String]) -> bool {
        addrs.iter().all(|a| self.is_registered(a))
    }

    fn is_registered(&self, addr: &str) -> bool {
        self.view.members().iter().any(|m| m.addr == addr)
    }

    /// Hold the chain's state from nothing: a brand-new chain, or one whose state died.
    fn start_empty(&mut self, now: Millis) {
        self.holds_state = true;
        self.persist_install(&[]);
        self.restart_link(now);
    }

    /// Whether refusing a `proposeStateUpdate` or `stateTransfer` from `src` as "not from our
    /// predecessor" may only mean that our view lags: we have not joined or are not listed in
    /// it yet, or `src` sorts above us and becomes our predecessor once the replicas between
    /// us are gone from our view. The runtime then waits for a fresh listing before answering.
    /// A sender below us can never be our predecessor.
    pub fn view_may_be_stale_for(&self, src: NodeId) -> bool {
        match self.me {
            None => true,
            Some(me) => self.pred != Some(src) && (src < me || !self.view.contains(me)),
        }
    }

    /// The runtime is receiving a `stateTransfer` right now: a predecessor is sending state, so
    /// the watchdog below keeps waiting however long the transfer takes.
    pub fn note_transfer_receiving(&mut self) {
        self.awaiting_state_since = self.clock.now();
    }

    /// A replica below the head that has had no state for `stateless_rejoin_ms` joins again as
    /// a new replica, which makes its predecessor see a new successor and send the state. Our
    /// own replicas resend transfers, so this matters for predecessors of other
    /// implementations, which send one transfer per change of successor and never retry it.
    pub(super) fn drive_stateless_watchdog(&mut self, now: Millis) {
        let Some(pred) = self.pred else { return };
        if self.holds_state || self.me.is_none() {
            return;
        }
        let waited = now.saturating_sub(self.awaiting_state_since);
        if waited < self.cfg.stateless_rejoin_ms {
            return;
        }
        tracing::warn!(
            predecessor = format_args!("{pred:x}"),
            waited_ms = waited,
            "no state from the predecessor: joining again as a new replica so that it sends the state"
        );
        self.awaiting_state_since = now;
        self.coord.rejoin();
    }

    pub(super) fn on_pull_reply(&mut self, from: NodeId, reply: PeerReply, now: Millis) {
        if self.pull.in_flight != Some(from) {
            return;
        }
        self.pull.in_flight = None;
        match reply {
            PeerReply::Pulled(PullAnswer::State(t)) => {
                if self.holds_state || self.pred.is_some() || !transfer_is_well_formed(&t) {
                    return;
                }
                // A retained copy is not what the successor holds now.
                let from_successor = !self.pull.asked_retained && self.succ.as_ref().is_some_and(|s| s.id == from);
                self.install(t, from_successor);
            }
            PeerReply::Pulled(PullAnswer::NoState) => {
                self.pull.stateless.insert(from);
                self.pull.retained.remove(&from);
            }
            PeerReply::Pulled(PullAnswer::Retained(mark)) => {
                self.pull.stateless.insert(from);
                self.pull.retained.insert(from, mark);
            }
            _ => {
                // Not now, or unreachable: start over from the top of the chain after a pause,
                // because a "no state" answer may be stale by then.
                self.pull.stateless.clear();
                self.pull.next_at = now + self.cfg.retry_min_ms * 5;
            }
        }
    }
}

/// The sent list must be strictly increasing xids no later than the state itself. It may start
/// at xid 0: implementations that number from 0 send their first update in it.
fn transfer_is_well_formed(t: &Transfer) -> bool {
    let mut prev: Option<Xid> = None;
    for u in &t.sent {
        if prev.is_some_and(|p| u.xid <= p) || u.xid > t.state_xid {
            return false;
        }
        prev = Some(u.xid);
    }
    true
}
