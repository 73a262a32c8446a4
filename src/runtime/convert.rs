//! chain.proto messages <-> core types. The head and tail variants carry the same updates;
//! the tail variant adds the client's callback address, which the head variant leaves empty.

use crate::core::{ClientOrigin, Store, Transfer, Update};
use crate::pb::adb;

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
    }
}

pub fn tail_transfer_from_wire(r: adb::TailStateTransferRequest) -> Transfer {
    Transfer {
        src: r.src,
        state_xid: r.state_xid,
        state: r.state.into_iter().collect(),
        sent: r.sent.into_iter().map(|u| tail_update_from_wire(u).1).collect(),
    }
}
