//! Once faults stop and the chain settles, the tail serves a final read of every key, and
//! those reads join the history: the linearizability check then proves they agree with every
//! acknowledged write (and with any subset of the writes whose outcome is unknown).

use crate::sim::client::key_name;
use crate::sim::linearizability::{Op, OpKind};
use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

/// The final reads at the settled tail, to join the history, and why the rest are missing if
/// any are.
pub fn final_reads(w: &WorldView) -> (Vec<Op>, Option<Violation>) {
    let Some(tail) = w.zk.members().last().cloned() else {
        let missing = Violation::new(Invariant::NoLostWrites, "no replica is left in the chain for the final read");
        return (Vec::new(), Some(missing));
    };
    let Some(proc) = w.proc_of_addr(&tail.addr) else {
        return (Vec::new(), None);
    };
    let now = w.now;
    let keys = (0..w.key_generations).flat_map(|g| (0..w.cfg.keys).map(move |k| key_name(g, k)));
    let mut reads = Vec::new();
    for key in keys {
        match w.procs[proc].replica.as_ref().map(|r| r.client_read(&key)) {
            Some(Ok(v)) => reads.push(Op {
                key,
                kind: OpKind::Get(v),
                invoked: now,
                returned: Some(now),
            }),
            other => {
                let refused = Violation::liveness(format!(
                    "the settled tail (replica {proc}) refused the final read of {key}: {other:?}"
                ));
                return (reads, Some(refused));
            }
        }
    }
    (reads, None)
}
