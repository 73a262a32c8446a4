//! The `event_sequence` target: one replica core driven by an arbitrary sequence of events
//! (views, peer requests, replies to its own requests, client calls, time, session events),
//! with the harness's invariants checked after every one.
//!
//! Ids, xids and keys are mostly given relative to the replica's current state (its own id,
//! its neighbours, its next xid), so that short inputs reach the interesting branches; every
//! spec also has an absolute form, so nothing is out of reach.

use arbitrary::{Arbitrary, Unstructured};
use chainrep::core::testkit::member;
use chainrep::core::{
    ClientOrigin, NodeId, PeerReply, PeerRequest, PullAnswer, RequestKind, RetainedMark, Store, Transfer, Update, Variant, WriteOp, Xid,
};

use crate::harness::{Addressee, Setup, Subject, A, B, C, D};

#[derive(Arbitrary, Debug, Clone)]
pub struct Scenario {
    pub tail_variant: bool,
    pub start: Setup,
    pub events: Vec<Event>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Event {
    /// A membership view with exactly these members.
    View(Vec<IdSpec>),
    /// A view that contains the replica itself and these others.
    ViewWithMe(Vec<IdSpec>),
    Peer {
        to: ToSpec,
        request: RequestSpec,
    },
    /// The reply to the `pick`-th request still waiting in the replica's outbox.
    Reply {
        pick: u8,
        reply: ReplySpec,
    },
    /// A reply to a request the replica may never have sent. The runtime never makes one up,
    /// but a late reply to a superseded link or pull looks just like this.
    ForgedReply {
        from: IdSpec,
        epoch: u8,
        kind: KindSpec,
        reply: ReplySpec,
    },
    Write {
        op: OpSpec,
        origin: Option<OriginSpec>,
    },
    Read(KeySpec),
    Tick {
        advance_ms: u16,
    },
    Alive {
        ago_ms: u16,
    },
    SessionLost,
    Joined(IdSpec),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum IdSpec {
    Me,
    Pred,
    Succ,
    Head,
    Tail,
    /// One of `A`, `B`, `C`, `D`.
    Chain(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum XidSpec {
    Next,
    Last,
    /// `last_applied` plus this, clamped to the `u64` range.
    Rel(i8),
    Abs(u64),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum KeySpec {
    /// `k0` ..= `k5`: the keys the prepared replicas hold.
    Small(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct OriginSpec {
    pub port: i32,
    pub cxid: i32,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ToSpec {
    Unaddressed,
    Me,
    Other(IdSpec),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct UpdateSpec {
    pub xid: XidSpec,
    pub key: KeySpec,
    pub value: i32,
    pub origin: Option<OriginSpec>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum SentSpec {
    /// Updates for the last `n` xids up to the state's: what a real sender's sent list is.
    Suffix(u8),
    Raw(Vec<UpdateSpec>),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct TransferSpec {
    pub src: IdSpec,
    pub state_xid: XidSpec,
    pub state: Vec<(KeySpec, i32)>,
    pub sent: SentSpec,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum RequestSpec {
    Propose {
        src: IdSpec,
        update: UpdateSpec,
    },
    Transfer(TransferSpec),
    XidProcessed(XidSpec),
    GetLatestXid,
    PullState {
        src: IdSpec,
        stateless: Vec<IdSpec>,
        retained: bool,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ReplySpec {
    Accepted,
    Refused,
    Unreachable,
    LatestXid(Option<XidSpec>),
    State(TransferSpec),
    NotNow,
    NoState,
    Retained { view_version: u64, xid: XidSpec },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum KindSpec {
    Propose(XidSpec),
    Transfer(XidSpec),
    XidProcessed(XidSpec),
    GetLatestXid,
    PullState,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum OpSpec {
    Inc(KeySpec, i32),
    Del(KeySpec),
}

/// The target's entry point: bytes that do not decode to a scenario are skipped.
pub fn run(data: &[u8]) {
    if let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) {
        play(&scenario);
    }
}

pub fn play(scenario: &Scenario) {
    let variant = if scenario.tail_variant { Variant::Tail } else { Variant::Head };
    let mut s = Subject::new(scenario.start, variant);
    for event in &scenario.events {
        step(&mut s, event);
    }
}

fn me(s: &Subject) -> NodeId {
    s.me().unwrap_or(A)
}

fn id(s: &Subject, spec: IdSpec) -> NodeId {
    let me = me(s);
    let view = s.replica.view();
    let chain = |n: u8| [A, B, C, D][n as usize % 4];
    match spec {
        IdSpec::Me => me,
        IdSpec::Pred => view.predecessor(me).map_or(A, |m| m.id),
        IdSpec::Succ => view.successor(me).map_or(C, |m| m.id),
        IdSpec::Head => view.head().map_or(A, |m| m.id),
        IdSpec::Tail => view.tail().map_or(C, |m| m.id),
        IdSpec::Chain(n) => chain(n),
        IdSpec::Any(x) => x,
    }
}

fn xid(s: &Subject, spec: XidSpec) -> Xid {
    let last = s.replica.last_applied();
    match spec {
        XidSpec::Next => last.saturating_add(1),
        XidSpec::Last => last,
        XidSpec::Rel(d) => (last as i128 + d as i128).clamp(0, u64::MAX as i128) as u64,
        XidSpec::Abs(x) => x,
    }
}

fn key(spec: &KeySpec) -> String {
    match spec {
        KeySpec::Small(n) => format!("k{}", n % 6),
        KeySpec::Raw(k) => k.clone(),
    }
}

fn origin(spec: &Option<OriginSpec>) -> Option<ClientOrigin> {
    spec.as_ref().map(|o| ClientOrigin {
        host: "client".into(),
        port: o.port,
        cxid: o.cxid,
    })
}

fn update(s: &Subject, spec: &UpdateSpec) -> Update {
    Update {
        xid: xid(s, spec.xid),
        key: key(&spec.key),
        value: spec.value,
        origin: origin(&spec.origin),
    }
}

fn transfer(s: &Subject, spec: &TransferSpec) -> Transfer {
    let state_xid = xid(s, spec.state_xid);
    let state: Store = spec.state.iter().map(|(k, v)| (key(k), *v)).collect();
    let sent = match &spec.sent {
        SentSpec::Suffix(n) => {
            let first = state_xid.saturating_sub(u64::from(*n)).saturating_add(1).max(1);
            let keys: Vec<&String> = state.keys().collect();
            (first..=state_xid)
                .map(|x| {
                    let (key, value) = match keys.get(x as usize % keys.len().max(1)) {
                        Some(k) => ((*k).clone(), state[*k]),
                        None => ("k0".to_string(), 0),
                    };
                    Update {
                        xid: x,
                        key,
                        value,
                        origin: None,
                    }
                })
                .collect()
        }
        SentSpec::Raw(updates) => updates.iter().map(|u| update(s, u)).collect(),
    };
    Transfer {
        src: id(s, spec.src),
        state_xid,
        state,
        sent,
        base: None,
    }
}

fn reply(s: &Subject, spec: &ReplySpec) -> PeerReply {
    match spec {
        ReplySpec::Accepted => PeerReply::Accepted,
        ReplySpec::Refused => PeerReply::Refused,
        ReplySpec::Unreachable => PeerReply::Unreachable,
        ReplySpec::LatestXid(x) => PeerReply::LatestXid(x.map(|x| xid(s, x))),
        ReplySpec::State(t) => PeerReply::Pulled(PullAnswer::State(transfer(s, t))),
        ReplySpec::NotNow => PeerReply::Pulled(PullAnswer::NotNow),
        ReplySpec::NoState => PeerReply::Pulled(PullAnswer::NoState),
        ReplySpec::Retained { view_version, xid: x } => PeerReply::Pulled(PullAnswer::Retained(RetainedMark {
            view_version: *view_version,
            xid: xid(s, *x),
        })),
    }
}

fn request(s: &Subject, spec: &RequestSpec) -> PeerRequest {
    match spec {
        RequestSpec::Propose { src, update: u } => PeerRequest::Propose {
            src: id(s, *src),
            update: update(s, u),
        },
        RequestSpec::Transfer(t) => PeerRequest::Transfer(transfer(s, t)),
        RequestSpec::XidProcessed(x) => PeerRequest::XidProcessed(xid(s, *x)),
        RequestSpec::GetLatestXid => PeerRequest::GetLatestXid,
        RequestSpec::PullState { src, stateless, retained } => PeerRequest::PullState {
            src: id(s, *src),
            stateless: stateless.iter().map(|i| id(s, *i)).collect(),
            retained: *retained,
        },
    }
}

fn kind(s: &Subject, spec: &KindSpec) -> RequestKind {
    match spec {
        KindSpec::Propose(x) => RequestKind::Propose(xid(s, *x)),
        KindSpec::Transfer(x) => RequestKind::Transfer(xid(s, *x)),
        KindSpec::XidProcessed(x) => RequestKind::XidProcessed(xid(s, *x)),
        KindSpec::GetLatestXid => RequestKind::GetLatestXid,
        KindSpec::PullState => RequestKind::PullState,
    }
}

pub fn step(s: &mut Subject, event: &Event) {
    match event {
        Event::View(ids) => {
            let members = ids.iter().map(|i| member(id(s, *i))).collect();
            s.view_members(members);
        }
        Event::ViewWithMe(ids) => {
            let mut members: Vec<_> = ids.iter().map(|i| member(id(s, *i))).collect();
            members.push(member(me(s)));
            s.view_members(members);
        }
        Event::Peer { to, request: r } => {
            let to = match to {
                ToSpec::Unaddressed => Addressee::Unaddressed,
                ToSpec::Me => Addressee::Me,
                ToSpec::Other(i) => Addressee::Other(id(s, *i)),
            };
            let r = request(s, r);
            s.peer(to, r);
        }
        Event::Reply { pick, reply: r } => {
            let outbox = &mut s.replica.net_mut().outbox;
            if outbox.is_empty() {
                return;
            }
            let msg = outbox.remove(*pick as usize % outbox.len());
            let r = reply(s, r);
            s.reply(msg.to.id, msg.epoch, msg.request.kind(), r);
        }
        Event::ForgedReply {
            from,
            epoch,
            kind: k,
            reply: r,
        } => {
            let (from, k, r) = (id(s, *from), kind(s, k), reply(s, r));
            s.reply(from, u64::from(*epoch), k, r);
        }
        Event::Write { op, origin: o } => {
            let op = match op {
                OpSpec::Inc(k, delta) => WriteOp::Inc {
                    key: key(k),
                    delta: *delta,
                },
                OpSpec::Del(k) => WriteOp::Del { key: key(k) },
            };
            let _ = s.write(op, origin(o));
        }
        Event::Read(k) => {
            let _ = s.read(&key(k));
        }
        Event::Tick { advance_ms } => s.tick(u64::from(*advance_ms)),
        Event::Alive { ago_ms } => s.alive(u64::from(*ago_ms)),
        Event::SessionLost => s.session_lost(),
        Event::Joined(i) => {
            let i = id(s, *i);
            s.joined(i);
        }
    }
}
