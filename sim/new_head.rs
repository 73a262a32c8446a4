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

use super::scenario::WORKLOAD_LIMIT_MS;
use super::world::{PeerSends, World};
use crate::core::Millis;

const OPS_PER_CLIENT: usize = 12;

/// What the clean case measured.
#[derive(Clone, Debug)]
pub struct CleanNewHead {
    /// From the newcomer's start until it held the state.
    pub pulling_ms: Millis,
    pub sends: PeerSends,
}

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

impl World {
    pub fn new_head_phase(&mut self) -> Option<CleanNewHead> {
        self.begin_scenario(1);
        let members = self.zk.members();
        let old_head = members.first().and_then(|m| self.proc_of_addr(&m.addr))?;
        let clean = self.dice.scenario.chance(500_000);
        let start = self.now();
        let mut steps = vec![(self.dice.scenario.range(0, 100), Step::Join)];
        if clean {
            self.short_delays_only = true;
            self.peer_sends = PeerSends::default();
            // The old head may take a while to see the newcomer and says "not now" meanwhile,
            // which is when the newcomer's pacing of its questions shows.
            let lag = self.dice.scenario.range(0, 400);
            self.stall_membership(old_head, start + lag);
        } else {
            self.mess_up(&members);
            // The replica that hands over its state has promised it to the newcomer, which
            // never hears so and asks again: it must be given the state again.
            if self.dice.scenario.chance(750_000) {
                self.lose_pull_replies = self.dice.scenario.range(1, 3) as u32;
            }
            // An answer that lands late finds the asker with a predecessor, or the state, by
            // then: it must leave the answer alone.
            if self.dice.scenario.chance(500_000) {
                self.slow_pull_replies = self.dice.scenario.range(1, 4) as u32;
            }
            match self.dice.scenario.range(0, 3) {
                0 => steps.push((self.dice.scenario.range(0, 600), Step::Join)),
                1 => {
                    steps.push((self.dice.scenario.range(0, 100), Step::JoinDuringPull));
                    self.lose_pull_replies = 0;
                    self.slow_pull_replies = self.dice.scenario.range(1, 4) as u32;
                }
                _ => {}
            }
            if self.dice.scenario.chance(500_000) {
                steps.push((self.dice.scenario.range(0, 800), Step::CrashOldHead));
            }
            if self.dice.scenario.chance(250_000) {
                steps.push((self.dice.scenario.range(50, 800), Step::CrashNewcomer));
            }
            steps.sort_by_key(|(at, _)| *at);
        }
        self.trace.note(start, &format!("new head: clean={clean}, {steps:?}"));
        self.add_workload(OPS_PER_CLIENT);
        let mut newcomers = Vec::new();
        let mut pulling_ms = 0;
        for (at, step) in steps {
            self.run_to(start + at);
            if !self.violations.is_empty() {
                return None;
            }
            match step {
                Step::Join => {
                    let p = self.procs.len();
                    self.next_session_sorts_first(p);
                    self.add_replica();
                    self.trace.note(self.now(), &format!("new head: replica {p} joins"));
                    newcomers.push(p);
                    if clean {
                        pulling_ms = self.run_until_synced(p, start + WORKLOAD_LIMIT_MS);
                    }
                }
                Step::JoinDuringPull => {
                    let Some(&first) = newcomers.first() else { continue };
                    let until = self.now() + WORKLOAD_LIMIT_MS / 10;
                    self.run_until_holds(until, 1, |w| w.pulling(first));
                    let p = self.procs.len();
                    match self.procs[first].replica.as_ref().and_then(|r| r.session_id()) {
                        Some(id) => self.next_session_sorts_before(p, id),
                        None => self.next_session_sorts_first(p),
                    }
                    self.add_replica();
                    self.trace.note(
                        self.now(),
                        &format!("new head: replica {p} joins right before replica {first}, which pulls"),
                    );
                    newcomers.push(p);
                }
                Step::CrashOldHead if self.can_lose(old_head) => self.crash_noted(old_head, "the old head"),
                Step::CrashNewcomer => {
                    if let Some(&p) = newcomers.first().filter(|&&p| self.can_lose(p)) {
                        self.crash_noted(p, "the newcomer");
                    }
                }
                Step::CrashOldHead => {}
            }
        }
        self.finish_workload(start + WORKLOAD_LIMIT_MS, "across a new head joining");
        let sends = std::mem::take(&mut self.peer_sends);
        self.short_delays_only = false;
        self.lose_pull_replies = 0;
        self.slow_pull_replies = 0;
        self.drop_ppm = 0;
        self.dup_ppm = 0;
        self.close_scenario();
        clean.then_some(CleanNewHead { pulling_ms, sends })
    }

    /// Whether replica `p` has a `pullState` on its way.
    fn pulling(&self, p: usize) -> bool {
        self.links.pulling((p, self.procs[p].incarnation))
    }

    /// Run until replica `p` holds the state (or `limit`); how long that took.
    fn run_until_synced(&mut self, p: usize, limit: Millis) -> Millis {
        let from = self.now();
        let tick = self.cfg.tick;
        self.run_until_holds(limit, tick, |w| w.procs[p].replica.as_ref().is_some_and(|r| r.holds_state()));
        self.now() - from
    }

    /// Replicas and clients that will act on the old membership for a while, and a network
    /// that drops and duplicates again.
    fn mess_up(&mut self, members: &[crate::core::Member]) {
        let now = self.now();
        for m in members {
            let Some(p) = self.proc_of_addr(&m.addr) else { continue };
            if self.dice.scenario.chance(500_000) {
                let t = self.dice.scenario.range(100, 3 * self.cfg.session_timeout / 2);
                self.trace
                    .note(now, &format!("new head: replica {p} sees no membership change for {t} ms"));
                self.stall_membership(p, now + t);
            }
        }
        for c in 0..self.clients.len() {
            if self.dice.scenario.chance(250_000) {
                let t = self.dice.scenario.range(100, 3 * self.cfg.session_timeout / 2);
                self.clients[c].view_stalled_until = now + t;
            }
        }
        if self.dice.scenario.chance(500_000) {
            self.drop_ppm = self.cfg.drop_ppm;
            self.dup_ppm = self.cfg.dup_ppm;
        }
    }

    fn crash_noted(&mut self, p: usize, who: &str) {
        self.trace.note(self.now(), &format!("new head: crash {who}, replica {p}"));
        self.crash(p);
    }
}
