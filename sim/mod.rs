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
mod env;
mod failover;
mod faults;
mod flapping_predecessor;
mod foreign;
pub mod grpc;
pub mod linearizability;
mod lingering_head;
mod links;
mod nemesis;
mod new_head;
pub mod panics;
mod quiet;
mod report;
pub mod run_shape;
mod scenario;
mod shape;
mod stale_copy;
mod trace;
mod unseen_holder;
mod world;
mod zk;

pub use config::SimConfig;
pub use faults::{Fault, FAULTS};
pub use report::{failure_report, replay_command, summarize_failures, variant_name, Report};
use run_shape::Scenario;

/// Plays one seed. A panic propagates; [`run_seed_catching`] reports it instead.
pub fn run(cfg: SimConfig) -> Report {
    let mut world = world::World::new(cfg);
    play(&mut world);
    report(world, None)
}

/// Plays one seed, a panic in the core or the simulator included in the report (with the
/// seed) rather than propagated: the other seeds go on, and the failure can be replayed.
pub fn run_seed_catching(cfg: SimConfig) -> Report {
    let (seed, variant) = (cfg.seed, cfg.variant);
    let mut world = None;
    let (_, panics) = panics::catching(|| play(world.insert(world::World::new(cfg))));
    let Some(panic) = panics::summary(&panics) else {
        let world = world.expect("a run that did not panic has its world");
        return report(world, None);
    };
    match world {
        Some(mut world) => {
            // The state at the panic, if describing it does not panic too.
            let (described, more) = panics::catching(|| world.describe_all());
            world.violations.push(match described {
                Some(d) => d,
                None => format!("(describing the replicas panicked too: {})", more.join("; ")),
            });
            report(world, Some(panic))
        }
        None => Report {
            seed,
            variant,
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
    Report {
        seed: world.cfg.seed,
        variant: world.cfg.variant,
        shape: Some(world.shape.clone()),
        trace_hash: world.trace.hash(),
        events: world.trace.events,
        simulated_ms: world.now(),
        ops: world.history.len(),
        violations: world.violations,
        panic,
    }
}

fn play(world: &mut world::World) {
    let cfg = world.cfg.clone();
    // While the faults go on, a foreign peer now and then sends a request that must be refused.
    world.plan_foreign_input();
    world.run();
    if world.violations.is_empty() {
        // Let the chain settle after the last client finished; then a few more operations on a
        // quiet network, counting what they cost; then more while the tail, then a middle, crash;
        // then one targeted scenario (a new head pulling the state, a stale retained copy at the
        // head, a predecessor that comes and goes unseen by it, an old head that lingers, or a
        // retained copy the new head cannot see);
        // then read every key.
        let until = world.now() + cfg.settle_time;
        world.run_until(until);
        world.check_settled();
        if world.violations.is_empty() {
            let quiet = world.quiet_phase();
            if !world.shape.tiny_bounds {
                world.check_cost(&quiet);
            }
        }
        if world.violations.is_empty() {
            world.failover_phase();
        }
        // One targeted scenario per run keeps the seed rate up.
        if world.violations.is_empty() {
            match world.shape.scenario {
                Scenario::NewHead => {
                    let clean = world.new_head_phase();
                    if let Some(clean) = clean.filter(|_| world.violations.is_empty() && !world.shape.tiny_bounds) {
                        world.check_new_head_cost(&clean);
                    }
                }
                Scenario::StaleCopy => world.stale_copy_phase(),
                Scenario::FlappingPredecessor => world.flapping_predecessor_phase(),
                Scenario::LingeringHead => world.lingering_head_phase(),
                Scenario::UnseenHolder => world.unseen_holder_phase(),
            }
        }
        world.check_end();
    }
    if !world.violations.is_empty() {
        let snapshot = world.describe_all();
        world.violations.push(snapshot);
    }
}
