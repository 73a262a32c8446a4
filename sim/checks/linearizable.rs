//! The clients' history (with the final reads) is linearizable for the counter model.

use crate::sim::linearizability;
use crate::sim::view::WorldView;
use crate::sim::violation::{Invariant, Violation};

pub fn check(w: &WorldView) -> Option<Violation> {
    linearizability::check(w.history).err().map(|v| {
        let mut ops = v.ops.clone();
        ops.sort_by_key(|o| o.invoked);
        let listing: Vec<String> = ops
            .iter()
            .map(|o| format!("  {:?} invoked {} returned {:?}", o.kind, o.invoked, o.returned))
            .collect();
        Violation::new(
            Invariant::Linearizable,
            format!("key {} has no linearization:\n{}", v.key, listing.join("\n")),
        )
    })
}
