//! Prometheus metrics of one replica (`chain-replica --metrics-listen`), docs/metrics.md.
//!
//! Two kinds of figures:
//! - gauges read from `Replica::describe()` when `/metrics` is scraped, so the core keeps no
//!   metrics types and the write path pays nothing for them;
//! - counters and histograms counted where things happen in the runtime (client requests in
//!   `service`, peer calls and transfers in `network`, callbacks in `callbacks`, ZooKeeper in
//!   `zk::coordinator`, evictions in `node`).
//!
//! Every labelled series is created up front and its handle kept (`Counters` arrays), for two
//! reasons: the hot paths then never format or look up a label string, and a dashboard sees
//! every series at 0 from the first scrape instead of "no data" until the first event.
//!
//! Each replica has its own registry: the simulator runs several replicas in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::core::{Describe, Role, Variant};

/// Every metric name starts with this.
pub const PREFIX: &str = "chainrep_";

/// Client-facing methods, as labels of `chainrep_client_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Increment = 0,
    Delete = 1,
    Get = 2,
}

const METHODS: [(Method, &str); 3] = [(Method::Increment, "increment"), (Method::Delete, "delete"), (Method::Get, "get")];

/// How a client request ended, as docs/statuses.md lists the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    /// A write at a replica that is not the head (`rc=1`).
    NotHead = 1,
    /// A read at a replica that is not the tail, or a tail without state (`rc=1`).
    NotTail = 2,
    /// `INVALID_ARGUMENT`: bad key or callback address.
    Invalid = 3,
    OutOfRange = 4,
    Unavailable = 5,
    /// `RESOURCE_EXHAUSTED`: too many writes in flight.
    Overloaded = 6,
    /// `UNKNOWN`: the head cannot tell whether the write was applied at the tail.
    Unknown = 7,
}

const OUTCOMES: [(Outcome, &str); 8] = [
    (Outcome::Ok, "ok"),
    (Outcome::NotHead, "not_head"),
    (Outcome::NotTail, "not_tail"),
    (Outcome::Invalid, "invalid"),
    (Outcome::OutOfRange, "out_of_range"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::Overloaded, "overloaded"),
    (Outcome::Unknown, "unknown"),
];

/// Whether `method` can end with `outcome`: only those series are exported.
fn possible(method: Method, outcome: Outcome) -> bool {
    match method {
        Method::Get => matches!(outcome, Outcome::Ok | Outcome::NotTail | Outcome::Invalid | Outcome::Unavailable),
        Method::Increment | Method::Delete => outcome != Outcome::NotTail,
    }
}

/// Replica-to-replica calls this replica makes, as labels of `chainrep_peer_call_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCall {
    /// One classic `proposeStateUpdate` per update (a peer without the stream).
    Propose = 0,
    /// Batches on the `chainrep.ext` `Replicate` stream.
    Replicate = 1,
    StateTransfer = 2,
    XidProcessed = 3,
    GetLatestXid = 4,
    PullState = 5,
    Held = 6,
}

const PEER_CALLS: [(PeerCall, &str); 7] = [
    (PeerCall::Propose, "propose_state_update"),
    (PeerCall::Replicate, "replicate"),
    (PeerCall::StateTransfer, "state_transfer"),
    (PeerCall::XidProcessed, "xid_processed"),
    (PeerCall::GetLatestXid, "get_latest_xid"),
    (PeerCall::PullState, "pull_state"),
    (PeerCall::Held, "held"),
];

impl PeerCall {
    /// The call that carries a request of `kind` when it is not streamed.
    pub fn of(kind: crate::core::RequestKind) -> PeerCall {
        use crate::core::RequestKind as K;
        match kind {
            K::Propose(_) => PeerCall::Propose,
            K::Transfer(_) => PeerCall::StateTransfer,
            K::XidProcessed(_) => PeerCall::XidProcessed,
            K::GetLatestXid => PeerCall::GetLatestXid,
            K::PullState => PeerCall::PullState,
            K::Held => PeerCall::Held,
        }
    }
}

/// How a peer call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFailure {
    /// The peer answered `rc=1` (not from its predecessor, not now, ...): normal in small
    /// numbers while views settle.
    Refused = 0,
    /// A gRPC error: connection refused or reset, a stream that broke, an error status.
    Error = 1,
    /// No answer before the call's deadline.
    Timeout = 2,
    /// Not sent: the queue to that peer was full, or no channel could be made.
    NotSent = 3,
}

const PEER_FAILURES: [(PeerFailure, &str); 4] = [
    (PeerFailure::Refused, "refused"),
    (PeerFailure::Error, "error"),
    (PeerFailure::Timeout, "timeout"),
    (PeerFailure::NotSent, "not_sent"),
];

/// How a state transfer this replica sent or received ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    Accepted = 0,
    /// `rc=1`.
    Refused = 1,
    /// The call failed (sent transfers only).
    Failed = 2,
}

const TRANSFER_OUTCOMES: [(TransferOutcome, &str); 3] = [
    (TransferOutcome::Accepted, "accepted"),
    (TransferOutcome::Refused, "refused"),
    (TransferOutcome::Failed, "failed"),
];

/// The tail variant's callbacks to clients (`runtime::callbacks`).
#[derive(Clone)]
pub struct CallbackCounters {
    /// `cxidProcessed` calls made, first attempts and retries.
    pub sent: IntCounter,
    pub delivered: IntCounter,
    /// Failed attempts queued again for another.
    pub retried: IntCounter,
    /// Given up: not delivered by the deadline, pushed out of a full queue, refused by the client.
    pub failed_expired: IntCounter,
    pub failed_over_bound: IntCounter,
    pub failed_refused: IntCounter,
}

impl CallbackCounters {
    /// Counters that no registry exports, for a `Callbacks` nobody scrapes (unit tests).
    pub fn detached() -> CallbackCounters {
        let c = detached_counter;
        CallbackCounters {
            sent: c(),
            delivered: c(),
            retried: c(),
            failed_expired: c(),
            failed_over_bound: c(),
            failed_refused: c(),
        }
    }
}

/// ZooKeeper events of the membership task (`zk::coordinator`).
#[derive(Clone)]
pub struct ZkCounters {
    /// The connection dropped and came back within the same session.
    pub reconnects: IntCounter,
    /// Sessions that ended other than by a clean leave (expired, closed, znode lost).
    pub session_losses: IntCounter,
}

impl ZkCounters {
    /// Counters that no registry exports, for a coordinator nobody scrapes.
    pub fn detached() -> ZkCounters {
        let c = detached_counter;
        ZkCounters {
            reconnects: c(),
            session_losses: c(),
        }
    }
}

/// A counter in no registry: counts, but is never exported.
fn detached_counter() -> IntCounter {
    // Fails only for an invalid name or help text, and these are constants.
    IntCounter::with_opts(Opts::new("chainrep_detached", "not exported")).expect("a constant, valid metric name")
}

/// Latency buckets in seconds, from a fast local write (~100 µs) to a client's give-up (10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A state transfer takes from milliseconds (empty) to a minute (`NetConfig::transfer_timeout`).
const TRANSFER_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub struct Metrics {
    registry: Registry,
    variant: Variant,

    // Gauges, set from `Describe` at each scrape.
    info: IntGaugeVec,
    role: IntGaugeVec,
    lease_valid: IntGauge,
    holds_state: IntGauge,
    parked: IntGauge,
    last_applied_xid: IntGauge,
    tail_confirmed_xid: IntGauge,
    sent_list_length: IntGauge,
    pending_writes: IntGauge,
    reorder_buffer_length: IntGauge,
    store_keys: IntGauge,
    store_bytes: IntGauge,

    requests: [[IntCounter; OUTCOMES.len()]; METHODS.len()],
    pub write_seconds: Histogram,
    pub read_seconds: Histogram,

    transfers_sent: [IntCounter; TRANSFER_OUTCOMES.len()],
    pub transfer_sent_bytes: IntCounter,
    pub transfer_send_seconds: Histogram,
    transfers_received: [IntCounter; 2],
    pub transfer_received_bytes: IntCounter,
    pub transfer_receive_seconds: Histogram,

    peer_failures: [[IntCounter; PEER_FAILURES.len()]; PEER_CALLS.len()],

    pub callbacks: CallbackCounters,
    pub zk: ZkCounters,
    pub evictions_reported: IntCounter,
    pub eviction_records_seen: IntCounter,
    pub disk: DiskMetrics,
}

/// The data dir's write-ahead log (`--data-dir`), updated by the thread that owns it.
#[derive(Clone)]
pub struct DiskMetrics {
    /// `fdatasync`s of group commits: one for every batch of updates made durable.
    pub syncs: IntCounter,
    pub sync_seconds: Histogram,
    pub updates_appended: IntCounter,
    pub snapshots: IntCounter,
    pub log_bytes: IntGauge,
    pub snapshot_bytes: IntGauge,
    pub durable_xid: IntGauge,
}

/// Registers a collector and hands back a handle to it.
fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> prometheus::Result<T> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    reg(r, IntGauge::new(format!("{PREFIX}{name}"), help)?)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    reg(r, IntCounter::new(format!("{PREFIX}{name}"), help)?)
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    reg(
        r,
        Histogram::with_opts(HistogramOpts::new(format!("{PREFIX}{name}"), help).buckets(buckets.to_vec()))?,
    )
}

/// One series per label value, in the order of `values`.
fn series<const N: usize, E>(vec: &IntCounterVec, values: &[(E, &str); N]) -> [IntCounter; N] {
    std::array::from_fn(|i| vec.with_label_values(&[values[i].1]))
}

impl Metrics {
    pub fn new(variant: Variant) -> anyhow::Result<Metrics> {
        Self::build(variant).context("cannot set up the metrics registry")
    }

    fn build(variant: Variant) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    format!("{PREFIX}replica_info"),
                    "Always 1; labels: the chain.proto variant served, the ZooKeeper session id (hex, empty before joining) and the version",
                ),
                &["variant", "session", "version"],
            )?,
        )?;
        let role = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    format!("{PREFIX}role"),
                    "1 for the role this replica's current view gives it, 0 for the others",
                ),
                &["role"],
            )?,
        )?;
        for role_name in ROLES.iter().map(|r| r.as_str()) {
            role.with_label_values(&[role_name]).set(0);
        }

        let requests_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    format!("{PREFIX}client_requests_total"),
                    "Client requests answered, by method and outcome (docs/statuses.md)",
                ),
                &["method", "outcome"],
            )?,
        )?;
        let requests = std::array::from_fn(|m| {
            std::array::from_fn(|o| {
                let (method, method_name) = METHODS[m];
                let (outcome, outcome_name) = OUTCOMES[o];
                if possible(method, outcome) {
                    requests_vec.with_label_values(&[method_name, outcome_name])
                } else {
                    // Never counted; kept out of the registry so that no series says 0 for
                    // something that cannot happen.
                    detached_counter()
                }
            })
        });

        let sent_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    format!("{PREFIX}state_transfers_sent_total"),
                    "stateTransfer calls made to the successor, by outcome",
                ),
                &["outcome"],
            )?,
        )?;
        let received_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    format!("{PREFIX}state_transfers_received_total"),
                    "stateTransfer calls received from the predecessor, by outcome",
                ),
                &["outcome"],
            )?,
        )?;

        let failures_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    format!("{PREFIX}peer_call_failures_total"),
                    "Replica-to-replica calls this replica made that failed, by call and kind",
                ),
                &["call", "kind"],
            )?,
        )?;
        let peer_failures =
            std::array::from_fn(|c| std::array::from_fn(|k| failures_vec.with_label_values(&[PEER_CALLS[c].1, PEER_FAILURES[k].1])));

        let callback_failed = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    format!("{PREFIX}callbacks_failed_total"),
                    "Tail variant: client callbacks given up (the write is applied, its client does not learn it), by reason",
                ),
                &["reason"],
            )?,
        )?;

        Ok(Metrics {
            variant,
            info,
            role,
            lease_valid: gauge(&r, "lease_valid", "1 while the ZooKeeper session lease is valid (the replica may act as head or tail)")?,
            holds_state: gauge(&r, "holds_state", "1 once the replica holds the chain's state (chainctl status: SYNCED)")?,
            parked: gauge(&r, "parked", "1 while evicted from the chain and waiting to join again (docs/gray-failures.md)")?,
            last_applied_xid: gauge(&r, "last_applied_xid", "The last xid applied here")?,
            tail_confirmed_xid: gauge(&r, "tail_confirmed_xid", "The highest xid known applied at the tail")?,
            sent_list_length: gauge(&r, "sent_list_length", "Updates forwarded to the successor and not yet known applied at the tail")?,
            pending_writes: gauge(&r, "pending_writes", "Head variant: client writes at the head waiting for the tail")?,
            reorder_buffer_length: gauge(&r, "reorder_buffer_length", "Updates held for a gap in the xid sequence")?,
            store_keys: gauge(&r, "store_keys", "Keys in the store (keys reading 0 are not stored)")?,
            store_bytes: gauge(&r, "store_bytes", "Key and value bytes in the store, not counting the map's overhead")?,
            requests,
            write_seconds: histogram(
                &r,
                "client_write_seconds",
                "Writes answered rc=0 at the head: from the request's arrival to its answer (head variant: applied at the tail; tail variant: accepted)",
                LATENCY_BUCKETS,
            )?,
            read_seconds: histogram(&r, "client_read_seconds", "Reads answered rc=0 at the tail: from arrival to answer", LATENCY_BUCKETS)?,
            transfers_sent: series(&sent_vec, &TRANSFER_OUTCOMES),
            transfer_sent_bytes: counter(&r, "state_transfer_sent_bytes_total", "Encoded bytes of the stateTransfer calls made")?,
            transfer_send_seconds: histogram(
                &r,
                "state_transfer_send_seconds",
                "stateTransfer calls made: from sending to the answer or the failure",
                TRANSFER_BUCKETS,
            )?,
            // A received transfer is installed or refused; it cannot fail from our side.
            transfers_received: series(&received_vec, &[TRANSFER_OUTCOMES[0], TRANSFER_OUTCOMES[1]]),
            transfer_received_bytes: counter(&r, "state_transfer_received_bytes_total", "Encoded bytes of the stateTransfer calls received")?,
            transfer_receive_seconds: histogram(
                &r,
                "state_transfer_receive_seconds",
                "stateTransfer calls received: from their first bytes to the answer",
                TRANSFER_BUCKETS,
            )?,
            peer_failures,
            callbacks: CallbackCounters {
                sent: counter(&r, "callbacks_sent_total", "Tail variant: cxidProcessed calls made to clients, retries included")?,
                delivered: counter(&r, "callbacks_delivered_total", "Tail variant: client callbacks the client answered")?,
                retried: counter(&r, "callbacks_retried_total", "Tail variant: failed callback attempts queued again")?,
                failed_expired: callback_failed.with_label_values(&["expired"]),
                failed_over_bound: callback_failed.with_label_values(&["over_bound"]),
                failed_refused: callback_failed.with_label_values(&["refused"]),
            },
            zk: ZkCounters {
                reconnects: counter(&r, "zk_reconnects_total", "ZooKeeper connections re-established within a session")?,
                session_losses: counter(&r, "zk_session_losses_total", "ZooKeeper sessions lost (expired, closed, or our znode taken)")?,
            },
            evictions_reported: counter(
                &r,
                "evictions_reported_total",
                "Evictions of a silent successor (or head) this replica asked ZooKeeper to record",
            )?,
            eviction_records_seen: counter(&r, "eviction_records_seen_total", "Eviction records this replica received from ZooKeeper")?,
            disk: DiskMetrics {
                syncs: counter(&r, "disk_syncs_total", "Group commits of the write-ahead log (--data-dir): one fdatasync each")?,
                sync_seconds: histogram(&r, "disk_sync_seconds", "Time of one group commit's fdatasync", LATENCY_BUCKETS)?,
                updates_appended: counter(&r, "disk_updates_appended_total", "Updates appended to the write-ahead log")?,
                snapshots: counter(&r, "disk_snapshots_total", "Snapshots of the store written (compaction and installed state transfers)")?,
                log_bytes: gauge(&r, "disk_log_bytes", "Bytes of write-ahead log since the last snapshot: what a restart replays")?,
                snapshot_bytes: gauge(&r, "disk_snapshot_bytes", "Size of the last snapshot file")?,
                durable_xid: gauge(&r, "disk_durable_xid", "The highest xid on disk in the current state")?,
            },
            registry: r,
        })
    }

    /// Count one client request.
    #[inline]
    pub fn request(&self, method: Method, outcome: Outcome) {
        self.requests[method as usize][outcome as usize].inc();
    }

    pub fn transfer_sent(&self, outcome: TransferOutcome) {
        self.transfers_sent[outcome as usize].inc();
    }

    pub fn transfer_received(&self, accepted: bool) {
        self.transfers_received[usize::from(!accepted)].inc();
    }

    pub fn peer_failure(&self, call: PeerCall, kind: PeerFailure) {
        self.peer_failures[call as usize][kind as usize].inc();
    }

    /// The text exposition of every metric, gauges taken from `d` (the core's state now).
    pub fn render(&self, d: &Describe) -> String {
        self.set_gauges(d);
        match TextEncoder::new().encode_to_string(&self.registry.gather()) {
            Ok(text) => text,
            Err(e) => {
                // Only a broken metric could fail to encode; a scrape without it beats none.
                tracing::error!(error = %e, "cannot encode the metrics");
                String::new()
            }
        }
    }

    fn set_gauges(&self, d: &Describe) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let x = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Labels change with the session: the old series must go, or it would stay at 1.
        self.info.reset();
        let session = d.session_id.map(|s| format!("{s:x}")).unwrap_or_default();
        let variant = match self.variant {
            Variant::Head => "head",
            Variant::Tail => "tail",
        };
        self.info.with_label_values(&[variant, &session, env!("CARGO_PKG_VERSION")]).set(1);
        for role in ROLES {
            self.role.with_label_values(&[role.as_str()]).set(i64::from(role == d.role));
        }
        self.lease_valid.set(i64::from(d.lease_valid));
        self.holds_state.set(i64::from(d.holds_state));
        self.parked.set(i64::from(d.parked));
        self.last_applied_xid.set(x(d.last_applied));
        self.tail_confirmed_xid.set(x(d.tail_processed));
        self.sent_list_length.set(n(d.sent_len));
        self.pending_writes.set(n(d.pending_len));
        self.reorder_buffer_length.set(n(d.reorder_len));
        self.store_keys.set(n(d.keys));
        self.store_bytes.set(n(d.store_bytes));
    }
}

const ROLES: [Role; 5] = [Role::Outside, Role::Single, Role::Head, Role::Middle, Role::Tail];

/// The URL `chainctl status` shows for a metrics server bound to `bound`: with the host other
/// machines use (`advertise`'s) when it listens on every interface.
pub fn metrics_url(bound: SocketAddr, advertise: &str) -> String {
    if bound.ip().is_unspecified() {
        let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
        format!("http://{host}:{}/metrics", bound.port())
    } else {
        format!("http://{bound}/metrics")
    }
}

/// Serve `GET /metrics` on `listener` until the task is aborted; `describe` reads the core.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, describe: Arc<dyn Fn() -> Describe + Send + Sync>) {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, describe) = (metrics.clone(), describe.clone());
            async move {
                let body = metrics.render(&describe());
                ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server failed; /metrics is no longer served");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe() -> Describe {
        Describe {
            session_id: Some(0xab),
            role: Role::Tail,
            holds_state: true,
            last_applied: 7,
            tail_processed: 7,
            sent_len: 0,
            reorder_len: 0,
            pending_len: 0,
            oldest_pending: None,
            lease_valid: true,
            keys: 2,
            store_bytes: 13,
            retained: None,
            parked: false,
            transfer_owed: false,
        }
    }

    #[test]
    fn gauges_come_from_describe_and_counters_count() {
        let m = Metrics::new(Variant::Head).expect("metrics");
        m.request(Method::Increment, Outcome::Ok);
        m.request(Method::Increment, Outcome::Ok);
        m.request(Method::Get, Outcome::NotTail);
        m.peer_failure(PeerCall::Replicate, PeerFailure::Timeout);
        let text = m.render(&describe());
        for line in [
            "chainrep_client_requests_total{method=\"increment\",outcome=\"ok\"} 2",
            "chainrep_client_requests_total{method=\"get\",outcome=\"not_tail\"} 1",
            "chainrep_client_requests_total{method=\"delete\",outcome=\"overloaded\"} 0",
            "chainrep_peer_call_failures_total{call=\"replicate\",kind=\"timeout\"} 1",
            "chainrep_role{role=\"tail\"} 1",
            "chainrep_role{role=\"head\"} 0",
            "chainrep_last_applied_xid 7",
            "chainrep_store_bytes 13",
            "chainrep_lease_valid 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("chainrep_replica_info{session=\"ab\""), "{text}");
        assert!(!text.contains("outcome=\"not_head\",method=\"get\"") && !text.contains("method=\"get\",outcome=\"not_head\""));
    }

    #[test]
    fn a_new_session_replaces_the_info_series() {
        let m = Metrics::new(Variant::Tail).expect("metrics");
        m.render(&describe());
        let text = m.render(&Describe {
            session_id: Some(0xcd),
            ..describe()
        });
        assert!(text.contains("session=\"cd\"") && !text.contains("session=\"ab\""), "{text}");
    }

    #[test]
    fn urls_name_a_host_others_can_reach() {
        let any: SocketAddr = "0.0.0.0:9100".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        assert_eq!(metrics_url(any, "db1.example:7000"), "http://db1.example:9100/metrics");
        assert_eq!(metrics_url(local, "ignored:1"), "http://127.0.0.1:9100/metrics");
    }
}
