//! chain.proto messages <-> core types. The head and tail variants carry the same updates;
//! the tail variant adds the client's callback address, which the head variant leaves empty.

use crate::core::{ClientOrigin, StateDigest, Store, Transfer, Update, Xid};
use crate::pb::adb;
use crate::pb::chainrep::ext;

pub fn origin_from_wire(host: String, port: i32, cxid: i32) -> Option<ClientOrigin> {
    (!host.is_empty() && port > 0).then_some(ClientOrigin { host, port, cxid })
}

pub fn head_update_to_wire(src: u64, u: &Update) -> adb::HeadStateUpdateRequest {
    adb::HeadStateUpdateRequest {
        src,
        xid: u.xid,
        key: u.key.clone(),
        value: u.value,
    }
}

pub fn tail_update_to_wire(src: u64, u: &Update) -> adb::TailStateUpdateRequest {
    let (host, port, cxid) = match &u.origin {
        Some(o) => (o.host.clone(), o.port, o.cxid),
        None => (String::new(), 0, 0),
    };
    adb::TailStateUpdateRequest {
        src,
        xid: u.xid,
        key: u.key.clone(),
        value: u.value,
        host,
        port,
        cxid,
    }
}

pub fn head_update_from_wire(r: adb::HeadStateUpdateRequest) -> (u64, Update) {
    (
        r.src,
        Update {
            xid: r.xid,
            key: r.key,
            value: r.value,
            origin: None,
        },
    )
}

pub fn tail_update_from_wire(r: adb::TailStateUpdateRequest) -> (u64, Update) {
    let origin = origin_from_wire(r.host, r.port, r.cxid);
    (
        r.src,
        Update {
            xid: r.xid,
            key: r.key,
            value: r.value,
            origin,
        },
    )
}

fn state_to_wire(state: &Store) -> std::collections::HashMap<String, i32> {
    state.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

pub fn head_transfer_to_wire(t: &Transfer) -> adb::HeadStateTransferRequest {
    adb::HeadStateTransferRequest {
        src: t.src,
        state_xid: t.state_xid,
        state: state_to_wire(&t.state),
        sent: t.sent.iter().map(|u| head_update_to_wire(t.src, u)).collect(),
    }
}

pub fn tail_transfer_to_wire(t: &Transfer) -> adb::TailStateTransferRequest {
    adb::TailStateTransferRequest {
        src: t.src,
        state_xid: t.state_xid,
        state: state_to_wire(&t.state),
        sent: t.sent.iter().map(|u| tail_update_to_wire(t.src, u)).collect(),
    }
}

pub fn head_transfer_from_wire(r: adb::HeadStateTransferRequest) -> Transfer {
    Transfer {
        src: r.src,
        state_xid: r.state_xid,
        state: r.state.into_iter().collect(),
        sent: r.sent.into_iter().map(|u| head_update_from_wire(u).1).collect(),
        base: None,
    }
}

pub fn tail_transfer_from_wire(r: adb::TailStateTransferRequest) -> Transfer {
    Transfer {
        src: r.src,
        state_xid: r.state_xid,
        state: r.state.into_iter().collect(),
        sent: r.sent.into_iter().map(|u| tail_update_from_wire(u).1).collect(),
        base: None,
    }
}

pub fn digest_to_wire(d: StateDigest) -> Vec<u8> {
    d.0.to_le_bytes().to_vec()
}

/// `None` unless exactly 16 bytes.
pub fn digest_from_wire(bytes: &[u8]) -> Option<StateDigest> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some(StateDigest(u128::from_le_bytes(b)))
}

/// A transfer of only what the successor lacks (`Transfer::base` set).
pub fn delta_transfer_to_wire(t: &Transfer, base: (Xid, StateDigest)) -> ext::DeltaTransferRequest {
    ext::DeltaTransferRequest {
        delta: Some(tail_transfer_to_wire(t)),
        base_xid: base.0,
        base_digest: digest_to_wire(base.1),
    }
}

/// `None` if the request lacks its transfer or its digest is not 16 bytes.
pub fn delta_transfer_from_wire(r: ext::DeltaTransferRequest) -> Option<Transfer> {
    let base = (r.base_xid, digest_from_wire(&r.base_digest)?);
    let mut t = tail_transfer_from_wire(r.delta?);
    t.base = Some(base);
    Some(t)
}
