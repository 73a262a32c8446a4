//! What lets a predecessor send a new successor only what it lacks (issue: incremental rejoin).
//!
//! A replica restarted on its data dir comes back with the state it had at some xid X. Its new
//! predecessor may send it only the keys written after X, but only if the two states are the
//! same at X: the restarted replica may hold writes the chain never kept (a head that crashed
//! with updates nobody else saw, under xids the next head reused for other writes). So every
//! replica keeps a **digest of its state**, and a short **history** of its recent updates with
//! the digest after each; the successor says which xid and digest it holds, and the
//! predecessor sends the keys written since if its digest at that xid is the same, or the
//! whole state if not.
//!
//! The digest is of the state, not of the history: equal states at X are all the delta needs
//! (keys not written after X hold their value at X on both sides), and a state's digest can be
//! computed from the state alone: by a replica that got it from a foreign predecessor's
//! `stateTransfer` (which carries no digest), or from a data dir. It is a sum of one 128-bit
//! hash per entry (key and non-zero value), so one update changes it in O(1): subtract the
//! entry's old hash, add its new one. Two different states collide with probability about
//! 2^-128 per comparison (nobody picks the keys to attack it: they are the clients' writes and
//! only an equality test between our own replicas depends on it).

use std::collections::{BTreeSet, VecDeque};

use super::types::{Store, Xid};

/// The digest of a state: the wrapping sum of `entry_hash` over its entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateDigest(pub u128);

/// Updates remembered by `History`: a successor that restarted at most this many updates ago
/// gets only what it lacks; one further behind gets the whole state. 64 Ki entries of about
/// 60 bytes each (plus the key) bound it to a few MiB per replica.
pub const HISTORY_UPDATES: usize = 1 << 16;

fn entry_hash(key: &str, value: i32) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(&value.to_le_bytes());
    let out = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&out.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

impl StateDigest {
    /// The digest of a whole store: O(entries), for a state that arrives whole.
    pub fn of(store: &Store) -> StateDigest {
        let mut d = StateDigest::default();
        for (key, value) in store {
            d.set(key, 0, *value);
        }
        d
    }

    /// The key's value changes from `old` to `new` (0: absent).
    pub fn set(&mut self, key: &str, old: i32, new: i32) {
        if old != 0 {
            self.0 = self.0.wrapping_sub(entry_hash(key, old));
        }
        if new != 0 {
            self.0 = self.0.wrapping_add(entry_hash(key, new));
        }
    }
}

/// The digest of the state at each of the last `HISTORY_UPDATES` xids, with the key each
/// update wrote.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The state's xid and digest before the first of `recent`.
    base: (Xid, StateDigest),
    recent: VecDeque<(Xid, StateDigest, String)>,
}

impl History {
    /// A state that arrived whole (or was started empty) at `xid`: no updates known before it.
    pub fn starting_at(xid: Xid, digest: StateDigest) -> History {
        History {
            base: (xid, digest),
            recent: VecDeque::new(),
        }
    }

    /// The update at `xid` wrote `key`, leaving the state with `digest`.
    pub fn push(&mut self, xid: Xid, key: &str, digest: StateDigest) {
        if self.recent.len() == HISTORY_UPDATES {
            if let Some((x, d, _)) = self.recent.pop_front() {
                self.base = (x, d);
            }
        }
        self.recent.push_back((xid, digest, key.to_string()));
    }

    /// The state's digest at `xid`, if that xid is within the history.
    pub fn digest_at(&self, xid: Xid) -> Option<StateDigest> {
        if xid == self.base.0 {
            return Some(self.base.1);
        }
        let i = self.recent.partition_point(|(x, _, _)| *x < xid);
        self.recent.get(i).filter(|(x, _, _)| *x == xid).map(|(_, d, _)| *d)
    }

    /// The keys written after `xid`, once each, in order.
    pub fn keys_after(&self, xid: Xid) -> BTreeSet<&str> {
        let i = self.recent.partition_point(|(x, _, _)| *x <= xid);
        self.recent.range(i..).map(|(_, _, k)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(entries: &[(&str, i32)]) -> Store {
        entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_digest_follows_updates_and_only_depends_on_the_state() {
        let mut d = StateDigest::of(&store(&[("a", 1), ("b", 2)]));
        d.set("a", 1, 5);
        d.set("c", 0, 3);
        d.set("b", 2, 0);
        assert_eq!(d, StateDigest::of(&store(&[("a", 5), ("c", 3)])));
        assert_ne!(d, StateDigest::of(&store(&[("a", 5), ("c", 4)])));
        assert_ne!(d, StateDigest::of(&store(&[("a", 5)])));
        // The key's length is hashed too: "ab"=1 is not "a" with some other encoding.
        assert_ne!(
            StateDigest::of(&store(&[("ab", 1)])),
            StateDigest::of(&store(&[("a", 1), ("b", 1)]))
        );
        assert_eq!(StateDigest::of(&Store::new()), StateDigest::default());
    }

    #[test]
    fn the_history_knows_the_digest_at_each_recent_xid_and_the_keys_written_since() {
        let mut h = History::starting_at(10, StateDigest(7));
        for (x, k) in [(11, "a"), (12, "b"), (13, "a")] {
            h.push(x, k, StateDigest(x as u128));
        }
        assert_eq!(h.digest_at(10), Some(StateDigest(7)));
        assert_eq!(h.digest_at(12), Some(StateDigest(12)));
        assert_eq!(h.digest_at(9), None);
        assert_eq!(h.digest_at(14), None);
        assert_eq!(h.keys_after(10).into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(h.keys_after(12).into_iter().collect::<Vec<_>>(), vec!["a"]);
        assert!(h.keys_after(13).is_empty());
    }

    #[test]
    fn the_history_forgets_the_oldest_updates_beyond_its_bound() {
        let mut h = History::starting_at(0, StateDigest(0));
        let n = HISTORY_UPDATES as u64 + 3;
        for x in 1..=n {
            h.push(x, "k", StateDigest(u128::from(x)));
        }
        assert_eq!(h.digest_at(2), None);
        assert_eq!(h.digest_at(3), Some(StateDigest(3)));
        assert_eq!(h.digest_at(n), Some(StateDigest(u128::from(n))));
    }
}
