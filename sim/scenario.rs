//! What every targeted scenario does around its own script: it starts from a full chain that
//! holds the state, writes keys of its own, and ends with the workload finished, the chain
//! settled and the settled-chain check.

use crate::core::Millis;
use crate::sim::checks::settled;
use crate::sim::events::Endpoint;
use crate::sim::procs::Status;
use crate::sim::world::{Phase, World};

/// How long a scenario's workload may take before it counts as stuck.
pub const WORKLOAD_LIMIT_MS: Millis = 30_000;

/// Own keys, every crashed replica restarted as a new session, at least `min_members` in
/// the chain, and the chain settled.
pub fn begin(w: &mut World, min_members: usize) {
    w.set_phase(Phase::Scenario);
    w.fresh_keys();
    for p in 0..w.procs().len() {
        if w.procs()[p].status == Status::Crashed {
            w.boot(p);
        }
    }
    for _ in w.zk().members().len()..min_members {
        w.add_replica();
    }
    let limit = w.cfg().settle_time;
    settle(w, limit);
}

/// From a chain of at least two holders, one (returned with all the holders) is cut from
/// ZooKeeper until its session ends and keeps its copy while it cannot register again;
/// the chain then acknowledges `ops_per_client` more writes per client without it. `None`
/// if there were too few holders or a check failed.
pub fn drop_out_keeping_copy(w: &mut World, scenario: &str, ops_per_client: usize) -> Option<(usize, Vec<usize>)> {
    begin(w, 2);
    let holders = w.live_synced();
    if holders.len() < 2 {
        return None;
    }
    let stale = w.dice.scenario.pick(&holders)?;
    w.note(&format!("{scenario}: cut replica {stale} from ZooKeeper"));
    w.net.cut(Endpoint::Replica(stale), Endpoint::Zk);
    w.run_until(w.now() + w.cfg().session_timeout + 200);
    // Its ZooKeeper client hears "session expired" on reconnecting, and then cannot open a
    // new session (the connection drops again): the replica keeps its copy and waits to
    // register, while the chain goes on without it.
    w.with_replica(stale, |r| r.on_session_lost());
    let start = w.now();
    w.add_workload(ops_per_client);
    w.finish_workload(start + WORKLOAD_LIMIT_MS, "without the replica that dropped out");
    w.ok().then_some((stale, holders))
}

/// The replicas in `listening` act on ZooKeeper's listings again, from the current one on;
/// then the workload must finish and the chain settle.
pub fn end(w: &mut World, listening: &[usize], what: &str) {
    let now = w.now();
    for &p in listening {
        w.stall_membership(p, now);
        let listing = w.listing();
        w.deliver_listing(p, listing);
    }
    w.finish_workload(now + WORKLOAD_LIMIT_MS, what);
    close(w);
}

/// The scenario's faults are over: the chain must settle.
pub fn close(w: &mut World) {
    w.set_phase(Phase::Healed { at: w.now() });
    let limit = w.cfg().settle_time;
    settle(w, limit);
    if w.ok() {
        check_settled(w);
    }
}

/// Run until every running replica is in the chain with its session confirmed alive (its
/// lease valid: a replica that has just joined serves nothing until its first heartbeat)
/// and the chain is settled (as `check_settled` judges it), for at most `limit` ms.
pub fn settle(w: &mut World, limit: Millis) {
    let until = w.now() + limit;
    while w.now() < until && w.ok() {
        let running = w.procs().iter().filter(|p| p.status == Status::Up).count();
        let live = w.live_synced();
        // Every link streaming, too: a transfer still owed would count against what follows.
        let leased = live.iter().all(|&p| {
            w.procs()[p]
                .replica
                .as_ref()
                .is_some_and(|r| r.describe().lease_valid && !r.describe().transfer_owed)
        });
        if live.len() == running && leased && settled::check(&w.view()).is_empty() {
            return;
        }
        w.run_until((w.now() + 50).min(until));
    }
}

/// Once the chain has had time to settle (`checks::settled`).
pub fn check_settled(w: &mut World) {
    let found = settled::check(&w.view());
    w.fail_all(found);
}

/// Run until `p`'s current session is (or, with `listed` false, is no longer) a member.
fn run_until_membership(w: &mut World, p: usize, listed: bool, limit: Millis) -> bool {
    loop {
        let session = w.procs()[p].replica.as_ref().and_then(|r| r.session_id());
        let member = w
            .zk()
            .members()
            .iter()
            .any(|m| Some(m.id) == session && m.addr == w.procs()[p].addr);
        let addr_listed = w.zk().members().iter().any(|m| m.addr == w.procs()[p].addr);
        let done = if listed { member } else { !addr_listed };
        if done {
            return true;
        }
        if w.now() >= limit || !w.ok() {
            return false;
        }
        w.run_to(w.now() + w.cfg().tick);
    }
}

pub fn run_until_listed(w: &mut World, p: usize, limit: Millis) -> bool {
    run_until_membership(w, p, true, limit)
}

pub fn run_until_unlisted(w: &mut World, p: usize, limit: Millis) -> bool {
    run_until_membership(w, p, false, limit)
}
