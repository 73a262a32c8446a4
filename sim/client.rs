//! Clients: closed-loop users that follow head and tail through their own (delayed) view of
//! ZooKeeper, like `chainctl`, and record every operation for the linearizability check.
//!
//! Only what is safe is retried: a write refused before anything was applied (not the head,
//! unavailable, busy), and any read. A write whose answer is lost is recorded as unknown.

use crate::core::{ClientToken, Member, Millis, WriteOp};

#[derive(Clone, Debug)]
pub enum ClientReq {
    Write(WriteOp),
    Read(String),
}

#[derive(Clone, Debug)]
pub enum ClientResult {
    Committed,
    /// Tail variant: the head took it; the tail's callback is what completes it.
    Accepted,
    Value(i32),
    /// Refused before anything was applied: try again, maybe elsewhere.
    Retry,
    /// Refused for good (bad input); nothing was applied.
    Refused,
    /// No answer, or the replica lost track: a write may or may not have taken effect.
    Unknown,
}

#[derive(Clone, Debug)]
pub(super) struct Current {
    pub(super) op: u64,
    pub(super) req: ClientReq,
    pub(super) invoked: Millis,
    pub(super) attempt: u32,
}

pub struct Client {
    pub view: Vec<Member>,
    /// Membership changes reach this client no earlier than this.
    pub view_stalled_until: Millis,
    pub(super) ops_left: usize,
    pub(super) next_op: u64,
    pub(super) current: Option<Current>,
}

impl Client {
    pub fn new(ops: usize) -> Self {
        Client {
            view: Vec::new(),
            view_stalled_until: 0,
            ops_left: ops,
            next_op: 1,
            current: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.ops_left == 0 && self.current.is_none()
    }
}

/// The key a write names, read by the simulator itself: its judgement must not go through
/// the core's own accessor (`WriteOp::key`), or a broken accessor would fool both sides.
pub fn written_key(op: &WriteOp) -> &str {
    match op {
        WriteOp::Inc { key, .. } | WriteOp::Del { key } => key,
    }
}

/// The `k`-th key of a generation (see `World::fresh_keys`).
pub fn key_name(generation: usize, k: usize) -> String {
    if generation == 0 {
        format!("k{k}")
    } else {
        format!("g{generation}k{k}")
    }
}

/// Tokens carry the client, operation and attempt so a late completion is recognised.
pub(super) fn token(client: usize, op: u64, attempt: u32) -> ClientToken {
    ((client as u64) << 48) | ((op & 0xff_ffff) << 24) | u64::from(attempt & 0xff_ffff)
}

pub(super) fn untoken(t: ClientToken) -> (usize, u64, u32) {
    ((t >> 48) as usize, (t >> 24) & 0xff_ffff, (t & 0xff_ffff) as u32)
}
