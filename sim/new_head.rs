//! Targeted scenario: replicas with no state join at the head of a working chain and pull the
//! state from the replicas below (`chainrep.ext.pullState`).
//!
//! Random faults seldom set this up: a new session sorts first only by chance, and the guards
//! on answering a pull matter only when the asker and the replicas below it disagree about who
//! sits between them, or when a replica that was promised the state drops out. Here the
//! newcomer is made to sort first. In half the runs the rest is made messy on purpose:
//! replicas and clients act on old membership for a while, a second newcomer joins between
//! the first and the old head, the old head or the newcomer crashes mid-pull, messages are
//! dropped and duplicated, the answer to a pull is lost or lands late; the usual checks judge
//! those runs.
//! The other half is clean (one newcomer, a quiet network, the old head slow to see it) and
//! its cost is checked too (`checks::cost::check_new_head`).

use crate::core::Millis;
use crate::sim::measure::CleanNewHead;
use crate::sim::nemesis;
use crate::sim::scenario::{self, WORKLOAD_LIMIT_MS};
use crate::sim::world::World;

const OPS_PER_CLIENT: usize = 12;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A replica with no state joins; its session sorts before every older one.
    Join,
    /// Another joins right before the first newcomer the moment that one has a pull on its
    /// way, whose answer lands late: by then the first newcomer has a predecessor, and maybe
    /// the state from it.
    JoinDuringPull,
    CrashOldHead,
    CrashNewcomer,
}

pub fn run(w: &mut World) -> Option<CleanNewHead> {
    scenario::begin(w, 1);
    let members = w.zk().members();
    let old_head = members.first().and_then(|m| w.proc_of_addr(&m.addr))?;
    let clean = w.dice.scenario.chance(500_000);
    let start = w.now();
    let mut steps = vec![(w.dice.scenario.range(0, 100), Step::Join)];
    if clean {
        w.net.short_delays_only = true;
        // The clean case's cost counts from here.
        w.take_peer_sends();
        // The old head may take a while to see the newcomer and says "not now" meanwhile,
        // which is when the newcomer's pacing of its questions shows.
        let lag = w.dice.scenario.range(0, 400);
        w.stall_membership(old_head, start + lag);
    } else {
        mess_up(w, &members);
        // The replica that hands over its state has promised it to the newcomer, which
        // never hears so and asks again: it must be given the state again.
        if w.dice.scenario.chance(750_000) {
            w.net.lose_pull_replies = w.dice.scenario.range(1, 3) as u32;
        }
        // An answer that lands late finds the asker with a predecessor, or the state, by
        // then: it must leave the answer alone.
        if w.dice.scenario.chance(500_000) {
            w.net.slow_pull_replies = w.dice.scenario.range(1, 4) as u32;
        }
        match w.dice.scenario.range(0, 3) {
            0 => steps.push((w.dice.scenario.range(0, 600), Step::Join)),
            1 => {
                steps.push((w.dice.scenario.range(0, 100), Step::JoinDuringPull));
                w.net.lose_pull_replies = 0;
                w.net.slow_pull_replies = w.dice.scenario.range(1, 4) as u32;
            }
            _ => {}
        }
        if w.dice.scenario.chance(500_000) {
            steps.push((w.dice.scenario.range(0, 800), Step::CrashOldHead));
        }
        if w.dice.scenario.chance(250_000) {
            steps.push((w.dice.scenario.range(50, 800), Step::CrashNewcomer));
        }
        steps.sort_by_key(|(at, _)| *at);
    }
    w.note_at(start, &format!("new head: clean={clean}, {steps:?}"));
    w.add_workload(OPS_PER_CLIENT);
    let mut newcomers = Vec::new();
    let mut pulling_ms = 0;
    for (at, step) in steps {
        w.run_to(start + at);
        if !w.ok() {
            return None;
        }
        match step {
            Step::Join => {
                let p = w.procs().len();
                w.next_session_sorts_first(p);
                w.add_replica();
                w.note(&format!("new head: replica {p} joins"));
                newcomers.push(p);
                if clean {
                    pulling_ms = run_until_synced(w, p, start + WORKLOAD_LIMIT_MS);
                }
            }
            Step::JoinDuringPull => {
                let Some(&first) = newcomers.first() else { continue };
                let until = w.now() + WORKLOAD_LIMIT_MS / 10;
                w.run_until_holds(until, 1, |w| pulling(w, first));
                let p = w.procs().len();
                match w.procs()[first].replica.as_ref().and_then(|r| r.session_id()) {
                    Some(id) => w.next_session_sorts_before(p, id),
                    None => w.next_session_sorts_first(p),
                }
                w.add_replica();
                w.note(&format!("new head: replica {p} joins right before replica {first}, which pulls"));
                newcomers.push(p);
            }
            Step::CrashOldHead if nemesis::can_lose(w, old_head) => crash_noted(w, old_head, "the old head"),
            Step::CrashNewcomer => {
                if let Some(&p) = newcomers.first().filter(|&&p| nemesis::can_lose(w, p)) {
                    crash_noted(w, p, "the newcomer");
                }
            }
            Step::CrashOldHead => {}
        }
    }
    w.finish_workload(start + WORKLOAD_LIMIT_MS, "across a new head joining");
    let sends = w.take_peer_sends();
    w.net.short_delays_only = false;
    w.net.lose_pull_replies = 0;
    w.net.slow_pull_replies = 0;
    w.net.drop_ppm = 0;
    w.net.dup_ppm = 0;
    scenario::close(w);
    clean.then_some(CleanNewHead { pulling_ms, sends })
}

/// Whether replica `p` has a `pullState` on its way.
fn pulling(w: &World, p: usize) -> bool {
    w.checks().pulling((p, w.procs()[p].incarnation))
}

/// Run until replica `p` holds the state (or `limit`); how long that took.
fn run_until_synced(w: &mut World, p: usize, limit: Millis) -> Millis {
    let from = w.now();
    let tick = w.cfg().tick;
    w.run_until_holds(limit, tick, |w| w.procs()[p].replica.as_ref().is_some_and(|r| r.holds_state()));
    w.now() - from
}

/// Replicas and clients that will act on the old membership for a while, and a network
/// that drops and duplicates again.
fn mess_up(w: &mut World, members: &[crate::core::Member]) {
    let now = w.now();
    for m in members {
        let Some(p) = w.proc_of_addr(&m.addr) else { continue };
        if w.dice.scenario.chance(500_000) {
            let t = w.dice.scenario.range(100, 3 * w.cfg().session_timeout / 2);
            w.note_at(now, &format!("new head: replica {p} sees no membership change for {t} ms"));
            w.stall_membership(p, now + t);
        }
    }
    for c in 0..w.client_count() {
        if w.dice.scenario.chance(250_000) {
            let t = w.dice.scenario.range(100, 3 * w.cfg().session_timeout / 2);
            w.stall_client_view(c, now + t);
        }
    }
    if w.dice.scenario.chance(500_000) {
        w.net.drop_ppm = w.cfg().drop_ppm;
        w.net.dup_ppm = w.cfg().dup_ppm;
    }
}

fn crash_noted(w: &mut World, p: usize, who: &str) {
    w.note(&format!("new head: crash {who}, replica {p}"));
    w.crash(p);
}
