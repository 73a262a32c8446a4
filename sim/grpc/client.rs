//! Clients and their history. Head variant: the production `ChainClient`, over the simulated
//! network, following the membership its coordinator publishes. Tail variant: `ChainClient`
//! runs its callback server on a real TCP port, so a thin client here does what it does (the
//! same retry rules, `client::classify_write_failure` itself; the same cxid registration before
//! sending) with its callback server on the simulated network.
//!
//! Every operation is recorded for the linearizability check: a write that ended without an
//! answer is maybe-applied; a write that was refused or timed out before any attempt could
//! have applied it, and a read that failed, tell nothing and are left out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use super::transport::{Place, Proc, SimConnect};
use super::world::World;
use crate::client::{classify_write_failure, ChainClient, ClientError, ClientOptions, WriteFailure};
use crate::core::{Member, Variant};
use crate::pb::adb;
use crate::pb::adb::tail_chain_replica_client::TailChainReplicaClient;
use crate::pb::adb::tail_client_server::{TailClient, TailClientServer};
use crate::sim::linearizability::{Op, OpKind};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn client_addr(c: usize) -> String {
    format!("10.0.1.{}:9000", c + 1)
}

#[derive(Clone, Debug)]
enum Request {
    Inc(String, i32),
    Del(String),
    Get(String),
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done(Option<i32>),
    /// Nothing was applied (refused, or timed out with only safe attempts), or a read failed.
    NoEffect(String),
    /// A write that may or may not have taken effect.
    Unknown(String),
}

impl Outcome {
    /// What the trace hashes: the kind of ending, not error texts.
    fn class(&self) -> String {
        match self {
            Outcome::Done(v) => format!("done {v:?}"),
            Outcome::NoEffect(_) => "no effect".into(),
            Outcome::Unknown(_) => "unknown".into(),
        }
    }
}

fn from_client(r: Result<Option<i32>, ClientError>) -> Outcome {
    match r {
        Ok(v) => Outcome::Done(v),
        Err(e @ (ClientError::Rejected(_) | ClientError::Timeout(..))) => Outcome::NoEffect(e.to_string()),
        Err(e @ ClientError::Unknown(_)) => Outcome::Unknown(e.to_string()),
    }
}

pub enum Backend {
    Head(ChainClient),
    Tail(TailVariantClient),
}

impl Backend {
    pub async fn read(&self, key: &str) -> Outcome {
        self.call(&Request::Get(key.to_string())).await
    }

    async fn call(&self, req: &Request) -> Outcome {
        match (self, req) {
            (Backend::Head(c), Request::Inc(k, d)) => from_client(c.inc(k, *d).await.map(|()| None)),
            (Backend::Head(c), Request::Del(k)) => from_client(c.del(k).await.map(|()| None)),
            (Backend::Head(c), Request::Get(k)) => from_client(c.get(k).await.map(Some)),
            (Backend::Tail(c), Request::Inc(k, d)) => c.write(k, Some(*d)).await,
            (Backend::Tail(c), Request::Del(k)) => c.write(k, None).await,
            (Backend::Tail(c), Request::Get(k)) => c.get(k).await,
        }
    }
}

fn options(world: &World) -> ClientOptions {
    ClientOptions {
        op_timeout: world.cfg.op_timeout,
        rpc_timeout: world.cfg.client_rpc_timeout,
        variant: world.cfg.variant,
        ..ClientOptions::default()
    }
}

pub async fn backend(world: &Arc<World>, c: usize, view: watch::Receiver<Vec<Member>>) -> Backend {
    let proc = Proc {
        place: Place::Client(c),
        incarnation: 1,
    };
    let addr = client_addr(c);
    let incoming = world.net.start(proc, &addr);
    let connector = Arc::new(SimConnect {
        net: world.net.clone(),
        from: proc,
        keepalive: false,
    });
    match world.cfg.variant {
        Variant::Head => Backend::Head(ChainClient::with_membership(view, connector, options(world))),
        Variant::Tail => {
            let waiters: Arc<Mutex<BTreeMap<i32, oneshot::Sender<()>>>> = Arc::default();
            let service = TailClientServer::new(Callbacks(waiters.clone()));
            let server = tonic::transport::Server::builder().add_service(service);
            tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::UnboundedReceiverStream::new(incoming)));
            Backend::Tail(TailVariantClient {
                view,
                connector,
                channels: Mutex::new(BTreeMap::new()),
                waiters,
                next_cxid: Mutex::new(1),
                host: format!("10.0.1.{}", c + 1),
                opts: options(world),
            })
        }
    }
}

/// One closed-loop user: think, pick an operation, run it, record it; through the faults, the
/// settling after them, and `checked_time` more in which every operation must succeed.
pub async fn run_client(world: Arc<World>, c: usize) {
    let (view_tx, view) = watch::channel(Vec::new());
    world.coord.add_client(view_tx);
    let backend = backend(&world, c, view).await;
    let after = (world.cfg.settle_time + world.cfg.checked_time).as_millis() as u64;
    for i in 0.. {
        if lock(&world.healed_at).is_some_and(|healed| world.now_ms() >= healed + after) {
            return;
        }
        let (lo, hi) = world.cfg.think_ms;
        tokio::time::sleep(Duration::from_millis(world.dice.clients.range(lo, hi))).await;
        let key = format!("k{}", world.dice.clients.range(0, world.cfg.keys as u64));
        let req = match world.dice.clients.range(0, 10) {
            0..=4 => {
                let sign = if world.dice.clients.chance(250_000) { -1 } else { 1 };
                Request::Inc(key, world.dice.clients.range(1, 4) as i32 * sign)
            }
            5 => Request::Del(key),
            _ => Request::Get(key),
        };
        let invoked = world.now_ms();
        let outcome = backend.call(&req).await;
        let returned = world.now_ms();
        world.trace.record(
            returned,
            &format!("client {c} op {i}: {req:?} invoked at {invoked}: {}", outcome.class()),
        );
        record(&world, c, &req, invoked, returned, &outcome);
    }
}

fn record(world: &World, c: usize, req: &Request, invoked: u64, returned: u64, outcome: &Outcome) {
    let entry = match (req, outcome) {
        (_, Outcome::NoEffect(_)) => None,
        (Request::Get(_), Outcome::Unknown(_)) => None,
        (Request::Get(k), Outcome::Done(v)) => Some(Op {
            key: k.clone(),
            kind: OpKind::Get(v.unwrap_or(0)),
            invoked,
            returned: Some(returned),
        }),
        (Request::Inc(k, d), o) => Some(Op {
            key: k.clone(),
            kind: OpKind::Inc(*d),
            invoked,
            returned: matches!(o, Outcome::Done(_)).then_some(returned),
        }),
        (Request::Del(k), o) => Some(Op {
            key: k.clone(),
            kind: OpKind::Del,
            invoked,
            returned: matches!(o, Outcome::Done(_)).then_some(returned),
        }),
    };
    if let Some(op) = entry {
        lock(&world.history).push(op);
    }
    // `op_timeout` bounds an operation, retries included; the last attempt may add one RPC
    // deadline and one connect timeout (tonic's deadline starts once connected).
    let bound = (world.cfg.op_timeout + world.cfg.client_rpc_timeout + Duration::from_millis(1_200)).as_millis() as u64;
    if returned - invoked > bound {
        world.violation(format!(
            "client deadline: client {c} {req:?} invoked at {invoked} ms took {} ms ({outcome:?})",
            returned - invoked
        ));
    }
    if let Some(healed) = *lock(&world.healed_at) {
        // Once the chain had time to settle, every operation must complete.
        if invoked >= healed + world.cfg.settle_time.as_millis() as u64 && !matches!(outcome, Outcome::Done(_)) {
            world.violation(format!(
                "liveness: client {c} {req:?} invoked at {invoked} ms, after faults stopped at {healed} ms, ended {outcome:?}"
            ));
        }
    }
}

/// The tail's `cxidProcessed` calls, by cxid.
struct Callbacks(Arc<Mutex<BTreeMap<i32, oneshot::Sender<()>>>>);

#[tonic::async_trait]
impl TailClient for Callbacks {
    async fn cxid_processed(
        &self,
        request: tonic::Request<adb::CxidProcessedRequest>,
    ) -> Result<tonic::Response<adb::ChainResponse>, Status> {
        if let Some(tx) = lock(&self.0).remove(&request.into_inner().cxid) {
            let _ = tx.send(());
        }
        Ok(tonic::Response::new(adb::ChainResponse { rc: 0 }))
    }
}

pub struct TailVariantClient {
    view: watch::Receiver<Vec<Member>>,
    connector: Arc<SimConnect>,
    channels: Mutex<BTreeMap<String, Channel>>,
    waiters: Arc<Mutex<BTreeMap<i32, oneshot::Sender<()>>>>,
    next_cxid: Mutex<i32>,
    host: String,
    opts: ClientOptions,
}

impl TailVariantClient {
    fn client(&self, addr: &str) -> Result<TailChainReplicaClient<Channel>, String> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(addr) {
            return Ok(TailChainReplicaClient::new(c.clone()));
        }
        let channel = crate::runtime::network::Connect::channel(&*self.connector, addr)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(TailChainReplicaClient::new(channel))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.opts.rpc_timeout);
        r
    }

    /// As `ChainClient` does between attempts: wait a little for the membership to change.
    async fn pause(&self, deadline: Instant) {
        let mut view = self.view.clone();
        view.mark_unchanged();
        let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(until, view.changed()).await;
    }

    /// `delta: None` is a delete.
    async fn write(&self, key: &str, delta: Option<i32>) -> Outcome {
        let deadline = Instant::now() + self.opts.op_timeout;
        // Registered before sending, so a callback that overtakes the head's answer counts.
        let cxid = {
            let mut next = lock(&self.next_cxid);
            *next += 1;
            *next - 1
        };
        let (tx, mut done) = oneshot::channel();
        lock(&self.waiters).insert(cxid, tx);
        let mut last = String::from("no replica in the view");
        let outcome = loop {
            if Instant::now() >= deadline {
                break Outcome::NoEffect(format!("timed out: {last}"));
            }
            let head = self.view.borrow().first().cloned();
            let Some(head) = head else {
                self.pause(deadline).await;
                continue;
            };
            let mut client = match self.client(&head.addr) {
                Ok(c) => c,
                Err(e) => break Outcome::NoEffect(e),
            };
            let (host, port) = (self.host.clone(), 9000);
            let result = match delta {
                Some(d) => {
                    client
                        .increment(self.request(adb::TailIncrementRequest {
                            key: key.into(),
                            incr_value: d,
                            host,
                            port,
                            cxid,
                        }))
                        .await
                }
                None => {
                    client
                        .delete(self.request(adb::TailDeleteRequest {
                            key: key.into(),
                            host,
                            port,
                            cxid,
                        }))
                        .await
                }
            };
            match result {
                Ok(r) if r.get_ref().rc == 0 => {
                    break wait_for_callback(&mut done, deadline, format!("{} accepted cxid {cxid}, no callback", head.addr)).await
                }
                Ok(_) => last = format!("{} is not the head", head.addr),
                Err(s) => match classify_write_failure(&head.addr, Variant::Tail, s) {
                    WriteFailure::Retry(why) => last = why,
                    WriteFailure::Rejected(s) => break Outcome::NoEffect(s.to_string()),
                    // The head may have taken it; only the tail's callback can still tell.
                    WriteFailure::Ambiguous(why) => break wait_for_callback(&mut done, deadline, format!("{why}, no callback")).await,
                },
            }
            self.pause(deadline).await;
        };
        lock(&self.waiters).remove(&cxid);
        outcome
    }

    async fn get(&self, key: &str) -> Outcome {
        let deadline = Instant::now() + self.opts.op_timeout;
        let mut last = String::from("no replica in the view");
        while Instant::now() < deadline {
            let tail = self.view.borrow().last().cloned();
            let Some(tail) = tail else {
                self.pause(deadline).await;
                continue;
            };
            let mut client = match self.client(&tail.addr) {
                Ok(c) => c,
                Err(e) => return Outcome::NoEffect(e),
            };
            match client.get(self.request(adb::GetRequest { key: key.into() })).await {
                Ok(r) if r.get_ref().rc == 0 => return Outcome::Done(Some(r.get_ref().value)),
                Ok(r) if r.get_ref().rc == crate::client::GET_RC_NO_SUCH_KEY => return Outcome::Done(Some(0)),
                Ok(_) => last = format!("{} is not serving reads as tail", tail.addr),
                Err(s) => last = format!("{}: {}", tail.addr, s.message()),
            }
            self.pause(deadline).await;
        }
        Outcome::NoEffect(format!("timed out: {last}"))
    }
}

async fn wait_for_callback(done: &mut oneshot::Receiver<()>, deadline: Instant, why_unknown: String) -> Outcome {
    match tokio::time::timeout_at(deadline, done).await {
        Ok(Ok(())) => Outcome::Done(None),
        _ => Outcome::Unknown(why_unknown),
    }
}
