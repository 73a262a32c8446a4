//! Durable storage for a replica (`--data-dir`): a write-ahead log of applied updates and
//! snapshots of the store, in one directory. `docs/storage.md` gives the on-disk format, the
//! recovery rules and the bounds.
//!
//! - `record`: one log record's framing and checksum;
//! - `segment`: a log file, and reading one back (torn tail or damage);
//! - `snapshot`: the store at one xid, in one checksummed file;
//! - `log`: the log as a whole: appends, group commit, snapshots, recovery;
//! - `replica_log`: the log as a durable replica drives it (the core's requests, compaction);
//! - `disk`: the file operations all of that needs, on the real file system (`FsDisk`) or, in
//!   tests, on a simulated disk that loses and tears unsynced writes (`SimDisk`).
//!
//! What a replica does with `StorageError::Corrupt` from `Log::open`: refuse that state, with
//! one error line naming the file and offset, start from an empty store (`Log::reset`) and
//! rejoin the chain as a new replica; its peers hold the data. A replica must never serve a
//! state recovered past a checksum failure, and this module never returns one.

pub mod disk;
pub mod log;
pub mod record;
pub mod replica_log;
pub mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim_disk;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use disk::{Disk, DiskFile, FsDisk};
pub use log::{Log, LogConfig, LogStats, Recovered, SnapshotPolicy};
pub use record::Record;
pub use replica_log::{ReplicaLog, Synced};
#[cfg(any(test, feature = "sim"))]
pub use sim_disk::SimDisk;

/// Everything that can go wrong in `storage`. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {op} {file}: {source}")]
    Io {
        op: &'static str,
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Data that fails its checksum, or passes it and still makes no sense, anywhere but in a
    /// torn tail of the last segment. Nothing at or after it was used.
    #[error("storage is corrupt: {file} at offset {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    #[error("key of {bytes} bytes is over the storage limit of {limit}")]
    KeyTooLong { bytes: usize, limit: usize },
    /// A view whose member list does not fit in one record (addresses over 255 bytes, or
    /// thousands of members).
    #[error("a view of {members} members does not fit in a log record")]
    ViewTooLarge { members: usize },
    /// Updates must come in xid order, as a replica applies them.
    #[error("update xid {xid} appended after xid {last}: the log takes xids in increasing order")]
    OutOfOrder { xid: u64, last: u64 },
    /// An earlier write or sync failed: what reached the disk is unknown (a failed `fsync` may
    /// have dropped the dirty pages), so the log takes nothing more. Reopen it to recover.
    #[error("storage stopped after an earlier failure: {0}")]
    Failed(String),
}

impl StorageError {
    fn io<'a>(op: &'static str, file: &'a str) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            op,
            file: file.to_string(),
            source,
        }
    }
}
