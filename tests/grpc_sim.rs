//! The production gRPC layer under simulation (`chainrep::sim::grpc`): real replicas, network
//! code, services and client over in-memory pipes, a simulated coordinator, paused time.
//!
//! `cargo test --features sim --test grpc_sim` runs `CHAIN_GRPC_SIM_SEEDS` seeds per variant
//! (default 10); `CHAIN_GRPC_SIM_SEED_BASE` is where they start; `CHAIN_GRPC_SIM_SEED=N` replays
//! one seed and prints its trace.
#![cfg(feature = "sim")]

use std::time::{Duration, Instant};

use chainrep::core::Variant;
use chainrep::sim::grpc::{run_seed_catching, variant_name, DeliberatePanic, GrpcSimConfig, Report};
use chainrep::sim::summarize_failures;

#[path = "support/seeds.rs"]
mod seeds;
use seeds::env_u64;

/// A seed that hangs (a task that never lets simulated time advance) would hang the test:
/// each seed runs on a thread of its own, and the wall clock (here only, never inside the
/// simulation) turns a hang into a failure with the seed. A panic is caught in the seed's
/// thread and reported with the seed too.
fn run_guarded(cfg: GrpcSimConfig) -> Report {
    let limit = Duration::from_secs(env_u64("CHAIN_GRPC_SIM_WALL_LIMIT_S").unwrap_or(240));
    let (seed, variant) = (cfg.seed, cfg.variant);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_seed_catching(cfg));
    });
    match rx.recv_timeout(limit) {
        Ok(report) => report,
        Err(e) => Report {
            seed,
            variant,
            shape: None,
            trace_hash: 0,
            events: 0,
            simulated_ms: 0,
            ops: 0,
            violations: vec![format!(
                "no result after {limit:?} of wall time ({e}): a task spinning without letting simulated time advance?"
            )],
            coverage: Default::default(),
            panic: None,
        },
    }
}

/// Replays one seed with its trace; the failure report if it fails (a panic included).
fn replay(cfg: GrpcSimConfig) -> Result<(), String> {
    let report = run_guarded(cfg);
    println!(
        "{} trace hash {:016x}, {} operations, {} ms simulated",
        report.seed_line(),
        report.trace_hash,
        report.ops,
        report.simulated_ms
    );
    for (message, n) in &report.coverage {
        println!("  {n:>6}  {message}");
    }
    report.failure().map_or(Ok(()), Err)
}

/// Seeds `base..base + seeds` one after another, each made by `config`: each is a whole
/// single-threaded runtime, and the test harness already runs the two variants side by side.
/// Prints a line per seed and every failure as it comes.
fn run_many(base: u64, seeds: u64, config: impl Fn(u64) -> GrpcSimConfig) -> Vec<Report> {
    let mut reports = Vec::new();
    for seed in base..base + seeds {
        let one = Instant::now();
        let cfg = config(seed);
        let v = cfg.variant;
        let report = run_guarded(cfg);
        println!(
            "{} seed {seed}: {} operations, {} ms simulated, {:.1} s{}",
            variant_name(v),
            report.ops,
            report.simulated_ms,
            one.elapsed().as_secs_f64(),
            if report.failed() { ", FAILED" } else { "" }
        );
        if let Some(failure) = report.failure() {
            eprintln!("{failure}");
        }
        reports.push(report);
    }
    reports
}

/// A summary naming the failed seeds then the first report in full; `None` if all passed.
fn failures(reports: &[Report]) -> Option<String> {
    let failures: Vec<String> = reports.iter().filter_map(Report::failure).collect();
    let failed: Vec<u64> = reports.iter().filter(|r| r.failed()).map(|r| r.seed).collect();
    summarize_failures(&failures, &failed, reports.len())
}

fn run_seeds(v: Variant) {
    if let Some(seed) = env_u64("CHAIN_GRPC_SIM_SEED") {
        let mut cfg = GrpcSimConfig::new(seed, v);
        cfg.print_trace = true;
        if let Err(failure) = replay(cfg) {
            panic!("{failure}");
        }
        return;
    }
    let seeds = env_u64("CHAIN_GRPC_SIM_SEEDS").unwrap_or(10);
    let base = env_u64("CHAIN_GRPC_SIM_SEED_BASE").unwrap_or(0);
    let started = Instant::now();
    let reports = run_many(base, seeds, |seed| GrpcSimConfig::new(seed, v));
    let elapsed = started.elapsed().as_secs_f64();
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let simulated: u64 = reports.iter().map(|r| r.simulated_ms).sum();
    let mut coverage = std::collections::BTreeMap::new();
    for report in &reports {
        for (message, n) in &report.coverage {
            *coverage.entry(message.clone()).or_insert(0) += n;
        }
    }
    println!(
        "{} variant: {seeds} seeds, {ops} operations, {:.0} s simulated, in {elapsed:.1} s ({:.2} seeds/s)",
        variant_name(v),
        simulated as f64 / 1000.0,
        seeds as f64 / elapsed
    );
    for (message, n) in &coverage {
        println!("  {n:>7}  {message}");
    }
    if let Some(summary) = failures(&reports) {
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
fn same_seed_same_run() {
    let seed = env_u64("CHAIN_GRPC_SIM_SEED_BASE").unwrap_or(0) + 7;
    let a = run_guarded(GrpcSimConfig::new(seed, Variant::Head));
    let b = run_guarded(GrpcSimConfig::new(seed, Variant::Head));
    assert!(!a.failed(), "{}", a.failure().unwrap_or_default());
    assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} is not deterministic (REPRODUCE WITH: CHAIN_GRPC_SIM_SEED={seed} cargo test --features sim --test grpc_sim head_variant -- --nocapture, twice)");
    assert_eq!(a.simulated_ms, b.simulated_ms);
    assert_eq!(a.ops, b.ops);
}

/// A panic is reported with its seed, message, location and replay command, through the same
/// code as the real runs: one in a spawned task (which tokio catches, and which would otherwise
/// vanish into a `JoinError`) and one that unwinds out of the runtime; the other seeds go on.
#[test]
fn a_panicking_seed_reports_its_seed() {
    let panic_of = |seed: u64| match seed % 2 {
        0 => DeliberatePanic::Task(Duration::from_millis(3_000)),
        _ => DeliberatePanic::Main(Duration::from_millis(2_000)),
    };
    let reports = run_many(200, 3, |seed| {
        let mut cfg = GrpcSimConfig::new(seed, if seed == 201 { Variant::Tail } else { Variant::Head });
        cfg.panic = Some(panic_of(seed));
        cfg
    });
    let summary = failures(&reports).expect("the panics fail the seeds");
    println!("{summary}");
    assert!(
        summary.starts_with("3 of 3 seeds failed (seeds 200, 201, 202); first:\nSEED=200 "),
        "{summary}"
    );
    for r in &reports {
        let f = r.failure().expect("a panicking seed fails");
        let (variant, message) = match panic_of(r.seed) {
            DeliberatePanic::Task(_) => (
                "head",
                "deliberate panic in a task at 3000 ms (GrpcSimConfig::panic) (at sim/grpc/run.rs:",
            ),
            DeliberatePanic::Main(_) => (
                "tail",
                "deliberate panic in the main future at 2000 ms (GrpcSimConfig::panic) (at sim/grpc/run.rs:",
            ),
        };
        let seed_line = r.seed_line();
        assert!(
            seed_line.starts_with(&format!("SEED={} variant={variant} replicas=", r.seed)),
            "{seed_line}"
        );
        for want in ["classic=", "faults=", "bounds="] {
            assert!(seed_line.contains(want), "missing {want:?} in {seed_line:?}");
        }
        for want in [
            format!("{seed_line} panicked: {message}"),
            format!(
                "REPRODUCE WITH: CHAIN_GRPC_SIM_SEED={} cargo test --features sim --test grpc_sim {variant}_variant -- --nocapture",
                r.seed
            ),
        ] {
            assert!(f.contains(&want), "missing {want:?} in:\n{f}");
        }
    }
    // The task's panic did not stop the run: the seed played to the end.
    assert!(
        reports[0].ops > 100 && reports[0].simulated_ms > 10_000,
        "{:?}",
        reports[0].failure()
    );
    // The main future's stopped it, and the report says where the run was.
    assert_eq!(reports[1].simulated_ms, 2_000);
    assert!(reports[1]
        .failure()
        .is_some_and(|f| f.contains("coordinator members (chain order)")));
    // The single-seed replay path too.
    let mut cfg = GrpcSimConfig::new(7, Variant::Head);
    cfg.panic = Some(DeliberatePanic::Main(Duration::from_millis(500)));
    let f = replay(cfg).expect_err("seed 7 panics at 500 ms");
    assert!(f.starts_with("SEED=7 variant=head replicas="), "{f}");
    assert!(f.contains(" panicked: deliberate panic in the main future at 500 ms"), "{f}");
    assert!(f.contains("REPRODUCE WITH: CHAIN_GRPC_SIM_SEED=7 "), "{f}");
}
