//! Faults: crash a replica (it comes back later as a new process with a new session), cut a
//! replica from another, from the coordinator or from a client, slow a link past the RPC
//! deadlines, reset a connection between replicas, stall a client's view of the membership,
//! and add replicas: `grpc::Fault`, each drawn with its weight (`FAULTS`) from the run's
//! repertoire (all of them, or in swarm runs a subset: `RunShape`), from the nemesis's own
//! stream of the seed. After `fault_time` it stops, heals everything and restarts every crashed
//! replica.
//!
//! As in the core simulator, it never takes away the last replica that holds the state: a run
//! in which every holder died would lose acknowledged writes by bad luck, and the checks could
//! not tell that from a bug. A crash or a cut from the coordinator first makes sure another
//! replica is up, synced, a member under a session the coordinator heard from recently, and
//! not cut off from it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::faults::Fault;
use super::transport::Place;
use super::world::World;

pub async fn run_nemesis(world: Arc<World>) {
    let timeout_ms = world.cfg.session_timeout.as_millis() as u64;
    let dice = world.dice.nemesis.clone();
    loop {
        tokio::time::sleep(Duration::from_millis(dice.range(150, 900))).await;
        if world.now_ms() >= world.cfg.fault_time.as_millis() as u64 {
            world.heal_all().await;
            return;
        }
        let Some(fault) = dice.weighted(&world.shape.repertoire) else {
            continue;
        };
        match fault {
            Fault::Crash => {
                if let Some(v) = expendable(&world) {
                    world.trace.note(world.now_ms(), &format!("nemesis: crash replica {v}"));
                    world.crash(v);
                    let back = Duration::from_millis(dice.range(300, 2 * timeout_ms));
                    let w = world.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(back).await;
                        // Unless healing restarted it first.
                        if !w.is_up(v) {
                            w.trace.note(w.now_ms(), &format!("nemesis: restart replica {v}"));
                            w.boot(v).await;
                        }
                    });
                }
            }
            Fault::CutReplicas => {
                let up = world.up_replicas();
                if let (Some(a), Some(b)) = (dice.pick(&up), dice.pick(&up)) {
                    if a != b {
                        cut(&world, Place::Replica(a), Place::Replica(b));
                    }
                }
            }
            Fault::CutCoordinator => {
                if let Some(v) = expendable(&world) {
                    cut(&world, Place::Replica(v), Place::Coordinator);
                }
            }
            Fault::CutClient => {
                let c = dice.range(0, world.cfg.clients as u64) as usize;
                let up = world.up_replicas();
                if let Some(r) = dice.pick(&up) {
                    cut(&world, Place::Client(c), Place::Replica(r));
                }
            }
            Fault::StallClientView => {
                let c = dice.range(0, world.cfg.clients as u64) as usize;
                let t = dice.range(200, 2 * timeout_ms);
                world
                    .trace
                    .note(world.now_ms(), &format!("nemesis: client {c} sees no membership change for {t} ms"));
                world.coord.stall_client(c, Instant::now() + Duration::from_millis(t));
            }
            Fault::AddReplica => {
                if let Some(r) = world.add_replica().await {
                    world.trace.note(world.now_ms(), &format!("nemesis: new replica {r} joins"));
                }
            }
            Fault::SlowLink => {
                let up = world.up_replicas();
                let a = dice.pick(&up).map(Place::Replica);
                let b = if dice.chance(300_000) {
                    Some(Place::Client(dice.range(0, world.cfg.clients as u64) as usize))
                } else {
                    dice.pick(&up).map(Place::Replica)
                };
                if let (Some(a), Some(b)) = (a, b) {
                    if a != b {
                        slow(&world, a, b);
                    }
                }
            }
            Fault::ResetConnection => {
                if let Some((a, b)) = world.net.reset_one() {
                    world
                        .trace
                        .note(world.now_ms(), &format!("nemesis: reset a connection from {a:?} to {b:?}"));
                }
            }
        }
    }
}

fn cut(world: &Arc<World>, a: Place, b: Place) {
    let t = Duration::from_millis(world.dice.nemesis.range(100, 2 * world.cfg.session_timeout.as_millis() as u64));
    world
        .trace
        .note(world.now_ms(), &format!("nemesis: cut {a:?} from {b:?} for {} ms", t.as_millis()));
    world.net.cut(a, b);
    let w = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(t).await;
        w.net.heal(a, b);
    });
}

/// Bytes between `a` and `b` take longer for a while: around or past the RPC deadlines, so
/// calls time out that the other side still carries out.
fn slow(world: &Arc<World>, a: Place, b: Place) {
    let rpc = world.cfg.rpc_timeout.as_millis() as u64;
    let extra = Duration::from_millis(world.dice.nemesis.range(rpc / 2, 3 * rpc));
    let t = Duration::from_millis(world.dice.nemesis.range(200, 2 * world.cfg.session_timeout.as_millis() as u64));
    world.trace.note(
        world.now_ms(),
        &format!("nemesis: {a:?}-{b:?} {} ms slower for {} ms", extra.as_millis(), t.as_millis()),
    );
    world.net.slow(a, b, extra);
    let w = world.clone();
    tokio::spawn(async move {
        tokio::time::sleep(t).await;
        w.net.slow(a, b, Duration::ZERO);
    });
}

/// A replica whose loss leaves another that holds the state and will stay in the chain.
fn expendable(world: &World) -> Option<usize> {
    let up = world.up_replicas();
    let victim = world.dice.nemesis.pick(&up)?;
    let fresh = world.cfg.session_timeout / 2;
    let survivor = up.iter().any(|&h| {
        h != victim
            && world.is_synced(h)
            && !world.net.is_cut(Place::Replica(h), Place::Coordinator)
            && world.session_of(h).is_some_and(|s| world.coord.heard_within(s, fresh))
    });
    survivor.then_some(victim)
}
