//! How a replica or client dials another process. Its own module so that the network and the
//! callback queues it owns, which both dial, depend on it rather than on each other.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How channels to other processes are made: TCP in production, in-memory pipes in the
/// simulator that runs this runtime deterministically.
pub trait Connect: Send + Sync {
    /// A lazily connecting channel to `addr` (`host:port`).
    fn channel(&self, addr: &str) -> Result<Channel, String>;
}

pub struct TcpConnect;

impl Connect for TcpConnect {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad address {addr:?}: {e}"))?;
        Ok(tune(endpoint).connect_lazy())
    }
}

/// The connection settings of every replica-to-replica channel, plaintext or TLS.
pub fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
}
