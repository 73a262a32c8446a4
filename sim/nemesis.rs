//! Faults: crashes and restarts as new sessions, pauses past the session timeout, partitions
//! between replicas, from ZooKeeper and from clients, clients whose view of the membership
//! stalls, replicas whose membership notifications lag while their lease holds, new replicas
//! joining, and every session ending at once (the root deleted).
//!
//! The nemesis never takes away the last replica that holds the state: a run in which every
//! holder died would lose acknowledged writes by bad luck, and the checks could not tell that
//! from a bug. Each destructive fault first makes sure another live, holds_state member survives.

use super::faults::Fault;
use super::world::{Endpoint, Ev, Phase, Status, World};

impl World {
    pub fn nemesis(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        if self.ops_finished * 4 >= self.cfg.total_ops() * 3 {
            self.heal_all();
            return;
        }
        let next = self.dice.nemesis.range(100, 600);
        self.schedule(next, Ev::Nemesis);
        if self.mass_loss_recovering {
            if !self.any_retained_copy() {
                self.mass_loss_recovering = false;
                self.trace.note(self.now(), "nemesis: recovered from the loss of every session");
            } else {
                return;
            }
        }

        let Some(fault) = self.dice.nemesis.weighted(&self.nemesis_faults) else {
            return;
        };
        match fault {
            Fault::Crash => {
                if let Some(v) = self.expendable() {
                    self.trace.note(self.now(), &format!("nemesis: crash replica {v}"));
                    self.crash(v);
                    let t = self.dice.nemesis.range(200, 2 * self.cfg.session_timeout);
                    self.schedule(t, Ev::Restart { proc: v });
                }
            }
            Fault::Pause => {
                // A paused tail that resumes believing it still is the tail is the classic way
                // to serve a stale read, so the tail is the favourite victim.
                let tail = self.zk.members().last().and_then(|m| self.proc_of_addr(&m.addr));
                let victim = match tail {
                    Some(t) if self.dice.nemesis.chance(500_000) && self.can_lose(t) => Some(t),
                    _ => self.expendable(),
                };
                if let Some(v) = victim {
                    let t = self.dice.nemesis.range(100, 3 * self.cfg.session_timeout);
                    self.trace.note(self.now(), &format!("nemesis: pause replica {v} for {t} ms"));
                    self.pause(v, t);
                    if Some(v) == tail && self.dice.nemesis.chance(500_000) {
                        // ...and a client that still believes in it is the one that gets hurt.
                        let c = self.dice.nemesis.range(0, self.clients.len() as u64) as usize;
                        self.trace
                            .note(self.now(), &format!("nemesis: client {c} sees no membership change for {t} ms"));
                        self.clients[c].view_stalled_until = self.now() + t + 300;
                    }
                }
            }
            Fault::CutReplicas => {
                let up: Vec<usize> = (0..self.procs.len()).filter(|&p| self.procs[p].status == Status::Up).collect();
                if let (Some(a), Some(b)) = (self.dice.nemesis.pick(&up), self.dice.nemesis.pick(&up)) {
                    if a != b {
                        self.partition(Endpoint::Replica(a), Endpoint::Replica(b));
                    }
                }
            }
            Fault::CutZk => {
                if let Some(v) = self.expendable() {
                    self.partition(Endpoint::Replica(v), Endpoint::Zk);
                }
            }
            Fault::CutClient => {
                let c = self.dice.nemesis.range(0, self.clients.len() as u64) as usize;
                let p = self.dice.nemesis.range(0, self.procs.len() as u64) as usize;
                self.partition(Endpoint::Client(c), Endpoint::Replica(p));
            }
            Fault::StallClientView => {
                let c = self.dice.nemesis.range(0, self.clients.len() as u64) as usize;
                let t = self.dice.nemesis.range(200, 3 * self.cfg.session_timeout);
                self.trace
                    .note(self.now(), &format!("nemesis: client {c} sees no membership change for {t} ms"));
                self.clients[c].view_stalled_until = self.now() + t;
            }
            Fault::AddReplica => {
                if self.procs.len() < self.cfg.max_replicas {
                    let p = self.add_replica();
                    self.trace.note(self.now(), &format!("nemesis: new replica {p} joins"));
                }
            }
            Fault::ExpireAll => {
                if self.has_fresh_holder() {
                    self.trace.note(self.now(), "nemesis: every ZooKeeper session ends at once");
                    self.zk_expire_all();
                    self.mass_loss_recovering = true;
                }
            }
            Fault::StallMembership => {
                // The replica keeps its lease but acts on an old membership: a new head above it
                // or a new successor below it goes unseen for a while, which is when the guards
                // on pulling state and on answering as tail matter.
                let up: Vec<usize> = (0..self.procs.len()).filter(|&p| self.procs[p].status == Status::Up).collect();
                if let Some(p) = self.dice.nemesis.pick(&up) {
                    let t = self.dice.nemesis.range(200, 3 * self.cfg.session_timeout / 2);
                    self.trace
                        .note(self.now(), &format!("nemesis: replica {p} sees no membership change for {t} ms"));
                    self.stall_membership(p, self.now() + t);
                }
            }
        }
    }

    /// Whether a live replica kept a copy of the state from a session it lost, or will: one that
    /// holds state under a session that has ended has not heard so yet (it notices at its next
    /// heartbeat), and until it does its copy is not counted anywhere.
    fn any_retained_copy(&self) -> bool {
        self.procs.iter().any(|p| {
            p.status != Status::Crashed
                && p.replica.as_ref().is_some_and(|r| {
                    let ended = r.session_id().is_some_and(|s| !self.zk.is_member(s));
                    r.describe().retained.is_some() || (r.holds_state() && ended)
                })
        })
    }

    /// A live replica holds the chain's state and is current with ZooKeeper, so it holds every
    /// acknowledged write and will keep it when its session ends.
    fn has_fresh_holder(&self) -> bool {
        self.live_synced().into_iter().any(|h| self.is_fresh(h))
    }

    fn partition(&mut self, a: Endpoint, b: Endpoint) {
        let t = self.dice.nemesis.range(100, 2 * self.cfg.session_timeout);
        self.trace.note(self.now(), &format!("nemesis: cut {a:?} from {b:?} for {t} ms"));
        self.blocked.insert((a, b));
        self.schedule(t, Ev::Heal { a, b });
    }

    /// A replica whose loss still leaves another live, holds_state member that is not cut off
    /// from ZooKeeper.
    fn expendable(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.procs.len()).filter(|&p| self.procs[p].status == Status::Up).collect();
        let victim = self.dice.nemesis.pick(&up)?;
        self.can_lose(victim).then_some(victim)
    }

    pub fn can_lose(&self, victim: usize) -> bool {
        self.procs[victim].status == Status::Up && self.live_synced().into_iter().any(|h| h != victim && self.is_fresh(h))
    }

    /// Current in ZooKeeper's eyes and able to stay so: a replica just back from a pause may
    /// still be listed while its session is about to expire.
    fn is_fresh(&self, h: usize) -> bool {
        let session = self.procs[h].replica.as_ref().and_then(|r| r.session_id());
        session.is_some_and(|s| self.zk.heard_recently(s, self.now(), self.cfg.session_timeout / 2))
            && !self.is_blocked(Endpoint::Replica(h), Endpoint::Zk)
    }
}
