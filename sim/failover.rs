//! After the quiet phase: the tail crashes while clients keep working, on a network that
//! otherwise behaves. Every operation must still complete with a definite answer (the client
//! code counts an unknown outcome after settling as a liveness failure): the replica that
//! becomes tail acknowledges what its old successor never confirmed, to the head (head variant)
//! or to the waiting clients (tail variant, `cxidProcessed`). Under the fault phase's drops a
//! lost callback looks the same as one never sent, so only here can the checks tell them apart.

use super::world::World;
use crate::core::Millis;

const OPS_PER_CLIENT: usize = 10;
/// Let the workload get going so updates are in flight when the tail goes.
const CRASH_AFTER_MS: Millis = 60;
const WORKLOAD_LIMIT_MS: Millis = 20_000;

impl World {
    pub fn failover_phase(&mut self) {
        let members = self.zk.members();
        // With tiny bounds a busy head refuses writes until the tail's progress reaches it, and
        // with the second the crash takes to notice, an unlucky client can run out of time
        // without anything being wrong.
        if members.len() < 2 || self.tiny_bounds {
            return;
        }
        let Some(tail) = members.last().and_then(|m| self.proc_of_addr(&m.addr)) else {
            return;
        };
        let start = self.now();
        for c in 0..self.clients.len() {
            self.add_client_ops(c, OPS_PER_CLIENT);
        }
        self.run_until(start + CRASH_AFTER_MS);
        if !self.violations.is_empty() {
            return;
        }
        self.trace.note(self.now(), &format!("failover: crash the tail, replica {tail}"));
        self.crash(tail);
        self.run_until(start + WORKLOAD_LIMIT_MS);
        if !self.clients.iter().all(|c| c.is_done()) && self.violations.is_empty() {
            self.violations.push(format!(
                "liveness: the workload across the tail's crash did not finish within {WORKLOAD_LIMIT_MS} ms"
            ));
        }
        let settled = self.now() + self.cfg.settle_time;
        self.run_until(settled);
    }
}
