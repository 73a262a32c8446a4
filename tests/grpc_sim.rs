//! The production gRPC layer under simulation (`chainrep::sim::grpc`): real replicas, network
//! code, services and client over in-memory pipes, a simulated coordinator, paused time.
//!
//! `cargo test --features sim --test grpc_sim` runs `CHAIN_GRPC_SIM_SEEDS` seeds per variant
//! (default 10); `CHAIN_GRPC_SIM_SEED_BASE` is where they start; `CHAIN_GRPC_SIM_SEED=N` replays
//! one seed and prints its trace.
#![cfg(feature = "sim")]

use std::time::Instant;

use chainrep::core::Variant;
use chainrep::sim::grpc::{run, variant_name, GrpcSimConfig, Report};

#[path = "support/seeds.rs"]
mod seeds;
use seeds::env_u64;

fn fail(report: &Report) -> String {
    format!(
        "SEED={} variant={} failed ({} ms simulated, {} operations):\n{}\nREPRODUCE WITH: CHAIN_GRPC_SIM_SEED={} cargo test --features sim --test grpc_sim {}_variant -- --nocapture",
        report.seed,
        variant_name(report.variant),
        report.simulated_ms,
        report.ops,
        report.violations.join("\n"),
        report.seed,
        variant_name(report.variant),
    )
}

/// A seed that hangs (a task that never lets simulated time advance) would hang the test:
/// each seed runs on a thread of its own, and the wall clock (here only, never inside the
/// simulation) turns a hang into a failure with the seed.
fn run_guarded(cfg: GrpcSimConfig) -> Report {
    let limit = std::time::Duration::from_secs(env_u64("CHAIN_GRPC_SIM_WALL_LIMIT_S").unwrap_or(240));
    let (seed, variant) = (cfg.seed, cfg.variant);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(cfg));
    });
    match rx.recv_timeout(limit) {
        Ok(report) => report,
        Err(e) => Report {
            seed,
            variant,
            trace_hash: 0,
            events: 0,
            simulated_ms: 0,
            ops: 0,
            violations: vec![format!(
                "no result after {limit:?} of wall time ({e}): a task spinning without letting simulated time advance?"
            )],
            coverage: Default::default(),
        },
    }
}

/// Seeds one after another: each is a whole single-threaded runtime, and the test harness
/// already runs the two variants side by side.
fn run_seeds(v: Variant) {
    if let Some(seed) = env_u64("CHAIN_GRPC_SIM_SEED") {
        let mut cfg = GrpcSimConfig::new(seed, v);
        cfg.print_trace = true;
        let report = run_guarded(cfg);
        println!(
            "SEED={seed} trace hash {:016x}, {} operations, {} ms simulated",
            report.trace_hash, report.ops, report.simulated_ms
        );
        for (message, n) in &report.coverage {
            println!("  {n:>6}  {message}");
        }
        assert!(report.violations.is_empty(), "{}", fail(&report));
        return;
    }
    let seeds = env_u64("CHAIN_GRPC_SIM_SEEDS").unwrap_or(10);
    let base = env_u64("CHAIN_GRPC_SIM_SEED_BASE").unwrap_or(0);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut coverage = std::collections::BTreeMap::new();
    let (mut ops, mut simulated) = (0, 0);
    for seed in base..base + seeds {
        let one = Instant::now();
        let report = run_guarded(GrpcSimConfig::new(seed, v));
        println!(
            "{} seed {seed}: {} operations, {} ms simulated, {:.1} s{}",
            variant_name(v),
            report.ops,
            report.simulated_ms,
            one.elapsed().as_secs_f64(),
            if report.violations.is_empty() { "" } else { ", FAILED" }
        );
        ops += report.ops;
        simulated += report.simulated_ms;
        for (message, n) in &report.coverage {
            *coverage.entry(message.clone()).or_insert(0) += n;
        }
        if !report.violations.is_empty() {
            eprintln!("{}", fail(&report));
            failures.push(fail(&report));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} variant: {seeds} seeds, {ops} operations, {:.0} s simulated, in {elapsed:.1} s ({:.2} seeds/s)",
        variant_name(v),
        simulated as f64 / 1000.0,
        seeds as f64 / elapsed
    );
    for (message, n) in &coverage {
        println!("  {n:>7}  {message}");
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed; first:\n{}",
        failures.len(),
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
    let seed = env_u64("CHAIN_GRPC_SIM_SEED_BASE").unwrap_or(0) + 7;
    let a = run_guarded(GrpcSimConfig::new(seed, Variant::Head));
    let b = run_guarded(GrpcSimConfig::new(seed, Variant::Head));
    assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} is not deterministic (REPRODUCE WITH: CHAIN_GRPC_SIM_SEED={seed} cargo test --features sim --test grpc_sim head_variant -- --nocapture, twice)");
    assert_eq!(a.simulated_ms, b.simulated_ms);
    assert_eq!(a.ops, b.ops);
}
