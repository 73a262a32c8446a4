//! Linearizability of a history of counter operations, one key at a time (Wing & Gong's search
//! with Lowe's memoisation of visited configurations).
//!
//! Operations on different keys commute, so a history is linearizable iff each key's
//! sub-history is; checking keys separately keeps the search small.
//!
//! A write whose outcome is unknown (timed out) may have taken effect at any moment after it
//! was invoked, or never: it is optional and has no return time. A read that timed out tells
//! nothing and is left out by the caller. A request that was definitely refused is left out.

use std::collections::{BTreeMap, HashSet};

/// What a client asked, and for reads, what it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Inc(i32),
    Del,
    Get(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: String,
    pub kind: OpKind,
    pub invoked: u64,
    /// `None`: the outcome is unknown (a write that timed out).
    pub returned: Option<u64>,
}

/// Why a key's history cannot be linearized, for the failure report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub ops: Vec<Op>,
}

/// Checks every key; the first key whose history has no linearization is reported.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            return Err(Violation { key: key.to_string(), ops });
        }
    }
    Ok(())
}

/// Bit set over operation indices; histories per key are small enough for a Vec<u64>.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// Depth-first search over "which operation takes effect next", starting from value 0.
pub fn linearizable(ops: &[Op]) -> bool {
    let n = ops.len();
    let required: Vec<usize> = (0..n).filter(|&i| ops[i].returned.is_some()).collect();
    let mut seen: HashSet<(Bits, i64)> = HashSet::new();
    let mut stack: Vec<(Bits, i64)> = vec![(Bits::new(n), 0)];
    while let Some((done, value)) = stack.pop() {
        if required.iter().all(|&i| done.get(i)) {
            return true;
        }
        if !seen.insert((done.clone(), value)) {
            continue;
        }
        // An operation can go next only if no pending-to-linearize completed operation
        // returned before it was invoked.
        let horizon = (0..n)
            .filter(|&i| !done.get(i))
            .filter_map(|i| ops[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        // Symmetry: of several eligible operations of the same kind, taking the one that must
        // return first loses nothing (swapping two equal operations changes no value), so only
        // that one is tried. This keeps many concurrent or timed-out `inc 1`s linear, not 2^n.
        let mut by_kind: BTreeMap<OpKind, usize> = BTreeMap::new();
        for i in 0..n {
            if done.get(i) || ops[i].invoked > horizon {
                continue;
            }
            let rank = |j: usize| (ops[j].returned.unwrap_or(u64::MAX), ops[j].invoked, j);
            by_kind
                .entry(ops[i].kind)
                .and_modify(|best| {
                    if rank(i) < rank(*best) {
                        *best = i;
                    }
                })
                .or_insert(i);
        }
        for &i in by_kind.values() {
            let next = match ops[i].kind {
                OpKind::Inc(d) => value + i64::from(d),
                OpKind::Del => 0,
                OpKind::Get(v) if i64::from(v) == value => value,
                OpKind::Get(_) => continue,
            };
            let mut after = done.clone();
            after.set(i);
            stack.push((after, next));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, invoked: u64, returned: Option<u64>) -> Op {
        Op {
            key: "k".into(),
            kind,
            invoked,
            returned,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(OpKind::Inc(5), 0, Some(1)),
            op(OpKind::Get(5), 2, Some(3)),
            op(OpKind::Del, 4, Some(5)),
            op(OpKind::Get(0), 6, Some(7)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn concurrent_read_may_see_either_side() {
        let before = vec![op(OpKind::Inc(1), 0, Some(10)), op(OpKind::Get(0), 1, Some(2))];
        let after = vec![op(OpKind::Inc(1), 0, Some(10)), op(OpKind::Get(1), 1, Some(2))];
        assert!(linearizable(&before));
        assert!(linearizable(&after));
    }

    #[test]
    fn rejects_stale_read() {
        // The increment completed before the read started, so the read must see it.
        let h = vec![op(OpKind::Inc(1), 0, Some(1)), op(OpKind::Get(0), 2, Some(3))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn rejects_lost_acknowledged_increment() {
        let h = vec![
            op(OpKind::Inc(2), 0, Some(1)),
            op(OpKind::Inc(3), 2, Some(3)),
            op(OpKind::Get(3), 4, Some(5)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn rejects_read_of_unacknowledged_value_later_lost() {
        // A timed-out increment may have applied: reading 7 is fine, but once seen it cannot
        // disappear again.
        let h = vec![
            op(OpKind::Inc(7), 0, None),
            op(OpKind::Get(7), 1, Some(2)),
            op(OpKind::Get(0), 3, Some(4)),
        ];
        assert!(check(&h).is_err());
        let ok = vec![
            op(OpKind::Inc(7), 0, None),
            op(OpKind::Get(7), 1, Some(2)),
            op(OpKind::Get(7), 3, Some(4)),
        ];
        assert!(check(&ok).is_ok());
        let never = vec![op(OpKind::Inc(7), 0, None), op(OpKind::Get(0), 1, Some(2))];
        assert!(check(&never).is_ok());
    }

    #[test]
    fn timed_out_write_cannot_take_effect_before_it_was_invoked() {
        let h = vec![op(OpKind::Get(4), 0, Some(1)), op(OpKind::Inc(4), 2, None)];
        assert!(check(&h).is_err());
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = vec![op(OpKind::Inc(1), 0, Some(1))];
        h.push(Op {
            key: "other".into(),
            kind: OpKind::Get(0),
            invoked: 2,
            returned: Some(3),
        });
        assert!(check(&h).is_ok());
        h.push(Op {
            key: "other".into(),
            kind: OpKind::Get(1),
            invoked: 4,
            returned: Some(5),
        });
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, "other");
    }

    #[test]
    fn many_concurrent_increments_stay_tractable() {
        // 40 overlapping increments and a final read: the symmetry rule keeps this fast.
        let mut h: Vec<Op> = (0..40).map(|i| op(OpKind::Inc(1), i, Some(100 + i))).collect();
        h.push(op(OpKind::Get(40), 200, Some(201)));
        assert!(check(&h).is_ok());
        h.push(op(OpKind::Get(39), 300, Some(301)));
        assert!(check(&h).is_err());
    }
}
