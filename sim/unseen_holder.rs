//! Targeted scenario: after every session ended, a new head asks the replicas below it for
//! their retained copies, but its listings stall while it sees only one of them: a replica X
//! with an old copy. The replicas with fresh copies registered later, between the head and X,
//! where only X sees them.
//!
//! X must answer "not now": its predecessor is neither the asker nor a replica the asker found
//! stateless, so someone the asker cannot see sits between them and may hold more. If X said
//! what it holds, the head would find no better copy, wait out `retained_settle_ms` on its
//! unchanging view and adopt X's old copy, and then hand it to the fresher holders below:
//! acknowledged writes lost. Random faults almost never line this up: a mass session loss,
//! an old copy held by the replica the head sees, fresher ones registering in between, and
//! the head's listings stalling right then.

use super::world::{Endpoint, World};
use crate::core::{Millis, NodeId};

const OPS_PER_CLIENT: usize = 8;
const WAIT_MS: Millis = 5_000;

impl World {
    pub fn unseen_holder_phase(&mut self) {
        // X drops out and keeps its copy; the chain acknowledges more without it.
        let Some((stale, holders)) = self.drop_out_keeping_copy("unseen holder", OPS_PER_CLIENT) else {
            return;
        };
        let fresh: Vec<usize> = holders.iter().copied().filter(|&p| p != stale).collect();
        let cuts: Vec<(Endpoint, Endpoint)> = holders.iter().map(|&p| (Endpoint::Replica(p), Endpoint::Zk)).collect();

        // Every session ends; no holder can register again yet.
        self.trace.note(self.now(), "unseen holder: every session ends");
        for &cut in &cuts {
            self.blocked.insert(cut);
        }
        self.zk_expire_all();
        for &p in &fresh {
            self.with_replica(p, |r| r.on_session_lost());
        }

        // A new head registers, then X, which the head cannot reach yet.
        let head = self.procs.len();
        self.next_session_sorts_first(head);
        self.add_replica();
        let head_to_stale = (Endpoint::Replica(head), Endpoint::Replica(stale));
        self.blocked.insert(head_to_stale);
        self.blocked.remove(&(Endpoint::Replica(stale), Endpoint::Zk));
        let tick = self.cfg.tick;
        let stale_seen = self.run_until_listed(stale, self.now() + WAIT_MS)
            && self.run_until_holds(self.now() + WAIT_MS, tick, |w| {
                let session = w.session_of(stale);
                w.procs[head]
                    .replica
                    .as_ref()
                    .is_some_and(|r| session.is_some_and(|s| r.view().contains(s)))
            });
        let Some(head_id) = self.session_of(head).filter(|_| stale_seen) else {
            return self.end_unseen_holder(&cuts, Some(head), Some(head_to_stale));
        };
        let now = self.now();
        self.stall_membership(head, now + 4 * WAIT_MS);

        // The fresh holders register right after the head: between it and X, unseen by it.
        for &p in &fresh {
            self.next_session_sorts_after(p, head_id);
            self.blocked.remove(&(Endpoint::Replica(p), Endpoint::Zk));
        }
        let stale_has_new_pred = self.run_until_holds(self.now() + WAIT_MS, tick, |w| {
            w.procs[stale].shape.pred.is_some_and(|pred| pred != head_id)
        });
        self.trace.note(
            self.now(),
            &format!(
                "unseen holder: replica {head} at the head sees only replica {stale}, which now sits below a fresh holder: {stale_has_new_pred}"
            ),
        );
        // Now the head's questions reach X.
        self.blocked.remove(&head_to_stale);
        self.add_workload(OPS_PER_CLIENT);
        let t = 2 * self.cfg.session_timeout + self.dice.scenario.range(0, self.cfg.session_timeout);
        self.run_to(self.now() + t);
        self.end_unseen_holder(&cuts, Some(head), None);
    }

    fn end_unseen_holder(&mut self, cuts: &[(Endpoint, Endpoint)], head: Option<usize>, extra: Option<(Endpoint, Endpoint)>) {
        for cut in cuts.iter().chain(extra.iter()) {
            self.blocked.remove(cut);
        }
        let listening: Vec<usize> = head.into_iter().collect();
        self.end_scenario(&listening, "after every session ended, with a holder the head could not see");
    }

    fn session_of(&self, p: usize) -> Option<NodeId> {
        self.procs[p].replica.as_ref().and_then(|r| r.session_id())
    }
}
