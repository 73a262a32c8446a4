//! What a run of either tier reports: its outcome, the failure report that names the seed and
//! the command replaying it, and a summary of many seeds.

use crate::core::{Millis, Variant};
use crate::sim::run_shape::RunShape;

#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub variant: Variant,
    /// The run's replicas kept their state on simulated disks (`SimConfig::durable`).
    pub durable: bool,
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
        Some(failure_report(
            head,
            &self.violations,
            &replay_command(self.seed, self.variant, self.durable),
        ))
    }
}

/// A seed's failure report, in both tiers: its first line, every violation, the replay command.
pub fn failure_report(head: String, violations: &[String], replay: &str) -> String {
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
pub fn replay_command(seed: u64, variant: Variant, durable: bool) -> String {
    format!(
        "CHAIN_SIM_SEED={seed} cargo test --features sim --test sim {}{}_variant -- --exact --nocapture",
        if durable { "durable_" } else { "" },
        variant_name(variant)
    )
}

/// Which variant's name goes in reports.
pub fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Head => "head",
        Variant::Tail => "tail",
    }
}
