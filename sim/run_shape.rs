//! What a seed draws before its run starts that shapes the whole run: the size of the chain,
//! the nemesis's repertoire, the bounds on the replicas' queues, the targeted scenario. Failure
//! reports and single-seed replays print it beside the seed.

use std::fmt;

use super::faults::Fault;

/// The targeted scenario a run plays after its failover phase (`sim::play`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    NewHead,
    StaleCopy,
    FlappingPredecessor,
    LingeringHead,
    UnseenHolder,
    GrayLink,
}

/// The scenarios and their weights (one per run, drawn like the nemesis's faults).
pub const SCENARIOS: [(Scenario, u64); 6] = [
    (Scenario::NewHead, 4),
    (Scenario::StaleCopy, 2),
    (Scenario::FlappingPredecessor, 2),
    (Scenario::LingeringHead, 2),
    (Scenario::UnseenHolder, 1),
    (Scenario::GrayLink, 3),
];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NewHead => "new-head",
            Scenario::StaleCopy => "stale-copy",
            Scenario::FlappingPredecessor => "flapping-predecessor",
            Scenario::LingeringHead => "lingering-head",
            Scenario::UnseenHolder => "unseen-holder",
            Scenario::GrayLink => "gray-link",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunShape {
    /// Replicas at the start.
    pub initial_replicas: usize,
    /// The nemesis's faults, if swarm testing gave it only these; `None`: all of them. Empty
    /// when the run has no faults at all.
    pub swarm: Option<Vec<Fault>>,
    pub faults: bool,
    /// The run uses tiny bounds on the queues below (see `World::new`).
    pub tiny_bounds: bool,
    pub max_pending_writes: usize,
    pub max_sent: usize,
    pub max_reorder: usize,
    pub scenario: Scenario,
    /// Durable runs: the disk faults in the repertoire (`faults::DISK_FAULTS`).
    pub disk_faults: Option<Vec<Fault>>,
    /// Some replicas send the chain's messages without naming the session (`Proc::unnamed`).
    pub classic_senders: bool,
}

impl fmt::Display for RunShape {
    /// `replicas=3 faults=swarm(crash,cut-zk) bounds=tiny(pending=2,sent=5,reorder=1) scenario=new-head`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replicas={} faults=", self.initial_replicas)?;
        match (&self.swarm, self.faults) {
            (_, false) => f.write_str("none")?,
            (None, true) => f.write_str("all")?,
            (Some(chosen), true) => {
                let names: Vec<&str> = chosen.iter().map(|f| f.name()).collect();
                write!(f, "swarm({})", names.join(","))?;
            }
        }
        write!(
            f,
            " bounds={}(pending={},sent={},reorder={}) scenario={}",
            if self.tiny_bounds { "tiny" } else { "normal" },
            self.max_pending_writes,
            self.max_sent,
            self.max_reorder,
            self.scenario.name()
        )?;
        if self.classic_senders {
            f.write_str(" classic-senders")?;
        }
        if let Some(disk) = &self.disk_faults {
            let names: Vec<&str> = disk.iter().map(|f| f.name()).collect();
            write!(
                f,
                " durable(disk faults: {})",
                if names.is_empty() { "none".to_string() } else { names.join(",") }
            )?;
        }
        Ok(())
    }
}
