//! What the quiet phase (`sim::quiet`) cost is what a healthy chain costs: each update crosses
//! each link once, no state is transferred or pulled, the tail's progress flows back at most
//! once per update (head variant) or one poll per interval per replica, and an idle chain sends
//! nothing at all.

use crate::core::{Config, Variant};
use crate::sim::measure::{CleanNewHead, Quiet, IDLE_MS};
use crate::sim::violation::{Invariant, Violation};

/// The quiet phase of a `variant` chain cost `q`.
pub fn check(variant: Variant, q: &Quiet) -> Option<Violation> {
    let links = q.members.saturating_sub(1) as u64;
    let mut wrong = Vec::new();
    if q.busy.propose != q.writes * links {
        wrong.push(format!(
            "{} proposeStateUpdate for {} updates over {links} links (each update crosses each link once)",
            q.busy.propose, q.writes
        ));
    }
    if q.busy.transfer != 0 || q.busy.pull_state != 0 {
        wrong.push(format!(
            "{} state transfers and {} pulls on a settled chain",
            q.busy.transfer, q.busy.pull_state
        ));
    }
    let xid_processed_bound = if variant == Variant::Head { q.writes } else { 0 };
    if q.busy.xid_processed > xid_processed_bound {
        wrong.push(format!(
            "{} xidProcessed for {} updates ({xid_processed_bound} at most)",
            q.busy.xid_processed, q.writes
        ));
    }
    // One poll in flight per replica, the next one an interval after the answer.
    let poll_bound = links * (q.busy_ms / Config::default().poll_interval_ms + 1);
    if q.busy.get_latest_xid > poll_bound {
        wrong.push(format!(
            "{} getLatestXid in {} ms ({poll_bound} at most)",
            q.busy.get_latest_xid, q.busy_ms
        ));
    }
    if q.idle.total() != 0 {
        wrong.push(format!("an idle chain sent {:?} in {IDLE_MS} ms", q.idle));
    }
    (!wrong.is_empty()).then(|| {
        Violation::new(
            Invariant::Cost,
            format!("on the settled chain of {} replicas, {}", q.members, wrong.join("; ")),
        )
    })
}

/// After a middle replica crashed on a quiet network: only its successor took a state transfer,
/// once; everyone after it was caught up update by update. `accepted`: the replicas that accepted
/// one since the crash, in order.
pub fn check_failover(accepted: &[usize], successor: usize) -> Option<Violation> {
    (accepted != [successor]).then(|| {
        Violation::new(
            Invariant::Cost,
            format!("after a middle replica crashed, replicas {accepted:?} accepted state transfers; only its successor, replica {successor}, should have, once"),
        )
    })
}

/// A replica with no state joined at the head of a settled chain on a quiet network. It takes
/// the state from its successor, which already holds it, so nothing is transferred; and when
/// told "not now" it asks again only after a pause.
pub fn check_new_head(n: &CleanNewHead) -> Option<Violation> {
    // `on_pull_reply` pauses five retry intervals after "not now"; the simulator's replicas
    // keep the default retry interval.
    let pause = Config::default().retry_min_ms * 5;
    let pull_bound = 2 + n.pulling_ms / pause;
    let mut wrong = Vec::new();
    if n.sends.transfer != 0 {
        wrong.push(format!("{} state transfers", n.sends.transfer));
    }
    if n.sends.pull_state > pull_bound {
        wrong.push(format!(
            "{} pulls in the {} ms it took to get the state ({pull_bound} at most)",
            n.sends.pull_state, n.pulling_ms
        ));
    }
    (!wrong.is_empty()).then(|| {
        Violation::new(
            Invariant::Cost,
            format!("a new head joining a settled chain on a quiet network cost {}", wrong.join("; ")),
        )
    })
}
