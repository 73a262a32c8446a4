//! One zookeeper-async client wrapped so that it cannot hang us, leak its session, or hide a
//! session change: connect under a deadline, every call under a timeout, state changes and
//! watch callbacks forwarded into a channel, and a close that always happens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use zookeeper_async::{Acl, CreateMode, WatchedEvent, ZkError, ZkResult, ZkState, ZooKeeper};

use super::config::{ZkConfig, MIN_SESSION_TIMEOUT};
use super::parse::{child_path, join_paths, parse_connect_string, validate_path};

/// Pause between the library's own reconnection attempts. Zero makes it retry in a hot loop.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Name of the marker under `Target::meta`.
const HELD_STATE_MARKER: &str = "held-state";
/// The chain's latest eviction (see `core::suspicion`), beside the root with the marker.
const EVICTION_RECORD: &str = "eviction";

/// A validated `ZkConfig`.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// Servers as configured, for messages.
    pub hosts: Vec<String>,
    /// `hosts` joined with ',', for messages.
    pub hosts_label: String,
    /// The membership root as an absolute path on the server, chroot included. The chroot is
    /// applied here rather than handed to the library so that missing chroot components can be
    /// created like the rest of the root.
    pub root: String,
    /// Beside the root, never under it: what only our replicas use (the probe that reveals a
    /// session id, the marker that the chain has held state). Other implementations watch and
    /// sort every child of the root, and one took a probe there for a member.
    pub meta: String,
    pub session_timeout: Duration,
}

impl Target {
    pub fn new(cfg: &ZkConfig) -> anyhow::Result<Target> {
        let (hosts, chroot) = parse_connect_string(&cfg.connect)?;
        validate_path(&cfg.root).with_context(|| format!("bad ZooKeeper root {:?}", cfg.root))?;
        let root = join_paths(chroot.as_deref(), &cfg.root);
        let session_timeout = cfg.session_timeout.max(MIN_SESSION_TIMEOUT);
        if session_timeout != cfg.session_timeout {
            tracing::warn!(
                "ZooKeeper session timeout {:?} is too short for the client library; using {:?}",
                cfg.session_timeout,
                session_timeout
            );
        }
        let meta = if root == "/" {
            "/.chainrep".to_string()
        } else {
            format!("{root}.chainrep")
        };
        Ok(Target {
            hosts_label: hosts.join(","),
            hosts,
            root,
            meta,
            session_timeout,
        })
    }

    /// Longest wait for a single ZooKeeper call: past the session timeout a reply proves
    /// nothing useful any more.
    pub fn op_timeout(&self) -> Duration {
        self.session_timeout
    }

    pub fn child(&self, name: &str) -> String {
        child_path(&self.root, name)
    }

    /// The persistent znode whose existence says this chain has held state.
    pub fn held_state_marker(&self) -> String {
        child_path(&self.meta, HELD_STATE_MARKER)
    }

    /// The persistent znode holding the chain's latest eviction.
    pub fn eviction_record(&self) -> String {
        child_path(&self.meta, EVICTION_RECORD)
    }
}

/// Something that happened to the client, delivered in order.
#[derive(Debug)]
pub(super) enum Signal {
    /// A watch fired (or an event nobody watched reached the default watcher).
    Watch(WatchedEvent),
    State(ZkState),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum OpError {
    #[error("ZooKeeper replied {0:?}")]
    Zk(ZkError),
    #[error("no reply from ZooKeeper within {0:?}")]
    Timeout(Duration),
}

impl OpError {
    pub fn is(&self, e: ZkError) -> bool {
        matches!(self, OpError::Zk(z) if *z == e)
    }
}

pub(super) struct ZkSession {
    zk: Arc<ZooKeeper>,
    signal_tx: mpsc::UnboundedSender<Signal>,
    pub signals: mpsc::UnboundedReceiver<Signal>,
    /// Set by the state listener, on the library's I/O task, before it processes anything that
    /// arrives over a replacement session.
    expired: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    op_timeout: Duration,
    closed: bool,
}

impl ZkSession {
    /// Opens a session with any of the servers, giving up after `budget`.
    pub async fn open(target: &Target, budget: Duration) -> anyhow::Result<ZkSession> {
        let deadline = Instant::now() + budget;
        let addrs = resolve(&target.hosts, deadline).await?;
        probe_tcp(&addrs, deadline).await?;
        let connect: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        let connect = connect.join(",");

        let (signal_tx, signals) = mpsc::unbounded_channel();
        let default_tx = signal_tx.clone();
        let watcher = move |ev: WatchedEvent| {
            let _ = default_tx.send(Signal::Watch(ev));
        };
        let zk = timeout_at(
            deadline,
            ZooKeeper::connect_with_retry_time(&connect, target.session_timeout, watcher, RECONNECT_DELAY),
        )
        .await
        .map_err(|_| anyhow!("no connection within {budget:?}"))?
        .map_err(|e| anyhow!("the client rejected {connect}: {e:?}"))?;

        let expired = Arc::new(AtomicBool::new(false));
        // Assumed up until told otherwise: the first `Connected` may predate the listener.
        let connected = Arc::new(AtomicBool::new(true));
        let (expired_flag, connected_flag, state_tx) = (expired.clone(), connected.clone(), signal_tx.clone());
        zk.add_listener(move |state| {
            #[allow(deprecated)]
            if state == ZkState::NotConnected {
                expired_flag.store(true, Ordering::SeqCst);
            }
            connected_flag.store(matches!(state, ZkState::Connected | ZkState::ConnectedReadOnly), Ordering::SeqCst);
            let _ = state_tx.send(Signal::State(state));
        });
        let session = ZkSession {
            zk: Arc::new(zk),
            signal_tx,
            signals,
            expired,
            connected,
            op_timeout: target.op_timeout(),
            closed: false,
        };
        // `connect` returns once TCP is up; only a reply proves the handshake completed.
        match timeout_at(deadline, session.zk.exists("/", false)).await {
            Ok(Ok(_)) => Ok(session),
            Ok(Err(e)) => Err(anyhow!("connected to {connect} but the first request failed: {e:?}")),
            Err(_) => Err(anyhow!("connected to {connect} but no ZooKeeper session within {budget:?}")),
        }
    }

    pub fn zk(&self) -> &ZooKeeper {
        &self.zk
    }

    /// Whether the library reported our session expired (it has replaced it by now).
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// Whether the client is connected right now. While it is not, requests only pile up in
    /// the library's queue (it stops reading it while reconnecting) and go out, stale, later.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Runs one call with the session's timeout.
    pub async fn op<T>(&self, call: impl Future<Output = ZkResult<T>>) -> Result<T, OpError> {
        match timeout(self.op_timeout, call).await {
            Ok(r) => r.map_err(OpError::Zk),
            Err(_) => Err(OpError::Timeout(self.op_timeout)),
        }
    }

    /// A one-shot watch callback that forwards into `signals`. Watch callbacks run on the
    /// library's task and must not block, hence an unbounded channel.
    pub fn watch_callback(&self) -> impl FnOnce(WatchedEvent) + Send + 'static {
        let tx = self.signal_tx.clone();
        move |ev| {
            let _ = tx.send(Signal::Watch(ev));
        }
    }

    /// Creates `path` and any missing ancestors as persistent znodes.
    pub async fn ensure_path(&self, path: &str) -> anyhow::Result<()> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            if let Ok(Some(_)) = self.op(self.zk.exists(&prefix, false)).await {
                continue;
            }
            match self
                .op(self
                    .zk
                    .create(&prefix, Vec::new(), Acl::open_unsafe().clone(), CreateMode::Persistent))
                .await
            {
                Ok(_) => tracing::info!("created ZooKeeper znode {prefix}"),
                Err(e) if e.is(ZkError::NodeExists) => {}
                Err(e) => return Err(anyhow!("cannot create {prefix}: {e}")),
            }
        }
        Ok(())
    }

    /// Deletes `delete` (our znode) if given, then closes the session. Bounded by the
    /// timeouts; if the server cannot be reached the close request stays queued in the client
    /// and goes out if it reconnects, else the server expires the session.
    pub async fn close(mut self, delete: Option<&str>) {
        self.closed = true;
        // Disconnected, the delete could only time out; the close (or expiry) removes it anyway.
        if let Some(path) = delete.filter(|_| self.connected()) {
            match self.op(self.zk.delete(path, None)).await {
                Ok(()) => tracing::debug!("deleted {path}"),
                Err(e) if e.is(ZkError::NoNode) => {}
                Err(e) => tracing::debug!("could not delete {path} before closing the session: {e}"),
            }
        }
        match timeout(self.op_timeout, self.zk.close()).await {
            Ok(Ok(())) => tracing::debug!("closed ZooKeeper session"),
            Ok(Err(e)) => tracing::debug!("closing the ZooKeeper session failed: {e:?}"),
            Err(_) => tracing::debug!("ZooKeeper session not closed within {:?}; it will expire", self.op_timeout),
        }
    }
}

impl Drop for ZkSession {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // The library would keep the session alive for as long as the process runs.
        let (zk, t) = (self.zk.clone(), self.op_timeout);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = timeout(t, zk.close()).await;
            });
        }
    }
}

/// Resolves every host without blocking the runtime (the library would use the blocking
/// resolver, and keep only the first address of each name).
async fn resolve(hosts: &[String], deadline: Instant) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for host in hosts {
        match timeout_at(deadline, tokio::net::lookup_host(host.as_str())).await {
            Ok(Ok(found)) => {
                for a in found {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            Ok(Err(e)) => errors.push(format!("{host}: {e}")),
            Err(_) => errors.push(format!("{host}: name lookup timed out")),
        }
    }
    if addrs.is_empty() {
        return Err(anyhow!("cannot resolve {}", errors.join("; ")));
    }
    Ok(addrs)
}

/// Fails fast, with the operating system's reason, when nothing accepts connections: the
/// library would only retry silently until our deadline.
async fn probe_tcp(addrs: &[SocketAddr], deadline: Instant) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for addr in addrs {
        match timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => {
                errors.push(format!("{addr}: connect timed out"));
                break;
            }
        }
    }
    Err(anyhow!("{}", errors.join("; ")))
}
