//! One seed: a paused-clock, single-threaded tokio runtime running production replicas
//! (`node::start_with`), the simulated coordinator, clients and the nemesis; then healing,
//! settling, the final reads and the checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::client::{backend, run_client, Outcome};
use super::config::{DeliberatePanic, GrpcSimConfig};
use super::coordinator::Coordinator;
use super::coverage::Coverage;
use super::dice::Streams;
use super::nemesis::run_nemesis;
use super::report::Report;
use super::run_shape::RunShape;
use super::trace::SharedTrace;
use super::transport::Net;
use super::world::{describe_all, lock, Replica, World};
use crate::core::Store;
use crate::sim::linearizability::{self, Op, OpKind};
use crate::sim::panics;

/// The seed's world while `play` runs, for a report if a panic unwinds out of the runtime.
type WorldSlot = Arc<Mutex<Option<Arc<World>>>>;

/// Plays one seed on a runtime of its own. Any panic on its thread meanwhile, in the harness,
/// a replica or a task that tokio caught, is reported with the seed rather than propagated
/// (or lost in a `JoinError`): `Report::panic`.
pub fn run_seed_catching(cfg: GrpcSimConfig) -> Report {
    let coverage = Coverage::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Report::broken(&cfg, format!("cannot build the runtime: {e}")),
    };
    let slot = WorldSlot::default();
    let dice = Streams::new(cfg.seed);
    let shape = RunShape::draw(cfg.initial_replicas, cfg.classic_replica, cfg.faults, &dice);
    let (report, mut panics) = panics::catching(|| {
        let play = play(cfg.clone(), dice, shape.clone(), slot.clone());
        tracing::subscriber::with_default(coverage.subscriber(), || match cfg.panic {
            Some(DeliberatePanic::Main(after)) => rt.block_on(panic_after(after, play)),
            _ => rt.block_on(play),
        })
    });
    let world = lock(&slot).take();
    let report = match (report, world) {
        (Some(report), _) => report,
        // Unwound out of the runtime: the world as of the panic, read in the runtime's context
        // (its paused clock).
        (None, Some(world)) => {
            let _context = rt.enter();
            let (described, more) = panics::catching(|| describe_all(&world));
            let mut violations = world.violations();
            violations.push(described.unwrap_or_else(|| format!("(describing the replicas panicked too: {})", more.join("; "))));
            Report {
                seed: cfg.seed,
                shape: None,
                variant: cfg.variant,
                trace_hash: world.trace.hash(),
                events: world.trace.events(),
                simulated_ms: world.now_ms(),
                ops: lock(&world.history).len(),
                violations,
                coverage: Default::default(),
                panic: None,
            }
        }
        (None, None) => Report {
            violations: Vec::new(),
            ..Report::broken(&cfg, String::new())
        },
    };
    // Dropping the runtime cancels every task still running, replicas' included.
    let (_, more) = panics::catching(|| drop(rt));
    panics.extend(more);
    Report {
        shape: Some(shape),
        coverage: coverage.counts(),
        panic: panics::summary(&panics),
        ..report
    }
}

/// `fut`, but panicking `after` from now if it has not finished ([`DeliberatePanic::Main`]).
async fn panic_after(after: Duration, fut: impl std::future::Future<Output = Report>) -> Report {
    tokio::select! {
        biased;
        report = fut => report,
        _ = tokio::time::sleep(after) => panic!("deliberate panic in the main future at {} ms (GrpcSimConfig::panic)", after.as_millis()),
    }
}

async fn play(cfg: GrpcSimConfig, dice: Streams, shape: RunShape, slot: WorldSlot) -> Report {
    let trace = SharedTrace::new(cfg.print_trace);
    trace.note(0, &format!("shape: {shape}"));
    let net = Net::new(dice.net.clone());
    let coord = Coordinator::new(net.clone(), dice.coordinator.clone(), trace.clone(), cfg.session_timeout);
    let replicas = (0..shape.initial_replicas)
        .map(|i| Replica {
            addr: format!("10.0.0.{}:7000", i + 1),
            incarnation: 0,
            classic: Some(i) == shape.classic_replica,
            node: None,
        })
        .collect();
    let initial_replicas = shape.initial_replicas;
    let world = Arc::new(World::new(cfg.clone(), dice, shape, net, coord.clone(), trace, replicas));
    *lock(&slot) = Some(world.clone());
    tokio::spawn(coord.clone().run());
    for r in 0..initial_replicas {
        world.boot(r).await;
    }
    let clients: Vec<_> = (0..cfg.clients).map(|c| tokio::spawn(run_client(world.clone(), c))).collect();
    let nemesis = if cfg.faults {
        tokio::spawn(run_nemesis(world.clone()))
    } else {
        let w = world.clone();
        tokio::spawn(async move { w.heal_all().await })
    };
    if let Some(DeliberatePanic::Task(after)) = cfg.panic {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            panic!("deliberate panic in a task at {} ms (GrpcSimConfig::panic)", after.as_millis());
        });
    }

    let all_done = async {
        for c in clients {
            let _ = c.await;
        }
    };
    if tokio::time::timeout(cfg.max_time, all_done).await.is_err() {
        world.violation(format!(
            "liveness: the clients did not finish within {} ms of simulated time",
            cfg.max_time.as_millis()
        ));
    }
    nemesis.abort();
    if lock(&world.healed_at).is_none() {
        world.heal_all().await;
    }
    if world.violations().is_empty() {
        // The clients stopped once the chain had settled; a moment for their last writes'
        // acknowledgements to reach everyone.
        tokio::time::sleep(cfg.rpc_timeout).await;
        final_reads(&world).await;
        check_replicas_agree(&world);
        let history = lock(&world.history).clone();
        if let Err(v) = linearizability::check(&history) {
            let mut ops = v.ops.clone();
            ops.sort_by_key(|o| o.invoked);
            let listing: Vec<String> = ops
                .iter()
                .map(|o| format!("  {:?} invoked {} returned {:?}", o.kind, o.invoked, o.returned))
                .collect();
            world.violation(format!(
                "linearizability: key {} has no linearization:\n{}",
                v.key,
                listing.join("\n")
            ));
        }
    }
    *lock(&slot) = None;
    let ops = lock(&world.history).len();
    let mut violations = world.violations();
    if !violations.is_empty() {
        violations.push(describe_all(&world));
    }
    Report {
        seed: cfg.seed,
        shape: None,
        variant: cfg.variant,
        trace_hash: world.trace.hash(),
        events: world.trace.events(),
        simulated_ms: world.now_ms(),
        ops,
        violations,
        coverage: Default::default(),
        panic: None,
    }
}

/// After settling, the tail serves a read of every key; those reads join the history, so the
/// linearizability check proves no acknowledged write was lost (and no unknown one half-kept).
async fn final_reads(world: &Arc<World>) {
    let members = world.coord.members();
    let Some(tail) = members.last().cloned() else {
        world.violation("no lost writes: no replica left in the chain for the final reads".into());
        return;
    };
    let (_view_tx, view) = watch::channel(members);
    // One more client, the same as the others, reading at the tail the view names.
    let client = backend(world, world.cfg.clients, view).await;
    for k in 0..world.cfg.keys {
        let key = format!("k{k}");
        let invoked = world.now_ms();
        match client.read(&key).await {
            Outcome::Done(v) => {
                let v = v.unwrap_or(0);
                world
                    .trace
                    .note(world.now_ms(), &format!("final read {key} = {v} at {}", tail.addr));
                lock(&world.history).push(Op {
                    key,
                    kind: OpKind::Get(v),
                    invoked,
                    returned: Some(world.now_ms()),
                });
            }
            other => {
                world.violation(format!(
                    "liveness: the settled tail {} refused the final read of {key}: {other:?}",
                    tail.addr
                ));
                return;
            }
        }
    }
}

/// Every member of the settled chain holds the state, the same state, at the same xid.
fn check_replicas_agree(world: &World) {
    let members = world.coord.members();
    let n = lock(&world.replicas).len();
    let mut states: Vec<(String, bool, u64, Store)> = Vec::new();
    for r in 0..n {
        let Some(session) = world.session_of(r) else {
            continue;
        };
        if !members.iter().any(|m| m.id == session) {
            continue;
        }
        let addr = lock(&world.replicas)[r].addr.clone();
        if let Some((synced, last, store)) = world.with_core(r, |c| (c.holds_state(), c.last_applied(), c.store().clone())) {
            world.trace.note(
                world.now_ms(),
                &format!("final state of {addr} ({session:x}): synced={synced} xid={last} {store:?}"),
            );
            states.push((addr, synced, last, store));
        }
    }
    if states.len() != members.len() {
        world.violation(format!(
            "settled: {} members in the view but {} replicas answer for them",
            members.len(),
            states.len()
        ));
    }
    let diverged = states.windows(2).any(|w| (w[0].1, w[0].2, &w[0].3) != (w[1].1, w[1].2, &w[1].3));
    if states.iter().any(|s| !s.1) || diverged {
        let listing: Vec<String> = states
            .iter()
            .map(|(a, s, x, st)| format!("  {a}: synced={s} xid={x} {st:?}"))
            .collect();
        world.violation(format!("settled: the chain's replicas do not agree:\n{}", listing.join("\n")));
    }
}
