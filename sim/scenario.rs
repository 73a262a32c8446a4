//! What every targeted scenario does around its own script: it starts from a full chain that
//! holds the state, writes keys of its own, and ends with the workload finished, the chain
//! settled and the settled-chain check.

use super::world::{Endpoint, Phase, Status, World};
use crate::core::Millis;

/// How long a scenario's workload may take before it counts as stuck.
pub const WORKLOAD_LIMIT_MS: Millis = 30_000;

impl World {
    /// Own keys, every crashed replica restarted as a new session, at least `min_members` in
    /// the chain, and the chain settled.
    pub fn begin_scenario(&mut self, min_members: usize) {
        self.phase = Phase::Scenario;
        self.fresh_keys();
        for p in 0..self.procs.len() {
            if self.procs[p].status == Status::Crashed {
                self.boot(p);
            }
        }
        for _ in self.zk.members().len()..min_members {
            self.add_replica();
        }
        self.settle(self.cfg.settle_time);
    }

    /// From a chain of at least two holders, one (returned with all the holders) is cut from
    /// ZooKeeper until its session ends and keeps its copy while it cannot register again;
    /// the chain then acknowledges `ops_per_client` more writes per client without it. `None`
    /// if there were too few holders or a check failed.
    pub fn drop_out_keeping_copy(&mut self, scenario: &str, ops_per_client: usize) -> Option<(usize, Vec<usize>)> {
        self.begin_scenario(2);
        let holders = self.live_synced();
        if holders.len() < 2 {
            return None;
        }
        let stale = self.dice.scenario.pick(&holders)?;
        self.trace
            .note(self.now(), &format!("{scenario}: cut replica {stale} from ZooKeeper"));
        self.blocked.insert((Endpoint::Replica(stale), Endpoint::Zk));
        self.run_until(self.now() + self.cfg.session_timeout + 200);
        // Its ZooKeeper client hears "session expired" on reconnecting, and then cannot open a
        // new session (the connection drops again): the replica keeps its copy and waits to
        // register, while the chain goes on without it.
        self.with_replica(stale, |r| r.on_session_lost());
        let start = self.now();
        self.add_workload(ops_per_client);
        self.finish_workload(start + WORKLOAD_LIMIT_MS, "without the replica that dropped out");
        self.violations.is_empty().then_some((stale, holders))
    }

    /// The replicas in `listening` act on ZooKeeper's listings again, from the current one on;
    /// then the workload must finish and the chain settle.
    pub fn end_scenario(&mut self, listening: &[usize], what: &str) {
        let now = self.now();
        for &p in listening {
            self.stall_membership(p, now);
            let listing = self.listing();
            self.deliver_listing(p, listing);
        }
        self.finish_workload(now + WORKLOAD_LIMIT_MS, what);
        self.close_scenario();
    }

    /// The scenario's faults are over: the chain must settle.
    pub fn close_scenario(&mut self) {
        self.phase = Phase::Healed { at: self.now() };
        self.settle(self.cfg.settle_time);
        if self.violations.is_empty() {
            self.check_settled();
        }
    }
}
