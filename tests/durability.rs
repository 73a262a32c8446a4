//! Replicas with `--data-dir` against real processes: every replica killed with `kill -9`
//! (all a process can tell of a power loss) and started again on its data dir, whole or torn
//! or corrupted logs. Real ZooKeeper, real sockets.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chainrep::client::{ChainClient, ClientError};
use chainrep::core::Variant;
use support::chain::{client, start_zk, wait_chain, ReplicaProc};
use support::metrics::{scrape, value};
use support::zk::free_port;

const ROOT: &str = "/durable";

/// One replica "machine": a port and a data dir that outlive its processes.
struct Host {
    port: u16,
    data: PathBuf,
    proc: Option<ReplicaProc>,
}

impl Host {
    fn new(dir: &Path, name: &str) -> Host {
        Host {
            port: free_port().expect("free port"),
            data: dir.join(name),
            proc: None,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self, zk: &str, variant: Variant) {
        self.start_with(zk, variant, &[]);
    }

    fn start_with(&mut self, zk: &str, variant: Variant, extra: &[&str]) {
        let data = self.data.to_str().expect("utf-8 temp path").to_string();
        let args: Vec<&str> = ["--data-dir", data.as_str()].into_iter().chain(extra.iter().copied()).collect();
        self.proc = Some(ReplicaProc::start_on(zk, ROOT, variant, self.port, &args));
    }

    fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
    }

    fn log(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The data dir's only write-ahead log segment with records in it (the newest).
    fn newest_segment(&self) -> PathBuf {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&self.data)
            .expect("data dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
            })
            .collect();
        segments.sort();
        segments.pop().expect("a segment in the data dir")
    }
}

/// Where a segment's records end: the zeros after them are preallocated space.
fn records_end(segment: &[u8]) -> usize {
    segment.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Writers that each increment keys of their own, one write per key, so that a key reads 1
/// exactly when its write was applied. Returns, per key, whether the write was acknowledged
/// (`true`) or its outcome is unknown (`false`); refused writes (nothing applied) are left out.
async fn write_until(c: Arc<ChainClient>, writers: usize, stop: Arc<AtomicBool>) -> BTreeMap<String, bool> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (c, stop) = (c.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i}");
                i += 1;
                match c.inc(&key, 1).await {
                    Ok(()) => {
                        seen.insert(key, true);
                    }
                    Err(ClientError::Unknown(_)) => {
                        seen.insert(key, false);
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            seen
        }));
    }
    let mut all = BTreeMap::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    all
}

/// Every acknowledged write reads 1; a write of unknown outcome reads 0 or 1.
async fn check_writes(c: &ChainClient, writes: &BTreeMap<String, bool>) {
    let mut acked = 0;
    for (key, was_acked) in writes {
        let v = c.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        if *was_acked {
            acked += 1;
            assert_eq!(v, 1, "{key} was acknowledged and reads {v}");
        } else {
            assert!(v == 0 || v == 1, "{key} reads {v}");
        }
    }
    assert!(acked > 0, "no write was acknowledged before the kill: the test proved nothing");
}

/// A chain of three on data dirs, a write load, every replica killed at once with `kill -9`
/// while writes are in flight.
async fn three_killed_under_load(variant: Variant) -> (support::zk::ZkServer, tempfile::TempDir, Vec<Host>, BTreeMap<String, bool>) {
    let zk = start_zk();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hosts: Vec<Host> = ["a", "b", "c"].iter().map(|n| Host::new(dir.path(), n)).collect();
    for h in hosts.iter_mut() {
        h.start(&zk.connect_string(), variant);
    }
    let c = Arc::new(client(&zk.connect_string(), ROOT, variant).await);
    let addrs: Vec<String> = hosts.iter().map(Host::addr).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    wait_chain(&c, &addr_refs, Duration::from_secs(30)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_until(c.clone(), 8, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for h in hosts.iter_mut() {
        h.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    let writes = load.await.expect("load");
    (zk, dir, hosts, writes)
}

/// The chain re-forms from `hosts`, every one synced, and holds every acknowledged write.
async fn every_write_is_back(zk: &str, variant: Variant, hosts: &[Host], writes: &BTreeMap<String, bool>) {
    let c = client(zk, ROOT, variant).await;
    let addrs: Vec<String> = hosts.iter().map(Host::addr).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    wait_chain(&c, &addr_refs, Duration::from_secs(60)).await;
    check_writes(&c, writes).await;
    c.close().await;
}

async fn restart_all_in_order(variant: Variant, order: [usize; 3]) {
    let (zk, _dir, mut hosts, writes) = three_killed_under_load(variant).await;
    for i in order {
        hosts[i].start(&zk.connect_string(), variant);
    }
    every_write_is_back(&zk.connect_string(), variant, &hosts, &writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_killed_under_load_comes_back_with_every_acknowledged_write() {
    restart_all_in_order(Variant::Head, [0, 1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_in_reverse_order_the_chain_still_has_every_acknowledged_write() {
    restart_all_in_order(Variant::Head, [2, 1, 0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_variant_every_replica_killed_comes_back_with_every_acknowledged_write() {
    restart_all_in_order(Variant::Tail, [1, 2, 0]).await;
}

/// Any one replica's disk has every acknowledged write: each write is on disk at every replica
/// before it is acknowledged. Only the middle's disk survives (neither the head that took the
/// writes nor the tail that acknowledged them); the other two machines come back with empty
/// data dirs, at their addresses, which is also how an operator lets a chain go on without
/// replicas whose disks are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_of_any_single_replica_has_every_acknowledged_write() {
    let (zk, dir, mut hosts, writes) = three_killed_under_load(Variant::Head).await;
    for (i, h) in hosts.iter_mut().enumerate() {
        if i != 1 {
            h.data = dir.path().join(format!("replaced-{i}"));
        }
        h.start(&zk.connect_string(), Variant::Head);
    }
    every_write_is_back(&zk.connect_string(), Variant::Head, &hosts, &writes).await;
}

const TRANSFER_BYTES: &str = "chainrep_state_transfer_sent_bytes_total";

/// `n` writes of keys `{prefix}{i}`, eight at a time; panics on any that fails.
async fn write_keys(c: &Arc<ChainClient>, prefix: &str, n: usize) {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, prefix) = (c.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                let key = format!("{prefix}{i}");
                c.inc(&key, 1).await.unwrap_or_else(|e| panic!("inc {key}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

/// A tail restarted on its data dir while the chain runs gets from its predecessor only the
/// keys written while it was away (the two states agree at its last xid), and then serves every
/// key: the old ones from its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_on_its_data_dir_receives_only_what_it_lacks() {
    let zk = start_zk();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut head, mut tail) = (Host::new(dir.path(), "head"), Host::new(dir.path(), "tail"));
    let metrics = format!("127.0.0.1:{}", free_port().expect("free port"));
    head.start_with(&zk.connect_string(), Variant::Head, &["--metrics-listen", &metrics]);
    let c = Arc::new(client(&zk.connect_string(), ROOT, Variant::Head).await);
    wait_chain(&c, &[&head.addr()], Duration::from_secs(30)).await;
    tail.start(&zk.connect_string(), Variant::Head);
    wait_chain(&c, &[&head.addr(), &tail.addr()], Duration::from_secs(30)).await;
    write_keys(&c, "before-", 4_000).await;
    let url = format!("http://{metrics}/metrics");
    let sent_before = value(&scrape(&url), TRANSFER_BYTES);

    tail.kill9();
    // Acknowledged once the head is alone (the old tail's session expired) or has the tail back.
    let away = tokio::spawn({
        let c = c.clone();
        async move { write_keys(&c, "while-away-", 20).await }
    });
    tail.start(&zk.connect_string(), Variant::Head);
    away.await.expect("writes while the tail was away");
    wait_chain(&c, &[&head.addr(), &tail.addr()], Duration::from_secs(60)).await;
    for key in (0..4_000)
        .map(|i| format!("before-{i}"))
        .chain((0..20).map(|i| format!("while-away-{i}")))
    {
        assert_eq!(c.get(&key).await.unwrap_or_else(|e| panic!("get {key}: {e}")), 1, "{key}");
    }

    let text = scrape(&url);
    let sent = value(&text, TRANSFER_BYTES) - sent_before;
    let whole = value(&text, "chainrep_store_bytes");
    assert!(sent > 0.0, "no transfer to the restarted tail");
    // The whole state is 4,020 keys; what the tail lacked, a few dozen keys and their updates.
    assert!(
        sent < whole / 10.0,
        "sent {sent} bytes to the restarted tail; the whole state is {whole}\n{}",
        head.log()
    );
    assert!(head.log().contains("sending only the keys written since"), "{}", head.log());
    if let Ok(c) = Arc::try_unwrap(c) {
        c.close().await;
    }
}

/// After every replica lost power, one that comes back alone does not adopt its copy while a
/// replica of its last view is missing: that one may hold newer writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_back_alone_waits_for_the_rest_of_its_view() {
    let (zk, _dir, mut hosts, writes) = three_killed_under_load(Variant::Head).await;
    hosts[2].start(&zk.connect_string(), Variant::Head);
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    // Well past the old sessions' expiry and the settle time: still no state.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let status = c.status().await;
    assert!(
        !status.iter().any(|s| s.described.as_ref().is_some_and(|d| d.synced)),
        "a replica adopted its copy with the rest of its view missing: {status:#?}"
    );
    assert!(
        hosts[2].log().contains("waiting for every replica of the view"),
        "{}",
        hosts[2].log()
    );
    c.close().await;
    hosts[0].start(&zk.connect_string(), Variant::Head);
    hosts[1].start(&zk.connect_string(), Variant::Head);
    every_write_is_back(&zk.connect_string(), Variant::Head, &hosts, &writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_short_by_a_few_bytes_loses_nothing_acknowledged() {
    let (zk, _dir, mut hosts, writes) = three_killed_under_load(Variant::Head).await;
    // Power lost in the middle of writing the last record: its tail never reached the disk,
    // which leaves the zeros preallocated there.
    let segment = hosts[2].newest_segment();
    let mut bytes = std::fs::read(&segment).expect("segment");
    let end = records_end(&bytes);
    assert!(end > 32 + 7, "the tail's log holds no record");
    bytes[end - 7..end].fill(0);
    std::fs::write(&segment, &bytes).expect("write the cut segment");
    for h in hosts.iter_mut() {
        h.start(&zk.connect_string(), Variant::Head);
    }
    every_write_is_back(&zk.connect_string(), Variant::Head, &hosts, &writes).await;
    assert!(
        hosts[2].log().contains("dropped a torn last record"),
        "the cut replica did not report its torn record:\n{}",
        hosts[2].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_log_has_a_flipped_byte_never_serves_it() {
    let zk = start_zk();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hosts: Vec<Host> = ["a", "b", "c"].iter().map(|n| Host::new(dir.path(), n)).collect();
    for h in hosts.iter_mut() {
        h.start(&zk.connect_string(), Variant::Head);
    }
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    let addrs: Vec<String> = hosts.iter().map(Host::addr).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    wait_chain(&c, &addr_refs, Duration::from_secs(30)).await;
    // Values that differ from key to key, so that a damaged record trusted would read wrong.
    let expected: BTreeMap<String, i32> = (0..200).map(|i| (format!("k{i}"), 1000 + i)).collect();
    for (k, v) in &expected {
        c.inc(k, *v).await.unwrap_or_else(|e| panic!("inc {k}: {e}"));
    }
    c.close().await;
    for h in hosts.iter_mut() {
        h.kill9();
    }
    // Bit rot in the middle of the tail's log.
    let segment = hosts[2].newest_segment();
    let mut bytes = std::fs::read(&segment).expect("segment");
    let at = records_end(&bytes) / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write the damaged segment");
    // It comes back last, so it is the tail again: the replica that answers reads.
    for h in hosts.iter_mut() {
        h.start(&zk.connect_string(), Variant::Head);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    let status = wait_chain(&c, &addr_refs, Duration::from_secs(60)).await;
    assert_eq!(
        status.last().map(|s| s.member.addr.clone()),
        Some(hosts[2].addr()),
        "the damaged replica is not the tail"
    );
    for (k, v) in &expected {
        assert_eq!(c.get(k).await.unwrap_or_else(|e| panic!("get {k}: {e}")), *v, "{k}");
    }
    let log = hosts[2].log();
    assert!(log.contains("the data dir is corrupt"), "no error line for the damaged log:\n{log}");
    assert!(hosts[2].data.join("corrupt-0").is_dir(), "the damaged files were not set aside");
    c.close().await;
}

/// A data dir that cannot be used stops the replica before it touches ZooKeeper, with a line
/// that says why: a path that is a file, or a dir another replica holds.
#[test]
fn an_unusable_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let run = |data: &Path| {
        std::process::Command::new(support::chain::replica_binary())
            .args(["--zk", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .output()
            .expect("run chain-replica")
    };
    let out = run(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot create the data dir"), "{err}");
    assert!(!err.contains("ZooKeeper"), "it went on to ZooKeeper: {err}");

    let held = dir.path().join("held");
    let mut first = std::process::Command::new(support::chain::replica_binary())
        .args(["--zk", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&held)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the first replica");
    // The first one holds the lock as soon as its data dir exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !held.join("LOCK").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = run(&held);
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is in use by another process"), "{err}");
}
