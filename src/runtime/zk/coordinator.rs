//! A replica's membership: register, watch the chain, prove the session alive, notice its loss.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};
use zookeeper_async::{Acl, CreateMode, ZkError, ZkState};

use super::config::{MembershipEvent, ZkConfig};
use super::eviction;
use super::parse::{parse_member, parse_member_id};
use super::session::{OpError, Signal, Target, ZkSession};
use crate::core::{ChainMarker, EvictionRecord, Member, NodeId};
use crate::runtime::metrics::ZkCounters;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a connection attempt, whatever the session timeout.
const CONNECT_BUDGET_MAX: Duration = Duration::from_secs(5);
/// Listing the children again after a failed listing, so a lost watch is not left unarmed.
const RELIST_RETRY: Duration = Duration::from_millis(250);
/// Name prefix of the temporary znode that reveals our session id. It lives beside the root
/// (`Target::meta`), where other implementations, which watch every child of the root, do not
/// see it.
const PROBE_PREFIX: &str = "session-probe-";
/// Listings in a row that may find the children changed under them before we wait for the
/// next watch instead.
const MAX_LIST_ATTEMPTS: u32 = 3;

/// Handle to the background task; clones share it. When the last handle is dropped the task
/// closes the session by itself, but only `close` waits for that.
#[derive(Clone)]
pub struct ZkCoordinator {
    inner: Arc<Inner>,
}

struct Inner {
    join: watch::Sender<u64>,
    marker: watch::Sender<u64>,
    rejoin: watch::Sender<u64>,
    relist: watch::Sender<u64>,
    evict: watch::Sender<EvictRequest>,
    leave: watch::Sender<u64>,
    remove: watch::Sender<(u64, NodeId)>,
    shutdown: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// The latest `request_evict`; `seq` tells a new request from the one already served.
#[derive(Clone, Copy, Debug, Default)]
struct EvictRequest {
    seq: u64,
    suspect: NodeId,
    seen_version: Option<u64>,
}

impl ZkCoordinator {
    /// Spawns the task that connects (retrying forever), registers `advertise` and reports on
    /// `events`. Must be called inside a tokio runtime.
    pub fn spawn(cfg: ZkConfig, advertise: String, events: mpsc::Sender<MembershipEvent>) -> ZkCoordinator {
        Self::spawn_counted(cfg, advertise, events, ZkCounters::detached())
    }

    /// `spawn`, counting reconnects and lost sessions in `counters` (the replica's metrics).
    pub fn spawn_counted(cfg: ZkConfig, advertise: String, events: mpsc::Sender<MembershipEvent>, counters: ZkCounters) -> ZkCoordinator {
        let (join, join_rx) = watch::channel(0u64);
        let (marker, marker_rx) = watch::channel(0u64);
        let (rejoin, rejoin_rx) = watch::channel(0u64);
        let (relist, relist_rx) = watch::channel(0u64);
        let (evict, evict_rx) = watch::channel(EvictRequest::default());
        let (leave, leave_rx) = watch::channel(0u64);
        let (remove, remove_rx) = watch::channel((0u64, 0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let task = Task {
            advertise,
            events,
            counters,
            join: join_rx,
            marker: marker_rx,
            rejoin: rejoin_rx,
            relist: relist_rx,
            evict: evict_rx,
            leave: leave_rx,
            remove: remove_rx,
            shutdown: shutdown_rx,
        };
        tokio::spawn(async move {
            match Target::new(&cfg) {
                Ok(target) => task.run(target).await,
                Err(e) => {
                    // Retrying cannot fix a bad configuration; stay idle until closed.
                    error!("invalid ZooKeeper configuration, not joining: {e:#}");
                    let mut shutdown = task.shutdown;
                    let _ = shutdown.wait_for(|s| *s).await;
                }
            }
            let _ = done_tx.send(true);
        });
        ZkCoordinator {
            inner: Arc::new(Inner {
                join,
                marker,
                rejoin,
                relist,
                evict,
                leave,
                remove,
                shutdown,
                done,
            }),
        }
    }

    /// After `SessionLost`: open a new session and register again. Calls made before the loss
    /// was reported do not count; at other times this does nothing.
    pub fn request_join(&self) {
        self.inner.join.send_modify(|n| *n += 1);
    }

    /// Create the chain's held-state marker if it is missing; the answer comes as
    /// `MembershipEvent::ChainMarker` (on the next session, if there is none now).
    pub fn request_chain_marker(&self) {
        self.inner.marker.send_modify(|n| *n += 1);
    }

    /// Give up the current session: delete our znode, close the session and report
    /// `SessionLost`, after which `request_join` registers anew. Ignored between sessions.
    pub fn request_rejoin(&self) {
        self.inner.rejoin.send_modify(|n| *n += 1);
    }

    /// List the members again now, not only when a watch fires; every listing, changed or not,
    /// is followed by `MembershipEvent::Listed`.
    pub fn request_relist(&self) {
        self.inner.relist.send_modify(|n| *n += 1);
    }

    /// Record the eviction of `suspect` by us if the chain's eviction record is still at
    /// `seen_version` (see `core::Coordinator::report_suspect`). The record is reported back as
    /// `MembershipEvent::Eviction`. Ignored between sessions.
    pub fn request_evict(&self, suspect: NodeId, seen_version: Option<u64>) {
        self.inner.evict.send_modify(|r| {
            *r = EvictRequest {
                seq: r.seq + 1,
                suspect,
                seen_version,
            }
        });
    }

    /// Delete `suspect`'s member znode (`core::Coordinator::remove_member`). Ignored between
    /// sessions.
    pub fn request_remove(&self, suspect: NodeId) {
        self.inner.remove.send_modify(|(seq, s)| {
            *seq += 1;
            *s = suspect;
        });
    }

    /// Delete our member znode but keep the session: views and eviction records keep coming,
    /// and a lost session is still reported. Ignored between sessions.
    pub fn request_leave(&self) {
        self.inner.leave.send_modify(|n| *n += 1);
    }

    /// Deletes our znode and closes the session, then ends the task. Idempotent; returns within
    /// about two session timeouts even if ZooKeeper is unreachable.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let mut done = self.inner.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

struct Task {
    advertise: String,
    events: mpsc::Sender<MembershipEvent>,
    counters: ZkCounters,
    join: watch::Receiver<u64>,
    marker: watch::Receiver<u64>,
    rejoin: watch::Receiver<u64>,
    relist: watch::Receiver<u64>,
    evict: watch::Receiver<EvictRequest>,
    leave: watch::Receiver<u64>,
    remove: watch::Receiver<(u64, NodeId)>,
    shutdown: watch::Receiver<bool>,
}

/// Our znode, once created.
struct Registration {
    session_id: u64,
    path: String,
    /// When the round trip that created it started.
    at: Instant,
}

enum Ended {
    /// `close` was called, or every handle and the event receiver are gone.
    Shutdown,
    Lost(String),
    /// The replica asked to leave and join again (`request_rejoin`).
    Rejoin,
}

/// Resolves when `close` is called or every handle is dropped.
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Task {
    async fn run(mut self, target: Target) {
        loop {
            // The session lives outside the cancellable future so that shutdown can close it.
            let mut slot: Option<ZkSession> = None;
            let mut shutdown = self.shutdown.clone();
            let reg = tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => None,
                reg = self.establish(&target, &mut slot) => Some(reg),
            };
            let Some(reg) = reg else {
                // Closing also removes a znode registered just before the cancellation.
                if let Some(s) = slot.take() {
                    s.close(None).await;
                }
                return;
            };
            let Some(mut session) = slot.take() else {
                error!("internal error: registered without a ZooKeeper session");
                return;
            };
            info!(
                "registered {} at ZooKeeper {} as {} (session 0x{:x})",
                self.advertise, target.hosts_label, reg.path, reg.session_id
            );

            let ended = tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => Ended::Shutdown,
                ended = self.serve(&target, &mut session, &reg) => ended,
            };
            // A join requested before the loss is reported must not trigger a rejoin.
            let seen = match ended {
                Ended::Shutdown => {
                    info!(
                        "leaving the chain: deleting {} and closing session 0x{:x}",
                        reg.path, reg.session_id
                    );
                    session.close(Some(&reg.path)).await;
                    return;
                }
                Ended::Rejoin => {
                    info!(
                        "leaving the chain to join again: deleting {} and closing session 0x{:x}",
                        reg.path, reg.session_id
                    );
                    let seen = *self.join.borrow_and_update();
                    // The znode must go for the predecessor to see a new successor, and before
                    // we register again, so the two never stand side by side. Bounded by the
                    // operation timeouts; the replica asking holds no state meanwhile.
                    session.close(Some(&reg.path)).await;
                    seen
                }
                Ended::Lost(why) => {
                    warn!("ZooKeeper session 0x{:x} lost: {why}", reg.session_id);
                    self.counters.session_losses.inc();
                    let seen = *self.join.borrow_and_update();
                    // After an expiry the library has quietly opened a replacement session,
                    // which must not live on. Closing can take up to the timeouts, and the owner
                    // should hear of the loss first. No delete: whatever is at our path now is
                    // not ours to remove, and closing removes what still is.
                    tokio::spawn(session.close(None));
                    seen
                }
            };
            let sent = tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => false,
                r = self.events.send(MembershipEvent::SessionLost) => r.is_ok(),
            };
            if !sent {
                return;
            }
            let mut join = self.join.clone();
            let requested = tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => false,
                r = join.wait_for(|n| *n > seen) => r.is_ok(),
            };
            if !requested {
                return;
            }
            info!("joining the chain again with a new ZooKeeper session");
        }
    }

    /// Connects and registers, retrying with backoff until it works. The session is left in
    /// `slot` as soon as it exists.
    async fn establish(&self, target: &Target, slot: &mut Option<ZkSession>) -> Registration {
        let budget = target.session_timeout.min(CONNECT_BUDGET_MAX);
        let mut backoff = BACKOFF_MIN;
        loop {
            let failure = match ZkSession::open(target, budget).await {
                Err(e) => format!("ZooKeeper unreachable at {}: {e:#}", target.hosts_label),
                Ok(session) => {
                    let session = slot.insert(session);
                    match self.register(target, session).await {
                        Ok(reg) => return reg,
                        Err(e) => {
                            // Dropping closes it in the background.
                            *slot = None;
                            format!(
                                "cannot register {} under {} at ZooKeeper {}: {e:#}",
                                self.advertise, target.root, target.hosts_label
                            )
                        }
                    }
                }
            };
            warn!("{failure}; retrying in {backoff:?}");
            sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn register(&self, target: &Target, session: &ZkSession) -> anyhow::Result<Registration> {
        let zk = session.zk();
        let acl = || Acl::open_unsafe().clone();
        // The root may be missing, or be deleted between our steps: a few rounds.
        for _ in 0..3 {
            session.ensure_path(&target.root).await?;
            session.ensure_path(&target.meta).await?;

            // zookeeper-async has no call returning the session id: an ephemeral znode's owner is it.
            let probe = super::parse::child_path(&target.meta, PROBE_PREFIX);
            let (probe_path, stat) = match session
                .op(zk.create2(&probe, Vec::new(), acl(), CreateMode::EphemeralSequential))
                .await
            {
                Ok(r) => r,
                Err(e) if e.is(ZkError::NoNode) => continue,
                Err(e) => return Err(anyhow!("cannot create {probe}*: {e}")),
            };
            let session_id = stat.ephemeral_owner as u64;
            if let Err(e) = session.op(zk.delete(&probe_path, None)).await {
                // Harmless: it is ephemeral and not a member name.
                debug!("could not delete {probe_path}: {e}");
            }
            if session_id == 0 {
                return Err(anyhow!("{probe_path} came back without an ephemeral owner"));
            }

            let path = target.child(&format!("{session_id:x}"));
            let at = Instant::now();
            // Exactly `host:port`: other implementations dial the data verbatim, and a trailing
            // newline ends up in their HTTP/2 `:authority`, which our server refuses.
            let data = self.advertise.clone().into_bytes();
            match session.op(zk.create(&path, data, acl(), CreateMode::Ephemeral)).await {
                Ok(_) => {}
                Err(e) if e.is(ZkError::NoNode) => continue,
                // Only one create per session, so this should not happen; if it does, the node
                // is acceptable only if it is ours.
                Err(e) if e.is(ZkError::NodeExists) => match session.op(zk.exists(&path, false)).await {
                    Ok(Some(stat)) if stat.ephemeral_owner as u64 == session_id => {}
                    Ok(_) => return Err(anyhow!("{path} exists and is not ours")),
                    Err(e) => return Err(anyhow!("cannot check existing {path}: {e}")),
                },
                Err(e) => return Err(anyhow!("cannot create {path}: {e}")),
            }
            // A reply over a replacement session would have been preceded by the expiry flag.
            if session.expired() {
                return Err(anyhow!("the session expired while registering"));
            }
            return Ok(Registration { session_id, path, at });
        }
        Err(anyhow!("{} keeps disappearing", target.root))
    }

    /// Reports membership until the session is lost. Cancelled on shutdown.
    async fn serve(&mut self, target: &Target, session: &mut ZkSession, reg: &Registration) -> Ended {
        if self
            .events
            .send(MembershipEvent::Joined {
                session_id: reg.session_id,
            })
            .await
            .is_err()
        {
            return Ended::Shutdown;
        }
        // Signals so far predate the registration: the first listing below covers them. An
        // expiry among them has set the flag the listing checks. So do relist and rejoin
        // requests: they were about an earlier session. A marker request still needs answering.
        while session.signals.try_recv().is_ok() {}
        self.relist.borrow_and_update();
        self.rejoin.borrow_and_update();
        self.evict.borrow_and_update();
        self.leave.borrow_and_update();
        self.remove.borrow_and_update();
        // Out of the chain on purpose (evicted, or asked to leave): our znode is gone and the
        // session stays (see `core::suspicion`).
        let mut parked = false;
        let mut last_record: Option<EvictionRecord> = None;
        let record_path = target.eviction_record();
        // Whether the record must be read (and its watch armed) at the next listing: only when
        // its watch fired or the connection was re-established, so watches do not pile up in
        // the client library between evictions.
        let mut need_record = true;
        let mut last_view: Option<Vec<Member>> = None;
        // Whether a child watch is armed on the server; the library forgets to re-arm after a
        // reconnect, so this is cleared on every `Connected`.
        let mut armed = false;
        let mut need_list = true;
        let mut first_alive = Some(reg.at);
        let period = target.session_timeout / 4;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut alive_failing = false;
        let mut relist_at: Option<Instant> = None;

        loop {
            // Disconnected, listing cannot work; `Connected` asks for it again.
            if need_list && session.connected() {
                need_list = false;
                // The record first: if it names us, our znode is gone on purpose.
                let record = if need_record {
                    eviction::read_and_watch(target, session).await
                } else {
                    Ok(None)
                };
                need_record = record.is_err();
                match record {
                    Ok(Some(record)) if last_record != Some(record) => {
                        last_record = Some(record);
                        parked |= record.suspect == reg.session_id;
                        if self.events.send(MembershipEvent::Eviction(record)).await.is_err() {
                            return Ended::Shutdown;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!("reading {record_path} failed: {e}; retrying");
                        relist_at = Some(Instant::now() + RELIST_RETRY);
                    }
                }
                match self.list(target, session, reg, parked).await {
                    Ok((members, version)) => {
                        armed = true;
                        relist_at = None;
                        if last_view.as_ref() != Some(&members) {
                            last_view = Some(members.clone());
                            if self.events.send(MembershipEvent::View { members, version }).await.is_err() {
                                return Ended::Shutdown;
                            }
                        }
                        if self.events.send(MembershipEvent::Listed).await.is_err() {
                            return Ended::Shutdown;
                        }
                    }
                    Err(ListError::Lost(why)) => return Ended::Lost(why),
                    Err(ListError::Evicted) => {
                        parked = true;
                        need_record = true;
                        need_list = true;
                        continue;
                    }
                    Err(ListError::Failed(why)) => {
                        debug!("listing {} failed: {why}; retrying", target.root);
                        armed = false;
                        relist_at = Some(Instant::now() + RELIST_RETRY);
                    }
                }
                if let Some(at) = first_alive.take() {
                    if !session.expired() && self.events.send(MembershipEvent::Alive { at }).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
            }

            let retry = async {
                match relist_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                signal = session.signals.recv() => {
                    let Some(signal) = signal else {
                        return Ended::Lost("the ZooKeeper client stopped".to_string());
                    };
                    // Coalesce a burst (several watches firing at once) into one listing.
                    let mut next = Some(signal);
                    while let Some(signal) = next {
                        match signal {
                            Signal::Watch(ev) => {
                                // The children or the eviction record: one listing reads both.
                                debug!("ZooKeeper watch fired: {:?} on {:?}", ev.event_type, ev.path);
                                need_record |= ev.path.as_deref() == Some(record_path.as_str());
                                need_list = true;
                            }
                            #[allow(deprecated)]
                            Signal::State(ZkState::NotConnected) => {
                                return Ended::Lost("ZooKeeper reported the session expired".to_string());
                            }
                            Signal::State(ZkState::Closed) => {
                                return Ended::Lost("the ZooKeeper client closed".to_string());
                            }
                            Signal::State(ZkState::AuthFailed) => {
                                return Ended::Lost("ZooKeeper authentication failed".to_string());
                            }
                            Signal::State(ZkState::Connected) | Signal::State(ZkState::ConnectedReadOnly) => {
                                debug!("ZooKeeper connection re-established; re-arming the watch");
                                self.counters.reconnects.inc();
                                armed = false;
                                need_record = true;
                                need_list = true;
                            }
                            Signal::State(state) => debug!("ZooKeeper client state: {state:?}"),
                        }
                        next = session.signals.try_recv().ok();
                    }
                }
                _ = retry => {
                    relist_at = None;
                    need_list = true;
                }
                // An error means every handle is gone: shutting down.
                r = self.relist.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    need_list = true;
                }
                r = self.rejoin.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    return Ended::Rejoin;
                }
                r = self.evict.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    let request = *self.evict.borrow_and_update();
                    if parked {
                        continue;
                    }
                    if let Err(e) = eviction::evict(target, session, reg.session_id, request.suspect, request.seen_version).await {
                        warn!("cannot record the eviction of {:x}: {e}", request.suspect);
                    }
                    // Whatever happened, the record may have changed: read it.
                    need_record = true;
                    need_list = true;
                }
                r = self.leave.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    // Also when already parked: the record may have told us before the core did.
                    parked = true;
                    match session.op(session.zk().delete(&reg.path, None)).await {
                        Ok(()) => info!("left the chain: deleted {} (session 0x{:x} kept)", reg.path, reg.session_id),
                        Err(e) if e.is(ZkError::NoNode) => {}
                        // Deleting is what leaving means: without it, give the session up.
                        Err(e) => return Ended::Lost(format!("cannot delete {} to leave the chain: {e}", reg.path)),
                    }
                    need_list = true;
                }
                r = self.remove.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    let (_, suspect) = *self.remove.borrow_and_update();
                    if let Err(e) = eviction::remove(target, session, suspect).await {
                        warn!("cannot remove evicted replica {suspect:x}: {e}");
                    }
                }
                r = self.marker.changed() => {
                    if r.is_err() {
                        return Ended::Shutdown;
                    }
                    let answer = mark_chain_held(target, session).await;
                    if self.events.send(MembershipEvent::ChainMarker(answer)).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                _ = ticker.tick() => {
                    if !session.connected() {
                        if !alive_failing {
                            warn!("lost the connection to ZooKeeper at {}; reconnecting", target.hosts_label);
                            alive_failing = true;
                        }
                        continue;
                    }
                    let at = Instant::now();
                    // Parked, our znode is gone: any answer on our session proves it alive.
                    let checked = if parked { &target.meta } else { &reg.path };
                    match session.op(session.zk().exists(checked, false)).await {
                        Ok(_) if parked => {
                            if session.expired() {
                                return Ended::Lost("ZooKeeper reported the session expired".to_string());
                            }
                            if self.events.send(MembershipEvent::Alive { at }).await.is_err() {
                                return Ended::Shutdown;
                            }
                        }
                        Ok(Some(stat)) if stat.ephemeral_owner as u64 == reg.session_id => {
                            if session.expired() {
                                return Ended::Lost("ZooKeeper reported the session expired".to_string());
                            }
                            // The lease is renewed only while no eviction record names us, so
                            // an evicted replica that misses the record's watch still stops
                            // serving before its reporter removes it (see `core::suspicion`).
                            match eviction::read(target, session).await {
                                Ok(Some(r)) if r.suspect == reg.session_id => {
                                    parked = true;
                                    need_record = true;
                                    need_list = true;
                                    continue;
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    debug!("cannot read {record_path}: {e}");
                                    continue;
                                }
                            }
                            if alive_failing {
                                info!("ZooKeeper reachable again at {}", target.hosts_label);
                                alive_failing = false;
                            }
                            if self.events.send(MembershipEvent::Alive { at }).await.is_err() {
                                return Ended::Shutdown;
                            }
                        }
                        Ok(Some(stat)) => {
                            return Ended::Lost(format!(
                                "{} now belongs to session 0x{:x}",
                                reg.path, stat.ephemeral_owner as u64
                            ));
                        }
                        // Deleted by a reporter: the listing reads the record that says so.
                        Ok(None) if self.evicted_us(target, session, reg).await => {
                            parked = true;
                            need_record = true;
                            need_list = true;
                        }
                        Ok(None) => return Ended::Lost(format!("{} disappeared", reg.path)),
                        Err(e) => {
                            if !alive_failing {
                                warn!("ZooKeeper at {} not answering: {e}", target.hosts_label);
                                alive_failing = true;
                            } else {
                                debug!("ZooKeeper still not answering: {e}");
                            }
                        }
                    }
                    if !armed && relist_at.is_none() {
                        need_list = true;
                    }
                }
            }
        }
    }

    /// Whether the chain's eviction record names our session (our znode was deleted for it).
    async fn evicted_us(&self, target: &Target, session: &ZkSession, reg: &Registration) -> bool {
        matches!(eviction::read_and_watch(target, session).await, Ok(Some(r)) if r.suspect == reg.session_id)
    }

    /// Lists the members and arms a child watch; returns them with the view's version. Unless
    /// `parked`, our own znode must be among them.
    async fn list(&self, target: &Target, session: &ZkSession, reg: &Registration, parked: bool) -> Result<(Vec<Member>, u64), ListError> {
        let deleted = || ListError::Lost(format!("{} was deleted", target.root));
        // zookeeper-async has no getChildren2, so the listing's version (the root's pzxid) is
        // read before and after it; equal means no child changed in between. Reads on one
        // session are served in order.
        let pzxid = || async {
            match session.op(session.zk().exists(&target.root, false)).await {
                Ok(Some(stat)) => Ok(stat.pzxid as u64),
                Ok(None) => Err(deleted()),
                Err(e) => Err(ListError::Failed(e.to_string())),
            }
        };
        let mut attempt = 0;
        let mut before = pzxid().await?;
        let (names, version) = loop {
            let names = match session
                .op(session.zk().get_children_w(&target.root, session.watch_callback()))
                .await
            {
                Ok(names) => names,
                Err(e) if e.is(ZkError::NoNode) => return Err(deleted()),
                Err(e) => return Err(ListError::Failed(e.to_string())),
            };
            let after = pzxid().await?;
            if after == before {
                break (names, before);
            }
            before = after;
            attempt += 1;
            if attempt == MAX_LIST_ATTEMPTS {
                return Err(ListError::Failed(format!("{} kept changing while being listed", target.root)));
            }
        };
        if session.expired() {
            return Err(ListError::Lost("ZooKeeper reported the session expired".to_string()));
        }
        let own = format!("{:x}", reg.session_id);
        if !parked && !names.contains(&own) {
            if self.evicted_us(target, session, reg).await {
                return Err(ListError::Evicted);
            }
            return Err(ListError::Lost(format!("{} is no longer listed under {}", reg.path, target.root)));
        }
        let members = read_members(session, target, &names)
            .await
            .map_err(|e| ListError::Failed(e.to_string()))?;
        if session.expired() {
            return Err(ListError::Lost("ZooKeeper reported the session expired".to_string()));
        }
        Ok((members, version))
    }
}

/// Creates the persistent marker that says this chain has held state (see
/// `core::Coordinator::mark_chain_held`). Creating is atomic, so exactly one replica ever hears
/// `Created`.
async fn mark_chain_held(target: &Target, session: &ZkSession) -> ChainMarker {
    let path = target.held_state_marker();
    if let Err(e) = session.ensure_path(&target.meta).await {
        warn!("cannot create {}: {e:#}", target.meta);
        return ChainMarker::Unavailable;
    }
    let acl = Acl::open_unsafe().clone();
    let answer = match session
        .op(session.zk().create(&path, Vec::new(), acl, CreateMode::Persistent))
        .await
    {
        Ok(_) => {
            info!("created {path}: this chain holds state from now on");
            ChainMarker::Created
        }
        Err(e) if e.is(ZkError::NodeExists) => ChainMarker::Existed,
        Err(e) => {
            warn!("cannot create {path}: {e}");
            ChainMarker::Unavailable
        }
    };
    // A reply over a replacement session proves nothing about ours, but the marker itself is
    // not tied to a session: whoever created it, it exists.
    if answer == ChainMarker::Created && session.expired() {
        return ChainMarker::Existed;
    }
    answer
}

enum ListError {
    /// Our registration is gone: the session must be replaced.
    Lost(String),
    /// Our znode was deleted by a replica that evicted us: list again, parked.
    Evicted,
    Failed(String),
}

/// Reads and parses the member znodes among `names`, sorted by id. Malformed ones are skipped.
pub(super) async fn read_members(session: &ZkSession, target: &Target, names: &[String]) -> Result<Vec<Member>, OpError> {
    let mut members = Vec::with_capacity(names.len());
    for name in names {
        if let Err(e) = parse_member_id(name) {
            debug!("ignoring {}: {e}", target.child(name));
            continue;
        }
        let path = target.child(name);
        let data = match session.op(session.zk().get_data(&path, false)).await {
            Ok((data, _)) => data,
            // Left between the listing and now; the watch reports it.
            Err(e) if e.is(ZkError::NoNode) => continue,
            Err(e) => return Err(e),
        };
        match parse_member(name, &data) {
            Ok(m) => members.push(m),
            Err(e) => debug!("ignoring {path}: {e}"),
        }
    }
    members.sort();
    Ok(members)
}
