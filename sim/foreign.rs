//! A foreign peer: another implementation of chain.proto in the same chain, a buggy one, or a
//! request that reached the wrong replica. It sends what no honest replica does: a state
//! transfer from the receiver's own predecessor whose sent list repeats an xid, goes back, or
//! runs past the state it comes with; `xidProcessed` to a replica that is not the head, or to
//! the head for an xid it never issued; `getLatestXid` to a replica that is not the tail (or
//! holds no state). The simulated replicas never send these, so without this peer nothing
//! would show that a replica refuses them; `checks::foreign_input` judges the answers.
//!
//! The requests come at random moments of the fault phase to whichever live replica the dice
//! pick, so they find replicas in every role and state: without state, mid-transfer, holding
//! updates the tail has not confirmed, cut off from the rest.

use crate::core::{Member, PeerReply, PeerRequest, Role, Store, Transfer, Update, Xid};
use crate::sim::checks::{Observed, Outcome};
use crate::sim::events::Ev;
use crate::sim::procs::Status;
use crate::sim::world::{Phase, World};

/// Requests per run, at most: the fault phase may end first.
const REQUESTS: u32 = 8;
const GAP_MIN_MS: u64 = 200;
const GAP_MAX_MS: u64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Transfer,
    XidProcessed,
    GetLatestXid,
}

/// What is wrong with a transfer's sent list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    Duplicate,
    OutOfOrder,
    BeyondState,
}

/// A request a correct replica refuses, the refusal, and how the trace and a failure name it.
struct Bad {
    request: PeerRequest,
    expected: PeerReply,
    what: String,
}

pub fn plan(w: &mut World) {
    let first = w.dice.foreign.range(GAP_MIN_MS, GAP_MAX_MS);
    w.schedule(first, Ev::Foreign { left: REQUESTS });
}

/// Send one bad request, and schedule the next while `left` says there are more.
pub fn request(w: &mut World, left: u32) {
    if w.phase() != Phase::Faults || left == 0 {
        return;
    }
    if left > 1 {
        let next = w.dice.foreign.range(GAP_MIN_MS, GAP_MAX_MS);
        w.schedule(next, Ev::Foreign { left: left - 1 });
    }
    // A paused process serves nothing until it resumes.
    let up: Vec<usize> = (0..w.procs().len())
        .filter(|&p| w.procs()[p].status == Status::Up && w.procs()[p].replica.is_some())
        .collect();
    let Some(p) = w.dice.foreign.pick(&up) else { return };
    let Some(bad) = bad_request(w, p) else { return };
    let Some(before) = w.procs()[p].replica.as_ref().map(Observed::of) else {
        return;
    };
    w.note(&format!("foreign peer: {} to replica {p}", bad.what));
    let outbox = w.procs()[p].outbox.clone();
    let queued = outbox.borrow().len();
    let outcome = w.with_replica(p, |r| {
        let reply = r.on_addressed_request(r.session_id(), bad.request);
        Outcome {
            reply,
            emitted: outbox.borrow().len().saturating_sub(queued),
            after: Observed::of(r),
        }
    });
    if let Some(outcome) = outcome {
        w.checks_mut().foreign_input(p, &bad.what, &bad.expected, &before, &outcome);
    }
}

/// One of the requests replica `p` must refuse as it stands now, chosen by the dice.
fn bad_request(w: &mut World, p: usize) -> Option<Bad> {
    let r = w.procs()[p].replica.as_ref()?;
    let d = r.describe();
    let head = matches!(d.role, Role::Head | Role::Single);
    let tail = matches!(d.role, Role::Tail | Role::Single);
    let pred = r.session_id().and_then(|me| r.view().predecessor(me).cloned());
    let mut kinds = vec![Kind::XidProcessed];
    if pred.is_some() {
        // Twice: a transfer has three flaws to choose from and is the hardest to get right.
        kinds.extend([Kind::Transfer, Kind::Transfer]);
    }
    if !(tail && d.holds_state) {
        kinds.push(Kind::GetLatestXid);
    }
    let refused = PeerReply::Refused;
    Some(match (w.dice.foreign.pick(&kinds)?, pred) {
        (Kind::Transfer, Some(pred)) => {
            let (t, flaw) = malformed_transfer(w, p, &pred);
            let what = format!(
                "a stateTransfer from its predecessor {:x} at xid {} with sent list xids {:?} ({flaw:?})",
                t.src,
                t.state_xid,
                t.sent.iter().map(|u| u.xid).collect::<Vec<_>>()
            );
            Bad {
                request: PeerRequest::Transfer(t),
                expected: refused,
                what,
            }
        }
        (Kind::GetLatestXid, _) => Bad {
            request: PeerRequest::GetLatestXid,
            expected: PeerReply::LatestXid(None),
            what: format!("getLatestXid as {:?} (holds_state: {})", d.role, d.holds_state),
        },
        _ => {
            // The head is asked about an xid past its last; anyone else about one it
            // holds, so only its role can be the reason to refuse.
            let xid = if head && d.holds_state {
                d.last_applied.saturating_add(w.dice.foreign.range(1, 4))
            } else {
                w.dice.foreign.range(0, d.last_applied.saturating_add(1))
            };
            Bad {
                request: PeerRequest::XidProcessed(xid),
                expected: refused,
                what: format!(
                    "xidProcessed({xid}) as {:?} (holds_state: {}, last applied {})",
                    d.role, d.holds_state, d.last_applied
                ),
            }
        }
    })
}

/// A transfer from `pred` that is wrong only in its sent list: the state is the
/// predecessor's own (or, if it is behind or gone, the receiver's), so it is far enough
/// along for the receiver to take it but for that list.
fn malformed_transfer(w: &mut World, p: usize, pred: &Member) -> (Transfer, Flaw) {
    let receiver = w.procs()[p].replica.as_ref();
    let floor = receiver.filter(|r| r.holds_state()).map_or(0, |r| r.last_applied());
    let from_pred = w
        .proc_of_addr(&pred.addr)
        .and_then(|q| w.procs()[q].replica.as_ref())
        .filter(|q| q.session_id() == Some(pred.id) && q.holds_state() && q.last_applied() >= floor);
    let (state_xid, state, mut sent) = match from_pred.or(receiver.filter(|r| r.holds_state())) {
        Some(s) => (s.last_applied(), s.store().clone(), s.sent().cloned().collect::<Vec<_>>()),
        None => (0, Store::new(), Vec::new()),
    };
    let flaw = w.dice.foreign.pick(&[Flaw::Duplicate, Flaw::OutOfOrder, Flaw::BeyondState]);
    let flaw = match flaw {
        Some(Flaw::Duplicate) if state_xid >= 1 => {
            if sent.is_empty() {
                sent.push(no_op_update(&state, state_xid));
            }
            let i = w.dice.foreign.range(0, sent.len() as u64) as usize;
            if let Some(u) = sent.get(i).cloned() {
                sent.insert(i + 1, u);
            }
            Flaw::Duplicate
        }
        Some(Flaw::OutOfOrder) if state_xid >= 2 => {
            if sent.len() < 2 {
                sent = vec![no_op_update(&state, state_xid - 1), no_op_update(&state, state_xid)];
            }
            let i = w.dice.foreign.range(0, sent.len() as u64 - 1) as usize;
            sent.swap(i, i + 1);
            Flaw::OutOfOrder
        }
        // With no xids to spare below the state, past it is the only flaw left.
        _ => {
            let xid = state_xid.saturating_add(w.dice.foreign.range(1, 4));
            sent.push(no_op_update(&state, xid));
            Flaw::BeyondState
        }
    };
    let t = Transfer {
        src: pred.id,
        state_xid,
        state,
        sent,
        base: None,
    };
    (t, flaw)
}

/// An update that sets a key to the value `state` already gives it, so only its xid can be
/// wrong.
fn no_op_update(state: &Store, xid: Xid) -> Update {
    let (key, value) = state.iter().next().map_or_else(|| ("k0".to_string(), 0), |(k, v)| (k.clone(), *v));
    Update {
        xid,
        key,
        value,
        origin: None,
    }
}
