//! `chain-replica --metrics-listen` and `chainctl status --json` end to end: real ZooKeeper,
//! real replica processes, `/metrics` scraped over HTTP at the URL `status --json` gives.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chainrep::core::Variant;
use support::chain::{client, start_zk, wait_chain, ReplicaProc};
use support::metrics::{scrape, value};
use support::zk::free_port;

const ROOT: &str = "/metricschain";

fn chainctl(zk: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainctl"))
        .args(["--zk", zk])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chainctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start_with_metrics(zk: &str, root: &str, variant: Variant) -> (ReplicaProc, u16) {
    let port = free_port().expect("free port");
    let listen = format!("127.0.0.1:{port}");
    (ReplicaProc::start_with(zk, root, variant, &["--metrics-listen", &listen]), port)
}

const INC: &str = r#"chainrep_client_requests_total{method="increment",outcome="ok"}"#;
const DEL: &str = r#"chainrep_client_requests_total{method="delete",outcome="ok"}"#;
const GET: &str = r#"chainrep_client_requests_total{method="get",outcome="ok"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_writes_and_reads_and_status_json_points_to_them() {
    let zk = start_zk();
    let zks = zk.connect_string();
    let replicas: Vec<(ReplicaProc, u16)> = (0..3).map(|_| start_with_metrics(&zks, ROOT, Variant::Head)).collect();
    let c = client(&zks, ROOT, Variant::Head).await;
    let addrs: Vec<&str> = replicas.iter().map(|(r, _)| r.addr.as_str()).collect();
    wait_chain(&c, &addrs, Duration::from_secs(30)).await;

    // status --json: chain order, every field, and each replica's own metrics URL.
    let (code, out, err) = chainctl(&zks, &["--root", ROOT, "status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"));
    assert_eq!(status["root"], ROOT);
    assert_eq!(status["variant"], "head");
    let members = status["members"].as_array().expect("members array");
    let roles: Vec<&str> = members.iter().map(|m| m["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["head", "middle", "tail"], "{out}");
    let mut urls = Vec::new();
    for m in members {
        let addr = m["address"].as_str().expect("address");
        let (_, metrics_port) = replicas
            .iter()
            .find(|(r, _)| r.addr == addr)
            .unwrap_or_else(|| panic!("{addr} is none of ours: {out}"));
        assert_eq!(m["metrics_url"], format!("http://127.0.0.1:{metrics_port}/metrics"), "{out}");
        assert_eq!(m["synced"], true, "{out}");
        assert_eq!(m["last_xid"], 0, "{out}");
        assert_eq!(m["keys"], 0, "{out}");
        let session = m["session_id"].as_str().expect("session id");
        assert!(u64::from_str_radix(session, 16).is_ok(), "hex session id: {out}");
        urls.push((m["metrics_url"].as_str().expect("url").to_string(), session.to_string()));
    }
    let (head, middle, tail) = (&urls[0].0, &urls[1].0, &urls[2].0);

    let before = [scrape(head), scrape(middle), scrape(tail)];
    let (incs, dels, gets) = (20u32, 5u32, 10u32);
    for i in 0..incs {
        c.inc(&format!("k{}", i % 8), 1).await.expect("inc");
    }
    for i in 0..dels {
        c.del(&format!("k{i}")).await.expect("del");
    }
    for _ in 0..gets {
        assert_eq!(c.get("k7").await.expect("get"), 2);
    }
    let writes = u64::from(incs + dels);

    let after_head = scrape(head);
    let grew = |after: &str, before: &str, series: &str| value(after, series) - value(before, series);
    assert_eq!(grew(&after_head, &before[0], INC), f64::from(incs));
    assert_eq!(grew(&after_head, &before[0], DEL), f64::from(dels));
    assert_eq!(
        grew(&after_head, &before[0], "chainrep_client_write_seconds_count"),
        f64::from(incs + dels),
        "one latency sample per acknowledged write"
    );
    let after_tail = scrape(tail);
    assert_eq!(grew(&after_tail, &before[2], GET), f64::from(gets));
    assert_eq!(grew(&after_tail, &before[2], "chainrep_client_read_seconds_count"), f64::from(gets));
    assert_eq!(value(&after_tail, "chainrep_store_keys"), 3.0, "k5, k6, k7 are left");
    assert_eq!(value(&after_tail, "chainrep_store_bytes"), 3.0 * (2.0 + 4.0));

    // Every replica applied every write before the head acknowledged it; the head learns the
    // tail's progress with the acknowledgements, the middle by polling within 50 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let texts: Vec<String> = urls.iter().map(|(u, _)| scrape(u)).collect();
        let applied: Vec<f64> = texts.iter().map(|t| value(t, "chainrep_last_applied_xid")).collect();
        let confirmed: Vec<f64> = texts.iter().map(|t| value(t, "chainrep_tail_confirmed_xid")).collect();
        let sent: Vec<f64> = texts.iter().map(|t| value(t, "chainrep_sent_list_length")).collect();
        let done = applied.iter().all(|&a| a == writes as f64)
            && confirmed[..2].iter().all(|&x| x == writes as f64)
            && sent.iter().all(|&s| s == 0.0);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "applied {applied:?}, tail-confirmed {confirmed:?}, sent lists {sent:?}; expected {writes} applied everywhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let described = c.status().await;
    for (s, (url, session)) in described.iter().zip(&urls) {
        let text = scrape(url);
        let d = s.described.as_ref().expect("described");
        assert_eq!(value(&text, "chainrep_last_applied_xid"), d.last_applied_xid as f64);
        assert_eq!(value(&text, "chainrep_lease_valid"), 1.0);
        assert_eq!(value(&text, "chainrep_holds_state"), 1.0);
        assert_eq!(value(&text, "chainrep_parked"), 0.0);
        assert_eq!(value(&text, &format!("chainrep_role{{role=\"{}\"}}", s.position)), 1.0, "{url}");
        assert_eq!(value(&text, "chainrep_role{role=\"outside\"}"), 0.0);
        let info = format!(
            "chainrep_replica_info{{session=\"{session}\",variant=\"head\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&text, &info), 1.0, "{url}");
    }

    // The head and the middle each sent their successor the state; both below received it.
    let texts: Vec<String> = urls.iter().map(|(u, _)| scrape(u)).collect();
    for t in &texts[..2] {
        assert!(value(t, r#"chainrep_state_transfers_sent_total{outcome="accepted"}"#) >= 1.0, "{t}");
        assert!(value(t, "chainrep_state_transfer_send_seconds_count") >= 1.0);
        assert!(value(t, "chainrep_state_transfer_sent_bytes_total") > 0.0);
    }
    for t in &texts[1..] {
        assert!(
            value(t, r#"chainrep_state_transfers_received_total{outcome="accepted"}"#) >= 1.0,
            "{t}"
        );
        assert!(value(t, "chainrep_state_transfer_receive_seconds_count") >= 1.0);
        assert!(value(t, "chainrep_state_transfer_received_bytes_total") > 0.0);
    }
    for t in &texts {
        assert_eq!(value(t, "chainrep_zk_session_losses_total"), 0.0);
        assert_eq!(value(t, "chainrep_evictions_reported_total"), 0.0);
    }

    // Plain `status` stays the table; `get --json` is one object.
    let (code, out, err) = chainctl(&zks, &["--root", ROOT, "get", "k7", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("get --json ({e}): {out}"));
    assert_eq!(got, serde_json::json!({"key": "k7", "value": 2}));
    let (code, out, _) = chainctl(&zks, &["--root", ROOT, "status"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ROLE "), "{out}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_variant_callbacks_are_counted_and_a_replica_without_the_flag_has_no_url() {
    let zk = start_zk();
    let zks = zk.connect_string();
    let root = "/metricstail";
    let (with, _) = start_with_metrics(&zks, root, Variant::Tail);
    let c = client(&zks, root, Variant::Tail).await;
    wait_chain(&c, &[with.addr.as_str()], Duration::from_secs(30)).await;
    let url = c.status().await[0].described.as_ref().expect("described").metrics_url.clone();
    let before = scrape(&url);

    // Through the chainctl binary: its callback server gets the tail's callbacks.
    fn tail_args<'a>(root: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
        [&["--root", root, "--variant", "tail"][..], cmd].concat()
    }
    let (code, _, err) = chainctl(&zks, &tail_args(root, &["inc", "k", "3"]));
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = chainctl(&zks, &tail_args(root, &["get", "k", "--json"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).ok(),
        Some(serde_json::json!({"key": "k", "value": 3}))
    );

    let after = scrape(&url);
    let grew = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(grew(INC), 1.0);
    assert_eq!(grew(GET), 1.0);
    assert_eq!(grew("chainrep_callbacks_delivered_total"), 1.0);
    assert!(grew("chainrep_callbacks_sent_total") >= 1.0);
    assert_eq!(value(&after, r#"chainrep_callbacks_failed_total{reason="expired"}"#), 0.0);
    assert_eq!(value(&after, r#"chainrep_role{role="head+tail"}"#), 1.0);

    // A replica started without --metrics-listen: null in status --json.
    let without = ReplicaProc::start(&zks, root, Variant::Tail);
    wait_chain(&c, &[with.addr.as_str(), without.addr.as_str()], Duration::from_secs(30)).await;
    let (code, out, err) = chainctl(&zks, &tail_args(root, &["status", "--json"]));
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    let members = status["members"].as_array().expect("members");
    let url_of = |addr: &str| {
        members
            .iter()
            .find(|m| m["address"] == addr)
            .map(|m| m["metrics_url"].clone())
            .unwrap_or_else(|| panic!("{addr} missing: {out}"))
    };
    assert_eq!(url_of(&with.addr), serde_json::Value::String(url.clone()));
    assert_eq!(url_of(&without.addr), serde_json::Value::Null);
    c.close().await;
}

#[test]
fn chainctl_help_lists_exit_codes_and_bad_usage_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_chainctl"))
        .arg("--help")
        .output()
        .expect("chainctl --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for code in ["  0 ", "  1 ", "  2 ", "  3 "] {
        assert!(help.contains(code), "exit code {code:?} explained in\n{help}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_chainctl"))
        .args(["--zk", "127.0.0.1:1", "inc", "k", "not-a-number"])
        .output()
        .expect("chainctl");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_busy_metrics_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = Command::new(support::chain::replica_binary())
        .args(["--zk", "127.0.0.1:1", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .output()
        .expect("chain-replica");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-listen"), "{err}");
}

/// With `--data-dir`, the write-ahead log's group commits, their latency and the durable xid
/// show up; a replica without it has them at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_metrics_count_group_commits_with_a_data_dir() {
    let zk = start_zk();
    let zks = zk.connect_string();
    let root = "/diskmetrics";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let metrics_port = free_port().expect("free port");
    let listen = format!("127.0.0.1:{metrics_port}");
    let data_arg = data.to_str().expect("utf-8 path").to_string();
    let replica = ReplicaProc::start_with(&zks, root, Variant::Head, &["--metrics-listen", &listen, "--data-dir", &data_arg]);
    let c = client(&zks, root, Variant::Head).await;
    wait_chain(&c, &[replica.addr.as_str()], Duration::from_secs(30)).await;
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let before = scrape(&url);
    let writes = 10u32;
    for i in 0..writes {
        c.inc(&format!("k{i}"), 1).await.expect("inc");
    }
    let after = scrape(&url);
    let grew = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(grew("chainrep_disk_updates_appended_total"), f64::from(writes), "{after}");
    // One write at a time: every write waits for its own group commit.
    assert!(grew("chainrep_disk_syncs_total") >= f64::from(writes), "{after}");
    assert_eq!(grew("chainrep_disk_sync_seconds_count"), grew("chainrep_disk_syncs_total"));
    assert_eq!(value(&after, "chainrep_disk_durable_xid"), f64::from(writes), "{after}");
    assert!(value(&after, "chainrep_disk_log_bytes") > 0.0, "{after}");
    assert!(data.join("LOCK").exists(), "the data dir was not used");
    c.close().await;
}
