//! The client a user needs: follows head and tail through ZooKeeper, retries only what is
//! safe to retry, and says so when the outcome of a write is unknown.
//!
//! Both variants of chain.proto are spoken. In the head variant the head's answer is the
//! acknowledgement. In the tail variant the head's `rc = 0` only means "accepted": the write
//! is acknowledged when the tail calls `TailClient.cxidProcessed(cxid)` on this client's own
//! gRPC server, which the client runs for as long as it is open.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::core::{Member, NodeId, Variant};
use crate::pb::adb;
use crate::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use crate::pb::adb::tail_chain_replica_client::TailChainReplicaClient;
use crate::pb::adb::tail_client_server::{TailClient, TailClientServer};
use crate::pb::chainrep::ext;
use crate::pb::chainrep::ext::chain_ext_client::ChainExtClient;
use crate::runtime::network::Connect;
use crate::runtime::tls::TlsConfig;
use crate::runtime::zk::{ZkConfig, ZkWatcher};
use crate::status::says_nothing_applied;

/// `GetResponse.rc` for "key doesn't exist" (chain.proto's own comment). Our replicas never
/// answer it (a missing key reads 0 with `rc = 0`), but other implementations do.
pub const GET_RC_NO_SUCH_KEY: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The chain refused the request; nothing was applied.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rejected(Status),
    /// We could not find out whether the write took effect. Increments are not idempotent,
    /// so it is not retried: read the key to find out.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// No replica answered in time; nothing is known to have been applied.
    #[error("no answer from the chain within {0:?}: {1}")]
    Timeout(Duration, String),
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::OutOfRange => "out of range",
        Code::ResourceExhausted => "overloaded",
        Code::Unavailable => "unavailable",
        Code::Unimplemented => "unimplemented",
        _ => "rejected",
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Total time one operation may take, retries included. In the tail variant this includes
    /// waiting for the tail's callback.
    pub op_timeout: Duration,
    /// Deadline of one RPC.
    pub rpc_timeout: Duration,
    pub variant: Variant,
    /// Tail variant: where the client's `TailClient` callback server listens. Port 0 picks a
    /// free one.
    pub callback_listen: SocketAddr,
    /// Tail variant: the `host:port` sent to the head for the tail to dial back; the bound
    /// address by default. Required when `callback_listen` is a wildcard address, and the way
    /// to name a forwarded port.
    pub callback_advertise: Option<String>,
    /// Tail variant: writes that may wait for their callback at once. Past it a write is
    /// refused before it is sent (`RESOURCE_EXHAUSTED`), so a stalled tail cannot grow the
    /// client's memory without bound.
    pub max_waiting_writes: usize,
    /// `Some` for a TLS chain: replicas must present a certificate from its CA. A certificate
    /// of our own, if loaded, is presented to the replicas and, in the tail variant, is the
    /// callback server's, which then takes calls only from holders of the CA's certificates.
    pub tls: Option<TlsConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            op_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            variant: Variant::Head,
            callback_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            callback_advertise: None,
            max_waiting_writes: 65_536,
            tls: None,
        }
    }
}

/// One replica as `chainctl status` shows it.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member: Member,
    pub position: &'static str,
    /// `None` when the replica did not answer `describe` (down, or another implementation).
    pub described: Option<ext::DescribeResponse>,
    pub latest_xid: Option<u64>,
}

pub struct ChainClient {
    /// `None` when the membership comes from elsewhere (`with_membership`).
    watcher: Option<ZkWatcher>,
    members: watch::Receiver<Vec<Member>>,
    channels: Mutex<HashMap<String, Channel>>,
    opts: ClientOptions,
    /// The tail variant's callback server; `None` in the head variant.
    callbacks: Option<CallbackServer>,
    /// How channels to replicas are made; `None`: TCP with the settings in `channel`.
    connector: Option<Arc<dyn Connect>>,
}

/// The request never left this process: the connection it needed could not be made. tonic
/// wraps every error of that phase (DNS, TCP connect, the TLS handshake, where a replica's
/// certificate we do not trust is refused, and a custom connector's dial) in
/// `tonic::ConnectError` and keeps it as the status's source; errors on a connection that was
/// made (resets, h2 errors, deadlines) are never under one. So the request cannot have been
/// applied and may be sent again.
pub fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// What one failed write attempt at the head tells us.
#[derive(Debug)]
pub enum WriteFailure {
    /// Nothing was applied; another attempt (after finding the head again) is safe.
    Retry(String),
    /// The chain refused the write for good; nothing was applied.
    Rejected(Status),
    /// The request may or may not have been applied.
    Ambiguous(String),
}

/// A replica answers UNIMPLEMENTED for the other variant's service: the request was not
/// applied, and retrying cannot help, but the bare status does not say why.
fn wrong_variant(addr: &str, variant: Variant, s: &Status) -> Status {
    let (service, flag) = match variant {
        Variant::Head => ("HeadChainReplica", "head"),
        Variant::Tail => ("TailChainReplica", "tail"),
    };
    Status::unimplemented(format!(
        "{addr} does not serve {service}: is the chain not the {flag} variant? ({})",
        s.message()
    ))
}

/// A plaintext client that meets a TLS-only replica sees its connection fail in whichever way
/// comes first: h2 reading the server's TLS alert as an oversized frame (`INTERNAL`), a reset
/// (`UNKNOWN`) or a connection closed under the call (`CANCELLED`); the last two look like a
/// replica that died mid-call. So after such a transport failure, a plaintext client asks the
/// replica directly (`speaks_tls_only`). A TLS-only server cannot have read a plaintext
/// request, so nothing was applied, and retrying cannot help: the client is set up wrong.
/// `plaintext_tcp`: the client dials plain TCP itself (no TLS, no custom connector, whose
/// addresses need not be TCP at all).
async fn plaintext_to_tls(addr: &str, plaintext_tcp: bool, s: &Status, deadline: Instant) -> Option<Status> {
    let transport_failure = std::error::Error::source(s).is_some() && matches!(s.code(), Code::Internal | Code::Unknown | Code::Cancelled);
    if !plaintext_tcp || !transport_failure || !speaks_tls_only(addr, deadline).await {
        return None;
    }
    Some(Status::unavailable(format!(
        "{addr} did not answer in plaintext HTTP/2 ({}): it serves TLS only; give the chain's CA (chainctl --tls-ca, ClientOptions::tls)",
        s.message()
    )))
}

/// Sends the HTTP/2 connection preface on a fresh connection: a TLS server takes it for a
/// broken ClientHello and answers with a TLS alert record (content type 21, version 3.x).
async fn speaks_tls_only(addr: &str, deadline: Instant) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.ok()?;
        let mut head = [0u8; 2];
        conn.read_exact(&mut head).await.ok()?;
        Some(head == [21, 3])
    };
    let until = (Instant::now() + Duration::from_millis(500)).min(deadline);
    matches!(tokio::time::timeout_at(until, probe).await, Ok(Some(true)))
}

/// The one rule for a failed write attempt at the head `addr` (both variants; the simulator's
/// clients use it too). What the replica refused before applying anything says so
/// (`status::says_nothing_applied`); other implementations' replicas do not, so their
/// `UNAVAILABLE` is ambiguous, while the codes that only ever mean a refusal are final.
pub fn classify_write_failure(addr: &str, variant: Variant, s: Status) -> WriteFailure {
    if s.code() == Code::Unimplemented {
        return WriteFailure::Rejected(wrong_variant(addr, variant, &s));
    }
    let nothing_applied = says_nothing_applied(&s);
    if s.code() == Code::Unavailable && (nothing_applied || never_sent(&s)) {
        return WriteFailure::Retry(format!("{addr}: {}", s.message()));
    }
    if nothing_applied
        || matches!(
            s.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted | Code::FailedPrecondition
        )
    {
        return WriteFailure::Rejected(s);
    }
    WriteFailure::Ambiguous(format!("{addr}: {} ({:?})", s.message(), s.code()))
}

/// A write as the tail variant's head receives it.
enum TailWrite<'a> {
    Inc { key: &'a str, delta: i32 },
    Del { key: &'a str },
}

impl ChainClient {
    pub async fn connect(zk: &ZkConfig, opts: ClientOptions) -> anyhow::Result<Self> {
        let watcher = ZkWatcher::connect(zk, opts.op_timeout).await?;
        let callbacks = match opts.variant {
            Variant::Head => None,
            Variant::Tail => match CallbackServer::start(&opts).await {
                Ok(server) => Some(server),
                Err(e) => {
                    // Do not leave the ZooKeeper session open behind a failed connect.
                    watcher.close().await;
                    return Err(e);
                }
            },
        };
        let members = watcher.members();
        Ok(ChainClient {
            watcher: Some(watcher),
            members,
            channels: Mutex::new(HashMap::new()),
            opts,
            callbacks,
            connector: None,
        })
    }

    /// A client on any transport and membership source: the simulator runs this same client
    /// over in-memory pipes, with the membership its simulated coordinator publishes.
    pub fn with_membership(members: watch::Receiver<Vec<Member>>, connector: Arc<dyn Connect>, opts: ClientOptions) -> Self {
        ChainClient {
            watcher: None,
            members,
            channels: Mutex::new(HashMap::new()),
            opts,
            callbacks: None,
            connector: Some(connector),
        }
    }

    /// Closes the ZooKeeper session and, in the tail variant, stops the callback server: writes
    /// still waiting for their callback can no longer learn their outcome.
    pub async fn close(self) {
        if let Some(callbacks) = self.callbacks {
            callbacks.stop().await;
        }
        if let Some(watcher) = self.watcher {
            watcher.close().await;
        }
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
    }

    pub fn variant(&self) -> Variant {
        self.opts.variant
    }

    /// Tail variant: the `host:port` the tail calls back (what the head is told).
    pub fn callback_addr(&self) -> Option<String> {
        self.callbacks
            .as_ref()
            .map(|c| format!("{}:{}", c.advertise_host, c.advertise_port))
    }

    /// Tail variant: the address the callback server is bound to.
    pub fn callback_local_addr(&self) -> Option<SocketAddr> {
        self.callbacks.as_ref().map(|c| c.local_addr)
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        if let Some(connector) = &self.connector {
            let channel = connector.channel(addr).map_err(Status::invalid_argument)?;
            channels.insert(addr.to_string(), channel.clone());
            return Ok(channel);
        }
        let endpoint = match &self.opts.tls {
            Some(tls) => tls.endpoint(addr).map_err(Status::invalid_argument)?,
            None => Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| Status::invalid_argument(format!("bad replica address {addr:?}: {e}")))?,
        }
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn plaintext_tcp(&self) -> bool {
        self.opts.tls.is_none() && self.connector.is_none()
    }

    fn head_client(&self, addr: &str) -> Result<HeadChainReplicaClient<Channel>, Status> {
        Ok(HeadChainReplicaClient::new(self.channel(addr)?))
    }

    fn tail_variant_client(&self, addr: &str) -> Result<TailChainReplicaClient<Channel>, Status> {
        Ok(TailChainReplicaClient::new(self.channel(addr)?))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.opts.rpc_timeout);
        r
    }

    /// Wait a little for the membership to change (or just a little) before retrying.
    async fn pause(&self, deadline: Instant) {
        let mut members = self.members.clone();
        // A clone starts from `self.members`' seen version, which nothing ever advances: without
        // this, after the first membership change `changed()` returns at once, every time, and
        // the retry loops spin without pausing.
        members.mark_unchanged();
        let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(until, members.changed()).await;
    }

    /// Returns once no member has session `id`; never, while one does.
    async fn left_chain(&self, id: NodeId) {
        let mut members = self.members.clone();
        members.mark_unchanged();
        while members.borrow().iter().any(|m| m.id == id) {
            if members.changed().await.is_err() {
                // Nobody publishes membership any more: it will not change.
                std::future::pending::<()>().await;
            }
        }
    }

    pub async fn inc(&self, key: &str, delta: i32) -> Result<(), ClientError> {
        match self.opts.variant {
            Variant::Tail => self.write_tail(TailWrite::Inc { key, delta }).await,
            Variant::Head => {
                self.write(|mut client, this| {
                    let req = this.request(adb::IncrementRequest {
                        key: key.to_string(),
                        incr_value: delta,
                    });
                    async move { client.increment(req).await }
                })
                .await
            }
        }
    }

    pub async fn del(&self, key: &str) -> Result<(), ClientError> {
        match self.opts.variant {
            Variant::Tail => self.write_tail(TailWrite::Del { key }).await,
            Variant::Head => {
                self.write(|mut client, this| {
                    let req = this.request(adb::DeleteRequest { key: key.to_string() });
                    async move { client.delete(req).await }
                })
                .await
            }
        }
    }

    async fn write<F, Fut>(&self, call: F) -> Result<(), ClientError>
    where
        F: Fn(HeadChainReplicaClient<Channel>, &Self) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<adb::HeadResponse>, Status>>,
    {
        let deadline = Instant::now() + self.opts.op_timeout;
        let mut last = String::from("no replica registered in ZooKeeper");
        while Instant::now() < deadline {
            let Some(head) = self.members.borrow().first().cloned() else {
                self.pause(deadline).await;
                continue;
            };
            let client = self.head_client(&head.addr).map_err(ClientError::Rejected)?;
            // A head that leaves the chain while it holds the write may never answer (another
            // implementation, removed while alive, waits for a tail that no longer reports to
            // it): the write's fate is unknown, and waiting out the RPC deadline would only
            // delay the next write, which the new head can take at once.
            let answer = tokio::select! {
                answer = call(client, self) => answer,
                () = self.left_chain(head.id) => {
                    return Err(ClientError::Unknown(format!(
                        "{} left the chain while the write was in flight: it may or may not have been applied",
                        head.addr
                    )))
                }
            };
            let result = match answer {
                Err(s) => match plaintext_to_tls(&head.addr, self.plaintext_tcp(), &s, deadline).await {
                    Some(refused) => return Err(ClientError::Rejected(refused)),
                    None => Err(s),
                },
                answer => answer,
            };
            match result {
                Ok(r) if r.get_ref().rc == 0 => return Ok(()),
                // Not the head (any more, or yet): nothing was applied; find the head again.
                Ok(_) => last = format!("{} is not the head", head.addr),
                Err(s) => match classify_write_failure(&head.addr, self.opts.variant, s) {
                    WriteFailure::Retry(why) => last = why,
                    WriteFailure::Rejected(s) => return Err(ClientError::Rejected(s)),
                    WriteFailure::Ambiguous(why) => return Err(ClientError::Unknown(why)),
                },
            }
            self.pause(deadline).await;
        }
        Err(ClientError::Timeout(self.opts.op_timeout, last))
    }

    /// A tail-variant write: registered under a fresh cxid before it is sent, so a callback
    /// that overtakes the head's `rc = 0` still counts.
    async fn write_tail(&self, op: TailWrite<'_>) -> Result<(), ClientError> {
        let Some(callbacks) = self.callbacks.as_ref() else {
            return Err(ClientError::Rejected(Status::failed_precondition(
                "the tail-variant client has no callback server",
            )));
        };
        let deadline = Instant::now() + self.opts.op_timeout;
        let mut waiting = callbacks.waiters.register().map_err(ClientError::Rejected)?;
        let cxid = waiting.cxid;
        let (host, port) = (callbacks.advertise_host.clone(), callbacks.advertise_port);
        let mut last = String::from("no replica registered in ZooKeeper");
        while Instant::now() < deadline {
            let Some(head) = self.members.borrow().first().cloned() else {
                self.pause(deadline).await;
                continue;
            };
            let mut client = self.tail_variant_client(&head.addr).map_err(ClientError::Rejected)?;
            // The same cxid on every attempt is safe: attempts are only repeated after ones
            // that applied nothing, so at most one update in the chain carries it.
            let result = match &op {
                TailWrite::Inc { key, delta } => {
                    let req = adb::TailIncrementRequest {
                        key: key.to_string(),
                        incr_value: *delta,
                        host: host.clone(),
                        port,
                        cxid,
                    };
                    client.increment(self.request(req)).await
                }
                TailWrite::Del { key } => {
                    let req = adb::TailDeleteRequest {
                        key: key.to_string(),
                        host: host.clone(),
                        port,
                        cxid,
                    };
                    client.delete(self.request(req)).await
                }
            };
            if let Err(s) = &result {
                if let Some(refused) = plaintext_to_tls(&head.addr, self.plaintext_tcp(), s, deadline).await {
                    return Err(ClientError::Rejected(refused));
                }
            }
            match result {
                Ok(r) if r.get_ref().rc == 0 => {
                    let why = format!(
                        "{} accepted the write (cxid {cxid}) but the tail did not call back within {:?}",
                        head.addr, self.opts.op_timeout
                    );
                    return wait_for_callback(&mut waiting, deadline, why).await;
                }
                Ok(_) => last = format!("{} is not the head", head.addr),
                Err(s) => match classify_write_failure(&head.addr, self.opts.variant, s) {
                    WriteFailure::Retry(why) => last = why,
                    WriteFailure::Rejected(s) => return Err(ClientError::Rejected(s)),
                    // The head may have taken it before the answer was lost; only the tail's
                    // callback can still tell, so wait for it rather than give up at once.
                    WriteFailure::Ambiguous(why) => {
                        let why = format!("{why}; no callback for cxid {cxid} either");
                        return wait_for_callback(&mut waiting, deadline, why).await;
                    }
                },
            }
            self.pause(deadline).await;
        }
        Err(ClientError::Timeout(self.opts.op_timeout, last))
    }

    pub async fn get(&self, key: &str) -> Result<i32, ClientError> {
        let deadline = Instant::now() + self.opts.op_timeout;
        let mut last = String::from("no replica registered in ZooKeeper");
        while Instant::now() < deadline {
            let Some(tail) = self.members.borrow().last().cloned() else {
                self.pause(deadline).await;
                continue;
            };
            let req = self.request(adb::GetRequest { key: key.to_string() });
            let result = match self.opts.variant {
                Variant::Head => self.head_client(&tail.addr).map_err(ClientError::Rejected)?.get(req).await,
                Variant::Tail => self.tail_variant_client(&tail.addr).map_err(ClientError::Rejected)?.get(req).await,
            };
            match result {
                Ok(r) if r.get_ref().rc == 0 => return Ok(r.get_ref().value),
                // chain.proto: "rc = 2 key doesn't exist". Other implementations answer it for
                // missing and deleted keys alike; both read 0 here.
                Ok(r) if r.get_ref().rc == GET_RC_NO_SUCH_KEY => return Ok(0),
                Ok(_) => last = format!("{} is not serving reads as tail", tail.addr),
                Err(s) if matches!(s.code(), Code::InvalidArgument | Code::OutOfRange) => return Err(ClientError::Rejected(s)),
                Err(s) if s.code() == Code::Unimplemented => {
                    return Err(ClientError::Rejected(wrong_variant(&tail.addr, self.opts.variant, &s)))
                }
                Err(s) => match plaintext_to_tls(&tail.addr, self.plaintext_tcp(), &s, deadline).await {
                    Some(refused) => return Err(ClientError::Rejected(refused)),
                    // Reads change nothing, so any other failure is simply retried.
                    None => last = format!("{}: {}", tail.addr, s.message()),
                },
            }
            self.pause(deadline).await;
        }
        Err(ClientError::Timeout(self.opts.op_timeout, last))
    }

    /// Every member in chain order with what it says about itself.
    pub async fn status(&self) -> Vec<MemberStatus> {
        let members = self.members();
        let n = members.len();
        let mut out = Vec::with_capacity(n);
        for (i, member) in members.into_iter().enumerate() {
            let position = match (i, n) {
                (_, 1) => "head+tail",
                (0, _) => "head",
                (i, n) if i + 1 == n => "tail",
                _ => "middle",
            };
            let (described, latest_xid) = match self.channel(&member.addr) {
                Ok(channel) => {
                    let d = ChainExtClient::new(channel.clone())
                        .describe(self.request(ext::DescribeRequest {}))
                        .await
                        .ok()
                        .map(|r| r.into_inner());
                    // A replica serves only its own variant's service.
                    let req = self.request(adb::LatestXidRequest {});
                    let x = match self.opts.variant {
                        Variant::Head => HeadChainReplicaClient::new(channel).get_latest_xid(req).await,
                        Variant::Tail => TailChainReplicaClient::new(channel).get_latest_xid(req).await,
                    };
                    let x = x.ok().and_then(|r| (r.get_ref().rc == 0).then_some(r.get_ref().xid));
                    (d, x)
                }
                Err(_) => (None, None),
            };
            out.push(MemberStatus {
                member,
                position,
                described,
                latest_xid,
            });
        }
        out
    }
}

async fn wait_for_callback(waiting: &mut Waiting, deadline: Instant, why_unknown: String) -> Result<(), ClientError> {
    match tokio::time::timeout_at(deadline, &mut waiting.done).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(ClientError::Unknown(format!("{why_unknown} (the callback server stopped)"))),
        Err(_) => Err(ClientError::Unknown(why_unknown)),
    }
}

/// Writes waiting for `cxidProcessed`, by cxid.
struct Waiters {
    inner: Mutex<WaitersInner>,
    max: usize,
}

struct WaitersInner {
    /// Where the search for the next free cxid starts.
    next: i32,
    /// Tells a registration apart from a later one that got the same cxid after a wrap, so a
    /// finished write never removes someone else's entry.
    serial: u64,
    waiting: HashMap<i32, (u64, oneshot::Sender<()>)>,
}

/// One registered write; dropping it (done, failed, or the caller gave up) unregisters it.
struct Waiting {
    cxid: i32,
    serial: u64,
    done: oneshot::Receiver<()>,
    waiters: Arc<Waiters>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut inner = self.waiters.lock();
        if inner.waiting.get(&self.cxid).is_some_and(|(serial, _)| *serial == self.serial) {
            inner.waiting.remove(&self.cxid);
        }
    }
}

/// cxids live in 1..=i32::MAX: 0 is what an unset proto field reads as, and other clients of
/// the protocol use positive numbers.
fn next_cxid(cxid: i32) -> i32 {
    match cxid.checked_add(1) {
        Some(next) if next >= 1 => next,
        _ => 1,
    }
}

impl Waiters {
    fn new(first: i32, max: usize) -> Arc<Waiters> {
        // Leave at least one cxid free so the search for a free one always ends.
        let max = max.clamp(1, i32::MAX as usize - 1);
        let next = if first < 1 { 1 } else { first };
        Arc::new(Waiters {
            inner: Mutex::new(WaitersInner {
                next,
                serial: 0,
                waiting: HashMap::new(),
            }),
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>) -> Result<Waiting, Status> {
        let mut inner = self.lock();
        if inner.waiting.len() >= self.max {
            return Err(Status::resource_exhausted(format!(
                "{} writes already wait for the tail's callback",
                inner.waiting.len()
            )));
        }
        let mut cxid = inner.next;
        while inner.waiting.contains_key(&cxid) {
            cxid = next_cxid(cxid);
        }
        inner.next = next_cxid(cxid);
        inner.serial += 1;
        let serial = inner.serial;
        let (tx, done) = oneshot::channel();
        inner.waiting.insert(cxid, (serial, tx));
        Ok(Waiting {
            cxid,
            serial,
            done,
            waiters: self.clone(),
        })
    }

    /// `false` if nobody waits for `cxid`.
    fn complete(&self, cxid: i32) -> bool {
        let entry = self.lock().waiting.remove(&cxid);
        match entry {
            // The writer may have given up a moment ago; the callback still counts as answered.
            Some((_, tx)) => {
                let _ = tx.send(());
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// A random first cxid, so that a client restarted on a fixed callback port does not take a
/// late callback meant for its previous run as the answer to its own first writes.
fn random_first_cxid() -> i32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    (h.finish() % (i32::MAX as u64)) as i32 + 1
}

struct CallbackService {
    waiters: Arc<Waiters>,
}

#[tonic::async_trait]
impl TailClient for CallbackService {
    async fn cxid_processed(
        &self,
        request: tonic::Request<adb::CxidProcessedRequest>,
    ) -> Result<tonic::Response<adb::ChainResponse>, Status> {
        let cxid = request.into_inner().cxid;
        if !self.waiters.complete(cxid) {
            // A repeat from a new tail, a write that already timed out, or not ours: the tail
            // only needs to hear that the call arrived.
            tracing::debug!(cxid, "callback for a cxid nobody waits for: ignored");
        }
        Ok(tonic::Response::new(adb::ChainResponse { rc: 0 }))
    }
}

/// The tail variant's `TailClient` server.
struct CallbackServer {
    waiters: Arc<Waiters>,
    local_addr: SocketAddr,
    advertise_host: String,
    advertise_port: i32,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// `host:port` as the tail will dial it; IPv6 hosts in brackets.
fn parse_advertise(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("callback address {addr:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("callback address {addr:?}: {port:?} is not a port number"))?;
    if host.is_empty() || port == 0 {
        return Err(anyhow!("callback address {addr:?} needs a host and a non-zero port"));
    }
    Ok((host.to_string(), i32::from(port)))
}

impl CallbackServer {
    async fn start(opts: &ClientOptions) -> anyhow::Result<CallbackServer> {
        let listener = tokio::net::TcpListener::bind(opts.callback_listen)
            .await
            .with_context(|| format!("cannot listen for tail callbacks on {}", opts.callback_listen))?;
        let local_addr = listener.local_addr().context("callback listener has no local address")?;
        let (advertise_host, advertise_port) = match &opts.callback_advertise {
            Some(a) => parse_advertise(a)?,
            None if local_addr.ip().is_unspecified() => {
                return Err(anyhow!(
                    "the callback server listens on {local_addr}: say which address the tail should call back (callback_advertise)"
                ))
            }
            None => {
                let host = match local_addr {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                };
                (host, i32::from(local_addr.port()))
            }
        };
        let waiters = Waiters::new(random_first_cxid(), opts.max_waiting_writes);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &opts.tls {
            // A TLS chain's tail dials callbacks over TLS; only the chain's replicas may call
            // (a forged cxidProcessed would report a write done that is not).
            let server = tls.server_requiring_client_certs().ok_or_else(|| {
                anyhow!("a tail-variant client of a TLS chain needs its own certificate and key: the tail calls it back over TLS")
            })?;
            builder = builder
                .tls_config(server)
                .context("cannot serve TLS for tail callbacks with these files")?;
        }
        let router = builder
            .tcp_nodelay(true)
            // cxidProcessed carries one int32: nothing near even the replicas' small limit.
            .add_service(
                TailClientServer::new(CallbackService { waiters: waiters.clone() })
                    .max_decoding_message_size(crate::runtime::limits::MIN_SMALL_MESSAGE_BYTES),
            );
        // A dropped sender stops the server too, so a client dropped without `close` does not
        // leave it serving.
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        tracing::debug!(listen = %local_addr, advertise = %format!("{advertise_host}:{advertise_port}"), "tail callback server serving");
        Ok(CallbackServer {
            waiters,
            local_addr,
            advertise_host,
            advertise_port,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open connections; the replicas keep theirs open, so it
        // gets a moment and is then cut short.
        match tokio::time::timeout(Duration::from_secs(1), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "tail callback server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "tail callback server task failed"),
            Err(_) => self.task.abort(),
        }
        let left = self.waiters.len();
        if left > 0 {
            tracing::debug!(left, "callback server stopped with writes still waiting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_waits_after_the_membership_has_changed() {
        let (tx, members) = watch::channel(Vec::new());
        let client = ChainClient::with_membership(members, Arc::new(crate::runtime::network::TcpConnect), ClientOptions::default());
        tx.send_replace(Vec::new());
        let start = Instant::now();
        client.pause(start + Duration::from_secs(5)).await;
        assert!(start.elapsed() >= Duration::from_millis(90), "returned after {:?}", start.elapsed());
    }

    /// A head that accepts connections and never answers: a write to it hangs until its
    /// deadline. Returns the client (membership: that head alone) and the membership sender.
    async fn client_of_a_silent_head(rpc_timeout: Duration) -> (ChainClient, watch::Sender<Vec<Member>>, tokio::net::TcpListener) {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let head = Member {
            id: 1,
            addr: silent.local_addr().expect("local addr").to_string(),
        };
        let (tx, members) = watch::channel(vec![head]);
        let opts = ClientOptions {
            rpc_timeout,
            op_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        };
        let client = ChainClient::with_membership(members, Arc::new(crate::runtime::network::TcpConnect), opts);
        (client, tx, silent)
    }

    #[tokio::test]
    async fn a_write_to_a_head_that_leaves_the_chain_ends_at_once_with_its_outcome_unknown() {
        let (client, tx, _silent) = client_of_a_silent_head(Duration::from_secs(20)).await;
        let start = Instant::now();
        let remove = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send_replace(vec![Member {
                id: 2,
                addr: "127.0.0.1:9".into(),
            }]);
        };
        let (r, ()) = tokio::join!(client.inc("k", 1), remove);
        assert!(
            matches!(r, Err(ClientError::Unknown(ref m)) if m.contains("left the chain")),
            "{r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "waited {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_write_waits_for_its_head_while_the_head_stays_in_the_chain() {
        let rpc_timeout = Duration::from_millis(1500);
        let (client, tx, _silent) = client_of_a_silent_head(rpc_timeout).await;
        let start = Instant::now();
        let grow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send_modify(|m| {
                m.push(Member {
                    id: 2,
                    addr: "127.0.0.1:9".into(),
                })
            });
        };
        let (r, ()) = tokio::join!(client.inc("k", 1), grow);
        assert!(
            matches!(r, Err(ClientError::Unknown(ref m)) if !m.contains("left the chain")),
            "{r:?}"
        );
        assert!(start.elapsed() >= rpc_timeout, "gave up after {:?}", start.elapsed());
    }

    #[test]
    fn cxids_are_sequential_and_wrap_to_one() {
        let w = Waiters::new(i32::MAX - 1, 16);
        let a = w.register().unwrap();
        let b = w.register().unwrap();
        let c = w.register().unwrap();
        assert_eq!((a.cxid, b.cxid, c.cxid), (i32::MAX - 1, i32::MAX, 1));
        assert_eq!(next_cxid(0), 1);
        assert_eq!(next_cxid(-5), 1);
    }

    #[test]
    fn a_cxid_with_a_waiter_is_never_reused() {
        let w = Waiters::new(1, 16);
        let held = w.register().unwrap();
        assert_eq!(held.cxid, 1);
        // Force the allocator round to the held cxid again, as after a full wrap.
        w.lock().next = 1;
        let other = w.register().unwrap();
        assert_eq!(other.cxid, 2, "cxid 1 still has a waiter");
        drop(held);
        w.lock().next = 1;
        assert_eq!(w.register().unwrap().cxid, 1, "free again once its write is done");
    }

    #[test]
    fn the_waiter_map_is_bounded() {
        let w = Waiters::new(1, 2);
        let _a = w.register().unwrap();
        let _b = w.register().unwrap();
        let err = w.register().err().expect("a third waiter is refused");
        assert_eq!(err.code(), Code::ResourceExhausted);
        drop(_a);
        assert!(w.register().is_ok(), "room again once a write finished");
    }

    #[tokio::test]
    async fn a_callback_before_the_wait_still_counts() {
        let w = Waiters::new(7, 16);
        let mut waiting = w.register().unwrap();
        assert!(w.complete(7));
        assert!(!w.complete(7), "a repeated callback finds nobody waiting");
        let r = wait_for_callback(&mut waiting, Instant::now() + Duration::from_millis(10), "x".into()).await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn no_callback_is_outcome_unknown() {
        let w = Waiters::new(7, 16);
        let mut waiting = w.register().unwrap();
        let r = wait_for_callback(&mut waiting, Instant::now() + Duration::from_millis(10), "no callback".into()).await;
        assert!(matches!(r, Err(ClientError::Unknown(ref m)) if m == "no callback"), "{r:?}");
        drop(waiting);
        assert_eq!(w.len(), 0, "a finished write leaves no waiter behind");
        assert!(!w.complete(7), "a late callback is ignored");
    }

    #[test]
    fn a_stale_registration_never_removes_a_newer_one() {
        let w = Waiters::new(3, 16);
        let old = w.register().unwrap();
        assert!(w.complete(3));
        w.lock().next = 3;
        let new = w.register().unwrap();
        assert_eq!(new.cxid, 3);
        drop(old);
        assert_eq!(w.len(), 1, "dropping the finished registration left the new waiter alone");
        drop(new);
    }

    #[test]
    fn a_refusal_that_says_nothing_was_applied_is_retried() {
        let refused = crate::runtime::service::write_rejection_status(&crate::core::WriteRejected::Unavailable("x"));
        assert!(matches!(
            classify_write_failure("h:1", Variant::Head, refused),
            WriteFailure::Retry(_)
        ));
        // The same code and text without the mark: an UNAVAILABLE from we know not where.
        let bare = Status::unavailable("the head cannot take writes now: x");
        assert!(matches!(
            classify_write_failure("h:1", Variant::Head, bare),
            WriteFailure::Ambiguous(_)
        ));
        let busy = crate::status::nothing_applied(Status::resource_exhausted("busy"));
        assert!(matches!(
            classify_write_failure("h:1", Variant::Tail, busy),
            WriteFailure::Rejected(_)
        ));
        let lost = Status::unknown("outcome of write xid 3 unknown: x");
        assert!(matches!(
            classify_write_failure("h:1", Variant::Head, lost),
            WriteFailure::Ambiguous(_)
        ));
        let other = Status::unimplemented("");
        match classify_write_failure("h:1", Variant::Tail, other) {
            WriteFailure::Rejected(s) => assert!(s.message().contains("is the chain not the tail variant?"), "{s:?}"),
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_connect_is_retried() {
        // A port where nothing listens any more.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let s = HeadChainReplicaClient::new(channel)
            .increment(adb::IncrementRequest {
                key: "k".into(),
                incr_value: 1,
            })
            .await
            .unwrap_err();
        assert!(never_sent(&s), "{s:?}");
        assert!(matches!(
            classify_write_failure(&addr.to_string(), Variant::Head, s),
            WriteFailure::Retry(_)
        ));
        // The text alone proves nothing.
        assert!(!never_sent(&Status::unavailable("tcp connect error: Connection refused")));
    }

    #[test]
    fn advertise_addresses_are_checked() {
        assert_eq!(parse_advertise("10.0.0.1:7000").unwrap(), ("10.0.0.1".to_string(), 7000));
        assert_eq!(parse_advertise("[::1]:7000").unwrap(), ("[::1]".to_string(), 7000));
        assert!(parse_advertise("nohost").is_err());
        assert!(parse_advertise(":7000").is_err());
        assert!(parse_advertise("h:0").is_err());
        assert!(parse_advertise("h:70000").is_err());
    }
}
