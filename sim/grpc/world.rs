//! The gRPC tier's world: the seed's configuration and streams, the simulated network and
//! coordinator, the replica processes (production nodes) and what the clients recorded. The
//! nemesis and the clients act on it; `run` plays a seed with it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::config::GrpcSimConfig;
use super::coordinator::Coordinator;
use super::dice::Streams;
use super::run_shape::RunShape;
use super::trace::SharedTrace;
use super::transport::{Net, Place, Proc, SimConnect};
use crate::core::NodeId;
use crate::runtime::node::{self, NodeConfig, RunningNode};
use crate::runtime::zk::ZkConfig;
use crate::sim::linearizability::Op;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Replica {
    pub addr: String,
    pub incarnation: u32,
    /// Serves and sends only the classic calls, like a replica without chainrep's extension.
    pub classic: bool,
    pub node: Option<RunningNode>,
}

pub struct World {
    pub cfg: GrpcSimConfig,
    pub dice: Streams,
    /// What this run drew before it started.
    pub shape: RunShape,
    pub net: Arc<Net>,
    pub coord: Arc<Coordinator>,
    pub trace: SharedTrace,
    start: Instant,
    pub replicas: Mutex<Vec<Replica>>,
    pub history: Mutex<Vec<Op>>,
    /// When the nemesis stopped and healed everything.
    pub healed_at: Mutex<Option<u64>>,
    violations: Mutex<Vec<String>>,
}

impl World {
    // One argument per part of the world, each made by `run::play` before the world exists.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: GrpcSimConfig,
        dice: Streams,
        shape: RunShape,
        net: Arc<Net>,
        coord: Arc<Coordinator>,
        trace: SharedTrace,
        replicas: Vec<Replica>,
    ) -> World {
        World {
            cfg,
            dice,
            shape,
            net,
            coord,
            trace,
            start: Instant::now(),
            replicas: Mutex::new(replicas),
            history: Mutex::new(Vec::new()),
            healed_at: Mutex::new(None),
            violations: Mutex::new(Vec::new()),
        }
    }

    /// What the checks found so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    pub fn now_ms(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_millis() as u64
    }

    pub fn violation(&self, v: String) {
        self.trace.note(self.now_ms(), &format!("VIOLATION {v}"));
        lock(&self.violations).push(v);
    }

    fn proc(&self, r: usize) -> Proc {
        Proc {
            place: Place::Replica(r),
            incarnation: lock(&self.replicas)[r].incarnation,
        }
    }

    pub fn is_up(&self, r: usize) -> bool {
        lock(&self.replicas)[r].node.is_some()
    }

    pub fn up_replicas(&self) -> Vec<usize> {
        lock(&self.replicas)
            .iter()
            .enumerate()
            .filter(|(_, r)| r.node.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn with_core<R>(&self, r: usize, f: impl FnOnce(&mut node::Core) -> R) -> Option<R> {
        let shared = lock(&self.replicas)[r].node.as_ref().map(|n| n.shared.clone())?;
        Some(shared.with_core(f))
    }

    pub fn is_synced(&self, r: usize) -> bool {
        self.with_core(r, |c| c.holds_state()).unwrap_or(false)
    }

    /// The session the replica itself and the coordinator both know it by.
    pub fn session_of(&self, r: usize) -> Option<NodeId> {
        let own = self.with_core(r, |c| c.session_id()).flatten()?;
        (self.coord.session_of(self.proc(r)) == Some(own)).then_some(own)
    }

    fn node_config(&self, classic: bool) -> NodeConfig {
        let zk = ZkConfig {
            connect: "simulated".into(),
            root: "/sim".into(),
            session_timeout: self.cfg.session_timeout,
        };
        // `listen` is only for `node::start`; `start_with` is handed its connections.
        let mut cfg = NodeConfig::new(zk, SocketAddr::from(([0, 0, 0, 0], 7000)), self.cfg.variant);
        cfg.net.rpc_timeout = self.cfg.rpc_timeout;
        cfg.net.transfer_timeout = self.cfg.transfer_timeout;
        cfg.net.replicate_stream = !classic;
        cfg.core.max_sent = self.shape.max_sent;
        cfg.core.max_reorder = self.shape.max_reorder;
        cfg.core.max_pending_writes = self.shape.max_pending_writes;
        // Gray failures are the core tier's: this tier's coordinator keeps no eviction record.
        cfg.core.suspicion_ms = 0;
        cfg
    }

    /// Start a new process for replica `r`: a new incarnation that joins with a new session.
    pub async fn boot(self: &Arc<Self>, r: usize) {
        let (addr, incarnation, classic) = {
            let mut reps = lock(&self.replicas);
            let rep = &mut reps[r];
            rep.incarnation += 1;
            (rep.addr.clone(), rep.incarnation, rep.classic)
        };
        let proc = Proc {
            place: Place::Replica(r),
            incarnation,
        };
        let incoming = self.net.start(proc, &addr);
        let (events_tx, events) = mpsc::channel(1024);
        self.coord.add_replica(proc, &addr, events_tx);
        let join = Arc::new(SimMembership {
            coord: self.coord.clone(),
            proc,
        }) as Arc<dyn node::MembershipControl>;
        let connector = Arc::new(SimConnect {
            net: self.net.clone(),
            from: proc,
            keepalive: true,
        });
        let local = addr.parse().unwrap_or_else(|_| SocketAddr::from(([10, 0, 0, 1], 7000)));
        let cfg = self.node_config(classic);
        // Only TLS can fail to start, and simulated replicas are plaintext.
        let node = node::start_with(&cfg, UnboundedReceiverStream::new(incoming), local, addr, connector, events, join)
            .await
            .expect("a plaintext simulated replica starts");
        lock(&self.replicas)[r].node = Some(node);
    }

    pub fn crash(&self, r: usize) {
        let proc = self.proc(r);
        if let Some(node) = lock(&self.replicas)[r].node.take() {
            node.abort();
        }
        self.net.crash(proc);
    }

    /// A new replica process at a new address; about one in four speaks only classic calls.
    pub async fn add_replica(self: &Arc<Self>) -> Option<usize> {
        let r = {
            let mut reps = lock(&self.replicas);
            if reps.len() >= self.cfg.max_replicas {
                return None;
            }
            let classic = self.dice.replicas.chance(250_000);
            let addr = format!("10.0.0.{}:7000", reps.len() + 1);
            reps.push(Replica {
                addr,
                incarnation: 0,
                classic,
                node: None,
            });
            reps.len() - 1
        };
        self.boot(r).await;
        Some(r)
    }

    /// End of the faults: every cut healed, every crashed replica restarted.
    pub async fn heal_all(self: &Arc<Self>) {
        self.net.heal_all();
        let n = lock(&self.replicas).len();
        for r in 0..n {
            if !self.is_up(r) {
                self.boot(r).await;
            }
        }
        let now = self.now_ms();
        *lock(&self.healed_at) = Some(now);
        self.trace.note(now, "healed: no more faults");
    }
}

/// Every replica's own account of itself and the coordinator's membership, for failure
/// reports.
pub fn describe_all(world: &World) -> String {
    let mut out = format!("at {} ms, coordinator members (chain order):", world.now_ms());
    for m in world.coord.members() {
        out.push_str(&format!(" {:x}@{}", m.id, m.addr));
    }
    let n = lock(&world.replicas).len();
    for r in 0..n {
        let (addr, incarnation, classic) = {
            let reps = lock(&world.replicas);
            (reps[r].addr.clone(), reps[r].incarnation, reps[r].classic)
        };
        out.push_str(&format!(
            "\n  replica {r} ({addr}, incarnation {incarnation}{}): ",
            if classic { ", classic only" } else { "" }
        ));
        match world.with_core(r, |c| format!("{:?}", c.describe())) {
            Some(d) => out.push_str(&d),
            None => out.push_str("down"),
        }
    }
    out
}

/// One replica's requests to the simulated coordinator.
struct SimMembership {
    coord: Arc<Coordinator>,
    proc: Proc,
}

impl node::MembershipControl for SimMembership {
    fn request_join(&self) {
        self.coord.request_join(self.proc);
    }
    fn request_chain_marker(&self) {
        self.coord.request_chain_marker(self.proc);
    }
    fn request_rejoin(&self) {
        self.coord.request_rejoin(self.proc);
    }
    fn request_relist(&self) {
        self.coord.request_relist(self.proc);
    }
    // Suspicion is off in this tier (`node_config`): nothing asks for these.
    fn request_evict(&self, suspect: NodeId, _seen_version: Option<u64>) {
        tracing::error!(
            suspect = format_args!("{suspect:x}"),
            "the gRPC-tier coordinator does not model evictions"
        );
    }
    fn request_leave(&self) {
        tracing::error!("the gRPC-tier coordinator does not model evictions");
    }
    fn request_remove(&self, suspect: NodeId) {
        tracing::error!(
            suspect = format_args!("{suspect:x}"),
            "the gRPC-tier coordinator does not model evictions"
        );
    }
}
