//! The classic replica (tests/interop/classic_replica.py) as a process: a chain.proto replica
//! with the habits of the independent implementations, for mixed chains with `chain-replica`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::chain::SESSION_TIMEOUT_MS;
use super::python::{proto, python, repo};
use super::zk::free_port;

pub struct ClassicProc {
    child: Option<Child>,
    pub port: u16,
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClassicProc {
    /// Starts a classic replica on a free port under `root`; `extra` are its flags
    /// (`--variant tail`, `--first-xid 0`, `--rc2-for-missing`).
    pub fn start(zk: &str, root: &str, extra: &[&str]) -> ClassicProc {
        let dir = tempfile::Builder::new().prefix("classic-").tempdir().expect("tempdir");
        let port = free_port().expect("free port");
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("classic.log");
        let out = fs::File::create(&log).expect("log file");
        let child = Command::new(python())
            .arg("-u")
            .arg(repo().join("tests/interop/classic_replica.py"))
            .args(["--zk", zk, "--listen", &addr, "--root", root])
            .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()])
            .arg("--proto")
            .arg(proto())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn classic_replica.py");
        ClassicProc {
            child: Some(child),
            port,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: the znode lingers until the session times out.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (which closes the session); SIGKILL after `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if let Some(c) = self.child.take() {
            super::terminate(c, limit);
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ClassicProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
