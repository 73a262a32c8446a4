//! The `zk_parse` target: member znode names and data, and the `--zk` connection string.
//!
//! Input layout: byte 0 is the length of the znode name (cut to what follows), then the name,
//! then the rest, used both as the znode's data and, when it is UTF-8, as a connection string.
//! The first 8 bytes after byte 0, when present, also make a session id to format and parse.

use chainrep::runtime::zk::{parse_connect_string, parse_member, parse_member_id, MemberError};

pub fn run(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else { return };
    if let Some(id) = rest.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes) {
        session_id_round_trip(id);
    }
    let (name, body) = rest.split_at((len as usize).min(rest.len()));
    // ZooKeeper hands names over as Java strings: always text.
    let name = String::from_utf8_lossy(name);
    member(&name, body);
    if let Ok(text) = std::str::from_utf8(body) {
        connect_string(text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        connect_string(text);
    }
}

/// Our own registration names the znode `format!("{id:x}")`: every such name must parse back.
fn session_id_round_trip(id: u64) {
    let name = format!("{id:x}");
    match parse_member_id(&name) {
        Ok(parsed) => assert_eq!(parsed, id, "{name}"),
        Err(e) => assert_eq!(id, 0, "{name} refused: {e}"),
    }
}

fn member(name: &str, data: &[u8]) {
    let id = parse_member_id(name);
    if let Ok(id) = id {
        assert_eq!(format!("{id:x}"), name, "an accepted name is the canonical spelling of its id");
    }
    match parse_member(name, data) {
        Ok(m) => {
            assert_eq!(
                id.as_ref().ok(),
                Some(&m.id),
                "parse_member and parse_member_id disagree on {name:?}"
            );
            assert_eq!(format!("{:x}", m.id), name);
            let (host, port) = m
                .addr
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("address {:?} has no port", m.addr));
            assert!(!host.is_empty(), "address {:?} has no host", m.addr);
            assert!(!host.contains('\n'), "address {:?} spans lines", m.addr);
            assert!(port.bytes().all(|b| b.is_ascii_digit()), "address {:?}: port not digits", m.addr);
            assert!(matches!(port.parse::<u16>(), Ok(1..)), "address {:?}: port out of range", m.addr);
            // The address we keep is the normal form of what was read: reading it back changes nothing.
            assert_eq!(
                parse_member(name, m.addr.as_bytes()).as_ref(),
                Ok(&m),
                "address {:?} does not read back",
                m.addr
            );
        }
        Err(e) => {
            let named = match &e {
                MemberError::NotSessionId { name }
                | MemberError::NotUtf8 { name }
                | MemberError::Empty { name }
                | MemberError::MissingPort { name, .. }
                | MemberError::EmptyHost { name, .. }
                | MemberError::BadPort { name, .. } => name,
            };
            assert_eq!(named, name, "the error names another znode: {e}");
            assert_eq!(id.is_err(), matches!(e, MemberError::NotSessionId { .. }), "{name:?}: {e}");
            let _ = e.to_string();
        }
    }
}

fn connect_string(s: &str) {
    let Ok((hosts, chroot)) = parse_connect_string(s) else { return };
    assert!(!hosts.is_empty(), "{s:?}: accepted with no hosts");
    for h in &hosts {
        let (host, port) = h.rsplit_once(':').unwrap_or_else(|| panic!("{s:?}: server {h:?} has no port"));
        assert!(!host.is_empty(), "{s:?}: server {h:?} has no host");
        assert!(!h.contains(',') && !h.contains('/'), "{s:?}: server {h:?} swallowed a separator");
        assert_eq!(h.trim(), h, "{s:?}: server {h:?} not trimmed");
        assert!(port.bytes().all(|b| b.is_ascii_digit()), "{s:?}: server {h:?}: port not digits");
        assert!(matches!(port.parse::<u16>(), Ok(1..)), "{s:?}: server {h:?}: port not in 1..=65535");
    }
    if let Some(c) = &chroot {
        assert!(c.starts_with('/') && c != "/", "{s:?}: chroot {c:?}");
        assert!(
            chainrep::runtime::zk::parse_connect_string(&format!("h:1{c}")).is_ok(),
            "{s:?}: chroot {c:?} does not read back"
        );
    }
    // What we parsed, written out again, reads the same.
    let rebuilt = format!("{}{}", hosts.join(","), chroot.as_deref().unwrap_or(""));
    assert_eq!(parse_connect_string(&rebuilt), Ok((hosts, chroot)), "{s:?} rebuilt as {rebuilt:?}");
}
