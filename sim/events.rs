//! The world's events, and what the simulator knows of a peer request on its way: data that the
//! world's event loop, the trace and the checks share.

use std::fmt;

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
#[derive(Clone, Copy)]
pub struct ReplyTo {
    pub proc: usize,
    pub incarnation: u32,
    /// The session the request was addressed to.
    pub addressee: NodeId,
    /// The sender's link epoch when it sent the request, as the simulator models it (`sim::links`;
    /// the replica's own is `Ev::PeerArrive::epoch`).
    pub link_epoch: u64,
}

pub enum Ev {
    Tick {
        proc: usize,
        incarnation: u32,
    },
    /// Durable runs: the process's log syncs what it was given (`sim::disks`).
    DiskSync {
        proc: usize,
        incarnation: u32,
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
        incarnation: u32,
    },
    /// The replica asks ZooKeeper to create the chain's held-state marker.
    ZkMarkChainHeld {
        proc: usize,
        incarnation: u32,
    },
    /// The replica gives up its session to join again.
    ZkLeave {
        proc: usize,
        incarnation: u32,
    },
    /// The replica asks ZooKeeper to write the chain's eviction record (`core::suspicion`).
    ZkEvict {
        proc: usize,
        incarnation: u32,
        suspect: NodeId,
        seen_version: Option<u64>,
    },
    /// The replica deletes its own member znode and keeps its session (it was evicted).
    ZkLeaveChain {
        proc: usize,
        incarnation: u32,
    },
    /// The replica deletes an evicted replica's member znode.
    ZkRemove {
        proc: usize,
        incarnation: u32,
        suspect: NodeId,
    },
    ZkWatch {
        watcher: Watcher,
        event: WatchEvent,
    },
    ZkPing {
        proc: usize,
        incarnation: u32,
    },
    ZkPingArrive {
        proc: usize,
        incarnation: u32,
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
    /// Ends a one-way cut: messages from `from` to `to` get through again.
    HealOneWay {
        from: Endpoint,
        to: Endpoint,
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

/// The trace renders events with `Debug`, and its hash covers the text: these keep the field
/// names traces had before `inc` became `incarnation` and `era` became `link_epoch`, so the hash
/// of a run says whether its events changed, not whether a field was renamed.
impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("proc", &self.proc)
            .field("inc", &self.incarnation)
            .field("addressee", &self.addressee)
            .field("era", &self.link_epoch)
            .finish()
    }
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ev::Tick { proc, incarnation } => f.debug_struct("Tick").field("proc", proc).field("inc", incarnation).finish(),
            Ev::DiskSync { proc, incarnation } => f.debug_struct("DiskSync").field("proc", proc).field("inc", incarnation).finish(),
            Ev::PeerArrive {
                from,
                to,
                epoch,
                request,
                fate,
                sent_at,
                reply_to,
            } => f
                .debug_struct("PeerArrive")
                .field("from", from)
                .field("to", to)
                .field("epoch", epoch)
                .field("request", request)
                .field("fate", fate)
                .field("sent_at", sent_at)
                .field("reply_to", reply_to)
                .finish(),
            Ev::PeerReply { to, epoch, kind, reply } => f
                .debug_struct("PeerReply")
                .field("to", to)
                .field("epoch", epoch)
                .field("kind", kind)
                .field("reply", reply)
                .finish(),
            Ev::ClientArrive {
                client,
                op,
                attempt,
                to,
                req,
            } => f
                .debug_struct("ClientArrive")
                .field("client", client)
                .field("op", op)
                .field("attempt", attempt)
                .field("to", to)
                .field("req", req)
                .finish(),
            Ev::ClientResult {
                client,
                op,
                attempt,
                result,
            } => f
                .debug_struct("ClientResult")
                .field("client", client)
                .field("op", op)
                .field("attempt", attempt)
                .field("result", result)
                .finish(),
            Ev::Callback { client, cxid } => f.debug_struct("Callback").field("client", client).field("cxid", cxid).finish(),
            Ev::ClientWake { client } => f.debug_struct("ClientWake").field("client", client).finish(),
            Ev::ClientResend { client, op, attempt } => f
                .debug_struct("ClientResend")
                .field("client", client)
                .field("op", op)
                .field("attempt", attempt)
                .finish(),
            Ev::ClientDeadline { client, op } => f.debug_struct("ClientDeadline").field("client", client).field("op", op).finish(),
            Ev::ZkJoin { proc, incarnation } => f.debug_struct("ZkJoin").field("proc", proc).field("inc", incarnation).finish(),
            Ev::ZkMarkChainHeld { proc, incarnation } => f
                .debug_struct("ZkMarkChainHeld")
                .field("proc", proc)
                .field("inc", incarnation)
                .finish(),
            Ev::ZkLeave { proc, incarnation } => f.debug_struct("ZkLeave").field("proc", proc).field("inc", incarnation).finish(),
            Ev::ZkEvict {
                proc,
                incarnation,
                suspect,
                seen_version,
            } => f
                .debug_struct("ZkEvict")
                .field("proc", proc)
                .field("inc", incarnation)
                .field("suspect", &format_args!("{suspect:x}"))
                .field("seen_version", seen_version)
                .finish(),
            Ev::ZkLeaveChain { proc, incarnation } => f
                .debug_struct("ZkLeaveChain")
                .field("proc", proc)
                .field("inc", incarnation)
                .finish(),
            Ev::ZkRemove {
                proc,
                incarnation,
                suspect,
            } => f
                .debug_struct("ZkRemove")
                .field("proc", proc)
                .field("inc", incarnation)
                .field("suspect", &format_args!("{suspect:x}"))
                .finish(),
            Ev::ZkWatch { watcher, event } => f.debug_struct("ZkWatch").field("watcher", watcher).field("event", event).finish(),
            Ev::ZkPing { proc, incarnation } => f.debug_struct("ZkPing").field("proc", proc).field("inc", incarnation).finish(),
            Ev::ZkPingArrive {
                proc,
                incarnation,
                session,
                sent_at,
            } => f
                .debug_struct("ZkPingArrive")
                .field("proc", proc)
                .field("inc", incarnation)
                .field("session", session)
                .field("sent_at", sent_at)
                .finish(),
            Ev::ZkExpiry => f.write_str("ZkExpiry"),
            Ev::Nemesis => f.write_str("Nemesis"),
            Ev::Foreign { left } => f.debug_struct("Foreign").field("left", left).finish(),
            Ev::Heal { a, b } => f.debug_struct("Heal").field("a", a).field("b", b).finish(),
            Ev::HealOneWay { from, to } => f.debug_struct("HealOneWay").field("from", from).field("to", to).finish(),
            Ev::Restart { proc } => f.debug_struct("Restart").field("proc", proc).finish(),
            Ev::Resume { proc } => f.debug_struct("Resume").field("proc", proc).finish(),
            Ev::DrainHeld { proc } => f.debug_struct("DrainHeld").field("proc", proc).finish(),
        }
    }
}

impl Ev {
    /// The replica process an event is handled by, if any: such events wait while it is paused.
    pub fn target_proc(&self) -> Option<usize> {
        match self {
            Ev::Tick { proc, .. } | Ev::ZkPing { proc, .. } | Ev::DiskSync { proc, .. } => Some(*proc),
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
