//! The checks that judge a run, one invariant per file. Each is a function over a read-only view
//! of the world (`WorldView`) and, where it needs one, its own bit of observer state, and returns
//! the violations it found. `Checks` holds that state and the violations: the world owns one and
//! calls its hooks as events happen, but the checks never touch the world itself.

mod applied_grows;
mod backoff;
mod bounded_queues;
mod chain_prefix;
pub mod cost;
pub mod cut_off_outside;
mod disk_usage;
mod foreign_input;
mod gap_refusals;
mod held_clients;
pub mod linearizable;
pub mod no_lost_writes;
mod progress_pacing;
mod pulled_state;
pub mod settled;
mod transfer_causes;
mod valid_keys;
pub mod writes_during_fault;

pub use foreign_input::{Observed, Outcome};
pub use valid_keys::KeyVerdict;

use crate::core::{NodeId, PeerReply, RequestKind, Xid};
use crate::sim::events::ReplyTo;
use crate::sim::links::{Links, Sender};
use crate::sim::shape::Shape;
use crate::sim::view::WorldView;
pub use crate::sim::violation::Violation;
use gap_refusals::DroppedHeld;
use progress_pacing::Pacing;

/// The observers' own state, apart from the world they judge, and what they found.
#[derive(Default)]
pub struct Checks {
    dropped_held: DroppedHeld,
    pacing: Pacing,
    links: Links,
    /// Replicas that accepted a state transfer, in order (kept for the failover phase).
    accepted_transfers: Vec<usize>,
    violations: Vec<Violation>,
}

impl Checks {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn fail(&mut self, v: Violation) {
        self.violations.push(v);
    }

    // Runs several times per event, nearly always with nothing found: `extend` would go
    // through an iterator for nothing, which the debug profile's seed rate feels.
    fn found(&mut self, v: Option<Violation>) {
        if let Some(v) = v {
            self.violations.push(v);
        }
    }

    /// After every event. These three add to the list instead of returning one: an empty `Vec`
    /// made, moved and dropped three times per event cost 1% of the debug profile's seed rate.
    pub fn step(&mut self, w: &WorldView) {
        chain_prefix::check(w, &mut self.violations);
        bounded_queues::check(w, &mut self.violations);
        held_clients::check(w, &mut self.violations);
    }

    /// Replica `proc` took a step that changed its shape from `before` to `after`.
    pub fn replica_step(&mut self, w: &WorldView, proc: usize, before: &Shape, after: &Shape) {
        self.found(applied_grows::check(proc, before, after));
        self.dropped_held.after_step(proc, before, after);
        let incarnation = w.procs[proc].incarnation;
        self.links.after_step((proc, incarnation), before, after, w.now);
        if after.session != before.session {
            self.pacing.forget(proc);
        }
    }

    /// A process restarted: what was known of its previous incarnation no longer applies.
    pub fn restart(&mut self, proc: usize) {
        self.dropped_held.forget(proc);
        self.pacing.forget(proc);
        self.links.forget(proc);
    }

    /// A process was paused: a transfer due meanwhile may go out late.
    pub fn paused(&mut self, proc: usize) {
        self.links.paused(proc);
    }

    /// The link epoch (as `sim::links` models it) requests from `proc` (incarnation
    /// `incarnation`) are sent in now.
    pub fn link_epoch(&self, proc: usize, incarnation: u32) -> u64 {
        self.links.get((proc, incarnation)).epoch
    }

    /// Whether `sender` has a `pullState` on its way.
    pub fn pulling(&self, sender: Sender) -> bool {
        self.links.pulling(sender)
    }

    /// Replica `proc` (incarnation `incarnation`) sends session `to` a `kind` request (`retained`: a
    /// `pullState` asking for a retained copy).
    pub fn peer_send(&mut self, w: &WorldView, proc: usize, incarnation: u32, to: NodeId, kind: RequestKind, retained: bool) {
        let shape = &w.procs[proc].shape;
        let v = progress_pacing::on_send(&mut self.pacing, shape, w.now, (proc, incarnation), kind);
        self.found(v);
        if kind == RequestKind::PullState {
            self.links.pull_sent((proc, incarnation), to, retained);
        }
        if let RequestKind::Transfer(_) | RequestKind::Held = kind {
            if let Some(was) = self.links.transfer_sent((proc, incarnation), kind) {
                self.found(transfer_causes::check_send(proc, to, &was));
                self.found(backoff::check_send(w.now, w.cfg.tick, proc, to, &was));
            }
        }
    }

    /// The answer to a `kind` request is about to reach its sender.
    pub fn peer_reply(&mut self, w: &WorldView, to: ReplyTo, kind: RequestKind, reply: &PeerReply) {
        progress_pacing::on_reply(&mut self.pacing, w.now, (to.proc, to.incarnation), kind, reply);
        if kind == RequestKind::PullState {
            self.links.pull_answered((to.proc, to.incarnation), to.addressee);
        }
        let succ = w.procs[to.proc].shape.succ;
        self.links.on_reply(to, succ, kind, reply, w.now);
    }

    /// Replica `proc`, shaped `before`, accepted a transfer of the state at `state_xid` with
    /// `sent` the xids of its sent list.
    pub fn transfer_installed(&mut self, w: &WorldView, proc: usize, before: &Shape, state_xid: Xid, sent: &[Xid]) {
        self.links
            .installed((proc, w.procs[proc].incarnation), before, state_xid, sent, w.now);
    }

    /// Replica `proc` installed a transferred state (`transfer`) or handed its state to a puller.
    pub fn state_given(&mut self, proc: usize, transfer: bool) {
        self.dropped_held.state_given(proc);
        // Only the failover phase reads this, after clearing it; the bound keeps the fault
        // phase from growing it without limit.
        if transfer && self.accepted_transfers.len() < 1_000 {
            self.accepted_transfers.push(proc);
        }
    }

    /// Replica `proc`, shaped `before`, took an answer to its pull that carried a state.
    pub fn pulled_state_taken(&mut self, w: &WorldView, proc: usize, before: &Shape) {
        self.found(pulled_state::check(proc, before, &w.procs[proc].shape));
    }

    /// Durable runs: replica `proc`'s log just synced.
    pub fn disk_synced(&mut self, w: &WorldView, proc: usize) {
        self.found(disk_usage::check(w, proc));
    }

    /// A step of replica `proc` is over and what it sent is on its way.
    pub fn step_done(&mut self, w: &WorldView, proc: usize) {
        let succ = w.procs[proc].shape.succ;
        let owed = self.links.step_done((proc, w.procs[proc].incarnation), succ);
        self.found(transfer_causes::check_owed(proc, succ, owed));
    }

    /// Replica `proc`, shaped `before`, answered `reply` to update `xid` from `src`, sent to
    /// its session `addressee`.
    // One argument per fact the check judges by.
    #[allow(clippy::too_many_arguments)]
    pub fn propose_answered(
        &mut self,
        w: &WorldView,
        proc: usize,
        before: &Shape,
        addressee: NodeId,
        src: NodeId,
        xid: Xid,
        reply: &PeerReply,
    ) {
        let dropped = self.dropped_held.contains(proc);
        self.found(gap_refusals::check(
            w.cfg.max_reorder,
            dropped,
            proc,
            before,
            addressee,
            src,
            xid,
            reply,
        ));
    }

    /// A replica's answer to a client request, as far as the key goes.
    pub fn key_verdict(&mut self, w: &WorldView, key: &str, verdict: KeyVerdict) {
        self.found(valid_keys::check(w.cfg.max_key_bytes, key, verdict));
    }

    /// A foreign peer sent replica `proc` a request it must refuse with `expected`; it was
    /// `before` and took it as `outcome` says.
    pub fn foreign_input(&mut self, proc: usize, request: &str, expected: &PeerReply, before: &Observed, outcome: &Outcome) {
        self.found(foreign_input::check(proc, request, expected, before, outcome));
    }

    /// The replicas that accepted a state transfer since the last call, in order.
    pub fn take_accepted_transfers(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.accepted_transfers)
    }
}
