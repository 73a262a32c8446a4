//! Once faults stop and the chain settles, the tail serves a final read of every key, and
//! those reads join the history: the linearizability check then proves they agree with every
//! acknowledged write (and with any subset of the writes whose outcome is unknown).

use crate::sim::client::key_name;
use crate::sim::linearizability::{Op, OpKind};
use crate::sim::world::World;

pub fn check(w: &mut World) {
    let Some(tail) = w.zk.members().last().cloned() else {
        w.violations
            .push("no lost writes: no replica is left in the chain for the final read".into());
        return;
    };
    let Some(proc) = w.proc_of_addr(&tail.addr) else { return };
    let now = w.now();
    let keys: Vec<String> = (0..w.key_generations)
        .flat_map(|g| (0..w.cfg.keys).map(move |k| key_name(g, k)))
        .collect();
    for key in keys {
        match w.procs[proc].replica.as_ref().map(|r| r.client_read(&key)) {
            Some(Ok(v)) => w.history.push(Op {
                key,
                kind: OpKind::Get(v),
                invoked: now,
                returned: Some(now),
            }),
            other => {
                w.violations.push(format!(
                    "liveness: the settled tail (replica {proc}) refused the final read of {key}: {other:?}"
                ));
                return;
            }
        }
    }
}
