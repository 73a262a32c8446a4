//! End-to-end behaviour of the head variant: real ZooKeeper, real `chain-replica` processes,
//! real gRPC sockets.

mod support;

use std::time::Duration;

use chainrep::client::ClientError;
use chainrep::core::Variant;
use chainrep::pb::adb;
use chainrep::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use support::chain::{client, start_zk, wait_chain, ReplicaProc, SESSION_TIMEOUT_MS};

const ROOT: &str = "/headchain";

/// A client for one particular replica; connects lazily, so the replica may still be starting.
async fn direct(addr: &str) -> HeadChainReplicaClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("replica address");
    HeadChainReplicaClient::new(endpoint.connect_lazy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_semantics() {
    let zk = start_zk();
    let r = ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head);
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_by_role() {
    let zk = start_zk();
    let rs: Vec<ReplicaProc> = (0..3).map(|_| ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head)).collect();
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    let addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    let (head, middle, tail) = (&status[0].member.addr, &status[1].member.addr, &status[2].member.addr);
    assert!(status[0].member.id < status[1].member.id && status[1].member.id < status[2].member.id, "chain order is numeric session order");

    c.inc("x", 3).await.unwrap();
    c.inc("x", 4).await.unwrap();
    assert_eq!(c.get("x").await.unwrap(), 7);

    for addr in [middle, tail] {
        let r = direct(addr).await.increment(adb::IncrementRequest { key: "x".into(), incr_value: 1 }).await.unwrap();
        assert_eq!(r.get_ref().rc, 1, "increment at a non-head ({addr}) answers rc=1");
        let r = direct(addr).await.delete(adb::DeleteRequest { key: "x".into() }).await.unwrap();
        assert_eq!(r.get_ref().rc, 1, "delete at a non-head answers rc=1");
    }
    for addr in [head, middle] {
        let r = direct(addr).await.get(adb::GetRequest { key: "x".into() }).await.unwrap();
        assert_eq!(r.get_ref().rc, 1, "get at a non-tail ({addr}) answers rc=1");
        let r = direct(addr).await.get_latest_xid(adb::LatestXidRequest {}).await.unwrap();
        assert_eq!(r.get_ref().rc, 1, "getLatestXid at a non-tail answers rc=1");
    }
    let r = direct(tail).await.get_latest_xid(adb::LatestXidRequest {}).await.unwrap();
    assert_eq!((r.get_ref().rc, r.get_ref().xid), (0, 2), "the tail reports the last applied xid");
    let r = direct(tail).await.get(adb::GetRequest { key: "x".into() }).await.unwrap();
    assert_eq!((r.get_ref().rc, r.get_ref().value), (0, 7));
    assert_eq!(c.get("x").await.unwrap(), 7, "the wrong-role requests changed nothing");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_sum_exactly() {
    let zk = start_zk();
    let rs: Vec<ReplicaProc> = (0..3).map(|_| ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head)).collect();
    let c = std::sync::Arc::new(client(&zk.connect_string(), ROOT, Variant::Head).await);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_head_middle_and_tail_loses_nothing() {
    let zk = start_zk();
    let mut rs: Vec<ReplicaProc> = (0..4).map(|_| ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head)).collect();
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    let addrs: Vec<String> = rs.iter().map(|r| r.addr.clone()).collect();
    let mut alive: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    let mut expected = 0;
    for i in 0..20 {
        c.inc("acked", 1).await.unwrap_or_else(|e| panic!("warm-up write {i}: {e}"));
        expected += 1;
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
        // Writes keep succeeding across the failover; each acknowledged one must survive.
        for i in 0..10 {
            c.inc("acked", 1).await.unwrap_or_else(|e| panic!("write {i} after killing the {victim}: {e}"));
            expected += 1;
        }
        assert_eq!(c.get("acked").await.unwrap(), expected, "after killing the {victim}");
    }
    let status = wait_chain(&c, &alive, Duration::from_secs(30)).await;
    assert_eq!(status.len(), 1);
    assert_eq!(c.get("acked").await.unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_serves_only_after_state_transfer() {
    let zk = start_zk();
    let rs: Vec<ReplicaProc> = (0..3).map(|_| ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head)).collect();
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
    let mut addrs: Vec<&str> = rs.iter().map(|r| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    for k in 0..50 {
        c.inc(&format!("key{k}"), k + 1).await.unwrap();
    }
    let fourth = ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head);
    addrs.push(&fourth.addr);
    // Until its transfer it refuses reads (rc=1); it must never answer with partial state.
    let mut tail = direct(&fourth.addr).await;
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    assert_eq!(status.last().unwrap().member.addr, fourth.addr, "a new session sorts last on one ZooKeeper server");
    assert_eq!(status.last().unwrap().described.as_ref().unwrap().keys, 50);
    for k in 0..50 {
        let r = tail.get(adb::GetRequest { key: format!("key{k}") }).await.unwrap();
        assert_eq!((r.get_ref().rc, r.get_ref().value), (0, k + 1), "key{k} on the new tail");
    }
    c.inc("key0", 10).await.unwrap();
    assert_eq!(c.get("key0").await.unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tail_never_serves_stale_reads() {
    let zk = start_zk();
    let rs: Vec<ReplicaProc> = (0..3).map(|_| ReplicaProc::start(&zk.connect_string(), ROOT, Variant::Head)).collect();
    let c = client(&zk.connect_string(), ROOT, Variant::Head).await;
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
    let mut stale = direct(&old_tail_addr).await;
    old_tail.signal("-CONT");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut answered = 0;
    while std::time::Instant::now() < until {
        if let Ok(r) = stale.get(adb::GetRequest { key: "v".into() }).await {
            if r.get_ref().rc == 0 {
                answered += 1;
                assert_eq!(r.get_ref().value, 2, "the resumed old tail answered a read with stale data");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It rejoins as a new node at the tail with a fresh state transfer, and then reads are current.
    let status = wait_chain(&c, &addrs, Duration::from_secs(30)).await;
    assert_eq!(status.last().unwrap().member.addr, old_tail_addr, "it rejoined with a new, larger session id");
    assert_eq!(c.get("v").await.unwrap(), 2);
    eprintln!("the old tail answered {answered} reads after resuming, all current");
}
