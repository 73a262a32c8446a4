//! A TCP proxy that can cut a client off from a server, to stage network partitions, or slow
//! the link down by a fixed latency, to stage one replica learning of a change later than another.
//!
//! ZooKeeper keeps sessions alive across its own restarts (they are in the data directory), so
//! stopping the server does not reliably expire a session. Partitioning the client through this
//! proxy for longer than the session timeout does: the server, still running, expires it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub struct TcpProxy {
    addr: SocketAddr,
    blocked: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port on 127.0.0.1 and forwards every connection to `upstream`. Must be
    /// called inside a tokio runtime; the proxy lives as long as the value (and the runtime).
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        Self::start_with_latency(upstream, Duration::ZERO).await
    }

    /// Like `start`, but every byte reaches the other side `latency` after it was read, in
    /// each direction (a round trip costs twice that).
    pub async fn start_with_latency(upstream: SocketAddr, latency: Duration) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("proxy cannot bind 127.0.0.1")?;
        let addr = listener.local_addr().context("proxy socket has no address")?;
        let (blocked, _) = watch::channel(false);
        let blocked = Arc::new(blocked);
        let accept = tokio::spawn(accept_loop(listener, upstream, blocked.clone(), latency));
        Ok(TcpProxy { addr, blocked, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// Drops every forwarded connection; new connections are accepted but nothing passes in
    /// either direction (a black hole, like a partition, not a refusal) until `heal`.
    pub fn partition(&self) {
        self.blocked.send_replace(true);
    }

    /// Closes the black-holed connections and forwards new ones again.
    pub fn heal(&self) {
        self.blocked.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closing the channel ends every connection task.
        self.blocked.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, blocked: Arc<watch::Sender<bool>>, latency: Duration) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let mut state = blocked.subscribe();
        if *state.borrow_and_update() {
            // Hold the socket silently; close it once healed so the client reconnects.
            tokio::spawn(async move {
                let _ = state.wait_for(|b| !*b).await;
                drop(client);
            });
            continue;
        }
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            if latency.is_zero() {
                forward(client, server, state).await;
            } else {
                forward_late(client, server, state, latency).await;
            }
        });
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream, mut state: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|b| *b) => {}
    }
}

async fn forward_late(client: TcpStream, server: TcpStream, mut state: watch::Receiver<bool>, latency: Duration) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = async { tokio::join!(late_pipe(client_read, server_write, latency), late_pipe(server_read, client_write, latency)) } => {}
        _ = state.wait_for(|b| *b) => {}
    }
}

/// Copies `from` to `to`, each chunk `latency` after it was read (a link with that delay, not
/// a throttle: chunks read meanwhile are on their way too).
async fn late_pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, latency: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || tx.send((tokio::time::Instant::now() + latency, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
