//! `chainctl bench`: a closed-loop load generator for the chain, etcd, and a no-op gRPC server
//! (the one-hop ceiling), measured the same way so the figures compare.
//!
//! Each of `concurrency` workers issues one request at a time, back to back. Latencies are
//! recorded per operation after the warm-up; throughput counts successful operations only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::client::ChainClient;
use crate::pb::adb;
use crate::pb::adb::head_chain_replica_client::HeadChainReplicaClient;
use crate::pb::etcdserverpb;
use crate::pb::etcdserverpb::kv_client::KvClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Inc,
    Get,
    Del,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Inc => "inc",
            OpKind::Get => "get",
            OpKind::Del => "del",
        }
    }
}

/// Relative weights of the operations, e.g. `inc=90,get=10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    pub inc: u32,
    pub get: u32,
    pub del: u32,
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix { inc: 0, get: 0, del: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?} is not NAME=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name:?} is not a whole number: {weight:?}"))?;
            match name.trim() {
                "inc" => mix.inc = weight,
                "get" => mix.get = weight,
                "del" => mix.del = weight,
                other => return Err(format!("unknown operation {other:?}: use inc, get, del")),
            }
        }
        if mix.inc as u64 + mix.get as u64 + mix.del as u64 == 0 {
            return Err("the mix needs at least one operation with a positive weight".into());
        }
        Ok(mix)
    }
}

impl Mix {
    fn pick(&self, roll: u64) -> OpKind {
        let total = self.inc as u64 + self.get as u64 + self.del as u64;
        let r = roll % total;
        if r < self.inc as u64 {
            OpKind::Inc
        } else if r < self.inc as u64 + self.get as u64 {
            OpKind::Get
        } else {
            OpKind::Del
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub mix: Mix,
    pub keys: u32,
    /// Increments are drawn from `lo..=hi`.
    pub value_range: (i32, i32),
}

/// What the load goes to.
pub enum Target {
    Chain(Arc<ChainClient>),
    /// etcd: a write is a `Put`, a read a linearizable `Range` (serializable = false).
    Etcd(Vec<KvClient<Channel>>),
    /// A server that answers `HeadChainReplica.get` at once: the cost of one RPC.
    Noop(HeadChainReplicaClient<Channel>),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Chain(_) => "chain",
            Target::Etcd(_) => "etcd",
            Target::Noop(_) => "noop",
        }
    }

    async fn run_op(&self, worker: usize, op: OpKind, key: &str, value: i32) -> Result<(), String> {
        match self {
            Target::Chain(c) => match op {
                OpKind::Inc => c.inc(key, value).await.map_err(|e| e.to_string()),
                OpKind::Del => c.del(key).await.map_err(|e| e.to_string()),
                OpKind::Get => c.get(key).await.map(|_| ()).map_err(|e| e.to_string()),
            },
            Target::Etcd(clients) => {
                let mut kv = clients[worker % clients.len()].clone();
                let result = match op {
                    OpKind::Get => kv
                        .range(etcdserverpb::RangeRequest {
                            key: key.as_bytes().to_vec(),
                            serializable: false,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    OpKind::Inc | OpKind::Del => kv
                        .put(etcdserverpb::PutRequest {
                            key: key.as_bytes().to_vec(),
                            value: value.to_string().into_bytes(),
                            lease: 0,
                        })
                        .await
                        .map(|_| ()),
                };
                result.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
            Target::Noop(client) => {
                let r = client.clone().get(adb::GetRequest { key: key.to_string() }).await;
                r.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }
}

pub fn lazy_channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok(endpoint.tcp_nodelay(true).connect_timeout(Duration::from_secs(2)).connect_lazy())
}

#[derive(Clone, Debug, Default)]
pub struct OpSummary {
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub target: &'static str,
    pub concurrency: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub per_op: BTreeMap<&'static str, OpSummary>,
    /// Error messages seen, with counts (the first 200 characters of each).
    pub errors: BTreeMap<String, u64>,
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

/// xorshift64*: each worker's own cheap, seeded choice of operation and key.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

pub async fn run(target: Arc<Target>, cfg: &BenchConfig) -> BenchReport {
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let stop_at = measure_from + cfg.duration;
    let mut workers = Vec::with_capacity(cfg.concurrency);
    for w in 0..cfg.concurrency {
        let target = target.clone();
        let cfg = cfg.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((w as u64 + 1) * 0x1000_0000_01b3);
            let mut lat: BTreeMap<OpKind, Vec<u32>> = BTreeMap::new();
            let mut errs: BTreeMap<(OpKind, String), u64> = BTreeMap::new();
            let span = (cfg.value_range.1 as i64 - cfg.value_range.0 as i64 + 1).max(1) as u64;
            loop {
                let began = Instant::now();
                if began >= stop_at {
                    break;
                }
                let op = cfg.mix.pick(next(&mut rng));
                let key = format!("k{}", next(&mut rng) % u64::from(cfg.keys.max(1)));
                let value = (cfg.value_range.0 as i64 + (next(&mut rng) % span) as i64) as i32;
                let result = target.run_op(w, op, &key, value).await;
                let ended = Instant::now();
                if began < measure_from || ended > stop_at {
                    continue;
                }
                match result {
                    Ok(()) => lat
                        .entry(op)
                        .or_default()
                        .push((ended - began).as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => *errs.entry((op, e.chars().take(200).collect())).or_default() += 1,
                }
            }
            (lat, errs)
        }));
    }
    let mut lat: BTreeMap<OpKind, Vec<u32>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut error_counts: BTreeMap<OpKind, u64> = BTreeMap::new();
    for w in workers {
        let Ok((l, e)) = w.await else { continue };
        for (op, mut v) in l {
            lat.entry(op).or_default().append(&mut v);
        }
        for ((op, msg), n) in e {
            *errors.entry(format!("{}: {msg}", op.name())).or_default() += n;
            *error_counts.entry(op).or_default() += n;
        }
    }
    let seconds = cfg.duration.as_secs_f64();
    let mut per_op = BTreeMap::new();
    let mut ok = 0u64;
    for op in [OpKind::Inc, OpKind::Get, OpKind::Del] {
        let mut v = lat.remove(&op).unwrap_or_default();
        let errs = error_counts.get(&op).copied().unwrap_or(0);
        if v.is_empty() && errs == 0 {
            continue;
        }
        v.sort_unstable();
        ok += v.len() as u64;
        per_op.insert(
            op.name(),
            OpSummary {
                count: v.len() as u64,
                errors: errs,
                p50_us: percentile(&v, 0.5),
                p99_us: percentile(&v, 0.99),
                p999_us: percentile(&v, 0.999),
            },
        );
    }
    BenchReport {
        target: target.name(),
        concurrency: cfg.concurrency,
        seconds,
        ops_per_sec: ok as f64 / seconds,
        per_op,
        errors,
    }
}

impl BenchReport {
    pub fn to_json(&self) -> String {
        let mut ops = String::new();
        for (i, (name, s)) in self.per_op.iter().enumerate() {
            if i > 0 {
                ops.push(',');
            }
            let _ = write!(
                ops,
                "\"{name}\":{{\"count\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
                s.count, s.errors, s.p50_us, s.p99_us, s.p999_us
            );
        }
        let errors: u64 = self.errors.values().sum();
        // Each distinct error message with its count, so a script can tell overload from
        // unavailability from unknown outcomes without parsing the text report.
        let mut messages = String::new();
        for (i, (msg, n)) in self.errors.iter().enumerate() {
            if i > 0 {
                messages.push(',');
            }
            let _ = write!(messages, "\"{}\":{n}", json_escape(msg));
        }
        format!(
            "{{\"target\":\"{}\",\"concurrency\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"errors\":{},\"ops\":{{{}}},\"error_messages\":{{{}}}}}",
            self.target, self.concurrency, self.seconds, self.ops_per_sec, errors, ops, messages
        )
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} at concurrency {}: {:.0} ops/s over {:.1} s\n",
            self.target, self.concurrency, self.ops_per_sec, self.seconds
        );
        let _ = writeln!(
            out,
            "  {:<4} {:>10} {:>8} {:>10} {:>10} {:>10}",
            "op", "ok", "errors", "p50", "p99", "p99.9"
        );
        for (name, s) in &self.per_op {
            let _ = writeln!(
                out,
                "  {:<4} {:>10} {:>8} {:>8.2}ms {:>8.2}ms {:>8.2}ms",
                name,
                s.count,
                s.errors,
                s.p50_us as f64 / 1000.0,
                s.p99_us as f64 / 1000.0,
                s.p999_us as f64 / 1000.0
            );
        }
        for (msg, n) in &self.errors {
            let _ = writeln!(out, "  error x{n}: {msg}");
        }
        out
    }
}

/// A JSON string body: error messages quote keys and carry server text.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The no-op server: answers every `HeadChainReplica` call at once, touching nothing.
#[derive(Clone, Default)]
pub struct NoopService;

#[tonic::async_trait]
impl adb::head_chain_replica_server::HeadChainReplica for NoopService {
    async fn propose_state_update(
        &self,
        _: tonic::Request<adb::HeadStateUpdateRequest>,
    ) -> Result<tonic::Response<adb::ChainResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::ChainResponse { rc: 0 }))
    }
    async fn get_latest_xid(
        &self,
        _: tonic::Request<adb::LatestXidRequest>,
    ) -> Result<tonic::Response<adb::LatestXidResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::LatestXidResponse { rc: 0, xid: 0 }))
    }
    async fn state_transfer(
        &self,
        _: tonic::Request<adb::HeadStateTransferRequest>,
    ) -> Result<tonic::Response<adb::ChainResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::ChainResponse { rc: 0 }))
    }
    async fn increment(&self, _: tonic::Request<adb::IncrementRequest>) -> Result<tonic::Response<adb::HeadResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::HeadResponse { rc: 0 }))
    }
    async fn delete(&self, _: tonic::Request<adb::DeleteRequest>) -> Result<tonic::Response<adb::HeadResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::HeadResponse { rc: 0 }))
    }
    async fn get(&self, _: tonic::Request<adb::GetRequest>) -> Result<tonic::Response<adb::GetResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::GetResponse { rc: 0, value: 0 }))
    }
    async fn xid_processed(
        &self,
        _: tonic::Request<adb::XidProcessedRequest>,
    ) -> Result<tonic::Response<adb::ChainResponse>, tonic::Status> {
        Ok(tonic::Response::new(adb::ChainResponse { rc: 0 }))
    }
}
