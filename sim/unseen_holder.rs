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

use crate::core::Millis;
use crate::sim::events::Endpoint;
use crate::sim::scenario;
use crate::sim::world::World;

const OPS_PER_CLIENT: usize = 8;
const WAIT_MS: Millis = 5_000;

pub fn run(w: &mut World) {
    // X drops out and keeps its copy; the chain acknowledges more without it.
    let Some((stale, holders)) = scenario::drop_out_keeping_copy(w, "unseen holder", OPS_PER_CLIENT) else {
        return;
    };
    let fresh: Vec<usize> = holders.iter().copied().filter(|&p| p != stale).collect();
    let cuts: Vec<(Endpoint, Endpoint)> = holders.iter().map(|&p| (Endpoint::Replica(p), Endpoint::Zk)).collect();

    // Every session ends; no holder can register again yet.
    w.note("unseen holder: every session ends");
    for &cut in &cuts {
        w.net.cut(cut.0, cut.1);
    }
    w.zk_expire_all();
    for &p in &fresh {
        w.with_replica(p, |r| r.on_session_lost());
    }

    // A new head registers, then X, which the head cannot reach yet.
    let head = w.procs().len();
    w.next_session_sorts_first(head);
    w.add_replica();
    let head_to_stale = (Endpoint::Replica(head), Endpoint::Replica(stale));
    w.net.cut(head_to_stale.0, head_to_stale.1);
    w.net.heal(Endpoint::Replica(stale), Endpoint::Zk);
    let tick = w.cfg().tick;
    let stale_seen = scenario::run_until_listed(w, stale, w.now() + WAIT_MS)
        && w.run_until_holds(w.now() + WAIT_MS, tick, |w| {
            let session = w.session_of(stale);
            w.procs()[head]
                .replica
                .as_ref()
                .is_some_and(|r| session.is_some_and(|s| r.view().contains(s)))
        });
    let Some(head_id) = w.session_of(head).filter(|_| stale_seen) else {
        return end_unseen_holder(w, &cuts, Some(head), Some(head_to_stale));
    };
    let now = w.now();
    w.stall_membership(head, now + 4 * WAIT_MS);

    // The fresh holders register right after the head: between it and X, unseen by it.
    for &p in &fresh {
        w.next_session_sorts_after(p, head_id);
        w.net.heal(Endpoint::Replica(p), Endpoint::Zk);
    }
    let stale_has_new_pred = w.run_until_holds(w.now() + WAIT_MS, tick, |w| {
        w.procs()[stale].shape.pred.is_some_and(|pred| pred != head_id)
    });
    w.note(&format!(
        "unseen holder: replica {head} at the head sees only replica {stale}, which now sits below a fresh holder: {stale_has_new_pred}"
    ));
    // Now the head's questions reach X.
    w.net.heal(head_to_stale.0, head_to_stale.1);
    w.add_workload(OPS_PER_CLIENT);
    let t = 2 * w.cfg().session_timeout + w.dice.scenario.range(0, w.cfg().session_timeout);
    w.run_to(w.now() + t);
    end_unseen_holder(w, &cuts, Some(head), None);
}

fn end_unseen_holder(w: &mut World, cuts: &[(Endpoint, Endpoint)], head: Option<usize>, extra: Option<(Endpoint, Endpoint)>) {
    for cut in cuts.iter().chain(extra.iter()) {
        w.net.heal(cut.0, cut.1);
    }
    let listening: Vec<usize> = head.into_iter().collect();
    scenario::end(w, &listening, "after every session ended, with a holder the head could not see");
}
