//! The wire targets: bytes decoded with prost as one of the messages a replica's gRPC services
//! receive, converted as `runtime::service` converts them, and fed to a replica in every role.
//!
//! Input layout: byte 0 picks the message type (modulo the number of types in the target),
//! byte 1 the session the request is addressed to (peer requests only; see
//! `Addressee::from_byte`), the rest is the encoded message. A decode error ends the input:
//! tonic answers those itself, before any handler runs.

use chainrep::core::{ClientOrigin, PeerRequest, Variant, WriteOp};
use chainrep::pb::adb;
use chainrep::pb::chainrep::ext;
use chainrep::runtime::convert;
use prost::Message;

use crate::harness::{Addressee, Subject, ROLES};

/// Which variants' servers expose a call: `HeadChainReplica` runs only in head-variant
/// replicas, `TailChainReplica` only in tail-variant ones, `ChainExt` in both.
const HEAD: &[Variant] = &[Variant::Head];
const TAIL: &[Variant] = &[Variant::Tail];
const BOTH: &[Variant] = &[Variant::Head, Variant::Tail];

/// Message types of the `peer_requests` target, in selector order.
pub const PEER_TYPES: [&str; 6] = [
    "HeadStateUpdateRequest",
    "TailStateUpdateRequest",
    "HeadStateTransferRequest",
    "TailStateTransferRequest",
    "XidProcessedRequest",
    "LatestXidRequest",
];

/// Message types of the `client_requests` target, in selector order.
pub const CLIENT_TYPES: [&str; 5] = [
    "IncrementRequest",
    "DeleteRequest",
    "GetRequest",
    "TailIncrementRequest",
    "TailDeleteRequest",
];

/// Message types of the `ext_requests` target, in selector order.
pub const EXT_TYPES: [&str; 2] = ["PullStateRequest", "ReplicateBatch"];

/// One decoded call, as the core sees it.
#[derive(Clone, Debug)]
enum Call {
    Peer(PeerRequest),
    /// `ChainExt.Replicate`: every update of a batch is a `proposeStateUpdate` from the batch's `src`.
    Batch(Vec<PeerRequest>),
    Write(WriteOp, Option<ClientOrigin>),
    Read(String),
}

fn split(data: &[u8]) -> Option<(u8, u8, &[u8])> {
    match data {
        [kind, to, body @ ..] => Some((*kind, *to, body)),
        _ => None,
    }
}

/// `chain.proto`'s replica-to-replica calls.
pub fn peer_requests(data: &[u8]) {
    let Some((kind, to, body)) = split(data) else { return };
    let decoded = match kind as usize % PEER_TYPES.len() {
        0 => adb::HeadStateUpdateRequest::decode(body).ok().map(|m| {
            let (src, update) = convert::head_update_from_wire(m);
            check_update_round_trip(src, &update, false);
            (HEAD, Call::Peer(PeerRequest::Propose { src, update }))
        }),
        1 => adb::TailStateUpdateRequest::decode(body).ok().map(|m| {
            let (src, update) = convert::tail_update_from_wire(m);
            check_update_round_trip(src, &update, true);
            (TAIL, Call::Peer(PeerRequest::Propose { src, update }))
        }),
        2 => adb::HeadStateTransferRequest::decode(body).ok().map(|m| {
            let t = convert::head_transfer_from_wire(m);
            assert_eq!(
                convert::head_transfer_from_wire(convert::head_transfer_to_wire(&t)),
                t,
                "head transfer round trip"
            );
            (HEAD, Call::Peer(PeerRequest::Transfer(t)))
        }),
        3 => adb::TailStateTransferRequest::decode(body).ok().map(|m| {
            let t = convert::tail_transfer_from_wire(m);
            assert_eq!(
                convert::tail_transfer_from_wire(convert::tail_transfer_to_wire(&t)),
                t,
                "tail transfer round trip"
            );
            (TAIL, Call::Peer(PeerRequest::Transfer(t)))
        }),
        4 => adb::XidProcessedRequest::decode(body)
            .ok()
            .map(|m| (HEAD, Call::Peer(PeerRequest::XidProcessed(m.xid)))),
        _ => adb::LatestXidRequest::decode(body)
            .ok()
            .map(|_| (BOTH, Call::Peer(PeerRequest::GetLatestXid))),
    };
    if let Some((variants, call)) = decoded {
        feed_everywhere(variants, Addressee::from_byte(to), &call);
    }
}

/// `chain.proto`'s client calls. Clients send no session header, so byte 1 is unused.
pub fn client_requests(data: &[u8]) {
    let Some((kind, _, body)) = split(data) else { return };
    let decoded = match kind as usize % CLIENT_TYPES.len() {
        0 => adb::IncrementRequest::decode(body).ok().map(|m| {
            (
                HEAD,
                Some(Call::Write(
                    WriteOp::Inc {
                        key: m.key,
                        delta: m.incr_value,
                    },
                    None,
                )),
            )
        }),
        1 => adb::DeleteRequest::decode(body)
            .ok()
            .map(|m| (HEAD, Some(Call::Write(WriteOp::Del { key: m.key }, None)))),
        2 => adb::GetRequest::decode(body).ok().map(|m| (BOTH, Some(Call::Read(m.key)))),
        3 => adb::TailIncrementRequest::decode(body).ok().map(|m| {
            let op = WriteOp::Inc {
                key: m.key,
                delta: m.incr_value,
            };
            (TAIL, callback_origin(m.host, m.port, m.cxid).map(|o| Call::Write(op, Some(o))))
        }),
        _ => adb::TailDeleteRequest::decode(body).ok().map(|m| {
            let op = WriteOp::Del { key: m.key };
            (TAIL, callback_origin(m.host, m.port, m.cxid).map(|o| Call::Write(op, Some(o))))
        }),
    };
    // `None` inside: the service answers INVALID_ARGUMENT without reaching the core.
    if let Some((variants, Some(call))) = decoded {
        feed_everywhere(variants, Addressee::Unaddressed, &call);
    }
}

/// `chainrep.ext`'s calls between chainrep replicas.
pub fn ext_requests(data: &[u8]) {
    let Some((kind, to, body)) = split(data) else { return };
    let decoded = match kind as usize % EXT_TYPES.len() {
        0 => ext::PullStateRequest::decode(body).ok().map(|m| {
            Call::Peer(PeerRequest::PullState {
                src: m.src,
                stateless: m.stateless,
                retained: m.retained,
            })
        }),
        _ => ext::ReplicateBatch::decode(body).ok().map(|m| {
            let src = m.src;
            // The update's own `src` field is ignored: the batch names the sender once.
            let proposals = m
                .updates
                .into_iter()
                .map(|u| PeerRequest::Propose {
                    src,
                    update: convert::tail_update_from_wire(u).1,
                })
                .collect();
            Call::Batch(proposals)
        }),
    };
    if let Some(call) = decoded {
        feed_everywhere(BOTH, Addressee::from_byte(to), &call);
    }
}

/// `service::callback_origin`, which is private to the service: the tail variant refuses a
/// write whose callback address is not a host and a port before the core sees it.
fn callback_origin(host: String, port: i32, cxid: i32) -> Option<ClientOrigin> {
    (!host.is_empty() && (1..=65535).contains(&port)).then_some(ClientOrigin { host, port, cxid })
}

/// What a replica forwards must reach its successor as it received it.
fn check_update_round_trip(src: u64, update: &chainrep::core::Update, tail: bool) {
    let back = if tail {
        convert::tail_update_from_wire(convert::tail_update_to_wire(src, update))
    } else {
        convert::head_update_from_wire(convert::head_update_to_wire(src, update))
    };
    assert_eq!(back, (src, update.clone()), "update round trip");
}

fn feed_everywhere(variants: &[Variant], to: Addressee, call: &Call) {
    for &variant in variants {
        for setup in ROLES {
            let mut s = Subject::new(setup, variant);
            feed(&mut s, to, call.clone());
            epilogue(&mut s);
        }
    }
}

fn feed(s: &mut Subject, to: Addressee, call: Call) {
    match call {
        Call::Peer(request) => {
            s.peer(to, request);
        }
        Call::Batch(requests) => {
            for request in requests {
                s.peer(to, request);
            }
        }
        Call::Write(op, origin) => {
            let _ = s.write(op, origin);
        }
        Call::Read(key) => {
            let _ = s.read(&key);
        }
    }
}

/// Whatever the input did, the replica must go on working: time passes, the lease is renewed,
/// and a client writes and reads (a state installed from the input is used, not just stored).
fn epilogue(s: &mut Subject) {
    s.tick(60);
    s.alive(0);
    s.tick(1_001);
    let origin = (s.variant() == Variant::Tail).then(|| crate::harness::seed_origin(1));
    let _ = s.write(
        WriteOp::Inc {
            key: "k0".into(),
            delta: 1,
        },
        origin,
    );
    let _ = s.read("k0");
}
