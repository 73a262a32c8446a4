//! The world's events, and what the simulator knows of a peer request on its way: data that the
//! world's event loop, the trace and the checks share.

use crate::core::{Millis, NodeId, PeerReply, PeerRequest, RequestKind};
use crate::sim::client::{ClientReq, ClientResult};
use crate::sim::zk::{WatchEvent, Watcher};

/// Something that can be cut off from something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Replica(usize),
    Client(usize),
    Zk,
}

/// What becomes of the reply to a peer request that was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Reply,
    /// The reply is lost: the sender sees its deadline pass.
    LoseReply,
    /// A duplicate delivery: the sender already gets a reply for the original.
    Silent,
}

/// Where the answer to a peer request goes, and what the simulator knows of the request.
#[derive(Clone, Copy, Debug)]
pub struct ReplyTo {
    pub proc: usize,
    pub inc: u32,
    /// The session the request was addressed to.
    pub addressee: NodeId,
    /// The sender's link era when it sent the request (see `sim::links`).
    pub era: u64,
}

#[derive(Debug)]
pub enum Ev {
    Tick {
        proc: usize,
        inc: u32,
    },
    PeerArrive {
        from: usize,
        to: usize,
        epoch: u64,
        request: PeerRequest,
        fate: Fate,
        sent_at: Millis,
        reply_to: ReplyTo,
    },
    PeerReply {
        to: ReplyTo,
        epoch: u64,
        kind: RequestKind,
        reply: PeerReply,
    },
    ClientArrive {
        client: usize,
        op: u64,
        attempt: u32,
        to: usize,
        req: ClientReq,
    },
    ClientResult {
        client: usize,
        op: u64,
        attempt: u32,
        result: ClientResult,
    },
    Callback {
        client: usize,
        cxid: i32,
    },
    ClientWake {
        client: usize,
    },
    ClientResend {
        client: usize,
        op: u64,
        attempt: u32,
    },
    ClientDeadline {
        client: usize,
        op: u64,
    },
    ZkJoin {
        proc: usize,
        inc: u32,
    },
    /// The replica asks ZooKeeper to create the chain's held-state marker.
    ZkMarkChainHeld {
        proc: usize,
        inc: u32,
    },
    /// The replica gives up its session to join again.
    ZkLeave {
        proc: usize,
        inc: u32,
    },
    ZkWatch {
        watcher: Watcher,
        event: WatchEvent,
    },
    ZkPing {
        proc: usize,
        inc: u32,
    },
    ZkPingArrive {
        proc: usize,
        inc: u32,
        session: NodeId,
        sent_at: Millis,
    },
    ZkExpiry,
    Nemesis,
    /// A foreign peer sends a bad request; `left` counts it and those still to come.
    Foreign {
        left: u32,
    },
    Heal {
        a: Endpoint,
        b: Endpoint,
    },
    Restart {
        proc: usize,
    },
    Resume {
        proc: usize,
    },
    /// Work through the events held while `proc` was paused.
    DrainHeld {
        proc: usize,
    },
}

impl Ev {
    /// The replica process an event is handled by, if any: such events wait while it is paused.
    pub fn target_proc(&self) -> Option<usize> {
        match self {
            Ev::Tick { proc, .. } | Ev::ZkPing { proc, .. } => Some(*proc),
            Ev::PeerArrive { to, .. } | Ev::ClientArrive { to, .. } => Some(*to),
            Ev::PeerReply { to, .. } => Some(to.proc),
            Ev::ZkWatch {
                watcher: Watcher::Replica(p, _),
                ..
            } => Some(*p),
            _ => None,
        }
    }
}
