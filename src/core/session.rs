//! Joining, the session lease, and what losing the session means.
//!
//! A replica may act as head or tail only while it knows its ZooKeeper session was alive less
//! than `lease_ms` ago. ZooKeeper expires a session only after hearing nothing for the whole
//! session timeout, and the lease is shorter, so by the time another replica is told it took
//! over, this one has already stopped serving, even if it was paused and knows nothing yet.

use super::*;

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    /// The coordinator registered this replica under session `id`. Starts from empty state:
    /// a replica with a new session is a new node and must be given the state.
    pub fn on_joined(&mut self, id: NodeId) {
        self.parked = None;
        self.reset(Some(id));
        self.awaiting_state_since = self.clock.now();
        let members = self.view.members().to_vec();
        self.on_view(members, self.view_version);
    }

    /// The runtime confirmed the session alive by an exchange it *started* at `at`.
    pub fn on_session_alive(&mut self, at: Millis) {
        self.lease_until = self.lease_until.max(at.saturating_add(self.cfg.lease_ms));
        // Clients whose writes the tail confirmed while the lease had lapsed were held back
        // (see `mark_processed`); the session never expired after all, so answer them now.
        if !self.pending.is_empty() && self.lease_valid() {
            self.mark_processed(self.tail_processed);
        }
    }

    /// The session expired or was closed: stop serving, join again as a new replica. The state
    /// is kept aside (`RetainedState`) in case every other holder lost its session too; a copy
    /// from an earlier loss stays if this session never got the chain's state.
    pub fn on_session_lost(&mut self) {
        if self.parked.take().is_some() {
            // Out of the chain already; whatever ended the session, the next one registers.
            self.coord.join();
            return;
        }
        if self.me.is_none() {
            return;
        }
        self.retain_state();
        self.reset(None);
        self.coord.join();
    }

    /// Keep the state aside when this replica stops being a member (`RetainedState`).
    pub(super) fn retain_state(&mut self) {
        if self.holds_state {
            let mark = RetainedMark {
                view_version: self.member_version,
                xid: self.last_applied,
            };
            tracing::info!(
                xid = mark.xid,
                view = mark.view_version,
                "keeping this session's state as a last resort"
            );
            self.retained = Some(RetainedState {
                mark,
                view_members: self.member_addrs.clone(),
                store: std::mem::take(&mut self.store),
                digest: self.digest,
                refused: false,
            });
            self.store_bytes = 0;
            self.digest = StateDigest::default();
        }
    }

    pub(super) fn lease_valid(&self) -> bool {
        self.clock.now() < self.lease_until
    }

    pub(super) fn reset(&mut self, me: Option<NodeId>) {
        for (_, token) in std::mem::take(&mut self.pending) {
            self.net
                .complete_client(token, WriteOutcome::Unknown("the replica lost its ZooKeeper session"));
        }
        self.me = me;
        self.member_version = 0;
        self.member_addrs.clear();
        self.pred = None;
        self.succ = None;
        self.holds_state = false;
        self.store.clear();
        self.store_bytes = 0;
        self.digest = StateDigest::default();
        self.history = History::default();
        self.last_applied = 0;
        self.applied_xid_zero = false;
        self.tail_processed = 0;
        self.sent.clear();
        self.reorder.clear();
        self.dropped_held = false;
        self.link = Link::Idle;
        self.link_epoch += 1;
        self.link_watch = suspicion::LinkWatch::default();
        self.predecessor_watch = suspicion::PredecessorWatch::default();
        self.backoff = self.cfg.retry_min_ms;
        self.head_notify = HeadNotify::default();
        self.poll = Poll::default();
        self.pull = Pull::default();
        self.pulled_by = None;
        self.client_writes.clear();
        self.writes_per_client.clear();
        self.lease_until = 0;
        self.forget_durability();
    }
}
