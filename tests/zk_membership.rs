//! The ZooKeeper glue (`chainrep::runtime::zk`) against a real ZooKeeper server.
//!
//! Needs Debian's ZooKeeper and Java: `scripts/install-deps`.

// Each test holds the serializing lock across awaits on purpose: every test has its own runtime
// and nothing inside it takes the lock.
#![allow(clippy::await_holding_lock)]

mod support;

use std::sync::Mutex;
use std::time::Duration;

use chainrep::core::{ChainMarker, Member};
use chainrep::runtime::zk::{MembershipEvent, ZkConfig, ZkCoordinator, ZkWatcher};
use support::proxy::TcpProxy;
use support::zk::{free_port, ZkServer};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use zookeeper_async::{Acl, CreateMode, Permission, ZooKeeper};

/// One JVM at a time: two cores, and the CPU check below must measure only itself.
static SERIAL: Mutex<()> = Mutex::new(());

const SESSION: Duration = Duration::from_secs(2);
/// Generous bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(15);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "chainrep=debug,zookeeper_async=warn".into()),
        )
        .try_init();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_zk() -> ZkServer {
    ZkServer::start().expect("start ZooKeeper (scripts/install-deps installs it)")
}

fn cfg(connect: &str, root: &str) -> ZkConfig {
    ZkConfig {
        connect: connect.to_string(),
        root: root.to_string(),
        session_timeout: SESSION,
    }
}

struct Replica {
    coord: ZkCoordinator,
    events: mpsc::Receiver<MembershipEvent>,
    /// Everything received so far, for failure messages.
    seen: Vec<MembershipEvent>,
}

impl Replica {
    fn spawn(cfg: ZkConfig, advertise: &str) -> Replica {
        let (tx, events) = mpsc::channel(256);
        Replica {
            coord: ZkCoordinator::spawn(cfg, advertise.to_string(), tx),
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event matching `pred`, skipping others.
    async fn wait_for<T>(&mut self, what: &str, mut pred: impl FnMut(&MembershipEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + SOON;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    let hit = pred(&ev);
                    self.seen.push(ev);
                    if let Some(t) = hit {
                        return t;
                    }
                }
                Ok(None) => panic!("event channel closed while waiting for {what}; seen {:?}", self.seen),
                Err(_) => panic!("no {what} within {SOON:?}; seen {:?}", self.seen),
            }
        }
    }

    async fn joined(&mut self) -> u64 {
        self.wait_for("Joined", |ev| match ev {
            MembershipEvent::Joined { session_id } => Some(*session_id),
            _ => None,
        })
        .await
    }

    async fn view_where(&mut self, what: &str, mut pred: impl FnMut(&[Member]) -> bool) -> Vec<Member> {
        self.wait_for(what, |ev| match ev {
            MembershipEvent::View { members: v, .. } if pred(v) => Some(v.clone()),
            _ => None,
        })
        .await
    }

    async fn view_of_len(&mut self, n: usize) -> Vec<Member> {
        self.view_where(&format!("a view of {n}"), |v| v.len() == n).await
    }

    async fn session_lost(&mut self) {
        self.wait_for("SessionLost", |ev| matches!(ev, MembershipEvent::SessionLost).then_some(()))
            .await
    }

    /// Events that arrive within `d`, without waiting for anything in particular.
    async fn drain_for(&mut self, d: Duration) -> Vec<MembershipEvent> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.seen.push(ev.clone());
            got.push(ev);
        }
        got
    }
}

/// A plain client to inspect and tamper with the tree.
async fn admin(connect: &str) -> ZooKeeper {
    let zk = timeout(
        SOON,
        ZooKeeper::connect_with_retry_time(connect, Duration::from_secs(10), |_| {}, Duration::from_millis(200)),
    )
    .await
    .expect("admin connect timed out")
    .expect("admin connect");
    timeout(SOON, zk.exists("/", false))
        .await
        .expect("admin handshake timed out")
        .expect("admin handshake");
    zk
}

async fn children(zk: &ZooKeeper, path: &str) -> Vec<String> {
    let mut c = zk.get_children(path, false).await.unwrap_or_else(|e| panic!("list {path}: {e:?}"));
    c.sort();
    c
}

async fn data(zk: &ZooKeeper, path: &str) -> String {
    let (d, _) = zk.get_data(path, false).await.unwrap_or_else(|e| panic!("get {path}: {e:?}"));
    String::from_utf8(d).expect("utf-8 data")
}

async fn create(zk: &ZooKeeper, path: &str, data: &str) {
    zk.create(path, data.as_bytes().to_vec(), Acl::open_unsafe().clone(), CreateMode::Persistent)
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e:?}"));
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_join_in_session_order_and_leave_cleanly() {
    let _serial = serial();
    let server = start_zk();
    let zk = admin(&server.connect_string()).await;

    let mut a = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7001");
    let id_a = a.joined().await;
    let mut b = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7002");
    let id_b = b.joined().await;
    assert_ne!(id_a, id_b);

    let view_a = a.view_of_len(2).await;
    let view_b = b.view_of_len(2).await;
    assert_eq!(view_a, view_b);
    // ZooKeeper hands out increasing session ids, so the first to join is the head.
    assert!(id_a < id_b, "session ids {id_a:x} {id_b:x}");
    assert_eq!(
        view_a,
        vec![
            Member {
                id: id_a,
                addr: "127.0.0.1:7001".into()
            },
            Member {
                id: id_b,
                addr: "127.0.0.1:7002".into()
            }
        ]
    );

    // On the server: lowercase hex names, ephemeral, address on the first line.
    let mut names = vec![format!("{id_a:x}"), format!("{id_b:x}")];
    names.sort();
    assert_eq!(children(&zk, "/headchain").await, names);
    for name in &names {
        assert!(name.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{name}");
    }
    // Exactly host:port: other implementations dial the data verbatim.
    assert_eq!(data(&zk, &format!("/headchain/{id_a:x}")).await, "127.0.0.1:7001");
    // What only our replicas use lives beside the root, where no other implementation looks.
    assert!(children(&zk, "/").await.contains(&"headchain.chainrep".to_string()));
    let stat = zk
        .exists(&format!("/headchain/{id_b:x}"), false)
        .await
        .unwrap()
        .expect("znode of b");
    assert_eq!(stat.ephemeral_owner as u64, id_b);

    // Liveness reports keep coming, each about a round trip that started recently.
    let alive = a.drain_for(SESSION).await;
    let alives: Vec<Instant> = alive
        .iter()
        .filter_map(|e| if let MembershipEvent::Alive { at } = e { Some(*at) } else { None })
        .collect();
    assert!(alives.len() >= 2, "expected Alive about every {:?}, got {alive:?}", SESSION / 4);
    assert!(alives.iter().all(|at| at.elapsed() < SESSION * 2));

    // Closing deletes the znode at once rather than after the session timeout.
    let closed_at = Instant::now();
    b.coord.close().await;
    assert_eq!(children(&zk, "/headchain").await, vec![format!("{id_a:x}")]);
    let view = a.view_of_len(1).await;
    assert_eq!(
        view,
        vec![Member {
            id: id_a,
            addr: "127.0.0.1:7001".into()
        }]
    );
    assert!(closed_at.elapsed() < SESSION, "leaving took {:?}", closed_at.elapsed());
    // The closed one says nothing more, and close is idempotent.
    b.coord.close().await;
    assert!(b
        .drain_for(Duration::from_millis(200))
        .await
        .iter()
        .all(|e| matches!(e, MembershipEvent::Alive { .. } | MembershipEvent::Listed)));

    a.coord.close().await;
    assert_eq!(children(&zk, "/headchain").await, Vec::<String>::new());
    let _ = zk.close().await;
}

/// The held-state marker is created once: exactly one replica ever hears `Created`, and it
/// survives the root being deleted. A relist is answered by `Listed`; a rejoin deletes our
/// znode at once, reports the session lost and registers anew when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marker_relist_and_rejoin() {
    let _serial = serial();
    let server = start_zk();
    let connect = server.connect_string();
    let zk = admin(&connect).await;
    let marker = |r: &MembershipEvent| match r {
        MembershipEvent::ChainMarker(m) => Some(*m),
        _ => None,
    };

    let mut a = Replica::spawn(cfg(&connect, "/apps/headchain"), "127.0.0.1:7001");
    let mut b = Replica::spawn(cfg(&connect, "/apps/headchain"), "127.0.0.1:7002");
    let id_a = a.joined().await;
    b.joined().await;
    a.coord.request_chain_marker();
    assert_eq!(a.wait_for("the marker's answer", marker).await, ChainMarker::Created);
    b.coord.request_chain_marker();
    assert_eq!(b.wait_for("the marker's answer", marker).await, ChainMarker::Existed);
    a.coord.request_chain_marker();
    assert_eq!(a.wait_for("the marker's answer", marker).await, ChainMarker::Existed);
    assert_eq!(children(&zk, "/apps/headchain.chainrep").await, vec!["held-state".to_string()]);

    a.drain_for(Duration::from_millis(100)).await;
    a.coord.request_relist();
    a.wait_for("Listed", |ev| matches!(ev, MembershipEvent::Listed).then_some(())).await;

    let asked = Instant::now();
    a.coord.request_rejoin();
    a.session_lost().await;
    assert!(
        !children(&zk, "/apps/headchain").await.contains(&format!("{id_a:x}")),
        "the old znode is gone at once"
    );
    b.view_of_len(1).await;
    assert!(asked.elapsed() < SESSION, "leaving took {:?}", asked.elapsed());
    a.coord.request_join();
    let again = a.joined().await;
    assert_ne!(again, id_a);
    b.view_of_len(2).await;

    // Deleting the whole chain (members, then the root) leaves the marker.
    a.coord.close().await;
    b.coord.close().await;
    zk.delete("/apps/headchain", None).await.expect("delete the empty root");
    let mut c = Replica::spawn(cfg(&connect, "/apps/headchain"), "127.0.0.1:7003");
    c.joined().await;
    c.coord.request_chain_marker();
    assert_eq!(c.wait_for("the marker's answer", marker).await, ChainMarker::Existed);
    c.coord.close().await;
    let _ = zk.close().await;
}

/// A replica that evicts another (`core::suspicion`): the record is written only on the
/// version the reporter saw; the suspect, told by the record, leaves and keeps its session,
/// parked (no `SessionLost`), until it asks to rejoin; a suspect that does not leave is
/// removed by the reporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_record_and_a_parked_suspect() {
    let _serial = serial();
    let server = start_zk();
    let connect = server.connect_string();
    let zk = admin(&connect).await;
    let record = |ev: &MembershipEvent| match ev {
        MembershipEvent::Eviction(r) => Some(*r),
        _ => None,
    };

    let mut a = Replica::spawn(cfg(&connect, "/headchain"), "127.0.0.1:7001");
    let id_a = a.joined().await;
    let mut b = Replica::spawn(cfg(&connect, "/headchain"), "127.0.0.1:7002");
    let id_b = b.joined().await;
    let mut c = Replica::spawn(cfg(&connect, "/headchain"), "127.0.0.1:7003");
    let id_c = c.joined().await;
    a.view_of_len(3).await;

    // A stale version writes nothing (there is no record yet, so any version is stale).
    a.coord.request_evict(id_c, Some(7));
    a.coord.request_relist();
    a.wait_for("Listed", |ev| matches!(ev, MembershipEvent::Listed).then_some(())).await;
    assert_eq!(children(&zk, "/headchain").await.len(), 3, "a lost race evicted someone");

    a.coord.request_evict(id_b, None);
    let seen_by_a = a.wait_for("the record at the reporter", record).await;
    assert_eq!((seen_by_a.reporter, seen_by_a.suspect), (id_a, id_b));
    assert_eq!(data(&zk, "/headchain.chainrep/eviction").await, format!("{id_a:x} {id_b:x}"));
    let seen_by_b = b.wait_for("the record at the suspect", record).await;
    assert_eq!(seen_by_b, seen_by_a);
    c.wait_for("the record at a bystander", record).await;
    // The record alone removes no one; the suspect's core leaves when it sees it.
    assert!(children(&zk, "/headchain").await.contains(&format!("{id_b:x}")));
    b.coord.request_leave();
    a.view_where("a view without the suspect", |v| v.len() == 2 && v.iter().all(|m| m.id != id_b))
        .await;
    // The suspect keeps its session and keeps hearing views; it does not lose its session.
    let later = b.drain_for(SESSION * 2).await;
    assert!(
        later.iter().any(|ev| matches!(ev, MembershipEvent::Alive { .. })),
        "the parked suspect's session stays alive: {later:?}"
    );
    assert!(
        !later.iter().any(|ev| matches!(ev, MembershipEvent::SessionLost)),
        "the parked suspect lost its session: {later:?}"
    );
    assert!(!children(&zk, "/headchain").await.contains(&format!("{id_b:x}")));

    // The next eviction must name the version just seen; the old one loses the race.
    c.coord.request_evict(id_a, None);
    c.coord.request_relist();
    c.wait_for("Listed", |ev| matches!(ev, MembershipEvent::Listed).then_some(())).await;
    assert!(children(&zk, "/headchain").await.contains(&format!("{id_a:x}")));
    // A suspect that does not leave (here c, whose core would have; the bare coordinator does
    // not) is removed by the reporter.
    a.coord.request_evict(id_c, Some(seen_by_a.version));
    let second = a.wait_for("the second record", record).await;
    assert_eq!((second.reporter, second.suspect), (id_a, id_c));
    assert_ne!(second.version, seen_by_a.version);
    assert!(children(&zk, "/headchain").await.contains(&format!("{id_c:x}")));
    a.coord.request_remove(id_c);
    a.view_where("a view of a alone", |v| v.len() == 1 && v[0].id == id_a).await;
    // c keeps its session: parked by the record, not lost.
    let after = c.drain_for(SESSION).await;
    assert!(
        !after.iter().any(|ev| matches!(ev, MembershipEvent::SessionLost)),
        "the removed suspect lost its session: {after:?}"
    );

    // Parked, asking to rejoin gives up the session; joining registers a new one at the tail.
    b.coord.request_rejoin();
    b.session_lost().await;
    b.coord.request_join();
    let id_b2 = b.joined().await;
    assert!(id_b2 > id_a, "the new session sorts after the chain's members");
    a.view_where("a view with b's new session", |v| v.iter().any(|m| m.id == id_b2))
        .await;

    for r in [&a, &b, &c] {
        r.coord.close().await;
    }
    let _ = zk.close().await;
}

/// The lease is renewed only by a round trip that reads the eviction record and finds it does
/// not name us. A record that exists but cannot be read (here: an ACL without READ; in life,
/// any failed read) may name us, so renewals stop until it can be read again, and its content,
/// once readable, reaches the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_eviction_record_stops_the_lease_renewals() {
    let _serial = serial();
    let server = start_zk();
    let connect = server.connect_string();
    let zk = admin(&connect).await;
    let alives = |events: &[MembershipEvent]| events.iter().filter(|e| matches!(e, MembershipEvent::Alive { .. })).count();

    let mut a = Replica::spawn(cfg(&connect, "/headchain"), "127.0.0.1:7001");
    let id_a = a.joined().await;
    assert!(alives(&a.drain_for(SESSION).await) >= 2, "no renewals before the record");

    let no_read = vec![Acl::new(
        Permission::WRITE | Permission::CREATE | Permission::DELETE | Permission::ADMIN,
        "world",
        "anyone",
    )];
    let path = "/headchain.chainrep/eviction";
    zk.create(path, format!("1 {id_a:x}").into_bytes(), no_read, CreateMode::Persistent)
        .await
        .expect("create an unreadable eviction record");
    // A renewal already past its read may still arrive.
    a.drain_for(SESSION / 4).await;
    let during = a.drain_for(SESSION).await;
    assert_eq!(
        alives(&during),
        0,
        "renewed the lease while the record could not be read: {during:?}"
    );

    zk.set_acl(path, Acl::open_unsafe().clone(), None)
        .await
        .expect("make the record readable");
    let seen = a
        .wait_for("the record, once readable", |ev| match ev {
            MembershipEvent::Eviction(r) => Some(*r),
            _ => None,
        })
        .await;
    assert_eq!((seen.reporter, seen.suspect), (1, id_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_malformed_children_are_ignored() {
    let _serial = serial();
    let server = start_zk();
    let zk = admin(&server.connect_string()).await;
    zk.create("/chain", vec![], Acl::open_unsafe().clone(), CreateMode::Persistent)
        .await
        .unwrap();
    // Present before we join, and added after.
    create(&zk, "/chain/not-hex", "127.0.0.1:1").await;
    create(&zk, "/chain/ABC", "127.0.0.1:1").await;
    create(&zk, "/chain/0x1f", "127.0.0.1:1").await;
    create(&zk, "/chain/a1", "no port here").await;

    let mut r = Replica::spawn(cfg(&server.connect_string(), "/chain"), "10.1.2.3:7000");
    let id = r.joined().await;
    let me = Member {
        id,
        addr: "10.1.2.3:7000".into(),
    };
    r.view_where("a view of just us", |v| v == [me.clone()]).await;

    create(&zk, "/chain/a2", "host:0").await;
    create(&zk, "/chain/a3", "host:65536").await;
    create(&zk, "/chain/a4", "").await;
    create(&zk, "/chain/a5", ":7000").await;
    create(&zk, "/chain/_whatever", "127.0.0.1:1").await;
    // A well-formed one (the fake session id sorts first) with extra lines.
    create(&zk, "/chain/5", "other:9\nsecond line ignored\n").await;
    let view = r.view_where("a view with the well-formed extra member", |v| v.len() == 2).await;
    assert_eq!(
        view,
        vec![
            Member {
                id: 5,
                addr: "other:9".into()
            },
            me.clone()
        ]
    );
    // Nothing malformed ever made it into a view.
    // Versions (the root's pzxid) grow with every view: the core ranks retained copies by them.
    let mut last_version = 0;
    for ev in &r.seen {
        if let MembershipEvent::View { members: v, version } = ev {
            assert!(v.iter().all(|m| m.id == 5 || m.id == id), "{v:?}");
            assert!(*version > last_version, "view version {version} after {last_version}");
            last_version = *version;
        }
    }
    r.coord.close().await;
    let _ = zk.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_root_is_session_loss_then_recreated_on_join() {
    let _serial = serial();
    let server = start_zk();
    let zk = admin(&server.connect_string()).await;

    // Parents of the root are created too.
    let mut r = Replica::spawn(cfg(&server.connect_string(), "/deep/er/root"), "127.0.0.1:7100");
    let id = r.joined().await;
    r.view_of_len(1).await;
    assert_eq!(children(&zk, "/deep/er/root").await, vec![format!("{id:x}")]);

    // An operator wipes the tree: the znode goes first (ZooKeeper cannot delete a parent with
    // children), then the root.
    zk.delete(&format!("/deep/er/root/{id:x}"), None).await.unwrap();
    zk.delete("/deep/er/root", None).await.unwrap();
    r.session_lost().await;
    // Nothing happens until asked to join again.
    let quiet = r.drain_for(Duration::from_secs(1)).await;
    assert!(quiet.is_empty(), "{quiet:?}");
    assert!(zk.exists("/deep/er/root", false).await.unwrap().is_none());

    r.coord.request_join();
    let id2 = r.joined().await;
    assert_ne!(id, id2, "a new registration needs a new session");
    let view = r.view_of_len(1).await;
    assert_eq!(
        view,
        vec![Member {
            id: id2,
            addr: "127.0.0.1:7100".into()
        }]
    );
    assert_eq!(children(&zk, "/deep/er/root").await, vec![format!("{id2:x}")]);

    // Only our own znode vanishing counts the same way.
    zk.delete(&format!("/deep/er/root/{id2:x}"), None).await.unwrap();
    r.session_lost().await;
    r.coord.request_join();
    let id3 = r.joined().await;
    assert!(id3 != id2 && id3 != id);
    r.coord.close().await;
    let _ = zk.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_reports_loss_and_rejoins_with_a_new_session() {
    let _serial = serial();
    let server = start_zk();
    let zk = admin(&server.connect_string()).await;
    let proxy = TcpProxy::start(server.addr()).await.unwrap();

    let mut cut_off = Replica::spawn(cfg(&proxy.connect_string(), "/headchain"), "127.0.0.1:7201");
    let id = cut_off.joined().await;
    let mut other = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7202");
    let other_id = other.joined().await;
    other.view_of_len(2).await;
    // A client cut off with it loses its session too, and must recover by itself.
    let watcher = ZkWatcher::connect(&cfg(&proxy.connect_string(), "/headchain"), Duration::from_secs(5))
        .await
        .unwrap();
    let mut members = watcher.members();
    assert_eq!(members.borrow().len(), 2);

    let partitioned_at = Instant::now();
    proxy.partition();
    // The server, still up, expires the session; the others see the znode go.
    let view = other.view_of_len(1).await;
    assert_eq!(view[0].id, other_id);
    // ZooKeeper counts the timeout from the last thing it heard, which can be a ping sent up to
    // a third of the timeout before the partition, and it expires sessions in whole ticks; so
    // the znode may go somewhat before SESSION has passed since the cut, never right away.
    assert!(
        partitioned_at.elapsed() >= SESSION / 2,
        "expired after {:?}",
        partitioned_at.elapsed()
    );
    proxy.heal();

    cut_off.session_lost().await;
    // No Alive may vouch for a moment after the partition began: none could reach the server.
    let mut lost_seen = false;
    for ev in &cut_off.seen {
        match ev {
            MembershipEvent::Alive { at } if !lost_seen => {
                assert!(*at < partitioned_at, "Alive for {:?} after the partition", *at - partitioned_at)
            }
            MembershipEvent::SessionLost => lost_seen = true,
            _ => {}
        }
    }
    let quiet = cut_off.drain_for(Duration::from_secs(1)).await;
    assert!(quiet.is_empty(), "events before request_join: {quiet:?}");

    cut_off.coord.request_join();
    let id2 = cut_off.joined().await;
    assert_ne!(id, id2);
    let view = cut_off.view_of_len(2).await;
    assert_eq!(view.iter().map(|m| m.id).collect::<Vec<_>>(), vec![other_id, id2]);
    assert_eq!(children(&zk, "/headchain").await.len(), 2);
    assert!(zk.exists(&format!("/headchain/{id2:x}"), false).await.unwrap().is_some());
    other.view_where("the rejoined member", |v| v.iter().any(|m| m.id == id2)).await;
    let got = timeout(SOON, members.wait_for(|m| m.iter().any(|m| m.id == id2)))
        .await
        .expect("the watcher recovers after its session expired")
        .unwrap()
        .clone();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![other_id, id2]);
    watcher.close().await;

    cut_off.coord.close().await;
    other.coord.close().await;
    let _ = zk.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_restart_keeps_the_session_and_the_watch() {
    let _serial = serial();
    let mut server = start_zk();
    let cfg = ZkConfig {
        session_timeout: Duration::from_secs(6),
        ..cfg(&server.connect_string(), "/headchain")
    };
    let mut r = Replica::spawn(cfg, "127.0.0.1:7300");
    let id = r.joined().await;
    r.view_of_len(1).await;

    // Sessions are in the data directory: a server back within the timeout keeps ours.
    blocking(|| server.restart()).expect("restart ZooKeeper");
    let zk = admin(&server.connect_string()).await;
    create(&zk, "/headchain/1", "newcomer:1").await;
    // The library does not restore watches after reconnecting; the coordinator re-arms it.
    let view = r.view_of_len(2).await;
    assert_eq!(
        view[1],
        Member {
            id,
            addr: "127.0.0.1:7300".into()
        }
    );
    let restarted = Instant::now();
    r.wait_for("Alive after the restart", |ev| match ev {
        MembershipEvent::Alive { at } if *at > restarted => Some(()),
        _ => None,
    })
    .await;
    assert!(!r.seen.contains(&MembershipEvent::SessionLost), "{:?}", r.seen);
    r.coord.close().await;
    let _ = zk.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_longer_than_the_session_timeout() {
    let _serial = serial();
    let mut server = start_zk();
    let mut r = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7400");
    let id = r.joined().await;
    r.view_of_len(1).await;

    blocking(|| server.stop());
    let stopped = Instant::now();
    sleep(SESSION * 2).await;
    blocking(|| server.restart()).expect("restart ZooKeeper");
    // Whatever the server decides about the old session, the replica ends up registered with a
    // live session, and never claims liveness for the time the server was down.
    let outcome = r
        .wait_for("Alive after the restart, or SessionLost", |ev| match ev {
            MembershipEvent::SessionLost => Some(false),
            MembershipEvent::Alive { at } if *at > stopped => Some(true),
            _ => None,
        })
        .await;
    let zk = admin(&server.connect_string()).await;
    if outcome {
        // The restarted server reloaded the session and restarted its timer.
        assert_eq!(children(&zk, "/headchain").await, vec![format!("{id:x}")]);
    } else {
        r.coord.request_join();
        let id2 = r.joined().await;
        assert_ne!(id, id2);
        r.view_of_len(1).await;
        assert_eq!(children(&zk, "/headchain").await, vec![format!("{id2:x}")]);
    }
    r.coord.close().await;
    let _ = zk.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_the_membership() {
    let _serial = serial();
    let server = start_zk();
    let c = cfg(&server.connect_string(), "/w");
    // The root does not exist yet: an empty chain, and a watch for its creation.
    let watcher = ZkWatcher::connect(&c, Duration::from_secs(5)).await.expect("watcher connects");
    let mut members = watcher.members();
    assert!(members.borrow().is_empty());

    let mut a = Replica::spawn(c.clone(), "127.0.0.1:7501");
    let id_a = a.joined().await;
    let mut b = Replica::spawn(c.clone(), "127.0.0.1:7502");
    let id_b = b.joined().await;
    let got = timeout(SOON, members.wait_for(|m| m.len() == 2))
        .await
        .expect("watcher sees two")
        .expect("watch open")
        .clone();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id_a.min(id_b), id_a.max(id_b)]);
    assert!(got.contains(&Member {
        id: id_a,
        addr: "127.0.0.1:7501".into()
    }));

    a.coord.close().await;
    let got = timeout(SOON, members.wait_for(|m| m.len() == 1))
        .await
        .expect("watcher sees one")
        .expect("watch open")
        .clone();
    assert_eq!(
        got,
        vec![Member {
            id: id_b,
            addr: "127.0.0.1:7502".into()
        }]
    );

    // Root deleted and recreated under the watcher.
    b.coord.close().await;
    timeout(SOON, members.wait_for(|m| m.is_empty()))
        .await
        .expect("watcher sees none")
        .expect("watch open");
    let zk = admin(&server.connect_string()).await;
    zk.delete("/w", None).await.unwrap();
    sleep(Duration::from_millis(300)).await;
    let mut c2 = Replica::spawn(c.clone(), "127.0.0.1:7503");
    let id_c = c2.joined().await;
    let got = timeout(SOON, members.wait_for(|m| m.len() == 1))
        .await
        .expect("watcher sees the new root")
        .expect("watch open")
        .clone();
    assert_eq!(
        got,
        vec![Member {
            id: id_c,
            addr: "127.0.0.1:7503".into()
        }]
    );

    c2.coord.close().await;
    watcher.close().await;
    let _ = zk.close().await;
}

/// CPU time this process has used so far (user + system), from /proc.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux we run on.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_in_time_without_spinning() {
    let _serial = serial();
    let port = free_port().unwrap();
    let c = cfg(&format!("127.0.0.1:{port}"), "/headchain");

    let started = Instant::now();
    let err = ZkWatcher::connect(&c, Duration::from_secs(1))
        .await
        .err()
        .expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    // A replica keeps retrying, quietly for the CPU, and can still be closed.
    let cpu_before = process_cpu();
    let mut r = Replica::spawn(c.clone(), "127.0.0.1:7600");
    let events = r.drain_for(Duration::from_secs(3)).await;
    assert!(events.is_empty(), "{events:?}");
    let cpu = process_cpu() - cpu_before;
    assert!(cpu < Duration::from_millis(1000), "retrying used {cpu:?} of CPU in 3 s");
    let closing = Instant::now();
    r.coord.close().await;
    assert!(closing.elapsed() < Duration::from_secs(1));

    // A server appearing later is found by the retries.
    let server = blocking(start_zk);
    let mut late = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7601");
    late.joined().await;
    late.coord.close().await;

    // Unusable configuration: no events, and close still returns.
    let mut bad = Replica::spawn(cfg("nohost", "/headchain"), "127.0.0.1:7602");
    assert!(bad.drain_for(Duration::from_millis(300)).await.is_empty());
    bad.coord.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_started_before_zookeeper_joins_when_it_comes_up() {
    let _serial = serial();
    // Reserve a port, start nothing there yet.
    let mut server = start_zk();
    blocking(|| server.stop());
    let mut r = Replica::spawn(cfg(&server.connect_string(), "/headchain"), "127.0.0.1:7650");
    assert!(r.drain_for(Duration::from_secs(2)).await.is_empty());
    blocking(|| server.restart()).expect("start ZooKeeper");
    let id = r.joined().await;
    assert_eq!(r.view_of_len(1).await[0].id, id);
    r.coord.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroot_in_the_connect_string() {
    let _serial = serial();
    let server = start_zk();
    let zk = admin(&server.connect_string()).await;
    let chrooted = format!("{}/apps/chain", server.connect_string());

    let mut r = Replica::spawn(cfg(&chrooted, "/headchain"), "127.0.0.1:7700");
    let id = r.joined().await;
    assert_eq!(
        r.view_of_len(1).await,
        vec![Member {
            id,
            addr: "127.0.0.1:7700".into()
        }]
    );
    // The chroot did not exist; it was created like the root's other parents.
    assert_eq!(children(&zk, "/apps/chain/headchain").await, vec![format!("{id:x}")]);
    assert!(zk.exists("/headchain", false).await.unwrap().is_none());

    let watcher = ZkWatcher::connect(&cfg(&chrooted, "/headchain"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        *watcher.members().borrow(),
        vec![Member {
            id,
            addr: "127.0.0.1:7700".into()
        }]
    );
    // The same root outside the chroot is a different chain.
    let outside = ZkWatcher::connect(&cfg(&server.connect_string(), "/headchain"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(outside.members().borrow().is_empty());

    r.coord.close().await;
    let mut m = watcher.members();
    timeout(SOON, m.wait_for(|m| m.is_empty()))
        .await
        .expect("watcher sees the leave")
        .unwrap();
    watcher.close().await;
    outside.close().await;
    assert_eq!(zk.get_children("/apps/chain/headchain", false).await, Ok(vec![]));
    assert_eq!(zk.exists("/apps/chain/headchain/x", false).await.map(|s| s.is_some()), Ok(false));
    let _ = zk.close().await;
}

#[test]
fn harness_restarts_on_the_same_port_and_data() {
    let _serial = serial();
    let classpath = support::zk::zookeeper_classpath().expect("ZooKeeper jars");
    assert!(classpath.contains("zookeeper"), "{classpath}");
    let mut server = start_zk();
    let (port, pid) = (server.port(), server.pid().expect("running"));
    assert!(server.is_running());
    assert!(server.log_tail(200).contains("ZooKeeper"), "server log: {}", server.log_tail(20));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let zk = admin(&server.connect_string()).await;
        create(&zk, "/kept", "x").await;
        let _ = zk.close().await;
    });
    server.stop();
    assert!(!server.is_running());
    assert!(std::net::TcpStream::connect(server.addr()).is_err(), "port still open after stop");
    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(pid));
    rt.block_on(async {
        let zk = admin(&server.connect_string()).await;
        assert_eq!(data(&zk, "/kept").await, "x");
        let _ = zk.close().await;
    });
    let pid = server.pid().expect("running");
    drop(server);
    // Drop killed and reaped it.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "ZooKeeper {pid} survived drop"
    );
}
