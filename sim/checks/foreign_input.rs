//! A request that a correct replica must refuse is refused and changes nothing: the reply is
//! the refusal, the replica's own account of itself, its state and its sent list are what they
//! were, and it sends nothing. Such requests come from a foreign peer (`sim/foreign.rs`).

use crate::core::{Describe, PeerReply, Store, Update};
use crate::sim::procs::SimReplica;
use crate::sim::violation::{Invariant, Violation};

/// What a request could have changed in a replica, as far as anyone outside can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    describe: Describe,
    store: Store,
    sent: Vec<Update>,
}

impl Observed {
    pub fn of(r: &SimReplica) -> Self {
        Observed {
            describe: r.describe(),
            store: r.store().clone(),
            sent: r.sent().cloned().collect(),
        }
    }
}

/// How the replica took a request.
pub struct Outcome {
    pub reply: PeerReply,
    /// Messages, client completions or callbacks the replica asked for while serving it.
    pub emitted: usize,
    pub after: Observed,
}

pub fn check(proc: usize, request: &str, expected: &PeerReply, before: &Observed, outcome: &Outcome) -> Option<Violation> {
    let mut wrong = Vec::new();
    if outcome.reply != *expected {
        wrong.push(format!("replied {:?} instead of {expected:?}", outcome.reply));
    }
    if outcome.after.describe != before.describe {
        wrong.push(format!("went from {:?} to {:?}", before.describe, outcome.after.describe));
    }
    if outcome.after.store != before.store {
        wrong.push(format!("its state went from {:?} to {:?}", before.store, outcome.after.store));
    }
    if outcome.after.sent != before.sent {
        wrong.push(format!(
            "its sent list went from xids {:?} to {:?}",
            xids(&before.sent),
            xids(&outcome.after.sent)
        ));
    }
    if outcome.emitted > 0 {
        wrong.push(format!("it sent {} messages", outcome.emitted));
    }
    (!wrong.is_empty()).then(|| {
        Violation::new(
            Invariant::ForeignInput,
            format!("replica {proc} was sent {request}, which it must refuse, and {}", wrong.join("; ")),
        )
    })
}

fn xids(sent: &[Update]) -> Vec<u64> {
    sent.iter().map(|u| u.xid).collect()
}
