//! While a gray failure persists (a broken link between live replicas, a replica cut from its
//! peers), the chain routes around it: from `bound` after the fault began until it heals,
//! clients' writes are acknowledged with no gap longer than `max_gap`. The other checks judge
//! liveness only once faults are over; this one judges it while the fault lasts.

use crate::core::Millis;
use crate::sim::linearizability::{Op, OpKind};
use crate::sim::violation::{Invariant, Violation};

/// `what` names the fault for the report.
pub fn check(history: &[Op], what: &str, began: Millis, healed: Millis, bound: Millis, max_gap: Millis) -> Option<Violation> {
    let from = began + bound;
    if healed <= from {
        return None;
    }
    let mut acks: Vec<Millis> = history
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Inc(_) | OpKind::Del))
        .filter_map(|op| op.returned)
        .filter(|&t| (from..=healed).contains(&t))
        .collect();
    acks.sort_unstable();
    let mut last = from;
    let mut worst = (0, from);
    for &t in acks.iter().chain(std::iter::once(&healed)) {
        if t - last > worst.0 {
            worst = (t - last, last);
        }
        last = t;
    }
    (worst.0 > max_gap).then(|| {
        Violation::new(
            Invariant::WritesDuringFault,
            format!(
                "{what} from {began} ms to {healed} ms: no write acknowledged from {} ms for {} ms ({} acknowledged after {from} ms; the chain must route around it within {bound} ms and then not stall for over {max_gap} ms)",
                worst.1,
                worst.0,
                acks.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_done(at: Millis) -> Op {
        Op {
            key: "k".into(),
            kind: OpKind::Inc(1),
            invoked: at.saturating_sub(5),
            returned: Some(at),
        }
    }

    #[test]
    fn gaps_are_measured_from_the_bound_to_the_heal() {
        let ok: Vec<Op> = (0..20).map(|i| write_done(4_000 + i * 500)).collect();
        assert_eq!(check(&ok, "cut", 0, 13_000, 4_000, 2_000), None);
        // Nothing after 9.5 s: the last 3.5 s before the heal are an outage.
        assert!(check(&ok[..12], "cut", 0, 13_000, 4_000, 2_000).is_some());
        // Nothing at all in the window.
        assert!(check(&[], "cut", 0, 13_000, 4_000, 2_000).is_some());
        // Reads and writes of unknown outcome are not acknowledgements.
        let reads: Vec<Op> = (0..20)
            .map(|i| Op {
                kind: OpKind::Get(0),
                ..write_done(4_000 + i * 500)
            })
            .collect();
        assert!(check(&reads, "cut", 0, 13_000, 4_000, 2_000).is_some());
        // A fault healed before the bound is not judged.
        assert_eq!(check(&[], "cut", 0, 3_000, 4_000, 2_000), None);
    }
}
