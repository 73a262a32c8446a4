//! Shared helpers for the integration tests: `mod support;` in a test crate pulls these in.
//!
//! Not every test crate uses every helper, hence the blanket allow.
#![allow(dead_code)]

pub mod chain;
pub mod classic;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod python;
pub mod scenarios;
pub mod tls;
pub mod zk;

/// SIGTERM `child` and wait for it to exit; SIGKILL after `limit`.
pub fn terminate(mut child: std::process::Child, limit: std::time::Duration) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
