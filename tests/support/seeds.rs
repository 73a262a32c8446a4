//! Seed selection for the simulator test crates, from the environment.

/// A numeric environment variable; a value that is not a number stops the test with its name,
/// rather than silently running the default seeds.
pub fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    match raw.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{name} must be a number, got {raw:?}"),
    }
}
