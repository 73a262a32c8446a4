//! The simulator's property checks: many seeds of whole chains under faults.
//!
//! `cargo test --features sim` runs `CHAIN_SIM_SEEDS` seeds (default 1000) per variant.
//! `CHAIN_SIM_SEED=N` replays exactly one seed and prints its event trace.
#![cfg(feature = "sim")]

use std::time::Instant;

use chainrep::core::Variant;
use chainrep::sim::grpc::variant_name;
use chainrep::sim::{run, run_seed_catching, summarize_failures, Report, SimConfig};

#[path = "support/seeds.rs"]
mod seeds;
use seeds::env_u64;

/// Replays one seed with its trace; the failure report if it fails (a panic included).
fn replay(cfg: SimConfig) -> Result<(), String> {
    let report = run_seed_catching(cfg);
    println!(
        "{} trace hash {:016x}, {} events, {} ops",
        report.seed_line(),
        report.trace_hash,
        report.events,
        report.ops
    );
    report.failure().map_or(Ok(()), Err)
}

/// Runs seeds `base..base + seeds` on both cores (reports in seed order), each one independent, single-threaded world
/// made by `config`; a seed that panics is reported as a failure like any other.
fn run_many(base: u64, seeds: u64, config: impl Fn(u64) -> SimConfig + Sync) -> Vec<Report> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    let config = &config;
    let mut reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (base + t..base + seeds)
                        .step_by(threads as usize)
                        .map(|seed| run_seed_catching(config(seed)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked outside a seed"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

/// The failures' reports, and a summary naming the failed seeds then the first report in full.
fn failures(reports: &[Report]) -> (Vec<String>, Option<String>) {
    let failures: Vec<String> = reports.iter().filter_map(Report::failure).collect();
    let failed: Vec<u64> = reports.iter().filter(|r| r.failed()).map(|r| r.seed).collect();
    let summary = summarize_failures(&failures, &failed, reports.len());
    (failures, summary)
}

fn config(seed: u64, v: Variant, durable: bool) -> SimConfig {
    let mut cfg = SimConfig::new(seed, v);
    cfg.durable = durable;
    cfg
}

/// `CHAIN_SIM_SEEDS` seeds (default 1000) of variant `v`; durable runs give every replica a
/// simulated disk and the nemesis power losses and bit rot, `CHAIN_SIM_DURABLE_SEEDS` of them
/// (default 300).
fn run_seeds(v: Variant) {
    run_seeds_of(v, false)
}

fn run_seeds_of(v: Variant, durable: bool) {
    if let Some(seed) = env_u64("CHAIN_SIM_SEED") {
        let mut cfg = config(seed, v, durable);
        cfg.print_trace = true;
        if let Err(failure) = replay(cfg) {
            panic!("{failure}");
        }
        return;
    }
    let seeds = if durable {
        env_u64("CHAIN_SIM_DURABLE_SEEDS").unwrap_or(300)
    } else {
        env_u64("CHAIN_SIM_SEEDS").unwrap_or(1000)
    };
    let base = env_u64("CHAIN_SIM_SEED_BASE").unwrap_or(0);
    let started = Instant::now();
    let reports = run_many(base, seeds, |seed| config(seed, v, durable));
    let elapsed = started.elapsed().as_secs_f64();
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    println!(
        "{}{} variant: {} seeds, {} client operations, {} events in {:.1} s ({:.1} seeds/s)",
        if durable { "durable " } else { "" },
        variant_name(v),
        reports.len(),
        ops,
        events,
        elapsed,
        reports.len() as f64 / elapsed
    );
    if let (_, Some(summary)) = failures(&reports) {
        panic!("{summary}");
    }
}

#[test]
fn head_variant() {
    run_seeds(Variant::Head);
}

#[test]
fn tail_variant() {
    run_seeds(Variant::Tail);
}

#[test]
fn durable_head_variant() {
    run_seeds_of(Variant::Head, true);
}

#[test]
fn durable_tail_variant() {
    run_seeds_of(Variant::Tail, true);
}

#[test]
fn same_seed_same_run() {
    for seed in 0..10 {
        let a = run(SimConfig::new(seed, Variant::Head));
        let b = run(SimConfig::new(seed, Variant::Head));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} is not deterministic");
        assert_eq!(a.events, b.events);
    }
}

#[test]
fn every_seed_runs_enough_operations() {
    let cfg = SimConfig::new(0, Variant::Head);
    assert!(cfg.total_ops() >= 200, "a seed runs at least 200 client operations");
    let report = run(cfg);
    assert!(report.ops >= 150, "only {} operations reached the history", report.ops);
}

/// A panic inside a seed's world is reported with its seed, message, location and replay
/// command, through the same code as the real runs: the other seeds go on.
#[test]
fn a_panicking_seed_reports_its_seed() {
    for v in [Variant::Head, Variant::Tail] {
        // Seeds 100..104; event 40 comes in every run, event 3000 in most.
        let reports = run_many(100, 4, |seed| {
            let mut cfg = SimConfig::new(seed, v);
            cfg.panic_at_event = Some(if seed % 2 == 0 { 40 } else { 3_000 });
            cfg
        });
        let (failures, summary) = failures(&reports);
        assert!(reports.iter().filter(|r| r.seed % 2 == 0).all(Report::failed), "{failures:?}");
        let summary = summary.expect("a summary of the failures");
        println!("{summary}");
        let head = format!("{} of 4 seeds failed (seeds 100, ", failures.len());
        assert!(summary.starts_with(&head), "{summary}");
        for r in reports.iter().filter(|r| r.failed()) {
            let f = r.failure().expect("a failed seed's report");
            let at = if r.seed % 2 == 0 { 40 } else { 3_000 };
            let seed_line = r.seed_line();
            assert!(
                seed_line.starts_with(&format!("SEED={} variant={} replicas=", r.seed, variant_name(v))),
                "{seed_line}"
            );
            for want in ["faults=", "bounds=", "scenario="] {
                assert!(seed_line.contains(want), "missing {want:?} in {seed_line:?}");
            }
            for want in [
                format!("{seed_line} panicked: "),
                format!("deliberate panic at event {at} (SimConfig::panic_at_event) (at sim/world.rs:"),
                format!("(after {at} events, "),
                "ZooKeeper members (chain order)".into(),
                format!(
                    "REPRODUCE WITH: CHAIN_SIM_SEED={} cargo test --features sim --test sim {}_variant -- --exact --nocapture",
                    r.seed,
                    variant_name(v)
                ),
            ] {
                assert!(f.contains(&want), "missing {want:?} in:\n{f}");
            }
        }
    }
    // The single-seed replay path too.
    let mut cfg = SimConfig::new(7, Variant::Head);
    cfg.panic_at_event = Some(25);
    let f = replay(cfg).expect_err("seed 7 panics at event 25");
    assert!(f.starts_with("SEED=7 variant=head replicas="), "{f}");
    assert!(f.contains(" panicked: deliberate panic at event 25"), "{f}");
    assert!(f.contains("REPRODUCE WITH: CHAIN_SIM_SEED=7 "), "{f}");
}
