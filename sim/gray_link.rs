//! Targeted scenario: a gray failure that lasts. From a settled chain of at least three, one of:
//! a link between neighbours broken both ways, or one way (either direction), the link between
//! head and tail broken (they talk directly: acknowledgements in the head variant, polls in
//! the tail variant), or a replica cut from every other replica, while every replica keeps
//! its ZooKeeper session. Clients keep writing for the whole fault, and the writes must flow
//! again within the bound and keep flowing until the heal (`checks::writes_during_fault`);
//! after the heal the chain must settle with every evicted replica back.

use crate::core::Millis;
use crate::sim::checks::{cut_off_outside, writes_during_fault};
use crate::sim::events::Endpoint;
use crate::sim::scenario;
use crate::sim::world::World;

/// How long the writes may stall after the fault begins, as for the real-network tests: two
/// session timeouts and two seconds.
fn bound(w: &World) -> Millis {
    2 * w.cfg().session_timeout + 2_000
}

/// Longest pause between acknowledged writes once the chain has routed around the fault.
const MAX_GAP_MS: Millis = 2_000;
/// An evicted replica may wait up to 64 suspicion timeouts to come back if it was evicted
/// again and again; one eviction costs one.
const SETTLE_MS: Millis = 30_000;

/// Writes per client before the fault, so the chain is seen working end to end first (a
/// replica learns who holds the acknowledged writes only from the tail's confirmations).
const WARM_UP_OPS: usize = 4;

pub fn run(w: &mut World) {
    scenario::begin(w, 3);
    w.add_workload(WARM_UP_OPS);
    w.finish_workload(w.now() + scenario::WORKLOAD_LIMIT_MS, "before a gray failure");
    let chain: Vec<usize> = w.zk().members().iter().filter_map(|m| w.proc_of_addr(&m.addr)).collect();
    if chain.len() < 3 || !w.ok() {
        return;
    }
    let n = chain.len();
    let i = w.dice.scenario.range(0, n as u64 - 1) as usize;
    let (a, b) = (chain[i], chain[i + 1]);
    let mut two_way: Vec<(Endpoint, Endpoint)> = Vec::new();
    let mut isolated = None;
    let mut one_way: Vec<(Endpoint, Endpoint)> = Vec::new();
    let what = match w.dice.scenario.range(0, 5) {
        0 => {
            two_way.push((Endpoint::Replica(a), Endpoint::Replica(b)));
            format!("the link between neighbours {a} and {b} broken")
        }
        1 => {
            one_way.push((Endpoint::Replica(a), Endpoint::Replica(b)));
            format!("what replica {a} sends its successor {b} dropped")
        }
        2 => {
            one_way.push((Endpoint::Replica(b), Endpoint::Replica(a)));
            format!("what replica {b} sends its predecessor {a} dropped")
        }
        3 => {
            let (head, tail) = (chain[0], chain[n - 1]);
            two_way.push((Endpoint::Replica(head), Endpoint::Replica(tail)));
            format!("the link between head {head} and tail {tail} broken")
        }
        _ => {
            let v = chain[w.dice.scenario.range(0, n as u64) as usize];
            isolated = Some(v);
            for other in (0..w.procs().len()).filter(|&o| o != v) {
                two_way.push((Endpoint::Replica(v), Endpoint::Replica(other)));
            }
            format!("replica {v} cut from every other replica")
        }
    };
    let began = w.now();
    w.note(&format!("gray link: {what}; every session stays alive"));
    for &(x, y) in &two_way {
        w.net.cut(x, y);
    }
    for &(x, y) in &one_way {
        w.net.cut_one_way(x, y);
    }
    // Keep every client busy for the whole fault: the check needs writes to judge.
    let suspicion = w.cfg().session_timeout + w.cfg().session_timeout / 2;
    let healed = began + bound(w).max(n as Millis * suspicion + 2_000) + 4 * suspicion;
    while w.now() < healed && w.ok() {
        for c in 0..w.client_count() {
            if w.client_ops_left(c) < 5 {
                w.add_client_ops(c, 20);
            }
        }
        w.run_to((w.now() + 200).min(healed));
    }
    let members_at_heal: Vec<usize> = w.zk().members().iter().filter_map(|m| w.proc_of_addr(&m.addr)).collect();
    for &(x, y) in &two_way {
        w.net.heal(x, y);
    }
    for &(x, y) in &one_way {
        w.net.heal_one_way(x, y);
    }
    w.note("gray link: healed");
    let suspicion = w.cfg().session_timeout + w.cfg().session_timeout / 2;
    // A head cut off from every peer first evicts its successor (it cannot tell whose fault
    // it is); the next successor reports it a suspicion timeout (and a tenth) after that.
    let head_cut_off = isolated == Some(chain[0]);
    let bound = if head_cut_off {
        bound(w).max(2 * suspicion + suspicion / 10 + 2_000)
    } else {
        bound(w)
    };
    let found = writes_during_fault::check(w.view().history, &what, began, healed, bound, MAX_GAP_MS);
    w.fail_all(found);
    if let Some(v) = isolated {
        w.fail_all(cut_off_outside::check(v, n, &members_at_heal, &what));
    }
    if !w.ok() {
        return;
    }
    w.finish_workload(w.now() + scenario::WORKLOAD_LIMIT_MS, "after a gray failure healed");
    // Evicted replicas come back once they have reached the chain for a suspicion timeout.
    scenario::settle(w, SETTLE_MS);
    scenario::close(w);
}
