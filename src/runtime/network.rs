//! The core's `Network` on tonic: one long-lived channel and one sender task per peer.
//!
//! Sends never block the core (which runs under a lock): they go into a bounded per-peer
//! queue, and a task per peer turns them into RPCs. Consecutive proposals travel in batches on
//! one long-lived `chainrep.ext` `Replicate` stream (one ack per batch); a peer without that
//! extension gets one `proposeStateUpdate` per update, pipelined up to `max_in_flight`. A
//! `stateTransfer` is a barrier: it waits for the calls before it and holds back the calls
//! after it, because the successor cannot use updates that arrive before the state.
//! Every request gets a reply event (`Unreachable` on error, deadline or a full queue), except
//! that proposals sent in a batch are answered once per batch, for its last xid: the core only
//! needs to know how far its successor got (`core::suspicion`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;

use super::callbacks::{CallbackConfig, Callbacks};
pub use super::connect::{tune, Connect, TcpConnect};
use super::convert;
use super::metrics::{Metrics, PeerCall, PeerFailure, TransferOutcome};
use crate::core::{
    ClientOrigin, ClientToken, Member, NodeId, PeerReply, PeerRequest, PullAnswer, RequestKind, RetainedMark, Variant, WriteOutcome,
};
use crate::pb::adb;
use crate::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use crate::pb::adb::tail_chain_replica_client::TailChainReplicaClient;
use crate::pb::chainrep::ext;
use crate::pb::chainrep::ext::chain_ext_client::ChainExtClient;

/// A reply for the core, applied by the node's reply pump.
pub struct ReplyEvent {
    pub from: NodeId,
    pub epoch: u64,
    pub kind: RequestKind,
    pub reply: PeerReply,
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub variant: Variant,
    /// Deadline for one replica-to-replica call other than a state transfer.
    pub rpc_timeout: Duration,
    /// Deadline for a state transfer, which carries the whole state.
    pub transfer_timeout: Duration,
    /// Requests queued for one peer before further sends fail at once.
    pub queue_limit: usize,
    /// Calls to one peer in flight at once.
    pub max_in_flight: usize,
    /// Largest gRPC message sent, and accepted on the methods that carry a state or a batch
    /// (`stateTransfer`, `Replicate`); every other method accepts `limits::small_message_limit`.
    pub max_message_bytes: usize,
    /// Tail variant: the callbacks to clients, queued per client, retried until a deadline and
    /// bounded per client and in all (see `callbacks::CallbackConfig` for each bound and why).
    /// Each attempt has `rpc_timeout`.
    pub callbacks: CallbackConfig,
    /// Serve and use the batched `Replicate` stream. Off, the replica answers it UNIMPLEMENTED
    /// and sends only `proposeStateUpdate`, as an implementation without the extension does;
    /// the gRPC-layer simulator runs such replicas so the fallback stays tested.
    pub replicate_stream: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            variant: Variant::Head,
            rpc_timeout: Duration::from_secs(2),
            transfer_timeout: Duration::from_secs(60),
            queue_limit: 65_536,
            max_in_flight: 256,
            max_message_bytes: 256 * 1024 * 1024,
            callbacks: CallbackConfig::default(),
            replicate_stream: true,
        }
    }
}

struct PeerLink {
    addr: String,
    queue: mpsc::Sender<(u64, PeerRequest)>,
}

pub struct TonicNetwork {
    cfg: NetConfig,
    links: BTreeMap<NodeId, PeerLink>,
    replies: mpsc::UnboundedSender<ReplyEvent>,
    /// Head variant: the client calls waiting for their write to commit.
    waiters: HashMap<ClientToken, oneshot::Sender<WriteOutcome>>,
    /// Tail variant: the callbacks to clients.
    callbacks: Callbacks,
    connector: Arc<dyn Connect>,
    metrics: Arc<Metrics>,
}

impl TonicNetwork {
    pub fn new(cfg: NetConfig, replies: mpsc::UnboundedSender<ReplyEvent>, connector: Arc<dyn Connect>, metrics: Arc<Metrics>) -> Self {
        let callbacks = Callbacks::new(cfg.callbacks.clone(), cfg.rpc_timeout, connector.clone(), metrics.callbacks.clone());
        TonicNetwork {
            cfg,
            links: BTreeMap::new(),
            replies,
            waiters: HashMap::new(),
            callbacks,
            connector,
            metrics,
        }
    }

    /// Register the call waiting on `token`; the core completes it through `complete_client`.
    pub fn wait_for(&mut self, token: ClientToken) -> oneshot::Receiver<WriteOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(token, tx);
        rx
    }

    pub fn forget_waiter(&mut self, token: ClientToken) {
        self.waiters.remove(&token);
    }

    /// Drop the links of peers that left the view; their tasks end with their queues.
    pub fn retain_links(&mut self, members: &[Member]) {
        self.links
            .retain(|id, link| members.iter().any(|m| m.id == *id && m.addr == link.addr));
    }

    fn link(&mut self, to: &Member) -> Option<&PeerLink> {
        let stale = self.links.get(&to.id).is_some_and(|l| l.addr != to.addr);
        if stale {
            self.links.remove(&to.id);
        }
        if !self.links.contains_key(&to.id) {
            let channel = match self.connector.channel(&to.addr) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(peer = %to.addr, error = %e, "cannot build a channel to peer");
                    return None;
                }
            };
            let (queue, rx) = mpsc::channel(self.cfg.queue_limit);
            let task = LinkTask {
                peer: to.id,
                channel,
                cfg: self.cfg.clone(),
                replies: self.replies.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(task.run(rx));
            self.links.insert(
                to.id,
                PeerLink {
                    addr: to.addr.clone(),
                    queue,
                },
            );
        }
        self.links.get(&to.id)
    }
}

impl crate::core::Network for TonicNetwork {
    fn send(&mut self, to: &Member, epoch: u64, request: PeerRequest) {
        let kind = request.kind();
        let queued = match self.link(to) {
            Some(link) => link.queue.try_send((epoch, request)).is_ok(),
            None => false,
        };
        if !queued {
            self.metrics.peer_failure(PeerCall::of(kind), PeerFailure::NotSent);
            let _ = self.replies.send(ReplyEvent {
                from: to.id,
                epoch,
                kind,
                reply: PeerReply::Unreachable,
            });
        }
    }

    fn complete_client(&mut self, token: ClientToken, outcome: WriteOutcome) {
        if let Some(waiter) = self.waiters.remove(&token) {
            // The client may have given up already; nothing to do then.
            let _ = waiter.send(outcome);
        }
    }

    fn notify_client(&mut self, origin: &ClientOrigin) {
        self.callbacks.notify(&format!("{}:{}", origin.host, origin.port), origin.cxid);
    }
}

/// A peer that does not take us for a replica (TLS chain, our certificate missing or from
/// another CA) refuses every call the same way, so the chain stalls there: say so loudly.
fn warn_if_refused_as_peer(peer: NodeId, status: &tonic::Status) {
    if status.code() == tonic::Code::Unauthenticated {
        tracing::warn!(peer = format_args!("{peer:x}"), %status, "the peer refused us as a replica");
    }
}

/// A failed call's kind for `chainrep_peer_call_failures_total`.
fn failure_of(status: &tonic::Status) -> PeerFailure {
    match status.code() {
        tonic::Code::DeadlineExceeded => PeerFailure::Timeout,
        _ => PeerFailure::Error,
    }
}

/// gRPC metadata naming the session a replica-to-replica call is meant for, in lowercase hex.
/// A process that rejoined under a new session refuses calls meant for its old one.
pub const ADDRESSEE_HEADER: &str = "chainrep-session";

fn session_header(id: NodeId) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    // Hex digits are always valid ASCII metadata.
    tonic::metadata::MetadataValue::try_from(format!("{id:x}")).unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("0"))
}

fn addressed<T>(msg: T, to: NodeId, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r.metadata_mut().insert(ADDRESSEE_HEADER, session_header(to));
    r
}

/// Updates per `ReplicateBatch`: enough to amortise a message, small enough to stay far below
/// the message size limit with the longest keys.
const MAX_BATCH: usize = 512;
/// Batches sent on a replication stream and not yet acknowledged.
const STREAM_WINDOW: usize = 64;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct SentBatch {
    epoch: u64,
    last_xid: u64,
}

struct InFlight {
    batches: std::collections::VecDeque<SentBatch>,
    broken: bool,
}

/// One open `Replicate` stream to the peer. Acks come back in order, one per batch.
struct StreamLink {
    tx: mpsc::Sender<ext::ReplicateBatch>,
    window: Arc<Semaphore>,
    in_flight: Arc<std::sync::Mutex<InFlight>>,
}

impl StreamLink {
    fn is_broken(&self) -> bool {
        lock(&self.in_flight).broken
    }

    async fn send(&self, task: &LinkTask, src: NodeId, batch: Vec<(u64, crate::core::Update)>) {
        let Some((epoch, last_xid)) = batch.last().map(|(e, u)| (*e, u.xid)) else {
            return;
        };
        let report_lost = || task.report(epoch, RequestKind::Propose(last_xid), PeerReply::Unreachable);
        match self.window.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return report_lost(),
        }
        {
            let mut f = lock(&self.in_flight);
            if f.broken {
                drop(f);
                return report_lost();
            }
            f.batches.push_back(SentBatch { epoch, last_xid });
        }
        let updates = batch.iter().map(|(_, u)| convert::tail_update_to_wire(src, u)).collect();
        if self.tx.send(ext::ReplicateBatch { src, updates }).await.is_err() {
            // The reader reports everything still in flight when it sees the stream end.
            lock(&self.in_flight).broken = true;
        }
    }

    /// Wait until every batch sent is acknowledged (or the stream broke).
    async fn drain(&self, timeout: Duration) {
        let all = STREAM_WINDOW as u32;
        if let Ok(Ok(permits)) = tokio::time::timeout(timeout, self.window.acquire_many(all)).await {
            drop(permits);
        }
    }
}

struct LinkTask {
    peer: NodeId,
    channel: Channel,
    cfg: NetConfig,
    replies: mpsc::UnboundedSender<ReplyEvent>,
    metrics: Arc<Metrics>,
}

impl LinkTask {
    async fn run(self, mut queue: mpsc::Receiver<(u64, PeerRequest)>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.cfg.max_in_flight));
        let all_slots = this.cfg.max_in_flight as u32;
        let mut stream: Option<StreamLink> = None;
        // A peer that does not implement the stream (another implementation of chain.proto)
        // gets one proposeStateUpdate call per update.
        let mut classic_only = !this.cfg.replicate_stream;
        let mut carried: Option<(u64, PeerRequest)> = None;
        // Transfers to this peer that failed in a row (see `log_transfer`).
        let mut transfer_failures = 0u32;
        loop {
            let next = match carried.take() {
                Some(n) => Some(n),
                None => queue.recv().await,
            };
            let Some((epoch, request)) = next else { return };
            let kind = request.kind();
            match request {
                PeerRequest::Propose { src, update } if !classic_only => {
                    let mut batch = vec![(epoch, update)];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok((e, PeerRequest::Propose { src: s, update })) if s == src => batch.push((e, update)),
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if stream.as_ref().is_none_or(|s| s.is_broken()) {
                        match this.open_stream().await {
                            Ok(s) => stream = Some(s),
                            Err(status) if status.code() == tonic::Code::Unimplemented => {
                                tracing::info!(
                                    peer = format_args!("{:x}", this.peer),
                                    "peer has no replication stream; using proposeStateUpdate"
                                );
                                classic_only = true;
                                for (e, update) in batch {
                                    this.spawn_classic(&slots, e, PeerRequest::Propose { src, update }).await;
                                }
                                continue;
                            }
                            Err(status) => {
                                this.metrics.peer_failure(PeerCall::Replicate, failure_of(&status));
                                warn_if_refused_as_peer(this.peer, &status);
                                tracing::debug!(peer = format_args!("{:x}", this.peer), %status, "cannot open replication stream");
                                stream = None;
                                if let Some((e, u)) = batch.last() {
                                    this.report(*e, RequestKind::Propose(u.xid), PeerReply::Unreachable);
                                }
                                continue;
                            }
                        }
                    }
                    if let Some(s) = &stream {
                        s.send(&this, src, batch).await;
                    }
                }
                PeerRequest::Transfer(_) => {
                    if let Some(s) = &stream {
                        s.drain(this.cfg.transfer_timeout).await;
                    }
                    let Ok(barrier) = slots.clone().acquire_many_owned(all_slots).await else {
                        return;
                    };
                    let started = std::time::Instant::now();
                    let (reply, why) = this.call_explained(request).await;
                    this.metrics.transfer_send_seconds.observe(started.elapsed().as_secs_f64());
                    this.metrics.transfer_sent(match reply {
                        PeerReply::Accepted => TransferOutcome::Accepted,
                        PeerReply::Refused => TransferOutcome::Refused,
                        _ => TransferOutcome::Failed,
                    });
                    this.log_transfer(&reply, why, &mut transfer_failures);
                    this.report(epoch, kind, reply);
                    drop(barrier);
                }
                other => this.spawn_classic(&slots, epoch, other).await,
            }
        }
    }

    async fn spawn_classic(self: &Arc<Self>, slots: &Arc<Semaphore>, epoch: u64, request: PeerRequest) {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let task = self.clone();
        let kind = request.kind();
        tokio::spawn(async move {
            let reply = task.call(request).await;
            task.report(epoch, kind, reply);
            drop(slot);
        });
    }

    async fn open_stream(self: &Arc<Self>) -> Result<StreamLink, tonic::Status> {
        let (tx, rx) = mpsc::channel(STREAM_WINDOW);
        let mut client = ChainExtClient::new(self.channel.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(ADDRESSEE_HEADER, session_header(self.peer));
        let opened = tokio::time::timeout(self.cfg.rpc_timeout, client.replicate(request)).await;
        let mut acks = match opened {
            Ok(r) => r?.into_inner(),
            Err(_) => return Err(tonic::Status::deadline_exceeded("opening the replication stream timed out")),
        };
        let link = StreamLink {
            tx,
            window: Arc::new(Semaphore::new(STREAM_WINDOW)),
            in_flight: Arc::new(std::sync::Mutex::new(InFlight {
                batches: std::collections::VecDeque::new(),
                broken: false,
            })),
        };
        let (window, in_flight, task) = (link.window.clone(), link.in_flight.clone(), self.clone());
        tokio::spawn(async move {
            loop {
                let ack = match acks.message().await {
                    Ok(Some(ack)) => ack,
                    Ok(None) | Err(_) => break,
                };
                let Some(batch) = lock(&in_flight).batches.pop_front() else { break };
                window.add_permits(1);
                let reply = if ack.refused > 0 {
                    task.metrics.peer_failure(PeerCall::Replicate, PeerFailure::Refused);
                    PeerReply::Refused
                } else {
                    PeerReply::Accepted
                };
                task.report(batch.epoch, RequestKind::Propose(batch.last_xid), reply);
            }
            // The stream is gone: whatever it carried may or may not have arrived.
            let lost = {
                let mut f = lock(&in_flight);
                f.broken = true;
                std::mem::take(&mut f.batches)
            };
            window.close();
            if !lost.is_empty() {
                // Counted once per broken stream, not per batch it carried.
                task.metrics.peer_failure(PeerCall::Replicate, PeerFailure::Error);
            }
            for b in lost {
                task.report(b.epoch, RequestKind::Propose(b.last_xid), PeerReply::Unreachable);
            }
        });
        Ok(link)
    }

    fn report(&self, epoch: u64, kind: RequestKind, reply: PeerReply) {
        let _ = self.replies.send(ReplyEvent {
            from: self.peer,
            epoch,
            kind,
            reply,
        });
    }

    async fn call(&self, request: PeerRequest) -> PeerReply {
        self.call_explained(request).await.0
    }

    /// The reply, and for a failed call what went wrong.
    async fn call_explained(&self, request: PeerRequest) -> (PeerReply, Option<String>) {
        let timeout = match request {
            PeerRequest::Transfer(_) | PeerRequest::PullState { .. } => self.cfg.transfer_timeout,
            _ => self.cfg.rpc_timeout,
        };
        let call = PeerCall::of(request.kind());
        match tokio::time::timeout(timeout, self.call_inner(request, timeout)).await {
            Ok(Ok(reply)) => {
                if reply == PeerReply::Refused {
                    self.metrics.peer_failure(call, PeerFailure::Refused);
                }
                (reply, None)
            }
            Ok(Err(status)) => {
                self.metrics.peer_failure(call, failure_of(&status));
                warn_if_refused_as_peer(self.peer, &status);
                tracing::debug!(peer = format_args!("{:x}", self.peer), %status, "peer call failed");
                (PeerReply::Unreachable, Some(status.to_string()))
            }
            Err(_) => {
                self.metrics.peer_failure(call, PeerFailure::Timeout);
                (PeerReply::Unreachable, Some(format!("no answer within {timeout:?}")))
            }
        }
    }

    /// A successor that cannot take our state stalls the chain's writes, and the core resends
    /// the transfer for as long as it lasts (another implementation may refuse a state larger
    /// than its gRPC message limit, 4 MiB by default in grpc-java and grpcio). Say so once per
    /// streak of failures, at warn, and once when it ends. A failure or two in a row is normal
    /// while views settle: the successor may not see us as its predecessor yet.
    fn log_transfer(&self, reply: &PeerReply, why: Option<String>, failures: &mut u32) {
        const WORTH_A_WARNING: u32 = 3;
        let peer = format_args!("{:x}", self.peer);
        if *reply == PeerReply::Accepted {
            if *failures > 0 {
                tracing::info!(%peer, failed_before = *failures, "state transfer accepted");
            }
            *failures = 0;
            return;
        }
        *failures = failures.saturating_add(1);
        let why = why.unwrap_or_else(|| "refused (rc=1)".to_string());
        if *failures == WORTH_A_WARNING {
            tracing::warn!(%peer, %why, failures = *failures, "state transfers to the successor keep failing; retrying with backoff until one is taken");
        } else {
            tracing::debug!(%peer, %why, "state transfer failed");
        }
    }

    fn count_transfer_bytes(&self, bytes: usize) {
        self.metrics.transfer_sent_bytes.inc_by(bytes as u64);
    }

    fn head_client(&self) -> HeadChainReplicaClient<Channel> {
        HeadChainReplicaClient::new(self.channel.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    fn ext_client(&self) -> ChainExtClient<Channel> {
        ChainExtClient::new(self.channel.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    fn tail_client(&self) -> TailChainReplicaClient<Channel> {
        TailChainReplicaClient::new(self.channel.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    async fn call_inner(&self, request: PeerRequest, timeout: Duration) -> Result<PeerReply, tonic::Status> {
        let peer = self.peer;
        let rc = |rc: u32| if rc == 0 { PeerReply::Accepted } else { PeerReply::Refused };
        let head = self.cfg.variant == Variant::Head;
        Ok(match request {
            PeerRequest::Propose { src, update } if head => rc(self
                .head_client()
                .propose_state_update(addressed(convert::head_update_to_wire(src, &update), peer, timeout))
                .await?
                .into_inner()
                .rc),
            PeerRequest::Propose { src, update } => rc(self
                .tail_client()
                .propose_state_update(addressed(convert::tail_update_to_wire(src, &update), peer, timeout))
                .await?
                .into_inner()
                .rc),
            PeerRequest::Transfer(t) if t.base.is_some() => {
                let base = t.base.unwrap_or_default();
                let wire = convert::delta_transfer_to_wire(&t, base);
                self.count_transfer_bytes(prost::Message::encoded_len(&wire));
                rc(self
                    .ext_client()
                    .delta_transfer(addressed(wire, peer, timeout))
                    .await?
                    .into_inner()
                    .rc)
            }
            PeerRequest::Transfer(t) if head => {
                let wire = convert::head_transfer_to_wire(&t);
                self.count_transfer_bytes(prost::Message::encoded_len(&wire));
                rc(self
                    .head_client()
                    .state_transfer(addressed(wire, peer, timeout))
                    .await?
                    .into_inner()
                    .rc)
            }
            PeerRequest::Transfer(t) => {
                let wire = convert::tail_transfer_to_wire(&t);
                self.count_transfer_bytes(prost::Message::encoded_len(&wire));
                rc(self
                    .tail_client()
                    .state_transfer(addressed(wire, peer, timeout))
                    .await?
                    .into_inner()
                    .rc)
            }
            PeerRequest::XidProcessed(xid) => rc(self
                .head_client()
                .xid_processed(addressed(adb::XidProcessedRequest { xid }, peer, timeout))
                .await?
                .into_inner()
                .rc),
            PeerRequest::GetLatestXid => {
                let r = if head {
                    self.head_client()
                        .get_latest_xid(addressed(adb::LatestXidRequest {}, peer, timeout))
                        .await?
                        .into_inner()
                } else {
                    self.tail_client()
                        .get_latest_xid(addressed(adb::LatestXidRequest {}, peer, timeout))
                        .await?
                        .into_inner()
                };
                PeerReply::LatestXid((r.rc == 0).then_some(r.xid))
            }
            PeerRequest::Held => match self.ext_client().held(addressed(ext::HeldRequest {}, peer, timeout)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let digest = convert::digest_from_wire(&r.digest);
                    match r.rc {
                        0 => PeerReply::Held(if r.has { digest.map(|d| (r.xid, d)) } else { None }),
                        _ => PeerReply::Refused,
                    }
                }
                // Another implementation holds nothing we can build on: it gets the whole
                // state, the classic way.
                Err(status) if status.code() == tonic::Code::Unimplemented => PeerReply::Held(None),
                Err(status) => return Err(status),
            },
            PeerRequest::PullState { src, stateless, retained } => {
                let r = self
                    .ext_client()
                    .pull_state(addressed(ext::PullStateRequest { src, stateless, retained }, peer, timeout))
                    .await?
                    .into_inner();
                PeerReply::Pulled(match (r.rc, r.state) {
                    (0, Some(state)) => PullAnswer::State(convert::tail_transfer_from_wire(state)),
                    (2, _) if r.has_retained => PullAnswer::Retained(RetainedMark {
                        view_version: r.retained_view_version,
                        xid: r.retained_xid,
                    }),
                    (2, _) => PullAnswer::NoState,
                    _ => PullAnswer::NotNow,
                })
            }
        })
    }
}
