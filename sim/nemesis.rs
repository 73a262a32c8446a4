//! Faults: crashes and restarts as new sessions, pauses past the session timeout, partitions
//! between replicas, from ZooKeeper and from clients, clients whose view of the membership
//! stalls, replicas whose membership notifications lag while their lease holds, new replicas
//! joining, every session ending at once (the root deleted), and gray failures: links between
//! live replicas broken (both ways or one way) or a replica cut from every peer, for longer
//! than the chain takes to route around them, while every session stays alive.
//!
//! The nemesis never takes away the last replica that holds the state: a run in which every
//! holder died would lose acknowledged writes by bad luck, and the checks could not tell that
//! from a bug. Each destructive fault first makes sure another live, holds_state member survives.

use crate::sim::events::{Endpoint, Ev};
use crate::sim::faults::Fault;
use crate::sim::procs::Status;
use crate::sim::world::{Phase, World};

pub fn turn(w: &mut World) {
    if w.phase() != Phase::Faults {
        return;
    }
    if w.ops_finished() * 4 >= w.cfg().total_ops() * 3 {
        w.heal_all();
        return;
    }
    let next = w.dice.nemesis.range(100, 600);
    w.schedule(next, Ev::Nemesis);
    if w.nemesis.power_loss_recovering {
        let all_up = w.procs().iter().all(|p| p.status == Status::Up);
        if all_up && !any_retained_copy(w) && !w.live_synced().is_empty() {
            w.nemesis.power_loss_recovering = false;
            w.note("nemesis: recovered from the power loss");
        } else {
            return;
        }
    }
    if w.nemesis.mass_loss_recovering {
        if !any_retained_copy(w) {
            w.nemesis.mass_loss_recovering = false;
            w.note("nemesis: recovered from the loss of every session");
        } else {
            return;
        }
    }

    let Some(fault) = w.dice.nemesis.weighted(&w.nemesis.faults) else {
        return;
    };
    match fault {
        Fault::Crash => {
            if let Some(v) = expendable(w) {
                w.note(&format!("nemesis: crash replica {v}"));
                w.crash(v);
                let t = w.dice.nemesis.range(200, 2 * w.cfg().session_timeout);
                w.schedule(t, Ev::Restart { proc: v });
            }
        }
        Fault::Pause => {
            // A paused tail that resumes believing it still is the tail is the classic way
            // to serve a stale read, so the tail is the favourite victim.
            let tail = w.zk().members().last().and_then(|m| w.proc_of_addr(&m.addr));
            let victim = match tail {
                Some(t) if w.dice.nemesis.chance(500_000) && can_lose(w, t) => Some(t),
                _ => expendable(w),
            };
            if let Some(v) = victim {
                let t = w.dice.nemesis.range(100, 3 * w.cfg().session_timeout);
                w.note(&format!("nemesis: pause replica {v} for {t} ms"));
                w.pause(v, t);
                if Some(v) == tail && w.dice.nemesis.chance(500_000) {
                    // ...and a client that still believes in it is the one that gets hurt.
                    let c = w.dice.nemesis.range(0, w.client_count() as u64) as usize;
                    w.note(&format!("nemesis: client {c} sees no membership change for {t} ms"));
                    w.stall_client_view(c, w.now() + t + 300);
                }
            }
        }
        Fault::CutReplicas => {
            let up: Vec<usize> = (0..w.procs().len()).filter(|&p| w.procs()[p].status == Status::Up).collect();
            if let (Some(a), Some(b)) = (w.dice.nemesis.pick(&up), w.dice.nemesis.pick(&up)) {
                if a != b {
                    partition(w, Endpoint::Replica(a), Endpoint::Replica(b));
                }
            }
        }
        Fault::CutZk => {
            if let Some(v) = expendable(w) {
                partition(w, Endpoint::Replica(v), Endpoint::Zk);
            }
        }
        Fault::CutClient => {
            let c = w.dice.nemesis.range(0, w.client_count() as u64) as usize;
            let p = w.dice.nemesis.range(0, w.procs().len() as u64) as usize;
            partition(w, Endpoint::Client(c), Endpoint::Replica(p));
        }
        Fault::StallClientView => {
            let c = w.dice.nemesis.range(0, w.client_count() as u64) as usize;
            let t = w.dice.nemesis.range(200, 3 * w.cfg().session_timeout);
            w.note(&format!("nemesis: client {c} sees no membership change for {t} ms"));
            w.stall_client_view(c, w.now() + t);
        }
        Fault::AddReplica => {
            if w.procs().len() < w.cfg().max_replicas {
                let p = w.add_replica();
                w.note(&format!("nemesis: new replica {p} joins"));
            }
        }
        Fault::ExpireAll => {
            if has_fresh_holder(w) {
                w.note("nemesis: every ZooKeeper session ends at once");
                w.zk_expire_all();
                w.nemesis.mass_loss_recovering = true;
            }
        }
        Fault::BreakLink => {
            let up: Vec<usize> = (0..w.procs().len()).filter(|&p| w.procs()[p].status == Status::Up).collect();
            if let (Some(a), Some(b)) = (w.dice.nemesis.pick(&up), w.dice.nemesis.pick(&up)) {
                if a != b {
                    let t = gray_duration(w);
                    let (a, b) = (Endpoint::Replica(a), Endpoint::Replica(b));
                    if w.dice.nemesis.chance(500_000) {
                        w.note(&format!("nemesis: break the link {a:?} <-> {b:?} for {t} ms"));
                        w.net.cut(a, b);
                        w.schedule(t, Ev::Heal { a, b });
                    } else {
                        w.note(&format!("nemesis: drop what {a:?} sends {b:?} for {t} ms"));
                        w.net.cut_one_way(a, b);
                        w.schedule(t, Ev::HealOneWay { from: a, to: b });
                    }
                }
            }
        }
        Fault::IsolateReplica => {
            let up: Vec<usize> = (0..w.procs().len()).filter(|&p| w.procs()[p].status == Status::Up).collect();
            if let Some(v) = w.dice.nemesis.pick(&up) {
                let t = gray_duration(w);
                w.note(&format!("nemesis: replica {v} reaches no other replica for {t} ms"));
                for other in (0..w.procs().len()).filter(|&o| o != v) {
                    let (a, b) = (Endpoint::Replica(v), Endpoint::Replica(other));
                    w.net.cut(a, b);
                    w.schedule(t, Ev::Heal { a, b });
                }
            }
        }
        Fault::PowerLoss => {
            w.note("nemesis: power loss: every replica process dies at once");
            for p in 0..w.procs().len() {
                if w.procs()[p].status != Status::Crashed {
                    w.crash(p);
                    let t = w.dice.nemesis.range(100, 2 * w.cfg().session_timeout);
                    w.schedule(t, Ev::Restart { proc: p });
                }
            }
            w.nemesis.power_loss_recovering = true;
        }
        Fault::CorruptDisk => {
            if let Some(v) = expendable(w) {
                w.crash(v);
                match w.corrupt_disk(v) {
                    Some((file, at)) => w.note(&format!("nemesis: crash replica {v} and flip a byte of {file} at {at}")),
                    None => w.note(&format!("nemesis: crash replica {v} (its disk is empty: nothing to rot)")),
                }
                let t = w.dice.nemesis.range(200, 2 * w.cfg().session_timeout);
                w.schedule(t, Ev::Restart { proc: v });
            }
        }
        Fault::StallMembership => {
            // The replica keeps its lease but acts on an old membership: a new head above it
            // or a new successor below it goes unseen for a while, which is when the guards
            // on pulling state and on answering as tail matter.
            let up: Vec<usize> = (0..w.procs().len()).filter(|&p| w.procs()[p].status == Status::Up).collect();
            if let Some(p) = w.dice.nemesis.pick(&up) {
                let t = w.dice.nemesis.range(200, 3 * w.cfg().session_timeout / 2);
                w.note(&format!("nemesis: replica {p} sees no membership change for {t} ms"));
                w.stall_membership(p, w.now() + t);
            }
        }
    }
}

/// Whether a live replica kept a copy of the state from a session it lost, or will: one that
/// holds state under a session that has ended has not heard so yet (it notices at its next
/// heartbeat), and until it does its copy is not counted anywhere.
fn any_retained_copy(w: &World) -> bool {
    w.procs().iter().any(|p| {
        p.status != Status::Crashed
            && p.replica.as_ref().is_some_and(|r| {
                let ended = r.session_id().is_some_and(|s| !w.zk().is_member(s));
                r.describe().retained.is_some() || (r.holds_state() && ended)
            })
    })
}

/// A live replica holds the chain's state and is current with ZooKeeper, so it holds every
/// acknowledged write and will keep it when its session ends.
fn has_fresh_holder(w: &World) -> bool {
    w.live_synced().into_iter().any(|h| is_fresh(w, h))
}

/// Long enough for the chain to route around a gray failure and run that way for a while:
/// from two to eight suspicion timeouts.
fn gray_duration(w: &mut World) -> u64 {
    let suspicion = w.cfg().session_timeout + w.cfg().session_timeout / 2;
    w.dice.nemesis.range(2 * suspicion, 8 * suspicion)
}

fn partition(w: &mut World, a: Endpoint, b: Endpoint) {
    let t = w.dice.nemesis.range(100, 2 * w.cfg().session_timeout);
    w.note(&format!("nemesis: cut {a:?} from {b:?} for {t} ms"));
    w.net.cut(a, b);
    w.schedule(t, Ev::Heal { a, b });
}

/// A replica whose loss still leaves another live, holds_state member that is not cut off
/// from ZooKeeper.
fn expendable(w: &mut World) -> Option<usize> {
    let up: Vec<usize> = (0..w.procs().len()).filter(|&p| w.procs()[p].status == Status::Up).collect();
    let victim = w.dice.nemesis.pick(&up)?;
    can_lose(w, victim).then_some(victim)
}

pub fn can_lose(w: &World, victim: usize) -> bool {
    w.procs()[victim].status == Status::Up && w.live_synced().into_iter().any(|h| h != victim && is_fresh(w, h))
}

/// Current in ZooKeeper's eyes and able to stay so: a replica just back from a pause may
/// still be listed while its session is about to expire.
fn is_fresh(w: &World, h: usize) -> bool {
    let session = w.procs()[h].replica.as_ref().and_then(|r| r.session_id());
    session.is_some_and(|s| w.zk().heard_recently(s, w.now(), w.cfg().session_timeout / 2))
        && !w.is_blocked(Endpoint::Replica(h), Endpoint::Zk)
}
