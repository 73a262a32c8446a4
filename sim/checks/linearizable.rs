//! The clients' history (with the final reads) is linearizable for the counter model.

use crate::sim::linearizability;
use crate::sim::world::World;

pub fn check(w: &mut World) {
    if let Err(v) = linearizability::check(&w.history) {
        let mut ops = v.ops.clone();
        ops.sort_by_key(|o| o.invoked);
        let listing: Vec<String> = ops
            .iter()
            .map(|o| format!("  {:?} invoked {} returned {:?}", o.kind, o.invoked, o.returned))
            .collect();
        w.violations.push(format!(
            "linearizability: key {} has no linearization:\n{}",
            v.key,
            listing.join("\n")
        ));
    }
}
