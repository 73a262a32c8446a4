//! Shared code of the fuzz targets in `fuzz_targets/`. Each target is one call into a module
//! here, so that `tests/fuzz_regressions.rs` can replay a crashing input through exactly the
//! same code with plain `cargo test` (it includes these files by path).

pub mod events;
pub mod harness;
pub mod log_reader;
pub mod wire;
pub mod zk;
