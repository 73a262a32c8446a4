//! Every live replica's state is the chain's sequence applied up to its last xid: each
//! replica's history is a prefix of its predecessor's, and no two heads issued different
//! updates under one xid that both survive.

use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

/// Adds what it finds to `found`.
pub fn check(w: &WorldView, found: &mut Vec<Violation>) {
    for p in w.live_synced() {
        let Some(r) = w.procs[p].replica.as_ref() else { continue };
        let last = r.last_applied();
        match w.canon.state_at(last) {
            Some(expected) if expected == r.store() => {}
            Some(expected) => {
                let msg = format!(
                    "replica {p} at xid {last} holds {:?}, the chain's sequence gives {:?}",
                    r.store(),
                    expected
                );
                found.push(Violation::new(Invariant::ChainPrefix, msg));
            }
            None if last == 0 => {}
            None => found.push(Violation::new(
                Invariant::ChainPrefix,
                format!("replica {p} applied xid {last}, beyond any xid a head issued ({})", w.canon.len()),
            )),
        }
    }
}
