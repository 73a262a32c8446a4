//! What a failed check reports: which invariant, and what broke it.

use std::fmt;

/// One invariant per file of `sim/checks/`, and the two judged where the run sees them happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invariant {
    AppliedGrows,
    Backoff,
    BoundedQueues,
    ChainPrefix,
    Cost,
    ForeignInput,
    GapRefusals,
    HeldClients,
    Linearizable,
    NoLostWrites,
    ProgressPacing,
    PulledState,
    Settled,
    TransferCauses,
    ValidKeys,
    WritesDuringFault,
    CutOffOutside,
    /// Durable runs: the log takes what the replica asks and stays within its bounds.
    Disk,
    /// Operations that must complete did (the clients, the workloads, the final reads).
    Liveness,
    /// The heads issue one write sequence (`sim::canon`).
    ChainSequence,
}

impl Invariant {
    /// How reports have always named it.
    pub fn label(self) -> &'static str {
        match self {
            Invariant::AppliedGrows => "applied history",
            Invariant::Backoff => "backoff",
            Invariant::BoundedQueues => "bounded queues",
            Invariant::ChainPrefix => "chain prefix",
            Invariant::Cost => "cost",
            Invariant::ForeignInput => "foreign input",
            Invariant::GapRefusals => "gap refusal",
            Invariant::HeldClients => "held clients",
            Invariant::Linearizable => "linearizability",
            Invariant::NoLostWrites => "no lost writes",
            Invariant::ProgressPacing => "pacing",
            Invariant::PulledState => "pulled state",
            Invariant::Settled => "settled chain",
            Invariant::TransferCauses => "transfer cause",
            Invariant::ValidKeys => "valid keys",
            Invariant::WritesDuringFault => "writes during a gray failure",
            Invariant::CutOffOutside => "cut-off replica outside",
            Invariant::Disk => "disk",
            Invariant::Liveness => "liveness",
            Invariant::ChainSequence => "chain",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: Invariant, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            detail: detail.into(),
        }
    }

    pub fn liveness(detail: impl Into<String>) -> Self {
        Violation::new(Invariant::Liveness, detail)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant.label(), self.detail)
    }
}
