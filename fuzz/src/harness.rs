//! One replica core in a chosen role, built with the core's testkit (manual clock, recording
//! network and coordinator), and the invariants every fuzz target checks after each step.
//!
//! Every `Subject` method that feeds the core checks, before returning:
//! - the store holds no zero values, and a replica without state holds nothing at all;
//! - the sent list is strictly increasing, above the tail's known progress, at most
//!   `last_applied`, and every queue is within its configured bound;
//! - `last_applied`, the tail's progress and `holds_state` never go back, except on session loss;
//! - a refused request (and any read) leaves `describe()` and `store()` exactly as they were,
//!   and an accepted one changed only what it may change;
//! - a client call completes at most once, and only if its write was accepted as pending.
//!
//! A violation panics, which is what libFuzzer records as a crash.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use chainrep::core::testkit::{members, replica, ManualClock, TestReplica};
use chainrep::core::{
    ClientOrigin, ClientToken, Config, Describe, Member, NodeId, PeerReply, PeerRequest, ReadRejected, Role, Store, Transfer, Update,
    Variant, WriteAccepted, WriteOp, WriteRejected, Xid,
};

/// The chain every prepared replica belongs to: `A` heads it, `B` is in the middle, `C` is
/// the tail. Small ids on purpose: the fuzzer finds them (and the seeds use them) easily.
pub const A: NodeId = 0x1a;
pub const B: NodeId = 0x2b;
pub const C: NodeId = 0x3c;
/// A fourth session, for views that add a member.
pub const D: NodeId = 0x4d;
pub const CHAIN: [NodeId; 3] = [A, B, C];

/// Where the clock starts: away from 0, so that "ago" and retry arithmetic has room.
const START_MS: u64 = 1_000;

pub fn config(variant: Variant) -> Config {
    Config {
        variant,
        // Small bounds, so that inputs of a few hundred bytes reach every limit.
        max_key_bytes: 64,
        max_pending_writes: 8,
        max_sent: 16,
        max_reorder: 8,
        // No wait before a lone or stateless head starts or adopts a retained copy, so short
        // inputs reach what follows.
        retained_settle_ms: 0,
        ..Config::default()
    }
}

/// How the replica under test was prepared before the fuzzer's input reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Setup {
    /// Joined as `A`, no view yet.
    Fresh,
    /// `A` alone: head and tail, with a few writes applied.
    Single,
    /// `A` heading `[A, B, C]`, streaming to `B`, with unacknowledged writes.
    Head,
    /// `B` in `[A, B, C]`, given the state by `A`, holding one update past a gap.
    Middle,
    /// `C` in `[A, B, C]`, given the state by `B`, holding one update past a gap.
    Tail,
    /// `B` in `[A, B, C]` before any transfer reached it.
    UnsyncedMiddle,
    /// `C` in `[A, B, C]` before any transfer reached it.
    UnsyncedTail,
    /// `A` joined at the head of `[A, B, C]` without state, its pull to `B` in flight.
    StatelessHead,
}

/// Every prepared role: what the wire targets feed each decoded request to.
pub const ROLES: [Setup; 7] = [
    Setup::Single,
    Setup::Head,
    Setup::Middle,
    Setup::Tail,
    Setup::UnsyncedMiddle,
    Setup::UnsyncedTail,
    Setup::StatelessHead,
];

/// Which session a peer request names (the `chainrep-session` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee {
    /// No header: a foreign sender.
    Unaddressed,
    /// The replica's current session.
    Me,
    /// Another session (an old one of this process, or a header that is not hex, read as 0).
    Other(NodeId),
}

impl Addressee {
    /// The wire targets spend one input byte on this; most inputs name the replica itself.
    pub fn from_byte(b: u8) -> Addressee {
        match b % 8 {
            0 => Addressee::Unaddressed,
            1 => Addressee::Other(0),
            2 => Addressee::Other(D),
            _ => Addressee::Me,
        }
    }

    fn resolve(self, me: Option<NodeId>) -> Option<NodeId> {
        match self {
            Addressee::Unaddressed => None,
            Addressee::Me => Some(me.unwrap_or(0)),
            Addressee::Other(id) => Some(id),
        }
    }
}

/// What a step is compared against.
#[derive(Clone, Debug)]
pub struct Before {
    pub describe: Describe,
    pub store: Store,
}

pub struct Subject {
    pub setup: Setup,
    pub clock: ManualClock,
    pub replica: TestReplica,
    next_token: ClientToken,
    /// Writes accepted as `Pending`, with their xids: the only clients that may ever complete.
    pending_tokens: BTreeMap<ClientToken, Xid>,
    /// The lease as the replica was told about it, kept apart from the core's own reckoning.
    lease_until: u64,
    /// Completions already checked against the state they happened in.
    completions_checked: Cell<usize>,
    /// Version of the last view delivered; each view is a new one, as in ZooKeeper.
    view_version: u64,
}

fn seed_update(xid: Xid, key: &str, value: i32) -> Update {
    Update {
        xid,
        key: key.into(),
        value,
        origin: None,
    }
}

/// The state a prepared middle or tail is given: xids 1..=6 applied, 5 and 6 still unacknowledged.
fn seed_transfer(src: NodeId) -> Transfer {
    Transfer {
        src,
        state_xid: 6,
        // The zero entry is there on purpose: a transfer may carry one, the store must not.
        state: [("k0", 1), ("k2", -3), ("k3", 7), ("k5", 0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        sent: vec![seed_update(5, "k3", 7), seed_update(6, "k0", 1)],
        base: None,
    }
}

pub fn seed_origin(cxid: i32) -> ClientOrigin {
    ClientOrigin {
        host: "client".into(),
        port: 9000,
        cxid,
    }
}

impl Subject {
    pub fn new(setup: Setup, variant: Variant) -> Subject {
        let clock = ManualClock::new();
        clock.set(START_MS);
        let me = match setup {
            Setup::Fresh | Setup::Single | Setup::Head | Setup::StatelessHead => A,
            Setup::Middle | Setup::UnsyncedMiddle => B,
            Setup::Tail | Setup::UnsyncedTail => C,
        };
        let replica = replica(config(variant), &clock, me);
        let lease_until = START_MS + replica.config().lease_ms;
        let mut s = Subject {
            setup,
            clock,
            replica,
            next_token: 1,
            pending_tokens: BTreeMap::new(),
            lease_until,
            completions_checked: Cell::new(0),
            view_version: 0,
        };
        match setup {
            Setup::Fresh => {}
            Setup::Single => {
                s.view(&[A]);
                s.tick(0);
                s.seed_writes();
            }
            Setup::Head => {
                s.view(&[A]);
                s.tick(0);
                s.seed_writes();
                s.view(&CHAIN);
                s.accept_outbox();
                s.seed_write(WriteOp::Inc {
                    key: "k3".into(),
                    delta: 7,
                });
                s.seed_write(WriteOp::Inc {
                    key: "k0".into(),
                    delta: 1,
                });
            }
            Setup::Middle | Setup::Tail => {
                let pred = if setup == Setup::Middle { A } else { B };
                s.view(&CHAIN);
                s.peer(Addressee::Me, PeerRequest::Transfer(seed_transfer(pred)));
                s.accept_outbox();
                s.peer(
                    Addressee::Me,
                    PeerRequest::Propose {
                        src: pred,
                        update: seed_update(7, "k1", 5),
                    },
                );
                s.peer(
                    Addressee::Me,
                    PeerRequest::Propose {
                        src: pred,
                        update: seed_update(9, "k4", 2),
                    },
                );
            }
            Setup::UnsyncedMiddle | Setup::UnsyncedTail => s.view(&CHAIN),
            Setup::StatelessHead => {
                s.view(&CHAIN);
                s.tick(0);
            }
        }
        s.check_prepared();
        s
    }

    /// A preparation that silently produced something else would make every later check
    /// weaker than it claims, so it fails loudly (on every input: easy to notice).
    fn check_prepared(&self) {
        let d = self.replica.describe();
        let (role, holds_state) = match self.setup {
            Setup::Fresh => (Role::Outside, false),
            Setup::Single => (Role::Single, true),
            Setup::Head => (Role::Head, true),
            Setup::Middle => (Role::Middle, true),
            Setup::Tail => (Role::Tail, true),
            Setup::UnsyncedMiddle => (Role::Middle, false),
            Setup::UnsyncedTail => (Role::Tail, false),
            Setup::StatelessHead => (Role::Head, false),
        };
        assert_eq!((d.role, d.holds_state), (role, holds_state), "preparing {:?}: {d:?}", self.setup);
        if matches!(self.setup, Setup::Middle | Setup::Tail) {
            assert_eq!((d.last_applied, d.reorder_len), (7, 1), "preparing {:?}: {d:?}", self.setup);
        }
    }

    fn seed_writes(&mut self) {
        self.seed_write(WriteOp::Inc {
            key: "k0".into(),
            delta: 1,
        });
        self.seed_write(WriteOp::Inc {
            key: "k1".into(),
            delta: 2,
        });
        self.seed_write(WriteOp::Inc {
            key: "k2".into(),
            delta: -3,
        });
        self.seed_write(WriteOp::Del { key: "k1".into() });
    }

    fn seed_write(&mut self, op: WriteOp) {
        let origin = (self.variant() == Variant::Tail).then(|| seed_origin(self.next_token as i32));
        let result = self.write(op, origin);
        assert!(result.is_ok(), "preparing {:?}: seed write refused: {result:?}", self.setup);
    }

    /// Answer every transfer, update and acknowledgement the replica has sent as its peers
    /// would when all is well.
    fn accept_outbox(&mut self) {
        let outbox = std::mem::take(&mut self.replica.net_mut().outbox);
        for msg in outbox {
            match msg.request {
                PeerRequest::Propose { .. } | PeerRequest::Transfer(_) | PeerRequest::XidProcessed(_) => {
                    self.replica
                        .on_peer_reply(msg.to.id, msg.epoch, msg.request.kind(), PeerReply::Accepted);
                }
                _ => self.replica.net_mut().outbox.push(msg),
            }
        }
        self.check();
    }

    fn lease_valid(&self) -> bool {
        self.clock.0.get() < self.lease_until
    }

    fn acts_as(&self, roles: &[Role]) -> bool {
        roles.contains(&self.replica.role())
    }

    pub fn variant(&self) -> Variant {
        self.replica.config().variant
    }

    pub fn me(&self) -> Option<NodeId> {
        self.replica.session_id()
    }

    pub fn before(&self) -> Before {
        Before {
            describe: self.replica.describe(),
            store: self.replica.store().clone(),
        }
    }

    /// The structural invariants: true after every step, whatever came in.
    pub fn check(&self) {
        let r = &self.replica;
        let d = r.describe();
        let cfg = r.config();
        let ctx = || format!("{:?}/{:?}: {d:?}", self.setup, cfg.variant);

        if let Some((k, v)) = r.store().iter().find(|(_, v)| **v == 0) {
            panic!("store holds a zero value {k:?}={v} ({})", ctx());
        }
        assert_eq!(d.keys, r.store().len(), "describe().keys ({})", ctx());
        if !d.holds_state {
            assert!(
                d.last_applied == 0 && d.keys == 0 && d.sent_len == 0 && d.reorder_len == 0 && d.pending_len == 0,
                "a replica without state holds some ({})",
                ctx()
            );
        }
        assert!(d.tail_processed <= d.last_applied, "tail progress past last_applied ({})", ctx());

        let sent: Vec<Xid> = r.sent().map(|u| u.xid).collect();
        assert_eq!(sent.len(), d.sent_len, "describe().sent_len ({})", ctx());
        assert!(
            sent.windows(2).all(|w| w[0] < w[1]),
            "sent list {sent:?} not strictly increasing ({})",
            ctx()
        );
        if let (Some(first), Some(last)) = (sent.first(), sent.last()) {
            assert!(*last <= d.last_applied, "sent list {sent:?} past last_applied ({})", ctx());
            assert!(
                *first > d.tail_processed,
                "sent list {sent:?} holds xids the tail applied ({})",
                ctx()
            );
        }

        // The reorder window holds xids last_applied+2 ..= last_applied+max_reorder.
        assert!(d.reorder_len < cfg.max_reorder.max(1), "reorder buffer over its bound ({})", ctx());
        assert!(d.sent_len <= cfg.max_sent, "sent list over its bound ({})", ctx());
        assert!(
            d.pending_len <= cfg.max_pending_writes,
            "pending clients over their bound ({})",
            ctx()
        );

        let net = r.net();
        let mut seen = BTreeSet::new();
        for (token, outcome) in &net.completed {
            assert!(seen.insert(*token), "client {token} completed twice ({outcome:?}; {})", ctx());
            assert!(
                self.pending_tokens.contains_key(token),
                "client {token} completed but never pending ({})",
                ctx()
            );
        }
        // Checked in the state they were made in: "committed" only for an xid the tail has,
        // and only while the session is known alive (a new head may reuse the xids otherwise).
        for (token, outcome) in &net.completed[self.completions_checked.get()..] {
            if *outcome == chainrep::core::WriteOutcome::Committed {
                let xid = self.pending_tokens[token];
                assert!(
                    xid <= d.tail_processed,
                    "client {token} (xid {xid}) committed before the tail had it ({})",
                    ctx()
                );
                assert!(self.lease_valid(), "client {token} committed on a lapsed lease ({})", ctx());
            }
        }
        self.completions_checked.set(net.completed.len());
        if cfg.variant == Variant::Tail {
            assert!(
                net.completed.is_empty() && d.pending_len == 0,
                "tail variant tracks clients ({})",
                ctx()
            );
        }
    }

    /// What may only grow while the session lasts.
    fn check_progress(&self, before: &Before, step: &dyn std::fmt::Debug) {
        let (b, a) = (&before.describe, self.replica.describe());
        let ctx = || format!("{:?}/{:?} after {step:?}: {b:?} -> {a:?}", self.setup, self.variant());
        assert_eq!(a.session_id, b.session_id, "session changed without a session event ({})", ctx());
        assert!(a.last_applied >= b.last_applied, "last_applied went back ({})", ctx());
        assert!(a.tail_processed >= b.tail_processed, "tail progress went back ({})", ctx());
        assert!(
            a.holds_state || !b.holds_state,
            "lost its state without losing its session ({})",
            ctx()
        );
    }

    fn check_unchanged(&self, before: &Before, step: &dyn std::fmt::Debug) {
        let ctx = || format!("{:?}/{:?} after {step:?}", self.setup, self.variant());
        assert_eq!(
            self.replica.describe(),
            before.describe,
            "refused or read-only step changed describe() ({})",
            ctx()
        );
        assert!(
            self.replica.store() == &before.store,
            "refused or read-only step changed the store ({})",
            ctx()
        );
    }

    /// The checks every step within a session ends with.
    fn after_step(&self, before: &Before, step: &dyn std::fmt::Debug) {
        self.check();
        self.check_progress(before, step);
    }

    /// A replica-to-replica request, as a gRPC handler hands it to the core.
    pub fn peer(&mut self, to: Addressee, request: PeerRequest) -> PeerReply {
        let before = self.before();
        let reply = self.replica.on_addressed_request(to.resolve(self.me()), request.clone());
        let step = (&to, &request, &reply);
        self.after_step(&before, &step);
        let d = self.replica.describe();
        let ctx = || {
            format!(
                "{:?}/{:?} after {step:?}: {:?} -> {d:?}",
                self.setup,
                self.variant(),
                before.describe
            )
        };
        match (&request, &reply) {
            (_, PeerReply::Accepted) => {}
            (PeerRequest::GetLatestXid, PeerReply::LatestXid(Some(xid))) => {
                assert_eq!(*xid, d.last_applied, "getLatestXid answered another xid ({})", ctx());
                assert!(
                    self.acts_as(&[Role::Tail, Role::Single]) && d.holds_state,
                    "getLatestXid answered other than by a tail holding the state ({})",
                    ctx()
                );
                assert!(self.lease_valid(), "getLatestXid answered on a lapsed lease ({})", ctx());
                self.check_unchanged(&before, &step);
                return reply;
            }
            _ => {
                self.check_unchanged(&before, &step);
                return reply;
            }
        }
        match &request {
            PeerRequest::Propose { update, .. } => {
                let last = before.describe.last_applied;
                if update.xid == 0 && last == 0 && self.replica.store() != &before.store {
                    // A replica that has applied nothing takes xid 0 as a from-0 chain's first
                    // update (once): that key, and nothing else, changed.
                    let mut expected = before.store.clone();
                    if update.value == 0 {
                        expected.remove(&update.key);
                    } else {
                        expected.insert(update.key.clone(), update.value);
                    }
                    assert!(self.replica.store() == &expected, "xid 0 applied wrongly ({})", ctx());
                    assert_eq!(d.last_applied, 0, "xid 0 moved last_applied ({})", ctx());
                } else if update.xid <= last {
                    self.check_unchanged(&before, &step);
                } else if update.xid > last + 1 {
                    assert_eq!(d.last_applied, last, "held update applied ({})", ctx());
                    assert!(self.replica.store() == &before.store, "held update changed the store ({})", ctx());
                } else {
                    assert!(d.last_applied > last, "next update accepted but not applied ({})", ctx());
                }
            }
            PeerRequest::Transfer(t) => {
                assert!(d.last_applied >= t.state_xid, "transfer accepted but not installed ({})", ctx());
                if d.last_applied == t.state_xid {
                    let expected: Store = t.state.iter().filter(|(_, v)| **v != 0).map(|(k, v)| (k.clone(), *v)).collect();
                    assert!(
                        self.replica.store() == &expected,
                        "installed store differs from the transfer ({})",
                        ctx()
                    );
                }
            }
            PeerRequest::XidProcessed(xid) => {
                assert_eq!(
                    d.last_applied,
                    before.describe.last_applied,
                    "xidProcessed applied something ({})",
                    ctx()
                );
                assert!(self.replica.store() == &before.store, "xidProcessed changed the store ({})", ctx());
                assert!(d.tail_processed >= *xid, "xidProcessed accepted but not recorded ({})", ctx());
            }
            PeerRequest::GetLatestXid | PeerRequest::PullState { .. } | PeerRequest::Held => {
                panic!("{request:?} answered Accepted ({})", ctx());
            }
        }
        reply
    }

    /// `increment` / `delete` from a client.
    pub fn write(&mut self, op: WriteOp, origin: Option<ClientOrigin>) -> Result<WriteAccepted, WriteRejected> {
        let before = self.before();
        let token = self.next_token;
        self.next_token += 1;
        let result = self.replica.client_write(token, op.clone(), origin.clone());
        if let Ok(WriteAccepted::Pending(xid)) = result {
            self.pending_tokens.insert(token, xid);
        }
        let step = (&op, &origin, &result);
        self.after_step(&before, &step);
        let xid = match result {
            Err(_) => {
                self.check_unchanged(&before, &step);
                return result;
            }
            Ok(WriteAccepted::Pending(xid)) => {
                assert_eq!(self.variant(), Variant::Head, "pending write in the tail variant ({step:?})");
                xid
            }
            Ok(WriteAccepted::Forwarded(xid)) => {
                assert_eq!(self.variant(), Variant::Tail, "forwarded write in the head variant ({step:?})");
                xid
            }
        };
        assert!(
            self.acts_as(&[Role::Head, Role::Single]) && before.describe.holds_state,
            "write accepted other than by a head holding the state ({step:?})"
        );
        assert!(self.lease_valid(), "write accepted on a lapsed lease ({step:?})");
        let read = |s: &Store, k: &str| s.get(k).copied().unwrap_or(0);
        let expected = match &op {
            WriteOp::Inc { key, delta } => read(&before.store, key).checked_add(*delta),
            WriteOp::Del { .. } => Some(0),
        };
        assert_eq!(xid, before.describe.last_applied + 1, "write got xid {xid} ({step:?})");
        assert_eq!(self.replica.last_applied(), xid, "write not applied at once ({step:?})");
        assert_eq!(
            Some(read(self.replica.store(), op.key())),
            expected,
            "write applied the wrong value ({step:?})"
        );
        result
    }

    /// `get` from a client.
    pub fn read(&mut self, key: &str) -> Result<i32, ReadRejected> {
        let before = self.before();
        let result = self.replica.client_read(key);
        let step = (key, &result);
        self.after_step(&before, &step);
        self.check_unchanged(&before, &step);
        if let Ok(v) = result {
            assert_eq!(v, before.store.get(key).copied().unwrap_or(0), "read another value ({step:?})");
            assert!(
                self.acts_as(&[Role::Tail, Role::Single]) && before.describe.holds_state,
                "read served other than by a tail holding the state ({step:?})"
            );
            assert!(self.lease_valid(), "read served on a lapsed lease ({step:?})");
        }
        result
    }

    /// Move time on by `ms` and run the timer.
    pub fn tick(&mut self, ms: u64) {
        let before = self.before();
        self.clock.advance(ms);
        self.replica.on_tick();
        self.after_step(&before, &("tick", ms));
    }

    /// The session was confirmed alive by an exchange started `ago_ms` before now.
    pub fn alive(&mut self, ago_ms: u64) {
        let before = self.before();
        let at = self.clock.0.get().saturating_sub(ago_ms);
        self.replica.on_session_alive(at);
        self.lease_until = self.lease_until.max(at + self.replica.config().lease_ms);
        self.after_step(&before, &("alive", ago_ms));
        // A renewed lease may only answer clients the tail already confirmed.
        let (b, mut a) = (&before.describe, self.replica.describe());
        assert!(
            a.pending_len <= b.pending_len,
            "alive({ago_ms}) added pending clients: {b:?} -> {a:?}"
        );
        // Answering clients changes who waits first, and the renewal may make the lease valid.
        a.pending_len = b.pending_len;
        a.oldest_pending = b.oldest_pending;
        a.lease_valid = b.lease_valid;
        assert_eq!(&a, b, "alive({ago_ms}) changed more than its pending clients and lease");
        assert!(self.replica.store() == &before.store, "alive({ago_ms}) changed the store");
    }

    pub fn view(&mut self, ids: &[NodeId]) {
        self.view_members(members(ids));
    }

    pub fn view_members(&mut self, members: Vec<Member>) {
        let before = self.before();
        self.view_version += 1;
        self.replica.on_view(members.clone(), self.view_version);
        let step = ("view", &members);
        self.after_step(&before, &step);
        assert_eq!(
            self.replica.last_applied(),
            before.describe.last_applied,
            "a view applied something ({step:?})"
        );
        assert!(self.replica.store() == &before.store, "a view changed the store ({step:?})");
    }

    /// The reply to one of the replica's own requests (or to one it never sent).
    pub fn reply(&mut self, from: NodeId, epoch: u64, kind: chainrep::core::RequestKind, reply: PeerReply) {
        let before = self.before();
        self.replica.on_peer_reply(from, epoch, kind, reply.clone());
        self.after_step(&before, &("reply", from, epoch, kind, &reply));
    }

    pub fn session_lost(&mut self) {
        self.replica.on_session_lost();
        self.lease_until = 0;
        self.check();
        let d = self.replica.describe();
        assert!(d.session_id.is_none() && !d.holds_state, "session lost but state kept: {d:?}");
        self.check_every_client_answered("session lost");
    }

    pub fn joined(&mut self, id: NodeId) {
        self.replica.on_joined(id);
        self.lease_until = 0;
        self.check();
        let d = self.replica.describe();
        assert!(d.session_id == Some(id) && d.last_applied == 0, "joined as {id:x} but: {d:?}");
        self.check_every_client_answered("joined");
    }

    /// A replica that starts over must not leave a client waiting forever.
    fn check_every_client_answered(&self, step: &str) {
        let completed: BTreeSet<ClientToken> = self.replica.net().completed.iter().map(|(t, _)| *t).collect();
        let accepted: BTreeSet<ClientToken> = self.pending_tokens.keys().copied().collect();
        assert_eq!(completed, accepted, "{step}: clients left waiting");
    }
}
