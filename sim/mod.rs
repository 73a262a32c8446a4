//! Deterministic simulation of whole chains: the same replica core as production, with time,
//! network, ZooKeeper, clients and faults all decided by one seed.
//!
//! `run(cfg)` plays one seed and returns its trace hash and any violated invariant;
//! `run_seed_catching(cfg)` also turns a panic into a failure of the seed (`panics`). The same
//! seed gives the same run byte for byte: nothing here reads a clock, the OS's randomness,
//! or iterates a `HashMap`, and everything runs on one thread.

mod canon;
mod checks;
mod client;
mod config;
mod dice;
mod disks;
mod env;
mod events;
mod failover;
mod faults;
mod flapping_predecessor;
mod foreign;
mod gray_link;
pub mod grpc;
pub mod linearizability;
mod lingering_head;
mod links;
mod measure;
mod nemesis;
mod new_head;
pub mod panics;
mod procs;
mod quiet;
mod report;
pub mod run_shape;
mod scenario;
mod shape;
mod stale_copy;
mod trace;
mod unseen_holder;
mod view;
mod violation;
mod world;
mod zk;

pub use config::SimConfig;
pub use faults::{Fault, FAULTS};
pub use report::{failure_report, replay_command, summarize_failures, variant_name, Report};
use run_shape::Scenario;

/// What the world leaves to the layers above it.
const DRIVERS: world::Drivers = world::Drivers {
    nemesis: nemesis::turn,
    foreign: foreign::request,
};

/// Plays one seed. A panic propagates; [`run_seed_catching`] reports it instead.
pub fn run(cfg: SimConfig) -> Report {
    let mut world = world::World::new(cfg, DRIVERS);
    play(&mut world);
    report(world, None)
}

/// Plays one seed, a panic in the core or the simulator included in the report (with the
/// seed) rather than propagated: the other seeds go on, and the failure can be replayed.
pub fn run_seed_catching(cfg: SimConfig) -> Report {
    let (seed, variant, durable) = (cfg.seed, cfg.variant, cfg.durable);
    let mut world = None;
    let (_, panics) = panics::catching(|| play(world.insert(world::World::new(cfg, DRIVERS))));
    let Some(panic) = panics::summary(&panics) else {
        let world = world.expect("a run that did not panic has its world");
        return report(world, None);
    };
    match world {
        Some(world) => {
            // The state at the panic, if describing it does not panic too.
            let (described, more) = panics::catching(|| world.describe_all());
            let described = match described {
                Some(d) => d,
                None => format!("(describing the replicas panicked too: {})", more.join("; ")),
            };
            report_with(world, Some(panic), Some(described))
        }
        None => Report {
            seed,
            variant,
            durable,
            shape: None,
            trace_hash: 0,
            events: 0,
            simulated_ms: 0,
            ops: 0,
            violations: Vec::new(),
            panic: Some(format!("{panic}\n(while building the world)")),
        },
    }
}

fn report(world: world::World, panic: Option<String>) -> Report {
    // A failed run ends with the replicas' state, for the report.
    let snapshot = (!world.ok()).then(|| world.describe_all());
    report_with(world, panic, snapshot)
}

/// `snapshot`: the replicas' state, after the violations.
fn report_with(world: world::World, panic: Option<String>, snapshot: Option<String>) -> Report {
    let mut violations: Vec<String> = world.checks().violations().iter().map(|v| v.to_string()).collect();
    violations.extend(snapshot);
    Report {
        seed: world.cfg().seed,
        variant: world.cfg().variant,
        durable: world.cfg().durable,
        shape: Some(world.shape().clone()),
        trace_hash: world.trace().hash(),
        events: world.trace().events,
        simulated_ms: world.now(),
        ops: world.history_len(),
        violations,
        panic,
    }
}

fn play(w: &mut world::World) {
    let cfg = w.cfg().clone();
    // While the faults go on, a foreign peer now and then sends a request that must be refused.
    foreign::plan(w);
    w.run();
    if !w.ok() {
        return;
    }
    // Let the chain settle after the last client finished; then a few more operations on a
    // quiet network, counting what they cost; then more while the tail, then a middle, crash;
    // then one targeted scenario (a new head pulling the state, a stale retained copy at the
    // head, a predecessor that comes and goes unseen by it, an old head that lingers, or a
    // retained copy the new head cannot see);
    // then read every key.
    let until = w.now() + cfg.settle_time;
    w.run_until(until);
    // Replicas evicted during the faults come back once they reach every member for a
    // suspicion timeout (up to 64 of them after repeated evictions): the measured quiet phase
    // starts from the whole chain.
    scenario::settle(w, 64 * (cfg.session_timeout + cfg.session_timeout / 2));
    scenario::check_settled(w);
    if w.ok() {
        let measured = quiet::run(w);
        if !w.shape().tiny_bounds {
            w.fail_all(checks::cost::check(cfg.variant, &measured));
        }
    }
    if w.ok() {
        failover::run(w);
    }
    // One targeted scenario per run keeps the seed rate up.
    if w.ok() {
        match w.shape().scenario {
            Scenario::NewHead => {
                let clean = new_head::run(w);
                if let Some(clean) = clean.filter(|_| w.ok() && !w.shape().tiny_bounds) {
                    w.fail_all(checks::cost::check_new_head(&clean));
                }
            }
            Scenario::StaleCopy => stale_copy::run(w),
            Scenario::FlappingPredecessor => flapping_predecessor::run(w),
            Scenario::LingeringHead => lingering_head::run(w),
            Scenario::UnseenHolder => unseen_holder::run(w),
            Scenario::GrayLink => gray_link::run(w),
        }
    }
    // After the run: final reads, then the history checks.
    let (reads, missing) = checks::no_lost_writes::final_reads(&w.view());
    w.record_final_reads(reads);
    w.fail_all(missing);
    let found = checks::linearizable::check(&w.view());
    w.fail_all(found);
}
