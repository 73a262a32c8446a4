//! The chain's write sequence as the heads issued it, to judge every replica's state against.
//!
//! A head that dies can take updates nobody else received; the next head then issues the same
//! xids again. The sequence forks there, and the old branch must be dead: no live replica may
//! hold it, and no acknowledged write may have been on it.

use crate::core::{Store, WriteOp, Xid};
use crate::sim::client::written_key;
use crate::sim::violation::{Invariant, Violation};

#[derive(Clone, Debug)]
struct Entry {
    acknowledged: bool,
}

#[derive(Default)]
pub struct Canon {
    /// `entries[x - 1]` is xid `x`.
    entries: Vec<Entry>,
    /// `states[x]` is the state after xid `x`; `states[0]` is empty.
    states: Vec<Store>,
}

impl Canon {
    pub fn len(&self) -> Xid {
        self.entries.len() as Xid
    }

    /// A head issued `xid` for the client's `op`. The value it must set is worked out here from
    /// the sequence itself, never read back from the replica, so a head that applies the wrong
    /// value is caught. Returns a violation if that discards an acknowledged write.
    pub fn issued(&mut self, xid: Xid, op: &WriteOp) -> Result<(), Violation> {
        if self.states.is_empty() {
            self.states.push(Store::new());
        }
        if xid == 0 || xid > self.len() + 1 {
            return Err(Violation::new(
                Invariant::ChainSequence,
                format!("xid {xid} issued but the sequence only reaches {}", self.len()),
            ));
        }
        if xid <= self.len() {
            if let Some(lost) = self.entries[xid as usize - 1..].iter().position(|e| e.acknowledged) {
                return Err(Violation::new(
                    Invariant::NoLostWrites,
                    format!("xid {} was acknowledged but a new head issued xid {xid} again", xid as usize + lost),
                ));
            }
            self.entries.truncate(xid as usize - 1);
            self.states.truncate(xid as usize);
        }
        let mut state = self.states[xid as usize - 1].clone();
        let key = written_key(op);
        let value = match op {
            WriteOp::Inc { delta, .. } => {
                let v = i64::from(state.get(key).copied().unwrap_or(0)) + i64::from(*delta);
                i32::try_from(v).map_err(|_| {
                    Violation::new(
                        Invariant::ChainSequence,
                        format!("the head accepted xid {xid}, an increment of {key} past int32"),
                    )
                })?
            }
            WriteOp::Del { .. } => 0,
        };
        self.entries.push(Entry { acknowledged: false });
        if value == 0 {
            state.remove(key);
        } else {
            state.insert(key.to_string(), value);
        }
        self.states.push(state);
        Ok(())
    }

    /// The highest xid acknowledged to a client, 0 if none.
    pub fn last_acknowledged(&self) -> Xid {
        self.entries.iter().rposition(|e| e.acknowledged).map_or(0, |i| i as Xid + 1)
    }

    pub fn acknowledged(&mut self, xid: Xid) {
        if let Some(e) = self.entries.get_mut((xid as usize).wrapping_sub(1)) {
            e.acknowledged = true;
        }
    }

    pub fn state_at(&self, xid: Xid) -> Option<&Store> {
        if xid == 0 && self.states.is_empty() {
            return None;
        }
        self.states.get(xid as usize)
    }
}
