//! ZooKeeper as the production runtime hears of it: `MembershipEvent`s on a replica's channel,
//! and a membership view for every client.
//!
//! Sessions are made as a three-server ensemble makes them (the top byte is the server's id,
//! 1..=3), so a new replica can sort anywhere in the chain. A replica that is up and not cut
//! off from the coordinator is heard every quarter of the session timeout and told `Alive`; one
//! that is crashed or cut off is not, and its session expires after the timeout, which drops it
//! from the view. A cut-off replica hears no views meanwhile, and `SessionLost` once it can hear
//! again; it then asks (through the runtime's join callback) for a new session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::dice::SharedDice;
use super::trace::SharedTrace;
use super::transport::{Net, Place, Proc};
use crate::core::{ChainMarker, Member, NodeId};
use crate::runtime::zk::MembershipEvent;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often the coordinator looks at its sessions.
const STEP: Duration = Duration::from_millis(10);

struct Session {
    proc: Proc,
    last_heard: Instant,
    next_pulse: Instant,
    expired: bool,
}

/// Events for one watcher go out in order, each after a delay, like ZooKeeper's notifications
/// on one connection.
struct Outbox<T> {
    tx: mpsc::UnboundedSender<(Instant, T)>,
    free: Instant,
}

impl<T> Outbox<T> {
    fn send(&mut self, at: Instant, event: T) {
        self.free = self.free.max(at);
        let _ = self.tx.send((self.free, event));
    }
}

struct ReplicaWatch {
    addr: String,
    out: Outbox<MembershipEvent>,
    session: Option<NodeId>,
    /// The view this replica was last told, so it is told again only of a change.
    told: Option<Vec<Member>>,
    /// Told `SessionLost` and not yet asked to join again.
    lost: bool,
    /// When its (re)registration is due.
    join_at: Option<Instant>,
}

struct ClientWatch {
    out: Outbox<Vec<Member>>,
    told: Option<Vec<Member>>,
    /// Membership changes reach this client no earlier than this.
    stalled_until: Instant,
}

struct State {
    counter: u64,
    sessions: BTreeMap<NodeId, Session>,
    members: BTreeMap<NodeId, String>,
    /// Grows with every change of `members`, like the root's pzxid.
    version: u64,
    replicas: BTreeMap<Proc, ReplicaWatch>,
    clients: Vec<ClientWatch>,
    /// The chain's held-state marker exists (`MembershipControl::request_chain_marker`).
    marker: bool,
}

pub struct Coordinator {
    state: Mutex<State>,
    net: Arc<Net>,
    dice: SharedDice,
    trace: SharedTrace,
    session_timeout: Duration,
    start: Instant,
}

impl Coordinator {
    pub fn new(net: Arc<Net>, dice: SharedDice, trace: SharedTrace, session_timeout: Duration) -> Arc<Coordinator> {
        let state = State {
            counter: 0,
            sessions: BTreeMap::new(),
            members: BTreeMap::new(),
            version: 0,
            replicas: BTreeMap::new(),
            clients: Vec::new(),
            marker: false,
        };
        Arc::new(Coordinator {
            state: Mutex::new(state),
            net,
            dice,
            trace,
            session_timeout,
            start: Instant::now(),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// When a notification reaches its watcher: ZooKeeper's are slower and more uneven than a
    /// message, so replicas' views of a change are often tens of milliseconds apart.
    fn later(&self, now: Instant) -> Instant {
        let ms = if self.dice.chance(100_000) {
            self.dice.range(20, 200)
        } else {
            self.dice.range(1, 12)
        };
        now + Duration::from_millis(ms)
    }

    /// Runs the sessions until the run ends.
    pub async fn run(self: Arc<Self>) {
        let mut timer = tokio::time::interval(STEP);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            self.step(Instant::now());
        }
    }

    /// A new replica process: it registers on its own, as the production coordinator does.
    pub fn add_replica(&self, proc: Proc, addr: &str, events: mpsc::Sender<MembershipEvent>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, MembershipEvent)>();
        tokio::spawn(async move {
            while let Some((at, ev)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        });
        let now = Instant::now();
        let join_at = Some(now + Duration::from_millis(self.dice.range(1, 30)));
        let watch = ReplicaWatch {
            addr: addr.to_string(),
            out: Outbox { tx, free: now },
            session: None,
            told: None,
            lost: false,
            join_at,
        };
        lock(&self.state).replicas.insert(proc, watch);
    }

    /// The runtime's join callback: after `SessionLost`, open a new session.
    pub fn request_join(&self, proc: Proc) {
        let at = Instant::now() + self.net.delay();
        let mut st = lock(&self.state);
        if let Some(w) = st.replicas.get_mut(&proc) {
            if w.lost {
                w.lost = false;
                w.join_at = Some(at);
            }
        }
    }

    /// Create the held-state marker if missing and tell the replica whether it did.
    pub fn request_chain_marker(&self, proc: Proc) {
        let now = Instant::now();
        let reachable = self.reachable(proc);
        let mut st = lock(&self.state);
        let st = &mut *st;
        let answer = if !reachable {
            ChainMarker::Unavailable
        } else if st.marker {
            ChainMarker::Existed
        } else {
            st.marker = true;
            ChainMarker::Created
        };
        if let Some(w) = st.replicas.get_mut(&proc).filter(|w| w.session.is_some()) {
            let at = self.later(now);
            w.out.send(at, MembershipEvent::ChainMarker(answer));
        }
    }

    /// The replica gives up its session: its znode goes at once and it is told `SessionLost`.
    pub fn request_rejoin(&self, proc: Proc) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(w) = st.replicas.get_mut(&proc) else { return };
        let Some(id) = w.session.take() else { return };
        w.lost = true;
        let at = self.later(now);
        w.out.send(at, MembershipEvent::SessionLost);
        if let Some(s) = st.sessions.get_mut(&id) {
            s.expired = true;
        }
        if st.members.remove(&id).is_some() {
            st.version += 1;
        }
        self.trace
            .note(self.ms(now), &format!("{proc:?} gave up session {id:x} to join again"));
    }

    /// A listing on request: views already go out on every change, so only `Listed` is new.
    pub fn request_relist(&self, proc: Proc) {
        let now = Instant::now();
        if !self.reachable(proc) {
            return;
        }
        let mut st = lock(&self.state);
        if let Some(w) = st.replicas.get_mut(&proc).filter(|w| w.session.is_some()) {
            let at = self.later(now);
            w.out.send(at, MembershipEvent::Listed);
        }
    }

    pub fn add_client(&self, view: watch::Sender<Vec<Member>>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<Member>)>();
        tokio::spawn(async move {
            while let Some((at, members)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                view.send_replace(members);
            }
        });
        let now = Instant::now();
        lock(&self.state).clients.push(ClientWatch {
            out: Outbox { tx, free: now },
            told: None,
            stalled_until: now,
        });
    }

    pub fn stall_client(&self, client: usize, until: Instant) {
        if let Some(c) = lock(&self.state).clients.get_mut(client) {
            c.stalled_until = c.stalled_until.max(until);
        }
    }

    pub fn members(&self) -> Vec<Member> {
        let st = lock(&self.state);
        st.members
            .iter()
            .map(|(id, addr)| Member {
                id: *id,
                addr: addr.clone(),
            })
            .collect()
    }

    /// The process's current session, if it is a member.
    pub fn session_of(&self, proc: Proc) -> Option<NodeId> {
        let st = lock(&self.state);
        st.replicas
            .get(&proc)
            .and_then(|w| w.session)
            .filter(|s| st.members.contains_key(s))
    }

    /// Heard from within `within`: the session is not about to expire.
    pub fn heard_within(&self, session: NodeId, within: Duration) -> bool {
        let now = Instant::now();
        lock(&self.state)
            .sessions
            .get(&session)
            .is_some_and(|s| !s.expired && now.saturating_duration_since(s.last_heard) < within)
    }

    fn reachable(&self, proc: Proc) -> bool {
        self.net.is_alive(proc) && !self.net.is_cut(proc.place, Place::Coordinator)
    }

    fn step(&self, now: Instant) {
        let mut notes = Vec::new();
        let mut st = lock(&self.state);
        let st = &mut *st;
        let pulse = self.session_timeout / 4;

        // A crashed process hears nothing more; its session lives on until it expires.
        st.replicas.retain(|proc, _| self.net.is_alive(*proc));

        // Registrations that are due.
        let procs: Vec<Proc> = st.replicas.keys().copied().collect();
        for proc in procs {
            let due = st.replicas.get(&proc).and_then(|w| w.join_at).is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            if self.net.is_cut(proc.place, Place::Coordinator) {
                // The runtime keeps retrying until ZooKeeper answers.
                if let Some(w) = st.replicas.get_mut(&proc) {
                    w.join_at = Some(now + pulse);
                }
                continue;
            }
            st.counter += 1;
            let id = (self.dice.range(1, 4) << 56) | st.counter;
            let first_pulse = now + Duration::from_millis(self.dice.range(1, pulse.as_millis() as u64 + 1));
            st.sessions.insert(
                id,
                Session {
                    proc,
                    last_heard: now,
                    next_pulse: first_pulse,
                    expired: false,
                },
            );
            let Some(w) = st.replicas.get_mut(&proc) else {
                continue;
            };
            st.members.insert(id, w.addr.clone());
            st.version += 1;
            w.join_at = None;
            w.session = Some(id);
            // As the production coordinator does: the view that includes us, then the first
            // confirmation of the session, from the round trip that registered it.
            let members: Vec<Member> = st
                .members
                .iter()
                .map(|(id, addr)| Member {
                    id: *id,
                    addr: addr.clone(),
                })
                .collect();
            w.told = Some(members.clone());
            let at = self.later(now);
            w.out.send(at, MembershipEvent::Joined { session_id: id });
            w.out.send(
                at,
                MembershipEvent::View {
                    members,
                    version: st.version,
                },
            );
            w.out.send(at, MembershipEvent::Alive { at: now });
            notes.push(format!("session {id:x} for {:?} at {}", proc, w.addr));
        }

        // Pings, Alive and SessionLost.
        for (id, s) in st.sessions.iter_mut() {
            if now < s.next_pulse {
                continue;
            }
            s.next_pulse += pulse;
            if !self.reachable(s.proc) {
                continue;
            }
            let Some(w) = st.replicas.get_mut(&s.proc).filter(|w| w.session == Some(*id)) else {
                continue;
            };
            if s.expired {
                if !w.lost {
                    w.lost = true;
                    w.session = None;
                    let at = self.later(now);
                    w.out.send(at, MembershipEvent::SessionLost);
                    notes.push(format!("{:?} told session {id:x} is lost", s.proc));
                }
                continue;
            }
            s.last_heard = now;
            let at = self.later(now);
            w.out.send(at, MembershipEvent::Alive { at: now });
        }

        // Expiry.
        for (id, s) in st.sessions.iter_mut() {
            if !s.expired && now.saturating_duration_since(s.last_heard) > self.session_timeout {
                s.expired = true;
                st.members.remove(id);
                st.version += 1;
                notes.push(format!("session {id:x} of {:?} expired", s.proc));
            }
        }
        // Sessions nobody can be told about any more.
        st.sessions
            .retain(|id, s| !s.expired || st.replicas.get(&s.proc).is_some_and(|w| w.session == Some(*id)));

        // Views, to every live, reachable session and every client whose view is not stalled.
        let members: Vec<Member> = st
            .members
            .iter()
            .map(|(id, addr)| Member {
                id: *id,
                addr: addr.clone(),
            })
            .collect();
        for (proc, w) in st.replicas.iter_mut() {
            let live = w.session.is_some_and(|id| st.sessions.get(&id).is_some_and(|s| !s.expired));
            if !live || w.told.as_ref() == Some(&members) || !self.reachable(*proc) {
                continue;
            }
            w.told = Some(members.clone());
            let at = self.later(now);
            w.out.send(
                at,
                MembershipEvent::View {
                    members: members.clone(),
                    version: st.version,
                },
            );
        }
        for c in st.clients.iter_mut() {
            if c.told.as_ref() == Some(&members) || now < c.stalled_until {
                continue;
            }
            c.told = Some(members.clone());
            let at = self.later(now);
            c.out.send(at, members.clone());
        }
        for n in notes {
            self.trace.note(self.ms(now), &n);
        }
    }
}
