//! One seed: a paused-clock, single-threaded tokio runtime running production replicas
//! (`node::start_with`), the simulated coordinator, clients and the nemesis; then healing,
//! settling, the final reads and the checks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::client::{backend, run_client, Outcome};
use super::coordinator::Coordinator;
use super::coverage::Coverage;
use super::dice::Streams;
use super::nemesis::run_nemesis;
use super::run_shape::RunShape;
use super::trace::SharedTrace;
use super::transport::{Net, Place, Proc, SimConnect};
use super::{DeliberatePanic, GrpcSimConfig, Report};
use crate::core::{NodeId, Store, Variant};
use crate::runtime::node::{self, NodeConfig, RunningNode};
use crate::runtime::zk::ZkConfig;
use crate::sim::linearizability::{self, Op, OpKind};
use crate::sim::panics;
use crate::sim::report::variant_name;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

    fn with_core<R>(&self, r: usize, f: impl FnOnce(&mut node::Core) -> R) -> Option<R> {
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

/// The seed's world while `play` runs, for a report if a panic unwinds out of the runtime.
type WorldSlot = Arc<Mutex<Option<Arc<World>>>>;

/// Plays one seed on a runtime of its own. Any panic on its thread meanwhile, in the harness,
/// a replica or a task that tokio caught, is reported with the seed rather than propagated
/// (or lost in a `JoinError`): `Report::panic`.
pub fn run_seed_catching(cfg: GrpcSimConfig) -> Report {
    let coverage = Coverage::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Report::broken(&cfg, format!("cannot build the runtime: {e}")),
    };
    let slot = WorldSlot::default();
    let dice = Streams::new(cfg.seed);
    let shape = RunShape::draw(cfg.initial_replicas, cfg.classic_replica, cfg.faults, &dice);
    let (report, mut panics) = panics::catching(|| {
        let play = play(cfg.clone(), dice, shape.clone(), slot.clone());
        tracing::subscriber::with_default(coverage.subscriber(), || match cfg.panic {
            Some(DeliberatePanic::Main(after)) => rt.block_on(panic_after(after, play)),
            _ => rt.block_on(play),
        })
    });
    let world = lock(&slot).take();
    let report = match (report, world) {
        (Some(report), _) => report,
        // Unwound out of the runtime: the world as of the panic, read in the runtime's context
        // (its paused clock).
        (None, Some(world)) => {
            let _context = rt.enter();
            let (described, more) = panics::catching(|| describe_all(&world));
            let mut violations = lock(&world.violations).clone();
            violations.push(described.unwrap_or_else(|| format!("(describing the replicas panicked too: {})", more.join("; "))));
            Report {
                seed: cfg.seed,
                shape: None,
                variant: cfg.variant,
                trace_hash: world.trace.hash(),
                events: world.trace.events(),
                simulated_ms: world.now_ms(),
                ops: lock(&world.history).len(),
                violations,
                coverage: Default::default(),
                panic: None,
            }
        }
        (None, None) => Report {
            violations: Vec::new(),
            ..Report::broken(&cfg, String::new())
        },
    };
    // Dropping the runtime cancels every task still running, replicas' included.
    let (_, more) = panics::catching(|| drop(rt));
    panics.extend(more);
    Report {
        shape: Some(shape),
        coverage: coverage.counts(),
        panic: panics::summary(&panics),
        ..report
    }
}

/// `fut`, but panicking `after` from now if it has not finished ([`DeliberatePanic::Main`]).
async fn panic_after(after: Duration, fut: impl std::future::Future<Output = Report>) -> Report {
    tokio::select! {
        biased;
        report = fut => report,
        _ = tokio::time::sleep(after) => panic!("deliberate panic in the main future at {} ms (GrpcSimConfig::panic)", after.as_millis()),
    }
}

async fn play(cfg: GrpcSimConfig, dice: Streams, shape: RunShape, slot: WorldSlot) -> Report {
    let trace = SharedTrace::new(cfg.print_trace);
    trace.note(0, &format!("shape: {shape}"));
    let net = Net::new(dice.net.clone());
    let coord = Coordinator::new(net.clone(), dice.coordinator.clone(), trace.clone(), cfg.session_timeout);
    let replicas = (0..shape.initial_replicas)
        .map(|i| Replica {
            addr: format!("10.0.0.{}:7000", i + 1),
            incarnation: 0,
            classic: Some(i) == shape.classic_replica,
            node: None,
        })
        .collect();
    let initial_replicas = shape.initial_replicas;
    let world = Arc::new(World {
        cfg: cfg.clone(),
        dice,
        shape,
        net,
        coord: coord.clone(),
        trace,
        start: Instant::now(),
        replicas: Mutex::new(replicas),
        history: Mutex::new(Vec::new()),
        healed_at: Mutex::new(None),
        violations: Mutex::new(Vec::new()),
    });
    *lock(&slot) = Some(world.clone());
    tokio::spawn(coord.clone().run());
    for r in 0..initial_replicas {
        world.boot(r).await;
    }
    let clients: Vec<_> = (0..cfg.clients).map(|c| tokio::spawn(run_client(world.clone(), c))).collect();
    let nemesis = if cfg.faults {
        tokio::spawn(run_nemesis(world.clone()))
    } else {
        let w = world.clone();
        tokio::spawn(async move { w.heal_all().await })
    };
    if let Some(DeliberatePanic::Task(after)) = cfg.panic {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            panic!("deliberate panic in a task at {} ms (GrpcSimConfig::panic)", after.as_millis());
        });
    }

    let all_done = async {
        for c in clients {
            let _ = c.await;
        }
    };
    if tokio::time::timeout(cfg.max_time, all_done).await.is_err() {
        world.violation(format!(
            "liveness: the clients did not finish within {} ms of simulated time",
            cfg.max_time.as_millis()
        ));
    }
    nemesis.abort();
    if lock(&world.healed_at).is_none() {
        world.heal_all().await;
    }
    if lock(&world.violations).is_empty() {
        // The clients stopped once the chain had settled; a moment for their last writes'
        // acknowledgements to reach everyone.
        tokio::time::sleep(cfg.rpc_timeout).await;
        final_reads(&world).await;
        check_replicas_agree(&world);
        let history = lock(&world.history).clone();
        if let Err(v) = linearizability::check(&history) {
            let mut ops = v.ops.clone();
            ops.sort_by_key(|o| o.invoked);
            let listing: Vec<String> = ops
                .iter()
                .map(|o| format!("  {:?} invoked {} returned {:?}", o.kind, o.invoked, o.returned))
                .collect();
            world.violation(format!(
                "linearizability: key {} has no linearization:\n{}",
                v.key,
                listing.join("\n")
            ));
        }
    }
    *lock(&slot) = None;
    let ops = lock(&world.history).len();
    let mut violations = lock(&world.violations).clone();
    if !violations.is_empty() {
        violations.push(describe_all(&world));
    }
    Report {
        seed: cfg.seed,
        shape: None,
        variant: cfg.variant,
        trace_hash: world.trace.hash(),
        events: world.trace.events(),
        simulated_ms: world.now_ms(),
        ops,
        violations,
        coverage: Default::default(),
        panic: None,
    }
}

/// After settling, the tail serves a read of every key; those reads join the history, so the
/// linearizability check proves no acknowledged write was lost (and no unknown one half-kept).
async fn final_reads(world: &Arc<World>) {
    let members = world.coord.members();
    let Some(tail) = members.last().cloned() else {
        world.violation("no lost writes: no replica left in the chain for the final reads".into());
        return;
    };
    let (_view_tx, view) = watch::channel(members);
    // One more client, the same as the others, reading at the tail the view names.
    let client = backend(world, world.cfg.clients, view).await;
    for k in 0..world.cfg.keys {
        let key = format!("k{k}");
        let invoked = world.now_ms();
        match client.read(&key).await {
            Outcome::Done(v) => {
                let v = v.unwrap_or(0);
                world
                    .trace
                    .note(world.now_ms(), &format!("final read {key} = {v} at {}", tail.addr));
                lock(&world.history).push(Op {
                    key,
                    kind: OpKind::Get(v),
                    invoked,
                    returned: Some(world.now_ms()),
                });
            }
            other => {
                world.violation(format!(
                    "liveness: the settled tail {} refused the final read of {key}: {other:?}",
                    tail.addr
                ));
                return;
            }
        }
    }
}

/// Every member of the settled chain holds the state, the same state, at the same xid.
fn check_replicas_agree(world: &World) {
    let members = world.coord.members();
    let n = lock(&world.replicas).len();
    let mut states: Vec<(String, bool, u64, Store)> = Vec::new();
    for r in 0..n {
        let Some(session) = world.session_of(r) else {
            continue;
        };
        if !members.iter().any(|m| m.id == session) {
            continue;
        }
        let addr = lock(&world.replicas)[r].addr.clone();
        if let Some((synced, last, store)) = world.with_core(r, |c| (c.holds_state(), c.last_applied(), c.store().clone())) {
            world.trace.note(
                world.now_ms(),
                &format!("final state of {addr} ({session:x}): synced={synced} xid={last} {store:?}"),
            );
            states.push((addr, synced, last, store));
        }
    }
    if states.len() != members.len() {
        world.violation(format!(
            "settled: {} members in the view but {} replicas answer for them",
            members.len(),
            states.len()
        ));
    }
    let diverged = states.windows(2).any(|w| (w[0].1, w[0].2, &w[0].3) != (w[1].1, w[1].2, &w[1].3));
    if states.iter().any(|s| !s.1) || diverged {
        let listing: Vec<String> = states
            .iter()
            .map(|(a, s, x, st)| format!("  {a}: synced={s} xid={x} {st:?}"))
            .collect();
        world.violation(format!("settled: the chain's replicas do not agree:\n{}", listing.join("\n")));
    }
}

fn describe_all(world: &World) -> String {
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

impl Report {
    fn broken(cfg: &GrpcSimConfig, why: String) -> Report {
        Report {
            seed: cfg.seed,
            shape: None,
            variant: cfg.variant,
            trace_hash: 0,
            events: 0,
            simulated_ms: 0,
            ops: 0,
            violations: vec![why],
            coverage: Default::default(),
            panic: None,
        }
    }
}

/// The command that replays one seed of `tests/grpc_sim.rs` with its trace.
pub fn replay_command(seed: u64, variant: Variant) -> String {
    format!(
        "CHAIN_GRPC_SIM_SEED={seed} cargo test --features sim --test grpc_sim {}_variant -- --nocapture",
        variant_name(variant)
    )
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
}
