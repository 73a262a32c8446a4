//! The simulated world: virtual time, an event queue, replicas, the network between them.
//! Every choice comes from the seed's `Streams` of `Dice`, one per subsystem, so a seed fixes the whole run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use super::canon::Canon;
use super::checks::{Checks, Violation};
use super::client::Client;
use super::config::SimConfig;
use super::dice::Streams;
use super::env::{Outbox, Outgoing, SimClock, SimCoord, SimNet};
use super::events::{Endpoint, Ev, Fate, ReplyTo};
use super::faults::{Fault, NemesisState, DISK_FAULTS, FAULTS};
use super::linearizability::Op;
use super::measure::PeerSends;
use super::procs::{Proc, SimReplica, Status};
use super::run_shape::{RunShape, Scenario, SCENARIOS};
use super::shape::Shape;
use super::trace::Trace;
use super::view::WorldView;
use super::zk::ZkModel;
use crate::core::{self, Millis, PeerReply, PeerRequest, PullAnswer, Replica, RequestKind};

mod clients;
mod coordination;
mod disks;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Faults,
    Healed {
        at: Millis,
    },
    /// A targeted scenario (`sim/scenario.rs`) makes its own faults: the nemesis stays off,
    /// and an operation may end without a definite answer, as in the fault phase.
    Scenario,
}

/// The network's faults, as the nemesis and the scenarios set them.
#[derive(Default)]
pub struct NetFaults {
    /// Pairs cut off from each other (either way), as cut.
    blocked: BTreeSet<(Endpoint, Endpoint)>,
    /// Messages from the first to the second are lost; the other way gets through.
    one_way: BTreeSet<(Endpoint, Endpoint)>,
    /// Per message, in millionths.
    pub drop_ppm: u64,
    pub dup_ppm: u64,
    /// The quiet phase: no delay long enough to miss a deadline.
    pub short_delays_only: bool,
    /// The answers to this many more `pullState` requests are lost on the way back.
    pub lose_pull_replies: u32,
    /// The answers to this many more `pullState` requests arrive just inside the timeout.
    pub slow_pull_replies: u32,
}

impl NetFaults {
    pub fn cut(&mut self, a: Endpoint, b: Endpoint) {
        self.blocked.insert((a, b));
    }

    /// Ends the cut made as `cut(a, b)`.
    pub fn heal(&mut self, a: Endpoint, b: Endpoint) {
        self.blocked.remove(&(a, b));
    }

    pub fn is_blocked(&self, a: Endpoint, b: Endpoint) -> bool {
        self.blocked.contains(&(a, b)) || self.blocked.contains(&(b, a))
    }

    /// Messages from `from` to `to` are lost from now on (not the other way).
    pub fn cut_one_way(&mut self, from: Endpoint, to: Endpoint) {
        self.one_way.insert((from, to));
    }

    pub fn heal_one_way(&mut self, from: Endpoint, to: Endpoint) {
        self.one_way.remove(&(from, to));
    }

    /// Whether a message from `from` to `to` is lost to a cut, either kind.
    pub fn drops(&self, from: Endpoint, to: Endpoint) -> bool {
        self.is_blocked(from, to) || self.one_way.contains(&(from, to))
    }
}

/// What the clients saw and what the heads issued, for the checks.
#[derive(Default)]
struct Record {
    history: Vec<Op>,
    canon: Canon,
    /// Writes the head accepted, by (client, operation): acknowledging one marks its xid.
    pending_xids: BTreeMap<(usize, u64), core::Xid>,
    ops_finished: usize,
}

/// What the world hands to the events only the layers above it know how to carry out.
#[derive(Clone, Copy)]
pub struct Drivers {
    /// `Ev::Nemesis`: the nemesis's next turn.
    pub nemesis: fn(&mut World),
    /// `Ev::Foreign`: the foreign peer's next request, and how many are left.
    pub foreign: fn(&mut World, u32),
}

pub struct World {
    cfg: SimConfig,
    pub dice: Streams,
    clock: SimClock,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    events: BTreeMap<u64, Ev>,
    next_seq: u64,
    procs: Vec<Proc>,
    zk: ZkModel,
    clients: Vec<Client>,
    pub net: NetFaults,
    record: Record,
    trace: Trace,
    phase: Phase,
    /// The checks' own state and the violations they found.
    checks: Checks,
    pub nemesis: NemesisState,
    drivers: Drivers,
    peer_sends: PeerSends,
    /// What this run drew before it started (see `World::new`).
    shape: RunShape,
    /// Clients draw keys from the newest generation (see `World::fresh_keys`).
    key_generations: usize,
}

impl World {
    pub fn new(cfg: SimConfig, drivers: Drivers) -> Self {
        let trace = Trace::new(cfg.print_trace);
        let mut w = World {
            dice: Streams::new(cfg.seed),
            clock: SimClock::default(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            procs: Vec::new(),
            zk: ZkModel::default(),
            clients: Vec::new(),
            net: NetFaults {
                drop_ppm: if cfg.faults { cfg.drop_ppm } else { 0 },
                dup_ppm: if cfg.faults { cfg.dup_ppm } else { 0 },
                ..NetFaults::default()
            },
            record: Record::default(),
            trace,
            nemesis: NemesisState {
                faults: FAULTS.to_vec(),
                mass_loss_recovering: false,
                power_loss_recovering: false,
            },
            drivers,
            peer_sends: PeerSends::default(),
            shape: RunShape {
                initial_replicas: 0,
                swarm: None,
                faults: cfg.faults,
                tiny_bounds: false,
                max_pending_writes: cfg.max_pending_writes,
                max_sent: cfg.max_sent,
                max_reorder: cfg.max_reorder,
                scenario: Scenario::NewHead,
                disk_faults: None,
                classic_senders: false,
            },
            checks: Checks::default(),
            key_generations: 1,
            phase: Phase::Faults,
            cfg,
        };
        // A quarter of the runs use tiny bounds, so the code at each limit runs too: a head
        // refusing writes as busy, a middle dropping the oldest of its sent list, a reorder
        // window smaller than the number of updates in flight (one per client), so it fills
        // and refuses. Refusals fall back to whole state transfers by design, so these runs
        // skip the cost checks.
        if w.dice.shape.chance(250_000) {
            w.shape.tiny_bounds = true;
            w.cfg.max_pending_writes = w.dice.shape.range(1, 4) as usize;
            w.cfg.max_sent = w.dice.shape.range(2, 8) as usize;
            w.cfg.max_reorder = w.dice.shape.range(1, w.cfg.clients as u64) as usize;
            let note = format!(
                "tiny bounds: {} pending writes, {} sent, {} reordered",
                w.cfg.max_pending_writes, w.cfg.max_sent, w.cfg.max_reorder
            );
            w.trace.note(0, &note);
            (w.shape.max_pending_writes, w.shape.max_sent, w.shape.max_reorder) =
                (w.cfg.max_pending_writes, w.cfg.max_sent, w.cfg.max_reorder);
        }
        // Swarm testing: half the runs give the nemesis only some of its faults, so the rarer
        // interleavings that one kind of fault makes, repeated, are not drowned by the others.
        if w.dice.shape.chance(500_000) {
            let mut chosen: Vec<(Fault, u64)> = FAULTS.iter().copied().filter(|_| w.dice.shape.chance(400_000)).collect();
            if chosen.is_empty() {
                let one = w.dice.shape.weighted(&FAULTS).expect("the faults have weights");
                chosen.extend(FAULTS.iter().copied().filter(|&(f, _)| f == one));
            }
            let names: Vec<&str> = chosen.iter().map(|(f, _)| f.name()).collect();
            w.trace.note(0, &format!("swarm: nemesis faults {}", names.join(", ")));
            w.shape.swarm = Some(chosen.iter().map(|&(f, _)| f).collect());
            w.nemesis.faults = chosen;
        }
        // Some runs start smaller, so one- and two-replica chains (head and tail at once) are
        // exercised too; the nemesis adds replicas as the run goes.
        let initial = w.dice.shape.range(1, w.cfg.initial_replicas as u64 + 1) as usize;
        w.shape.initial_replicas = initial;
        if w.cfg.durable {
            let chosen: Vec<(Fault, u64)> = DISK_FAULTS.iter().copied().filter(|_| w.dice.shape.chance(700_000)).collect();
            w.shape.disk_faults = Some(chosen.iter().map(|&(f, _)| f).collect());
            w.nemesis.faults.extend(chosen);
        }
        // A third of the runs have replicas that send the chain's messages as another
        // implementation does (half of them, each), so their successors watch them.
        w.shape.classic_senders = w.dice.dialect.chance(333_333);
        // The scenario after the failover phase, from its own stream (whose first draw this is).
        w.shape.scenario = w.dice.scenario.weighted(&SCENARIOS).expect("the scenarios have weights");
        for _ in 0..initial {
            w.add_replica();
        }
        for c in 0..w.cfg.clients {
            w.clients.push(Client::new(w.cfg.ops_per_client));
            w.zk.add_client_watcher(c);
            let first = w.dice.clients.range(0, 50);
            w.schedule(first, Ev::ClientWake { client: c });
        }
        w.schedule(10, Ev::ZkExpiry);
        if w.cfg.faults {
            let first = w.dice.nemesis.range(100, 400);
            w.schedule(first, Ev::Nemesis);
        }
        w
    }

    pub fn now(&self) -> Millis {
        self.clock.0.get()
    }

    pub fn schedule(&mut self, after: Millis, ev: Ev) {
        self.schedule_at(self.now() + after, ev);
    }

    pub fn schedule_at(&mut self, at: Millis, ev: Ev) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse((at.max(self.now()), seq)));
        self.events.insert(seq, ev);
    }

    /// A network delay: mostly short, sometimes long, which is what reorders messages.
    pub fn delay(&mut self) -> Millis {
        // A long delay each way outlasts the RPC deadline, which is a fault like any other.
        if !self.net.short_delays_only && self.dice.net.chance(50_000) {
            self.dice.net.range(10, 120)
        } else {
            self.dice.net.range(1, 8)
        }
    }

    pub fn is_blocked(&self, a: Endpoint, b: Endpoint) -> bool {
        self.net.is_blocked(a, b)
    }

    pub fn add_replica(&mut self) -> usize {
        let id = self.procs.len();
        self.procs.push(Proc {
            incarnation: 0,
            status: Status::Crashed,
            replica: None,
            outbox: Outbox::default(),
            addr: format!("10.0.0.{}:7000", id + 1),
            shape: Shape::default(),
            held: Vec::new(),
            disk: None,
            unnamed: self.shape.classic_senders && self.dice.dialect.chance(500_000),
        });
        self.boot(id);
        id
    }

    /// Start a fresh process (a new incarnation) on `proc`: it joins as a brand-new replica.
    pub fn boot(&mut self, proc: usize) {
        let cfg = core::Config {
            variant: self.cfg.variant,
            max_pending_writes: self.cfg.max_pending_writes,
            max_sent: self.cfg.max_sent,
            max_reorder: self.cfg.max_reorder,
            max_key_bytes: self.cfg.max_key_bytes,
            lease_ms: self.cfg.session_timeout / 2,
            retained_settle_ms: self.cfg.session_timeout / 2,
            // Our replicas resend transfers, so this only fires when a predecessor is cut off
            // for long; short enough that runs see it.
            stateless_rejoin_ms: self.cfg.session_timeout * 4,
            // As the runtime derives it (`NodeConfig::new`): longer than the session timeout,
            // so ZooKeeper's expiry removes a crashed replica first.
            suspicion_ms: self.cfg.session_timeout + self.cfg.session_timeout / 2,
            ..core::Config::default()
        };
        self.zk.forget_replica_watchers(proc);
        self.checks.restart(proc);
        let p = &mut self.procs[proc];
        p.incarnation += 1;
        p.status = Status::Up;
        p.held.clear();
        p.outbox = Rc::default();
        p.shape = Shape::default();
        let replica = Replica::new(cfg, self.clock.clone(), SimNet(p.outbox.clone()), SimCoord(p.outbox.clone()));
        let mut replica = self.attach_disk(proc, replica);
        replica.start();
        self.procs[proc].replica = Some(replica);
        let p = &mut self.procs[proc];
        let incarnation = p.incarnation;
        self.drain_all(proc);
        let t = self.dice.procs.range(0, self.cfg.tick);
        self.schedule(t, Ev::Tick { proc, incarnation });
        let t = self.dice.procs.range(0, self.cfg.session_timeout / 4);
        self.schedule(t, Ev::ZkPing { proc, incarnation });
    }

    pub fn proc_of_addr(&self, addr: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.addr == addr)
    }

    /// Run one step on a replica, then carry out whatever it asked for.
    pub fn with_replica<R>(&mut self, proc: usize, f: impl FnOnce(&mut SimReplica) -> R) -> Option<R> {
        let r = self.step_replica(proc, f);
        self.finish_step(proc);
        r
    }

    /// Run one step on a replica and note its new shape; what it asked for waits for
    /// `finish_step`, so that the checks can first learn what the step was.
    fn step_replica<R>(&mut self, proc: usize, f: impl FnOnce(&mut SimReplica) -> R) -> Option<R> {
        let r = self.procs[proc].replica.as_mut().map(f);
        if let Some(after) = self.procs[proc].replica.as_ref().map(Shape::of) {
            let before = std::mem::replace(&mut self.procs[proc].shape, after.clone());
            if before != after {
                let (view, checks) = self.observed();
                checks.replica_step(&view, proc, &before, &after);
            }
        }
        r
    }

    fn finish_step(&mut self, proc: usize) {
        self.drain_all(proc);
        let (view, checks) = self.observed();
        checks.step_done(&view, proc);
    }

    fn drain(&mut self, proc: usize) {
        loop {
            let out: Vec<Outgoing> = std::mem::take(&mut *self.procs[proc].outbox.borrow_mut());
            if out.is_empty() {
                return;
            }
            for o in out {
                self.carry_out(proc, o);
            }
        }
    }

    /// `drain`, then what the replica asked of its disk.
    fn drain_all(&mut self, proc: usize) {
        self.drain(proc);
        self.drain_disk(proc);
    }

    fn carry_out(&mut self, proc: usize, out: Outgoing) {
        let incarnation = self.procs[proc].incarnation;
        match out {
            Outgoing::Join => {
                let t = self.delay();
                self.schedule(t, Ev::ZkJoin { proc, incarnation });
            }
            Outgoing::MarkChainHeld => {
                let t = self.delay();
                self.schedule(t, Ev::ZkMarkChainHeld { proc, incarnation });
            }
            Outgoing::Rejoin => {
                let t = self.delay();
                self.schedule(t, Ev::ZkLeave { proc, incarnation });
            }
            Outgoing::ReportSuspect { suspect, seen_version } => {
                let t = self.delay();
                self.schedule(
                    t,
                    Ev::ZkEvict {
                        proc,
                        incarnation,
                        suspect,
                        seen_version,
                    },
                );
            }
            Outgoing::LeaveChain => {
                let t = self.delay();
                self.schedule(t, Ev::ZkLeaveChain { proc, incarnation });
            }
            Outgoing::RemoveMember { suspect } => {
                let t = self.delay();
                self.schedule(
                    t,
                    Ev::ZkRemove {
                        proc,
                        incarnation,
                        suspect,
                    },
                );
            }
            Outgoing::Peer { to, epoch, request } => self.send_peer(proc, incarnation, to, epoch, request),
            Outgoing::Complete { token, outcome } => self.complete_client(proc, token, outcome),
            Outgoing::Notify { origin } => self.notify_client(proc, origin),
        }
    }

    fn send_peer(&mut self, from: usize, incarnation: u32, to: core::Member, epoch: u64, request: PeerRequest) {
        let kind = request.kind();
        // Probes (an evicted replica's, or of a predecessor that just evicted someone) are not
        // the chain's traffic that the cost and pacing checks judge; `core::suspicion` paces
        // them by the suspicion timeout.
        let probe = core::is_probe_epoch(epoch);
        if !probe && !self.procs[from].replica.as_ref().is_some_and(|r| r.is_parked()) {
            self.peer_sends.count(kind);
        }
        let retained = matches!(request, PeerRequest::PullState { retained: true, .. });
        let (view, checks) = self.observed();
        if !probe {
            checks.peer_send(&view, from, incarnation, to.id, kind, retained);
        }
        let reply_to = ReplyTo {
            proc: from,
            incarnation,
            addressee: to.id,
            link_epoch: self.checks.link_epoch(from, incarnation),
        };
        let target = self.proc_of_addr(&to.addr);
        let lost = match target {
            None => true,
            Some(t) => self.net.drops(Endpoint::Replica(from), Endpoint::Replica(t)) || self.dice.net.chance(self.net.drop_ppm),
        };
        let timeout = self.cfg.rpc_timeout;
        let Some(target) = target.filter(|_| !lost) else {
            self.schedule(
                timeout,
                Ev::PeerReply {
                    to: reply_to,
                    epoch,
                    kind,
                    reply: PeerReply::Unreachable,
                },
            );
            return;
        };
        let fate = if kind == RequestKind::PullState && self.net.lose_pull_replies > 0 {
            // A scenario wants the asker to miss the answer (see `new_head`).
            self.net.lose_pull_replies -= 1;
            Fate::LoseReply
        } else if self.dice.net.chance(self.net.drop_ppm) {
            Fate::LoseReply
        } else {
            Fate::Reply
        };
        let sent_at = self.now();
        if self.dice.net.chance(self.net.dup_ppm) {
            // Some duplicates arrive long after the original, when the sender may no longer
            // be the receiver's neighbour, or no longer alive.
            let t = if self.dice.net.chance(250_000) {
                self.dice.net.range(200, 2 * self.cfg.session_timeout)
            } else {
                self.delay()
            };
            self.schedule(
                t,
                Ev::PeerArrive {
                    from,
                    to: target,
                    epoch,
                    request: request.clone(),
                    fate: Fate::Silent,
                    sent_at,
                    reply_to,
                },
            );
        }
        let t = self.delay();
        self.schedule(
            t,
            Ev::PeerArrive {
                from,
                to: target,
                epoch,
                request,
                fate,
                sent_at,
                reply_to,
            },
        );
    }

    // One argument per field of the `Ev::PeerArrive` it unpacks.
    #[allow(clippy::too_many_arguments)]
    fn peer_arrive(&mut self, from: usize, to: usize, epoch: u64, request: PeerRequest, fate: Fate, sent_at: Millis, reply_to: ReplyTo) {
        let from_node = reply_to.addressee;
        let kind = request.kind();
        let deadline = sent_at + self.cfg.rpc_timeout;
        let unreachable = Ev::PeerReply {
            to: reply_to,
            epoch,
            kind,
            reply: PeerReply::Unreachable,
        };
        if self.procs[to].status == Status::Crashed {
            if fate != Fate::Silent {
                self.schedule_at(deadline, unreachable);
            }
            return;
        }
        let is_transfer = matches!(request, PeerRequest::Transfer(_));
        let propose = match &request {
            PeerRequest::Propose { src, update } => Some((*src, update.xid)),
            _ => None,
        };
        // What installing a transfer may do to the receiver's own link (no state: cheap).
        let transfer_xids = match &request {
            PeerRequest::Transfer(t) => Some((t.state_xid, t.sent.iter().map(|u| u.xid).collect::<Vec<_>>())),
            _ => None,
        };
        let before = self.procs[to].shape.clone();
        let classic = self.procs[from].unnamed && matches!(request, PeerRequest::Propose { .. } | PeerRequest::Transfer(_));
        let addressee = if classic { None } else { Some(from_node) };
        let reply = self.step_replica(to, |r| r.on_addressed_request(addressee, request));
        let Some(reply) = reply else { return };
        if let Some((state_xid, sent)) = transfer_xids.filter(|_| reply == PeerReply::Accepted) {
            let (view, checks) = self.observed();
            checks.transfer_installed(&view, to, &before, state_xid, &sent);
        }
        self.finish_step(to);
        if let Some((src, xid)) = propose {
            let (view, checks) = self.observed();
            checks.propose_answered(&view, to, &before, from_node, src, xid, &reply);
        }
        let accepted = is_transfer && reply == PeerReply::Accepted;
        if accepted || matches!(reply, PeerReply::Pulled(PullAnswer::State(_))) {
            self.checks.state_given(to, accepted);
        }
        if fate == Fate::Silent {
            return;
        }
        let mut back = self.delay();
        if kind == RequestKind::PullState && self.net.slow_pull_replies > 0 && fate == Fate::Reply {
            // A scenario wants the asker's world to move on before the answer lands.
            self.net.slow_pull_replies -= 1;
            back = back.max(deadline.saturating_sub(self.now() + 1));
        }
        // The answer travels back, from `to` to `from`.
        let cut = self.net.drops(Endpoint::Replica(to), Endpoint::Replica(from));
        if fate == Fate::LoseReply || cut || self.now() + back > deadline {
            self.schedule_at(deadline, unreachable);
        } else {
            self.schedule(
                back,
                Ev::PeerReply {
                    to: reply_to,
                    epoch,
                    kind,
                    reply,
                },
            );
        }
    }

    /// Process events until every client is done after the faults stopped, or a check fails.
    pub fn run(&mut self) {
        self.run_until(self.cfg.max_time);
        if !self.finished() && self.ok() {
            self.fail(Violation::liveness(format!(
                "the clients did not finish within {} ms of simulated time",
                self.cfg.max_time
            )));
        }
    }

    /// Process events up to time `until`, or until the run is finished or a check fails.
    pub fn run_until(&mut self, until: Millis) {
        let stop_when_finished = !self.finished();
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                self.clock.0.set(until);
                return;
            }
            self.queue.pop();
            let Some(ev) = self.events.remove(&seq) else { continue };
            self.clock.0.set(at);
            if let Some(p) = ev.target_proc() {
                match self.procs[p].status {
                    // A resumed process first works through what piled up while it was paused,
                    // in order: newer events wait behind the held ones, as in a socket buffer.
                    Status::Paused => {
                        self.procs[p].held.push(ev);
                        continue;
                    }
                    Status::Up if !self.procs[p].held.is_empty() => {
                        self.procs[p].held.push(ev);
                        continue;
                    }
                    Status::Crashed if !matches!(ev, Ev::PeerArrive { .. } | Ev::ClientArrive { .. }) => continue,
                    _ => {}
                }
            }
            self.trace.record(at, &ev);
            if self.cfg.panic_at_event == Some(self.trace.events) {
                panic!("deliberate panic at event {} (SimConfig::panic_at_event)", self.trace.events);
            }
            self.handle(ev);
            self.check_step();
            if !self.ok() || (stop_when_finished && self.finished()) {
                return;
            }
        }
    }

    /// Process events up to time `until`, even past the moment the clients finish (a scripted
    /// scenario's next step).
    pub fn run_to(&mut self, until: Millis) {
        self.run_until(until);
        if self.now() < until {
            // Stopped because the clients finished; the second call does not stop for that.
            self.run_until(until);
        }
    }

    /// Run in steps of `step` ms until `done` holds (true), or until `limit` or a failed check
    /// (false).
    pub fn run_until_holds(&mut self, limit: Millis, step: Millis, done: impl Fn(&World) -> bool) -> bool {
        while self.now() < limit && self.ok() {
            if done(self) {
                return true;
            }
            self.run_to(self.now() + step);
        }
        false
    }

    fn finished(&self) -> bool {
        self.phase != Phase::Faults && self.clients.iter().all(|c| c.is_done())
    }

    pub(super) fn is_current(&self, proc: usize, incarnation: u32) -> bool {
        self.procs[proc].incarnation == incarnation && self.procs[proc].status != Status::Crashed
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { proc, incarnation } => {
                if self.is_current(proc, incarnation) {
                    self.with_replica(proc, |r| r.on_tick());
                    let t = self.cfg.tick;
                    self.schedule(t, Ev::Tick { proc, incarnation });
                }
            }
            Ev::DiskSync { proc, incarnation } => {
                if self.is_current(proc, incarnation) {
                    self.disk_sync(proc);
                }
            }
            Ev::PeerArrive {
                from,
                to,
                epoch,
                request,
                fate,
                sent_at,
                reply_to,
            } => self.peer_arrive(from, to, epoch, request, fate, sent_at, reply_to),
            Ev::PeerReply {
                to: reply_to,
                epoch,
                kind,
                reply,
            } => {
                let ReplyTo {
                    proc: to,
                    incarnation,
                    addressee: from_node,
                    ..
                } = reply_to;
                if self.is_current(to, incarnation) {
                    // A parked replica's probes are not the chain's traffic the checks pace,
                    // and their answers may land after it joined again.
                    if !core::is_probe_epoch(epoch) {
                        let (view, checks) = self.observed();
                        checks.peer_reply(&view, reply_to, kind, &reply);
                    }
                    let before = self.procs[to].shape.clone();
                    let pulled_state = matches!(reply, PeerReply::Pulled(PullAnswer::State(_)));
                    self.step_replica(to, |r| r.on_peer_reply(from_node, epoch, kind, reply));
                    if pulled_state {
                        let (view, checks) = self.observed();
                        checks.pulled_state_taken(&view, to, &before);
                    }
                    self.finish_step(to);
                }
            }
            Ev::ClientArrive {
                client,
                op,
                attempt,
                to,
                req,
            } => self.client_arrive(client, op, attempt, to, req),
            Ev::ClientResult {
                client,
                op,
                attempt,
                result,
            } => self.client_result(client, op, attempt, result),
            Ev::Callback { client, cxid } => self.client_callback(client, cxid),
            Ev::ClientWake { client } => self.client_wake(client),
            Ev::ClientResend { client, op, attempt } => self.client_resend(client, op, attempt),
            Ev::ClientDeadline { client, op } => self.client_deadline(client, op),
            Ev::ZkJoin { proc, incarnation } => self.zk_join(proc, incarnation),
            Ev::ZkMarkChainHeld { proc, incarnation } => self.zk_mark_chain_held(proc, incarnation),
            Ev::ZkLeave { proc, incarnation } => self.zk_leave(proc, incarnation),
            Ev::ZkEvict {
                proc,
                incarnation,
                suspect,
                seen_version,
            } => self.zk_evict(proc, incarnation, suspect, seen_version),
            Ev::ZkLeaveChain { proc, incarnation } => self.zk_leave_chain(proc, incarnation),
            Ev::ZkRemove {
                proc,
                incarnation,
                suspect,
            } => self.zk_remove(proc, incarnation, suspect),
            Ev::ZkWatch { watcher, event } => self.zk_watch(watcher, event),
            Ev::ZkPing { proc, incarnation } => self.zk_ping(proc, incarnation),
            Ev::ZkPingArrive {
                proc,
                incarnation,
                session,
                sent_at,
            } => self.zk_ping_arrive(proc, incarnation, session, sent_at),
            Ev::ZkExpiry => self.zk_expiry(),
            Ev::Nemesis => (self.drivers.nemesis)(self),
            Ev::Foreign { left } => (self.drivers.foreign)(self, left),
            Ev::Heal { a, b } => self.net.heal(a, b),
            Ev::HealOneWay { from, to } => self.net.heal_one_way(from, to),
            Ev::Restart { proc } => {
                if self.procs[proc].status == Status::Crashed {
                    self.boot(proc);
                }
            }
            Ev::Resume { proc } => self.resume(proc),
            Ev::DrainHeld { proc } => self.drain_held(proc),
        }
    }

    /// Stop `proc` for `ms`: what reaches it meanwhile waits, in order.
    pub fn pause(&mut self, proc: usize, ms: Millis) {
        if self.procs[proc].status == Status::Up {
            self.checks.paused(proc);
            self.procs[proc].status = Status::Paused;
            self.schedule(ms, Ev::Resume { proc });
        }
    }

    pub fn resume(&mut self, proc: usize) {
        if self.procs[proc].status != Status::Paused {
            return;
        }
        self.procs[proc].status = Status::Up;
        self.schedule(0, Ev::DrainHeld { proc });
    }

    fn drain_held(&mut self, proc: usize) {
        // Paused again before the drain ran: what is held stays held, every event of it (a
        // timer event dropped here never comes back, and the replica would never retry).
        while !self.procs[proc].held.is_empty() && self.ok() && self.procs[proc].status == Status::Up {
            let ev = self.procs[proc].held.remove(0);
            self.trace.record(self.now(), &ev);
            self.handle(ev);
            self.check_step();
        }
    }

    pub fn crash(&mut self, proc: usize) {
        self.crash_disk(proc);
        let p = &mut self.procs[proc];
        p.status = Status::Crashed;
        p.replica = None;
        p.held.clear();
        p.outbox.borrow_mut().clear();
    }

    /// End of the fault phase: heal every partition, resume and restart every process, and
    /// stop dropping and duplicating messages.
    pub fn heal_all(&mut self) {
        self.net.blocked.clear();
        self.net.one_way.clear();
        self.net.drop_ppm = 0;
        self.net.dup_ppm = 0;
        for p in 0..self.procs.len() {
            match self.procs[p].status {
                Status::Paused => self.resume(p),
                Status::Crashed => self.boot(p),
                Status::Up => {}
            }
        }
        self.phase = Phase::Healed { at: self.now() };
        self.trace.note(self.now(), "healed: no more faults");
    }

    /// Every replica's own account of itself and ZooKeeper's membership, for failure reports.
    pub fn describe_all(&self) -> String {
        self.view().describe_all()
    }

    /// Replicas that are up, in ZooKeeper's membership under their current session, and holds_state.
    pub fn live_synced(&self) -> Vec<usize> {
        self.view().live_synced()
    }

    /// The world as the checks see it.
    pub fn view(&self) -> WorldView<'_> {
        WorldView {
            cfg: &self.cfg,
            procs: &self.procs,
            zk: &self.zk,
            canon: &self.record.canon,
            history: &self.record.history,
            now: self.now(),
            key_generations: self.key_generations,
        }
    }

    /// The world as the checks see it, and the checks' own state, to run a check.
    fn observed(&mut self) -> (WorldView<'_>, &mut Checks) {
        let view = WorldView {
            cfg: &self.cfg,
            procs: &self.procs,
            zk: &self.zk,
            canon: &self.record.canon,
            history: &self.record.history,
            now: self.clock.0.get(),
            key_generations: self.key_generations,
        };
        (view, &mut self.checks)
    }

    /// After every event: the checks that hold at every moment.
    fn check_step(&mut self) {
        let (view, checks) = self.observed();
        checks.step(&view);
    }

    /// No check has failed.
    pub fn ok(&self) -> bool {
        self.checks.ok()
    }

    pub fn fail(&mut self, v: Violation) {
        self.checks.fail(v);
    }

    pub fn fail_all(&mut self, vs: impl IntoIterator<Item = Violation>) {
        for v in vs {
            self.fail(v);
        }
    }

    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    pub fn checks_mut(&mut self) -> &mut Checks {
        &mut self.checks
    }

    pub fn cfg(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    pub fn zk(&self) -> &ZkModel {
        &self.zk
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub fn shape(&self) -> &RunShape {
        &self.shape
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// A line in the trace, at `at` (the current time, or earlier in the same instant's work).
    pub fn note_at(&mut self, at: Millis, what: &str) {
        self.trace.note(at, what);
    }

    /// A line in the trace, at the current time.
    pub fn note(&mut self, what: &str) {
        let now = self.now();
        self.trace.note(now, what);
    }

    pub fn canon(&self) -> &Canon {
        &self.record.canon
    }

    pub fn history_len(&self) -> usize {
        self.record.history.len()
    }

    /// The final reads join the history the linearizability check judges.
    pub fn record_final_reads(&mut self, reads: Vec<Op>) {
        self.record.history.extend(reads);
    }

    pub fn ops_finished(&self) -> usize {
        self.record.ops_finished
    }

    /// Peer requests sent since the last call, which starts the count afresh.
    pub fn take_peer_sends(&mut self) -> PeerSends {
        std::mem::take(&mut self.peer_sends)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Operations client `c` has yet to start.
    pub fn client_ops_left(&self, c: usize) -> usize {
        self.clients[c].ops_left
    }

    pub fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.is_done())
    }

    /// Client `c` sees no membership change until `until`.
    pub fn stall_client_view(&mut self, c: usize, until: Millis) {
        self.clients[c].view_stalled_until = until;
    }

    /// The session of `p`'s replica, if it has one.
    pub fn session_of(&self, p: usize) -> Option<core::NodeId> {
        self.procs[p].replica.as_ref().and_then(|r| r.session_id())
    }
}
