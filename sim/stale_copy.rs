//! Targeted scenario: every session ends at once while one replica still holds an old copy of
//! the state, kept from a session it lost earlier, and that replica comes back at the head.
//!
//! A head that finds no state in the chain adopts the best copy kept from a lost session: the
//! one from the newest view, then the highest xid (`RetainedMark`). The old copy lacks writes
//! the chain acknowledged after its holder dropped out, so adopting it instead of a fresher
//! copy below loses acknowledged writes, which the final reads catch. The nemesis's mass
//! session loss almost never finds a replica with an older copy still waiting to register
//! again, and almost never puts that replica at the head.

use super::world::{Endpoint, World};

const OPS_PER_CLIENT: usize = 8;

impl World {
    pub fn stale_copy_phase(&mut self) {
        let Some((stale, _)) = self.drop_out_keeping_copy("stale copy", OPS_PER_CLIENT) else {
            return;
        };
        let cut = (Endpoint::Replica(stale), Endpoint::Zk);

        self.trace.note(
            self.now(),
            &format!("stale copy: every session ends; replica {stale} registers first and sorts first"),
        );
        self.next_session_sorts_first(stale);
        self.zk_expire_all();
        self.blocked.remove(&cut);
        let now = self.now();
        for p in self.live_synced() {
            if self.dice.scenario.chance(250_000) {
                let t = self.dice.scenario.range(100, 3 * self.cfg.session_timeout / 2);
                self.trace
                    .note(now, &format!("stale copy: replica {p} sees no membership change for {t} ms"));
                self.stall_membership(p, now + t);
            }
        }
        self.add_workload(OPS_PER_CLIENT);
        self.end_scenario(&[], "after every session ended");
    }
}
