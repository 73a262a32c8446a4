//! Production runtime: tonic, tokio and ZooKeeper around the deterministic core.

pub mod callbacks;
pub mod connect;
pub mod convert;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod service;
pub mod shared;
pub mod storage;
pub mod tls;
pub mod zk;
