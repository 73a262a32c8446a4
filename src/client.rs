//! The client a user needs: follows head and tail through ZooKeeper, retries only what is
//! safe to retry, and says so when the outcome of a write is unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::core::{Member, Variant};
use crate::pb::adb;
use crate::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use crate::pb::chainrep::ext;
use crate::pb::chainrep::ext::chain_ext_client::ChainExtClient;
use crate::runtime::network::Connect;
use crate::runtime::zk::{ZkConfig, ZkWatcher};

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
        _ => "rejected",
    }
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Total time one operation may take, retries included.
    pub op_timeout: Duration,
    /// Deadline of one RPC.
    pub rpc_timeout: Duration,
    pub variant: Variant,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { op_timeout: Duration::from_secs(10), rpc_timeout: Duration::from_secs(5), variant: Variant::Head }
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
    /// How channels to replicas are made; `None`: TCP with the settings in `channel`.
    connector: Option<Arc<dyn Connect>>,
}

/// A connect error means the request never left this process, so it is safe to send again.
fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let text = format!("{} {:?}", status.message(), status);
    text.contains("tcp connect error") || text.contains("Connection refused") || text.contains("error trying to connect")
}

impl ChainClient {
    pub async fn connect(zk: &ZkConfig, opts: ClientOptions) -> anyhow::Result<Self> {
        let watcher = ZkWatcher::connect(zk, opts.op_timeout).await?;
        let members = watcher.members();
        Ok(ChainClient { watcher: Some(watcher), members, channels: Mutex::new(HashMap::new()), opts, connector: None })
    }

    /// A client on any transport and membership source: the simulator runs this same client
    /// over in-memory pipes, with the membership its simulated coordinator publishes.
    pub fn with_membership(members: watch::Receiver<Vec<Member>>, connector: Arc<dyn Connect>, opts: ClientOptions) -> Self {
        ChainClient { watcher: None, members, channels: Mutex::new(HashMap::new()), opts, connector: Some(connector) }
    }

    pub async fn close(self) {
        if let Some(watcher) = self.watcher {
            watcher.close().await;
        }
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
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
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad replica address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn head_client(&self, addr: &str) -> Result<HeadChainReplicaClient<Channel>, Status> {
        Ok(HeadChainReplicaClient::new(self.channel(addr)?))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.opts.rpc_timeout);
        r
    }

    /// Wait a little for the membership to change (or just a little) before retrying.
    async fn pause(&self, deadline: Instant) {
        let mut members = self.members.clone();
        let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(until, members.changed()).await;
    }

    pub async fn inc(&self, key: &str, delta: i32) -> Result<(), ClientError> {
        self.write(|mut client, this| {
            let req = this.request(adb::IncrementRequest { key: key.to_string(), incr_value: delta });
            async move { client.increment(req).await }
        })
        .await
    }

    pub async fn del(&self, key: &str) -> Result<(), ClientError> {
        self.write(|mut client, this| {
            let req = this.request(adb::DeleteRequest { key: key.to_string() });
            async move { client.delete(req).await }
        })
        .await
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
            match call(client, self).await {
                Ok(r) if r.get_ref().rc == 0 => return Ok(()),
                // Not the head (any more, or yet): nothing was applied; find the head again.
                Ok(_) => last = format!("{} is not the head", head.addr),
                Err(s) if s.code() == Code::Unavailable && (never_sent(&s) || s.message().starts_with("the head cannot take writes now")) => {
                    last = format!("{}: {}", head.addr, s.message())
                }
                Err(s) if matches!(s.code(), Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted | Code::FailedPrecondition) => {
                    return Err(ClientError::Rejected(s))
                }
                Err(s) => return Err(ClientError::Unknown(format!("{}: {} ({:?})", head.addr, s.message(), s.code()))),
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
            let mut client = self.head_client(&tail.addr).map_err(ClientError::Rejected)?;
            match client.get(self.request(adb::GetRequest { key: key.to_string() })).await {
                Ok(r) if r.get_ref().rc == 0 => return Ok(r.get_ref().value),
                Ok(_) => last = format!("{} is not serving reads as tail", tail.addr),
                Err(s) if matches!(s.code(), Code::InvalidArgument | Code::OutOfRange) => return Err(ClientError::Rejected(s)),
                // Reads change nothing, so any other failure is simply retried.
                Err(s) => last = format!("{}: {}", tail.addr, s.message()),
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
                    let d = ChainExtClient::new(channel.clone()).describe(self.request(ext::DescribeRequest {})).await.ok().map(|r| r.into_inner());
                    let x = HeadChainReplicaClient::new(channel)
                        .get_latest_xid(self.request(adb::LatestXidRequest {}))
                        .await
                        .ok()
                        .and_then(|r| (r.get_ref().rc == 0).then_some(r.get_ref().xid));
                    (d, x)
                }
                Err(_) => (None, None),
            };
            out.push(MemberStatus { member, position, described, latest_xid });
        }
        out
    }
}
