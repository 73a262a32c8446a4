//! What clients do: writes enter at the head, reads are served by the tail.

use super::*;

/// What the head did with an accepted write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAccepted {
    /// Head variant: the client's call completes through `Network::complete_client` later.
    Pending(Xid),
    /// Tail variant: answer the client `rc = 0` now; the tail calls it back when applied.
    Forwarded(Xid),
}

impl<C: Clock, N: Network, K: Coordinator> Replica<C, N, K> {
    pub(super) fn check_key(&self, key: &str) -> Result<(), KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > self.cfg.max_key_bytes {
            return Err(KeyError::TooLong {
                bytes: key.len(),
                limit: self.cfg.max_key_bytes,
            });
        }
        Ok(())
    }

    /// `increment` / `delete` at the head. Nothing is applied unless this returns `Ok`.
    ///
    /// `origin` is the tail variant's callback address; `token` the head variant's handle for
    /// the waiting call.
    pub fn client_write(&mut self, token: ClientToken, op: WriteOp, origin: Option<ClientOrigin>) -> Result<WriteAccepted, WriteRejected> {
        if !self.is_head_role() {
            return Err(WriteRejected::NotHead);
        }
        if !self.holds_state {
            return Err(WriteRejected::Unavailable("it is still receiving the chain's state"));
        }
        if !self.lease_valid() {
            return Err(WriteRejected::Unavailable("its ZooKeeper session is not confirmed alive"));
        }
        self.check_key(op.key()).map_err(WriteRejected::InvalidKey)?;
        let value = match &op {
            WriteOp::Inc { key, delta } => {
                let current = self.store.get(key).copied().unwrap_or(0);
                current.checked_add(*delta).ok_or_else(|| WriteRejected::OutOfRange {
                    key: key.clone(),
                    current,
                    delta: *delta,
                })?
            }
            WriteOp::Del { .. } => 0,
        };
        if self.cfg.variant == Variant::Head && self.pending.len() >= self.cfg.max_pending_writes {
            return Err(WriteRejected::Busy(format!("{} writes wait for the tail", self.pending.len())));
        }
        // Updates still waiting for our disk go down the chain next, so they count too.
        if self.sent.len() + self.durability.waiting_len() >= self.cfg.max_sent {
            return Err(WriteRejected::Busy(format!(
                "{} updates are not yet applied at the tail",
                self.sent.len()
            )));
        }

        let client = origin.as_ref().map(|o| format!("{}:{}", o.host, o.port));
        if let Some(client) = &client {
            let waiting = self.writes_per_client.get(client).copied().unwrap_or(0);
            if waiting >= self.cfg.max_writes_per_client {
                return Err(WriteRejected::Busy(format!(
                    "client {client} has {waiting} writes not yet applied at the tail"
                )));
            }
        }

        // A transfer may have carried the last xid there is (the wire allows any u64).
        let xid = self
            .last_applied
            .checked_add(1)
            .ok_or(WriteRejected::Unavailable("the chain has used up its xids"))?;
        let key = match op {
            WriteOp::Inc { key, .. } | WriteOp::Del { key } => key,
        };
        let update = Update { xid, key, value, origin };
        if self.cfg.variant == Variant::Head {
            self.pending.insert(xid, token);
        }
        if let Some(client) = client {
            *self.writes_per_client.entry(client.clone()).or_insert(0) += 1;
            self.client_writes.push_back((xid, client));
        }
        self.apply_and_pass_on(update);
        Ok(match self.cfg.variant {
            Variant::Head => WriteAccepted::Pending(xid),
            Variant::Tail => WriteAccepted::Forwarded(xid),
        })
    }

    /// `get` at the tail. A missing key reads 0.
    pub fn client_read(&self, key: &str) -> Result<i32, ReadRejected> {
        if !self.is_tail_role() {
            return Err(ReadRejected::NotTail);
        }
        if !self.holds_state {
            // A tail that has not received the state yet must not answer, or it would read 0s.
            return Err(ReadRejected::NotTail);
        }
        if !self.lease_valid() {
            return Err(ReadRejected::Unavailable("its ZooKeeper session is not confirmed alive"));
        }
        self.check_key(key).map_err(ReadRejected::InvalidKey)?;
        Ok(self.store.get(key).copied().unwrap_or(0))
    }
}
