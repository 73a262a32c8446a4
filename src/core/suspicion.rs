//! Gray failures: a link between two live replicas that stops carrying updates.
//!
//! ZooKeeper's session list sees a replica that crashed or lost ZooKeeper, not a broken link
//! between two replicas that both still reach ZooKeeper. Without more, a chain with such a link
//! takes no write for as long as the link stays broken. So the replica that sees the failure,
//! the one whose updates its successor does not acknowledge, reports it, and the chain re-forms
//! around the link. The rule (argued in docs/gray-failures.md):
//!
//! - **Suspicion.** A replica that holds state, whose lease is valid, and that owes its
//!   successor something (updates forwarded and not acknowledged, or a state transfer after a
//!   failed one) with no answer at all from it for `suspicion_ms` (plus a tenth of that per
//!   position below the head, so that of two replicas suspecting at once the upstream one acts
//!   first) suspects the successor. A transfer in flight is waited out: its own deadline ends it.
//! - **Eviction.** The suspicion becomes one record per chain in ZooKeeper, written only if
//!   nobody wrote another since the reporter last saw it (a version check). Every replica sees
//!   each record; none reports within `suspicion_ms` of seeing the last one, so the chain loses
//!   at most one replica per suspicion period.
//! - **No stale reads.** An evicted tail still has a valid lease, and a chain re-formed without
//!   it would acknowledge writes it never sees. So a suspect that sees the record stops serving
//!   at once and deletes its own member znode; and one that does not (hung, or a foreign
//!   implementation) stops renewing its lease, because our replicas renew it only by a
//!   ZooKeeper round trip that finds no record naming them. The reporter deletes the suspect's
//!   znode itself only `lease_ms` and a half after it saw the record, when that lease is over.
//! - **No self-eviction.** A replica never names itself. One cut off from every peer suspects
//!   whoever follows it, and an eviction of its successor always leaves the state in the chain
//!   (the reporter, upstream, holds everything its successor holds). Leaving itself would
//!   not: its copy would go where no new head looks for state, and the simulator found runs
//!   where every other member was stateless or crashed, and acknowledged writes were lost.
//! - **Watching an accuser.** A head cut off from every peer suspects its successor all the
//!   same. So a replica whose predecessor reported the last eviction probes it, and reports it
//!   if it stays silent for `suspicion_ms`; the reporter waits two periods before its next
//!   report, so the head cut off is the one that leaves, after one healthy replica (which
//!   comes back). Safe like any eviction by a replica holding state: it holds every
//!   acknowledged write.
//! - **Watching a classic predecessor.** A predecessor of another implementation (its
//!   requests do not name the session they are for, as ours always do) reports no broken link.
//!   So its successor watches it the same way, for as long as it is the predecessor, and
//!   removes its znode after reporting it, as it would any suspect that reads no record.
//! - **Parking.** An evicted replica of ours keeps its ZooKeeper session but stays out of the
//!   chain, probing every member (`getLatestXid`, which every implementation answers). Only
//!   after all of them answered every probe for `suspicion_ms` does it join again, with a new
//!   session (at the tail on a single ZooKeeper server; anywhere on an ensemble). A replica cut off from its peers
//!   therefore stays outside the chain, and a flapping link re-forms the chain at most once per
//!   suspicion period. A replica evicted again soon after it came back (within
//!   `REOFFEND_WINDOW` suspicion periods) must reach the tail twice as long as the last time
//!   before it joins, up to `MAX_BACKOFF_SHIFT` doublings: a probe shows that it reaches the
//!   tail, not that the tail reaches it (a stateful firewall lets one through and not the
//!   other), so a link broken one way only costs the chain ever rarer outages.

use super::*;

/// The chain's latest eviction, as ZooKeeper holds it (one record per chain, beside the root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionRecord {
    /// Changes with every eviction written; a record with another version is a new eviction.
    pub version: u64,
    pub reporter: NodeId,
    pub suspect: NodeId,
}

/// An eviction within this many suspicion periods of the last rejoin doubles the time the
/// replica must reach the tail before it joins again.
const REOFFEND_WINDOW: u64 = 10;
/// At most 2^6 = 64 suspicion periods of probing before a rejoin.
const MAX_BACKOFF_SHIFT: u32 = 6;

/// Probes from a parked replica carry this bit in their epoch, so their replies are never taken
/// for the replies to a tail poll (`drive_poll`) made before the replica was evicted.
const PROBE_EPOCH: u64 = 1 << 63;

/// Probes of a watched predecessor (`PredecessorWatch`) carry this bit beside `PROBE_EPOCH`.
const PREDECESSOR_PROBE: u64 = 1 << 62;

/// A successor watches its predecessor for this many suspicion periods after the predecessor
/// reported an eviction: long enough for its own report, which comes one period and a stagger
/// after it began watching, also when the evicted replica had to be removed by its reporter.
const ACCUSER_WATCH_PERIODS: u64 = 3;

/// Whether a request sent with this epoch is a probe (a parked replica's, or a watch of a
/// predecessor): not the chain's traffic (see `PROBE_EPOCH`).
pub fn is_probe_epoch(epoch: u64) -> bool {
    epoch & PROBE_EPOCH != 0
}

/// How the link to the successor is doing, for suspicion.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkWatch {
    /// Highest xid forwarded to the current successor, and the highest it acknowledged.
    forwarded: Xid,
    acked: Xid,
    /// The successor's last answer of any kind, or when we started waiting on it.
    contact_at: Millis,
}

/// A predecessor watched by its successor, which probes it and reports it if it stays silent
/// for a suspicion period. Two kinds are watched:
///
/// - **The reporter of the last eviction**, for a few periods. A head cut off from every peer
///   cannot tell that the fault is its own: it suspects its successor, which leaves. Its next
///   successor then hears nothing from it either, and reports it before the head may report
///   again (a reporter waits a period longer before its next report). So the replica cut off
///   ends up outside the chain, and the healthy ones lose at most one member for a while,
///   which comes back.
/// - **A predecessor of another implementation**, always. It reports no broken link, so a link
///   from it to us would otherwise stay broken for as long as the fault lasts. Such a suspect
///   reads no eviction record either: the reporter removes its znode (`Evictions::removal`).
///
/// A watcher with a successor probes it too, and reports the predecessor only while the
/// successor answers: a watcher cut off from every peer itself hears nothing from either, and
/// must not evict the healthy head it cannot reach (the simulator found one that did, and the
/// chain then lost its last copy to a crash). A tail watcher has no one else to ask; at worst
/// it evicts a healthy head and stays alone with the state.
#[derive(Clone, Debug, Default)]
pub(super) struct PredecessorWatch {
    target: Option<NodeId>,
    /// Its last answer to a probe, or when the watch began.
    contact_at: Millis,
    next_probe_at: Millis,
    /// When the probe in flight went out; the network answers every request (`Unreachable`
    /// after its deadline), and one older than a period is given up.
    probe_sent_at: Option<Millis>,
    /// The successor's last answer to a probe, and when the probe in flight to it went out.
    witness_heard_at: Option<Millis>,
    witness_probe_sent_at: Option<Millis>,
}

/// What this replica knows of the chain's evictions. Survives session loss: the records are
/// the chain's, not the session's.
#[derive(Clone, Debug, Default)]
pub(super) struct Evictions {
    last: Option<EvictionRecord>,
    seen_at: Millis,
    /// The suspect we reported and when, until a new record answers it.
    asked: Option<(NodeId, Millis)>,
    /// A suspect our record named, whose znode we delete at this time unless it left first.
    removal: Option<(NodeId, Millis)>,
    /// This process's evictions in a row, each soon after it rejoined (see `REOFFEND_WINDOW`),
    /// and when it last rejoined from parking.
    repeat_evictions: u32,
    last_unparked_at: Option<Millis>,
}

/// An evicted replica waiting to reach the chain again.
#[derive(Clone, Debug)]
pub(super) struct Parked {
    since: Millis,
    /// Since when every probe was answered.
    reachable_since: Option<Millis>,
    /// Probes of the current round still unanswered, and whether every answer so far came.
    probes_out: u8,
    round_ok: bool,
    next_probe_at: Millis,
    probe_seq: u64,
    /// `Coordinator::rejoin` was asked for; nothing more to do until the session is replaced.
    rejoining: bool,
    /// How long the tail must answer every probe before we join again.
    reach_for: Millis,
}

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    /// Whether this replica was evicted and waits to reach the chain again.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Whether the latest eviction record names `head` and is recent enough that its removal
    /// (by itself at once, or by its reporter a lease and a half after the record) may still
    /// be on its way to other replicas. The head variant's tail sends such a head no
    /// `xidProcessed`: a head that does not read records (another implementation) is removed
    /// while alive, and a tail whose view still shows it would otherwise acknowledge to it the
    /// new head's first writes under xids it may have given its own, unforwarded writes. Past
    /// three leases, a head still in the view is one whose reporter never removed it (it lost
    /// its session first), and it is served again.
    pub(super) fn head_on_its_way_out(&self, head: NodeId, now: Millis) -> bool {
        let window = self.cfg.lease_ms.saturating_mul(3);
        self.evictions
            .last
            .is_some_and(|r| r.suspect == head && now.saturating_sub(self.evictions.seen_at) < window)
    }

    /// The successor changed, or the link to it started over: nothing is owed yet.
    pub(super) fn watch_new_link(&mut self, now: Millis) {
        self.link_watch = LinkWatch {
            forwarded: 0,
            acked: 0,
            contact_at: now,
        };
    }

    /// `src`, our predecessor, sent us an update or a state transfer; `classic` when the
    /// request did not name the session it was meant for, as our replicas always do: it comes
    /// from another implementation of chain.proto, which will not report a broken link between
    /// us, so we watch it ourselves.
    pub(super) fn learn_predecessor_dialect(&mut self, src: NodeId, classic: bool) {
        if self.pred != Some(src) {
            return;
        }
        if classic {
            self.classic_pred = Some(src);
        } else if self.classic_pred == Some(src) {
            self.classic_pred = None;
        }
    }

    /// An update went to the successor.
    pub(super) fn watch_forwarded(&mut self, xid: Xid) {
        if self.link_watch.acked >= self.link_watch.forwarded {
            // Nothing was owed: silence counts from now, not from the last answer.
            self.link_watch.contact_at = self.clock.now();
        }
        self.link_watch.forwarded = self.link_watch.forwarded.max(xid);
    }

    /// The current successor answered a `kind` request on the current link.
    pub(super) fn watch_answered(&mut self, kind: RequestKind, reply: &PeerReply, now: Millis) {
        if *reply == PeerReply::Unreachable {
            return;
        }
        self.link_watch.contact_at = now;
        if *reply == PeerReply::Accepted {
            if let RequestKind::Propose(xid) | RequestKind::Transfer(xid) = kind {
                self.link_watch.acked = self.link_watch.acked.max(xid);
            }
        }
    }

    /// Whether the successor owes us an answer: a transfer due after one failed, or updates
    /// streamed and not acknowledged. A transfer in flight is not counted: its deadline (which
    /// grows with the state) ends it, and a failure puts the link back to `NeedsTransfer`.
    fn successor_owes(&self) -> bool {
        match self.link {
            Link::NeedsTransfer { .. } => true,
            Link::Streaming => self.link_watch.forwarded > self.link_watch.acked,
            Link::Idle | Link::Asking | Link::Transferring => false,
        }
    }

    pub(super) fn drive_suspicion(&mut self, now: Millis) {
        if self.parked.is_some() {
            self.drive_parked(now);
            return;
        }
        if let Some((suspect, at)) = self.evictions.removal {
            if now >= at {
                self.evictions.removal = None;
                if self.view.contains(suspect) {
                    tracing::warn!(
                        suspect = format_args!("{suspect:x}"),
                        "the evicted replica did not leave by itself; its lease is over: removing it"
                    );
                    self.coord.remove_member(suspect);
                }
            }
        }
        let period = self.cfg.suspicion_ms;
        if period == 0 {
            return;
        }
        self.watch_predecessor(now);
        if !self.holds_state || !self.lease_valid() {
            return;
        }
        let Some(me) = self.me else { return };
        let Some(index) = self.view.members().iter().position(|m| m.id == me) else {
            return;
        };
        let Some((suspect, silent)) = self.silent_neighbour(now) else {
            return;
        };
        let stagger = (period / 10).saturating_mul(index as u64);
        if silent < period.saturating_add(stagger) {
            return;
        }
        if self.evictions.asked.is_some_and(|(_, at)| now.saturating_sub(at) < period) {
            return;
        }
        let last = self.evictions.last;
        let since_last = now.saturating_sub(self.evictions.seen_at);
        // The reporter of the last eviction waits a period longer: if the fault was its own,
        // the successor watching it (`PredecessorWatch`) reports it first.
        let reported_last = last.is_some_and(|r| Some(r.reporter) == self.me);
        let quiet_for = if reported_last { period.saturating_mul(2) } else { period };
        if last.is_some() && since_last < quiet_for {
            return;
        }
        tracing::warn!(
            suspect = format_args!("{suspect:x}"),
            silent_ms = silent,
            "a replica we depend on has not answered for the suspicion timeout: asking ZooKeeper to evict it"
        );
        self.evictions.asked = Some((suspect, now));
        self.coord.report_suspect(suspect, last.map(|r| r.version));
    }

    /// The neighbour that owes us an answer and how long it has been silent: the successor on
    /// the chain's link; or, off the chain's links, the head that the head variant's tail
    /// acknowledges to, or the tail that the tail variant's head polls to learn what is
    /// applied (without it, its sent list fills and it refuses writes).
    fn silent_neighbour(&self, now: Millis) -> Option<(NodeId, Millis)> {
        if self.successor_owes() {
            let succ = self.succ.as_ref()?.id;
            return Some((succ, now.saturating_sub(self.link_watch.contact_at)));
        }
        let direct = match self.cfg.variant {
            Variant::Head if self.is_tail_role() => self
                .head_notify
                .failing
                .and_then(|(head, since)| Some((head, since, self.view.head()?.id))),
            Variant::Tail if self.is_head_role() => self
                .poll
                .failing
                .and_then(|(tail, since)| Some((tail, since, self.view.tail()?.id))),
            _ => None,
        };
        if let Some((target, since, current)) = direct {
            if target == current && Some(target) != self.me {
                return Some((target, now.saturating_sub(since)));
            }
        }
        let w = &self.predecessor_watch;
        let watched = w.target?;
        let witnessed = match &self.succ {
            None => true,
            Some(_) => w.witness_heard_at.is_some_and(|at| now.saturating_sub(at) < self.cfg.suspicion_ms),
        };
        (self.pred == Some(watched) && witnessed).then(|| (watched, now.saturating_sub(w.contact_at)))
    }

    /// Watch the predecessor while we hold state and it is the reporter of a recent eviction or
    /// of another implementation (see `PredecessorWatch`), probing it every quarter period.
    fn watch_predecessor(&mut self, now: Millis) {
        let period = self.cfg.suspicion_ms;
        let recent = now.saturating_sub(self.evictions.seen_at) < period.saturating_mul(ACCUSER_WATCH_PERIODS);
        let accuser = self.evictions.last.filter(|_| recent).map(|r| r.reporter);
        let watched = |p: NodeId| Some(p) == accuser || Some(p) == self.classic_pred;
        let target = self.pred.filter(|&p| self.holds_state && watched(p) && Some(p) != self.me);
        if target != self.predecessor_watch.target {
            self.predecessor_watch = PredecessorWatch {
                target,
                contact_at: now,
                next_probe_at: now,
                ..PredecessorWatch::default()
            };
        }
        let Some(target) = target else { return };
        let w = &mut self.predecessor_watch;
        let in_flight = w.probe_sent_at.is_some_and(|at| now.saturating_sub(at) < period);
        if in_flight || now < w.next_probe_at {
            return;
        }
        let Some(member) = self.view.members().iter().find(|m| m.id == target).cloned() else {
            return;
        };
        w.probe_sent_at = Some(now);
        w.next_probe_at = now.saturating_add((period / 4).max(self.cfg.retry_min_ms).max(1));
        self.net.send(&member, PROBE_EPOCH | PREDECESSOR_PROBE, PeerRequest::GetLatestXid);
        let witness_in_flight = w.witness_probe_sent_at.is_some_and(|at| now.saturating_sub(at) < period);
        if let Some(succ) = self.succ.clone().filter(|_| !witness_in_flight) {
            w.witness_probe_sent_at = Some(now);
            self.net.send(&succ, PROBE_EPOCH | PREDECESSOR_PROBE, PeerRequest::GetLatestXid);
        }
    }

    fn on_predecessor_probe_reply(&mut self, from: NodeId, reply: &PeerReply, now: Millis) {
        let succ = self.succ.as_ref().map(|m| m.id);
        let w = &mut self.predecessor_watch;
        let answered = *reply != PeerReply::Unreachable;
        if w.target == Some(from) {
            w.probe_sent_at = None;
            if answered {
                w.contact_at = now;
            }
        } else if w.target.is_some() && succ == Some(from) {
            w.witness_probe_sent_at = None;
            if answered {
                w.witness_heard_at = Some(now);
            }
        }
    }

    /// The chain's eviction record, as read from the coordinator (again, or changed).
    pub fn on_eviction_record(&mut self, record: EvictionRecord) {
        if self.evictions.last.is_some_and(|r| r.version == record.version) {
            return;
        }
        let now = self.clock.now();
        self.evictions.last = Some(record);
        self.evictions.seen_at = now;
        self.evictions.asked = None;
        self.evictions.removal = None;
        if Some(record.suspect) == self.me {
            self.park(record, now);
        } else if Some(record.reporter) == self.me {
            let wait = self.cfg.lease_ms.saturating_add(self.cfg.lease_ms / 2);
            self.evictions.removal = Some((record.suspect, now.saturating_add(wait)));
        }
    }

    fn park(&mut self, record: EvictionRecord, now: Millis) {
        if record.reporter == record.suspect {
            tracing::warn!("left the chain: probing its tail until it answers again");
        } else {
            tracing::warn!(
                reporter = format_args!("{:x}", record.reporter),
                "evicted from the chain (our predecessor could not reach us): probing its tail until it answers again"
            );
        }
        let period = self.cfg.suspicion_ms;
        let soon_after_rejoin = self
            .evictions
            .last_unparked_at
            .is_some_and(|at| now.saturating_sub(at) < period.saturating_mul(REOFFEND_WINDOW));
        self.evictions.repeat_evictions = if soon_after_rejoin {
            (self.evictions.repeat_evictions + 1).min(MAX_BACKOFF_SHIFT)
        } else {
            0
        };
        let reach_for = period.saturating_mul(1 << self.evictions.repeat_evictions);
        if self.evictions.repeat_evictions > 0 {
            tracing::warn!(
                times = self.evictions.repeat_evictions + 1,
                reach_for_ms = reach_for,
                "evicted again soon after coming back: waiting longer before joining again"
            );
        }
        self.retain_state();
        self.reset(None);
        self.parked = Some(Parked {
            since: now,
            reachable_since: None,
            probes_out: 0,
            round_ok: true,
            next_probe_at: now,
            probe_seq: 0,
            rejoining: false,
            reach_for,
        });
        self.coord.leave_chain();
    }

    fn drive_parked(&mut self, now: Millis) {
        let probe_every = (self.cfg.suspicion_ms / 4).max(self.cfg.retry_min_ms).max(1);
        // Every member: joined again, a replica needs its neighbours and the head or tail it
        // talks to directly, and where it lands is not known in advance (on a ZooKeeper
        // ensemble a new session id sorts by the server that made it, not always last; the
        // simulator found a replica that came back next to the link that got it evicted).
        let targets: Vec<Member> = self.view.members().to_vec();
        let Some(p) = self.parked.as_mut() else { return };
        if p.rejoining || p.probes_out > 0 || now < p.next_probe_at {
            return;
        }
        if targets.is_empty() {
            // Nobody is in the chain: there is nothing to be cut off from.
            tracing::info!("the chain is empty: joining again");
            p.rejoining = true;
            self.evictions.last_unparked_at = Some(now);
            self.coord.rejoin();
            return;
        }
        p.probe_seq += 1;
        p.probes_out = targets.len() as u8;
        p.round_ok = true;
        p.next_probe_at = now + probe_every;
        let epoch = PROBE_EPOCH | p.probe_seq;
        for target in &targets {
            self.net.send(target, epoch, PeerRequest::GetLatestXid);
        }
    }

    pub(super) fn on_probe_reply(&mut self, from: NodeId, epoch: u64, reply: &PeerReply, now: Millis) {
        if epoch & PREDECESSOR_PROBE != 0 {
            self.on_predecessor_probe_reply(from, reply, now);
            return;
        }
        let Some(p) = self.parked.as_mut() else { return };
        if epoch != PROBE_EPOCH | p.probe_seq || p.probes_out == 0 {
            return;
        }
        p.probes_out -= 1;
        p.round_ok &= *reply != PeerReply::Unreachable;
        if p.probes_out > 0 {
            return;
        }
        if !p.round_ok {
            p.reachable_since = None;
            return;
        }
        let since = *p.reachable_since.get_or_insert(now);
        if !p.rejoining && now.saturating_sub(since) >= p.reach_for {
            tracing::info!(
                parked_ms = now.saturating_sub(p.since),
                "every member has answered every probe for long enough: joining again"
            );
            p.rejoining = true;
            self.evictions.last_unparked_at = Some(now);
            self.coord.rejoin();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{Cluster, Outgoing};

    const PERIOD: Millis = 1_000;

    fn chain(ids: &[NodeId]) -> Cluster {
        let cfg = Config {
            suspicion_ms: PERIOD,
            ..Config::default()
        };
        Cluster::with_nodes(cfg, ids)
    }

    /// Deliver everything queued except on the cut links, whose requests fail as the runtime
    /// fails them after its deadline (here at once).
    fn deliver_except(c: &mut Cluster, cuts: &[(NodeId, NodeId)]) {
        for _ in 0..1_000 {
            for &(from, to) in cuts {
                fail_queued(c, from, to);
            }
            let mut progressed = false;
            for id in c.ids() {
                let cut = |m: &Outgoing| cuts.contains(&(id, m.to.id));
                if let Some(i) = c.pending_from(id).iter().position(|m| !cut(m)) {
                    let msg = c.take(id, i).expect("a queued message");
                    c.deliver(id, msg);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the replicas keep talking");
    }

    /// Advance in steps of 50 ms for `total` ms, ticking, with the links in `cuts` cut.
    fn run_cuts(c: &mut Cluster, cuts: &[(NodeId, NodeId)], total: Millis) {
        let mut t = 0;
        while t < total {
            c.advance(50);
            c.tick_all();
            deliver_except(c, cuts);
            t += 50;
        }
    }

    /// As `run_cuts`, with the one link `from -> to` cut.
    fn run_cut(c: &mut Cluster, from: NodeId, to: NodeId, total: Millis) {
        run_cuts(c, &[(from, to)], total);
    }

    fn suspects(c: &Cluster, id: NodeId) -> Vec<(NodeId, Option<u64>)> {
        c.get(id).coordinator().suspects.clone()
    }

    /// The link `from -> to` drops everything: queued messages to `to` get `Unreachable`.
    fn fail_queued(c: &mut Cluster, from: NodeId, to: NodeId) {
        while let Some(i) = c.pending_from(from).iter().position(|m| m.to.id == to) {
            let msg: Outgoing = c.take(from, i).expect("a queued message");
            c.reply(from, &msg, PeerReply::Unreachable);
        }
    }

    #[test]
    fn a_silent_successor_is_reported_after_the_suspicion_timeout_and_not_before() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        // 1 -> 2 is cut: the update stays unacknowledged.
        run_cut(&mut c, 1, 2, PERIOD - 100);
        assert!(suspects(&c, 1).is_empty(), "reported before the timeout");
        run_cut(&mut c, 1, 2, 200);
        assert_eq!(suspects(&c, 1), vec![(2, None)]);
        // One request per suspicion period, not one per tick.
        run_cut(&mut c, 1, 2, PERIOD / 2);
        assert_eq!(suspects(&c, 1).len(), 1);
        assert!(suspects(&c, 2).is_empty() && suspects(&c, 3).is_empty());
    }

    #[test]
    fn an_idle_link_or_an_answering_successor_is_never_suspected() {
        let mut c = chain(&[1, 2, 3]);
        for _ in 0..10 {
            let _ = c.inc("k", 1);
            c.advance(PERIOD / 2);
            c.tick_all();
            c.settle();
        }
        // Nothing owed: silence is not suspicious.
        c.advance(PERIOD * 5);
        c.tick_all();
        c.settle();
        assert!(c.ids().iter().all(|&id| suspects(&c, id).is_empty()));
    }

    #[test]
    fn no_report_without_a_valid_lease() {
        let mut c = Cluster::with_nodes(
            Config {
                suspicion_ms: PERIOD,
                lease_ms: PERIOD / 2,
                ..Config::default()
            },
            &[1, 2, 3],
        );
        let _ = c.inc("k", 1);
        c.lease_paused.insert(1);
        run_cut(&mut c, 1, 2, PERIOD * 3);
        assert!(suspects(&c, 1).is_empty());
        c.lease_paused.clear();
        run_cut(&mut c, 1, 2, 100);
        assert_eq!(suspects(&c, 1), vec![(2, None)]);
    }

    #[test]
    fn a_middle_waits_longer_than_its_head_so_the_upstream_report_comes_first() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        // 2 -> 3 cut: the middle suspects the tail, a tenth of a period later than a head would.
        run_cut(&mut c, 2, 3, PERIOD + 50);
        assert!(suspects(&c, 2).is_empty());
        run_cut(&mut c, 2, 3, PERIOD / 10);
        assert_eq!(suspects(&c, 2), vec![(3, None)]);
    }

    #[test]
    fn a_recent_eviction_holds_every_report_back_for_a_period() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        run_cut(&mut c, 1, 2, PERIOD / 2);
        evict(&mut c, 9, 8, 4);
        run_cut(&mut c, 1, 2, PERIOD / 2 + 200);
        // Silent long enough, but the last eviction was seen less than a period ago.
        assert!(suspects(&c, 1).is_empty());
        run_cut(&mut c, 1, 2, PERIOD / 2);
        assert_eq!(suspects(&c, 1), vec![(2, Some(4))]);
    }

    /// The first eviction a head cut off from every peer makes: it suspects its successor 2.
    fn isolated_head_evicts_its_successor(variant: Variant, cuts: &[(NodeId, NodeId)]) -> Cluster {
        let mut c = Cluster::with_nodes(
            Config {
                suspicion_ms: PERIOD,
                variant,
                ..Config::default()
            },
            &[1, 2, 3],
        );
        let _ = c.inc("k", 1);
        run_cuts(&mut c, cuts, PERIOD + 100);
        assert_eq!(suspects(&c, 1), vec![(2, None)]);
        evict(&mut c, 1, 2, 1);
        c.set_view(&[1, 3]);
        c
    }

    #[test]
    fn a_head_cut_off_from_every_peer_is_reported_by_its_next_successor_before_it_reports_again() {
        // In the tail variant the tail has no call of its own to the head to notice it by;
        // in the head variant its acknowledgements to the head fail too.
        for variant in [Variant::Tail, Variant::Head] {
            let cuts = [(1, 2), (2, 1), (1, 3), (3, 1)];
            let mut c = isolated_head_evicts_its_successor(variant, &cuts);
            // The tail hears nothing from the reporter for a period (and its position's tenth).
            run_cuts(&mut c, &cuts, PERIOD);
            assert!(suspects(&c, 3).is_empty(), "{variant:?}: reported before the timeout");
            run_cuts(&mut c, &cuts, PERIOD / 10 + 100);
            assert_eq!(suspects(&c, 3), vec![(1, Some(1))], "{variant:?}");
            // The head, which hears nothing from the tail either, waits a period longer after
            // its report, and never names itself.
            run_cuts(&mut c, &cuts, PERIOD / 2);
            assert_eq!(suspects(&c, 1), vec![(2, None)], "{variant:?}");
        }
    }

    #[test]
    fn a_reporter_that_answers_its_next_successor_is_left_alone() {
        // Only the link between head and middle is broken: the middle goes, and the tail,
        // watching the head that reported it, gets answers.
        let cuts = [(1, 2), (2, 1)];
        let mut c = isolated_head_evicts_its_successor(Variant::Tail, &cuts);
        run_cuts(&mut c, &cuts, PERIOD * 4);
        assert!(suspects(&c, 3).is_empty());
        assert_eq!(suspects(&c, 1), vec![(2, None)]);
        let probes_of_head = c
            .delivered
            .iter()
            .filter(|(f, m)| *f == 3 && m.to.id == 1 && is_probe_epoch(m.epoch))
            .count();
        // A probe every quarter period while the record is recent, then none.
        assert!((8..=13).contains(&probes_of_head), "{probes_of_head} probes");
    }

    #[test]
    fn the_reporter_is_probed_every_quarter_period_until_its_record_is_three_periods_old() {
        let cuts = [(1, 2), (2, 1)];
        let mut c = isolated_head_evicts_its_successor(Variant::Tail, &cuts);
        // Ticks a quarter period apart from when the tail saw the record: a probe at each one
        // from 250 ms to 2750 ms, and none from three periods on, when the watch is over.
        // Probing more often would load the reporter; less often, or for less long, would
        // leave less time to see it silent.
        for _ in 0..(5 * 4) {
            c.advance(PERIOD / 4);
            c.tick_all();
            deliver_except(&mut c, &cuts);
        }
        let probes_of_head = c
            .delivered
            .iter()
            .filter(|(f, m)| *f == 3 && m.to.id == 1 && is_probe_epoch(m.epoch))
            .count();
        assert_eq!(probes_of_head, 11);
        assert!(suspects(&c, 3).is_empty());
    }

    #[test]
    fn a_probe_of_the_reporter_is_waited_for_a_period_before_the_next_one() {
        let cuts = [(1, 2), (2, 1)];
        let mut c = isolated_head_evicts_its_successor(Variant::Tail, &cuts);
        let probes_out = |c: &Cluster| c.pending_from(3).iter().filter(|m| m.to.id == 1 && is_probe_epoch(m.epoch)).count();
        // Nothing is answered: the link to the reporter is slow, not cut. Probing again
        // while a probe is out would pile requests on it...
        run_silent(&mut c, PERIOD);
        assert_eq!(probes_out(&c), 1, "probed again while a probe was out");
        // ...and one out for a period is given up (its answer is not coming): the next goes.
        run_silent(&mut c, 50);
        assert_eq!(probes_out(&c), 2);
    }

    /// 1 -> 2 -> 3 -> 4, and 1 reported 2 (crashed, say): 3 now watches 1.
    fn third_replica_watches_the_head() -> Cluster {
        let mut c = chain(&[1, 2, 3, 4]);
        evict(&mut c, 1, 2, 1);
        c.set_view(&[1, 3, 4]);
        c
    }

    #[test]
    fn a_watcher_cut_off_from_every_peer_leaves_its_accuser_alone() {
        let cuts = [(3, 1), (1, 3), (3, 4), (4, 3)];
        let mut c = third_replica_watches_the_head();
        run_cuts(&mut c, &cuts, PERIOD * 4);
        assert!(suspects(&c, 3).is_empty(), "{:?}", suspects(&c, 3));
        // The head, whose new successor is the one cut off, reports it instead.
        assert!(suspects(&c, 1).iter().all(|&(s, _)| s == 3), "{:?}", suspects(&c, 1));
    }

    #[test]
    fn a_head_cut_off_from_every_peer_is_reported_by_a_watcher_whose_successor_answers() {
        let cuts = [(1, 3), (3, 1), (1, 4), (4, 1)];
        let mut c = third_replica_watches_the_head();
        run_cuts(&mut c, &cuts, PERIOD * 2);
        assert_eq!(suspects(&c, 3), vec![(1, Some(1))]);
    }

    /// A chain of `ids` whose head, 1, is of another implementation, after one write went down
    /// it: each replica below 1 that got it knows 1 for what it is.
    fn classic_head_of(ids: &[NodeId]) -> Cluster {
        let mut c = chain(ids);
        c.classic.insert(1);
        let _ = c.inc("k", 1);
        c.deliver_all();
        c
    }

    /// 1 -> 2 -> 3, 1 of another implementation, after one write.
    fn classic_head() -> Cluster {
        classic_head_of(&[1, 2, 3])
    }

    /// 1 of another implementation, alone with the state after one write; 2 has just joined
    /// behind it and heard nothing yet.
    fn newcomer_behind_classic_head() -> Cluster {
        let mut c = classic_head_of(&[1]);
        c.add(2);
        c.get_mut(2).on_joined(2);
        let now = c.now();
        c.get_mut(2).on_session_alive(now);
        c.set_view(&[1, 2]);
        c
    }

    /// `proposeStateUpdate` of xid 2 from 1, naming no session, as another implementation
    /// sends it.
    fn unnamed_propose_from_1(c: &mut Cluster, to: NodeId) -> PeerReply {
        let update = crate::core::Update {
            xid: 2,
            key: "k".into(),
            value: 2,
            origin: None,
        };
        c.get_mut(to).on_addressed_request(None, PeerRequest::Propose { src: 1, update })
    }

    fn probes_of(c: &Cluster, watcher: NodeId, watched: NodeId) -> usize {
        c.delivered.iter().filter(|(f, m)| is_probe_of(watcher, watched, *f, m)).count()
    }

    #[test]
    fn a_classic_predecessor_that_stops_answering_is_reported_by_its_successor_and_removed() {
        // The link is idle: our replicas upstream would report nothing, and this one reports
        // nothing anyway. The watch begins at the first tick (50 ms); 2 waits a period and its
        // position's tenth.
        let cuts = [(1, 2), (2, 1)];
        let mut c = classic_head();
        run_cuts(&mut c, &cuts, 1_100);
        assert!(suspects(&c, 2).is_empty(), "reported before the timeout");
        run_cuts(&mut c, &cuts, 100);
        assert_eq!(suspects(&c, 2), vec![(1, None)]);
        assert!(suspects(&c, 1).is_empty() && suspects(&c, 3).is_empty());
        // It reads no record, so its lease may run: 2 removes its znode a lease and a half
        // after the record.
        let lease = c.cfg.lease_ms;
        let record = EvictionRecord {
            version: 1,
            reporter: 2,
            suspect: 1,
        };
        c.get_mut(2).on_eviction_record(record);
        c.get_mut(3).on_eviction_record(record);
        run_cuts(&mut c, &cuts, lease + lease / 2);
        assert_eq!(c.get(2).coordinator().removals, vec![1]);
    }

    #[test]
    fn a_classic_predecessor_that_answers_is_probed_every_quarter_period_and_never_reported() {
        let mut c = classic_head();
        run_cuts(&mut c, &[], PERIOD * 8);
        assert!(suspects(&c, 2).is_empty());
        // Unlike the watch of an accuser, this one does not end.
        assert_eq!(probes_of(&c, 2, 1), 32);
    }

    #[test]
    fn a_successor_cut_off_from_every_peer_leaves_its_classic_predecessor_alone() {
        let cuts = [(2, 1), (1, 2), (2, 3), (3, 2)];
        let mut c = classic_head();
        run_cuts(&mut c, &cuts, PERIOD * 4);
        assert!(suspects(&c, 2).is_empty(), "{:?}", suspects(&c, 2));
    }

    #[test]
    fn a_classic_predecessor_of_the_tail_is_reported_without_a_witness() {
        let mut c = classic_head_of(&[1, 2]);
        run_cuts(&mut c, &[(1, 2), (2, 1)], PERIOD * 2);
        assert_eq!(suspects(&c, 2), vec![(1, None)]);
    }

    #[test]
    fn a_state_transfer_without_the_session_named_shows_a_classic_predecessor_too() {
        // 2 joins an idle chain: all it ever gets from 1 is the transfer.
        let mut c = newcomer_behind_classic_head();
        c.deliver_all();
        assert!(c
            .delivered
            .iter()
            .any(|(f, m)| *f == 1 && matches!(m.request, PeerRequest::Transfer(_))));
        assert!(!c
            .delivered
            .iter()
            .any(|(f, m)| *f == 1 && matches!(m.request, PeerRequest::Propose { .. })));
        run_cuts(&mut c, &[(1, 2), (2, 1)], PERIOD * 2);
        assert_eq!(suspects(&c, 2), vec![(1, None)]);
    }

    #[test]
    fn a_successor_without_the_state_leaves_its_classic_predecessor_alone() {
        // 1 holds the only copy. 2 is new and has not got the state yet: with 1 gone, nobody
        // of ours could carry the chain (1, of another implementation, keeps no copy we could
        // adopt), so 2 may not remove it, however silent it is.
        let mut c = newcomer_behind_classic_head();
        // A classic update before the transfer: refused, but it shows 2 what 1 speaks.
        assert_eq!(unnamed_propose_from_1(&mut c, 2), PeerReply::Refused);
        run_cuts(&mut c, &[(1, 2), (2, 1)], PERIOD * 4);
        assert!(suspects(&c, 2).is_empty(), "{:?}", suspects(&c, 2));
    }

    #[test]
    fn a_predecessor_that_names_the_session_it_calls_is_ours_and_not_watched() {
        let cuts = [(1, 2), (2, 1)];
        // Ours from the start: its own suspicion covers the link, and an idle link is left be.
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        c.deliver_all();
        run_cuts(&mut c, &cuts, PERIOD * 4);
        assert!(suspects(&c, 2).is_empty());
        assert_eq!(probes_of(&c, 2, 1), 0);
        // Taken for classic once, then heard naming the session (a replica of ours that took
        // that id's place cannot, but the rule is what the requests show): the watch ends.
        let mut c = classic_head();
        c.classic.clear();
        let _ = c.inc("k", 1);
        run_cuts(&mut c, &[], 50);
        let probes_before = probes_of(&c, 2, 1);
        run_cuts(&mut c, &cuts, PERIOD * 4);
        assert_eq!(probes_of(&c, 2, 1), probes_before);
        assert!(suspects(&c, 2).is_empty());
    }

    #[test]
    fn only_the_predecessor_teaches_its_dialect() {
        // 3's predecessor is 2: a classic request claiming to come from 1 is refused and
        // teaches 3 nothing.
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        c.deliver_all();
        assert_eq!(unnamed_propose_from_1(&mut c, 3), PeerReply::Refused);
        // 2 leaves, and 1's transfer to 3 (which would name the session) cannot get through;
        // what 3 sends 1 does.
        c.set_view(&[1, 3]);
        run_cuts(&mut c, &[(1, 3)], PERIOD);
        assert_eq!(probes_of(&c, 3, 1), 0);
    }

    #[test]
    fn the_tail_sends_no_xid_processed_to_a_head_on_its_way_out_for_three_leases() {
        let mut c = chain(&[1, 2, 3]);
        let lease = c.cfg.lease_ms;
        let _ = c.inc("k", 1);
        c.deliver_all();
        // 2 reported 1, which reads no record (another implementation): only 2 and 3 see it.
        let record = EvictionRecord {
            version: 1,
            reporter: 2,
            suspect: 1,
        };
        c.get_mut(2).on_eviction_record(record);
        c.get_mut(3).on_eviction_record(record);
        let _ = c.inc("k", 1);
        let notifies = |c: &Cluster| {
            c.delivered
                .iter()
                .filter(|(f, m)| *f == 3 && matches!(m.request, PeerRequest::XidProcessed(2)))
                .count()
        };
        run_cuts(&mut c, &[], lease * 3 - 50);
        assert_eq!(notifies(&c), 0, "acknowledged to a head on its way out");
        // Never removed (its reporter lost its session, say): it is the head, and served again
        // from three leases on.
        run_cuts(&mut c, &[], 50);
        assert_eq!(notifies(&c), 1);
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Fate {
        Deliver,
        /// Fails as the runtime fails a request on a cut link, after its deadline (here at once).
        Fail,
        /// Stays queued: a slow link.
        Hold,
    }

    /// One step of 50 ms: tick, then settle every queued message by its `fate`.
    fn step_with(c: &mut Cluster, fate: impl Fn(NodeId, &Outgoing) -> Fate) {
        c.advance(50);
        c.tick_all();
        for _ in 0..1_000 {
            let mut progressed = false;
            for id in c.ids() {
                if let Some(i) = c.pending_from(id).iter().position(|m| fate(id, m) != Fate::Hold) {
                    let msg = c.take(id, i).expect("a queued message");
                    match fate(id, &msg) {
                        Fate::Fail => c.reply(id, &msg, PeerReply::Unreachable),
                        _ => c.deliver(id, msg),
                    }
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the replicas keep talking");
    }

    fn is_probe_of(from: NodeId, to: NodeId, sender: NodeId, m: &Outgoing) -> bool {
        sender == from && m.to.id == to && is_probe_epoch(m.epoch)
    }

    /// The link between 3 and the head 1 is cut both ways.
    fn head_cut(from: NodeId, m: &Outgoing) -> bool {
        (from == 3 && m.to.id == 1) || (from == 1 && m.to.id == 3)
    }

    /// `head_cut`, and 3's probe of its successor 4 held (a slow answer).
    fn hold_successor_probe_cut_head(from: NodeId, m: &Outgoing) -> Fate {
        if is_probe_of(3, 4, from, m) {
            Fate::Hold
        } else if head_cut(from, m) {
            Fate::Fail
        } else {
            Fate::Deliver
        }
    }

    #[test]
    fn a_probe_of_the_watchers_successor_is_waited_for_a_period_before_the_next_one() {
        let mut c = third_replica_watches_the_head();
        // The head answers every probe, so they go every quarter period; the successor's are
        // never answered (its link is slow, not cut).
        let fate = |from, m: &Outgoing| if is_probe_of(3, 4, from, m) { Fate::Hold } else { Fate::Deliver };
        let probes_of_successor = |c: &Cluster| c.pending_from(3).iter().filter(|m| is_probe_of(3, 4, 3, m)).count();
        for _ in 0..(PERIOD / 50) {
            step_with(&mut c, fate);
        }
        // Probing again while a probe is out would pile requests on the successor...
        assert_eq!(probes_of_successor(&c), 1, "probed again while a probe was out");
        // ...and one out for a period is given up: the next goes.
        step_with(&mut c, fate);
        assert_eq!(probes_of_successor(&c), 2);
    }

    #[test]
    fn the_successors_answer_vouches_for_the_watcher_for_one_suspicion_timeout() {
        let mut c = third_replica_watches_the_head();
        // t = 50: the watch begins; the successor's probe is held until t = 150, its only answer.
        step_with(&mut c, hold_successor_probe_cut_head);
        let answered = take_where(&mut c, 3, |m| is_probe_of(3, 4, 3, m));
        step_with(&mut c, |from, m| if head_cut(from, m) { Fate::Fail } else { Fate::Deliver });
        step_with(&mut c, |from, m| if head_cut(from, m) { Fate::Fail } else { Fate::Deliver });
        c.reply(3, &answered, PeerReply::LatestXid(Some(0)));
        // From then on the successor's probes fail too. At t = 1150 the head has been silent
        // for the timeout and the stagger, and the answer is exactly a timeout old: too old.
        for _ in 0..(PERIOD * 2 / 50) {
            step_with(&mut c, |from, m| {
                if head_cut(from, m) || is_probe_of(3, 4, from, m) {
                    Fate::Fail
                } else {
                    Fate::Deliver
                }
            });
        }
        assert!(suspects(&c, 3).is_empty(), "{:?}", suspects(&c, 3));
    }

    #[test]
    fn an_answer_from_a_former_successor_does_not_vouch_for_the_watcher() {
        // 1 -> 2 -> 3 -> 4 -> 5; 1 reported 2, so 3 watches 1 and probes its successor 4.
        let mut c = chain(&[1, 2, 3, 4, 5]);
        evict(&mut c, 1, 2, 1);
        c.set_view(&[1, 3, 4, 5]);
        step_with(&mut c, hold_successor_probe_cut_head);
        let late = take_where(&mut c, 3, |m| is_probe_of(3, 4, 3, m));
        // 4 leaves: 3's successor is 5, which takes the chain's traffic but no probe.
        c.set_view(&[1, 3, 5]);
        let fate = |from, m: &Outgoing| {
            if head_cut(from, m) || is_probe_of(3, 5, from, m) {
                Fate::Fail
            } else {
                Fate::Deliver
            }
        };
        for _ in 0..(PERIOD / 50) {
            step_with(&mut c, fate);
        }
        // 4's answer to the old probe arrives late, shortly before the head has been silent
        // for the timeout: it says nothing about whether 3 reaches its successor now.
        c.reply(3, &late, PeerReply::LatestXid(Some(0)));
        for _ in 0..(PERIOD / 50) {
            step_with(&mut c, fate);
        }
        assert!(suspects(&c, 3).is_empty(), "{:?}", suspects(&c, 3));
    }

    #[test]
    fn an_evicted_replica_leaves_and_rejoins_only_once_the_tail_answers_for_a_period() {
        let mut c = chain(&[1, 2, 3]);
        let rejoins = c.get(2).coordinator().rejoins;
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        let parked = c.get(2);
        assert!(parked.is_parked());
        assert_eq!(parked.role(), Role::Outside);
        assert_eq!(parked.coordinator().leaves, 1);
        // The tail does not answer its probes: it stays out.
        run_cut(&mut c, 2, 3, PERIOD * 3);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins);
        // Answered for a whole period: it joins again, once.
        run_cut(&mut c, 0, 0, PERIOD - 100);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins);
        run_cut(&mut c, 0, 0, PERIOD);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins + 1);
        // Losing the session (its own rejoin) clears the parking and registers anew.
        let joins = c.get(2).coordinator().joins;
        c.get_mut(2).on_session_lost();
        assert!(!c.get(2).is_parked());
        assert_eq!(c.get(2).coordinator().joins, joins + 1);
    }

    #[test]
    fn a_record_seen_again_changes_nothing() {
        let mut c = chain(&[1, 2]);
        let record = EvictionRecord {
            version: 3,
            reporter: 1,
            suspect: 7,
        };
        c.get_mut(2).on_eviction_record(record);
        let seen = c.get(2).evictions.seen_at;
        c.advance(500);
        c.get_mut(2).on_eviction_record(record);
        assert_eq!(c.get(2).evictions.seen_at, seen);
        assert!(!c.get(2).is_parked());
    }

    #[test]
    fn the_reporter_removes_a_suspect_that_stays_only_once_its_lease_is_over() {
        let mut c = chain(&[1, 2, 3]);
        let lease = c.cfg.lease_ms;
        let record = EvictionRecord {
            version: 0,
            reporter: 1,
            suspect: 2,
        };
        // Only the reporter and a bystander see the record; the suspect does not react.
        c.get_mut(1).on_eviction_record(record);
        c.get_mut(3).on_eviction_record(record);
        c.advance(lease + lease / 2 - 10);
        c.tick_all();
        assert!(c.get(1).coordinator().removals.is_empty(), "removed while its lease may run");
        c.advance(10);
        c.tick_all();
        assert_eq!(c.get(1).coordinator().removals, vec![2]);
        assert!(c.get(3).coordinator().removals.is_empty());
        c.advance(lease * 3);
        c.tick_all();
        assert_eq!(c.get(1).coordinator().removals, vec![2], "removed twice");
    }

    #[test]
    fn a_suspect_that_left_by_itself_is_not_removed_again() {
        let mut c = chain(&[1, 2, 3]);
        let lease = c.cfg.lease_ms;
        evict(&mut c, 1, 2, 0);
        assert_eq!(c.get(2).coordinator().leaves, 1);
        c.set_view(&[1, 3]);
        c.advance(lease * 2);
        c.tick_all();
        assert!(c.get(1).coordinator().removals.is_empty());
    }

    fn evict(c: &mut Cluster, reporter: NodeId, suspect: NodeId, version: u64) {
        let record = EvictionRecord {
            version,
            reporter,
            suspect,
        };
        for id in c.ids() {
            c.get_mut(id).on_eviction_record(record);
        }
    }

    /// Ticks until the parked replica `id` asks to rejoin; how long that took.
    fn time_to_rejoin(c: &mut Cluster, id: NodeId) -> Millis {
        let start = c.now();
        let before = c.get(id).coordinator().rejoins;
        while c.get(id).coordinator().rejoins == before {
            assert!(c.now() - start < PERIOD * 200, "never rejoined");
            run_cut(c, 0, 0, 50);
        }
        c.now() - start
    }

    #[test]
    fn a_replica_evicted_again_soon_after_it_came_back_waits_twice_as_long() {
        let mut c = chain(&[1, 2, 3]);
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        let first = time_to_rejoin(&mut c, 2);
        assert!((PERIOD..PERIOD + 300).contains(&first), "{first}");
        // It comes back as 4 and is evicted again at once: twice as long.
        c.rejoin(2, 4);
        c.set_view(&[1, 3, 4]);
        c.advance(PERIOD);
        evict(&mut c, 3, 4, 1);
        c.set_view(&[1, 3]);
        let second = time_to_rejoin(&mut c, 4);
        assert!((2 * PERIOD..2 * PERIOD + 300).contains(&second), "{second}");
        // Back as 5, in the chain for longer than the window: the next eviction starts over.
        c.rejoin(4, 5);
        c.set_view(&[1, 3, 5]);
        c.advance(PERIOD * REOFFEND_WINDOW);
        evict(&mut c, 3, 5, 2);
        c.set_view(&[1, 3]);
        let third = time_to_rejoin(&mut c, 5);
        assert!((PERIOD..PERIOD + 300).contains(&third), "{third}");
    }

    #[test]
    fn a_tail_whose_acknowledgements_do_not_reach_the_head_reports_the_head() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        // Only the head-to-tail link is cut: the chain's links all work.
        let mut t = 0;
        while t < PERIOD * 2 {
            c.advance(50);
            c.tick_all();
            deliver_except(&mut c, &[(3, 1)]);
            t += 50;
        }
        assert!(suspects(&c, 1).is_empty() && suspects(&c, 2).is_empty());
        assert_eq!(suspects(&c, 3), vec![(1, None)]);
    }

    #[test]
    fn a_tail_variant_head_whose_polls_do_not_reach_the_tail_reports_the_tail() {
        let mut c = Cluster::with_nodes(
            Config {
                variant: Variant::Tail,
                suspicion_ms: PERIOD,
                ..Config::default()
            },
            &[1, 2, 3],
        );
        let origin = ClientOrigin {
            host: "client".into(),
            port: 1,
            cxid: 1,
        };
        let _ = c.write_at(1, WriteOp::Inc { key: "k".into(), delta: 1 }, Some(origin));
        run_cut(&mut c, 1, 3, PERIOD * 2);
        assert!(suspects(&c, 2).is_empty() && suspects(&c, 3).is_empty());
        assert_eq!(suspects(&c, 1), vec![(3, None)]);
    }

    #[test]
    fn a_parked_replica_that_reaches_the_tail_but_not_the_head_stays_out() {
        let mut c = chain(&[1, 2, 3]);
        let rejoins = c.get(2).coordinator().rejoins;
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        run_cut(&mut c, 2, 1, PERIOD * 5);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins);
        assert_eq!(time_to_rejoin(&mut c, 2) / 100, PERIOD / 100);
    }

    #[test]
    fn failures_seen_in_an_earlier_role_do_not_count() {
        let mut c = chain(&[1, 2]);
        let _ = c.inc("k", 1);
        // As the tail, 2's acknowledgements to the head fail for a while...
        run_cut(&mut c, 2, 1, PERIOD / 2);
        // ...then a replica joins below it, and 2 is a middle; much later it is the tail again.
        c.add(3);
        c.set_view(&[1, 2, 3]);
        run_cut(&mut c, 0, 0, PERIOD * 3);
        c.crash(3);
        c.set_view(&[1, 2]);
        let _ = c.inc("k", 1);
        run_cut(&mut c, 0, 0, 100);
        assert!(suspects(&c, 2).is_empty(), "{:?}", suspects(&c, 2));
    }

    /// Time passes and every replica ticks, and nothing is delivered: a successor that hangs
    /// rather than one whose link fails, so the link stays `Streaming` and owes all the while.
    fn run_silent(c: &mut Cluster, total: Millis) {
        let mut t = 0;
        while t < total {
            c.advance(50);
            c.tick_all();
            t += 50;
        }
    }

    /// Takes `from`'s first queued message that `pick` selects out of its outbox.
    fn take_where(c: &mut Cluster, from: NodeId, pick: impl Fn(&Outgoing) -> bool) -> Outgoing {
        let i = c.pending_from(from).iter().position(pick).expect("a queued message of that kind");
        c.take(from, i).expect("a queued message")
    }

    fn probes_sent(c: &Cluster, from: NodeId) -> usize {
        c.delivered.iter().filter(|(f, m)| *f == from && is_probe_epoch(m.epoch)).count()
    }

    #[test]
    fn silence_from_a_new_successor_counts_from_when_it_became_the_successor() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        c.settle();
        // A long idle spell: the last answer on 1's link is old.
        c.advance(PERIOD * 5);
        c.tick_all();
        c.settle();
        c.crash(2);
        c.set_view(&[1, 3]);
        // The new successor cannot be reached. Were its silence counted from the old
        // successor's last answer, it would be evicted on the spot for a link it never had
        // time to use: a replica that joins behind a head whose chain was idle would be thrown
        // out before its first transfer could time out.
        run_cut(&mut c, 1, 3, PERIOD - 100);
        assert!(suspects(&c, 1).is_empty(), "{:?}", suspects(&c, 1));
        run_cut(&mut c, 1, 3, 200);
        assert_eq!(suspects(&c, 1), vec![(3, None)]);
    }

    #[test]
    fn a_replica_without_state_accuses_no_one() {
        let mut c = chain(&[1, 2]);
        let _ = c.inc("k", 1);
        // The tail applies the update and acknowledges it to the head; that call is still out
        // when the tail loses its session and joins again as 3, with no state.
        while c.deliver_next(1) {}
        let ack = take_where(&mut c, 2, |m| matches!(m.request, PeerRequest::XidProcessed(_)));
        c.rejoin(2, 3);
        c.set_view(&[1, 3]);
        // The old call fails only now. A replica that holds nothing has forwarded nothing and
        // is owed nothing: what it heard is about a link of its past life, and an eviction on
        // that ground would cost the chain a healthy head (and hold every other report back
        // for a period).
        c.reply(3, &ack, PeerReply::Unreachable);
        for _ in 0..4 {
            c.advance(PERIOD / 2);
            c.tick_all();
        }
        assert!(!c.get(3).holds_state());
        assert!(suspects(&c, 3).is_empty(), "{:?}", suspects(&c, 3));
    }

    #[test]
    fn an_unanswered_report_is_made_again_exactly_one_period_later() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        run_silent(&mut c, PERIOD);
        assert_eq!(suspects(&c, 1).len(), 1);
        // No record came of it (the ZooKeeper write failed, or lost a race to a record not
        // seen yet): the report is made again one suspicion period later, as the rule says, no
        // sooner (one request per period) and no later (each period of delay is a period more
        // without writes).
        run_silent(&mut c, PERIOD - 50);
        assert_eq!(suspects(&c, 1).len(), 1);
        run_silent(&mut c, 50);
        assert_eq!(suspects(&c, 1), vec![(2, None), (2, None)]);
    }

    #[test]
    fn a_report_may_follow_the_last_eviction_exactly_one_period_after_it_was_seen() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        run_silent(&mut c, PERIOD / 2);
        evict(&mut c, 9, 8, 4);
        // Silent for long enough from here on; only the last eviction holds the report back,
        // and for exactly one period: the bound of one eviction per period is also what the
        // time to route around a second broken link is made of.
        run_silent(&mut c, PERIOD - 50);
        assert!(suspects(&c, 1).is_empty());
        run_silent(&mut c, 50);
        assert_eq!(suspects(&c, 1), vec![(2, Some(4))]);
    }

    #[test]
    fn a_middle_does_not_report_the_head_over_an_acknowledgement_it_sent_as_the_tail() {
        let mut c = chain(&[1, 2]);
        let _ = c.inc("k", 1);
        while c.deliver_next(1) {}
        let ack = take_where(&mut c, 2, |m| matches!(m.request, PeerRequest::XidProcessed(_)));
        // 3 joins below 2, which becomes a middle; then its last call as the tail fails.
        c.add(3);
        c.set_view(&[1, 2, 3]);
        c.reply(2, &ack, PeerReply::Unreachable);
        // A middle sends the head nothing, so nothing will ever clear that failure: counting
        // it would have a middle whose own links all work evict a healthy head.
        run_cut(&mut c, 0, 0, PERIOD * 3);
        assert!(c.ids().iter().all(|&id| suspects(&c, id).is_empty()), "{:?}", suspects(&c, 2));
    }

    #[test]
    fn a_middle_whose_polls_do_not_reach_the_tail_reports_no_one() {
        let mut c = Cluster::with_nodes(
            Config {
                variant: Variant::Tail,
                suspicion_ms: PERIOD,
                ..Config::default()
            },
            &[1, 2, 3, 4],
        );
        let _ = c.inc("k", 1);
        // Middles poll the tail too, to trim their sent lists, over links that are not the
        // chain's. Only the head's polls matter (its full sent list makes it refuse writes); a
        // middle's only let its list grow, which it bounds by itself. Evicting the tail for
        // them would remove a replica every link of the chain reaches.
        run_cut(&mut c, 2, 4, PERIOD * 3);
        assert!(c.ids().iter().all(|&id| suspects(&c, id).is_empty()), "{:?}", suspects(&c, 2));
    }

    #[test]
    fn a_tail_does_not_report_a_head_that_has_left() {
        let mut c = chain(&[1, 2, 3]);
        let _ = c.inc("k", 1);
        c.settle();
        let _ = c.inc("k", 1);
        // The tail's acknowledgements stop reaching the head, not quite long enough to report
        // it; then the head leaves and 2 takes over.
        run_cut(&mut c, 3, 1, PERIOD);
        assert!(suspects(&c, 3).is_empty());
        c.crash(1);
        c.set_view(&[2, 3]);
        // Before the new head has answered, the old failures are about a replica that is no
        // longer the head: reporting it would spend the one eviction a period allows on a
        // replica already gone, and hold back the report that a real cut would need.
        run_silent(&mut c, PERIOD);
        assert!(suspects(&c, 3).is_empty(), "{:?}", suspects(&c, 3));
    }

    #[test]
    fn a_parked_replica_probes_every_member_once_per_quarter_period() {
        let mut c = chain(&[1, 2, 3]);
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        // Rounds at 50, 300, 550 and 800 ms, two members each. Probing faster would load every
        // member of the chain for each parked replica; slower would delay its return.
        run_cut(&mut c, 0, 0, PERIOD - 100);
        assert_eq!(probes_sent(&c, 2), 4 * 2);
    }

    #[test]
    fn a_parked_replica_waits_for_every_answer_before_probing_again() {
        let mut c = chain(&[1, 2, 3]);
        let rejoins = c.get(2).coordinator().rejoins;
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        run_silent(&mut c, 50);
        assert_eq!(c.pending_from(2).len(), 2);
        // The answers take longer than the probe interval. A new round would abandon them and
        // pile requests on the members: on links that slow, a parked replica would never
        // finish a round and never come back.
        run_silent(&mut c, PERIOD);
        assert_eq!(c.pending_from(2).len(), 2, "probed again before the answers came");
        deliver_except(&mut c, &[]);
        assert_eq!(time_to_rejoin(&mut c, 2) / 100, PERIOD / 100);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins + 1);
    }

    #[test]
    fn an_answer_from_an_earlier_round_does_not_count_for_this_one() {
        let mut c = chain(&[1, 2, 3]);
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        run_silent(&mut c, 50);
        let probe_of_tail = |c: &Cluster| c.pending_from(2).iter().position(|m| m.to.id == 3).expect("a probe of the tail");
        let first_to_tail = c.take(2, probe_of_tail(&c)).expect("a probe");
        c.deliver(2, first_to_tail.clone());
        c.deliver_next(2);
        // The network delivers the tail's answer a second time, after its round is complete...
        c.reply(2, &first_to_tail, PeerReply::LatestXid(Some(0)));
        // ...and once more in the next round, in which the head answers and the tail does not.
        run_silent(&mut c, PERIOD / 4);
        let _unanswered = c.take(2, probe_of_tail(&c)).expect("a probe");
        c.reply(2, &first_to_tail, PeerReply::LatestXid(Some(0)));
        c.deliver_next(2);
        // Counted, the old answer would complete the round: the next would start now, and the
        // replica would count the tail as reachable.
        run_silent(&mut c, PERIOD / 4);
        assert!(c.pending_from(2).is_empty(), "a new round began without the tail's answer");
    }

    #[test]
    fn a_round_counts_only_once_every_member_answered_it() {
        let mut c = chain(&[1, 2, 3]);
        let rejoins = c.get(2).coordinator().rejoins;
        evict(&mut c, 1, 2, 0);
        c.set_view(&[1, 3]);
        // Every probe answered for just under a period...
        run_cut(&mut c, 0, 0, PERIOD);
        assert_eq!(c.get(2).coordinator().rejoins, rejoins);
        // ...then, in the round that would complete the period, the head answers and the tail
        // does not (its answer comes last). Judged before the round is in, the replica would
        // join again next to a tail it cannot reach.
        for _ in 0..(PERIOD * 2 / 50) {
            c.advance(50);
            c.tick_all();
            while let Some(i) = c.pending_from(2).iter().position(|m| m.to.id != 3) {
                let probe = c.take(2, i).expect("a queued probe");
                c.deliver(2, probe);
            }
            fail_queued(&mut c, 2, 3);
        }
        assert_eq!(c.get(2).coordinator().rejoins, rejoins);
    }
}
