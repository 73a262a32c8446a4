//! The simulator's property checks: many seeds of whole chains under faults.
//!
//! `cargo test --features sim` runs `CHAIN_SIM_SEEDS` seeds (default 1000) per variant.
//! `CHAIN_SIM_SEED=N` replays exactly one seed and prints its event trace.
#![cfg(feature = "sim")]

use std::time::Instant;

use chainrep::core::Variant;
use chainrep::sim::grpc::variant_name;
use chainrep::sim::{run, Report, SimConfig};

#[path = "support/seeds.rs"]
mod seeds;
use seeds::env_u64;

fn replay_command(seed: u64, v: Variant) -> String {
    format!(
        "CHAIN_SIM_SEED={seed} cargo test --features sim --test sim {}_variant -- --nocapture",
        variant_name(v)
    )
}

fn fail(report: &Report, v: Variant) -> String {
    format!(
        "SEED={} variant={} failed after {} events ({} ms simulated):\n{}\nREPRODUCE WITH: {}",
        report.seed,
        variant_name(v),
        report.events,
        report.simulated_ms,
        report.violations.join("\n"),
        replay_command(report.seed, v)
    )
}

/// Runs the seeds on both cores; each seed is one independent, single-threaded world.
fn run_seeds(v: Variant) {
    if let Some(seed) = env_u64("CHAIN_SIM_SEED") {
        let mut cfg = SimConfig::new(seed, v);
        cfg.print_trace = true;
        let report = run(cfg);
        println!(
            "SEED={seed} trace hash {:016x}, {} events, {} ops",
            report.trace_hash, report.events, report.ops
        );
        assert!(report.violations.is_empty(), "{}", fail(&report, v));
        return;
    }
    let seeds = env_u64("CHAIN_SIM_SEEDS").unwrap_or(1000);
    let base = env_u64("CHAIN_SIM_SEED_BASE").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    let started = Instant::now();
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (base + t..base + seeds)
                        .step_by(threads as usize)
                        .map(|seed| run(SimConfig::new(seed, v)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    println!(
        "{} variant: {} seeds, {} client operations, {} events in {:.1} s ({:.1} seeds/s)",
        variant_name(v),
        reports.len(),
        ops,
        events,
        elapsed,
        reports.len() as f64 / elapsed
    );
    let failures: Vec<String> = reports.iter().filter(|r| !r.violations.is_empty()).map(|r| fail(r, v)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed; first:\n{}",
        failures.len(),
        reports.len(),
        failures[0]
    );
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
    assert!(cfg.total_ops() >= 200, "issue 3 asks for at least 200 client operations per seed");
    let report = run(cfg);
    assert!(report.ops >= 150, "only {} operations reached the history", report.ops);
}
