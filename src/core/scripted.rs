//! Scripted scenarios: text files in `src/core/testdata/` that drive a cluster of replicas
//! (the in-memory `testkit`) step by step and show every message, reply and state change that
//! follows, in the style of etcd-io/raft's data-driven tests. They document the protocol as
//! much as they test it: each file reads as a walk through one situation.
//!
//! A file is a sequence of blocks: a command line, `----`, then the output it must produce,
//! ended by a blank line. Lines starting with `#` outside a block are comments.
//! `CHAINREP_REWRITE_TESTDATA=1 cargo test --lib scripted` rewrites the expected outputs from
//! what the code does now; read the diff before committing it.
//!
//! Commands (ids are session ids; the lowest in a view is the head):
//! - `chain head|tail ID...`: a settled chain of these replicas, the lowest started it alone.
//! - `add ID`, `view ID... [to ID...]`: a new replica; a membership view (to everyone, or to some).
//! - `inc AT KEY DELTA [cxid=N]`, `del AT KEY [cxid=N]`, `get AT KEY`: client calls at replica AT
//!   (`cxid` gives the tail variant's callback origin, `client:9000`).
//! - `deliver [FROM]`: deliver queued messages until none is left (or FROM's oldest one only),
//!   printing `FROM->TO request => reply` for each.
//! - `drop FROM`: FROM's oldest message is lost; the sender hears `unreachable`.
//! - `tick`, `advance MS` (renews every lease not paused), `pause-lease ID`, `resume-lease ID`,
//!   `crash ID`.
//! - `zk`: what each replica has asked of its coordinator so far (joins, marker, rejoins).
//! - `marker ID created|existed`: ZooKeeper's answer about the chain's held-state marker.
//! - `status`: every replica's role and what it holds; `clients`: client calls completed and
//!   callbacks made since the last `clients`.

use super::testkit::*;
use super::*;
use std::fmt::Write as _;

struct Script {
    c: Cluster,
    /// Completed client calls and callbacks already printed, per replica.
    seen: BTreeMap<NodeId, (usize, usize)>,
}

fn cfg(variant: &str) -> Result<Config, String> {
    let variant = match variant {
        "head" => Variant::Head,
        "tail" => Variant::Tail,
        other => return Err(format!("variant must be head or tail, not {other:?}")),
    };
    Ok(Config {
        variant,
        ..Config::default()
    })
}

fn id(s: &str) -> Result<NodeId, String> {
    s.parse().map_err(|_| format!("not a replica id: {s:?}"))
}

fn ids(words: &[&str]) -> Result<Vec<NodeId>, String> {
    words.iter().map(|w| id(w)).collect()
}

fn show_update(u: &Update) -> String {
    let mut s = format!("{}:{}={}", u.xid, u.key, u.value);
    if let Some(o) = &u.origin {
        let _ = write!(s, "(cxid {})", o.cxid);
    }
    s
}

fn show_request(r: &PeerRequest) -> String {
    match r {
        PeerRequest::Propose { src, update } => format!("propose src={src} {}", show_update(update)),
        PeerRequest::Transfer(t) => {
            let state: Vec<String> = t.state.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let sent: Vec<String> = t.sent.iter().map(show_update).collect();
            let kind = match t.base {
                Some((xid, _)) => format!("delta since {xid}"),
                None => "transfer".to_string(),
            };
            format!(
                "{kind} src={} xid={} state={{{}}} sent=[{}]",
                t.src,
                t.state_xid,
                state.join(" "),
                sent.join(" ")
            )
        }
        PeerRequest::XidProcessed(x) => format!("xidProcessed {x}"),
        PeerRequest::GetLatestXid => "getLatestXid".to_string(),
        PeerRequest::PullState { src, stateless, retained } => {
            format!("pullState src={src} stateless={stateless:?} retained={retained}")
        }
        PeerRequest::Held => "held?".to_string(),
    }
}

fn show_reply(r: &PeerReply) -> String {
    match r {
        PeerReply::Accepted => "ok".into(),
        PeerReply::Refused => "refused".into(),
        PeerReply::Unreachable => "unreachable".into(),
        PeerReply::LatestXid(Some(x)) => format!("latest {x}"),
        PeerReply::LatestXid(None) => "not the tail".into(),
        PeerReply::Pulled(PullAnswer::State(t)) => format!("state xid={} keys={}", t.state_xid, t.state.len()),
        PeerReply::Pulled(PullAnswer::NotNow) => "not now".into(),
        PeerReply::Pulled(PullAnswer::NoState) => "no state".into(),
        PeerReply::Pulled(PullAnswer::Retained(m)) => format!("retained copy xid={}", m.xid),
        PeerReply::Held(Some((x, _))) => format!("holds xid={x}"),
        PeerReply::Held(None) => "holds nothing".into(),
    }
}

impl Script {
    fn run(&mut self, line: &str, out: &mut String) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = words.split_first().ok_or("empty command")?;
        match (*cmd, args) {
            ("chain", [variant, rest @ ..]) => {
                self.c = Cluster::with_nodes(cfg(variant)?, &ids(rest)?);
                self.seen.clear();
                self.status(out);
            }
            ("add", [n]) => self.c.add(id(n)?),
            ("view", rest) => match rest.iter().position(|w| *w == "to") {
                Some(i) => self.c.set_view_for(&ids(&rest[i + 1..])?, &ids(&rest[..i])?),
                None => self.c.set_view(&ids(rest)?),
            },
            ("inc" | "del", [at, key, rest @ ..]) => {
                let at = id(at)?;
                let (op, rest) = match (*cmd, rest) {
                    ("inc", [delta, rest @ ..]) => {
                        let delta = delta.parse().map_err(|_| format!("not a delta: {delta:?}"))?;
                        (
                            WriteOp::Inc {
                                key: key.to_string(),
                                delta,
                            },
                            rest,
                        )
                    }
                    ("del", rest) => (WriteOp::Del { key: key.to_string() }, rest),
                    _ => return Err("inc AT KEY DELTA".into()),
                };
                let origin = match rest {
                    [] => None,
                    [c] => {
                        let cxid = c.strip_prefix("cxid=").and_then(|n| n.parse().ok()).ok_or("cxid=N")?;
                        Some(ClientOrigin {
                            host: "client".into(),
                            port: 9000,
                            cxid,
                        })
                    }
                    _ => return Err("too many arguments".into()),
                };
                let (token, result) = self.c.write_at(at, op, origin);
                match result {
                    Ok(WriteAccepted::Pending(x)) => writeln!(out, "call {token}: waits for xid {x}"),
                    Ok(WriteAccepted::Forwarded(x)) => writeln!(out, "call {token}: rc=0, xid {x}"),
                    Err(e) => writeln!(out, "call {token}: refused: {e}"),
                }
                .map_err(|e| e.to_string())?;
            }
            ("get", [at, key]) => {
                let r = self.c.get(id(at)?).client_read(key);
                let _ = writeln!(out, "{r:?}");
            }
            ("deliver", []) => {
                for _ in 0..1000 {
                    let senders: Vec<NodeId> = self.c.ids().into_iter().filter(|i| !self.c.pending_from(*i).is_empty()).collect();
                    if senders.is_empty() {
                        return Ok(());
                    }
                    for from in senders {
                        while self.step(from, out) {}
                    }
                }
                return Err("messages still flowing after 1000 rounds".into());
            }
            ("deliver", [from]) => {
                if !self.step(id(from)?, out) {
                    let _ = writeln!(out, "nothing queued at {from}");
                }
            }
            ("drop", [from]) => {
                let from = id(from)?;
                let msg = self.c.take(from, 0).ok_or(format!("nothing queued at {from}"))?;
                let _ = writeln!(out, "{from}->{} {} lost", msg.to.id, show_request(&msg.request));
                self.c.reply(from, &msg, PeerReply::Unreachable);
            }
            ("tick", []) => self.c.tick_all(),
            ("advance", [ms]) => self.c.advance(ms.parse().map_err(|_| "advance MS")?),
            ("pause-lease", [n]) => {
                self.c.lease_paused.insert(id(n)?);
            }
            ("resume-lease", [n]) => {
                self.c.lease_paused.remove(&id(n)?);
            }
            ("zk", []) => {
                for (id, r) in &self.c.replicas {
                    let k = r.coordinator();
                    let _ = writeln!(
                        out,
                        "{id}: asked to join {}, for the marker {}, to rejoin {}",
                        k.joins, k.marker_requests, k.rejoins
                    );
                }
            }
            ("crash", [n]) => {
                self.c.crash(id(n)?);
            }
            ("marker", [n, answer]) => {
                let answer = match *answer {
                    "created" => ChainMarker::Created,
                    "existed" => ChainMarker::Existed,
                    other => return Err(format!("created or existed, not {other:?}")),
                };
                self.c.get_mut(id(n)?).on_chain_marker(answer);
            }
            ("status", []) => self.status(out),
            ("clients", []) => self.clients(out),
            _ => return Err(format!("unknown command or arguments: {line:?}")),
        }
        Ok(())
    }

    /// Deliver `from`'s oldest queued message; false if there is none.
    fn step(&mut self, from: NodeId, out: &mut String) -> bool {
        let Some(msg) = self.c.take(from, 0) else { return false };
        let reply = self.c.serve(&msg);
        let _ = writeln!(
            out,
            "{from}->{} {} => {}",
            msg.to.id,
            show_request(&msg.request),
            show_reply(&reply)
        );
        self.c.reply(from, &msg, reply);
        true
    }

    fn status(&self, out: &mut String) {
        for (id, r) in &self.c.replicas {
            let d = r.describe();
            let state: Vec<String> = r.store().iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "{id}: {} {} xid={} tail-xid={} sent={} waiting={} {{{}}}",
                d.role.as_str(),
                if d.holds_state { "holds-state" } else { "no-state" },
                d.last_applied,
                d.tail_processed,
                d.sent_len,
                d.pending_len,
                state.join(" ")
            );
        }
    }

    fn clients(&mut self, out: &mut String) {
        for (id, r) in &self.c.replicas {
            let seen = self.seen.entry(*id).or_default();
            for (token, outcome) in &r.net().completed[seen.0..] {
                let _ = writeln!(out, "{id}: call {token}: {outcome:?}");
            }
            for o in &r.net().notified[seen.1..] {
                let _ = writeln!(out, "{id}: callback cxid {}", o.cxid);
            }
            *seen = (r.net().completed.len(), r.net().notified.len());
        }
    }
}

/// Runs one file; returns the file as it should be (expected outputs replaced by actual ones).
fn run_file(text: &str) -> Result<String, String> {
    let mut script = Script {
        c: Cluster::new(Config::default()),
        seen: BTreeMap::new(),
    };
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        if lines.next() != Some("----") {
            return Err(format!("{line:?} must be followed by a line `----`"));
        }
        let mut expected = String::new();
        while let Some(l) = lines.next_if(|l| !l.is_empty()) {
            expected.push_str(l);
            expected.push('\n');
        }
        let mut actual = String::new();
        script.run(line, &mut actual).map_err(|e| format!("{line}: {e}"))?;
        let _ = write!(rewritten, "{line}\n----\n{actual}");
    }
    Ok(rewritten)
}

#[test]
fn scripted_scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core/testdata");
    let rewrite = std::env::var_os("CHAINREP_REWRITE_TESTDATA").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let mut failed = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.display().to_string();
        match run_file(&text) {
            Err(e) => failed.push(format!("{name}: {e}")),
            Ok(actual) if actual == text => {}
            Ok(actual) if rewrite => std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{name}: {e}")),
            Ok(actual) => {
                let first = text.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
                failed.push(format!(
                    "{name}: output differs from line {}:\n  expected: {:?}\n  actual:   {:?}\n(CHAINREP_REWRITE_TESTDATA=1 cargo test --lib scripted rewrites it)",
                    first + 1,
                    text.lines().nth(first).unwrap_or(""),
                    actual.lines().nth(first).unwrap_or("")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
