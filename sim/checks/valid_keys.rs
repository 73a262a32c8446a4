//! A replica refuses a key as invalid exactly when it is empty or longer than the limit the run
//! configured, and never serves an invalid one.

use crate::sim::violation::{Invariant, Violation};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Read or written.
    Served,
    /// Refused as an invalid key.
    Invalid,
    /// Refused for another reason first (not the head, not yet holds_state, …): says nothing.
    NotJudged,
}

/// `limit`: the replicas' key length limit as the run configured it.
pub fn check(limit: usize, key: &str, verdict: KeyVerdict) -> Option<Violation> {
    let valid = !key.is_empty() && key.len() <= limit;
    let wrong = match verdict {
        KeyVerdict::Served => !valid,
        KeyVerdict::Invalid => valid,
        KeyVerdict::NotJudged => false,
    };
    wrong.then(|| {
        Violation::new(
            Invariant::ValidKeys,
            format!("a {}-byte key (limit {limit}) was {verdict:?}", key.len()),
        )
    })
}
