//! End-to-end behaviour of the tail variant (`TailChainReplica`): the head answers rc=0 on
//! acceptance and the tail calls the client back (`TailClient.cxidProcessed`) on the client's
//! own gRPC server. The scenarios shared with the head variant live in
//! tests/support/scenarios.rs; below them are the tail variant's own: stub heads that misbehave
//! in exactly one way, the callback server, and `chainctl --variant tail`.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chainrep::client::{ChainClient, ClientError, ClientOptions};
use chainrep::core::Variant;
use chainrep::pb::adb;
use chainrep::pb::adb::tail_chain_replica_server::{TailChainReplica, TailChainReplicaServer};
use chainrep::pb::adb::tail_client_client::TailClientClient;
use chainrep::pb::chainrep::ext;
use chainrep::pb::chainrep::ext::chain_ext_client::ChainExtClient;
use support::chain::{client, client_with_tls, start_zk, wait_chain, zk_config, ReplicaProc};
use support::proxy::TcpProxy;
use support::scenarios::{self, TAIL};
use support::tls::TestPki;
use support::zk::free_port;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use zookeeper_async::{Acl, CreateMode, ZooKeeper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_semantics() {
    scenarios::single_replica_semantics(TAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_by_role() {
    scenarios::three_replicas_answer_by_role(TAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_sum_exactly() {
    scenarios::concurrent_clients_sum_exactly(TAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_head_middle_and_tail_loses_nothing() {
    scenarios::killing_head_middle_and_tail_loses_nothing(TAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_serves_only_after_state_transfer() {
    scenarios::a_fourth_replica_serves_only_after_state_transfer(TAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tail_never_serves_stale_reads() {
    scenarios::a_paused_tail_never_serves_stale_reads(TAIL).await;
}

// ---------------------------------------------------------------------------------------------
// Stub heads: a `TailChainReplica` that answers writes in one fixed way, registered in a real
// ZooKeeper by hand, so the client's side of each case is exercised deterministically.

#[derive(Clone, Copy, Debug)]
enum StubMode {
    /// rc=1: "I am not the head".
    NotHead,
    /// rc=0 and never a callback: the write is lost somewhere down the chain.
    AcceptSilently,
    /// Calls the client back and waits for its answer, then answers rc=0: the callback
    /// overtakes the acceptance.
    CallBackFirst,
}

/// `(host, port, cxid)` of one write the stub received.
type Seen = Arc<Mutex<Vec<(String, i32, i32)>>>;

#[derive(Clone)]
struct StubHead {
    mode: StubMode,
    seen: Seen,
}

impl StubHead {
    async fn write(&self, host: String, port: i32, cxid: i32) -> Result<Response<adb::HeadResponse>, Status> {
        self.seen.lock().unwrap().push((host.clone(), port, cxid));
        let rc = match self.mode {
            StubMode::NotHead => 1,
            StubMode::AcceptSilently => 0,
            StubMode::CallBackFirst => {
                let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}")).expect("callback address");
                let r = TailClientClient::new(endpoint.connect().await.expect("dial the client's callback server"))
                    .cxid_processed(adb::CxidProcessedRequest { cxid })
                    .await
                    .expect("cxidProcessed");
                assert_eq!(r.get_ref().rc, 0, "the client acknowledges its callback");
                0
            }
        };
        Ok(Response::new(adb::HeadResponse { rc }))
    }
}

#[tonic::async_trait]
impl TailChainReplica for StubHead {
    async fn propose_state_update(&self, _: Request<adb::TailStateUpdateRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        Err(Status::unimplemented("stub head"))
    }
    async fn get_latest_xid(&self, _: Request<adb::LatestXidRequest>) -> Result<Response<adb::LatestXidResponse>, Status> {
        Ok(Response::new(adb::LatestXidResponse { rc: 1, xid: 0 }))
    }
    async fn state_transfer(&self, _: Request<adb::TailStateTransferRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        Err(Status::unimplemented("stub head"))
    }
    async fn increment(&self, request: Request<adb::TailIncrementRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        let r = request.into_inner();
        self.write(r.host, r.port, r.cxid).await
    }
    async fn delete(&self, request: Request<adb::TailDeleteRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        let r = request.into_inner();
        self.write(r.host, r.port, r.cxid).await
    }
    async fn get(&self, _: Request<adb::GetRequest>) -> Result<Response<adb::GetResponse>, Status> {
        Ok(Response::new(adb::GetResponse { rc: 1, value: 0 }))
    }
}

struct RunningStub {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningStub {
    async fn start(mode: StubMode) -> RunningStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub head");
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let service = TailChainReplicaServer::new(StubHead { mode, seen: seen.clone() });
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        RunningStub {
            addr,
            seen,
            stop: Some(stop),
            task,
        }
    }

    fn cxids(&self) -> Vec<i32> {
        self.seen.lock().unwrap().iter().map(|(_, _, cxid)| *cxid).collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

async fn admin(connect: &str) -> ZooKeeper {
    let zk = tokio::time::timeout(
        Duration::from_secs(15),
        ZooKeeper::connect_with_retry_time(connect, Duration::from_secs(10), |_| {}, Duration::from_millis(200)),
    )
    .await
    .expect("admin connect timed out")
    .expect("admin connect");
    zk.exists("/", false).await.expect("admin handshake");
    zk
}

async fn register(zk: &ZooKeeper, path: &str, addr: &str) {
    zk.create(path, addr.as_bytes().to_vec(), Acl::open_unsafe().clone(), CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e:?}"));
}

async fn tail_client(zk: &str, root: &str, op_timeout: Duration) -> ChainClient {
    let opts = ClientOptions {
        op_timeout,
        rpc_timeout: Duration::from_secs(2),
        variant: Variant::Tail,
        ..ClientOptions::default()
    };
    ChainClient::connect(&zk_config(zk, root), opts).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_overtakes_the_acceptance_counts() {
    let zk = start_zk();
    let admin = admin(&zk.connect_string()).await;
    let stub = RunningStub::start(StubMode::CallBackFirst).await;
    register(&admin, "/stub", "").await;
    register(&admin, "/stub/1", &stub.addr.to_string()).await;
    let c = tail_client(&zk.connect_string(), "/stub", Duration::from_secs(5)).await;

    c.inc("k", 1)
        .await
        .expect("the callback came before rc=0 and still completes the write");
    c.del("k").await.expect("the same for a delete");
    let cxids = stub.cxids();
    assert_eq!(cxids.len(), 2, "one request per write: {cxids:?}");
    assert_ne!(cxids[0], cxids[1], "every write gets its own cxid");
    let (host, port, _) = stub.seen.lock().unwrap()[0].clone();
    assert_eq!(
        format!("{host}:{port}"),
        c.callback_addr().unwrap(),
        "the head is told where the client listens"
    );
    assert_eq!(host, "127.0.0.1", "the callback server is on loopback by default");

    c.close().await;
    stub.stop().await;
    admin.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_write_without_callback_is_unknown_and_not_retried() {
    let zk = start_zk();
    let admin = admin(&zk.connect_string()).await;
    let stub = RunningStub::start(StubMode::AcceptSilently).await;
    register(&admin, "/stub", "").await;
    register(&admin, "/stub/1", &stub.addr.to_string()).await;
    let c = tail_client(&zk.connect_string(), "/stub", Duration::from_millis(1500)).await;

    let started = std::time::Instant::now();
    match c.inc("k", 1).await {
        Err(ClientError::Unknown(why)) => assert!(why.contains("did not call back"), "{why}"),
        other => {
            panic!("an accepted write with no callback must be outcome unknown, got {other:?}")
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "it waited for the callback until the op deadline"
    );
    match c.del("k").await {
        Err(e @ ClientError::Unknown(_)) => {
            assert!(e.to_string().starts_with("outcome unknown"), "{e}")
        }
        other => panic!("the same for a delete, got {other:?}"),
    }
    assert_eq!(stub.cxids().len(), 2, "an accepted write is never sent again");

    c.close().await;
    stub.stop().await;
    admin.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_the_head_is_retried_at_the_new_head_with_the_same_cxid() {
    let zk = start_zk();
    let admin = admin(&zk.connect_string()).await;
    let old = RunningStub::start(StubMode::NotHead).await;
    let new = RunningStub::start(StubMode::CallBackFirst).await;
    register(&admin, "/stub", "").await;
    register(&admin, "/stub/1", &old.addr.to_string()).await;
    let c = Arc::new(tail_client(&zk.connect_string(), "/stub", Duration::from_secs(10)).await);

    let write = tokio::spawn({
        let c = c.clone();
        async move { c.inc("k", 1).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while old.cxids().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the client never retried at the old head");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The membership changes: the old head leaves and a new one (lowest id) takes its place.
    admin.delete("/stub/1", None).await.expect("delete old head");
    register(&admin, "/stub/2", &new.addr.to_string()).await;
    write.await.unwrap().expect("the write succeeds at the new head");

    let tried: Vec<i32> = old.cxids();
    let accepted = new.cxids();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert!(
        tried.iter().all(|c| *c == accepted[0]),
        "one write, one cxid across attempts: {tried:?} then {accepted:?}"
    );

    if let Ok(c) = Arc::try_unwrap(c) {
        c.close().await;
    }
    old.stop().await;
    new.stop().await;
    admin.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cxids_are_answered_and_close_stops_the_callback_server() {
    let zk = start_zk();
    // An empty chain: the callback server runs whether or not anyone is there to call it.
    let c = tail_client(&zk.connect_string(), "/nobody", Duration::from_secs(2)).await;
    let addr = c.callback_addr().expect("a tail-variant client has a callback address");
    let local = c.callback_local_addr().unwrap();
    assert!(local.ip().is_loopback(), "{local}");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut cb = TailClientClient::new(endpoint.connect().await.expect("the callback server accepts connections"));
    for cxid in [0, 1, -1, 123_456, i32::MAX] {
        let r = cb.cxid_processed(adb::CxidProcessedRequest { cxid }).await.expect("cxidProcessed");
        assert_eq!(r.get_ref().rc, 0, "cxid {cxid} that nobody waits for is answered rc=0");
    }
    drop(cb);

    c.close().await;
    let refused = tokio::net::TcpStream::connect(local).await;
    assert!(refused.is_err(), "the callback server still accepts connections after close");

    let head = client(&zk.connect_string(), "/nobody", Variant::Head).await;
    assert!(head.callback_addr().is_none(), "the head variant runs no callback server");
    head.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_tail_cannot_reach_learns_nothing_though_its_write_applied() {
    let zk = start_zk();
    let r = ReplicaProc::start(&zk.connect_string(), TAIL.root, Variant::Tail);
    let reader = client(&zk.connect_string(), TAIL.root, Variant::Tail).await;
    wait_chain(&reader, &[&r.addr], Duration::from_secs(20)).await;

    // As a client behind NAT: it tells the head an address where nobody answers.
    let nowhere = free_port().unwrap();
    let opts = ClientOptions {
        op_timeout: Duration::from_secs(2),
        variant: Variant::Tail,
        callback_advertise: Some(format!("127.0.0.1:{nowhere}")),
        ..ClientOptions::default()
    };
    let unreachable = ChainClient::connect(&zk_config(&zk.connect_string(), TAIL.root), opts)
        .await
        .unwrap();
    match unreachable.inc("behind-nat", 1).await {
        Err(ClientError::Unknown(_)) => {}
        other => panic!("without a callback the outcome is unknown, got {other:?}"),
    }
    assert_eq!(reader.get("behind-nat").await.unwrap(), 1, "the write itself went through");
    unreachable.close().await;
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_variant_client_is_told_the_chain_speaks_the_other_variant() {
    let zk = start_zk();
    let r = ReplicaProc::start(&zk.connect_string(), TAIL.root, Variant::Tail);
    let tail = client(&zk.connect_string(), TAIL.root, Variant::Tail).await;
    wait_chain(&tail, &[&r.addr], Duration::from_secs(20)).await;
    let wrong = client(&zk.connect_string(), TAIL.root, Variant::Head).await;
    for result in [wrong.inc("k", 1).await.map(|_| 0), wrong.get("k").await] {
        match result {
            Err(ClientError::Rejected(s)) => {
                assert_eq!(s.code(), tonic::Code::Unimplemented);
                assert!(s.message().contains("HeadChainReplica"), "{s:?}");
            }
            other => {
                panic!("the wrong variant is refused at once, not unknown or retried: {other:?}")
            }
        }
    }
    assert_eq!(tail.get("k").await.unwrap(), 0, "nothing was applied");
    wrong.close().await;
    tail.close().await;
}

// ---------------------------------------------------------------------------------------------
// chainctl --variant tail

fn chainctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chainctl"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chainctl");
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    tokio::task::block_in_place(|| child.wait_with_output()).expect("chainctl output")
}

fn ok_stdout(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "chainctl {what} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chainctl_speaks_the_tail_variant() {
    let zk = start_zk();
    let zk_hosts = zk.connect_string();
    let rs: Vec<ReplicaProc> = (0..3).map(|_| ReplicaProc::start(&zk_hosts, "/tailchain", Variant::Tail)).collect();
    let c = client(&zk_hosts, "/tailchain", Variant::Tail).await;
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    // No --root: --variant tail looks under /tailchain.
    let base = ["--zk", zk_hosts.as_str(), "--variant", "tail", "--timeout-ms", "10000"];
    let run = |extra: &[&str], stdin: Option<&str>| chainctl(&[&base[..], extra].concat(), stdin);

    ok_stdout("inc", &run(&["inc", "k", "5"], None));
    ok_stdout("inc", &run(&["inc", "k", "-2"], None));
    assert_eq!(ok_stdout("get", &run(&["get", "k"], None)), "3\n");
    ok_stdout("del", &run(&["del", "k"], None));
    assert_eq!(ok_stdout("get", &run(&["get", "k"], None)), "0\n");

    let shell = ok_stdout("shell", &run(&["shell"], Some("inc s 3\nget s\ninc s -1\nget s\ndel s\nget s\n")));
    assert_eq!(shell, "ok\n3\nok\n2\nok\n0\n");

    let status = ok_stdout("status", &run(&["status"], None));
    let rows: Vec<Vec<&str>> = status.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["head", "middle", "tail"],
        "{status}"
    );
    assert!(
        rows.iter().all(|r| r[3] == "6" && r[4] == "true"),
        "every replica applied the 6 writes:\n{status}"
    );

    let fill = ok_stdout("fill", &run(&["fill", "--keys", "20", "--concurrency", "4"], None));
    assert!(fill.starts_with("wrote 20 keys"), "{fill}");
    assert_eq!(c.get("fill19").await.unwrap(), 1);

    let probe = ok_stdout("probe", &run(&["probe", "--key", "p", "--seconds", "1"], None));
    assert!(
        probe.lines().any(|l| l.ends_with(" ok write")) && probe.lines().all(|l| l.contains(" ok ")),
        "{probe}"
    );
    // `INVOKED DONE outcome op`, invoked no later than done.
    assert!(
        probe.lines().all(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() == 4 && matches!((f[0].parse::<u128>(), f[1].parse::<u128>()), (Ok(i), Ok(d)) if i <= d)
        }),
        "{probe}"
    );

    let bench = ok_stdout(
        "bench",
        &run(
            &[
                "bench",
                "--duration",
                "1",
                "--warmup",
                "0",
                "--concurrency",
                "4",
                "--keys",
                "10",
                "--json",
            ],
            None,
        ),
    );
    assert!(bench.contains("\"target\":\"chain\"") && bench.contains("\"errors\":0"), "{bench}");

    // The head variant against this chain is refused, not left "unknown".
    let wrong = chainctl(&["--zk", zk_hosts.as_str(), "--root", "/tailchain", "inc", "k", "1"], None);
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    let bad = chainctl(&["--zk", zk_hosts.as_str(), "--callback-listen", "127.0.0.1:0", "get", "k"], None);
    assert_eq!(bad.status.code(), Some(2), "callback flags without --variant tail are an error");
    c.close().await;
}

/// A TLS tail-variant chain: the tail calls clients back over TLS, presenting its certificate,
/// so a client needs a certificate of the chain's CA for its callback server; a client with
/// the CA alone is told so at once, and a callback server takes no call without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_chain_calls_back_over_tls() {
    let zk = start_zk();
    let zk_hosts = zk.connect_string();
    let pki = TestPki::new();
    let flags = pki.replica.replica_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let rs: Vec<ReplicaProc> = (0..2)
        .map(|_| ReplicaProc::start_with(&zk_hosts, TAIL.root, Variant::Tail, &flags))
        .collect();
    let c = client_with_tls(&zk_hosts, TAIL.root, Variant::Tail, Some(pki.replica.with_identity())).await;
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    c.inc("k", 5).await.expect("a write acknowledged by a callback over TLS");
    c.del("d").await.expect("a delete acknowledged by a callback over TLS");
    assert_eq!(c.get("k").await.unwrap(), 5);

    // Without a certificate of its own the client cannot take the tail's callbacks.
    let opts = ClientOptions {
        variant: Variant::Tail,
        tls: Some(pki.replica.ca_only()),
        ..ClientOptions::default()
    };
    let e = ChainClient::connect(&zk_config(&zk_hosts, TAIL.root), opts)
        .await
        .err()
        .expect("a tail-variant TLS client without a certificate");
    assert!(format!("{e:#}").contains("needs its own certificate and key"), "{e:#}");

    // The callback server is TLS and wants the chain's certificates: a caller without one
    // cannot report a write done.
    let callback = c.callback_local_addr().expect("callback server");
    let endpoint = pki.replica.ca_only().endpoint(&callback.to_string()).unwrap();
    let r = TailClientClient::new(endpoint.connect_lazy())
        .cxid_processed(adb::CxidProcessedRequest { cxid: 1 })
        .await;
    assert!(r.is_err(), "a callback without a certificate: {r:?}");
    c.close().await;
}

// ---------------------------------------------------------------------------------------------
// The tail's callback queues (src/runtime/callbacks.rs): callbacks wait in per-client queues
// instead of being dropped, and one client cannot hold up another's.

/// What a replica says about itself (`chainrep.ext.describe`), straight from its address.
async fn applied_xid(addr: &str) -> Option<u64> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
    let mut request = Request::new(ext::DescribeRequest {});
    request.set_timeout(Duration::from_secs(2));
    let r = ChainExtClient::new(endpoint.connect_lazy()).describe(request).await.ok()?;
    Some(r.into_inner().last_applied_xid)
}

/// Waits until the replica at `addr` has applied at least `xid`.
async fn wait_applied(addr: &str, xid: u64, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = applied_xid(addr).await;
        if last.is_some_and(|x| x >= xid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never applied xid {xid}; last seen {last:?}");
}

/// `n` concurrent increments of distinct keys `{prefix}{i}`, each reporting how it ended and
/// how long it took.
fn spawn_writes(c: &Arc<ChainClient>, prefix: &str, n: usize) -> Vec<tokio::task::JoinHandle<(Result<(), ClientError>, Duration)>> {
    (0..n)
        .map(|i| {
            let (c, key) = (c.clone(), format!("{prefix}{i}"));
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = c.inc(&key, 1).await;
                (r, started.elapsed())
            })
        })
        .collect()
}

/// 1,500 writes are in flight when the tail dies: the middle, now the tail, calls all of them
/// back at once. It used to call back 1,024 and drop the other 476 for good, which left their
/// clients with an unknown outcome although every write was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_tail_failover_every_write_in_flight_is_called_back() {
    const WRITES: usize = 1_500;
    let zk = start_zk();
    let zk_hosts = zk.connect_string();
    let first_two: Vec<ReplicaProc> = (0..2).map(|_| ReplicaProc::start(&zk_hosts, TAIL.root, Variant::Tail)).collect();
    let c = Arc::new(tail_client(&zk_hosts, TAIL.root, Duration::from_secs(40)).await);
    let addrs: Vec<&str> = first_two.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    // The tail is reached through a proxy, so it can be cut off from the chain while its
    // ZooKeeper session lives on: the writes pile up at the middle, applied but not called back.
    let tail_port = free_port().unwrap();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], tail_port))).await.unwrap();
    let advertised = proxy.connect_string();
    let mut tail = ReplicaProc::start_on(&zk_hosts, TAIL.root, Variant::Tail, tail_port, &["--advertise", &advertised]);
    let status = wait_chain(&c, &[addrs[0], addrs[1], &advertised], Duration::from_secs(30)).await;
    assert_eq!(status[2].member.addr, advertised, "the last to join is the tail: {status:#?}");
    let middle = first_two.iter().find(|r| r.addr == status[1].member.addr).expect("the middle");
    let base = applied_xid(&middle.addr).await.expect("the middle describes itself");

    proxy.partition();
    let writes = spawn_writes(&c, "failover", WRITES);
    wait_applied(&middle.addr, base + WRITES as u64, Duration::from_secs(30)).await;
    tail.kill9();
    let started = std::time::Instant::now();

    let mut unknown = Vec::new();
    let mut slowest = Duration::ZERO;
    for w in writes {
        let (r, _) = w.await.unwrap();
        match r {
            Ok(()) => slowest = started.elapsed(),
            Err(e) => unknown.push(e.to_string()),
        }
    }
    assert!(
        unknown.is_empty(),
        "{} of {WRITES} writes were not called back, e.g. {:?}\nnew tail's log:\n{}",
        unknown.len(),
        unknown.first(),
        middle.log_tail()
    );
    eprintln!("all {WRITES} called back {slowest:?} after the tail was killed");
    for i in (0..WRITES).step_by(97) {
        assert_eq!(c.get(&format!("failover{i}")).await.unwrap(), 1, "applied exactly once");
    }
    if let Ok(c) = Arc::try_unwrap(c) {
        c.close().await;
    }
}

/// A client that accepts the tail's connections and never answers them has 1,500 writes
/// waiting for callbacks; meanwhile another client's 50 writes are all called back promptly.
/// The silent client's callbacks used to fill all 1,024 of the tail's slots, so the other
/// client's callbacks were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_hold_up_another_clients_callbacks() {
    const SILENT_WRITES: usize = 1_500;
    const WRITES: usize = 50;
    let zk = start_zk();
    let zk_hosts = zk.connect_string();
    let r = ReplicaProc::start(&zk_hosts, TAIL.root, Variant::Tail);
    let good = Arc::new(tail_client(&zk_hosts, TAIL.root, Duration::from_secs(10)).await);
    wait_chain(&good, &[&r.addr], Duration::from_secs(20)).await;

    // Accepts every connection and never reads from it nor answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let opts = ClientOptions {
        op_timeout: Duration::from_secs(4),
        variant: Variant::Tail,
        callback_advertise: Some(silent_addr.clone()),
        ..ClientOptions::default()
    };
    let silent = Arc::new(ChainClient::connect(&zk_config(&zk_hosts, TAIL.root), opts).await.unwrap());
    let base = applied_xid(&r.addr).await.expect("the replica describes itself");
    let silent_writes = spawn_writes(&silent, "silent", SILENT_WRITES);
    wait_applied(&r.addr, base + SILENT_WRITES as u64, Duration::from_secs(30)).await;

    // Every silent callback is now queued at the tail or waiting for its answer.
    let writes = spawn_writes(&good, "good", WRITES);
    let mut slowest = Duration::ZERO;
    for w in writes {
        let (r, took) = w.await.unwrap();
        r.expect("the other client's write is called back");
        slowest = slowest.max(took);
    }
    eprintln!("{WRITES} writes called back, the slowest after {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "called back only after {slowest:?}: held up behind the silent client (its calls time out after 2 s)"
    );

    for w in silent_writes {
        match w.await.unwrap().0 {
            Err(ClientError::Unknown(_)) => {}
            other => panic!("nobody answers the silent client's callbacks: {other:?}"),
        }
    }
    assert_eq!(good.get("silent7").await.unwrap(), 1, "the silent client's writes were applied");
    // Its failed callbacks are retried quietly, not logged one by one.
    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
    let lines = log.lines().filter(|l| l.contains(&silent_addr)).count();
    assert!(lines <= 5, "{lines} log lines about the silent client:\n{}", r.log_tail());
    hold.abort();
    for c in [silent, good] {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
}
