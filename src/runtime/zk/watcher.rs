//! Read-only membership for clients: list the root, keep a watch on it.

use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;
use zookeeper_async::{ZkError, ZkState};

use super::config::ZkConfig;
use super::coordinator::read_members;
use super::session::{OpError, Signal, Target, ZkSession};
use crate::core::Member;

const RELIST_RETRY: Duration = Duration::from_millis(500);

pub struct ZkWatcher {
    members: watch::Receiver<Vec<Member>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ZkWatcher {
    /// Connects and reads the membership once; fails if that takes longer than `timeout`.
    /// A missing root is an empty chain, not an error.
    pub async fn connect(cfg: &ZkConfig, timeout: Duration) -> anyhow::Result<ZkWatcher> {
        let deadline = Instant::now() + timeout;
        let target = Target::new(cfg)?;
        let session = ZkSession::open(&target, timeout)
            .await
            .with_context(|| format!("ZooKeeper unreachable at {}", target.hosts_label))?;
        let initial = match tokio::time::timeout_at(deadline, list(&session, &target)).await {
            Ok(Ok(members)) => members,
            Ok(Err(e)) => return Err(anyhow!("cannot list {} at ZooKeeper {}: {e}", target.root, target.hosts_label)),
            Err(_) => {
                return Err(anyhow!(
                    "ZooKeeper at {} did not list {} within {timeout:?}",
                    target.hosts_label,
                    target.root
                ))
            }
        };
        let (tx, members) = watch::channel(initial);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(session, target, tx, stop_rx));
        Ok(ZkWatcher {
            members,
            stop: Some(stop),
            task,
        })
    }

    /// The current members, sorted by id; updated on every change.
    pub fn members(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// Closes the session. Dropping the watcher does the same in the background.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ZkWatcher {
    fn drop(&mut self) {
        // Dropping `stop` ends the task, which closes the session.
        self.stop.take();
    }
}

/// Members under the root, arming a watch on it: a child watch if it exists, else a watch for
/// its creation.
async fn list(session: &ZkSession, target: &Target) -> Result<Vec<Member>, OpError> {
    loop {
        match session
            .op(session.zk().get_children_w(&target.root, session.watch_callback()))
            .await
        {
            Ok(names) => return read_members(session, target, &names).await,
            Err(e) if e.is(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
        match session.op(session.zk().exists_w(&target.root, session.watch_callback())).await? {
            None => return Ok(Vec::new()),
            // Created in between: list it.
            Some(_) => continue,
        }
    }
}

async fn run(mut session: ZkSession, target: Target, tx: watch::Sender<Vec<Member>>, mut stop: oneshot::Receiver<()>) {
    let mut need_list = false;
    let mut retry_at: Option<Instant> = None;
    loop {
        if need_list && session.connected() {
            need_list = false;
            match list(&session, &target).await {
                Ok(members) => {
                    retry_at = None;
                    tx.send_if_modified(|current| {
                        let changed = *current != members;
                        *current = members;
                        changed
                    });
                }
                Err(e) => {
                    debug!("listing {} failed: {e}; retrying", target.root);
                    retry_at = Some(Instant::now() + RELIST_RETRY);
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = retry => {
                retry_at = None;
                need_list = true;
            }
            signal = session.signals.recv() => match signal {
                None => break,
                Some(Signal::Watch(_)) => need_list = true,
                // Reconnected (same session or, after expiry, a new one): the library did not
                // carry the watch over.
                Some(Signal::State(ZkState::Connected)) | Some(Signal::State(ZkState::ConnectedReadOnly)) => need_list = true,
                Some(Signal::State(ZkState::Closed)) => break,
                Some(Signal::State(state)) => debug!("ZooKeeper client state: {state:?}"),
            },
        }
    }
    session.close(None).await;
}
