//! A replica's data dir (`--data-dir`): the write-ahead log on a thread of its own.
//!
//! The core queues what it applies (`core::Storage`); one thread owns the `storage::Log`, takes
//! everything queued since its last sync, appends it, and makes it durable with one
//! `fdatasync` (group commit: the more writes arrive while a sync runs, the more the next one
//! covers). It reports how far it got back to the core (`Replica::on_durable`). The thread also
//! keeps its own copy of the store, so that a snapshot (compaction) never holds the core's lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use super::metrics::DiskMetrics;
use super::shared::Shared;
use crate::core::{DiskCopy, StorageCommand as Command, Xid};
use crate::storage::{FsDisk, Log, LogConfig, ReplicaLog, StorageError};

/// What the log thread reports.
pub enum Progress {
    /// Everything up to `xid` of install `epoch` is on disk.
    Durable { epoch: u64, xid: Xid },
    /// The log failed; nothing more can be made durable.
    Failed(StorageError),
}

/// The core's side: every call only queues.
pub struct DiskStorage {
    commands: std_mpsc::Sender<Command>,
}

impl crate::core::Storage for DiskStorage {
    fn submit(&mut self, command: Command) {
        // A send fails only once the thread has stopped after a failure, which ends the process.
        let _ = self.commands.send(command);
    }
}

/// An open data dir: the storage for the core, what it held, and the thread's reports.
pub struct OpenedDataDir {
    pub storage: DiskStorage,
    pub copy: Option<DiskCopy>,
    pub progress: mpsc::UnboundedReceiver<Progress>,
    /// Held for as long as the replica runs (`pump_progress` keeps it): a second replica on the
    /// same dir would interleave two logs in one.
    pub lock: fs::File,
}

/// Commands taken into one group commit at most: bounds the time between syncs under a flood.
const MAX_BATCH: usize = 65_536;

/// Open (or create) `dir`, recover what it holds, and start the log thread. A data dir that
/// fails its checksums is set aside (moved into `dir/corrupt-<n>/`) with one error line, and
/// the replica starts empty: it joins as a new replica and gets the state from its peers.
/// Any other failure (unreadable, locked by another replica) refuses to start.
pub fn open(dir: &Path, metrics: DiskMetrics) -> anyhow::Result<OpenedDataDir> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let lock_path = dir.join("LOCK");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => {
            anyhow::anyhow!(
                "the data dir {} is in use by another process (locked: {})",
                dir.display(),
                lock_path.display()
            )
        }
        fs::TryLockError::Error(e) => anyhow::Error::new(e).context(format!("cannot lock {}", lock_path.display())),
    })?;
    let cfg = LogConfig::default();
    let (log, copy) = match ReplicaLog::open(
        FsDisk::new(dir).with_context(|| format!("cannot open {}", dir.display()))?,
        cfg.clone(),
    ) {
        Ok((log, recovered, copy)) => {
            if let Some((file, at, dropped)) = &recovered.torn_tail {
                tracing::warn!(%file, offset = at, bytes = dropped, "dropped a torn last record (power lost mid-write)");
            }
            tracing::info!(
                dir = %dir.display(),
                xid = recovered.last_xid,
                keys = recovered.store.len(),
                view = recovered.view.version,
                replayed = recovered.records_replayed,
                "recovered the data dir"
            );
            (log, copy)
        }
        Err(StorageError::Corrupt { file, offset, reason }) => {
            let aside = set_aside(dir).context("cannot set the corrupt data aside")?;
            tracing::error!(
                %file,
                offset,
                %reason,
                moved_to = %aside.display(),
                "the data dir is corrupt: not serving any of it; starting empty and taking the state from the chain"
            );
            let (log, _) = Log::open_dir(dir, cfg).with_context(|| format!("cannot start an empty log in {}", dir.display()))?;
            (ReplicaLog::empty(log), Some(DiskCopy::refused()))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open the data dir {}", dir.display()))),
    };
    let (commands_tx, commands_rx) = std_mpsc::channel();
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("chainrep-wal".into())
        .spawn(move || run_log(log, commands_rx, progress_tx, metrics))
        .context("cannot start the write-ahead log thread")?;
    Ok(OpenedDataDir {
        storage: DiskStorage { commands: commands_tx },
        copy,
        progress: progress_rx,
        lock,
    })
}

/// Move every file of `dir` but the lock into a new `dir/corrupt-<n>`, for the operator to look
/// at; nothing is deleted.
fn set_aside(dir: &Path) -> anyhow::Result<PathBuf> {
    let aside = (0u32..)
        .map(|n| dir.join(format!("corrupt-{n}")))
        .find(|p| !p.exists())
        .context("no free name to set corrupt data aside")?;
    fs::create_dir(&aside).with_context(|| format!("cannot create {}", aside.display()))?;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "LOCK" || !entry.file_type()?.is_file() {
            continue;
        }
        fs::rename(entry.path(), aside.join(&name)).with_context(|| format!("cannot move {}", entry.path().display()))?;
    }
    Ok(aside)
}

fn run_log(
    mut log: ReplicaLog<FsDisk>,
    commands: std_mpsc::Receiver<Command>,
    progress: mpsc::UnboundedSender<Progress>,
    metrics: DiskMetrics,
) {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let fail = |e: StorageError| {
        let _ = progress.send(Progress::Failed(e));
    };
    // `recv` fails once the core (and with it every sender) is gone.
    while let Ok(first) = commands.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            match &command {
                Command::Append(_) => metrics.updates_appended.inc(),
                Command::Install { .. } => metrics.snapshots.inc(),
                Command::MarkView(_) => {}
            }
            if let Err(e) = log.apply(command) {
                fail(e);
                return;
            }
            taken += 1;
            if taken < MAX_BATCH {
                next = commands.try_recv().ok();
            }
        }
        let started = Instant::now();
        let synced = match log.sync() {
            Ok(s) => s,
            Err(e) => {
                fail(e);
                return;
            }
        };
        if synced.fsynced {
            metrics.syncs.inc();
            metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
        }
        if synced.compacted {
            metrics.snapshots.inc();
        }
        metrics.durable_xid.set(gauge(synced.xid));
        metrics.log_bytes.set(gauge(log.log().log_bytes()));
        metrics.snapshot_bytes.set(gauge(log.log().snapshot_bytes()));
        if progress
            .send(Progress::Durable {
                epoch: synced.epoch,
                xid: synced.xid,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Feed the log thread's reports to the core. A failed log ends the process: the replica could
/// no longer make anything durable, and a replica that stops is one the chain routes around.
pub async fn pump_progress(shared: Arc<Shared>, mut progress: mpsc::UnboundedReceiver<Progress>, _lock: fs::File) {
    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    while progress.recv_many(&mut batch, BATCH).await > 0 {
        let mut durable = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            match p {
                Progress::Durable { epoch, xid } => durable.push((epoch, xid)),
                Progress::Failed(e) => {
                    tracing::error!(error = %e, "the data dir failed: stopping this replica, since it can make nothing durable any more");
                    std::process::exit(1);
                }
            }
        }
        shared.with_core(|core| {
            for (epoch, xid) in durable {
                core.on_durable(epoch, xid);
            }
        });
    }
}
