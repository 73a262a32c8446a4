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
mod dice;
mod env;
mod failover;
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
pub mod run_shape;
mod scenario;
mod shape;
mod stale_copy;
mod trace;
mod unseen_holder;
mod world;
mod zk;

use crate::core::{Millis, Variant};
use grpc::variant_name;
pub use nemesis::{Fault, FAULTS};
use run_shape::{RunShape, Scenario};

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub variant: Variant,
    /// At most this many replicas at the start (each run draws 1 to this many).
    pub initial_replicas: usize,
    pub max_replicas: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    /// The replicas' key length limit; clients now and then send keys just past it.
    pub max_key_bytes: usize,
    pub faults: bool,
    /// Per message, in millionths.
    pub drop_ppm: u64,
    pub dup_ppm: u64,
    pub session_timeout: Millis,
    pub rpc_timeout: Millis,
    pub op_timeout: Millis,
    pub tick: Millis,
    /// After the faults stop, how long the chain may take to settle; operations invoked later
    /// must all complete.
    pub settle_time: Millis,
    pub max_time: Millis,
    /// Draw session ids as a multi-server ensemble does, so new replicas sort anywhere.
    pub multi_server_ids: bool,
    pub max_pending_writes: usize,
    pub max_sent: usize,
    pub max_reorder: usize,
    pub print_trace: bool,
    /// Test only: the world panics right after recording this event (counted from 1), to check
    /// that a panic still reports its seed. `None` (the default) changes nothing in the run.
    pub panic_at_event: Option<u64>,
}

impl SimConfig {
    pub fn new(seed: u64, variant: Variant) -> Self {
        SimConfig {
            seed,
            variant,
            initial_replicas: 3,
            max_replicas: 6,
            clients: 4,
            ops_per_client: 55,
            keys: 3,
            max_key_bytes: 16,
            faults: true,
            drop_ppm: 20_000,
            dup_ppm: 10_000,
            session_timeout: 1_000,
            rpc_timeout: 200,
            op_timeout: 1_500,
            tick: 10,
            settle_time: 3_000,
            max_time: 600_000,
            multi_server_ids: true,
            max_pending_writes: 64,
            max_sent: 128,
            max_reorder: 32,
            print_trace: false,
            panic_at_event: None,
        }
    }

    pub fn total_ops(&self) -> usize {
        self.clients * self.ops_per_client
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub variant: Variant,
    /// What the run drew before it started; `None` if building its world panicked.
    pub shape: Option<RunShape>,
    pub trace_hash: u64,
    pub events: u64,
    pub simulated_ms: Millis,
    pub ops: usize,
    pub violations: Vec<String>,
    /// What panicked, with where (`sim::panics`), if the run did: then `events`,
    /// `simulated_ms` and `trace_hash` are as of the panic.
    pub panic: Option<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.panic.is_some() || !self.violations.is_empty()
    }

    /// `SEED=… variant=…` and the run's shape: the head of a failure report and of a replay.
    pub fn seed_line(&self) -> String {
        let mut line = format!("SEED={} variant={}", self.seed, variant_name(self.variant));
        if let Some(shape) = &self.shape {
            line.push_str(&format!(" {shape}"));
        }
        line
    }

    /// The failure report, seed and replay command included; `None` if the seed passed.
    pub fn failure(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        let head = match &self.panic {
            Some(p) => format!(
                "{} panicked: {p}\n(after {} events, {} ms simulated)",
                self.seed_line(),
                self.events,
                self.simulated_ms
            ),
            None => format!(
                "{} failed after {} events ({} ms simulated):",
                self.seed_line(),
                self.events,
                self.simulated_ms
            ),
        };
        Some(failure_report(head, &self.violations, &replay_command(self.seed, self.variant)))
    }
}

/// A seed's failure report, in both tiers: its first line, every violation, the replay command.
pub(crate) fn failure_report(head: String, violations: &[String], replay: &str) -> String {
    let mut out = head;
    for v in violations {
        out.push('\n');
        out.push_str(v);
    }
    out.push_str("\nREPRODUCE WITH: ");
    out.push_str(replay);
    out
}

/// Many seeds' outcome, in both tiers: how many failed and which (the first 20), then the
/// first failure's report in full; `None` if every seed passed.
pub fn summarize_failures(failures: &[String], failed_seeds: &[u64], seeds_run: usize) -> Option<String> {
    let first = failures.first()?;
    let mut named: Vec<String> = failed_seeds.iter().take(20).map(|s| s.to_string()).collect();
    if failed_seeds.len() > 20 {
        named.push(format!("and {} more", failed_seeds.len() - 20));
    }
    Some(format!(
        "{} of {seeds_run} seeds failed (seeds {}); first:\n{first}",
        failures.len(),
        named.join(", ")
    ))
}

/// The command that replays one seed of `tests/sim.rs` with its trace.
pub fn replay_command(seed: u64, variant: Variant) -> String {
    format!(
        "CHAIN_SIM_SEED={seed} cargo test --features sim --test sim {}_variant -- --nocapture",
        variant_name(variant)
    )
}

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
