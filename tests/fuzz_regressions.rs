//! Inputs the fuzz targets in `fuzz/` found crashing, replayed through the very code the targets
//! run: their modules are included from `fuzz/src/` by path, so a stable `cargo test` checks
//! them without nightly or libFuzzer. Each crash is a file under `fuzz/regressions/<target>/`
//! and a test below saying what it was; the committed seed corpora are replayed too.
//!
//! The core targets use the core's testkit, which only the `sim` feature builds, so their tests
//! run under `cargo test --features sim` (as `scripts/test` does); the parser's run always.
//!
//! `cargo test --features sim --test fuzz_regressions -- --ignored write_seed_corpora` rewrites
//! the seed corpora in `fuzz/corpus/`.

#[allow(dead_code)]
#[path = "../fuzz/src/zk.rs"]
mod zk;

#[allow(dead_code)]
#[path = "../fuzz/src/log_reader.rs"]
mod log_reader;

#[cfg(feature = "sim")]
#[allow(dead_code)]
#[path = "../fuzz/src/harness.rs"]
mod harness;

#[cfg(feature = "sim")]
#[allow(dead_code)]
#[path = "../fuzz/src/wire.rs"]
mod wire;

#[cfg(feature = "sim")]
#[allow(dead_code)]
#[path = "../fuzz/src/events.rs"]
mod events;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file of `fuzz/<dir>/<target>/`, sorted, so that a failure names the same file each run.
fn files(dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `run` on every input in `fuzz/regressions/<target>/` and `fuzz/corpus/<target>/seed-*`.
fn replay_all(target: &str, run: fn(&[u8])) -> usize {
    let mut inputs = files("regressions", target);
    inputs.extend(
        files("corpus", target)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
    );
    for path in &inputs {
        let data = read(path);
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            panic!("{target} fails on {}: {}", path.display(), panic_message(&panic));
        }
    }
    inputs.len()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[test]
fn zk_parse_inputs_replay() {
    assert!(
        replay_all("zk_parse", zk::run) > 0,
        "no zk_parse seeds found under fuzz/corpus/zk_parse"
    );
}

#[test]
fn log_reader_inputs_replay() {
    assert!(
        replay_all("log_reader", log_reader::run) > 0,
        "no log_reader seeds found under fuzz/corpus/log_reader"
    );
}

/// Rewrites `fuzz/corpus/log_reader/seed-*`: segment files as the log writes them (whole, cut
/// short, zero-filled at the end, damaged in the middle, header only) and a snapshot file.
/// `cargo test --test fuzz_regressions -- --ignored write_log_reader_seeds`.
#[test]
#[ignore]
fn write_log_reader_seeds() {
    use chainrep::storage::segment::SegmentHeader;
    use chainrep::storage::{record, snapshot, Record};
    let mut whole = SegmentHeader { seq: 0, base_xid: 0 }.encode().to_vec();
    for (i, key) in ["a", "bb", "ключ", "a", "c"].iter().enumerate() {
        record::encode(
            &Record::Update {
                xid: i as u64 + 1,
                key: key.to_string(),
                value: i as i32 * 7 - 3,
            },
            &mut whole,
        )
        .unwrap();
        if i == 2 {
            record::encode(
                &Record::ViewMark(chainrep::core::ViewMark {
                    version: 4,
                    members: vec!["h:1".into()],
                }),
                &mut whole,
            )
            .unwrap();
        }
    }
    let cut = whole[..whole.len() - 5].to_vec();
    let mut zero_tail = whole.clone();
    let n = zero_tail.len();
    zero_tail[n - 9..].fill(0);
    let mut damaged = whole.clone();
    damaged[50] ^= 0x08;
    let header_only = SegmentHeader { seq: 0, base_xid: 0 }.encode().to_vec();
    let store = [("a".to_string(), 5), ("b".to_string(), -1)].into_iter().collect();
    let snap = snapshot::encode(
        1,
        9,
        &chainrep::core::ViewMark {
            version: 2,
            members: vec!["h:1".into()],
        },
        &store,
    )
    .unwrap();
    let dir = fuzz_dir().join("corpus").join("log_reader");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in [whole, cut, zero_tail, damaged, header_only, snap].iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

#[cfg(feature = "sim")]
mod core_targets {
    use super::*;

    fn regression(target: &str, name: &str) -> Vec<u8> {
        read(&fuzz_dir().join("regressions").join(target).join(name))
    }

    #[test]
    fn peer_requests_inputs_replay() {
        assert!(replay_all("peer_requests", wire::peer_requests) > 0);
    }

    #[test]
    fn client_requests_inputs_replay() {
        assert!(replay_all("client_requests", wire::client_requests) > 0);
    }

    #[test]
    fn ext_requests_inputs_replay() {
        assert!(replay_all("ext_requests", wire::ext_requests) > 0);
    }

    #[test]
    fn event_sequence_inputs_replay() {
        assert!(replay_all("event_sequence", events::run) > 0);
    }

    /// A `stateTransfer` whose sent list is longer than `max_sent` was installed whole: the
    /// receiver's sent list exceeded its bound (found by `event_sequence`, a middle replica
    /// given a transfer with 64 sent entries against a bound of 16).
    #[test]
    fn transfer_with_oversized_sent_list_keeps_the_bound() {
        events::run(&regression("event_sequence", "transfer-sent-over-bound"));
    }

    /// A `stateTransfer` with `stateXid` = 2^64-1, accepted by a tail: `mark_processed`
    /// computed `tail_processed + 1` and overflowed (a panic in debug builds; in release builds
    /// the head variant's waiting clients were never answered). Found by `event_sequence`; the
    /// second input is the same call as it arrives on the wire.
    #[test]
    fn transfer_to_the_last_xid_does_not_overflow() {
        events::run(&regression("event_sequence", "transfer-xid-max"));
        wire::peer_requests(&regression("peer_requests", "transfer-xid-max"));
    }

    /// Prints the scenario an `event_sequence` input decodes to: `FUZZ_INPUT=path cargo test
    /// --features sim --test fuzz_regressions -- --ignored show_event_input --nocapture`.
    #[test]
    #[ignore]
    fn show_event_input() {
        use arbitrary::{Arbitrary, Unstructured};
        let path = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT names the input file");
        let data = read(Path::new(&path));
        match events::Scenario::arbitrary_take_rest(Unstructured::new(&data)) {
            Ok(s) => println!("{s:#?}"),
            Err(e) => println!("does not decode to a scenario: {e}"),
        }
    }

    /// Rewrites the seed corpora: a handful of valid inputs per target.
    #[test]
    #[ignore]
    fn write_seed_corpora() {
        seeds::write_all();
    }

    mod seeds {
        use super::*;
        use chainrep::pb::adb;
        use chainrep::pb::chainrep::ext;
        use harness::{A, B};
        use prost::Message;

        /// Byte 1 of a wire input that addresses the replica itself (see `Addressee::from_byte`).
        const TO_ME: u8 = 3;
        const TO_OTHER: u8 = 2;

        fn wire(kind: u8, to: u8, msg: impl Message) -> Vec<u8> {
            let mut out = vec![kind, to];
            out.extend(msg.encode_to_vec());
            out
        }

        fn head_update(src: u64, xid: u64, key: &str, value: i32) -> adb::HeadStateUpdateRequest {
            adb::HeadStateUpdateRequest {
                src,
                xid,
                key: key.into(),
                value,
            }
        }

        fn tail_update(src: u64, xid: u64, key: &str, value: i32) -> adb::TailStateUpdateRequest {
            adb::TailStateUpdateRequest {
                src,
                xid,
                key: key.into(),
                value,
                host: "client".into(),
                port: 9000,
                cxid: xid as i32,
            }
        }

        fn state() -> std::collections::HashMap<String, i32> {
            [("k0", 2), ("k1", 5), ("k3", 7)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        }

        fn write(target: &str, seeds: Vec<Vec<u8>>) {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for old in files("corpus", target) {
                if old.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
                    std::fs::remove_file(old).unwrap();
                }
            }
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
            }
        }

        pub fn write_all() {
            write(
                "peer_requests",
                vec![
                    wire(0, TO_ME, head_update(A, 8, "k1", 5)),
                    wire(0, TO_ME, head_update(B, 8, "k4", 0)),
                    wire(1, TO_ME, tail_update(B, 8, "k4", 2)),
                    wire(1, TO_OTHER, tail_update(A, 10, "k0", -1)),
                    wire(
                        2,
                        TO_ME,
                        adb::HeadStateTransferRequest {
                            src: A,
                            state_xid: 9,
                            state: state(),
                            sent: vec![head_update(A, 8, "k1", 5), head_update(A, 9, "k0", 2)],
                        },
                    ),
                    wire(
                        3,
                        TO_ME,
                        adb::TailStateTransferRequest {
                            src: B,
                            state_xid: 9,
                            state: state(),
                            sent: vec![tail_update(B, 8, "k1", 5), tail_update(B, 9, "k0", 2)],
                        },
                    ),
                    wire(4, TO_ME, adb::XidProcessedRequest { xid: 5 }),
                    wire(5, TO_ME, adb::LatestXidRequest {}),
                ],
            );
            let client = |host: &str, port| (host.to_string(), port, 7);
            let (host, port, cxid) = client("client", 9000);
            write(
                "client_requests",
                vec![
                    wire(
                        0,
                        0,
                        adb::IncrementRequest {
                            key: "k0".into(),
                            incr_value: 3,
                        },
                    ),
                    wire(
                        0,
                        0,
                        adb::IncrementRequest {
                            key: "k9".into(),
                            incr_value: i32::MAX,
                        },
                    ),
                    wire(1, 0, adb::DeleteRequest { key: "k2".into() }),
                    wire(2, 0, adb::GetRequest { key: "k0".into() }),
                    wire(2, 0, adb::GetRequest { key: String::new() }),
                    wire(
                        3,
                        0,
                        adb::TailIncrementRequest {
                            key: "k1".into(),
                            incr_value: -4,
                            host: host.clone(),
                            port,
                            cxid,
                        },
                    ),
                    wire(
                        4,
                        0,
                        adb::TailDeleteRequest {
                            key: "k0".into(),
                            host,
                            port,
                            cxid,
                        },
                    ),
                ],
            );
            write(
                "ext_requests",
                vec![
                    wire(
                        0,
                        TO_ME,
                        ext::PullStateRequest {
                            src: A,
                            stateless: vec![],
                            retained: false,
                        },
                    ),
                    wire(
                        0,
                        TO_ME,
                        ext::PullStateRequest {
                            src: A,
                            stateless: vec![B],
                            retained: true,
                        },
                    ),
                    wire(
                        1,
                        TO_ME,
                        ext::ReplicateBatch {
                            src: A,
                            updates: vec![tail_update(A, 8, "k1", 1), tail_update(A, 9, "k0", 0), tail_update(A, 11, "k2", 4)],
                        },
                    ),
                    wire(
                        1,
                        TO_ME,
                        ext::ReplicateBatch {
                            src: B,
                            updates: vec![tail_update(B, 8, "k4", 2)],
                        },
                    ),
                ],
            );
            let zk = |name: &str, rest: &str| {
                let mut v = vec![name.len() as u8];
                v.extend(name.bytes());
                v.extend(rest.bytes());
                v
            };
            write(
                "zk_parse",
                vec![
                    zk("1a2b", "10.0.0.1:7000"),
                    zk("72d5a8c0e9a10000", "[::1]:7000\nsecond line"),
                    zk("ffffffffffffffff", "h:65535\r\n"),
                    zk("", "127.0.0.1:2181,zk2:2182/app/chain"),
                    zk("", " a:1, b:2 ,c:65535/"),
                    zk("0abc", "host:0"),
                ],
            );
            write("event_sequence", event_seeds());
        }

        /// Scenarios are `arbitrary`'s encoding, which has no writer: draw byte strings from a
        /// fixed generator and keep the first few that decode to long, varied scenarios.
        fn event_seeds() -> Vec<Vec<u8>> {
            use arbitrary::{Arbitrary, Unstructured};
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut seeds = Vec::new();
            let mut starts = std::collections::BTreeSet::new();
            while seeds.len() < 8 {
                let len = 96 + (next() % 160) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let Ok(s) = events::Scenario::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                    continue;
                };
                let kinds: std::collections::HashSet<_> = s.events.iter().map(std::mem::discriminant).collect();
                // One seed per prepared role, each exercising many kinds of events.
                if s.events.len() >= 8 && kinds.len() >= 6 && starts.insert(format!("{:?}", s.start)) {
                    events::play(&s);
                    seeds.push(bytes);
                }
            }
            seeds
        }
    }
}
