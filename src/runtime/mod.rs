//! Production runtime: tonic, tokio and ZooKeeper around the deterministic core.

pub mod callbacks;
pub mod convert;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod service;
pub mod tls;
pub mod zk;
