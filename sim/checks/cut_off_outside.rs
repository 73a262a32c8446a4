//! A replica cut off from every other replica (but not from ZooKeeper) ends up outside the
//! chain, not the others: in a chain of three or more, by the time the cut heals it is no
//! member. Whatever it is (head, middle or tail), the replicas that cannot reach it report it:
//! its predecessor, or, for a head, the successor watching it after its first eviction
//! (docs/gray-failures.md). A chain of two cannot tell which side of a broken link is at fault.

use crate::sim::violation::{Invariant, Violation};

/// `members` are the processes in the chain as the cut heals, `chain_before` its size when
/// the cut began.
pub fn check(isolated: usize, chain_before: usize, members: &[usize], what: &str) -> Option<Violation> {
    (chain_before >= 3 && members.contains(&isolated)).then(|| {
        Violation::new(
            Invariant::CutOffOutside,
            format!("{what}: it is still in the chain {members:?} when the cut heals"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_chain_of_three_or_more_must_leave_the_isolated_replica_out() {
        assert!(check(0, 3, &[0, 2], "cut").is_some());
        assert_eq!(check(0, 3, &[1, 2], "cut"), None);
        assert_eq!(check(0, 2, &[0], "cut"), None);
    }
}
