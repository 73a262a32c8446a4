//! Mixed chains: our `chain-replica` next to the classic replica (tests/interop/classic_replica.py),
//! which behaves as the independent implementations of chain.proto do (string-sorted children,
//! znode data dialled verbatim, one `stateTransfer` per new successor and never a retry, no
//! `chainrep.ext`). Real ZooKeeper, real processes, real sockets.
//!
//! Every scenario writes through our client library (`ChainClient`) and checks at the end, and
//! after every join, that every acknowledged write reads back with the right value. A write whose
//! outcome is unknown may or may not be there; one the client reports refused or timed out
//! (nothing applied) must not be.
//!
//! Needs Debian's ZooKeeper (scripts/install-deps) and Python's grpcio, grpcio-tools and kazoo
//! (scripts/install-python-deps).
//!
//!     cargo test --test interop_mixed -- --nocapture
//!
//! prints each scenario's steps; CHAINREP_KEEP_LOGS=DIR keeps every process's log, and
//! RUST_LOG (e.g. `info,chainrep=debug`) sets our replicas' log level.

mod support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chainrep::client::{ChainClient, ClientError, ClientOptions};
use chainrep::core::Variant;
use support::chain::{zk_config, ReplicaProc, SESSION_TIMEOUT_MS};
use support::classic::ClassicProc;
use support::proxy::TcpProxy;
use support::python::{proto, python, repo, require_python_packages, wait_with_timeout};
use support::scenarios::Direct;
use support::zk::ZkServer;
use zookeeper_async::ZooKeeper;

/// One ZooKeeper, three or four replicas and a few Python interpreters per test: enough for two
/// cores. Tests run one at a time. (An async mutex, held across each scenario's awaits; a
/// scenario that panics releases it.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bound on every wait for the chain to settle after a change (a killed replica's session alone
/// takes `SESSION_TIMEOUT_MS` to expire).
const SETTLE: Duration = Duration::from_secs(20);

enum Proc {
    Ours(ReplicaProc),
    Classic(ClassicProc),
}

struct Node {
    name: String,
    proc: Proc,
    alive: bool,
}

impl Node {
    fn addr(&self) -> &str {
        match &self.proc {
            Proc::Ours(p) => &p.addr,
            Proc::Classic(p) => &p.addr,
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let path = match &self.proc {
            Proc::Ours(p) => &p.log,
            Proc::Classic(p) => &p.log,
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether a classic replica holds the chain's state: it was alone when it registered, or a
    /// state transfer reached it, or it became head without state (and so started empty).
    fn classic_holds_state(&self) -> bool {
        match &self.proc {
            Proc::Classic(p) => {
                let log = p.log_text();
                log.contains("alone: holds the state") || log.contains("installed stateTransfer") || log.contains("head without state")
            }
            Proc::Ours(_) => false,
        }
    }
}

/// What the chain must hold: per key, the sum of the acknowledged increments, plus increments
/// whose outcome is unknown (each may or may not have been applied).
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Expect>,
    acked: usize,
    unknown: usize,
    not_applied: usize,
}

#[derive(Default, Clone)]
struct Expect {
    acked: i64,
    maybe: Vec<i64>,
}

impl Expect {
    fn allowed(&self) -> Vec<i64> {
        let mut out = vec![self.acked];
        for d in &self.maybe {
            let more: Vec<i64> = out.iter().map(|v| v + d).collect();
            out.extend(more);
            out.sort();
            out.dedup();
        }
        out
    }
}

impl Model {
    fn record_inc(&mut self, key: &str, delta: i32, result: &Result<(), ClientError>) {
        let e = self.keys.entry(key.to_string()).or_default();
        match result {
            Ok(()) => {
                e.acked += i64::from(delta);
                self.acked += 1;
            }
            Err(ClientError::Unknown(_)) => {
                e.maybe.push(i64::from(delta));
                self.unknown += 1;
            }
            // Refused, or no replica took it: nothing was applied (the client's contract).
            Err(ClientError::Rejected(_) | ClientError::Timeout(..)) => self.not_applied += 1,
        }
    }

    fn record_del(&mut self, key: &str) {
        self.keys.insert(key.to_string(), Expect::default());
        self.acked += 1;
    }
}

struct Mixed {
    what: &'static str,
    root: &'static str,
    variant: Variant,
    // Dropped in this order: the processes, the client, the slow link, ZooKeeper, the lock.
    nodes: Vec<Node>,
    client: Arc<ChainClient>,
    /// A link to ZooKeeper with `SLOW_ZK_LATENCY` each way, for replicas that should learn of
    /// membership changes after their neighbours do.
    slow_zk: Option<TcpProxy>,
    zk: ZkServer,
    model: Model,
    started: Instant,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// One way; a ZooKeeper round trip through the slow link costs twice this. A replica that
/// registers through it sees its first view several round trips after its znode appeared, which
/// its predecessor sees at once: a predecessor that sends one `stateTransfer` as soon as it sees
/// its new successor then reaches it before its first view (and a predecessor's change of
/// successor reaches it before its own change of predecessor).
const SLOW_ZK_LATENCY: Duration = Duration::from_millis(30);

fn client_options(variant: Variant, op_timeout: Duration) -> ClientOptions {
    ClientOptions {
        op_timeout,
        rpc_timeout: Duration::from_secs(5),
        variant,
        ..ClientOptions::default()
    }
}

impl Mixed {
    async fn new(what: &'static str, variant: Variant) -> Mixed {
        let serial = SERIAL.lock().await;
        require_python_packages(&python());
        let root = match variant {
            Variant::Head => "/headchain",
            Variant::Tail => "/tailchain",
        };
        let zk = tokio::task::block_in_place(|| ZkServer::start().expect("start ZooKeeper (run scripts/install-deps)"));
        let client = ChainClient::connect(
            &zk_config(&zk.connect_string(), root),
            client_options(variant, Duration::from_secs(10)),
        )
        .await
        .expect("client connects to ZooKeeper");
        println!("[{what}] ZooKeeper at {}", zk.connect_string());
        Mixed {
            what,
            root,
            variant,
            nodes: Vec::new(),
            client: Arc::new(client),
            slow_zk: None,
            zk,
            model: Model::default(),
            started: Instant::now(),
            _serial: serial,
        }
    }

    fn variant_flag(&self) -> &'static str {
        match self.variant {
            Variant::Head => "head",
            Variant::Tail => "tail",
        }
    }

    fn start_ours(&mut self) -> usize {
        let zk = self.zk.connect_string();
        self.start_ours_at(&zk, "")
    }

    /// One of ours that talks to ZooKeeper through the slow link.
    async fn start_ours_slow(&mut self) -> usize {
        if self.slow_zk.is_none() {
            let proxy = TcpProxy::start_with_latency(self.zk.addr(), SLOW_ZK_LATENCY)
                .await
                .expect("slow link to ZooKeeper");
            self.slow_zk = Some(proxy);
        }
        let zk = self.slow_zk.as_ref().map(TcpProxy::connect_string).expect("slow link");
        self.start_ours_at(&zk, " (slow ZooKeeper link)")
    }

    fn start_ours_at(&mut self, zk: &str, note: &str) -> usize {
        let p = ReplicaProc::start(zk, self.root, self.variant);
        let name = format!("ours#{} {}{note}", self.nodes.len(), p.addr);
        self.note(&format!("start {name}"));
        self.nodes.push(Node {
            name,
            proc: Proc::Ours(p),
            alive: true,
        });
        self.nodes.len() - 1
    }

    fn start_classic(&mut self, extra: &[&str]) -> usize {
        let mut args = vec!["--variant", self.variant_flag()];
        args.extend_from_slice(extra);
        let p = ClassicProc::start(&self.zk.connect_string(), self.root, &args);
        let name = format!("classic#{} {} {}", self.nodes.len(), p.addr, extra.join(" "));
        self.note(&format!("start {name}"));
        self.nodes.push(Node {
            name: name.trim_end().to_string(),
            proc: Proc::Classic(p),
            alive: true,
        });
        self.nodes.len() - 1
    }

    /// Stops node `i`: SIGKILL (`hard`) or SIGTERM (a clean leave).
    fn stop(&mut self, i: usize, hard: bool) {
        let node = &mut self.nodes[i];
        match (&mut node.proc, hard) {
            (Proc::Ours(p), true) => p.kill9(),
            (Proc::Ours(p), false) => p.terminate(Duration::from_secs(10)),
            (Proc::Classic(p), true) => p.kill9(),
            (Proc::Classic(p), false) => p.terminate(Duration::from_secs(10)),
        }
        node.alive = false;
        let name = node.name.clone();
        self.note(&format!("{} {name}", if hard { "kill -9" } else { "SIGTERM" }));
    }

    fn note(&self, msg: &str) {
        println!("[{} +{:.1}s] {msg}", self.what, self.started.elapsed().as_secs_f64());
    }

    /// Panics with `msg` and what every process said last.
    fn fail(&self, msg: &str) -> ! {
        let mut out =
            format!(
            "[{}] FAILED after {:.1}s: {msg}\nmodel: {} acknowledged, {} unknown, {} not applied writes\nmembers (client's view): {:?}\n",
            self.what,
            self.started.elapsed().as_secs_f64(),
            self.model.acked,
            self.model.unknown,
            self.model.not_applied,
            self.client.members().iter().map(|m| format!("{:x}@{}", m.id, m.addr)).collect::<Vec<_>>()
        );
        for n in &self.nodes {
            out += &format!(
                "--- {} ({}), last lines:\n{}\n",
                n.name,
                if n.alive { "running" } else { "stopped" },
                n.log_tail(30)
            );
        }
        let zk_log = self.zk.log_tail(200);
        let zk_lines: Vec<&str> = zk_log.lines().filter(|l| !l.starts_with('\t')).collect();
        out += &format!(
            "--- ZooKeeper, last lines:\n{}\n",
            zk_lines[zk_lines.len().saturating_sub(8)..].join("\n")
        );
        panic!("{out}");
    }

    /// What each replica says about itself (`chainctl status`), for failure messages.
    async fn status_summary(&self) -> String {
        let Ok(status) = tokio::time::timeout(Duration::from_secs(10), self.client.status()).await else {
            return "status: no answer within 10s".into();
        };
        let lines: Vec<String> = status
            .iter()
            .map(|s| match &s.described {
                Some(d) => format!(
                    "  {} {} (ours): role {}, synced {}, last xid {}, sent {}, keys {}",
                    s.position, s.member.addr, d.role, d.synced, d.last_applied_xid, d.sent_len, d.keys
                ),
                None => format!(
                    "  {} {} (classic or down): getLatestXid {:?}",
                    s.position, s.member.addr, s.latest_xid
                ),
            })
            .collect();
        format!("status:\n{}", lines.join("\n"))
    }

    /// `fail`, with what the replicas say about themselves.
    async fn fail_with_status(&self, msg: &str) -> String {
        format!("{msg}\n{}", self.status_summary().await)
    }

    fn alive_addrs(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.alive).map(|n| n.addr().to_string()).collect()
    }

    /// Waits until ZooKeeper lists exactly the running nodes, in the order they were started
    /// (session ids grow), and every one of them holds the chain's state: ours say so through
    /// `Describe`, the classic ones in their log.
    async fn settle(&self, what: &str) {
        self.settle_within(what, SETTLE).await;
    }

    async fn settle_within(&self, what: &str, limit: Duration) {
        let want = self.alive_addrs();
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            let members: Vec<String> = self.client.members().into_iter().map(|m| m.addr).collect();
            if members != want {
                last = format!("members {members:?}, want {want:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let status = self.client.status().await;
            let mut waiting = Vec::new();
            for n in self.nodes.iter().filter(|n| n.alive) {
                let ready = match &n.proc {
                    Proc::Ours(_) => status
                        .iter()
                        .find(|s| s.member.addr == n.addr())
                        .and_then(|s| s.described.as_ref())
                        .is_some_and(|d| d.synced),
                    Proc::Classic(_) => n.classic_holds_state(),
                };
                if !ready {
                    waiting.push(n.name.clone());
                }
            }
            if waiting.is_empty() {
                self.note(&format!("{what}: chain {want:?} settled"));
                return;
            }
            last = format!("members as expected, but without the state yet: {waiting:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let msg = self
            .fail_with_status(&format!("{what}: the chain did not settle within {limit:?}: {last}"))
            .await;
        self.fail(&msg);
    }

    /// Waits up to `limit` for a line containing `needle` in node `i`'s log; whether it came.
    async fn wait_log(&self, i: usize, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Proc::Classic(p) = &self.nodes[i].proc else {
            panic!("wait_log is for classic replicas")
        };
        while Instant::now() < deadline {
            if p.log_count(needle) > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.note(&format!("no {needle:?} in {}'s log within {limit:?}", self.nodes[i].name));
        false
    }

    /// Waits until ZooKeeper lists exactly the running nodes (no state check).
    async fn wait_members(&self, what: &str) {
        let want = self.alive_addrs();
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let members: Vec<String> = self.client.members().into_iter().map(|m| m.addr).collect();
            if members == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.fail(&format!("{what}: ZooKeeper never listed exactly {want:?}"));
    }

    /// `n` increments on keys `tag-0..tag-4`, one after the other; each must be acknowledged.
    async fn writes(&mut self, tag: &str, n: usize) {
        for i in 0..n {
            let key = format!("{tag}-{}", i % 5);
            let delta = (i % 7) as i32 + 1;
            let started = Instant::now();
            let result = self.client.inc(&key, delta).await;
            self.model.record_inc(&key, delta, &result);
            if let Err(e) = result {
                let msg = format!(
                    "{tag}: write #{i} (inc {key} {delta}) failed after {:.1}s on a settled chain: {e}",
                    started.elapsed().as_secs_f64()
                );
                let msg = self.fail_with_status(&msg).await;
                self.fail(&msg);
            }
        }
        self.note(&format!("{tag}: {n} writes acknowledged"));
    }

    async fn must_del(&mut self, key: &str) {
        if let Err(e) = self.client.del(key).await {
            self.fail(&format!("del {key} failed on a settled chain: {e}"));
        }
        self.model.record_del(key);
    }

    /// Every key written so far reads back (at the tail, through our client) as the model says.
    async fn verify(&self, what: &str) {
        let mut wrong = Vec::new();
        for (key, expect) in &self.model.keys {
            let allowed = expect.allowed();
            match self.client.get(key).await {
                Ok(v) if allowed.contains(&i64::from(v)) => {}
                Ok(v) => wrong.push(format!("{key} = {v}, expected {}", describe(expect))),
                Err(e) => wrong.push(format!("get {key} failed: {e}")),
            }
        }
        if !wrong.is_empty() {
            let msg = format!(
                "{what}: {} of {} keys read back wrong: {wrong:#?}",
                wrong.len(),
                self.model.keys.len()
            );
            let msg = self.fail_with_status(&msg).await;
            self.fail(&msg);
        }
        self.note(&format!(
            "{what}: all {} keys read back ({} writes acknowledged, {} unknown)",
            self.model.keys.len(),
            self.model.acked,
            self.model.unknown
        ));
    }

    /// Runs tests/interop/client.py (its own checks, through the replicas ZooKeeper lists)
    /// against the chain as it stands.
    fn python_client(&self, replicas: usize) {
        let out_path = self.zk.data_dir().with_file_name("client.out");
        let out = File::create(&out_path).expect("client output file");
        let mut child = Command::new(python())
            .arg("-u")
            .arg(repo().join("tests/interop/client.py"))
            .args([
                "--zk",
                &self.zk.connect_string(),
                "--root",
                self.root,
                "--variant",
                self.variant_flag(),
            ])
            .args(["--replicas", &replicas.to_string(), "--timeout", "30"])
            .arg("--proto")
            .arg(proto())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output handle"))
            .stderr(out)
            .spawn()
            .expect("run client.py");
        let status = tokio::task::block_in_place(|| wait_with_timeout(&mut child, Duration::from_secs(120)));
        let output = fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() => self.note("client.py: all its checks passed"),
            Some(s) => self.fail(&format!("client.py {s}:\n{output}")),
            None => self.fail(&format!("client.py still running after 120s, killed:\n{output}")),
        }
    }

    /// Writers on their own keys, as fast as the chain takes them, until `stop`; returns every
    /// write with its result. Failures are expected while the chain reconfigures.
    fn spawn_writers(&self, tag: &str, writers: usize, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Write>>> {
        (0..writers)
            .map(|w| {
                let client = self.client.clone();
                let stop = stop.clone();
                let tag = format!("{tag}-w{w}");
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{tag}-{}", i % 3);
                        let delta = (i % 7) as i32 + 1;
                        let started = Instant::now();
                        let result = client.inc(&key, delta).await;
                        done.push(Write {
                            key,
                            delta,
                            took: started.elapsed(),
                            result,
                        });
                        i += 1;
                    }
                    done
                })
            })
            .collect()
    }

    async fn collect_writers(&mut self, handles: Vec<tokio::task::JoinHandle<Vec<Write>>>) -> Vec<Write> {
        let mut all = Vec::new();
        for h in handles {
            match tokio::time::timeout(Duration::from_secs(30), h).await {
                Ok(Ok(writes)) => all.extend(writes),
                Ok(Err(e)) => self.fail(&format!("a writer task failed: {e}")),
                Err(_) => self.fail("a writer did not finish within 30s of being stopped"),
            }
        }
        for w in &all {
            self.model.record_inc(&w.key, w.delta, &w.result);
        }
        all
    }
}

/// With CHAINREP_KEEP_LOGS=DIR, every process's log is copied to DIR when the scenario ends
/// (passed or failed), as `<scenario>-<n>-<ours|classic>.log`, plus ZooKeeper's.
impl Drop for Mixed {
    fn drop(&mut self) {
        let Some(dir) = std::env::var_os("CHAINREP_KEEP_LOGS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let _ = fs::create_dir_all(&dir);
        let scenario: String = self.what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let (kind, path) = match &n.proc {
                Proc::Ours(p) => ("ours", &p.log),
                Proc::Classic(p) => ("classic", &p.log),
            };
            let _ = fs::copy(path, dir.join(format!("{scenario}-{i}-{kind}.log")));
        }
        let _ = fs::copy(self.zk.log_path(), dir.join(format!("{scenario}-zookeeper.log")));
    }
}

struct Write {
    key: String,
    delta: i32,
    took: Duration,
    result: Result<(), ClientError>,
}

fn describe(e: &Expect) -> String {
    if e.maybe.is_empty() {
        format!("{}", e.acked)
    } else {
        format!("{} acknowledged + any of the unknown {:?}", e.acked, e.maybe)
    }
}

fn summarize(writes: &[Write]) -> String {
    let ok = writes.iter().filter(|w| w.result.is_ok()).count();
    let slowest = writes.iter().map(|w| w.took).max().unwrap_or_default();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for w in writes {
        if let Err(e) = &w.result {
            let kind = match e {
                ClientError::Unknown(_) => "unknown",
                ClientError::Rejected(_) => "rejected",
                ClientError::Timeout(..) => "timeout",
            };
            *errors.entry(format!("{kind}: {e}")).or_default() += 1;
        }
    }
    format!(
        "{} writes, {ok} acknowledged, slowest {slowest:?}, errors {errors:#?}",
        writes.len()
    )
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ours,
    /// Ours, with a slow link to ZooKeeper.
    OursSlow,
    Classic,
}

impl Mixed {
    async fn start_kind(&mut self, kind: Kind) -> usize {
        match kind {
            Kind::Ours => self.start_ours(),
            Kind::OursSlow => self.start_ours_slow().await,
            Kind::Classic => self.start_classic(&[]),
        }
    }
}

/// Starts the chain one replica at a time, with writes after each join (so every state transfer
/// carries something), then writes, checks, and runs the Python client against it.
async fn three_in_a_row(what: &'static str, kinds: [Kind; 3]) {
    let mut m = Mixed::new(what, Variant::Head).await;
    for (i, kind) in kinds.iter().enumerate() {
        m.start_kind(*kind).await;
        m.settle(&format!("join {i}")).await;
        m.writes(&format!("after-join-{i}"), 10).await;
        m.verify(&format!("after join {i}")).await;
    }
    m.writes("mixed", 40).await;
    m.must_del("mixed-0").await;
    m.writes("mixed", 3).await;
    m.verify("three replicas").await;
    m.python_client(3);
    m.verify("after client.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_head_ours_ours() {
    three_in_a_row("classic head + ours + ours", [Kind::Classic, Kind::Ours, Kind::Ours]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_classic_middle_ours() {
    three_in_a_row("ours + classic middle + ours", [Kind::Ours, Kind::Classic, Kind::Ours]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_ours_classic_tail() {
    three_in_a_row("ours + ours + classic tail", [Kind::Ours, Kind::Ours, Kind::Classic]).await;
}

const JOINS: usize = 6;

/// A classic head and tail; our replica joins at the tail, takes writes, and goes (SIGTERM and
/// kill -9 in turn), six times. The classic tail sends each newcomer one `stateTransfer`, as
/// soon as it sees it in ZooKeeper: sometimes before our replica has its own first view, and
/// always when our replica talks to ZooKeeper over the slow link (every other join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_joins_a_classic_chain_repeatedly() {
    let mut m = Mixed::new("ours joins a classic chain", Variant::Head).await;
    m.start_classic(&[]);
    m.settle("classic head").await;
    m.start_classic(&[]);
    m.settle("classic tail").await;
    m.writes("classic-pair", 10).await;
    for j in 0..JOINS {
        // The classic replicas store a deleted key as 0: the transfer carries it.
        m.must_del(&format!("classic-pair-{}", j % 5)).await;
        let i = if j % 2 == 0 { m.start_ours_slow().await } else { m.start_ours() };
        m.settle(&format!("join {j}")).await;
        m.writes(&format!("join-{j}"), 10).await;
        m.verify(&format!("join {j}, read at our tail")).await;
        m.stop(i, j % 2 == 1);
        m.wait_members(&format!("leave {j}")).await;
        m.writes(&format!("leave-{j}"), 5).await;
        m.verify(&format!("leave {j}, read at the classic tail")).await;
    }
}

/// Two of ours; a classic replica joins at the tail, takes writes, and goes, six times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_joins_our_chain_repeatedly() {
    let mut m = Mixed::new("classic joins our chain", Variant::Head).await;
    m.start_ours();
    m.settle("our head").await;
    m.start_ours();
    m.settle("our tail").await;
    m.writes("our-pair", 10).await;
    for j in 0..JOINS {
        m.must_del(&format!("our-pair-{}", j % 5)).await;
        let i = m.start_classic(&[]);
        m.settle(&format!("join {j}")).await;
        m.writes(&format!("join-{j}"), 10).await;
        m.verify(&format!("join {j}, read at the classic tail")).await;
        m.stop(i, j % 2 == 1);
        m.wait_members(&format!("leave {j}")).await;
        m.writes(&format!("leave-{j}"), 5).await;
        m.verify(&format!("leave {j}, read at our tail")).await;
    }
}

/// Writers run while the middle of a mixed chain is killed with SIGKILL; once ZooKeeper drops
/// it, the head's new successor is the old tail, and writes go on.
async fn middle_killed(what: &'static str, kinds: [Kind; 3]) {
    killed(what, Variant::Head, kinds, 1).await;
}

/// Writers run while replica `victim` of a mixed chain is killed with SIGKILL; once ZooKeeper
/// drops it the chain serves again, and every acknowledged write is there.
async fn killed(what: &'static str, variant: Variant, kinds: [Kind; 3], victim: usize) {
    let mut m = Mixed::new(what, variant).await;
    for (i, kind) in kinds.iter().enumerate() {
        m.start_kind(*kind).await;
        m.settle(&format!("join {i}")).await;
        m.writes(&format!("before-{i}"), 5).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers = m.spawn_writers("during", 4, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.stop(victim, true);
    tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 3000)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = m.collect_writers(writers).await;
    m.note(&format!("writers during the kill: {}", summarize(&writes)));
    m.settle("after the kill").await;
    m.writes("after", 20).await;
    m.verify("after the kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_middle_killed_during_writes() {
    middle_killed("classic middle kill -9", [Kind::Ours, Kind::Classic, Kind::Ours]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_middle_killed_during_writes_under_a_classic_head() {
    // Our tail learns of the change after the classic head, whose one stateTransfer then
    // reaches it while it still sees the dead middle as its predecessor.
    middle_killed(
        "our middle kill -9 under a classic head",
        [Kind::Classic, Kind::Ours, Kind::OursSlow],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_head_killed_during_writes() {
    killed("classic head kill -9", Variant::Head, [Kind::Classic, Kind::Ours, Kind::Ours], 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_head_killed_over_a_classic_middle() {
    killed(
        "our head kill -9 over a classic middle",
        Variant::Head,
        [Kind::Ours, Kind::Classic, Kind::Ours],
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_tail_killed_under_a_classic_middle() {
    killed(
        "our tail kill -9 under a classic middle",
        Variant::Head,
        [Kind::Ours, Kind::Classic, Kind::Ours],
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_tail_killed_during_writes() {
    killed("classic tail kill -9", Variant::Head, [Kind::Ours, Kind::Ours, Kind::Classic], 2).await;
}

/// A classic head that numbers its updates from 0: its first state transfer is at xid 0 and
/// its first update has xid 0. That first write must reach our replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_head_numbering_from_zero() {
    let mut m = Mixed::new("classic head --first-xid 0", Variant::Head).await;
    m.start_classic(&["--first-xid", "0"]);
    m.settle("classic head").await;
    m.start_ours();
    m.settle("our middle").await;
    let head = 0;
    m.start_ours();
    m.settle("our tail").await;
    // Numbering from 0 makes `xidProcessed(0)` ambiguous: our new tail reports its stateXid 0
    // ("applied nothing") to the head, and a head that took that report after issuing xid 0
    // would acknowledge the write before it reached our replicas. Let that report land first
    // (the classic head ignores it while it has issued nothing).
    m.wait_log(head, "xidProcessed(0) ignored", Duration::from_secs(3)).await;
    let first = m.client.inc("first", 7).await;
    m.model.record_inc("first", 7, &first);
    if let Err(e) = first {
        m.fail(&format!("the first write (xid 0 at the classic head) failed: {e}"));
    }
    m.verify("the first write, read at our tail").await;
    m.writes("next", 10).await;
    m.verify("after ten more").await;
}

/// The classic head's one state transfer to our new replica is lost on the way and never sent
/// again: our replica, left without state behind a predecessor that will not resend, must join
/// again as a new replica (a new successor for the classic head, which then sends a transfer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_recovers_from_a_lost_classic_transfer() {
    let mut m = Mixed::new("lost classic transfer", Variant::Head).await;
    m.start_classic(&["--lose-transfers", "1"]);
    m.settle("classic head").await;
    m.writes("alone", 10).await;
    m.start_ours();
    // Writes meanwhile wait at the classic head for a tail that has no state: their outcome is
    // unknown until our replica has joined again and got them in the transfer's sent list.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = m.spawn_writers("meanwhile", 2, &stop);
    m.settle_within("ours after the lost transfer", Duration::from_secs(40)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = m.collect_writers(writers).await;
    m.note(&format!("writers while our replica had no state: {}", summarize(&writes)));
    m.writes("after", 10).await;
    m.verify("at our tail").await;
}

/// A classic head numbering from 0 takes its first write alone; our replica then joins and gets
/// a state transfer at xid 0 that holds that write, and takes xid 1 next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_head_numbering_from_zero_writes_before_ours_joins() {
    let mut m = Mixed::new("classic head --first-xid 0, a write before ours joins", Variant::Head).await;
    m.start_classic(&["--first-xid", "0"]);
    m.settle("classic head").await;
    m.writes("alone", 1).await;
    m.start_ours();
    m.settle("our tail").await;
    m.verify("the write at xid 0, read at our tail").await;
    m.writes("next", 10).await;
    m.start_ours();
    m.settle("our second").await;
    m.writes("more", 10).await;
    m.verify("at our second").await;
}

/// A classic tail that answers `get` of a missing or zero key with rc=2 ("key doesn't exist",
/// chain.proto's comment), as one Java tail does: our client must read it as 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rc2_from_a_classic_tail_reads_as_zero() {
    let mut m = Mixed::new("classic tail --rc2-for-missing", Variant::Head).await;
    m.start_ours();
    m.settle("our head").await;
    m.writes("before", 3).await;
    let tail = m.start_classic(&["--rc2-for-missing"]);
    m.settle("classic tail").await;
    m.client
        .inc("doomed", 5)
        .await
        .unwrap_or_else(|e| m.fail(&format!("inc doomed 5: {e}")));
    m.model.record_inc("doomed", 5, &Ok(()));
    m.must_del("doomed").await;
    // The classic tail does answer rc=2 here, so the scenario is what it says.
    let (rc, _) = Direct::new(m.nodes[tail].addr(), Variant::Head)
        .get("doomed")
        .await
        .unwrap_or_else(|e| m.fail(&format!("direct get at the classic tail: {e}")));
    if rc != 2 {
        m.fail(&format!("the classic tail answered rc={rc} for a deleted key, expected 2"));
    }
    let quick = ChainClient::connect(
        &zk_config(&m.zk.connect_string(), m.root),
        client_options(Variant::Head, Duration::from_secs(3)),
    )
    .await
    .expect("second client");
    for key in ["doomed", "never-written"] {
        match quick.get(key).await {
            Ok(0) => {}
            Ok(v) => m.fail(&format!("get {key} through a classic tail answering rc=2 read {v}, expected 0")),
            Err(e) => m.fail(&format!("get {key} through a classic tail answering rc=2 failed: {e}")),
        }
    }
    quick.close().await;
    m.verify("through the rc=2 tail").await;
}

/// Classic peers dial the znode data verbatim, so every member's data must be exactly
/// `host:port`. (With "host:port\n", grpcio 1.85 still connects, but sends the newline in the
/// `:authority` header, and our server's h2 resets every such stream with PROTOCOL_ERROR: the
/// mixed chains above cannot form. This test says why directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_znodes_hold_exactly_host_port() {
    let mut m = Mixed::new("znode data", Variant::Head).await;
    m.start_ours();
    m.start_classic(&[]);
    m.wait_members("two members").await;
    let zk = tokio::time::timeout(
        Duration::from_secs(15),
        ZooKeeper::connect_with_retry_time(&m.zk.connect_string(), Duration::from_secs(10), |_| {}, Duration::from_millis(200)),
    )
    .await
    .expect("admin connect timed out")
    .expect("admin connect");
    let mut children = zk.get_children(m.root, false).await.expect("list the root");
    children.sort();
    let mut wrong = Vec::new();
    for c in children.iter().filter(|c| c.chars().all(|ch| ch.is_ascii_hexdigit())) {
        let (data, _) = zk.get_data(&format!("{}/{c}", m.root), false).await.expect("get member data");
        let text = String::from_utf8_lossy(&data).to_string();
        if !m.alive_addrs().contains(&text) {
            wrong.push(format!("{c}: {text:?}"));
        }
    }
    let _ = zk.close().await;
    if !wrong.is_empty() {
        m.fail(&format!(
            "member znodes whose data is not exactly one of {:?}: {wrong:?}",
            m.alive_addrs()
        ));
    }
    m.note("every member znode holds exactly host:port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_variant_classic_middle_killed_during_writes() {
    killed(
        "tail variant: classic middle kill -9",
        Variant::Tail,
        [Kind::Ours, Kind::Classic, Kind::Ours],
        1,
    )
    .await;
}

/// The classic tail calls back what it applied; once it is gone, our new tail calls back what
/// it passed on and the dead tail may not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_variant_classic_tail_killed_during_writes() {
    killed(
        "tail variant: classic tail kill -9",
        Variant::Tail,
        [Kind::Ours, Kind::Ours, Kind::Classic],
        2,
    )
    .await;
}

/// The tail variant: a classic head and tail around our middle; the classic tail calls our
/// client back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_variant_classic_head_ours_classic_tail() {
    let mut m = Mixed::new("tail variant: classic + ours + classic", Variant::Tail).await;
    for (i, kind) in [Kind::Classic, Kind::Ours, Kind::Classic].iter().enumerate() {
        m.start_kind(*kind).await;
        m.settle(&format!("join {i}")).await;
        m.writes(&format!("after-join-{i}"), 10).await;
        m.verify(&format!("after join {i}")).await;
    }
    m.writes("mixed", 30).await;
    m.verify("three replicas").await;
    m.python_client(3);
}
