//! The checks that judge a run, one invariant per file. `step` checks run after every event;
//! `end` checks once the run is over.

mod applied_grows;
mod backoff;
mod bounded_queues;
mod chain_prefix;
mod cost;
mod foreign_input;
mod gap_refusals;
mod held_clients;
mod linearizable;
mod no_lost_writes;
mod progress_pacing;
mod pulled_state;
mod settled;
mod transfer_causes;
mod valid_keys;

pub use foreign_input::{Observed, Outcome};
pub use gap_refusals::DroppedHeld;
pub use progress_pacing::Pacing;
pub use valid_keys::KeyVerdict;

use super::new_head::CleanNewHead;
use super::quiet::Quiet;
use super::shape::Shape;
use super::world::{ReplyTo, Status, World};
use crate::core::{Millis, NodeId, PeerReply, RequestKind, Xid};

impl World {
    pub fn check_step(&mut self) {
        chain_prefix::check(self);
        bounded_queues::check(self);
        held_clients::check(self);
    }

    /// Replica `proc` took a step that changed its shape from `before` to `after`.
    pub fn observe_replica_step(&mut self, proc: usize, before: &Shape, after: &Shape) {
        applied_grows::check(self, proc, before, after);
        self.dropped_held.after_step(proc, before, after);
        let inc = self.procs[proc].incarnation;
        let now = self.now();
        self.links.after_step((proc, inc), before, after, now);
        if after.session != before.session {
            self.pacing.forget(proc);
        }
    }

    /// A process restarted: what was known of its previous incarnation no longer applies.
    pub fn observe_restart(&mut self, proc: usize) {
        self.dropped_held.forget(proc);
        self.pacing.forget(proc);
        self.links.forget(proc);
    }

    /// The link era requests from `proc` (incarnation `inc`) are sent in now.
    pub fn link_era(&self, proc: usize, inc: u32) -> u64 {
        self.links.get((proc, inc)).era
    }

    /// Replica `proc` (incarnation `inc`) sends session `to` a `kind` request (`retained`: a
    /// `pullState` asking for a retained copy).
    pub fn check_peer_send(&mut self, proc: usize, inc: u32, to: NodeId, kind: RequestKind, retained: bool) {
        progress_pacing::on_send(self, (proc, inc), kind);
        if kind == RequestKind::PullState {
            self.links.pull_sent((proc, inc), to, retained);
        }
        if let RequestKind::Transfer(_) = kind {
            let was = self.links.transfer_sent((proc, inc));
            transfer_causes::check_send(self, proc, to, &was);
            backoff::check_send(self, proc, to, &was);
        }
    }

    /// The answer to a `kind` request is about to reach its sender.
    pub fn observe_peer_reply(&mut self, to: ReplyTo, kind: RequestKind, reply: &PeerReply) {
        progress_pacing::on_reply(self, (to.proc, to.inc), kind, reply);
        if kind == RequestKind::PullState {
            self.links.pull_answered((to.proc, to.inc), to.addressee);
        }
        let succ = self.procs[to.proc].shape.succ;
        let now = self.now();
        self.links.on_reply(to, succ, kind, reply, now);
    }

    /// Replica `proc`, shaped `before`, accepted a transfer of the state at `state_xid` with
    /// `sent` the xids of its sent list.
    pub fn observe_transfer_installed(&mut self, proc: usize, before: &Shape, state_xid: Xid, sent: &[Xid]) {
        let now = self.now();
        self.links
            .installed((proc, self.procs[proc].incarnation), before, state_xid, sent, now);
    }

    /// Replica `proc`, shaped `before`, took an answer to its pull that carried a state.
    pub fn check_pulled_state_taken(&mut self, proc: usize, before: &Shape) {
        let after = self.procs[proc].shape.clone();
        pulled_state::check(self, proc, before, &after);
    }

    /// A step of replica `proc` is over and what it sent is on its way.
    pub fn observe_step_done(&mut self, proc: usize) {
        let succ = self.procs[proc].shape.succ;
        let owed = self.links.step_done((proc, self.procs[proc].incarnation), succ);
        transfer_causes::check_owed(self, proc, succ, owed);
    }

    /// Replica `proc`, shaped `before`, answered `reply` to update `xid` from `src`, sent to
    /// its session `addressee`.
    pub fn check_propose_answer(&mut self, proc: usize, before: &Shape, addressee: NodeId, src: NodeId, xid: Xid, reply: &PeerReply) {
        gap_refusals::check(self, proc, before, addressee, src, xid, reply);
    }

    /// Once the chain has had time to settle after the faults.
    pub fn check_settled(&mut self) {
        settled::check(self);
    }

    /// Run until every running replica is in the chain with its session confirmed alive (its
    /// lease valid: a replica that has just joined serves nothing until its first heartbeat)
    /// and the chain is settled (as `check_settled` judges it), for at most `limit` ms.
    pub fn settle(&mut self, limit: Millis) {
        let until = self.now() + limit;
        while self.now() < until && self.violations.is_empty() {
            let running = self.procs.iter().filter(|p| p.status == Status::Up).count();
            let live = self.live_synced();
            let leased = live
                .iter()
                .all(|&p| self.procs[p].replica.as_ref().is_some_and(|r| r.describe().lease_valid));
            if live.len() == running && leased && settled::problems(self).is_empty() {
                return;
            }
            self.run_until((self.now() + 50).min(until));
        }
    }

    /// A replica's answer to a client request, as far as the key goes.
    pub fn check_key_verdict(&mut self, key: &str, verdict: KeyVerdict) {
        valid_keys::check(self, key, verdict);
    }

    /// A foreign peer sent replica `proc` a request it must refuse with `expected`; it was
    /// `before` and took it as `outcome` says.
    pub fn check_foreign_input(&mut self, proc: usize, request: &str, expected: &PeerReply, before: &Observed, outcome: &Outcome) {
        foreign_input::check(self, proc, request, expected, before, outcome);
    }

    pub fn check_cost(&mut self, quiet: &Quiet) {
        cost::check(self, quiet);
    }

    /// A middle replica crashed; `successor` was the one after it.
    pub fn check_failover_cost(&mut self, successor: usize) {
        cost::check_failover(self, successor);
    }

    pub fn check_new_head_cost(&mut self, clean: &CleanNewHead) {
        cost::check_new_head(self, clean);
    }

    /// After the run: final reads, then the history checks.
    pub fn check_end(&mut self) {
        no_lost_writes::check(self);
        linearizable::check(self);
    }
}
