//! The network: every gRPC connection is a pair of in-memory pipes with a relay between them
//! that delays each chunk of bytes (in order, as TCP would), and stalls or breaks them when the
//! nemesis cuts two places apart or a process dies.
//!
//! Breaking matters: hyper serves each connection from a task of its own, so aborting a
//! replica's tasks alone would leave its accepted connections answering. Every pipe half is a
//! [`SimIo`] that fails with `BrokenPipe` once its connection is broken, which ends those tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::dice::SharedDice;
use crate::runtime::network::Connect;

/// Something the nemesis can cut off from something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Replica(usize),
    Client(usize),
    Coordinator,
}

/// One process: a place and which incarnation of it (a restart is a new process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub place: Place,
    pub incarnation: u32,
}

pub type Incoming = mpsc::UnboundedReceiver<Result<SimIo, io::Error>>;

/// Bytes per pipe before a writer waits, like a socket buffer.
const PIPE_BYTES: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What both halves of one connection share.
struct Link {
    broken: AtomicBool,
    /// Chunks read from one end and not yet delivered to the other.
    in_flight: AtomicUsize,
    /// Read and write wakers of each half, woken when the link breaks.
    wakers: Mutex<[Option<Waker>; 4]>,
    relays: Mutex<Vec<AbortHandle>>,
}

impl Link {
    fn register(&self, slot: usize, waker: &Waker) {
        let mut w = lock(&self.wakers);
        if !w[slot].as_ref().is_some_and(|old| old.will_wake(waker)) {
            w[slot] = Some(waker.clone());
        }
    }

    fn break_now(&self) {
        self.broken.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = lock(&self.wakers).iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
        for r in lock(&self.relays).drain(..) {
            r.abort();
        }
    }

    fn finished(&self) -> bool {
        self.broken.load(Ordering::SeqCst) || lock(&self.relays).iter().all(AbortHandle::is_finished)
    }
}

/// One end of a connection as hyper sees it.
pub struct SimIo {
    inner: DuplexStream,
    link: Arc<Link>,
    side: usize,
}

impl SimIo {
    fn check(&self, slot: usize, cx: &Context<'_>) -> io::Result<()> {
        self.link.register(self.side * 2 + slot, cx.waker());
        if self.link.broken.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection broken by the simulated network",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for SimIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check(0, cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(1, cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(1, cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(1, cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

struct Host {
    proc: Proc,
    incoming: mpsc::UnboundedSender<Result<SimIo, io::Error>>,
}

struct Conn {
    dialer: Proc,
    listener: Proc,
    link: Arc<Link>,
}

#[derive(Default)]
struct NetState {
    /// By advertised address.
    hosts: BTreeMap<String, Host>,
    /// The running incarnation of each place; a place missing here is down.
    alive: BTreeMap<Place, u32>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Pairs cut apart, smaller first.
    cuts: BTreeSet<(Place, Place)>,
    /// Pairs whose bytes take this much longer, smaller first.
    slow: BTreeMap<(Place, Place), Duration>,
}

fn pair(a: Place, b: Place) -> (Place, Place) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

pub struct Net {
    state: Mutex<NetState>,
    /// Woken whenever a cut heals, for stalled relays and connection attempts.
    healed: Notify,
    dice: SharedDice,
}

impl Net {
    pub fn new(dice: SharedDice) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(NetState::default()),
            healed: Notify::new(),
            dice,
        })
    }

    /// One-way latency: mostly a millisecond or two, now and then long enough to reorder
    /// what travels on different connections.
    pub fn delay(&self) -> Duration {
        let ms = if self.dice.chance(30_000) {
            self.dice.range(10, 60)
        } else {
            self.dice.range(0, 3)
        };
        Duration::from_millis(ms)
    }

    pub fn is_cut(&self, a: Place, b: Place) -> bool {
        lock(&self.state).cuts.contains(&pair(a, b))
    }

    /// From now on, bytes between `a` and `b` take `extra` longer (zero: back to normal).
    /// Long enough, calls time out that the other side still carries out.
    pub fn slow(&self, a: Place, b: Place, extra: Duration) {
        let mut st = lock(&self.state);
        if extra.is_zero() {
            st.slow.remove(&pair(a, b));
        } else {
            st.slow.insert(pair(a, b), extra);
        }
    }

    fn extra_delay(&self, a: Place, b: Place) -> Duration {
        lock(&self.state).slow.get(&pair(a, b)).copied().unwrap_or_default()
    }

    /// Resets one open connection between two replicas, as a middlebox might; says which.
    /// One with bytes on the way if there is one: that is when a reset loses something.
    pub fn reset_one(&self) -> Option<(Proc, Proc)> {
        let mut open: Vec<(Proc, Proc, Arc<Link>)> = lock(&self.state)
            .conns
            .values()
            .filter(|c| !c.link.finished())
            .filter(|c| matches!((c.dialer.place, c.listener.place), (Place::Replica(_), Place::Replica(_))))
            .map(|c| (c.dialer, c.listener, c.link.clone()))
            .collect();
        if open.iter().any(|(_, _, l)| l.in_flight.load(Ordering::SeqCst) > 0) {
            open.retain(|(_, _, l)| l.in_flight.load(Ordering::SeqCst) > 0);
        }
        let i = self.dice.range(0, open.len() as u64) as usize;
        let (a, b, link) = open.get(i)?.clone();
        link.break_now();
        Some((a, b))
    }

    pub fn is_alive(&self, p: Proc) -> bool {
        lock(&self.state).alive.get(&p.place) == Some(&p.incarnation)
    }

    /// A new process at `place` listening on `addr` (clients listen for tail callbacks).
    pub fn start(&self, p: Proc, addr: &str) -> Incoming {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = lock(&self.state);
        st.alive.insert(p.place, p.incarnation);
        st.hosts.insert(addr.to_string(), Host { proc: p, incoming: tx });
        rx
    }

    /// The process dies: its connections reset at once, new ones are refused.
    pub fn crash(&self, p: Proc) {
        let links: Vec<Arc<Link>> = {
            let mut st = lock(&self.state);
            if st.alive.get(&p.place) == Some(&p.incarnation) {
                st.alive.remove(&p.place);
            }
            st.hosts.retain(|_, h| h.proc != p);
            st.conns
                .values()
                .filter(|c| c.dialer == p || c.listener == p)
                .map(|c| c.link.clone())
                .collect()
        };
        for l in links {
            l.break_now();
        }
    }

    /// Cut `a` from `b`. Each open connection between them either resets now or stalls until
    /// the cut heals (its bytes wait, as TCP's retransmissions would).
    pub fn cut(&self, a: Place, b: Place) {
        let links: Vec<Arc<Link>> = {
            let mut st = lock(&self.state);
            st.cuts.insert(pair(a, b));
            st.conns
                .values()
                .filter(|c| pair(c.dialer.place, c.listener.place) == pair(a, b))
                .map(|c| c.link.clone())
                .collect()
        };
        for l in links {
            if self.dice.chance(500_000) {
                l.break_now();
            }
        }
    }

    pub fn heal(&self, a: Place, b: Place) {
        lock(&self.state).cuts.remove(&pair(a, b));
        self.healed.notify_waiters();
    }

    pub fn heal_all(&self) {
        let mut st = lock(&self.state);
        st.cuts.clear();
        st.slow.clear();
        drop(st);
        self.healed.notify_waiters();
    }

    async fn until_uncut(&self, a: Place, b: Place) {
        loop {
            let healed = self.healed.notified();
            tokio::pin!(healed);
            healed.as_mut().enable();
            if !self.is_cut(a, b) {
                return;
            }
            healed.await;
        }
    }

    /// Open a connection from process `from` to whoever listens on `addr`.
    pub async fn dial(self: &Arc<Self>, from: Proc, addr: &str) -> io::Result<SimIo> {
        let refused = |why: &str| io::Error::new(io::ErrorKind::ConnectionRefused, format!("Connection refused: {why}"));
        tokio::time::sleep(self.delay()).await;
        loop {
            if !self.is_alive(from) {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the dialing process is gone"));
            }
            let target = lock(&self.state).hosts.get(addr).map(|h| h.proc);
            let Some(target) = target else {
                return Err(refused(&format!("nothing listens on {addr}")));
            };
            if !self.is_cut(from.place, target.place) {
                break;
            }
            // Unanswered SYNs: the connection attempt hangs until the cut heals or the
            // endpoint's connect timeout gives up.
            self.until_uncut(from.place, target.place).await;
        }
        let (dialer_io, dialer_relay) = tokio::io::duplex(PIPE_BYTES);
        let (listener_io, listener_relay) = tokio::io::duplex(PIPE_BYTES);
        let link = Arc::new(Link {
            broken: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            wakers: Mutex::new(Default::default()),
            relays: Mutex::new(Vec::new()),
        });
        let mut st = lock(&self.state);
        let Some(host) = st.hosts.get(addr) else {
            return Err(refused(&format!("nothing listens on {addr}")));
        };
        let listener = host.proc;
        let server_half = SimIo {
            inner: listener_io,
            link: link.clone(),
            side: 1,
        };
        if host.incoming.send(Ok(server_half)).is_err() {
            return Err(refused(&format!("{addr} stopped accepting")));
        }
        let (dr, dw) = tokio::io::split(dialer_relay);
        let (lr, lw) = tokio::io::split(listener_relay);
        let relays = vec![
            self.clone().relay(dr, lw, from.place, listener.place, link.clone()),
            self.clone().relay(lr, dw, listener.place, from.place, link.clone()),
        ];
        lock(&link.relays).extend(relays.into_iter().flatten());
        st.conns.retain(|_, c| !c.link.finished());
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(
            id,
            Conn {
                dialer: from,
                listener,
                link: link.clone(),
            },
        );
        drop(st);
        Ok(SimIo {
            inner: dialer_io,
            link,
            side: 0,
        })
    }

    /// Carries one direction: a reader stamps each chunk with its arrival time, a writer
    /// delivers it then (never before an earlier chunk), waiting out any cut.
    fn relay(
        self: Arc<Self>,
        mut from: tokio::io::ReadHalf<DuplexStream>,
        mut to: tokio::io::WriteHalf<DuplexStream>,
        a: Place,
        b: Place,
        link: Arc<Link>,
    ) -> [AbortHandle; 2] {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
        let net = self.clone();
        let w_link = link.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; PIPE_BYTES];
            let mut last = Instant::now();
            loop {
                let n = from.read(&mut buf).await.unwrap_or(0);
                last = last.max(Instant::now() + net.delay() + net.extra_delay(a, b));
                let chunk = (n > 0).then(|| buf[..n].to_vec());
                let end = chunk.is_none();
                link.in_flight.fetch_add(1, Ordering::SeqCst);
                if tx.send((last, chunk)).is_err() || end {
                    return;
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some((at, chunk)) = rx.recv().await {
                if at > Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
                self.until_uncut(a, b).await;
                // Counted as delivered once handed on: the receiver has it (or it is lost if
                // the link breaks while the write waits, which is what a reset does).
                w_link.in_flight.fetch_sub(1, Ordering::SeqCst);
                match chunk {
                    Some(bytes) => {
                        if to.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = to.shutdown().await;
                        return;
                    }
                }
            }
        });
        [reader.abort_handle(), writer.abort_handle()]
    }
}

/// The `Connect` of one simulated process: channels whose connections are [`Net::dial`]s.
pub struct SimConnect {
    pub net: Arc<Net>,
    pub from: Proc,
    /// HTTP/2 keep-alive as `TcpConnect` sets it for replicas (clients do without).
    pub keepalive: bool,
}

impl Connect for SimConnect {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let mut endpoint = endpoint.connect_timeout(Duration::from_secs(1));
        if self.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5));
        }
        let (net, from, addr) = (self.net.clone(), self.from, addr.to_string());
        Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let (net, addr) = (net.clone(), addr.clone());
            async move { net.dial(from, &addr).await.map(TokioIo::new) }
        })))
    }
}
