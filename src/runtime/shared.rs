//! What the replica's tasks and its gRPC services share: the core under its lock, and the core's
//! clock and coordinator. Its own module so that the node, which starts the services, and the
//! services, which run the core, both depend on it rather than on each other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use super::network::TonicNetwork;
use super::zk::ZkCoordinator;
use crate::core::{self, Clock, Millis, Replica};

/// Monotonic milliseconds since the process started.
pub struct RuntimeClock {
    base: Instant,
}

impl RuntimeClock {
    pub fn new(base: Instant) -> Self {
        RuntimeClock { base }
    }

    pub fn millis_of(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.base).as_millis() as Millis
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> Millis {
        self.millis_of(Instant::now())
    }
}

/// What the replica asks of its membership task (ZooKeeper in production, a simulated one in
/// the simulator); answers come back as `MembershipEvent`s.
pub trait MembershipControl: Send + Sync {
    /// Open a new session and register (after `SessionLost`).
    fn request_join(&self);
    /// Create the chain's held-state marker; answered by `MembershipEvent::ChainMarker`.
    fn request_chain_marker(&self);
    /// Leave with the current session and report `SessionLost`.
    fn request_rejoin(&self);
    /// List the members now; answered by `MembershipEvent::Listed`.
    fn request_relist(&self);
    /// Record the eviction of `suspect` (`core::Coordinator::report_suspect`).
    fn request_evict(&self, suspect: core::NodeId, seen_version: Option<u64>);
    /// Delete an evicted replica's znode (`core::Coordinator::remove_member`).
    fn request_remove(&self, suspect: core::NodeId);
    /// Delete our znode, keep the session (`core::Coordinator::leave_chain`).
    fn request_leave(&self);
}

impl MembershipControl for ZkCoordinator {
    fn request_join(&self) {
        ZkCoordinator::request_join(self);
    }
    fn request_chain_marker(&self) {
        ZkCoordinator::request_chain_marker(self);
    }
    fn request_rejoin(&self) {
        ZkCoordinator::request_rejoin(self);
    }
    fn request_relist(&self) {
        ZkCoordinator::request_relist(self);
    }
    fn request_evict(&self, suspect: core::NodeId, seen_version: Option<u64>) {
        ZkCoordinator::request_evict(self, suspect, seen_version);
    }
    fn request_leave(&self) {
        ZkCoordinator::request_leave(self);
    }
    fn request_remove(&self, suspect: core::NodeId) {
        ZkCoordinator::request_remove(self, suspect);
    }
}

/// The core's `Coordinator`, handing its requests to the membership task.
pub struct CoreCoordinator {
    control: Arc<dyn MembershipControl>,
    metrics: Arc<Metrics>,
}

impl CoreCoordinator {
    pub fn new(control: Arc<dyn MembershipControl>, metrics: Arc<Metrics>) -> Self {
        CoreCoordinator { control, metrics }
    }
}

impl core::Coordinator for CoreCoordinator {
    fn join(&mut self) {
        self.control.request_join();
    }
    fn mark_chain_held(&mut self) {
        self.control.request_chain_marker();
    }
    fn rejoin(&mut self) {
        self.control.request_rejoin();
    }
    fn report_suspect(&mut self, suspect: core::NodeId, seen_version: Option<u64>) {
        // Counted when asked, whether or not ZooKeeper records it: another reporter may win.
        self.metrics.evictions_reported.inc();
        self.control.request_evict(suspect, seen_version);
    }
    fn leave_chain(&mut self) {
        self.control.request_leave();
    }
    fn remove_member(&mut self, suspect: core::NodeId) {
        self.control.request_remove(suspect);
    }
}

pub type Core = Replica<RuntimeClock, TonicNetwork, CoreCoordinator>;

pub struct Shared {
    core: Mutex<Core>,
    tokens: AtomicU64,
    membership: Arc<dyn MembershipControl>,
    /// Membership listings applied to the core so far (`MembershipEvent::Listed`).
    listings: watch::Sender<u64>,
    /// `stateTransfer` calls being received now (see `Replica::note_transfer_receiving`).
    pub transfers_receiving: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served (`--metrics-listen`), for `Describe`; unset when it is not.
    pub metrics_url: std::sync::OnceLock<String>,
}

impl Shared {
    pub fn new(core: Core, membership: Arc<dyn MembershipControl>, metrics: Arc<Metrics>) -> Self {
        Shared {
            core: Mutex::new(core),
            tokens: AtomicU64::new(1),
            membership,
            listings: watch::Sender::new(0),
            transfers_receiving: AtomicUsize::new(0),
            metrics,
            metrics_url: std::sync::OnceLock::new(),
        }
    }

    /// Run one synchronous step of the core. Never held across an `.await`.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        // A panic inside the core leaves it in an unknown state; serving on from it could
        // break the chain's guarantees, so every later call fails loudly instead.
        let mut core = self.core.lock().expect("the replica core panicked earlier; refusing to continue");
        f(&mut core)
    }

    pub fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    /// Ask for a fresh membership listing and wait, up to `limit`, until one has been applied
    /// to the core. Returns whether one was.
    pub async fn fresh_listing(&self, limit: Duration) -> bool {
        let mut listings = self.listings.subscribe();
        let seen = *listings.borrow_and_update();
        self.membership.request_relist();
        let listed = tokio::time::timeout(limit, listings.wait_for(|n| *n > seen)).await;
        matches!(listed, Ok(Ok(_)))
    }

    /// A membership listing has been applied to the core (`MembershipEvent::Listed`).
    pub fn listed(&self) {
        self.listings.send_modify(|n| *n += 1);
    }
}
