//! Disks for durable runs (`SimConfig::durable`): every replica process has one that outlives
//! its incarnations, running the production log code (`storage::ReplicaLog`) over `SimDisk`.
//! Writes are volatile until a sync; a crash keeps what was synced and a prefix of the rest,
//! the last write maybe torn (`SimDisk::crash`), and the nemesis may flip a byte (bit rot).
//! The replica hears how far its disk got only when a sync event runs, as from the runtime's
//! log thread.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::{DiskCopy, Storage, StorageCommand};
use crate::storage::{Log, LogConfig, ReplicaLog, SimDisk, SnapshotPolicy, StorageError};

/// What the replica asked of its storage since the world last looked.
pub type DiskQueue = Arc<Mutex<Vec<StorageCommand>>>;

/// The core's storage in the simulator: requests wait in the queue for the world.
pub struct SimStorage(pub DiskQueue);

fn lock(q: &DiskQueue) -> MutexGuard<'_, Vec<StorageCommand>> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

impl Storage for SimStorage {
    fn submit(&mut self, command: StorageCommand) {
        lock(&self.0).push(command);
    }
}

/// Small segments and eager compaction, so that runs change segments and snapshot often.
pub fn log_config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        write_buffer_bytes: 128,
        preallocate_bytes: 256,
    }
}

pub fn snapshot_policy() -> SnapshotPolicy {
    SnapshotPolicy {
        min_log_bytes: 2048,
        store_ratio: 2,
    }
}

pub struct ProcDisk {
    pub disk: SimDisk,
    /// The open log of the current incarnation; `None` while the process is down.
    pub log: Option<ReplicaLog<SimDisk>>,
    pub queue: DiskQueue,
    /// A sync event is on its way.
    pub sync_scheduled: bool,
}

impl Default for ProcDisk {
    fn default() -> Self {
        ProcDisk {
            disk: SimDisk::new(),
            log: None,
            queue: DiskQueue::default(),
            sync_scheduled: false,
        }
    }
}

impl ProcDisk {
    /// Recover the disk for a new incarnation: its copy, and a line for the trace. A disk that
    /// fails its checksums is refused and emptied, as the runtime does.
    pub fn open(&mut self) -> Result<(Option<DiskCopy>, String), StorageError> {
        self.queue = DiskQueue::default();
        self.sync_scheduled = false;
        match ReplicaLog::open(self.disk.clone(), log_config()) {
            Ok((log, rec, copy)) => {
                self.log = Some(log.with_policy(snapshot_policy()));
                let torn = rec
                    .torn_tail
                    .map(|(f, at, n)| format!(", torn tail {f}@{at} ({n} bytes) dropped"))
                    .unwrap_or_default();
                Ok((
                    copy,
                    format!(
                        "disk recovered: xid {} view {} keys {}{torn}",
                        rec.last_xid,
                        rec.view.version,
                        rec.store.len()
                    ),
                ))
            }
            Err(StorageError::Corrupt { file, offset, reason }) => {
                let log = Log::reset(self.disk.clone(), log_config())?;
                self.log = Some(ReplicaLog::empty(log).with_policy(snapshot_policy()));
                Ok((
                    Some(DiskCopy::refused()),
                    format!("disk refused as corrupt ({file}@{offset}: {reason}): starting empty"),
                ))
            }
            Err(e) => Err(e),
        }
    }

    pub fn take_commands(&self) -> Vec<StorageCommand> {
        std::mem::take(&mut *lock(&self.queue))
    }

    /// The process died: the disk keeps what a power loss leaves.
    pub fn lose_power(&mut self, rng: &mut impl rand_chacha::rand_core::Rng) {
        self.disk.crash(rng);
        self.log = None;
        self.queue = DiskQueue::default();
        self.sync_scheduled = false;
    }
}
