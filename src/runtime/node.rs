//! One replica process: the core under a lock, and the tasks that feed it — the gRPC server,
//! replies from peers, membership events from ZooKeeper, and a timer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::limits::{self, MessageLimits};
use super::metrics::Metrics;
use super::network::{Connect, NetConfig, ReplyEvent, TcpConnect, TonicNetwork};
use super::service::ChainService;
pub use super::shared::{Core, CoreCoordinator, MembershipControl, RuntimeClock, Shared};
use super::tls::{TlsConfig, TlsConnect};
use super::zk::{MembershipEvent, ZkConfig, ZkCoordinator};
use crate::core::{self, Millis, Replica, Variant};
use crate::pb::adb::head_chain_replica_server::HeadChainReplicaServer;
use crate::pb::adb::tail_chain_replica_server::TailChainReplicaServer;
use crate::pb::chainrep::ext::chain_ext_server::ChainExtServer;

/// Requests one client connection may have open at once; more wait in the client.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub zk: ZkConfig,
    pub listen: SocketAddr,
    /// `host:port` other replicas and clients use to reach us; the bound address by default.
    pub advertise: Option<String>,
    pub core: core::Config,
    pub net: NetConfig,
    /// `Some`: serve TLS only, require a certificate from its CA on replica-to-replica calls,
    /// and dial peers over TLS with its certificate. `None`: plaintext, every caller trusted.
    pub tls: Option<TlsConfig>,
    /// Timer period for retries and polls.
    pub tick: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (`--metrics-listen`); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Keep the state in a write-ahead log here and acknowledge only what is on disk
    /// (`--data-dir`, see `runtime::storage`); memory-only when `None`.
    pub data_dir: Option<std::path::PathBuf>,
}

impl NodeConfig {
    /// Defaults derived from the session timeout: the lease must end well before ZooKeeper
    /// could expire the session, so half of it leaves room for clock drift and delays.
    pub fn new(zk: ZkConfig, listen: SocketAddr, variant: Variant) -> Self {
        let lease_ms = (zk.session_timeout.as_millis() / 2) as Millis;
        let session_timeout_ms = zk.session_timeout.as_millis() as Millis;
        NodeConfig {
            zk,
            listen,
            advertise: None,
            core: core::Config {
                variant,
                lease_ms,
                // Replicas whose sessions all ended at once notice within a quarter of the
                // session timeout (the coordinator's check period) and register again; half of
                // it lets the last of them return before a head starts or adopts anything.
                retained_settle_ms: lease_ms,
                // Long enough for a head waiting out `retained_settle_ms` to start and send
                // the state, and never less than the core's default.
                stateless_rejoin_ms: (session_timeout_ms * 2).max(core::Config::default().stateless_rejoin_ms),
                // A successor silent this long while it owes us an answer is evicted. Longer than
                // the session timeout, so that a replica that crashed is removed by ZooKeeper's
                // expiry first (ZooKeeper expires sessions up to one of its ticks late): only
                // replicas whose sessions stay alive, the gray failures, are ever evicted.
                suspicion_ms: session_timeout_ms + session_timeout_ms / 2,
                ..core::Config::default()
            },
            net: NetConfig {
                variant,
                ..NetConfig::default()
            },
            tls: None,
            tick: Duration::from_millis(10),
            metrics_listen: None,
            data_dir: None,
        }
    }
}

pub struct RunningNode {
    pub local_addr: SocketAddr,
    pub advertise: String,
    /// Where `/metrics` is served, with `NodeConfig::metrics_listen`.
    pub metrics_url: Option<String>,
    pub shared: Arc<Shared>,
    zk: Option<ZkCoordinator>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Serve until the server fails or `shutdown` is called from elsewhere.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server)
            .await
            .context("server task failed")?
            .context("gRPC server failed")
    }

    /// Leave the chain cleanly: our znode goes at once instead of after the session timeout.
    pub async fn shutdown(mut self) {
        if let Some(zk) = &self.zk {
            zk.close().await;
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
        self.abort();
    }

    /// Stop every task of this replica at once, as a crash would (no goodbye to anyone).
    pub fn abort(&self) {
        self.server.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A replica in production: TCP on `cfg.listen`, membership in ZooKeeper.
pub async fn start(cfg: NodeConfig) -> anyhow::Result<RunningNode> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let local_addr = listener.local_addr().context("listener has no local address")?;
    // Bound before anything starts, so that a busy metrics port fails the start like a busy
    // gRPC port does.
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr} (--metrics-listen)"))?;
            let bound = l.local_addr().context("the metrics listener has no local address")?;
            Some((l, bound))
        }
        None => None,
    };
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local_addr.to_string());
    let (event_tx, event_rx) = mpsc::channel(1024);
    let metrics = Arc::new(Metrics::new(cfg.core.variant)?);
    // Before ZooKeeper: a data dir that cannot be used must not even briefly make a member.
    let data = open_data_dir(&cfg, &metrics).await?;
    let zk = ZkCoordinator::spawn_counted(cfg.zk.clone(), advertise.clone(), event_tx, metrics.zk.clone());
    let join = Arc::new(zk.clone()) as Arc<dyn MembershipControl>;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let connector: Arc<dyn Connect> = match &cfg.tls {
        Some(tls) => Arc::new(TlsConnect(tls.clone())),
        None => Arc::new(TcpConnect),
    };
    let mut node = match start_with_metrics(&cfg, incoming, local_addr, advertise, connector, event_rx, join, metrics, data).await {
        Ok(node) => node,
        Err(e) => {
            zk.close().await;
            return Err(e);
        }
    };
    node.zk = Some(zk);
    if let Some((listener, bound)) = metrics_listener {
        let url = super::metrics::metrics_url(bound, &node.advertise);
        let _ = node.shared.metrics_url.set(url.clone());
        let shared = node.shared.clone();
        node.tasks.push(tokio::spawn(super::metrics::serve(
            listener,
            node.shared.metrics.clone(),
            Arc::new(move || shared.with_core(|core| core.describe())),
        )));
        tracing::info!(%url, "serving metrics");
        node.metrics_url = Some(url);
    }
    Ok(node)
}

/// A replica on any transport and membership source: the simulator runs this same runtime over
/// in-memory pipes with a simulated coordinator.
pub async fn start_with<S, IO, E>(
    cfg: &NodeConfig,
    incoming: S,
    local_addr: SocketAddr,
    advertise: String,
    connector: Arc<dyn Connect>,
    membership: mpsc::Receiver<MembershipEvent>,
    control: Arc<dyn MembershipControl>,
) -> anyhow::Result<RunningNode>
where
    S: tokio_stream::Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let metrics = Arc::new(Metrics::new(cfg.core.variant)?);
    let data = open_data_dir(cfg, &metrics).await?;
    start_with_metrics(cfg, incoming, local_addr, advertise, connector, membership, control, metrics, data).await
}

/// `cfg.data_dir` opened and recovered (`runtime::storage`), if the replica has one.
async fn open_data_dir(cfg: &NodeConfig, metrics: &Metrics) -> anyhow::Result<Option<super::storage::OpenedDataDir>> {
    let Some(dir) = cfg.data_dir.clone() else { return Ok(None) };
    let disk_metrics = metrics.disk.clone();
    // Recovery reads the whole log: seconds for millions of keys, off the async threads.
    let opened = tokio::task::spawn_blocking(move || super::storage::open(&dir, disk_metrics))
        .await
        .context("the data dir's recovery task failed")??;
    Ok(Some(opened))
}

#[allow(clippy::too_many_arguments)]
async fn start_with_metrics<S, IO, E>(
    cfg: &NodeConfig,
    incoming: S,
    local_addr: SocketAddr,
    advertise: String,
    connector: Arc<dyn Connect>,
    membership: mpsc::Receiver<MembershipEvent>,
    control: Arc<dyn MembershipControl>,
    metrics: Arc<Metrics>,
    data: Option<super::storage::OpenedDataDir>,
) -> anyhow::Result<RunningNode>
where
    S: tokio_stream::Stream<Item = Result<IO, E>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &cfg.tls {
        let server = tls
            .server()
            .context("TLS needs this replica's own certificate and key (--tls-cert, --tls-key)")?;
        builder = builder.tls_config(server).context("cannot serve TLS with these files")?;
    }
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    let mut core = Replica::new(
        cfg.core.clone(),
        RuntimeClock::new(Instant::now()),
        TonicNetwork::new(cfg.net.clone(), reply_tx, connector, metrics.clone()),
        CoreCoordinator::new(control.clone(), metrics.clone()),
    );
    let mut durable_progress = None;
    if let Some(opened) = data {
        core = core.with_storage(Box::new(opened.storage), opened.copy);
        durable_progress = Some((opened.progress, opened.lock));
    }
    let shared = Arc::new(Shared::new(core, control, metrics));

    let mut tasks = vec![
        tokio::spawn(pump_replies(shared.clone(), reply_rx)),
        tokio::spawn(pump_membership(shared.clone(), membership)),
        tokio::spawn(tick(shared.clone(), cfg.tick)),
    ];
    if let Some((progress, lock)) = durable_progress {
        tasks.push(tokio::spawn(super::storage::pump_progress(shared.clone(), progress, lock)));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut service = ChainService::new(shared.clone());
    if !cfg.net.replicate_stream {
        service = service.without_replicate_stream();
    }
    if cfg.tls.is_some() {
        service = service.with_peer_certificates_required();
    }
    let limits = MessageLimits {
        small: limits::small_message_limit(cfg.core.max_key_bytes),
        large: cfg.net.max_message_bytes,
    };
    let mut router = builder
        .layer(tower::layer::layer_fn({
            let shared = shared.clone();
            move |inner| CountTransfers {
                inner,
                shared: shared.clone(),
            }
        }))
        .tcp_nodelay(true)
        // Without a cap h2 lets one connection pile up thousands of unread requests and then
        // drops it (GOAWAY ENHANCE_YOUR_CALM), turning every one into an unknown outcome.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(health_service.max_decoding_message_size(limits.small))
        .add_service(limits.split(|decode, encode| {
            ChainExtServer::new(service.clone())
                .max_decoding_message_size(decode)
                .max_encoding_message_size(encode)
        }));
    router = match cfg.core.variant {
        Variant::Head => {
            health.set_serving::<HeadChainReplicaServer<ChainService>>().await;
            router.add_service(limits.split(|decode, encode| {
                HeadChainReplicaServer::new(service.clone())
                    .max_decoding_message_size(decode)
                    .max_encoding_message_size(encode)
            }))
        }
        Variant::Tail => {
            health.set_serving::<TailChainReplicaServer<ChainService>>().await;
            router.add_service(limits.split(|decode, encode| {
                TailChainReplicaServer::new(service.clone())
                    .max_decoding_message_size(decode)
                    .max_encoding_message_size(encode)
            }))
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(listen = %local_addr, %advertise, tls = cfg.tls.is_some(), "replica serving");
    Ok(RunningNode {
        local_addr,
        advertise,
        metrics_url: None,
        shared,
        zk: None,
        stop_server: Some(stop_tx),
        server,
        tasks,
    })
}

/// Counts `stateTransfer` and `DeltaTransfer` calls from the moment their headers arrive until
/// they are answered. tonic hands the method its message only once the whole body is in, and a
/// big transfer takes seconds, during which the core must know that its predecessor is sending
/// it state.
#[derive(Clone)]
struct CountTransfers<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct ReceivingTransfer(Arc<Shared>, std::time::Instant);

impl Drop for ReceivingTransfer {
    fn drop(&mut self) {
        self.0.transfers_receiving.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.transfer_receive_seconds.observe(self.1.elapsed().as_secs_f64());
    }
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for CountTransfers<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let receiving = (path.ends_with("/stateTransfer") || path.ends_with("/DeltaTransfer")).then(|| {
            self.shared.transfers_receiving.fetch_add(1, Ordering::Relaxed);
            ReceivingTransfer(self.shared.clone(), std::time::Instant::now())
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(receiving);
            response
        })
    }
}

/// Replies are applied in batches: one lock for many replies under load.
async fn pump_replies(shared: Arc<Shared>, mut replies: mpsc::UnboundedReceiver<ReplyEvent>) {
    const BATCH: usize = 1024;
    let mut batch = Vec::with_capacity(BATCH);
    while replies.recv_many(&mut batch, BATCH).await > 0 {
        shared.with_core(|core| {
            for r in batch.drain(..) {
                core.on_peer_reply(r.from, r.epoch, r.kind, r.reply);
            }
        });
    }
}

async fn pump_membership(shared: Arc<Shared>, mut events: mpsc::Receiver<MembershipEvent>) {
    while let Some(event) = events.recv().await {
        shared.with_core(|core| match event {
            MembershipEvent::Joined { session_id } => {
                tracing::info!(session = format_args!("{session_id:x}"), "joined the chain");
                core.on_joined(session_id);
            }
            MembershipEvent::View { members, version } => {
                core.net_mut().retain_links(&members);
                core.on_view(members, version);
                tracing::debug!(role = core.role().as_str(), "new view");
            }
            MembershipEvent::Alive { at } => {
                let at = core.clock().millis_of(at);
                core.on_session_alive(at);
            }
            MembershipEvent::SessionLost => {
                tracing::warn!("ZooKeeper session lost: dropping state and joining again as a new replica");
                core.on_session_lost();
            }
            MembershipEvent::Listed => {
                shared.listed();
            }
            MembershipEvent::ChainMarker(answer) => core.on_chain_marker(answer),
            MembershipEvent::Eviction(record) => {
                shared.metrics.eviction_records_seen.inc();
                core.on_eviction_record(record);
            }
        });
    }
}

async fn tick(shared: Arc<Shared>, period: Duration) {
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        timer.tick().await;
        let receiving = shared.transfers_receiving.load(Ordering::Relaxed) > 0;
        shared.with_core(|core| {
            if receiving {
                core.note_transfer_receiving();
            }
            core.on_tick()
        });
    }
}
