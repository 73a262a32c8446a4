//! Targeted scenario: every session ends at once while one replica still holds an old copy of
//! the state, kept from a session it lost earlier, and that replica comes back at the head.
//!
//! A head that finds no state in the chain adopts the best copy kept from a lost session: the
//! one from the newest view, then the highest xid (`RetainedMark`). The old copy lacks writes
//! the chain acknowledged after its holder dropped out, so adopting it instead of a fresher
//! copy below loses acknowledged writes, which the final reads catch. The nemesis's mass
//! session loss almost never finds a replica with an older copy still waiting to register
//! again, and almost never puts that replica at the head.

use crate::sim::events::Endpoint;
use crate::sim::scenario;
use crate::sim::world::World;

const OPS_PER_CLIENT: usize = 8;

pub fn run(w: &mut World) {
    let Some((stale, _)) = scenario::drop_out_keeping_copy(w, "stale copy", OPS_PER_CLIENT) else {
        return;
    };
    let cut = (Endpoint::Replica(stale), Endpoint::Zk);

    w.note(&format!(
        "stale copy: every session ends; replica {stale} registers first and sorts first"
    ));
    w.next_session_sorts_first(stale);
    w.zk_expire_all();
    w.net.heal(cut.0, cut.1);
    let now = w.now();
    for p in w.live_synced() {
        if w.dice.scenario.chance(250_000) {
            let t = w.dice.scenario.range(100, 3 * w.cfg().session_timeout / 2);
            w.note_at(now, &format!("stale copy: replica {p} sees no membership change for {t} ms"));
            w.stall_membership(p, now + t);
        }
    }
    w.add_workload(OPS_PER_CLIENT);
    scenario::end(w, &[], "after every session ended");
}
