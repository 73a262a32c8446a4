//! End-to-end scenarios shared by both variants: tests/chain.rs runs them against a head-variant
//! chain, tests/tail_variant.rs against a tail-variant one. Real ZooKeeper, real `chain-replica`
//! processes, real gRPC sockets; only the service the replicas speak and how a client learns
//! that its write is durable differ.

use std::sync::Arc;
use std::time::Duration;

use chainrep::client::ClientError;
use chainrep::core::Variant;
use chainrep::pb::adb;
use chainrep::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use chainrep::pb::adb::tail_chain_replica_client::TailChainReplicaClient;
use tonic::transport::Channel;

use super::chain::{client, start_zk, wait_chain, ReplicaProc, SESSION_TIMEOUT_MS};

/// Which chain a scenario runs against.
#[derive(Clone, Copy, Debug)]
pub struct Flavor {
    pub variant: Variant,
    pub root: &'static str,
}

pub const HEAD: Flavor = Flavor {
    variant: Variant::Head,
    root: "/headchain",
};
pub const TAIL: Flavor = Flavor {
    variant: Variant::Tail,
    root: "/tailchain",
};

impl Flavor {
    fn start_replicas(self, zk: &str, n: usize) -> Vec<ReplicaProc> {
        (0..n).map(|_| ReplicaProc::start(zk, self.root, self.variant)).collect()
    }
}

/// A client for one particular replica, speaking its variant's service; connects lazily, so the
/// replica may still be starting.
pub enum Direct {
    Head(HeadChainReplicaClient<Channel>),
    Tail(TailChainReplicaClient<Channel>),
}

/// Callback address sent with direct tail-variant writes. Nobody listens there: these writes
/// are all expected to be refused with rc=1 before anything is applied.
const NOBODY_HOST: &str = "127.0.0.1";
const NOBODY_PORT: i32 = 9;

impl Direct {
    pub fn new(addr: &str, variant: Variant) -> Direct {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("replica address");
        let channel = endpoint.connect_lazy();
        match variant {
            Variant::Head => Direct::Head(HeadChainReplicaClient::new(channel)),
            Variant::Tail => Direct::Tail(TailChainReplicaClient::new(channel)),
        }
    }

    pub async fn increment(&mut self, key: &str, delta: i32) -> Result<u32, tonic::Status> {
        let key = key.to_string();
        let r = match self {
            Direct::Head(c) => c.increment(adb::IncrementRequest { key, incr_value: delta }).await?,
            Direct::Tail(c) => {
                let req = adb::TailIncrementRequest {
                    key,
                    incr_value: delta,
                    host: NOBODY_HOST.into(),
                    port: NOBODY_PORT,
                    cxid: 1,
                };
                c.increment(req).await?
            }
        };
        Ok(r.into_inner().rc)
    }

    pub async fn delete(&mut self, key: &str) -> Result<u32, tonic::Status> {
        let key = key.to_string();
        let r = match self {
            Direct::Head(c) => c.delete(adb::DeleteRequest { key }).await?,
            Direct::Tail(c) => {
                c.delete(adb::TailDeleteRequest {
                    key,
                    host: NOBODY_HOST.into(),
                    port: NOBODY_PORT,
                    cxid: 2,
                })
                .await?
            }
        };
        Ok(r.into_inner().rc)
    }

    /// `(rc, value)`.
    pub async fn get(&mut self, key: &str) -> Result<(u32, i32), tonic::Status> {
        let req = adb::GetRequest { key: key.to_string() };
        let r = match self {
            Direct::Head(c) => c.get(req).await?,
            Direct::Tail(c) => c.get(req).await?,
        };
        Ok((r.get_ref().rc, r.get_ref().value))
    }

    /// `(rc, xid)`.
    pub async fn get_latest_xid(&mut self) -> Result<(u32, u64), tonic::Status> {
        let r = match self {
            Direct::Head(c) => c.get_latest_xid(adb::LatestXidRequest {}).await?,
            Direct::Tail(c) => c.get_latest_xid(adb::LatestXidRequest {}).await?,
        };
        Ok((r.get_ref().rc, r.get_ref().xid))
    }
}

pub async fn single_replica_semantics(f: Flavor) {
    let zk = start_zk();
    let r = ReplicaProc::start(&zk.connect_string(), f.root, f.variant);
    let c = client(&zk.connect_string(), f.root, f.variant).await;
    wait_chain(&c, &[&r.addr], Duration::from_secs(20)).await;

    assert_eq!(c.get("missing").await.unwrap(), 0, "a key never written reads 0");
    c.inc("a", 5).await.unwrap();
    c.inc("a", -7).await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), -2, "negative deltas apply");
    c.del("a").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), 0, "delete sets to 0");
    c.del("never-written").await.unwrap();

    c.inc("big", i32::MAX - 1).await.unwrap();
    match c.inc("big", 2).await {
        Err(ClientError::Rejected(s)) => assert_eq!(s.code(), tonic::Code::OutOfRange, "{s:?}"),
        other => panic!("overflow must be rejected with OUT_OF_RANGE, got {other:?}"),
    }
    assert_eq!(c.get("big").await.unwrap(), i32::MAX - 1, "a rejected overflow changes nothing");
    c.inc("small", i32::MIN).await.unwrap();
    match c.inc("small", -1).await {
        Err(ClientError::Rejected(s)) => assert_eq!(s.code(), tonic::Code::OutOfRange),
        other => panic!("underflow must be rejected, got {other:?}"),
    }
    assert_eq!(c.get("small").await.unwrap(), i32::MIN);

    let long = "k".repeat(1025);
    match c.inc(&long, 1).await {
        Err(ClientError::Rejected(s)) => assert_eq!(s.code(), tonic::Code::InvalidArgument),
        other => panic!("a key over the limit must be rejected, got {other:?}"),
    }
    c.close().await;
}

pub async fn three_replicas_answer_by_role(f: Flavor) {
    let zk = start_zk();
    let rs = f.start_replicas(&zk.connect_string(), 3);
    let c = client(&zk.connect_string(), f.root, f.variant).await;
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    let (head, middle, tail) = (&status[0].member.addr, &status[1].member.addr, &status[2].member.addr);
    assert!(
        status[0].member.id < status[1].member.id && status[1].member.id < status[2].member.id,
        "chain order is numeric session order"
    );

    c.inc("x", 3).await.unwrap();
    c.inc("x", 4).await.unwrap();
    assert_eq!(c.get("x").await.unwrap(), 7);

    let direct = |addr: &str| Direct::new(addr, f.variant);
    for addr in [middle, tail] {
        let rc = direct(addr).increment("x", 1).await.unwrap();
        assert_eq!(rc, 1, "increment at a non-head ({addr}) answers rc=1");
        let rc = direct(addr).delete("x").await.unwrap();
        assert_eq!(rc, 1, "delete at a non-head answers rc=1");
    }
    for addr in [head, middle] {
        let (rc, _) = direct(addr).get("x").await.unwrap();
        assert_eq!(rc, 1, "get at a non-tail ({addr}) answers rc=1");
        let (rc, _) = direct(addr).get_latest_xid().await.unwrap();
        assert_eq!(rc, 1, "getLatestXid at a non-tail answers rc=1");
    }
    let latest = direct(tail).get_latest_xid().await.unwrap();
    assert_eq!(latest, (0, 2), "the tail reports the last applied xid");
    assert_eq!(direct(tail).get("x").await.unwrap(), (0, 7));
    assert_eq!(c.get("x").await.unwrap(), 7, "the wrong-role requests changed nothing");
    c.close().await;
}

pub async fn concurrent_clients_sum_exactly(f: Flavor) {
    let zk = start_zk();
    let rs = f.start_replicas(&zk.connect_string(), 3);
    let c = Arc::new(client(&zk.connect_string(), f.root, f.variant).await);
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;

    let mut tasks = Vec::new();
    for t in 0..32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let key = format!("k{}", (t + i) % 8);
                c.inc(&key, 1).await.unwrap_or_else(|e| panic!("client {t} increment {i}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for k in 0..8 {
        let v = c.get(&format!("k{k}")).await.unwrap();
        assert_eq!(v, 800, "key k{k}: 32 clients x 200 increments spread over 8 keys");
        total += v;
    }
    assert_eq!(total, 6400);
    if let Ok(c) = Arc::try_unwrap(c) {
        c.close().await;
    }
}

pub async fn killing_head_middle_and_tail_loses_nothing(f: Flavor) {
    let zk = start_zk();
    let mut rs = f.start_replicas(&zk.connect_string(), 4);
    let c = client(&zk.connect_string(), f.root, f.variant).await;
    let addrs: Vec<String> = rs.iter().map(|r| r.addr.clone()).collect();
    let mut alive: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    // Acknowledged writes must all survive; writes whose outcome the client could not know may
    // or may not have been applied.
    let mut acked = 0;
    let mut maybe = 0;
    for i in 0..20 {
        c.inc("acked", 1).await.unwrap_or_else(|e| panic!("warm-up write {i}: {e}"));
        acked += 1;
    }
    for victim in ["head", "middle", "tail"] {
        let status = wait_chain(&c, &alive, Duration::from_secs(30)).await;
        let pos = match victim {
            "head" => 0,
            "middle" => 1,
            _ => status.len() - 1,
        };
        let addr = status[pos].member.addr.clone();
        let proc = rs.iter_mut().find(|r| r.addr == addr).unwrap();
        proc.kill9();
        alive.retain(|a| *a != addr);
        // Writes keep succeeding across the failover. The one exception: a write sent on the
        // open connection to the head just killed, before the client saw it close, fails
        // with a broken pipe that cannot tell "never arrived" from "arrived, then the head
        // died", and the client rightly does not guess. Once the connection is known dead,
        // the next write sees a refused connect, which is safe to retry.
        let mut unknown_now = 0;
        for i in 0..10 {
            match c.inc("acked", 1).await {
                Ok(()) => acked += 1,
                Err(ClientError::Unknown(why)) if victim == "head" => {
                    eprintln!("write {i} after killing the head: outcome unknown ({why})");
                    unknown_now += 1;
                }
                Err(e) => panic!("write {i} after killing the {victim}: {e}"),
            }
        }
        assert!(
            unknown_now <= 1,
            "{unknown_now} writes of unknown outcome after killing the {victim}"
        );
        maybe += unknown_now;
        let v = c.get("acked").await.unwrap();
        assert!(
            (acked..=acked + maybe).contains(&v),
            "after killing the {victim}: read {v}, {acked} writes acknowledged, {maybe} unknown"
        );
    }
    let status = wait_chain(&c, &alive, Duration::from_secs(30)).await;
    assert_eq!(status.len(), 1);
    let v = c.get("acked").await.unwrap();
    assert!(
        (acked..=acked + maybe).contains(&v),
        "read {v}, {acked} writes acknowledged, {maybe} unknown"
    );
    c.close().await;
}

pub async fn a_fourth_replica_serves_only_after_state_transfer(f: Flavor) {
    let zk = start_zk();
    let rs = f.start_replicas(&zk.connect_string(), 3);
    let c = client(&zk.connect_string(), f.root, f.variant).await;
    let mut addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    for k in 0..50 {
        c.inc(&format!("key{k}"), k + 1).await.unwrap();
    }
    let fourth = ReplicaProc::start(&zk.connect_string(), f.root, f.variant);
    addrs.push(&fourth.addr);
    // Until its transfer it refuses reads (rc=1); it must never answer with partial state.
    let mut tail = Direct::new(&fourth.addr, f.variant);
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    assert_eq!(
        status.last().unwrap().member.addr,
        fourth.addr,
        "a new session sorts last on one ZooKeeper server"
    );
    assert_eq!(status.last().unwrap().described.as_ref().unwrap().keys, 50);
    for k in 0..50 {
        let r = tail.get(&format!("key{k}")).await.unwrap();
        assert_eq!(r, (0, k + 1), "key{k} on the new tail");
    }
    c.inc("key0", 10).await.unwrap();
    assert_eq!(c.get("key0").await.unwrap(), 11);
    c.close().await;
}

pub async fn a_paused_tail_never_serves_stale_reads(f: Flavor) {
    let zk = start_zk();
    let rs = f.start_replicas(&zk.connect_string(), 3);
    let c = client(&zk.connect_string(), f.root, f.variant).await;
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    let old_tail_addr = status[2].member.addr.clone();
    let old_tail = rs.iter().find(|r| r.addr == old_tail_addr).unwrap();
    c.inc("v", 1).await.unwrap();

    old_tail.signal("-STOP");
    // Past the session timeout the chain drops it and the middle becomes the tail.
    tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS * 2)).await;
    c.inc("v", 1).await.expect("writes continue without the paused tail");
    assert_eq!(c.get("v").await.unwrap(), 2);

    // Ask the old tail at once on resuming, and keep asking while it notices what happened.
    let mut stale = Direct::new(&old_tail_addr, f.variant);
    old_tail.signal("-CONT");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut answered = 0;
    while std::time::Instant::now() < until {
        if let Ok((0, value)) = stale.get("v").await {
            answered += 1;
            assert_eq!(value, 2, "the resumed old tail answered a read with stale data");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It rejoins as a new node at the tail with a fresh state transfer, and then reads are current.
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    assert_eq!(
        status.last().unwrap().member.addr,
        old_tail_addr,
        "it rejoined with a new, larger session id"
    );
    assert_eq!(c.get("v").await.unwrap(), 2);
    eprintln!("the old tail answered {answered} reads after resuming, all current");
    c.close().await;
}
