//! Interop: a Python client generated from chain.proto (tests/interop/client.py) against three
//! real `chain-replica` processes and a real ZooKeeper. It speaks only the shared wire protocol
//! and finds the chain the way any course client does, so it catches what our own Rust client,
//! built from the same code as the server, would agree with by construction.
//!
//! Needs Debian's ZooKeeper (scripts/install-deps) and Python's grpcio, grpcio-tools and kazoo
//! (scripts/install-python-deps). Missing either fails the test with the script to run.

mod support;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use support::python::{proto, python, repo, require_python_packages, wait_with_timeout};
use support::zk::{free_port, ZkServer};

const REPLICAS: usize = 3;
/// The client's own readiness waits are 60 s; this bounds the whole run beyond them.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

/// One JVM, three replicas and a Python interpreter per test is plenty for two cores: run the
/// variants one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

/// Child processes killed (by their own pid) and reaped however the test ends.
struct Replicas {
    children: Vec<(Child, PathBuf)>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Replicas {
    fn start(zk: &str, variant: &str, dir: &Path) -> Replicas {
        let mut replicas = Replicas { children: Vec::new() };
        for i in 0..REPLICAS {
            let port = free_port().expect("free port");
            let log = dir.join(format!("replica-{i}.log"));
            let err = File::create(&log).expect("replica log");
            let child = Command::new(env!("CARGO_BIN_EXE_chain-replica"))
                .args(["--zk", zk, "--listen", &format!("127.0.0.1:{port}"), "--variant", variant])
                .args(["--session-timeout-ms", "2000"])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(err.try_clone().expect("log handle"))
                .stderr(err)
                .spawn()
                .expect("spawn chain-replica");
            replicas.children.push((child, log));
        }
        replicas
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, (_, log)) in self.children.iter().enumerate() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "--- replica {i} ({}), last lines:\n{}\n",
                log.display(),
                lines[lines.len().saturating_sub(25)..].join("\n")
            );
        }
        out
    }
}

fn run_interop(variant: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let py = python();
    require_python_packages(&py);

    let zk = ZkServer::start().expect("start ZooKeeper (scripts/install-deps installs it)");
    let dir = tempfile::Builder::new().prefix("interop-").tempdir().expect("temp dir");
    let replicas = Replicas::start(&zk.connect_string(), variant, dir.path());

    // Output goes to files, not pipes: a chatty client must never block on a full pipe.
    let out_path = dir.path().join("client.out");
    let out = File::create(&out_path).expect("client output file");
    let script = repo().join("tests/interop/client.py");
    let mut client = Command::new(&py)
        .arg("-u")
        .arg(&script)
        .args([
            "--zk",
            &zk.connect_string(),
            "--variant",
            variant,
            "--replicas",
            &REPLICAS.to_string(),
        ])
        .arg("--proto")
        .arg(proto())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output handle"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", py.display(), script.display()));
    let status = wait_with_timeout(&mut client, CLIENT_TIMEOUT);
    let output = fs::read_to_string(&out_path).unwrap_or_default();

    let verdict = match status {
        Some(s) if s.success() => {
            println!("{output}");
            return;
        }
        Some(s) => format!("client.py {s}"),
        None => format!("client.py still running after {CLIENT_TIMEOUT:?}, killed"),
    };
    let hint = if output.contains("run scripts/install-python-deps") {
        "\n(the Python packages are missing: run scripts/install-python-deps)"
    } else {
        ""
    };
    panic!(
        "{variant}-variant interop failed: {verdict}{hint}\n--- client.py output:\n{output}\n{}--- ZooKeeper, last lines:\n{}",
        replicas.logs(),
        zk.log_tail(15)
    );
}

#[test]
fn python_client_head_variant() {
    run_interop("head");
}

#[test]
fn python_client_tail_variant() {
    run_interop("tail");
}
