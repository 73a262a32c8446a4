//! The log as a durable replica drives it: the core's storage requests (`core::Storage`)
//! applied in order, group commits that say how far the disk got and for which installed state,
//! and compaction. The runtime runs one on a thread of its own over the real file system; the
//! simulator runs one per simulated process over `SimDisk`, so both exercise the same code.

use super::disk::Disk;
use super::log::{Log, LogConfig, Recovered, SnapshotPolicy};
use super::StorageError;
use crate::core::{DiskCopy, StorageCommand, Store, Xid};

/// What a group commit made durable: everything up to `xid` of install `epoch`
/// (`Replica::on_durable`), and whether it cost an `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synced {
    pub epoch: u64,
    pub xid: Xid,
    pub fsynced: bool,
    /// A snapshot was written after it (compaction).
    pub compacted: bool,
}

pub struct ReplicaLog<D: Disk> {
    log: Log<D>,
    /// The store as of everything applied, kept here so that compaction never needs the core.
    store: Store,
    epoch: u64,
    policy: SnapshotPolicy,
}

impl<D: Disk> ReplicaLog<D> {
    /// Recover `disk`; the copy is what the replica starts from as its retained state.
    pub fn open(disk: D, cfg: LogConfig) -> Result<(Self, Recovered, Option<DiskCopy>), StorageError> {
        let (log, rec) = Log::open(disk, cfg)?;
        let copy = DiskCopy {
            store: rec.store.clone(),
            xid: rec.last_xid,
            view: rec.view.clone(),
            refused: false,
        };
        let store = rec.store.clone();
        Ok((Self::over(log, store), rec, Some(copy)))
    }

    /// An empty log after `Log::reset` (corrupt data refused).
    pub fn empty(log: Log<D>) -> Self {
        Self::over(log, Store::new())
    }

    fn over(log: Log<D>, store: Store) -> Self {
        ReplicaLog {
            log,
            store,
            epoch: 0,
            policy: SnapshotPolicy::default(),
        }
    }

    pub fn apply(&mut self, command: StorageCommand) -> Result<(), StorageError> {
        match command {
            StorageCommand::Append(u) => {
                self.log.append(&u)?;
                if u.value == 0 {
                    self.store.remove(&u.key);
                } else {
                    self.store.insert(u.key, u.value);
                }
                Ok(())
            }
            StorageCommand::MarkView(v) => self.log.append_view_mark(&v),
            StorageCommand::Install { epoch, store, xid, view } => {
                self.epoch = epoch;
                self.store = store;
                self.log.append_view_mark(&view)?;
                self.log.write_snapshot(&self.store, xid)
            }
        }
    }

    /// One group commit, then a snapshot if the log has grown past the policy's bound.
    pub fn sync(&mut self) -> Result<Synced, StorageError> {
        let before = self.log.stats().group_commits;
        let xid = self.log.sync()?;
        let fsynced = self.log.stats().group_commits > before;
        let compacted = self.policy.due(&self.log);
        if compacted {
            self.log.write_snapshot(&self.store, xid)?;
        }
        Ok(Synced {
            epoch: self.epoch,
            xid,
            fsynced,
            compacted,
        })
    }

    pub fn log(&self) -> &Log<D> {
        &self.log
    }

    pub fn policy(&self) -> SnapshotPolicy {
        self.policy
    }

    /// Compaction as the simulator runs it: tiny bounds, so that runs compact often.
    pub fn with_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.policy = policy;
        self
    }
}
