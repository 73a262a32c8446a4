//! gRPC services backed by the core: chain.proto's `HeadChainReplica` and `TailChainReplica`,
//! and our own `chainrep.ext.ChainExt`. Each call locks the core only for the synchronous
//! step; waiting for a write to commit happens outside the lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert;
use super::metrics::{Method, Outcome};
use super::network::ADDRESSEE_HEADER;
use super::shared::Shared;
use crate::core::{
    ClientOrigin, NodeId, PeerReply, PeerRequest, PullAnswer, ReadRejected, WriteAccepted, WriteOp, WriteOutcome, WriteRejected,
};
use crate::pb::adb;
use crate::pb::chainrep::ext;
use crate::status::nothing_applied;

/// Updates and transfers held at once while the membership is listed again (see
/// `ChainService::serve_update_or_transfer`); more are refused at once. One is the usual case: a new
/// predecessor's transfer, and the updates it sends right behind it.
const MAX_HELD: usize = 256;
/// How long a held request waits for a fresh listing. A listing takes a few ZooKeeper round
/// trips; this is far more, and far less than the deadlines other implementations put on
/// their calls.
const HOLD_LIMIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ChainService {
    shared: Arc<Shared>,
    replicate_stream: bool,
    peer_certificates_required: bool,
    /// Requests waiting for a fresh listing now, and the lane that keeps them, and any update
    /// or transfer arriving meanwhile, in arrival order.
    held: Arc<AtomicUsize>,
    hold_lane: Arc<tokio::sync::Mutex<()>>,
}

impl ChainService {
    pub fn new(shared: Arc<Shared>) -> Self {
        ChainService {
            shared,
            replicate_stream: true,
            peer_certificates_required: false,
            held: Arc::new(AtomicUsize::new(0)),
            hold_lane: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// `proposeStateUpdate` or `stateTransfer` from `src`, which our view may not show as our
    /// predecessor yet: a predecessor sees us in its listing when we register, which may be
    /// before our own first listing arrives, and other implementations send their one transfer
    /// right then and never again. Refusing it would leave us without state for good. So when
    /// the core says the refusal could come from a stale view, we list the members again and
    /// decide on the fresh view. Requests from `src` that arrive meanwhile queue behind, so a
    /// transfer is still installed before the updates that follow it.
    async fn serve_update_or_transfer(
        &self,
        to: Option<NodeId>,
        src: NodeId,
        request: PeerRequest,
    ) -> Result<Response<adb::ChainResponse>, Status> {
        let stale = self.shared.with_core(|core| core.view_may_be_stale_for(src));
        if !stale && self.held.load(Ordering::Acquire) == 0 {
            return self.peer_rc(to, request);
        }
        if self.held.fetch_add(1, Ordering::AcqRel) >= MAX_HELD {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return self.peer_rc(to, request);
        }
        let lane = self.hold_lane.lock().await;
        // Earlier requests in the lane may have brought the fresh view already.
        if self.shared.with_core(|core| core.view_may_be_stale_for(src)) && !self.shared.fresh_listing(HOLD_LIMIT).await {
            tracing::debug!(
                src = format_args!("{src:x}"),
                "no fresh membership listing in time; deciding on the view we have"
            );
        }
        let reply = self.peer_rc(to, request);
        drop(lane);
        self.held.fetch_sub(1, Ordering::AcqRel);
        reply
    }

    /// Refuse replica-to-replica calls from callers without a verified client certificate.
    /// Only meaningful behind a TLS server whose client CA is the chain's: the TLS layer has
    /// already verified any certificate presented, so presenting one is what makes a peer.
    pub fn with_peer_certificates_required(self) -> Self {
        ChainService {
            peer_certificates_required: true,
            ..self
        }
    }

    /// Guards every method that changes what a replica holds or acknowledges on another
    /// replica's word (`proposeStateUpdate`, `stateTransfer`, `xidProcessed`, `Replicate`) or
    /// hands out the whole state (`PullState`). Session ids are public in ZooKeeper, so the
    /// `src` a message names proves nothing. Client methods, `getLatestXid` (read-only: the
    /// tail's last xid, which `chainctl status` shows) and `Describe` stay open.
    fn check_peer<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        if !self.peer_certificates_required || request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(());
        }
        tracing::warn!(
            caller = ?request.remote_addr(),
            method,
            "refused a replica-to-replica call without a peer certificate"
        );
        Err(Status::unauthenticated(format!(
            "{method} is a replica-to-replica call: a peer certificate is required (a client certificate signed by the chain's CA, as chain-replica --tls-cert presents)"
        )))
    }

    /// Answer `Replicate` UNIMPLEMENTED, so predecessors fall back to `proposeStateUpdate`.
    pub fn without_replicate_stream(self) -> Self {
        ChainService {
            replicate_stream: false,
            ..self
        }
    }

    fn peer(&self, to: Option<NodeId>, request: PeerRequest) -> PeerReply {
        self.shared.with_core(|core| core.on_addressed_request(to, request))
    }

    fn peer_rc(&self, to: Option<NodeId>, request: PeerRequest) -> Result<Response<adb::ChainResponse>, Status> {
        let rc = if self.peer(to, request) == PeerReply::Accepted { 0 } else { 1 };
        Ok(Response::new(adb::ChainResponse { rc }))
    }

    fn latest_xid(&self, to: Option<NodeId>) -> Result<Response<adb::LatestXidResponse>, Status> {
        Ok(Response::new(match self.peer(to, PeerRequest::GetLatestXid) {
            PeerReply::LatestXid(Some(xid)) => adb::LatestXidResponse { rc: 0, xid },
            _ => adb::LatestXidResponse { rc: 1, xid: 0 },
        }))
    }

    /// A client write: `rc = 0` once committed (head variant) or accepted (tail variant),
    /// counted in the metrics by how it ended.
    async fn write(&self, method: Method, op: WriteOp, origin: Option<ClientOrigin>) -> Result<Response<adb::HeadResponse>, Status> {
        let started = std::time::Instant::now();
        let (outcome, answer) = self.write_inner(op, origin).await;
        let metrics = &self.shared.metrics;
        metrics.request(method, outcome);
        if outcome == Outcome::Ok {
            metrics.write_seconds.observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    async fn write_inner(&self, op: WriteOp, origin: Option<ClientOrigin>) -> (Outcome, Result<Response<adb::HeadResponse>, Status>) {
        let token = self.shared.next_token();
        let accepted = self.shared.with_core(|core| {
            let waiter = core.net_mut().wait_for(token);
            let result = core.client_write(token, op, origin);
            if !matches!(result, Ok(WriteAccepted::Pending(_))) {
                core.net_mut().forget_waiter(token);
            }
            result.map(|a| (a, waiter))
        });
        let ok = || (Outcome::Ok, Ok(Response::new(adb::HeadResponse { rc: 0 })));
        match accepted {
            Ok((WriteAccepted::Forwarded(_), _)) => ok(),
            Ok((WriteAccepted::Pending(xid), waiter)) => match waiter.await {
                Ok(WriteOutcome::Committed) => ok(),
                Ok(WriteOutcome::Unknown(why)) => (
                    Outcome::Unknown,
                    Err(Status::unknown(format!("outcome of write xid {xid} unknown: {why}"))),
                ),
                Err(_) => (
                    Outcome::Unknown,
                    Err(Status::unknown(format!(
                        "outcome of write xid {xid} unknown: the replica stopped tracking it"
                    ))),
                ),
            },
            Err(WriteRejected::NotHead) => (Outcome::NotHead, Ok(Response::new(adb::HeadResponse { rc: 1 }))),
            Err(e) => (write_rejection_outcome(&e), Err(write_rejection_status(&e))),
        }
    }

    fn read(&self, key: &str) -> Result<Response<adb::GetResponse>, Status> {
        let started = std::time::Instant::now();
        let (outcome, answer) = match self.shared.with_core(|core| core.client_read(key)) {
            Ok(value) => (Outcome::Ok, Ok(Response::new(adb::GetResponse { rc: 0, value }))),
            Err(ReadRejected::NotTail) => (Outcome::NotTail, Ok(Response::new(adb::GetResponse { rc: 1, value: 0 }))),
            Err(e @ ReadRejected::InvalidKey(_)) => (Outcome::Invalid, Err(Status::invalid_argument(e.to_string()))),
            Err(e @ ReadRejected::Unavailable(_)) => (Outcome::Unavailable, Err(Status::unavailable(e.to_string()))),
        };
        let metrics = &self.shared.metrics;
        metrics.request(Method::Get, outcome);
        if outcome == Outcome::Ok {
            metrics.read_seconds.observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    /// A `stateTransfer` from the predecessor, counted by how it ended and by its size.
    async fn serve_transfer(
        &self,
        to: Option<NodeId>,
        bytes: usize,
        t: crate::core::Transfer,
    ) -> Result<Response<adb::ChainResponse>, Status> {
        let metrics = &self.shared.metrics;
        metrics.transfer_received_bytes.inc_by(bytes as u64);
        let answer = self.serve_update_or_transfer(to, t.src, PeerRequest::Transfer(t)).await;
        metrics.transfer_received(matches!(&answer, Ok(r) if r.get_ref().rc == 0));
        answer
    }

    /// `callback_origin`, counting a bad address as an invalid request of `method`.
    fn origin(&self, method: Method, host: String, port: i32, cxid: i32) -> Result<ClientOrigin, Status> {
        callback_origin(host, port, cxid).inspect_err(|_| self.shared.metrics.request(method, Outcome::Invalid))
    }
}

/// The session a replica-to-replica call is addressed to: `None` from senders that do not say
/// (other implementations); a header that is not hex addresses nobody.
fn addressee<T>(request: &Request<T>) -> Option<NodeId> {
    let value = request.metadata().get(ADDRESSEE_HEADER)?;
    Some(value.to_str().ok().and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0))
}

/// How a refused write is counted in `chainrep_client_requests_total`.
fn write_rejection_outcome(e: &WriteRejected) -> Outcome {
    match e {
        WriteRejected::NotHead => Outcome::NotHead,
        WriteRejected::InvalidKey(_) => Outcome::Invalid,
        WriteRejected::OutOfRange { .. } => Outcome::OutOfRange,
        WriteRejected::Busy(_) => Outcome::Overloaded,
        WriteRejected::Unavailable(_) => Outcome::Unavailable,
    }
}

/// Every status here means nothing was applied, and says so (`status::nothing_applied`), so a
/// client may safely retry the ones that are transient (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`).
pub fn write_rejection_status(e: &WriteRejected) -> Status {
    nothing_applied(match e {
        WriteRejected::NotHead => Status::failed_precondition(e.to_string()),
        WriteRejected::InvalidKey(_) => Status::invalid_argument(e.to_string()),
        WriteRejected::OutOfRange { .. } => Status::out_of_range(e.to_string()),
        WriteRejected::Busy(_) => Status::resource_exhausted(e.to_string()),
        WriteRejected::Unavailable(_) => Status::unavailable(e.to_string()),
    })
}

#[tonic::async_trait]
impl adb::head_chain_replica_server::HeadChainReplica for ChainService {
    async fn propose_state_update(&self, request: Request<adb::HeadStateUpdateRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "proposeStateUpdate")?;
        let to = addressee(&request);
        let (src, update) = convert::head_update_from_wire(request.into_inner());
        self.serve_update_or_transfer(to, src, PeerRequest::Propose { src, update }).await
    }

    async fn get_latest_xid(&self, request: Request<adb::LatestXidRequest>) -> Result<Response<adb::LatestXidResponse>, Status> {
        self.latest_xid(addressee(&request))
    }

    async fn state_transfer(&self, request: Request<adb::HeadStateTransferRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "stateTransfer")?;
        let to = addressee(&request);
        let bytes = prost::Message::encoded_len(request.get_ref());
        let t = convert::head_transfer_from_wire(request.into_inner());
        self.serve_transfer(to, bytes, t).await
    }

    async fn increment(&self, request: Request<adb::IncrementRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        let r = request.into_inner();
        self.write(
            Method::Increment,
            WriteOp::Inc {
                key: r.key,
                delta: r.incr_value,
            },
            None,
        )
        .await
    }

    async fn delete(&self, request: Request<adb::DeleteRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        self.write(
            Method::Delete,
            WriteOp::Del {
                key: request.into_inner().key,
            },
            None,
        )
        .await
    }

    async fn get(&self, request: Request<adb::GetRequest>) -> Result<Response<adb::GetResponse>, Status> {
        self.read(&request.into_inner().key)
    }

    async fn xid_processed(&self, request: Request<adb::XidProcessedRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "xidProcessed")?;
        let to = addressee(&request);
        self.peer_rc(to, PeerRequest::XidProcessed(request.into_inner().xid))
    }
}

#[tonic::async_trait]
impl adb::tail_chain_replica_server::TailChainReplica for ChainService {
    async fn propose_state_update(&self, request: Request<adb::TailStateUpdateRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "proposeStateUpdate")?;
        let to = addressee(&request);
        let (src, update) = convert::tail_update_from_wire(request.into_inner());
        self.serve_update_or_transfer(to, src, PeerRequest::Propose { src, update }).await
    }

    async fn get_latest_xid(&self, request: Request<adb::LatestXidRequest>) -> Result<Response<adb::LatestXidResponse>, Status> {
        self.latest_xid(addressee(&request))
    }

    async fn state_transfer(&self, request: Request<adb::TailStateTransferRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "stateTransfer")?;
        let to = addressee(&request);
        let bytes = prost::Message::encoded_len(request.get_ref());
        let t = convert::tail_transfer_from_wire(request.into_inner());
        self.serve_transfer(to, bytes, t).await
    }

    async fn increment(&self, request: Request<adb::TailIncrementRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        let r = request.into_inner();
        let origin = self.origin(Method::Increment, r.host, r.port, r.cxid)?;
        self.write(
            Method::Increment,
            WriteOp::Inc {
                key: r.key,
                delta: r.incr_value,
            },
            Some(origin),
        )
        .await
    }

    async fn delete(&self, request: Request<adb::TailDeleteRequest>) -> Result<Response<adb::HeadResponse>, Status> {
        let r = request.into_inner();
        let origin = self.origin(Method::Delete, r.host, r.port, r.cxid)?;
        self.write(Method::Delete, WriteOp::Del { key: r.key }, Some(origin)).await
    }

    async fn get(&self, request: Request<adb::GetRequest>) -> Result<Response<adb::GetResponse>, Status> {
        self.read(&request.into_inner().key)
    }
}

/// The tail variant cannot tell a client its write is done without a callback address.
fn callback_origin(host: String, port: i32, cxid: i32) -> Result<ClientOrigin, Status> {
    if host.is_empty() || !(1..=65535).contains(&port) {
        return Err(nothing_applied(Status::invalid_argument(format!(
            "the client callback address {host:?}:{port} is not a valid host:port"
        ))));
    }
    Ok(ClientOrigin { host, port, cxid })
}

#[tonic::async_trait]
impl ext::chain_ext_server::ChainExt for ChainService {
    type ReplicateStream = tokio_stream::wrappers::ReceiverStream<Result<ext::ReplicateAck, Status>>;

    async fn replicate(&self, request: Request<tonic::Streaming<ext::ReplicateBatch>>) -> Result<Response<Self::ReplicateStream>, Status> {
        self.check_peer(&request, "Replicate")?;
        if !self.replicate_stream {
            return Err(Status::unimplemented("this replica speaks only the classic proposeStateUpdate"));
        }
        let to = addressee(&request);
        let mut batches = request.into_inner();
        // Acks are small and the sender bounds its unacknowledged batches; this only smooths.
        let (acks, rx) = tokio::sync::mpsc::channel(64);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let batch = match batches.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "replication stream from predecessor ended");
                        return;
                    }
                };
                let src = batch.src;
                // One lock for the whole batch: this is what makes the stream cheaper than
                // one proposeStateUpdate call per update.
                let (accepted, refused) = shared.with_core(|core| {
                    let mut counts = (0u32, 0u32);
                    for u in batch.updates {
                        let (_, update) = convert::tail_update_from_wire(u);
                        if core.on_addressed_request(to, PeerRequest::Propose { src, update }) == PeerReply::Accepted {
                            counts.0 += 1;
                        } else {
                            counts.1 += 1;
                        }
                    }
                    counts
                });
                if acks.send(Ok(ext::ReplicateAck { accepted, refused })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn pull_state(&self, request: Request<ext::PullStateRequest>) -> Result<Response<ext::PullStateResponse>, Status> {
        self.check_peer(&request, "PullState")?;
        let to = addressee(&request);
        let r = request.into_inner();
        let answer = self.peer(
            to,
            PeerRequest::PullState {
                src: r.src,
                stateless: r.stateless,
                retained: r.retained,
            },
        );
        Ok(Response::new(match answer {
            PeerReply::Pulled(PullAnswer::State(t)) => ext::PullStateResponse {
                rc: 0,
                state: Some(convert::tail_transfer_to_wire(&t)),
                ..Default::default()
            },
            PeerReply::Pulled(PullAnswer::NoState) => ext::PullStateResponse {
                rc: 2,
                ..Default::default()
            },
            PeerReply::Pulled(PullAnswer::Retained(mark)) => ext::PullStateResponse {
                rc: 2,
                has_retained: true,
                retained_view_version: mark.view_version,
                retained_xid: mark.xid,
                ..Default::default()
            },
            _ => ext::PullStateResponse {
                rc: 1,
                ..Default::default()
            },
        }))
    }

    async fn held(&self, request: Request<ext::HeldRequest>) -> Result<Response<ext::HeldResponse>, Status> {
        self.check_peer(&request, "Held")?;
        let to = addressee(&request);
        Ok(Response::new(match self.peer(to, PeerRequest::Held) {
            PeerReply::Held(Some((xid, digest))) => ext::HeldResponse {
                has: true,
                xid,
                digest: convert::digest_to_wire(digest),
                rc: 0,
            },
            PeerReply::Held(None) => ext::HeldResponse::default(),
            _ => ext::HeldResponse {
                rc: 1,
                ..Default::default()
            },
        }))
    }

    async fn delta_transfer(&self, request: Request<ext::DeltaTransferRequest>) -> Result<Response<adb::ChainResponse>, Status> {
        self.check_peer(&request, "DeltaTransfer")?;
        let to = addressee(&request);
        let bytes = prost::Message::encoded_len(request.get_ref());
        let Some(t) = convert::delta_transfer_from_wire(request.into_inner()) else {
            return Err(Status::invalid_argument(
                "DeltaTransfer without its transfer or with a digest that is not 16 bytes",
            ));
        };
        self.serve_transfer(to, bytes, t).await
    }

    async fn describe(&self, _: Request<ext::DescribeRequest>) -> Result<Response<ext::DescribeResponse>, Status> {
        let d = self.shared.with_core(|core| core.describe());
        Ok(Response::new(ext::DescribeResponse {
            session_id: d.session_id.unwrap_or(0),
            role: d.role.as_str().to_string(),
            synced: d.holds_state,
            last_applied_xid: d.last_applied,
            sent_len: d.sent_len as u64,
            pending_clients: d.pending_len as u64,
            keys: d.keys as u64,
            metrics_url: self.shared.metrics_url.get().cloned().unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::says_nothing_applied;

    #[test]
    fn every_write_rejection_says_nothing_was_applied() {
        let all = [
            WriteRejected::NotHead,
            WriteRejected::InvalidKey(crate::core::KeyError::Empty),
            WriteRejected::OutOfRange {
                key: "k".into(),
                current: i32::MAX,
                delta: 1,
            },
            WriteRejected::Busy("9 writes wait for the tail".into()),
            WriteRejected::Unavailable("it is still receiving the chain's state"),
        ];
        for e in all {
            let s = write_rejection_status(&e);
            assert!(says_nothing_applied(&s), "{e:?}");
            assert_eq!(s.message(), e.to_string());
        }
        let s = write_rejection_status(&WriteRejected::Unavailable("x"));
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Unavailable, "the head cannot take writes now: x")
        );
        assert!(says_nothing_applied(&callback_origin(String::new(), 0, 1).unwrap_err()));
    }
}
