//! Production runtime: tonic, tokio and ZooKeeper around the deterministic core.

pub mod zk;
