//! What a seed of the gRPC tier reports, and the command that replays it.

use std::collections::BTreeMap;

use super::config::GrpcSimConfig;
use super::run_shape::RunShape;
use crate::core::Variant;
use crate::sim::report::{failure_report, variant_name};

#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub variant: Variant,
    /// What the run drew before it started; `None` if it could not start.
    pub shape: Option<RunShape>,
    /// Hash of the trace: nemesis actions, sessions, every client operation and its outcome
    /// in order, the final reads and the final replica states.
    pub trace_hash: u64,
    pub events: u64,
    pub simulated_ms: u64,
    pub ops: usize,
    pub violations: Vec<String>,
    /// The production code's log events over the run, by message (see `coverage`).
    pub coverage: BTreeMap<String, u64>,
    /// Every panic on the seed's thread during the run, with where (`sim::panics`): one that
    /// unwound out of the runtime (the rest of the report then mostly empty) or one tokio
    /// caught in a spawned task (the run went on).
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
        let out = match &self.panic {
            Some(p) => format!(
                "{} panicked: {p}\n({} ms simulated, {} operations)",
                self.seed_line(),
                self.simulated_ms,
                self.ops
            ),
            None => format!(
                "{} failed ({} ms simulated, {} operations):",
                self.seed_line(),
                self.simulated_ms,
                self.ops
            ),
        };
        Some(failure_report(out, &self.violations, &replay_command(self.seed, self.variant)))
    }
}

impl Report {
    pub fn broken(cfg: &GrpcSimConfig, why: String) -> Report {
        Report {
            seed: cfg.seed,
            shape: None,
            variant: cfg.variant,
            trace_hash: 0,
            events: 0,
            simulated_ms: 0,
            ops: 0,
            violations: vec![why],
            coverage: Default::default(),
            panic: None,
        }
    }
}

/// The command that replays one seed of `tests/grpc_sim.rs` with its trace.
pub fn replay_command(seed: u64, variant: Variant) -> String {
    format!(
        "CHAIN_GRPC_SIM_SEED={seed} cargo test --features sim --test grpc_sim {}_variant -- --nocapture",
        variant_name(variant)
    )
}
