//! Tail variant: the tail's calls back to clients (`TailClient.cxidProcessed`), queued per
//! client instead of dropped.
//!
//! The core calls `Network::notify_client(origin)` once the tail applied a write and expects
//! nothing back. Each callback goes into the queue of its client, keyed by the callback address
//! (`host:port`). A dispatcher task takes callbacks from the queues round-robin, one client at
//! a time, and calls them while fewer than [`CallbackConfig::calls_in_flight`] calls are out in
//! all and fewer than [`CallbackConfig::calls_per_client`] to that client. A failed or timed
//! out call is retried, the client waiting a backoff between attempts and having one call at a
//! time until one succeeds, until the callback's deadline; then the callback is dropped. So a
//! slow or silent client holds at most its own few calls and its own queue, and every other
//! client is served in its turn.
//!
//! Every queue is bounded: per client, and all of them together by an estimate of their bytes.
//! At a bound the oldest callback of the client with the longest queue (at the per-client
//! bound, of that client) is dropped and counted. Drops are logged per client, at most one line
//! per [`LOG_EVERY`] with the counts since the last one. A client whose queue is empty and has
//! no call out is forgotten; the channels to clients are kept in a bounded cache.
//!
//! [`Scheduler`] is the queues, bounds and turns, without sockets or clocks of its own (the
//! caller passes the time), so it is tested on its own below; [`Callbacks`] runs it with tokio
//! and tonic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::connect::Connect;
use super::metrics::CallbackCounters;
use crate::pb::adb;
use crate::pb::adb::tail_client_client::TailClientClient;

/// How the tail's callbacks are queued, called, retried and bounded.
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// Callbacks queued or being called for one client. 65,536 is the most writes our client
    /// lets wait for their callbacks (`ClientOptions::max_waiting_writes`): a client of ours
    /// never has more waiting, so a longer queue would hold only callbacks nobody waits for.
    pub per_client: usize,
    /// Estimated bytes of all queues together: each callback counts [`ENTRY_BYTES`], each
    /// client [`CLIENT_BYTES`] plus its address. 64 MiB holds 16 clients' full queues, or
    /// 200,000 clients with one callback each, while staying below what a
    /// replica holds otherwise (a head under overload peaks near 90 MiB; see docs/overload.md).
    pub total_bytes: usize,
    /// Calls in flight to one client. h2 carries them on one connection; 32 keep up with the
    /// fastest a chain writes for one client (a callback takes well under a millisecond on a
    /// LAN), and a client that does not answer holds only these until its first call fails,
    /// and one after that.
    pub calls_per_client: usize,
    /// Calls in flight in all, shared by the clients in turn: the bound the replica had on
    /// callbacks before they were queued, each one a task and an h2 stream.
    pub calls_in_flight: usize,
    /// How long a callback is tried, from when the tail applied its write. Our client waits
    /// for a callback until its operation's deadline (10 s by default, counted from sending
    /// the write), so a later callback reaches nobody of ours; 30 s leaves room for clients
    /// with longer deadlines and for a short outage between tail and client, and bounds how
    /// long a client that is gone keeps its queue.
    pub deadline: Duration,
    /// Wait after a failed attempt before the client's next one, doubling per failure up to
    /// `backoff_max`. 2 s at most: a client back after a short outage is called again within
    /// that, and a silent client costs one call slot about half of the time.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Channels to clients kept for reuse, the least recently used dropped past it: enough
    /// for as many clients as calls in flight, so busy clients keep their connection.
    pub channels: usize,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            per_client: 65_536,
            total_bytes: 64 * 1024 * 1024,
            calls_per_client: 32,
            calls_in_flight: 1024,
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            channels: 1024,
        }
    }
}

/// What one queued callback costs in the byte estimate: the entry (cxid, arrival, deadline,
/// attempts: 32 bytes) twice over, since a queue may hold up to double its length in spare
/// capacity.
pub const ENTRY_BYTES: usize = 64;
/// What one client costs besides its address and callbacks: its record, map slot, and its
/// places in the turn order and the indexes.
pub const CLIENT_BYTES: usize = 256;
/// Drops of one client are logged at most once per this, with the counts since the last line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// One callback: the write's cxid, and until when it is worth calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub cxid: i32,
    /// Order of arrival: queues are kept in it, and so in deadline order.
    pub seq: u64,
    pub deadline: Instant,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A callback to call now, taken out of its queue until [`Scheduler::complete`] returns it.
#[derive(Debug)]
pub struct Dispatch {
    pub addr: Arc<str>,
    pub entry: Entry,
    /// The attempt's deadline: the configured attempt timeout, or less near the callback's own.
    pub timeout: Duration,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client answered.
    Delivered,
    /// Transport failure or timeout: the client may not have it; try again after a backoff.
    Failed(String),
    /// The client answered with an error that another attempt would get too (it does not serve
    /// `TailClient`, refused our certificate...), or its address is not one we can dial.
    Refused(String),
}

/// Why callbacks were dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Not delivered by their deadline.
    pub expired: u64,
    /// Pushed out of a full queue (the client's, or all of them), the oldest first.
    pub over_bound: u64,
    /// Refused by the client (see [`Outcome::Refused`]).
    pub refused: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.expired + self.over_bound + self.refused
    }

    fn add(&mut self, other: &Drops) {
        self.expired += other.expired;
        self.over_bound += other.over_bound;
        self.refused += other.refused;
    }
}

/// Something worth a log line; the caller logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Callbacks of `addr` dropped since its last report.
    Dropped {
        addr: Arc<str>,
        drops: Drops,
        last_error: Option<String>,
    },
    /// Calls to `addr` started failing: from now on one at a time, with backoff.
    Failing { addr: Arc<str>, error: String },
}

/// Totals since the start, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Attempts handed out by `next_dispatch`.
    pub attempts: u64,
    pub delivered: u64,
    pub retried: u64,
    pub drops: Drops,
}

/// A queue's place in [`Scheduler::by_len`]: its length, its oldest callback, its client.
type LenKey = (usize, Reverse<u64>, Arc<str>);

struct Client {
    /// Tells this client apart from an earlier one at the same address in the turn order and
    /// the backoff index, which are cleaned lazily.
    id: u64,
    queue: VecDeque<Entry>,
    in_flight: usize,
    /// Consecutive failed attempts, counted once per backoff; while above 0 the client gets
    /// one call at a time.
    failures: u32,
    /// No call before this.
    retry_at: Option<Instant>,
    /// Has a place in the turn order.
    in_ring: bool,
    /// Dropped since the last report, and when that was.
    unreported: Drops,
    reported_at: Option<Instant>,
    failing_reported_at: Option<Instant>,
    last_error: Option<String>,
}

/// The callback queues of every client, their bounds and turns. Time is passed in.
pub struct Scheduler {
    cfg: CallbackConfig,
    attempt_timeout: Duration,
    clients: HashMap<Arc<str>, Client>,
    /// Clients that may be called now, in turn order. Entries of clients that changed since
    /// (checked against `Client::id` and `in_ring`) are skipped.
    ring: VecDeque<(u64, Arc<str>)>,
    /// Clients waiting out a backoff, by when it ends.
    waking: BTreeSet<(Instant, u64, Arc<str>)>,
    /// Clients with a non-empty queue by its length, then by the age of its oldest callback,
    /// to find the longest (and of those the oldest) at the total bound.
    by_len: BTreeSet<LenKey>,
    in_flight: usize,
    bytes: usize,
    next_id: u64,
    next_seq: u64,
    stats: Stats,
    reports: Vec<Report>,
}

impl Scheduler {
    /// `attempt_timeout`: the deadline of one call.
    pub fn new(cfg: CallbackConfig, attempt_timeout: Duration) -> Self {
        let cfg = CallbackConfig {
            per_client: cfg.per_client.max(1),
            calls_per_client: cfg.calls_per_client.max(1),
            calls_in_flight: cfg.calls_in_flight.max(1),
            ..cfg
        };
        Scheduler {
            cfg,
            attempt_timeout,
            clients: HashMap::new(),
            ring: VecDeque::new(),
            waking: BTreeSet::new(),
            by_len: BTreeSet::new(),
            in_flight: 0,
            bytes: 0,
            next_id: 0,
            next_seq: 0,
            stats: Stats::default(),
            reports: Vec::new(),
        }
    }

    /// Queue a callback of `cxid` for the client at `addr` (`host:port`).
    pub fn push(&mut self, addr: &str, cxid: i32, now: Instant) {
        let key: Arc<str> = match self.clients.get_key_value(addr) {
            Some((k, _)) => k.clone(),
            None => {
                let key: Arc<str> = Arc::from(addr);
                self.next_id += 1;
                self.clients.insert(
                    key.clone(),
                    Client {
                        id: self.next_id,
                        queue: VecDeque::new(),
                        in_flight: 0,
                        failures: 0,
                        retry_at: None,
                        in_ring: false,
                        unreported: Drops::default(),
                        reported_at: None,
                        failing_reported_at: None,
                        last_error: None,
                    },
                );
                self.bytes += CLIENT_BYTES + key.len();
                key
            }
        };
        let full = self
            .clients
            .get(&key)
            .is_some_and(|c| c.queue.len() + c.in_flight >= self.cfg.per_client);
        if full {
            self.drop_oldest(&key, now);
        }
        self.next_seq += 1;
        let entry = Entry {
            cxid,
            seq: self.next_seq,
            deadline: now + self.cfg.deadline,
            attempts: 0,
        };
        self.edit_queue(&key, |q| q.push_back(entry));
        self.bytes += ENTRY_BYTES;
        // Over the total: the longest queue gives up its oldest callback, so clients with
        // short queues lose nothing to a client that is behind.
        while self.bytes > self.cfg.total_bytes {
            let Some((_, _, victim)) = self.by_len.last().cloned() else { break };
            self.drop_oldest(&victim, now);
            self.free_if_idle(&victim);
        }
        self.enlist(&key, now);
    }

    /// The next callback to call, if the caps allow one; call until `None`.
    pub fn next_dispatch(&mut self, now: Instant) -> Option<Dispatch> {
        self.wake(now);
        while self.in_flight < self.cfg.calls_in_flight {
            let (id, key) = self.ring.pop_front()?;
            let Some(client) = self.clients.get_mut(&key) else { continue };
            if client.id != id || !client.in_ring {
                continue;
            }
            client.in_ring = false;
            if client.retry_at.is_some_and(|t| t > now) {
                continue; // in `waking`, back in the ring when its backoff ends
            }
            self.drop_expired(&key, now);
            let cap = self.cap(&key);
            let Some(client) = self.clients.get(&key) else { continue };
            if client.queue.is_empty() || client.in_flight >= cap {
                self.free_if_idle(&key);
                continue;
            }
            let Some(mut entry) = self.edit_queue(&key, |q| q.pop_front()).flatten() else {
                continue;
            };
            entry.attempts += 1;
            self.stats.attempts += 1;
            self.in_flight += 1;
            if let Some(c) = self.clients.get_mut(&key) {
                c.in_flight += 1;
            }
            self.enlist(&key, now);
            let timeout = self.attempt_timeout.min(entry.deadline.saturating_duration_since(now));
            return Some(Dispatch { addr: key, entry, timeout });
        }
        None
    }

    /// The end of an attempt handed out by `next_dispatch`.
    pub fn complete(&mut self, addr: &str, entry: Entry, outcome: Outcome, now: Instant) {
        let Some((key, client)) = self.clients.get_key_value(addr) else {
            return;
        };
        let key = key.clone();
        if client.in_flight == 0 {
            return; // not ours: nothing to account
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let min = self.cfg.backoff_min;
        let max = self.cfg.backoff_max;
        let Some(client) = self.clients.get_mut(&key) else { return };
        client.in_flight -= 1;
        match outcome {
            Outcome::Delivered => {
                self.stats.delivered += 1;
                self.bytes = self.bytes.saturating_sub(ENTRY_BYTES);
                client.failures = 0;
                if let Some(t) = client.retry_at.take() {
                    self.waking.remove(&(t, client.id, key.clone()));
                }
            }
            Outcome::Refused(error) => {
                self.bytes = self.bytes.saturating_sub(ENTRY_BYTES);
                client.last_error = Some(error);
                self.note_drops(
                    &key,
                    Drops {
                        refused: 1,
                        ..Drops::default()
                    },
                    now,
                );
            }
            Outcome::Failed(error) => {
                // Calls made together fail together: one backoff step for all of them.
                let retry_at = match client.retry_at {
                    Some(t) if t > now => t,
                    _ => {
                        if let Some(t) = client.retry_at.take() {
                            self.waking.remove(&(t, client.id, key.clone()));
                        }
                        client.failures = client.failures.saturating_add(1);
                        let wait = backoff(min, max, client.failures);
                        let t = now + wait;
                        client.retry_at = Some(t);
                        self.waking.insert((t, client.id, key.clone()));
                        t
                    }
                };
                let newly_failing = client.failures == 1;
                let quiet = client
                    .failing_reported_at
                    .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY);
                if newly_failing && !quiet {
                    client.failing_reported_at = Some(now);
                    self.reports.push(Report::Failing {
                        addr: key.clone(),
                        error: error.clone(),
                    });
                }
                client.last_error = Some(error);
                if entry.deadline > retry_at {
                    // Back in arrival order: ahead of the callbacks queued after it.
                    self.stats.retried += 1;
                    self.edit_queue(&key, |q| {
                        let at = q.partition_point(|e| e.seq < entry.seq);
                        q.insert(at, entry);
                    });
                } else {
                    self.bytes = self.bytes.saturating_sub(ENTRY_BYTES);
                    self.note_drops(
                        &key,
                        Drops {
                            expired: 1,
                            ..Drops::default()
                        },
                        now,
                    );
                }
            }
        }
        self.enlist(&key, now);
        self.free_if_idle(&key);
    }

    /// When the next backoff ends, if a client waits one out.
    pub fn next_wake(&self) -> Option<Instant> {
        self.waking.first().map(|(t, _, _)| *t)
    }

    /// Reports since the last call, for the log.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Calls out now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Clients tracked: those with callbacks queued or being called.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Callbacks queued (not being called) for `addr`.
    pub fn queued(&self, addr: &str) -> usize {
        self.clients.get(addr).map_or(0, |c| c.queue.len())
    }

    /// The byte estimate of all queues.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Move clients whose backoff ended back into the turn order.
    fn wake(&mut self, now: Instant) {
        while let Some((t, id, key)) = self.waking.first().cloned() {
            if t > now {
                break;
            }
            self.waking.remove(&(t, id, key.clone()));
            if let Some(c) = self.clients.get_mut(&key) {
                if c.id == id && c.retry_at == Some(t) {
                    c.retry_at = None;
                }
            }
            self.enlist(&key, now);
            self.free_if_idle(&key);
        }
    }

    /// Calls allowed to one client at once: one while its calls fail.
    fn cap(&self, key: &str) -> usize {
        match self.clients.get(key) {
            Some(c) if c.failures > 0 => 1,
            _ => self.cfg.calls_per_client,
        }
    }

    /// Give the client a place at the end of the turn order if it could be called now.
    fn enlist(&mut self, key: &Arc<str>, now: Instant) {
        let cap = self.cap(key);
        let Some(c) = self.clients.get_mut(key) else { return };
        let ready = !c.queue.is_empty() && c.in_flight < cap && c.retry_at.is_none_or(|t| t <= now);
        if ready && !c.in_ring {
            c.in_ring = true;
            self.ring.push_back((c.id, key.clone()));
        }
    }

    /// Change a client's queue, keeping the length index right.
    fn edit_queue<R>(&mut self, key: &Arc<str>, f: impl FnOnce(&mut VecDeque<Entry>) -> R) -> Option<R> {
        let c = self.clients.get_mut(key)?;
        let index = |q: &VecDeque<Entry>| q.front().map(|e| (q.len(), Reverse(e.seq), key.clone()));
        let before = index(&c.queue);
        let r = f(&mut c.queue);
        let after = index(&c.queue);
        if before != after {
            if let Some(k) = before {
                self.by_len.remove(&k);
            }
            if let Some(k) = after {
                self.by_len.insert(k);
            }
        }
        Some(r)
    }

    fn drop_oldest(&mut self, key: &Arc<str>, now: Instant) {
        if self.edit_queue(key, |q| q.pop_front()).flatten().is_some() {
            self.bytes = self.bytes.saturating_sub(ENTRY_BYTES);
            self.note_drops(
                key,
                Drops {
                    over_bound: 1,
                    ..Drops::default()
                },
                now,
            );
        }
    }

    /// Drop the callbacks at the front of the queue whose deadline passed (the queue is in
    /// deadline order).
    fn drop_expired(&mut self, key: &Arc<str>, now: Instant) {
        let expired = self
            .edit_queue(key, |q| {
                let n = q.partition_point(|e| e.deadline <= now);
                q.drain(..n).count()
            })
            .unwrap_or(0);
        if expired > 0 {
            self.bytes = self.bytes.saturating_sub(expired * ENTRY_BYTES);
            self.note_drops(
                key,
                Drops {
                    expired: expired as u64,
                    ..Drops::default()
                },
                now,
            );
        }
    }

    /// Count drops, and report them if this client's last report is old enough.
    fn note_drops(&mut self, key: &Arc<str>, drops: Drops, now: Instant) {
        self.stats.drops.add(&drops);
        let Some(c) = self.clients.get_mut(key) else { return };
        c.unreported.add(&drops);
        if c.reported_at.is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY) {
            c.reported_at = Some(now);
            let drops = std::mem::take(&mut c.unreported);
            self.reports.push(Report::Dropped {
                addr: key.clone(),
                drops,
                last_error: c.last_error.clone(),
            });
        }
    }

    /// Forget a client with nothing queued and nothing out, reporting its last drops.
    fn free_if_idle(&mut self, key: &Arc<str>) {
        let idle = self.clients.get(key).is_some_and(|c| c.queue.is_empty() && c.in_flight == 0);
        if !idle {
            return;
        }
        let Some(c) = self.clients.remove(key) else { return };
        self.bytes = self.bytes.saturating_sub(CLIENT_BYTES + key.len());
        if let Some(t) = c.retry_at {
            self.waking.remove(&(t, c.id, key.clone()));
        }
        if c.unreported.total() > 0 {
            self.reports.push(Report::Dropped {
                addr: key.clone(),
                drops: c.unreported,
                last_error: c.last_error,
            });
        }
    }
}

/// The wait after the `failures`-th failure in a row: `min`, doubled per failure, at most `max`.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    min.saturating_mul(1 << doublings).min(max)
}

/// Whether a call that failed with `code` may succeed when made again.
pub fn worth_retrying(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable | DeadlineExceeded | Cancelled | Unknown | ResourceExhausted | Aborted | Internal
    )
}

/// A bounded map that forgets its least recently used entry when full.
pub struct Lru<V> {
    cap: usize,
    map: HashMap<Arc<str>, (V, u64)>,
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new(cap: usize) -> Self {
        Lru {
            cap: cap.max(1),
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// The value for `key`, made with `make` if there is none.
    pub fn get_or_try_insert<E>(&mut self, key: &Arc<str>, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((v, used)) = self.map.get_mut(key) {
            self.order.remove(&*used);
            *used = tick;
            self.order.insert(tick, key.clone());
            return Ok(v.clone());
        }
        let v = make()?;
        while self.map.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.map.remove(&oldest);
        }
        self.map.insert(key.clone(), (v.clone(), tick));
        self.order.insert(tick, key.clone());
        Ok(v)
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((_, used)) = self.map.remove(key) {
            self.order.remove(&used);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

struct State {
    scheduler: Scheduler,
    channels: Lru<Channel>,
    /// The scheduler's totals as last added to the metrics counters.
    exported: Stats,
    /// The replica dropped its network: the dispatcher ends, queued callbacks with it.
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Notify,
    connector: Arc<dyn Connect>,
    counters: CallbackCounters,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add what the scheduler counted since the last call to the metrics counters. The
    /// scheduler keeps its own totals (it is tested without metrics); this copies the
    /// difference after each step that may change them, under the lock already held.
    fn export(&self, state: &mut State) {
        let now = state.scheduler.stats();
        let was = std::mem::replace(&mut state.exported, now);
        let c = &self.counters;
        c.sent.inc_by(now.attempts.saturating_sub(was.attempts));
        c.delivered.inc_by(now.delivered.saturating_sub(was.delivered));
        c.retried.inc_by(now.retried.saturating_sub(was.retried));
        c.failed_expired.inc_by(now.drops.expired.saturating_sub(was.drops.expired));
        c.failed_over_bound
            .inc_by(now.drops.over_bound.saturating_sub(was.drops.over_bound));
        c.failed_refused.inc_by(now.drops.refused.saturating_sub(was.drops.refused));
    }
}

/// The tail's client callbacks: [`Scheduler`] driven by a dispatcher task, calls made with
/// tonic. Dropping it stops the dispatcher; calls already out finish on their own deadline.
pub struct Callbacks {
    inner: Arc<Inner>,
    dispatcher: bool,
}

impl Callbacks {
    /// `attempt_timeout`: the deadline of one call. Spawns nothing until the first callback.
    pub fn new(cfg: CallbackConfig, attempt_timeout: Duration, connector: Arc<dyn Connect>, counters: CallbackCounters) -> Self {
        let channels = Lru::new(cfg.channels);
        Callbacks {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    scheduler: Scheduler::new(cfg, attempt_timeout),
                    channels,
                    exported: Stats::default(),
                    closed: false,
                }),
                wake: Notify::new(),
                connector,
                counters,
            }),
            dispatcher: false,
        }
    }

    /// Queue a callback of `cxid` to the client at `addr` (`host:port`). Never blocks.
    pub fn notify(&mut self, addr: &str, cxid: i32) {
        let reports = {
            let mut state = self.inner.lock();
            state.scheduler.push(addr, cxid, Instant::now());
            self.inner.export(&mut state);
            state.scheduler.take_reports()
        };
        log_reports(reports);
        if !self.dispatcher {
            // The core runs inside the runtime; never panic under its lock if it did not.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    self.dispatcher = true;
                    runtime.spawn(dispatch(self.inner.clone()));
                }
                Err(e) => tracing::error!(error = %e, "no tokio runtime: client callbacks stay queued"),
            }
        }
        self.inner.wake.notify_one();
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

async fn dispatch(inner: Arc<Inner>) {
    loop {
        let (calls, next_wake, reports) = {
            let mut guard = inner.lock();
            if guard.closed {
                return;
            }
            let state = &mut *guard;
            let now = Instant::now();
            let mut calls = Vec::new();
            while let Some(d) = state.scheduler.next_dispatch(now) {
                let channel = state.channels.get_or_try_insert(&d.addr, || inner.connector.channel(&d.addr));
                match channel {
                    Ok(c) => calls.push((d, c)),
                    Err(e) => state.scheduler.complete(&d.addr, d.entry, Outcome::Refused(e), now),
                }
            }
            inner.export(state);
            (calls, state.scheduler.next_wake(), state.scheduler.take_reports())
        };
        log_reports(reports);
        for (d, channel) in calls {
            tokio::spawn(call(inner.clone(), d, channel));
        }
        match next_wake {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

async fn call(inner: Arc<Inner>, d: Dispatch, channel: Channel) {
    let cxid = d.entry.cxid;
    let mut request = tonic::Request::new(adb::CxidProcessedRequest { cxid });
    request.set_timeout(d.timeout);
    let outcome = match tokio::time::timeout(d.timeout, TailClientClient::new(channel).cxid_processed(request)).await {
        Ok(Ok(_)) => Outcome::Delivered,
        Ok(Err(status)) if worth_retrying(status.code()) => Outcome::Failed(status.to_string()),
        Ok(Err(status)) => Outcome::Refused(status.to_string()),
        Err(_) => Outcome::Failed(format!("no answer within {:?}", d.timeout)),
    };
    if let Outcome::Failed(e) = &outcome {
        tracing::debug!(client = %d.addr, cxid, attempt = d.entry.attempts, error = %e, "client callback failed; retrying");
    }
    let reports = {
        let mut state = inner.lock();
        if matches!(outcome, Outcome::Failed(_)) {
            // The next attempt dials again rather than wait on a connection that may be dead.
            state.channels.remove(&d.addr);
        }
        state.scheduler.complete(&d.addr, d.entry, outcome, Instant::now());
        inner.export(&mut state);
        state.scheduler.take_reports()
    };
    log_reports(reports);
    inner.wake.notify_one();
}

fn log_reports(reports: Vec<Report>) {
    for r in reports {
        match r {
            Report::Dropped { addr, drops, last_error } => tracing::warn!(
                client = %addr,
                expired = drops.expired,
                over_bound = drops.over_bound,
                refused = drops.refused,
                last_error = last_error.as_deref().unwrap_or("-"),
                "client callbacks dropped (their writes are applied, the client does not learn it); \
                 further drops of this client are summed up at most every 10 s"
            ),
            Report::Failing { addr, error } => tracing::info!(
                client = %addr,
                %error,
                "client callbacks failing; retrying one at a time with backoff until each one's deadline"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn cfg() -> CallbackConfig {
        CallbackConfig {
            per_client: 100,
            total_bytes: 1 << 30,
            calls_per_client: 4,
            calls_in_flight: 10,
            deadline: 30 * SECOND,
            backoff_min: Duration::from_millis(100),
            backoff_max: 2 * SECOND,
            channels: 8,
        }
    }

    fn sched(cfg: CallbackConfig) -> Scheduler {
        Scheduler::new(cfg, 2 * SECOND)
    }

    fn drain(s: &mut Scheduler, now: Instant) -> Vec<Dispatch> {
        std::iter::from_fn(|| s.next_dispatch(now)).collect()
    }

    fn addrs(ds: &[Dispatch]) -> Vec<&str> {
        ds.iter().map(|d| &*d.addr).collect()
    }

    #[test]
    fn calls_per_client_and_in_all_are_capped_and_shared_in_turn() {
        let mut s = sched(cfg());
        let t = Instant::now();
        for i in 0..50 {
            s.push("slow:1", i, t);
        }
        for i in 0..3 {
            s.push("a:1", 100 + i, t);
            s.push("b:1", 200 + i, t);
        }
        let ds = drain(&mut s, t);
        // Turns: slow, a, b, slow, a, b, ... until a client is at its cap of 4 or out of work.
        assert_eq!(
            addrs(&ds),
            ["slow:1", "a:1", "b:1", "slow:1", "a:1", "b:1", "slow:1", "a:1", "b:1", "slow:1"]
        );
        assert_eq!(s.in_flight(), 10, "the global cap");
        assert_eq!(ds[0].entry.cxid, 0, "each client's callbacks in order");
        assert_eq!(ds[3].entry.cxid, 1);
        // A slot frees; the slow client has its 4 out and nobody else has work: it stays free.
        let d = &ds[1];
        s.complete(&d.addr, d.entry, Outcome::Delivered, t);
        assert!(s.next_dispatch(t).is_none(), "the slow client has 4 out already");
        assert_eq!(s.stats().delivered, 1);
    }

    #[test]
    fn a_newcomer_waits_one_turn_however_long_the_others_queues() {
        let mut s = sched(CallbackConfig {
            calls_per_client: 100,
            ..cfg()
        });
        let t = Instant::now();
        for i in 0..100 {
            s.push("busy:1", i, t);
        }
        let first = drain(&mut s, t);
        assert_eq!(first.len(), 10);
        s.push("new:1", 7, t);
        for d in &first[..2] {
            s.complete(&d.addr, d.entry, Outcome::Delivered, t);
        }
        // busy's turn was already due; then it is new's, not after the 90 queued for busy.
        assert_eq!(addrs(&drain(&mut s, t)), ["busy:1", "new:1"]);
    }

    #[test]
    fn a_failing_client_gets_one_call_at_a_time_after_a_backoff_until_a_success() {
        let mut s = sched(cfg());
        let t = Instant::now();
        for i in 0..20 {
            s.push("silent:1", i, t);
        }
        let ds = drain(&mut s, t);
        assert_eq!(ds.len(), 4);
        let t1 = t + 2 * SECOND;
        for d in ds {
            s.complete(&d.addr, d.entry, Outcome::Failed("timeout".into()), t1);
        }
        // Four failures at once are one backoff step.
        assert_eq!(s.next_wake(), Some(t1 + Duration::from_millis(100)));
        assert!(s.next_dispatch(t1).is_none(), "backing off");
        assert_eq!(s.queued("silent:1"), 20, "the failed ones are queued again");
        let t2 = t1 + Duration::from_millis(100);
        let probe = drain(&mut s, t2);
        assert_eq!(probe.len(), 1, "one call at a time while failing");
        assert_eq!(probe[0].entry.cxid, 0, "the oldest first, on its second attempt");
        assert_eq!(probe[0].entry.attempts, 2);
        let t3 = t2 + 2 * SECOND;
        s.complete(&probe[0].addr, probe[0].entry, Outcome::Failed("timeout".into()), t3);
        assert_eq!(s.next_wake(), Some(t3 + Duration::from_millis(200)), "the backoff doubles");
        let t4 = t3 + Duration::from_millis(200);
        let probe = drain(&mut s, t4);
        assert_eq!(probe.len(), 1);
        s.complete(&probe[0].addr, probe[0].entry, Outcome::Delivered, t4);
        assert_eq!(drain(&mut s, t4).len(), 4, "a success brings back the full cap");
        let reports = s.take_reports();
        assert_eq!(
            reports.iter().filter(|r| matches!(r, Report::Failing { .. })).count(),
            1,
            "{reports:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let (min, max) = (Duration::from_millis(100), 2 * SECOND);
        let waits: Vec<u128> = (1..8).map(|n| backoff(min, max, n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff(min, max, u32::MAX), max);
    }

    #[test]
    fn a_silent_client_does_not_delay_another() {
        let mut s = sched(cfg());
        let t = Instant::now();
        for i in 0..1500 {
            s.push("silent:1", i, t);
        }
        let silent = drain(&mut s, t);
        assert_eq!(silent.len(), 4);
        for i in 0..50 {
            s.push("good:1", i, t);
        }
        // The good client gets the other 6 slots at once, and keeps getting them as its calls
        // come back, while the silent client's calls hang.
        let mut delivered = 0;
        let mut now = t;
        while delivered < 50 {
            let ds = drain(&mut s, now);
            assert!(!ds.is_empty());
            assert!(ds.iter().all(|d| &*d.addr == "good:1"));
            for d in ds {
                s.complete(&d.addr, d.entry, Outcome::Delivered, now);
                delivered += 1;
            }
            now += Duration::from_millis(1);
        }
        assert!(now < t + Duration::from_millis(20), "{:?}", now - t);
        assert_eq!(s.clients(), 1, "the good client, done, is forgotten");
    }

    #[test]
    fn callbacks_past_their_deadline_are_dropped_and_reported_once_per_interval() {
        let mut s = sched(CallbackConfig {
            per_client: 65_536,
            ..cfg()
        });
        let t = Instant::now();
        for i in 0..1500 {
            s.push("gone:1", i, t + Duration::from_millis(i as u64));
        }
        let first = drain(&mut s, t);
        for d in first {
            s.complete(&d.addr, d.entry, Outcome::Failed("refused".into()), t);
        }
        // Probe after probe fails; time passes to beyond every deadline.
        let mut now = t;
        let mut attempts = 0;
        while s.clients() > 0 {
            now = s.next_wake().unwrap_or(now + SECOND);
            for d in drain(&mut s, now) {
                attempts += 1;
                assert!(d.entry.deadline > now);
                assert!(d.timeout <= d.entry.deadline - now);
                s.complete(&d.addr, d.entry, Outcome::Failed("refused".into()), now);
            }
            assert!(now < t + 40 * SECOND, "callbacks outlive their deadline");
        }
        assert!((10..40).contains(&attempts), "{attempts} attempts");
        assert_eq!(s.stats().drops.expired, 1500);
        assert_eq!(s.bytes(), 0, "nothing left");
        let dropped: Vec<Drops> = s
            .take_reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::Dropped { drops, .. } => Some(drops),
                _ => None,
            })
            .collect();
        assert!(dropped.len() <= 3, "a few summary lines, not one per callback: {dropped:?}");
        assert_eq!(dropped.iter().map(|d| d.expired).sum::<u64>(), 1500, "every drop counted in them");
    }

    #[test]
    fn a_full_client_queue_drops_its_oldest() {
        let mut s = sched(CallbackConfig { per_client: 5, ..cfg() });
        let t = Instant::now();
        for i in 0..5 {
            s.push("c:1", i, t);
        }
        let out = s.next_dispatch(t).expect("a call");
        assert_eq!(out.entry.cxid, 0);
        s.push("c:1", 5, t);
        s.push("c:1", 6, t);
        assert_eq!(s.stats().drops.over_bound, 2);
        let cxids: Vec<i32> = drain(&mut s, t).iter().map(|d| d.entry.cxid).collect();
        assert_eq!(cxids, [3, 4, 5], "1 and 2 dropped; 0 is out, and counts against the bound");
        assert_eq!(s.queued("c:1"), 1);
    }

    #[test]
    fn at_the_total_bound_the_longest_queue_gives_way() {
        let per = CLIENT_BYTES + "big:1".len();
        let mut s = sched(CallbackConfig {
            calls_in_flight: 1,
            total_bytes: 2 * per + 12 * ENTRY_BYTES,
            ..cfg()
        });
        let t = Instant::now();
        for i in 0..10 {
            s.push("big:1", i, t);
        }
        s.push("sml:1", 100, t);
        s.push("sml:1", 101, t);
        assert_eq!(s.stats().drops.total(), 0, "at the bound, not over it");
        s.push("sml:1", 102, t);
        assert_eq!(s.stats().drops.over_bound, 1);
        assert_eq!(s.queued("big:1"), 9, "the longest queue lost its oldest");
        assert_eq!(s.queued("sml:1"), 3);
        assert!(s.bytes() <= 2 * per + 12 * ENTRY_BYTES);
        // The big client's queue is the longest until it is as short as the other.
        for i in 0..6 {
            s.push("sml:1", 103 + i, t);
        }
        assert_eq!((s.queued("big:1"), s.queued("sml:1")), (6, 6), "the two take turns giving way");
    }

    #[test]
    fn a_new_client_over_the_total_bound_frees_whole_clients() {
        let mut s = sched(CallbackConfig {
            total_bytes: 3 * (CLIENT_BYTES + 3 + ENTRY_BYTES),
            ..cfg()
        });
        let t = Instant::now();
        for c in 0..10 {
            s.push(&format!("c:{c}"), c, t);
        }
        assert!(s.bytes() <= 3 * (CLIENT_BYTES + 3 + ENTRY_BYTES));
        assert!(s.clients() <= 3, "{} clients", s.clients());
        assert_eq!(s.queued("c:9"), 1, "the newest is kept");
    }

    #[test]
    fn refused_callbacks_are_dropped_without_retry() {
        let mut s = sched(cfg());
        let t = Instant::now();
        s.push("c:1", 1, t);
        let d = s.next_dispatch(t).expect("a call");
        s.complete(&d.addr, d.entry, Outcome::Refused("unimplemented".into()), t);
        assert_eq!(s.stats().drops.refused, 1);
        assert!(s.next_dispatch(t).is_none());
        assert_eq!(s.clients(), 0);
        assert_eq!(s.next_wake(), None);
        assert!(
            matches!(&s.take_reports()[..], [Report::Dropped { drops, last_error: Some(e), .. }] if drops.refused == 1 && e == "unimplemented")
        );
    }

    #[test]
    fn idle_clients_are_forgotten_and_come_back_fresh() {
        let mut s = sched(cfg());
        let t = Instant::now();
        for c in 0..1000 {
            let addr = format!("c:{c}");
            s.push(&addr, c, t);
            for d in drain(&mut s, t) {
                s.complete(&d.addr, d.entry, Outcome::Delivered, t);
            }
        }
        assert_eq!(s.clients(), 0);
        assert_eq!(s.bytes(), 0);
        assert!(s.ring.is_empty() && s.waking.is_empty() && s.by_len.is_empty());
        // A client that failed and was forgotten starts again with the full cap.
        s.push("f:1", 1, t);
        let d = s.next_dispatch(t).expect("a call");
        s.complete(&d.addr, d.entry, Outcome::Failed("x".into()), t + 31 * SECOND);
        assert_eq!(s.clients(), 0, "its only callback expired");
        for i in 0..4 {
            s.push("f:1", i, t + 32 * SECOND);
        }
        assert_eq!(drain(&mut s, t + 32 * SECOND).len(), 4);
    }

    #[test]
    fn the_last_attempt_ends_at_the_callbacks_deadline() {
        let mut s = sched(cfg());
        let t = Instant::now();
        s.push("c:1", 1, t);
        let d = s.next_dispatch(t + 29 * SECOND).expect("a call");
        assert_eq!(d.timeout, SECOND);
        s.complete(&d.addr, d.entry, Outcome::Failed("x".into()), t + 30 * SECOND);
        assert_eq!(s.stats().drops.expired, 1);
        assert_eq!(s.clients(), 0);
    }

    #[test]
    fn the_channel_cache_keeps_the_most_recently_used() {
        let mut lru: Lru<u32> = Lru::new(2);
        let key = |s: &str| Arc::<str>::from(s);
        let mut made = 0;
        let mut get = |lru: &mut Lru<u32>, k: &str| {
            lru.get_or_try_insert::<()>(&key(k), || {
                made += 1;
                Ok(made)
            })
            .unwrap()
        };
        assert_eq!(get(&mut lru, "a"), 1);
        assert_eq!(get(&mut lru, "b"), 2);
        assert_eq!(get(&mut lru, "a"), 1, "cached");
        assert_eq!(get(&mut lru, "c"), 3, "b, the least recently used, makes room");
        assert_eq!(lru.len(), 2);
        assert_eq!(get(&mut lru, "a"), 1);
        assert_eq!(get(&mut lru, "b"), 4, "b was dropped");
        lru.remove("a");
        assert_eq!(lru.len(), 1);
        let failed = lru.get_or_try_insert(&key("bad"), || Err("bad address"));
        assert_eq!(failed, Err("bad address"));
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn codes_worth_retrying() {
        assert!(worth_retrying(tonic::Code::Unavailable));
        assert!(worth_retrying(tonic::Code::DeadlineExceeded));
        assert!(!worth_retrying(tonic::Code::Unimplemented));
        assert!(!worth_retrying(tonic::Code::Unauthenticated));
    }
}
