//! Real `chain-replica` processes for integration tests, and the waits that go with them.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chainrep::client::{ChainClient, ClientOptions, MemberStatus};
use chainrep::core::Variant;
use chainrep::runtime::tls::TlsConfig;
use chainrep::runtime::zk::ZkConfig;

use super::zk::free_port;

/// Session timeout the test replicas use: short, so failover tests finish quickly.
pub const SESSION_TIMEOUT_MS: u64 = 2000;

/// The `chain-replica` to run: this package's, unless CHAINREP_REPLICA_BIN names another build
/// (another commit's, to see whether a test catches what that commit fixed; or a copy taken
/// right after building, when other checkouts share the target directory and overwrite
/// `target/debug/chain-replica` under the running tests).
pub fn replica_binary() -> PathBuf {
    std::env::var_os("CHAINREP_REPLICA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chain-replica")))
}

pub struct ReplicaProc {
    child: Option<Child>,
    pub port: u16,
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReplicaProc {
    pub fn start(zk: &str, root: &str, variant: Variant) -> ReplicaProc {
        Self::start_with(zk, root, variant, &[])
    }

    pub fn start_with(zk: &str, root: &str, variant: Variant, extra: &[&str]) -> ReplicaProc {
        Self::start_on(zk, root, variant, free_port().expect("free port"), extra)
    }

    /// On a port chosen by the caller, e.g. one a `TcpProxy` already forwards to.
    pub fn start_on(zk: &str, root: &str, variant: Variant, port: u16, extra: &[&str]) -> ReplicaProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("replica.log");
        let out = fs::File::create(&log).expect("log file");
        let variant = match variant {
            Variant::Head => "head",
            Variant::Tail => "tail",
        };
        let child = Command::new(replica_binary())
            .args(["--zk", zk, "--listen", &addr, "--root", root, "--variant", variant])
            .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()])
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn chain-replica");
        ReplicaProc {
            child: Some(child),
            port,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("replica already stopped")
    }

    /// SIGKILL: no goodbye to ZooKeeper, so its znode lingers until the session times out.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }

    /// SIGTERM and wait for the replica to leave (it deletes its znode); SIGKILL after `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if let Some(c) = self.child.take() {
            super::terminate(c, limit);
        }
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ReplicaProc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process cannot die from SIGKILL until continued on some kernels' views
            // of the test; continue it first so nothing is left behind.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill9();
    }
}

pub fn zk_config(zk: &str, root: &str) -> ZkConfig {
    ZkConfig {
        connect: zk.to_string(),
        root: root.to_string(),
        session_timeout: Duration::from_secs(10),
    }
}

pub async fn client(zk: &str, root: &str, variant: Variant) -> ChainClient {
    client_with_tls(zk, root, variant, None).await
}

/// A client of a TLS chain when `tls` is given.
pub async fn client_with_tls(zk: &str, root: &str, variant: Variant, tls: Option<TlsConfig>) -> ChainClient {
    let opts = ClientOptions {
        op_timeout: Duration::from_secs(20),
        rpc_timeout: Duration::from_secs(5),
        variant,
        tls,
        ..ClientOptions::default()
    };
    ChainClient::connect(&zk_config(zk, root), opts)
        .await
        .expect("client connects to ZooKeeper")
}

/// Waits until the chain has exactly the replicas at `addrs` (in any order), each synced, and
/// returns the status in chain order.
pub async fn wait_chain(client: &ChainClient, addrs: &[&str], timeout: Duration) -> Vec<MemberStatus> {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let status = client.status().await;
        let same = status.len() == addrs.len() && status.iter().all(|s| addrs.contains(&s.member.addr.as_str()));
        if same && status.iter().all(|s| s.described.as_ref().is_some_and(|d| d.synced)) {
            return status;
        }
        last = status;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chain never became {addrs:?}; last status: {last:#?}");
}

pub fn start_zk() -> super::zk::ZkServer {
    tokio::task::block_in_place(|| super::zk::ZkServer::start().expect("start ZooKeeper (run scripts/install-deps?)"))
}
