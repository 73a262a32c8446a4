//! Parsing of connection strings, znode paths and member znodes. Everything here comes from a
//! user or from ZooKeeper, so nothing panics and every error names what it rejected.

use crate::core::Member;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("znode name {name:?} is not a session id in lowercase hex without 0x")]
    NotSessionId { name: String },
    #[error("member {name}: data is not UTF-8")]
    NotUtf8 { name: String },
    #[error("member {name}: data is empty, expected host:port on the first line")]
    Empty { name: String },
    #[error("member {name}: {line:?} has no port, expected host:port")]
    MissingPort { name: String, line: String },
    #[error("member {name}: {line:?} has an empty host")]
    EmptyHost { name: String, line: String },
    #[error("member {name}: port {port:?} in {line:?} is not a number from 1 to 65535")]
    BadPort { name: String, line: String, port: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("ZooKeeper path {path:?} must start with '/'")]
    NotAbsolute { path: String },
    #[error("ZooKeeper path {path:?} must not end with '/'")]
    TrailingSlash { path: String },
    #[error("ZooKeeper path {path:?} has an empty component ('//')")]
    EmptyComponent { path: String },
    #[error("ZooKeeper path {path:?} has a relative component ('.' or '..')")]
    RelativeComponent { path: String },
    #[error("ZooKeeper path {path:?} contains a control character")]
    ControlCharacter { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectStringError {
    #[error("ZooKeeper connection string is empty, expected host:port[,host:port...][/chroot]")]
    Empty,
    #[error("ZooKeeper connection string {input:?} names no server before the chroot")]
    NoHosts { input: String },
    #[error("ZooKeeper server {entry:?} in {input:?} is empty (stray comma?)")]
    EmptyEntry { input: String, entry: String },
    #[error("ZooKeeper server {entry:?} has no port, expected host:port")]
    MissingPort { entry: String },
    #[error("ZooKeeper server {entry:?} has an empty host")]
    EmptyHost { entry: String },
    #[error("ZooKeeper server {entry:?}: port {port:?} is not a number from 1 to 65535")]
    BadPort { entry: String, port: String },
    #[error("bad chroot in ZooKeeper connection string: {0}")]
    BadChroot(#[source] PathError),
}

/// The session id a member znode name stands for. Only the canonical spelling our own
/// registration produces (`format!("{:x}")`) is accepted: `ABC`, `0abc` or `0xabc` would all
/// read as the same id as `abc` and make one session look like several members.
pub fn parse_member_id(name: &str) -> Result<u64, MemberError> {
    let not_id = || MemberError::NotSessionId { name: name.to_string() };
    if name.is_empty() || name.len() > 16 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(not_id());
    }
    let id = u64::from_str_radix(name, 16).map_err(|_| not_id())?;
    // ZooKeeper never hands out session id 0; and "0..." names are not canonical.
    if id == 0 || name.starts_with('0') {
        return Err(not_id());
    }
    Ok(id)
}

/// A member from its znode name and data: `host:port` on the first line, later lines ignored.
pub fn parse_member(name: &str, data: &[u8]) -> Result<Member, MemberError> {
    let id = parse_member_id(name)?;
    let text = std::str::from_utf8(data).map_err(|_| MemberError::NotUtf8 { name: name.to_string() })?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(MemberError::Empty { name: name.to_string() });
    }
    let (host, port) = split_host_port(line).map_err(|e| match e {
        HostPortError::MissingPort => MemberError::MissingPort {
            name: name.to_string(),
            line: line.to_string(),
        },
        HostPortError::EmptyHost => MemberError::EmptyHost {
            name: name.to_string(),
            line: line.to_string(),
        },
        HostPortError::BadPort(port) => MemberError::BadPort {
            name: name.to_string(),
            line: line.to_string(),
            port,
        },
    })?;
    Ok(Member {
        id,
        addr: format!("{host}:{port}"),
    })
}

enum HostPortError {
    MissingPort,
    EmptyHost,
    BadPort(String),
}

/// Splits at the last ':' so that `[::1]:7000` (and, leniently, `::1:7000`) work.
fn split_host_port(s: &str) -> Result<(&str, u16), HostPortError> {
    let (host, port) = s.rsplit_once(':').ok_or(HostPortError::MissingPort)?;
    if host.is_empty() {
        return Err(HostPortError::EmptyHost);
    }
    if port.is_empty() {
        return Err(HostPortError::MissingPort);
    }
    // `u16::from_str` accepts a leading '+'; a port is digits only.
    let bad = || HostPortError::BadPort(port.to_string());
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(p) => Ok((host, p)),
    }
}

/// Checks a znode path the way ZooKeeper's `PathUtils.validatePath` does, minus sequence
/// suffixes. `/` alone is valid.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let err = |f: fn(String) -> PathError| Err(f(path.to_string()));
    if !path.starts_with('/') {
        return err(|path| PathError::NotAbsolute { path });
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return err(|path| PathError::TrailingSlash { path });
    }
    if path
        .chars()
        .any(|c| c.is_control() || ('\u{e000}'..='\u{f8ff}').contains(&c) || ('\u{fff0}'..='\u{ffff}').contains(&c))
    {
        return err(|path| PathError::ControlCharacter { path });
    }
    for part in path[1..].split('/') {
        match part {
            "" => return err(|path| PathError::EmptyComponent { path }),
            "." | ".." => return err(|path| PathError::RelativeComponent { path }),
            _ => {}
        }
    }
    Ok(())
}

/// Splits `host:port[,host:port...][/chroot]` into its servers (as written, trimmed) and its
/// chroot. A chroot of `/` is the same as none.
pub fn parse_connect_string(s: &str) -> Result<(Vec<String>, Option<String>), ConnectStringError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ConnectStringError::Empty);
    }
    let (hosts_part, chroot) = match s.find('/') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let chroot = match chroot {
        None | Some("/") => None,
        Some(c) => {
            validate_path(c).map_err(ConnectStringError::BadChroot)?;
            Some(c.to_string())
        }
    };
    if hosts_part.trim().is_empty() {
        return Err(ConnectStringError::NoHosts { input: s.to_string() });
    }
    let mut hosts = Vec::new();
    for entry in hosts_part.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(ConnectStringError::EmptyEntry {
                input: s.to_string(),
                entry: entry.to_string(),
            });
        }
        split_host_port(entry).map_err(|e| match e {
            HostPortError::MissingPort => ConnectStringError::MissingPort { entry: entry.to_string() },
            HostPortError::EmptyHost => ConnectStringError::EmptyHost { entry: entry.to_string() },
            HostPortError::BadPort(port) => ConnectStringError::BadPort {
                entry: entry.to_string(),
                port,
            },
        })?;
        hosts.push(entry.to_string());
    }
    Ok((hosts, chroot))
}

/// `chroot` + `root` as one absolute path on the server.
pub(super) fn join_paths(chroot: Option<&str>, root: &str) -> String {
    match (chroot, root) {
        (None, root) => root.to_string(),
        (Some(c), "/") => c.to_string(),
        (Some(c), root) => format!("{c}{root}"),
    }
}

/// Path of a child of `parent`.
pub(super) fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, addr: &str) -> Member {
        Member {
            id,
            addr: addr.to_string(),
        }
    }

    #[test]
    fn member_ok() {
        assert_eq!(parse_member("1a2b", b"10.0.0.1:7000"), Ok(member(0x1a2b, "10.0.0.1:7000")));
        assert_eq!(parse_member("ffffffffffffffff", b"h:1\n"), Ok(member(u64::MAX, "h:1")));
        assert_eq!(parse_member("1", b"localhost:65535"), Ok(member(1, "localhost:65535")));
        assert_eq!(
            parse_member("72d5a8c0e9a10000", b"[::1]:7000"),
            Ok(member(0x72d5a8c0e9a10000, "[::1]:7000"))
        );
    }

    #[test]
    fn member_extra_lines_and_whitespace_ignored() {
        assert_eq!(parse_member("abc", b"h:7000\nsecond line\nthird"), Ok(member(0xabc, "h:7000")));
        assert_eq!(parse_member("abc", b"h:7000\r\nx"), Ok(member(0xabc, "h:7000")));
        assert_eq!(parse_member("abc", b"  h:7000  \n"), Ok(member(0xabc, "h:7000")));
        // Leading zeros in the port are tolerated but not kept.
        assert_eq!(parse_member("abc", b"h:07000"), Ok(member(0xabc, "h:7000")));
    }

    #[test]
    fn member_name_must_be_canonical_hex() {
        for name in [
            "",
            "xyz",
            "12g",
            "0x1a",
            "0X1A",
            "1A",
            "ABC",
            "01a",
            "0",
            "-1",
            "+1",
            " 1a",
            "1a ",
            "11111111111111111",
            "_probe-0000000001",
        ] {
            assert_eq!(
                parse_member(name, b"h:1"),
                Err(MemberError::NotSessionId { name: name.to_string() }),
                "name {name:?}"
            );
        }
    }

    #[test]
    fn member_bad_data() {
        let name = "abc".to_string();
        assert_eq!(parse_member("abc", b""), Err(MemberError::Empty { name: name.clone() }));
        assert_eq!(parse_member("abc", b"\nh:1"), Err(MemberError::Empty { name: name.clone() }));
        assert_eq!(parse_member("abc", b"  \n"), Err(MemberError::Empty { name: name.clone() }));
        assert_eq!(parse_member("abc", b"\xff\xfe"), Err(MemberError::NotUtf8 { name: name.clone() }));
        assert!(matches!(parse_member("abc", b"host"), Err(MemberError::MissingPort { .. })));
        assert!(matches!(parse_member("abc", b"host:"), Err(MemberError::MissingPort { .. })));
        assert!(matches!(parse_member("abc", b":7000"), Err(MemberError::EmptyHost { .. })));
        for port in ["0", "65536", "99999999999", "-1", "+80", "7o", " 80", "80 1"] {
            let data = format!("host:{port}");
            assert_eq!(
                parse_member("abc", data.as_bytes()),
                Err(MemberError::BadPort {
                    name: name.clone(),
                    line: data.clone(),
                    port: port.to_string()
                }),
                "port {port:?}"
            );
        }
    }

    #[test]
    fn member_errors_name_the_znode() {
        let msg = parse_member("abc", b"host:0").unwrap_err().to_string();
        assert!(msg.contains("abc") && msg.contains("host:0"), "{msg}");
        let msg = parse_member("NOPE", b"host:1").unwrap_err().to_string();
        assert!(msg.contains("NOPE"), "{msg}");
    }

    #[test]
    fn connect_string_ok() {
        assert_eq!(
            parse_connect_string("127.0.0.1:2181"),
            Ok((vec!["127.0.0.1:2181".to_string()], None))
        );
        assert_eq!(
            parse_connect_string(" a:1, b:2 ,c:65535/app/x "),
            Ok((
                vec!["a:1".to_string(), "b:2".to_string(), "c:65535".to_string()],
                Some("/app/x".to_string())
            ))
        );
        assert_eq!(parse_connect_string("a:1/"), Ok((vec!["a:1".to_string()], None)));
        assert_eq!(
            parse_connect_string("[::1]:2181/c"),
            Ok((vec!["[::1]:2181".to_string()], Some("/c".to_string())))
        );
    }

    #[test]
    fn connect_string_errors() {
        assert_eq!(parse_connect_string(""), Err(ConnectStringError::Empty));
        assert_eq!(parse_connect_string("   "), Err(ConnectStringError::Empty));
        assert!(matches!(parse_connect_string("/chroot"), Err(ConnectStringError::NoHosts { .. })));
        assert!(matches!(
            parse_connect_string("a:1,,b:2"),
            Err(ConnectStringError::EmptyEntry { .. })
        ));
        assert!(matches!(parse_connect_string("a:1,"), Err(ConnectStringError::EmptyEntry { .. })));
        assert_eq!(
            parse_connect_string("zk"),
            Err(ConnectStringError::MissingPort { entry: "zk".to_string() })
        );
        assert_eq!(
            parse_connect_string("zk:"),
            Err(ConnectStringError::MissingPort { entry: "zk:".to_string() })
        );
        assert_eq!(
            parse_connect_string(":2181"),
            Err(ConnectStringError::EmptyHost {
                entry: ":2181".to_string()
            })
        );
        for port in ["0", "65536", "x", "-1", "+2181"] {
            let s = format!("zk:{port}");
            assert_eq!(
                parse_connect_string(&s),
                Err(ConnectStringError::BadPort {
                    entry: s.clone(),
                    port: port.to_string()
                }),
                "{s}"
            );
        }
        assert!(matches!(
            parse_connect_string("a:1/app/"),
            Err(ConnectStringError::BadChroot(PathError::TrailingSlash { .. }))
        ));
        assert!(matches!(
            parse_connect_string("a:1/app//x"),
            Err(ConnectStringError::BadChroot(PathError::EmptyComponent { .. }))
        ));
        assert!(matches!(
            parse_connect_string("a:1/app/../x"),
            Err(ConnectStringError::BadChroot(PathError::RelativeComponent { .. }))
        ));
        assert!(matches!(
            parse_connect_string("a:1/ap\u{1}p"),
            Err(ConnectStringError::BadChroot(PathError::ControlCharacter { .. }))
        ));
        let msg = parse_connect_string("zk:99999").unwrap_err().to_string();
        assert!(msg.contains("zk:99999") && msg.contains("65535"), "{msg}");
    }

    #[test]
    fn paths() {
        assert_eq!(validate_path("/"), Ok(()));
        assert_eq!(validate_path("/a/b"), Ok(()));
        assert!(validate_path("a").is_err());
        assert!(validate_path("").is_err());
        assert_eq!(join_paths(None, "/headchain"), "/headchain");
        assert_eq!(join_paths(Some("/app"), "/headchain"), "/app/headchain");
        assert_eq!(join_paths(Some("/app"), "/"), "/app");
        assert_eq!(child_path("/", "ab"), "/ab");
        assert_eq!(child_path("/r", "ab"), "/r/ab");
    }
}
