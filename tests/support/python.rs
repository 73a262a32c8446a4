//! The Python side of the interop tests: the interpreter with grpcio, grpcio-tools and kazoo,
//! and the chain.proto the Python programs generate their stubs from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter with the interop packages: CHAINREP_PYTHON, else the venv that
/// scripts/install-python-deps makes, else python3 from PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CHAINREP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

pub fn require_python_packages(py: &Path) {
    let out = Command::new(py)
        .args(["-c", "import grpc, grpc_tools.protoc, kazoo"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install Python 3 and run scripts/install-python-deps",
                py.display()
            )
        });
    assert!(
        out.status.success(),
        "{} lacks the interop packages (grpcio, grpcio-tools, kazoo): run scripts/install-python-deps\n{}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shared protocol file if this checkout sits beside shared/, else the byte-identical copy.
pub fn proto() -> PathBuf {
    let shared = repo().join("../shared/chain.proto");
    if shared.is_file() {
        shared
    } else {
        repo().join("proto/chain.proto")
    }
}

/// Waits for `child` up to `limit`; past it, kills it (by its own pid) and returns `None`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
