//! A TCP proxy that can cut a client off from a server, to stage network partitions.
//!
//! ZooKeeper keeps sessions alive across its own restarts (they are in the data directory), so
//! stopping the server does not reliably expire a session. Partitioning the client through this
//! proxy for longer than the session timeout does: the server, still running, expires it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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
        let listener = TcpListener::bind("127.0.0.1:0").await.context("proxy cannot bind 127.0.0.1")?;
        let addr = listener.local_addr().context("proxy socket has no address")?;
        let (blocked, _) = watch::channel(false);
        let blocked = Arc::new(blocked);
        let accept = tokio::spawn(accept_loop(listener, upstream, blocked.clone()));
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

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, blocked: Arc<watch::Sender<bool>>) {
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
            forward(client, server, state).await;
        });
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream, mut state: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|b| *b) => {}
    }
}
