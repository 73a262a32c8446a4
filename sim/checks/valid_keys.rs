//! A replica refuses a key as invalid exactly when it is empty or longer than the limit the run
//! configured, and never serves an invalid one.

use crate::sim::world::World;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Read or written.
    Served,
    /// Refused as an invalid key.
    Invalid,
    /// Refused for another reason first (not the head, not yet holds_state, …): says nothing.
    NotJudged,
}

pub fn check(w: &mut World, key: &str, verdict: KeyVerdict) {
    let valid = !key.is_empty() && key.len() <= w.cfg.max_key_bytes;
    let wrong = match verdict {
        KeyVerdict::Served => !valid,
        KeyVerdict::Invalid => valid,
        KeyVerdict::NotJudged => false,
    };
    if wrong {
        w.violations.push(format!(
            "valid keys: a {}-byte key (limit {}) was {:?}",
            key.len(),
            w.cfg.max_key_bytes,
            verdict
        ));
    }
}
