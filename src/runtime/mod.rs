//! Production runtime: tonic, tokio and ZooKeeper around the deterministic core.

mod convert;
pub mod network;
pub mod node;
pub mod service;
pub mod zk;
