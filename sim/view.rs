//! What the checks see of the world: read-only, and only what they judge by.

use crate::core::Millis;
use crate::sim::canon::Canon;
use crate::sim::config::SimConfig;
use crate::sim::linearizability::Op;
use crate::sim::procs::{Proc, Status};
use crate::sim::zk::ZkModel;

#[derive(Clone, Copy)]
pub struct WorldView<'a> {
    /// The run's configuration, with the bounds it drew.
    pub cfg: &'a SimConfig,
    pub procs: &'a [Proc],
    pub zk: &'a ZkModel,
    /// The chain's write sequence as the heads issued it.
    pub canon: &'a Canon,
    /// Every client operation that ended, in the order they ended.
    pub history: &'a [Op],
    pub now: Millis,
    /// Clients have used keys of this many generations (see `World::fresh_keys`).
    pub key_generations: usize,
}

impl WorldView<'_> {
    pub fn proc_of_addr(&self, addr: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.addr == addr)
    }

    /// Replicas that are up, in ZooKeeper's membership under their current session, and holds_state.
    pub fn live_synced(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&p| {
                let proc = &self.procs[p];
                proc.status == Status::Up
                    && proc
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.holds_state() && r.session_id().is_some_and(|s| self.zk.is_member(s)))
            })
            .collect()
    }

    /// Every replica's own account of itself and ZooKeeper's membership, for failure reports.
    pub fn describe_all(&self) -> String {
        let mut out = format!("at {} ms, ZooKeeper members (chain order):", self.now);
        for m in self.zk.members() {
            out.push_str(&format!(" {:x}@{}", m.id, m.addr));
        }
        for (i, p) in self.procs.iter().enumerate() {
            out.push_str(&format!(
                "\n  replica {i} ({}, incarnation {}, {:?}): ",
                p.addr, p.incarnation, p.status
            ));
            if let Some(r) = &p.replica {
                out.push_str(&format!(
                    "{:?} view={:?}",
                    r.describe(),
                    r.view().members().iter().map(|m| format!("{:x}", m.id)).collect::<Vec<_>>()
                ));
            }
        }
        out
    }
}
