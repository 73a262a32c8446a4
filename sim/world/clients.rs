//! The world's side of the clients (`sim::client` holds their data): each operation sent,
//! answered, retried or timed out, and recorded in the history when it ends.

use crate::core::{ClientOrigin, ClientToken, Millis, ReadRejected, Variant, WriteAccepted, WriteOp, WriteOutcome, WriteRejected};
use crate::sim::checks::KeyVerdict;
use crate::sim::client::{key_name, token, untoken, written_key, ClientReq, ClientResult, Current};
use crate::sim::events::{Endpoint, Ev};
use crate::sim::linearizability::{Op, OpKind};
use crate::sim::procs::Status;
use crate::sim::violation::Violation;
use crate::sim::world::{Phase, World};

impl World {
    /// Give a client `n` more operations to run, starting now.
    pub fn add_client_ops(&mut self, c: usize, n: usize) {
        self.clients[c].ops_left += n;
        self.schedule(0, Ev::ClientWake { client: c });
    }

    /// Give every client `n` more operations, starting now.
    pub fn add_workload(&mut self, n: usize) {
        for c in 0..self.clients.len() {
            self.add_client_ops(c, n);
        }
    }

    /// Run until every client is done, or fail liveness if that takes past `limit`.
    pub fn finish_workload(&mut self, limit: Millis, what: &str) {
        self.run_until(limit);
        if !self.clients_done() && self.ok() {
            self.fail(Violation::liveness(format!("the workload {what} did not finish by {limit} ms")));
        }
    }

    pub fn client_wake(&mut self, c: usize) {
        if self.clients[c].current.is_some() || self.clients[c].ops_left == 0 {
            return;
        }
        let key = self.draw_key();
        let req = match self.dice.clients.range(0, 10) {
            0..=4 => ClientReq::Write(WriteOp::Inc {
                key,
                delta: self.dice.clients.range(1, 4) as i32 * if self.dice.clients.chance(250_000) { -1 } else { 1 },
            }),
            5 => ClientReq::Write(WriteOp::Del { key }),
            _ => ClientReq::Read(key),
        };
        let invoked = self.now();
        let client = &mut self.clients[c];
        let op = client.next_op;
        client.next_op += 1;
        client.current = Some(Current {
            op,
            req,
            invoked,
            attempt: 0,
        });
        let deadline = self.cfg.op_timeout;
        self.schedule(deadline, Ev::ClientDeadline { client: c, op });
        self.client_send(c);
    }

    /// Mostly one of the run's few keys; now and then one that is empty, one byte too long, or
    /// exactly as long as allowed, so key validation is judged too (`checks::valid_keys`).
    fn draw_key(&mut self) -> String {
        if self.dice.clients.chance(20_000) {
            let limit = self.cfg.max_key_bytes;
            return match self.dice.clients.range(0, 3) {
                0 => String::new(),
                1 => "x".repeat(limit + 1),
                _ => "y".repeat(limit),
            };
        }
        let k = self.dice.clients.range(0, self.cfg.keys as u64) as usize;
        key_name(self.key_generations - 1, k)
    }

    /// The targeted scenarios write keys of their own: the linearizability check's cost grows
    /// faster than a key's history, and a scenario's bugs show in its own keys, while the
    /// final reads still cover every key.
    pub fn fresh_keys(&mut self) {
        self.key_generations += 1;
    }

    fn client_send(&mut self, c: usize) {
        let Some(cur) = self.clients[c].current.clone() else { return };
        let target = match cur.req {
            ClientReq::Write(_) => self.clients[c].view.first(),
            ClientReq::Read(_) => self.clients[c].view.last(),
        };
        let Some(target) = target.and_then(|m| self.proc_of_addr(&m.addr)) else {
            self.schedule(
                20,
                Ev::ClientResult {
                    client: c,
                    op: cur.op,
                    attempt: cur.attempt,
                    result: ClientResult::Retry,
                },
            );
            return;
        };
        if self.is_blocked(Endpoint::Client(c), Endpoint::Replica(target)) || self.dice.net.chance(self.net.drop_ppm) {
            let t = self.cfg.rpc_timeout;
            self.schedule(
                t,
                Ev::ClientResult {
                    client: c,
                    op: cur.op,
                    attempt: cur.attempt,
                    result: ClientResult::Unknown,
                },
            );
            return;
        }
        let d = self.delay();
        self.schedule(
            d,
            Ev::ClientArrive {
                client: c,
                op: cur.op,
                attempt: cur.attempt,
                to: target,
                req: cur.req,
            },
        );
    }

    pub fn client_arrive(&mut self, c: usize, op: u64, attempt: u32, to: usize, req: ClientReq) {
        let result = if self.procs[to].status == Status::Crashed {
            Some(ClientResult::Unknown)
        } else {
            match req {
                ClientReq::Write(w) => self.head_write(c, op, attempt, to, w),
                ClientReq::Read(key) => {
                    let result = self.with_replica(to, |r| r.client_read(&key));
                    if let Some(result) = &result {
                        let verdict = match result {
                            Ok(_) => KeyVerdict::Served,
                            Err(ReadRejected::InvalidKey(_)) => KeyVerdict::Invalid,
                            Err(_) => KeyVerdict::NotJudged,
                        };
                        self.check_key_verdict(&key, verdict);
                    }
                    result.map(|r| match r {
                        Ok(v) => ClientResult::Value(v),
                        Err(ReadRejected::InvalidKey(_)) => ClientResult::Refused,
                        Err(_) => ClientResult::Retry,
                    })
                }
            }
        };
        if let Some(result) = result {
            self.client_reply(c, op, attempt, to, result);
        }
    }

    fn head_write(&mut self, c: usize, op: u64, attempt: u32, to: usize, w: WriteOp) -> Option<ClientResult> {
        let origin = (self.cfg.variant == Variant::Tail).then(|| ClientOrigin {
            host: format!("client{c}"),
            port: 1,
            cxid: op as i32,
        });
        let issued_op = w.clone();
        let result = self.with_replica(to, |r| r.client_write(token(c, op, attempt), w, origin))?;
        let verdict = match &result {
            Ok(_) => KeyVerdict::Served,
            Err(WriteRejected::InvalidKey(_)) => KeyVerdict::Invalid,
            Err(_) => KeyVerdict::NotJudged,
        };
        self.check_key_verdict(written_key(&issued_op), verdict);
        match result {
            Ok(WriteAccepted::Pending(xid) | WriteAccepted::Forwarded(xid)) => {
                if let Err(v) = self.record.canon.issued(xid, &issued_op) {
                    self.fail(v);
                }
                self.record.pending_xids.insert((c, op), xid);
                (self.cfg.variant == Variant::Tail).then_some(ClientResult::Accepted)
            }
            Err(WriteRejected::InvalidKey(_) | WriteRejected::OutOfRange { .. }) => Some(ClientResult::Refused),
            Err(_) => Some(ClientResult::Retry),
        }
    }

    fn client_reply(&mut self, c: usize, op: u64, attempt: u32, from: usize, result: ClientResult) {
        if self.is_blocked(Endpoint::Client(c), Endpoint::Replica(from)) || self.dice.net.chance(self.net.drop_ppm) {
            // The answer is lost; the client's own deadline will end the operation.
            return;
        }
        let d = self.delay();
        self.schedule(
            d,
            Ev::ClientResult {
                client: c,
                op,
                attempt,
                result,
            },
        );
    }

    /// A head's `complete_client`: travels back to the waiting client.
    pub fn complete_client(&mut self, from: usize, t: ClientToken, outcome: WriteOutcome) {
        let (c, op, attempt) = untoken(t);
        let result = match outcome {
            WriteOutcome::Committed => ClientResult::Committed,
            WriteOutcome::Unknown(_) => ClientResult::Unknown,
        };
        if c < self.clients.len() {
            self.client_reply(c, op, attempt, from, result);
        }
    }

    /// A tail's `notify_client` (tail variant).
    pub fn notify_client(&mut self, from: usize, origin: ClientOrigin) {
        let Some(c) = origin.host.strip_prefix("client").and_then(|n| n.parse::<usize>().ok()) else {
            return;
        };
        if c >= self.clients.len()
            || self.is_blocked(Endpoint::Client(c), Endpoint::Replica(from))
            || self.dice.net.chance(self.net.drop_ppm)
        {
            return;
        }
        let d = self.delay();
        self.schedule(
            d,
            Ev::Callback {
                client: c,
                cxid: origin.cxid,
            },
        );
    }

    pub fn client_callback(&mut self, c: usize, cxid: i32) {
        let matches = self.clients[c]
            .current
            .as_ref()
            .is_some_and(|cur| cur.op as i32 == cxid && matches!(cur.req, ClientReq::Write(_)));
        if matches {
            self.finish(c, End::Done(None));
        }
    }

    pub fn client_result(&mut self, c: usize, op: u64, attempt: u32, result: ClientResult) {
        let Some(cur) = self.clients[c].current.as_mut() else { return };
        if cur.op != op || cur.attempt != attempt {
            return;
        }
        let is_write = matches!(cur.req, ClientReq::Write(_));
        match result {
            ClientResult::Committed => self.finish(c, End::Done(None)),
            ClientResult::Value(v) => self.finish(c, End::Done(Some(v))),
            ClientResult::Accepted => {}
            ClientResult::Refused => self.finish(c, End::NoEffect),
            ClientResult::Unknown if is_write => self.finish(c, End::Unknown),
            ClientResult::Unknown | ClientResult::Retry => {
                cur.attempt += 1;
                let attempt = cur.attempt;
                let backoff = self.dice.clients.range(5, 40);
                self.schedule(backoff, Ev::ClientResend { client: c, op, attempt });
            }
        }
    }

    pub fn client_resend(&mut self, c: usize, op: u64, attempt: u32) {
        if self.clients[c]
            .current
            .as_ref()
            .is_some_and(|cur| cur.op == op && cur.attempt == attempt)
        {
            self.client_send(c);
        }
    }

    pub fn client_deadline(&mut self, c: usize, op: u64) {
        let Some(cur) = self.clients[c].current.as_ref() else { return };
        if cur.op == op {
            self.finish(c, End::Unknown);
        }
    }

    fn finish(&mut self, c: usize, end: End) {
        let Some(cur) = self.clients[c].current.take() else { return };
        let now = self.now();
        let xid = self.record.pending_xids.remove(&(c, cur.op));
        let entry = match (&cur.req, end) {
            (_, End::NoEffect) => None,
            // A read that never came back tells nothing.
            (ClientReq::Read(_), End::Unknown) => None,
            (ClientReq::Read(key), End::Done(v)) => Some((key.clone(), OpKind::Get(v.unwrap_or(0)), Some(now))),
            (ClientReq::Write(w), end) => {
                let kind = match w {
                    WriteOp::Inc { delta, .. } => OpKind::Inc(*delta),
                    WriteOp::Del { .. } => OpKind::Del,
                };
                let returned = matches!(end, End::Done(_)).then_some(now);
                if let (Some(xid), Some(_)) = (xid, returned) {
                    self.record.canon.acknowledged(xid);
                }
                Some((written_key(w).to_string(), kind, returned))
            }
        };
        if let Some((key, kind, returned)) = entry {
            self.record.history.push(Op {
                key,
                kind,
                invoked: cur.invoked,
                returned,
            });
        }
        if end == End::Unknown {
            if let Phase::Healed { at } = self.phase {
                if cur.invoked >= at + self.cfg.settle_time {
                    self.fail(Violation::liveness(format!(
                        "client {c} operation {:?} invoked at {} ms, after faults stopped at {at} ms, did not complete",
                        cur.req, cur.invoked
                    )));
                }
            }
        }
        self.clients[c].ops_left -= 1;
        self.record.ops_finished += 1;
        let think = self.dice.clients.range(0, 30);
        self.schedule(think, Ev::ClientWake { client: c });
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Done(Option<i32>),
    NoEffect,
    Unknown,
}

impl World {
    fn check_key_verdict(&mut self, key: &str, verdict: KeyVerdict) {
        let (view, checks) = self.observed();
        checks.key_verdict(&view, key, verdict);
    }
}
