//! Gray failures: one link, or one direction of it, or one replica's path to ZooKeeper stops
//! carrying packets while every process stays up and ZooKeeper sees nothing wrong. Three
//! head-variant replicas, ZooKeeper and the test's client each get a network namespace of their
//! own on one bridge (tests/support/netns.rs); a fault is a set of iptables DROP rules inside
//! one replica's namespace.
//!
//! Each test is one row of the table in the issue: a write load runs throughout, the fault lasts
//! `GRAY_FAULT_SECS` (30 s by default), then heals, and every acknowledged write must read back.
//! Each test prints its row (to stderr, past the test harness's capture, and to
//! `<target>/tmp/gray_failure_table.md`), then asserts:
//!
//! - link cuts: writes flowing again (no gap over 2 s from then until the heal) within
//!   2 x session timeout + 2 s of the cut. On code without the detection of broken links
//!   these fail: that they can fail is the point.
//! - ZooKeeper cuts: a new head (tail) is chosen, writes resume within the same bound, the old
//!   head stops acknowledging before the new one is named, no stale reads.
//! - the head cut off from both peers (row 7, beyond the table): it is out of the
//!   chain when the cut heals, a new head was named after its last acknowledgement, and writes
//!   flow again within two suspicion timeouts, a tenth, and 2 s.
//! - row 8, the link below a head of another implementation (tests/interop/classic_replica.py,
//!   which reports nothing): as a link cut, and that head is out of the chain at the heal,
//!   removed by its successor.
//! - every row: nothing acknowledged lost, no read from the old tail older than a write
//!   acknowledged before the read was sent.
//!
//! Needs root, `ip` and `iptables`; without them a test prints a loud skip and passes, except
//! under CI (the `CI` variable set), where it fails. Replica and ZooKeeper logs stay in
//! `<target>/tmp/gray_failure/<test>/` for the post-mortem.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use chainrep::client::{never_sent, ChainClient, ClientError, ClientOptions};
use chainrep::core::{Member, Variant};
use chainrep::runtime::zk::ZkConfig;
use chainrep::status::says_nothing_applied;
use tokio::task::JoinHandle;

use support::chain::SESSION_TIMEOUT_MS;
use support::netns::{self, Net, NsReplica, NsZk, Rule};
use support::scenarios::Direct;

const ROOT: &str = "/headchain";
const REPLICAS: [&str; 3] = ["r0", "r1", "r2"];
/// Client loops, each incrementing a key of its own: several, so one write stuck at a broken
/// link does not alone decide whether writes flow.
const LOOPS: usize = 4;
/// Load before the fault, to see the chain working first.
const WARMUP: Duration = Duration::from_secs(3);
/// Load after the heal, before it stops and the writes are read back.
const AFTER_HEAL: Duration = Duration::from_secs(3);
/// Writes "flow" while no two acknowledgements are further apart than this (the target).
const MAX_GAP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_millis(100);
/// A write stuck at the head is given up (outcome unknown) after this, so each loop tries again
/// soon after the chain could take writes again; at most the gap allowed.
const RPC_TIMEOUT: Duration = MAX_GAP;
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Direct probes of the old head and old tail: their answer, or nothing, within this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Namespaces are per test, but two at once on a 2-core machine would skew each other's
/// timings, which are the measurement.
static SERIAL: Mutex<()> = Mutex::new(());

fn fault_duration() -> Duration {
    match std::env::var("GRAY_FAULT_SECS") {
        Ok(s) => Duration::from_secs_f64(s.trim().parse().unwrap_or_else(|_| panic!("GRAY_FAULT_SECS={s:?} is not a number"))),
        Err(_) => Duration::from_secs(30),
    }
}

/// 2 x session timeout + 2 s: the target for writes flowing again after a link cut.
fn target() -> Duration {
    Duration::from_millis(2 * SESSION_TIMEOUT_MS + 2000)
}

/// A head cut off from its peers is removed in two evictions (docs/gray-failures.md): its own
/// of its successor, then its next successor's of it, a suspicion timeout and a tenth later
/// (the default suspicion timeout, 1.5 session timeouts), then 2 s as for a link cut.
fn target_for(fault: Fault) -> Duration {
    match fault {
        Fault::FromPeers(Role::Head) => {
            let suspicion = SESSION_TIMEOUT_MS * 3 / 2;
            Duration::from_millis(2 * suspicion + suspicion / 10 + 2000)
        }
        _ => target(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Head,
    Middle,
    Tail,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Both directions between two replicas dropped (rules in the first one's namespace).
    Link(Role, Role),
    /// Packets from the first to the second dropped, the other way through.
    OneWay(Role, Role),
    /// One replica and ZooKeeper cut off from each other; everything else reachable.
    Zookeeper(Role),
    /// One replica cut off from both others; ZooKeeper and the clients still reach it.
    FromPeers(Role),
}

#[test]
fn link_head_middle_cut() {
    row(1, "hm", "1. link head <-> middle cut", Fault::Link(Role::Head, Role::Middle));
}

#[test]
fn link_middle_tail_cut() {
    row(2, "mt", "2. link middle <-> tail cut", Fault::Link(Role::Middle, Role::Tail));
}

#[test]
fn middle_to_tail_dropped_one_way() {
    row(
        3,
        "m2t",
        "3. middle -> tail packets dropped (one way)",
        Fault::OneWay(Role::Middle, Role::Tail),
    );
}

#[test]
fn tail_to_middle_dropped_one_way() {
    row(
        4,
        "t2m",
        "4. tail -> middle packets dropped (one way)",
        Fault::OneWay(Role::Tail, Role::Middle),
    );
}

#[test]
fn head_cut_from_zookeeper_only() {
    row(5, "hzk", "5. head cut from ZooKeeper only", Fault::Zookeeper(Role::Head));
}

#[test]
fn tail_cut_from_zookeeper_only() {
    row(6, "tzk", "6. tail cut from ZooKeeper only", Fault::Zookeeper(Role::Tail));
}

#[test]
fn head_cut_from_every_peer() {
    row(7, "hpeers", "7. head cut from both other replicas", Fault::FromPeers(Role::Head));
}

/// Row 1 with another implementation at the head, which reports no broken link: ours, its
/// successor, must see the link broken on its own.
#[test]
fn link_classic_head_middle_cut() {
    run_row(
        8,
        "chm",
        "8. link classic head <-> middle cut",
        Fault::Link(Role::Head, Role::Middle),
        HeadImpl::Classic,
    );
}

/// Which implementation holds the head's place when the fault starts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum HeadImpl {
    Ours,
    /// tests/interop/classic_replica.py, head variant: it reports nothing and reads no
    /// eviction record.
    Classic,
}

fn row(subnet: u8, tag: &str, label: &str, fault: Fault) {
    run_row(subnet, tag, label, fault, HeadImpl::Ours);
}

fn run_row(subnet: u8, tag: &str, label: &str, fault: Fault, head: HeadImpl) {
    if let Some(why) = netns::unavailable() {
        let msg = format!("\n!!!!! gray_failure {tag}: SKIPPED: {why} !!!!!\n");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}CI is set, so a skip is a failure: run the tests as root with iproute2 and iptables");
        }
        let _ = std::io::stderr().write_all(msg.as_bytes());
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    netns::sweep_leftovers();
    let dir = logs_dir(tag);
    let net = Net::new(tag, subnet, &["zk", "cl", "r0", "r1", "r2"]).expect("build the test's network namespaces");
    // Everything with a socket runs on this thread (moved into the client's namespace) and the
    // threads it starts; this one stays in the root namespace and keeps `net`, so the
    // namespaces go after every process in them, whether the scenario returns or panics.
    let outcome = std::thread::scope(|s| s.spawn(|| scenario(&net, &dir, label, fault, head)).join());
    drop(net);
    if let Err(panic) = outcome {
        eprintln!("logs of the replicas and ZooKeeper: {}", dir.display());
        std::panic::resume_unwind(panic);
    }
}

fn logs_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gray_failure").join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn scenario(net: &Net, dir: &std::path::Path, label: &str, fault: Fault, head: HeadImpl) {
    net.enter("cl").expect("enter the client's namespace");
    let zk = NsZk::start(net, "zk", "cl", &dir.join("zk")).expect("start ZooKeeper in its namespace");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut replicas: Vec<NsReplica> = Vec::new();
    let mut classic = None;
    for (i, r) in REPLICAS.iter().enumerate() {
        let log = dir.join(format!("{r}.log"));
        if i == 0 && head == HeadImpl::Classic {
            let c = net
                .spawn_classic(r, &zk.connect_string(), ROOT, &log)
                .expect("start the classic replica in its namespace");
            // Registered before the others, it has the lowest session id: the head.
            if let Err(e) = rt.block_on(wait_registered(&zk, &c.addr)) {
                panic!("{e}\n{}", c.proc.log_tail(30));
            }
            classic = Some(c.addr.clone());
            replicas.push(c);
        } else {
            replicas.push(
                net.spawn_replica(r, &zk.connect_string(), ROOT, "head", &log)
                    .expect("start chain-replica in its namespace"),
            );
        }
    }
    let report = rt.block_on(measure(net, &zk, &replicas, label, fault, classic.as_deref()));
    rt.shutdown_timeout(Duration::from_secs(5));
    print_row(&report);
    report.check();
}

/// Which replica plays which role when the fault starts.
struct Roles {
    head: Member,
    middle: Member,
    tail: Member,
    /// Replica address -> node name, for the membership column.
    names: HashMap<String, String>,
}

impl Roles {
    fn member(&self, role: Role) -> &Member {
        match role {
            Role::Head => &self.head,
            Role::Middle => &self.middle,
            Role::Tail => &self.tail,
        }
    }

    fn node(&self, role: Role) -> &str {
        &self.names[&self.member(role).addr]
    }
}

/// What one client loop saw.
#[derive(Default)]
struct Loop {
    key: String,
    acks: Vec<Instant>,
    /// Timed out or answer lost: may or may not have been applied.
    maybe: u64,
    /// Refused before anything was applied.
    refused: u64,
    /// Distinct errors with how often each came, the first few kinds only.
    errors: Vec<(String, u64)>,
}

impl Loop {
    fn note_error(&mut self, e: impl std::fmt::Display) {
        let e = e.to_string();
        if let Some((_, n)) = self.errors.iter_mut().find(|(seen, _)| *seen == e) {
            *n += 1;
        } else if self.errors.len() < 3 {
            self.errors.push((e, 1));
        }
    }
}

async fn client_loop(c: Arc<ChainClient>, key: String, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Loop {
    let mut out = Loop {
        key: key.clone(),
        ..Loop::default()
    };
    while !stop.load(Ordering::Relaxed) {
        match c.inc(&key, 1).await {
            Ok(()) => {
                out.acks.push(Instant::now());
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(ClientError::Rejected(s)) => {
                out.refused += 1;
                out.note_error(format!("refused: {:?}: {}", s.code(), s.message()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e @ (ClientError::Unknown(_) | ClientError::Timeout(..))) => {
                out.maybe += 1;
                out.note_error(e);
            }
        }
    }
    out
}

/// Writes sent straight to the replica that was head when the fault started, to see when it
/// stops acknowledging; they count towards the read-back like any other.
async fn old_head_probe(addr: String, stop: Arc<AtomicBool>) -> Loop {
    let mut out = Loop {
        key: "oldhead".into(),
        ..Loop::default()
    };
    let mut head = Direct::new(&addr, Variant::Head);
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(PROBE_TIMEOUT, head.increment(&out.key, 1)).await {
            Ok(Ok(0)) => out.acks.push(Instant::now()),
            // Not the head (any more): nothing applied.
            Ok(Ok(_)) => {
                out.refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Never reached it, or it said it applied nothing (a head whose lease lapsed).
            Ok(Err(s)) if never_sent(&s) || says_nothing_applied(&s) => {
                out.refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(s)) => {
                out.maybe += 1;
                out.note_error(format!("{:?}: {}", s.code(), s.message()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                out.maybe += 1;
                out.note_error(format!("no answer within {PROBE_TIMEOUT:?}"));
            }
        }
    }
    out
}

/// Reads straight from the replica that was tail when the fault started.
#[derive(Default)]
struct TailReads {
    answered: Vec<Instant>,
    stale: Vec<String>,
}

/// A read is stale when it returns less than the writes to that key acknowledged before the
/// read was sent (the key only ever grows).
async fn old_tail_reader(addr: String, key: String, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>, t0: Instant) -> TailReads {
    let mut out = TailReads::default();
    let mut tail = Direct::new(&addr, Variant::Head);
    while !stop.load(Ordering::Relaxed) {
        let floor = acked.load(Ordering::SeqCst);
        if let Ok(Ok((0, value))) = tokio::time::timeout(PROBE_TIMEOUT, tail.get(&key)).await {
            let now = Instant::now();
            out.answered.push(now);
            if i64::from(value) < floor as i64 && out.stale.len() < 10 {
                out.stale.push(format!(
                    "at +{:.1} s {key} read {value} after {floor} acknowledged",
                    (now - t0).as_secs_f64()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// Every change of the membership the client follows through ZooKeeper.
async fn membership_watch(c: Arc<ChainClient>, stop: Arc<AtomicBool>) -> Vec<(Instant, Vec<Member>)> {
    let mut seen = vec![(Instant::now(), c.members())];
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = c.members();
        if seen.last().is_some_and(|(_, m)| *m != now) {
            seen.push((Instant::now(), now));
        }
    }
    seen
}

fn rules_for(net: &Net, roles: &Roles, fault: Fault) -> (String, Vec<Rule>) {
    let ip = |role| net.ip(roles.node(role));
    match fault {
        Fault::Link(a, b) => (roles.node(a).to_string(), vec![Rule::DropFrom(ip(b)), Rule::DropTo(ip(b))]),
        Fault::OneWay(from, to) => (roles.node(from).to_string(), vec![Rule::DropTo(ip(to))]),
        Fault::Zookeeper(r) => {
            let zk = net.ip("zk");
            (roles.node(r).to_string(), vec![Rule::DropFrom(zk), Rule::DropTo(zk)])
        }
        Fault::FromPeers(r) => {
            let peers = [Role::Head, Role::Middle, Role::Tail].into_iter().filter(|&p| p != r);
            let rules = peers.flat_map(|p| [Rule::DropFrom(ip(p)), Rule::DropTo(ip(p))]).collect();
            (roles.node(r).to_string(), rules)
        }
    }
}

fn zk_config(zk: &NsZk) -> ZkConfig {
    ZkConfig {
        connect: zk.connect_string(),
        root: ROOT.to_string(),
        session_timeout: Duration::from_secs(10),
    }
}

/// Waits until a member at `addr` is registered.
async fn wait_registered(zk: &NsZk, addr: &str) -> Result<(), String> {
    let c = ChainClient::connect(&zk_config(zk), ClientOptions::default())
        .await
        .map_err(|e| format!("cannot follow the membership: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.members().iter().any(|m| m.addr == addr) {
        if Instant::now() > deadline {
            return Err(format!("{addr} did not register within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close().await;
    Ok(())
}

/// Waits until the chain is exactly `addrs`, each synced; `classic`, another implementation,
/// does not answer `describe` and counts as synced.
async fn wait_whole_chain(c: &ChainClient, addrs: &[&str], classic: Option<&str>, timeout: Duration) -> Result<Vec<Member>, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let status = c.status().await;
        let all_there = status.len() == addrs.len() && status.iter().all(|s| addrs.contains(&s.member.addr.as_str()));
        let synced =
            |s: &chainrep::client::MemberStatus| Some(s.member.addr.as_str()) == classic || s.described.as_ref().is_some_and(|d| d.synced);
        if all_there && status.iter().all(synced) {
            return Ok(status.into_iter().map(|s| s.member).collect());
        }
        last = format!("{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the chain did not become {addrs:?} (all synced) within {timeout:?}; last status: {last}"
    ))
}

async fn measure(net: &Net, zk: &NsZk, replicas: &[NsReplica], label: &str, fault: Fault, classic: Option<&str>) -> Report {
    let zk_cfg = zk_config(zk);
    let opts = ClientOptions {
        op_timeout: OP_TIMEOUT,
        rpc_timeout: RPC_TIMEOUT,
        variant: Variant::Head,
        ..ClientOptions::default()
    };
    let client = Arc::new(ChainClient::connect(&zk_cfg, opts).await.expect("client connects to ZooKeeper"));
    let addrs: Vec<&str> = replicas.iter().map(|r| r.addr.as_str()).collect();
    let chain = match wait_whole_chain(&client, &addrs, classic, Duration::from_secs(60)).await {
        Ok(chain) => chain,
        Err(e) => panic!("{e}\n{}", logs(zk, replicas)),
    };
    let names: HashMap<String, String> = replicas.iter().map(|r| (r.addr.clone(), r.node.clone())).collect();
    let roles = Roles {
        head: chain[0].clone(),
        middle: chain[1].clone(),
        tail: chain[2].clone(),
        names,
    };
    if let Some(classic) = classic {
        assert_eq!(roles.head.addr, classic, "the classic replica registered first but is not the head");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_probes = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let acked: Vec<Arc<AtomicU64>> = (0..LOOPS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let loops: Vec<JoinHandle<Loop>> = (0..LOOPS)
        .map(|i| tokio::spawn(client_loop(client.clone(), format!("w{i}"), stop.clone(), acked[i].clone())))
        .collect();
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn(membership_watch(client.clone(), stop_watch.clone()));
    let probe = tokio::spawn(old_head_probe(roles.head.addr.clone(), stop_probes.clone()));
    let reader = tokio::spawn(old_tail_reader(
        roles.tail.addr.clone(),
        "w0".into(),
        acked[0].clone(),
        stop.clone(),
        t0,
    ));

    tokio::time::sleep(WARMUP).await;
    let warm: u64 = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    assert!(
        warm > 0,
        "no write acknowledged in {WARMUP:?} before any fault\n{}",
        logs(zk, replicas)
    );

    let (node, rules) = rules_for(net, &roles, fault);
    let cut = net.cut(&node, rules).expect("install the DROP rules");
    // The fault is measured from when every rule is in force until the first one goes.
    let cut_at = Instant::now();
    let rules_during = net.rules(&node).unwrap_or_else(|e| format!("{e:#}"));
    tokio::time::sleep(fault_duration()).await;
    let heal_at = Instant::now();
    cut.heal().expect("remove the DROP rules");
    stop_probes.store(true, Ordering::Relaxed);
    tokio::time::sleep(AFTER_HEAL).await;
    stop.store(true, Ordering::Relaxed);

    let mut results = Vec::new();
    for l in loops {
        results.push(l.await.expect("client loop"));
    }
    let probe = probe.await.expect("old-head probe");
    let reads = reader.await.expect("old-tail reader");

    // Reads only once the chain holds all three again (a replica cut from ZooKeeper rejoins as
    // a new member), so the read-back does not race the reconfiguration; the membership column
    // shows that rejoin too. A classic replica removed from the chain does not come back by
    // itself (it does not register again while its session lives).
    let expected: Vec<&str> = addrs.iter().copied().filter(|a| Some(*a) != classic).collect();
    let rejoined = wait_whole_chain(&client, &expected, None, Duration::from_secs(60)).await.err();
    stop_watch.store(true, Ordering::Relaxed);
    let changes = watch.await.expect("membership watch");
    let mut readback = Vec::new();
    for l in results.iter().chain(std::iter::once(&probe)) {
        readback.push((l.key.clone(), read_back(&client, &l.key).await));
    }
    let client = Arc::try_unwrap(client).ok();
    if let Some(c) = client {
        c.close().await;
    }

    let mut report = Report::new(
        label,
        fault,
        roles,
        Times {
            cut: cut_at,
            heal: heal_at,
        },
        results,
        probe,
        reads,
        changes,
        readback,
        rejoined,
        rules_during,
    );
    report.classic_head = classic.is_some();
    report
}

/// The key's value, retried for a while: right after the heal a read may meet a replica that
/// is not (yet) serving as tail.
async fn read_back(c: &ChainClient, key: &str) -> Result<i32, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.get(key).await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn logs(zk: &NsZk, replicas: &[NsReplica]) -> String {
    let mut out = zk.proc.log_tail(10);
    for r in replicas {
        out.push_str("\n\n");
        out.push_str(&r.proc.log_tail(20));
    }
    out
}

struct Times {
    cut: Instant,
    heal: Instant,
}

/// How writes flowed between the cut and the heal.
#[derive(Debug, PartialEq)]
struct Flow {
    /// Share of the 100 ms windows with at least one acknowledgement, in percent.
    windows_pct: f64,
    /// Longest time without an acknowledgement (cut and heal count as edges).
    longest_outage: Duration,
    /// From the cut to the first acknowledgement after which no gap exceeds `MAX_GAP` until
    /// the heal; zero if no gap did; `None` if writes never flowed again.
    flowing_again: Option<Duration>,
}

fn flow(acks: &[Instant], cut: Instant, heal: Instant) -> Flow {
    let mut during: Vec<Instant> = acks.iter().copied().filter(|t| *t > cut && *t < heal).collect();
    during.sort();
    let span = heal.saturating_duration_since(cut);
    let windows = (span.as_nanos().div_ceil(WINDOW.as_nanos())).max(1) as usize;
    let mut filled = vec![false; windows];
    for t in &during {
        let i = ((*t - cut).as_nanos() / WINDOW.as_nanos()) as usize;
        filled[i.min(windows - 1)] = true;
    }
    let windows_pct = 100.0 * filled.iter().filter(|f| **f).count() as f64 / windows as f64;

    let mut points = vec![cut];
    points.extend(&during);
    points.push(heal);
    let gaps: Vec<Duration> = points.windows(2).map(|w| w[1] - w[0]).collect();
    let longest_outage = gaps.iter().copied().max().unwrap_or_default();
    let flowing_again = match gaps.iter().rposition(|g| *g > MAX_GAP) {
        None => Some(Duration::ZERO),
        // The gap ran into the heal: writes never flowed again during the fault.
        Some(i) if i + 1 == points.len() - 1 => None,
        Some(i) => Some(points[i + 1] - cut),
    };
    Flow {
        windows_pct,
        longest_outage,
        flowing_again,
    }
}

struct Report {
    label: String,
    fault: Fault,
    flow: Flow,
    membership: String,
    /// Since the cut: when the client first saw another head / tail.
    new_head: Option<Duration>,
    new_tail: Option<Duration>,
    /// Since the cut: the old head's last acknowledgement, `None` if none after the cut.
    old_head_last_ack: Option<Duration>,
    old_tail_reads: usize,
    old_tail_last_read: Option<Duration>,
    stale: Vec<String>,
    acked: u64,
    maybe: u64,
    lost: Vec<String>,
    rejoined: Option<String>,
    rules_during: String,
    errors: Vec<String>,
    /// Whether the replica that was head at the cut is in the chain the client saw last
    /// before the heal.
    old_head_in_chain_at_heal: bool,
    /// The head at the cut was the classic replica.
    classic_head: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        label: &str,
        fault: Fault,
        roles: Roles,
        t: Times,
        loops: Vec<Loop>,
        probe: Loop,
        reads: TailReads,
        changes: Vec<(Instant, Vec<Member>)>,
        readback: Vec<(String, Result<i32, String>)>,
        rejoined: Option<String>,
        rules_during: String,
    ) -> Report {
        let acks: Vec<Instant> = loops.iter().flat_map(|l| l.acks.iter().copied()).collect();
        let flow = flow(&acks, t.cut, t.heal);
        let since_cut = |i: Instant| i.saturating_duration_since(t.cut);

        let initial_ids = [roles.head.id, roles.middle.id, roles.tail.id];
        let name = |m: &Member| {
            let base = roles.names.get(&m.addr).cloned().unwrap_or_else(|| m.addr.clone());
            // A replica back under a new session (it lost its old one) is marked, r0'.
            if initial_ids.contains(&m.id) {
                base
            } else {
                format!("{base}'")
            }
        };
        let after_cut: Vec<&(Instant, Vec<Member>)> = changes.iter().skip(1).filter(|(at, _)| *at > t.cut).collect();
        let membership = if after_cut.is_empty() {
            "unchanged".to_string()
        } else {
            after_cut
                .iter()
                .map(|(at, ms)| {
                    let chain: Vec<String> = ms.iter().map(name).collect();
                    let when = if *at > t.heal { " (healed)" } else { "" };
                    format!("+{:.1}s {}{when}", since_cut(*at).as_secs_f64(), chain.join("-"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let first_change = |pick: fn(&[Member]) -> Option<&Member>, old: u64| {
            after_cut
                .iter()
                .find(|(_, ms)| pick(ms).is_some_and(|m| m.id != old))
                .map(|(at, _)| since_cut(*at))
        };
        let old_head_in_chain_at_heal = changes
            .iter()
            .rfind(|(at, _)| *at < t.heal)
            .is_none_or(|(_, ms)| ms.iter().any(|m| m.addr == roles.head.addr));
        let new_head = first_change(|ms| ms.first(), roles.head.id);
        let new_tail = first_change(|ms| ms.last(), roles.tail.id);
        let old_head_last_ack = probe
            .acks
            .iter()
            .filter(|a| **a > t.cut && **a < t.heal)
            .max()
            .map(|a| since_cut(*a));
        let old_tail_reads = reads.answered.iter().filter(|a| **a > t.cut && **a < t.heal).count();
        let old_tail_last_read = reads
            .answered
            .iter()
            .filter(|a| **a > t.cut && **a < t.heal)
            .max()
            .map(|a| since_cut(*a));

        let mut lost = Vec::new();
        let mut acked = 0;
        let mut maybe = 0;
        let mut errors = Vec::new();
        for l in loops.iter().chain(std::iter::once(&probe)) {
            let n = l.acks.len() as u64;
            acked += n;
            maybe += l.maybe;
            errors.extend(l.errors.iter().map(|(e, n)| format!("{}: {n} x {e}", l.key)));
            match readback.iter().find(|(k, _)| *k == l.key).map(|(_, v)| v) {
                Some(Ok(v)) => {
                    let v = i64::from(*v);
                    if v < n as i64 {
                        lost.push(format!("{}: read {v}, {n} acknowledged ({} maybe applied)", l.key, l.maybe));
                    } else if v > (n + l.maybe) as i64 {
                        lost.push(format!(
                            "{}: read {v}, more than {n} acknowledged + {} maybe applied",
                            l.key, l.maybe
                        ));
                    }
                }
                Some(Err(e)) => lost.push(format!("{}: not readable after the heal: {e}", l.key)),
                None => lost.push(format!("{}: not read back", l.key)),
            }
        }
        Report {
            label: label.to_string(),
            fault,
            flow,
            membership,
            new_head,
            new_tail,
            old_head_last_ack,
            old_tail_reads,
            old_tail_last_read,
            stale: reads.stale,
            acked,
            maybe,
            lost,
            rejoined,
            rules_during,
            errors,
            old_head_in_chain_at_heal,
            classic_head: false,
        }
    }

    fn meets_target(&self) -> bool {
        self.flow.flowing_again.is_some_and(|d| d <= target_for(self.fault))
    }

    fn notes(&self) -> String {
        let secs = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("+{:.1} s", d.as_secs_f64()));
        match self.fault {
            Fault::Zookeeper(Role::Head) | Fault::FromPeers(Role::Head) => format!(
                "new head {}, old head's last ack {}{}",
                secs(self.new_head),
                self.old_head_last_ack
                    .map_or("before the cut".to_string(), |d| format!("+{:.1} s", d.as_secs_f64())),
                match self.fault {
                    Fault::FromPeers(_) => format!("; its target: flowing again within {:.1} s", target_for(self.fault).as_secs_f64()),
                    _ => String::new(),
                }
            ),
            Fault::Zookeeper(_) => format!(
                "new tail {}, old tail answered {} reads (last {})",
                secs(self.new_tail),
                self.old_tail_reads,
                secs(self.old_tail_last_read)
            ),
            _ if self.classic_head => format!(
                "classic head replaced {}, old tail answered {} reads",
                secs(self.new_head),
                self.old_tail_reads
            ),
            _ => format!("old tail answered {} reads", self.old_tail_reads),
        }
    }

    fn row(&self) -> String {
        let again = match self.flow.flowing_again {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => "never".into(),
        };
        let verdict = if self.meets_target() { "(meets target)" } else { "(MISSES target)" };
        format!(
            "| {} | {:.0}% | {:.1} s | {again} {verdict} | {} | {} / {} / {} | {} | {} |",
            self.label,
            self.flow.windows_pct,
            self.flow.longest_outage.as_secs_f64(),
            self.membership,
            self.acked,
            self.maybe,
            self.lost.len(),
            self.stale.len(),
            self.notes(),
        )
    }

    fn details(&self) -> String {
        format!(
            "{}\n  rules in force: {}\n  client errors: {:?}\n  lost: {:?}\n  stale: {:?}\n  chain after the heal: {}",
            self.label,
            self.rules_during.trim().replace('\n', "; "),
            self.errors,
            self.lost,
            self.stale,
            self.rejoined.as_deref().unwrap_or("whole again, all synced"),
        )
    }

    /// Two heads never acknowledge at once: the old one's last acknowledgement came before
    /// the new head was named (at `replaced` after the cut).
    fn check_old_head_stopped_before(&self, replaced: Duration) {
        if let Some(last) = self.old_head_last_ack {
            assert!(
                last < replaced,
                "{}: the old head acknowledged at +{last:?}, after the new head was named at +{replaced:?}",
                self.label
            );
        }
    }

    fn check(&self) {
        assert!(self.lost.is_empty(), "{}: acknowledged writes lost: {:?}", self.label, self.lost);
        assert!(
            self.stale.is_empty(),
            "{}: stale reads from the old tail: {:?}",
            self.label,
            self.stale
        );
        let again = self.flow.flowing_again;
        if self.classic_head {
            // It reports nothing, so only its successor can have seen the link broken.
            assert!(
                !self.old_head_in_chain_at_heal,
                "{}: the classic head is still in the chain at the heal ({})",
                self.label, self.membership
            );
        }
        match self.fault {
            Fault::FromPeers(Role::Head) => {
                let Some(replaced) = self.new_head else {
                    panic!("{}: no new head chosen during the fault", self.label);
                };
                self.check_old_head_stopped_before(replaced);
                assert!(
                    !self.old_head_in_chain_at_heal,
                    "{}: the head cut off from its peers is still in the chain at the heal ({})",
                    self.label, self.membership
                );
                assert!(
                    self.meets_target(),
                    "{}: writes not flowing again within {:?} of the cut (flowing again: {again:?})",
                    self.label,
                    target_for(self.fault)
                );
            }
            Fault::Zookeeper(role) => {
                let replaced = if role == Role::Head { self.new_head } else { self.new_tail };
                let Some(replaced) = replaced else {
                    panic!("{}: no new {role:?} chosen during the fault", self.label);
                };
                if role == Role::Head {
                    self.check_old_head_stopped_before(replaced);
                }
                assert!(
                    self.meets_target(),
                    "{}: writes did not resume within {:?} of the cut (flowing again: {again:?})",
                    self.label,
                    target()
                );
            }
            _ => assert!(
                self.meets_target(),
                "{}: writes not flowing again within 2 x session timeout + 2 s = {:?} of the cut (flowing again: {again:?}; {:.0}% of 100 ms windows with an ack, longest outage {:?}) — expected until replicas detect broken links",
                self.label,
                target(),
                self.flow.windows_pct,
                self.flow.longest_outage
            ),
        }
    }
}

fn print_row(report: &Report) {
    static HEADER: Once = Once::new();
    let table = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gray_failure_table.md");
    let mut text = String::new();
    HEADER.call_once(|| {
        let header = format!(
            "\ngray failures: session timeout {SESSION_TIMEOUT_MS} ms (tests/support/chain.rs), fault {:.0} s, \
             target for link cuts: writes flowing again within {:.1} s of the cut\n\
             | fault, writes running | writes during the fault (100 ms windows with an ack) | longest outage | flowing again for good after | membership (client's view, time since the cut) | acked / maybe / lost | stale reads | notes |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
            fault_duration().as_secs_f64(),
            target().as_secs_f64()
        );
        let _ = std::fs::write(&table, &header);
        text.push_str(&header);
    });
    let line = format!("{}\n", report.row());
    text.push_str(&line);
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(&table) {
        let _ = f.write_all(line.as_bytes());
    }
    text.push_str(&format!("  {}\n", report.details().replace('\n', "\n  ")));
    // Straight to the stream, not through `eprint!`: the harness captures only the macros, and
    // the row is wanted for passing tests too.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[test]
fn flow_measures_windows_outages_and_recovery() {
    let cut = Instant::now();
    let at = |ms: u64| cut + Duration::from_millis(ms);
    let heal = at(10_000);
    // Acks every 50 ms up to 1 s, a 5 s hole, then every 50 ms again.
    let acks: Vec<Instant> = (1..20).chain(120..200).map(|i| at(i * 50)).collect();
    let f = flow(&acks, cut, heal);
    assert_eq!(f.longest_outage, Duration::from_millis(5050));
    assert_eq!(f.flowing_again, Some(Duration::from_millis(6000)));
    assert!((f.windows_pct - 50.0).abs() < 0.01, "{}", f.windows_pct);
    // Nothing after the cut at all: never flowing again.
    let f = flow(&[], cut, heal);
    assert_eq!(f.flowing_again, None);
    assert_eq!(f.longest_outage, Duration::from_secs(10));
    assert_eq!(f.windows_pct, 0.0);
    // Never a gap over 2 s: flowing throughout.
    let acks: Vec<Instant> = (1..10).map(|i| at(i * 1000)).collect();
    assert_eq!(flow(&acks, cut, heal).flowing_again, Some(Duration::ZERO));
}
