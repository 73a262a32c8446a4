//! What a seed of the gRPC tier draws before its run starts that shapes the whole run: the
//! size of the chain, which initial replica speaks only classic calls, the nemesis's
//! repertoire, the bounds on the replicas' queues. Failure reports and single-seed replays
//! print it beside the seed, as the core tier does (`sim::run_shape`).

use std::fmt;

use super::dice::Streams;
use super::faults::{Fault, FAULTS};

#[derive(Clone, Debug)]
pub struct RunShape {
    /// Replicas at the start.
    pub initial_replicas: usize,
    /// The initial replica that serves and sends only the classic calls, if there is one.
    pub classic_replica: Option<usize>,
    pub faults: bool,
    /// The nemesis's repertoire with the faults' weights: all of `FAULTS`, or (`swarm`) a
    /// subset of them.
    pub repertoire: Vec<(Fault, u64)>,
    pub swarm: bool,
    /// The replicas' queue bounds are smaller than production's (see `RunShape::draw`).
    pub small_bounds: bool,
    pub max_sent: usize,
    pub max_reorder: usize,
    pub max_pending_writes: usize,
}

impl RunShape {
    /// `max_initial` replicas at most, the `classic` one speaking only classic calls if there are
    /// that many; `faults`: whether the nemesis runs at all.
    pub fn draw(max_initial: usize, classic: usize, faults: bool, dice: &Streams) -> RunShape {
        let core = crate::core::Config::default();
        // Some runs start smaller, so one- and two-replica chains run too; the nemesis adds
        // replicas as the run goes.
        let initial_replicas = dice.shape.range(1, max_initial as u64 + 1) as usize;
        let classic_replica = Some(classic).filter(|&c| c < initial_replicas);
        // Swarm testing: half the runs give the nemesis only some of its faults, so what one
        // kind of fault does when repeated is not drowned by the others.
        let swarm = dice.shape.chance(500_000);
        let mut repertoire = FAULTS.to_vec();
        if swarm {
            repertoire.retain(|_| dice.shape.chance(400_000));
            if repertoire.is_empty() {
                let one = dice.shape.weighted(&FAULTS).unwrap_or(Fault::Crash);
                repertoire.extend(FAULTS.iter().copied().filter(|&(f, _)| f == one));
            }
        }
        // A quarter of the runs keep few updates in sent lists and reorder windows, so the
        // code at those limits runs through the real stream and services too: a middle
        // dropping the oldest of its sent list, a replica refusing an update past a full
        // window (both fall back to state transfers). The pending-write bound stays: a head
        // at it refuses clients as overloaded, which ends their operations for good.
        let small_bounds = dice.shape.chance(250_000);
        let (max_sent, max_reorder) = if small_bounds {
            (dice.shape.range(8, 65) as usize, dice.shape.range(4, 33) as usize)
        } else {
            (core.max_sent, core.max_reorder)
        };
        RunShape {
            initial_replicas,
            classic_replica,
            faults,
            repertoire,
            swarm,
            small_bounds,
            max_sent,
            max_reorder,
            max_pending_writes: core.max_pending_writes,
        }
    }
}

impl fmt::Display for RunShape {
    /// `replicas=3 classic=1 faults=swarm(crash,slow-link) bounds=small(pending=20000,sent=12,reorder=5)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replicas={} classic=", self.initial_replicas)?;
        match self.classic_replica {
            Some(c) => write!(f, "{c}")?,
            None => f.write_str("none")?,
        }
        f.write_str(" faults=")?;
        match (self.swarm, self.faults) {
            (_, false) => f.write_str("none")?,
            (false, true) => f.write_str("all")?,
            (true, true) => {
                let names: Vec<&str> = self.repertoire.iter().map(|(f, _)| f.name()).collect();
                write!(f, "swarm({})", names.join(","))?;
            }
        }
        write!(
            f,
            " bounds={}(pending={},sent={},reorder={})",
            if self.small_bounds { "small" } else { "normal" },
            self.max_pending_writes,
            self.max_sent,
            self.max_reorder
        )
    }
}
