//! The log as a whole: appends with group commit, snapshots, and recovery.
//!
//! Files in the directory: segments `wal-<seq>.log` (`segment.rs`) and snapshots
//! `snap-<seq>.snap` (`snapshot.rs`), `<seq>` 16 hex digits. A snapshot `snap-S` holds the
//! store up to some xid, and the log goes on in segments `S, S+1, …` (all of them, in order,
//! none missing). Without a snapshot the log starts at segment 0 with an empty store.

use std::path::PathBuf;

use super::disk::{Disk, DiskFile, FsDisk};
use super::record::{self, Record, MAX_KEY_BYTES};
use super::segment::{self, read_segment, SegmentHeader, SEGMENT_HEADER_LEN};
use super::snapshot;
use super::StorageError;
use crate::core::{Store, Update, ViewMark, Xid};

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment is closed once the next record would take it past this (a lone record larger
    /// than it still gets a segment of its own).
    pub max_segment_bytes: u64,
    /// Appends are buffered in memory and written once this many bytes wait, or at `sync`: one
    /// `write` per batch rather than per update.
    pub write_buffer_bytes: usize,
    /// The last segment is filled with zeros this far ahead of its records (never past
    /// `max_segment_bytes`), in one write per stretch: a record then overwrites blocks the file
    /// system has already allocated, so the `fdatasync` of a group commit writes the data and
    /// no metadata (on ext4 it skips the journal commit). 0 turns it off.
    pub preallocate_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_bytes: 64 << 20,
            write_buffer_bytes: 1 << 20,
            preallocate_bytes: 1 << 20,
        }
    }
}

/// When a replica should snapshot: once the log since the last snapshot is over both
/// `min_log_bytes` and `store_ratio` times the last snapshot's size. Replay time and disk use
/// are then bounded by a multiple of the store's size, and a small store does not snapshot at
/// every other write.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    pub min_log_bytes: u64,
    pub store_ratio: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            min_log_bytes: 64 << 20,
            store_ratio: 4,
        }
    }
}

impl SnapshotPolicy {
    pub fn due<D: Disk>(&self, log: &Log<D>) -> bool {
        log.log_bytes() > self.min_log_bytes.max(self.store_ratio.saturating_mul(log.snapshot_bytes()))
    }
}

/// What `Log::open` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub store: Store,
    /// The xid of the last update replayed, or of the snapshot when no update follows it (0 for
    /// a new log). A store that is not empty at xid 0 holds the first update of a chain that
    /// numbers from 0 (see `Replica`'s `applied_xid_zero`).
    pub last_xid: Xid,
    /// The last view mark, in the log or the snapshot (version 0, no members, if none).
    pub view: ViewMark,
    /// The snapshot recovery started from: its file and xid.
    pub snapshot: Option<(String, Xid)>,
    pub records_replayed: u64,
    /// A record cut short by a crash at the end of the last segment, dropped and cut off the
    /// file: the file, the offset, the bytes dropped.
    pub torn_tail: Option<(String, u64, u64)>,
}

/// Counters since the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub records_appended: u64,
    /// `sync` calls that had something to make durable (each one `fdatasync`).
    pub group_commits: u64,
    /// Every `fdatasync` of a file: group commits, closed segments, snapshots, new segments.
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub bytes_written: u64,
    /// Zeros written ahead of the records (`LogConfig::preallocate_bytes`).
    pub bytes_preallocated: u64,
    pub snapshots_written: u64,
    pub segments_removed: u64,
}

pub struct Log<D: Disk> {
    disk: D,
    cfg: LogConfig,
    /// The segment appends go to: the last one.
    seq: u64,
    name: String,
    file: D::File,
    /// Bytes of the file up to the end of its last record (header included), not counting
    /// `buf`: where the next write goes.
    written: u64,
    /// The file's size: `written` and the zeros after it.
    allocated: u64,
    /// Written since the last `fdatasync` of `file`.
    unsynced: bool,
    buf: Vec<u8>,
    /// The first segment recovery replays: the snapshot's.
    start_seq: u64,
    /// Bytes of the segments from `start_seq` up to, not including, `seq`.
    closed_bytes: u64,
    snapshot_seq: Option<u64>,
    snapshot_bytes: u64,
    last_xid: Xid,
    /// The least xid the next update may have (`None` once `u64::MAX` is taken).
    next_min: Option<Xid>,
    durable_xid: Xid,
    view: ViewMark,
    stats: LogStats,
    failed: Option<String>,
}

/// Where xids may go on after a state at `xid`: a store still empty at xid 0 may take xid 0
/// (chains that number from 0), anything else only higher xids.
fn next_after_state(xid: Xid, store_empty: bool) -> Option<Xid> {
    if xid == 0 && store_empty {
        Some(0)
    } else {
        xid.checked_add(1)
    }
}

fn apply(store: &mut Store, key: &str, value: i32) {
    if value == 0 {
        store.remove(key);
    } else {
        store.insert(key.to_string(), value);
    }
}

fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.to_string(),
        offset,
        reason: reason.into(),
    }
}

impl Log<FsDisk> {
    /// `Log::open` on a directory of the real file system (created if missing).
    pub fn open_dir(dir: impl Into<PathBuf>, cfg: LogConfig) -> Result<(Self, Recovered), StorageError> {
        let dir = dir.into();
        let disk = FsDisk::new(&dir).map_err(StorageError::io("create directory", &dir.display().to_string()))?;
        Log::open(disk, cfg)
    }
}

impl<D: Disk> Log<D> {
    /// Recovers the directory's state (or starts a new log in an empty one) and opens the log
    /// for appending after it. See `docs/storage.md`, Recovery: the newest snapshot, then every
    /// record of the segments after it; a torn record at the end of the last segment is dropped
    /// and cut off; any other damage is `StorageError::Corrupt` and nothing is returned.
    pub fn open(disk: D, cfg: LogConfig) -> Result<(Self, Recovered), StorageError> {
        let names = disk.list().map_err(StorageError::io("list", "."))?;
        let mut snaps = Vec::new();
        let mut segs = Vec::new();
        for name in &names {
            if name.starts_with("snap-") && name.ends_with(".snap.tmp") {
                // A snapshot that was never renamed into place: not part of any state.
                disk.remove(name).map_err(StorageError::io("remove", name))?;
            } else if let Some(seq) = snapshot::parse_snapshot_name(name) {
                snaps.push(seq);
            } else if let Some(seq) = segment::parse_segment_name(name) {
                segs.push(seq);
            }
        }
        snaps.sort_unstable();
        segs.sort_unstable();

        let mut rec = Recovered {
            store: Store::new(),
            last_xid: 0,
            view: ViewMark::default(),
            snapshot: None,
            records_replayed: 0,
            torn_tail: None,
        };
        let mut start_seq = 0;
        let mut snapshot_bytes = 0;
        if let Some(&seq) = snaps.last() {
            let name = snapshot::snapshot_name(seq);
            let data = disk.read(&name).map_err(StorageError::io("read", &name))?;
            let snap = snapshot::decode(&data).map_err(|e| corrupt(&name, e.offset, e.reason))?;
            if snap.seq != seq {
                return Err(corrupt(
                    &name,
                    8,
                    format!("names log segment {} but the file is named for {seq}", snap.seq),
                ));
            }
            start_seq = seq;
            snapshot_bytes = data.len() as u64;
            rec.snapshot = Some((name, snap.xid));
            rec.store = snap.store;
            rec.last_xid = snap.xid;
            rec.view = snap.view;
        }
        let snapshot_xid = rec.last_xid;
        let mut next_min = next_after_state(rec.last_xid, rec.store.is_empty());

        let live: Vec<u64> = segs.iter().copied().filter(|&s| s >= start_seq).collect();
        if let Some(&first) = live.first() {
            if first != start_seq {
                let why = if snaps.is_empty() {
                    format!(
                        "missing, and there is no snapshot for what it held; the log starts at {}",
                        segment::segment_name(first)
                    )
                } else {
                    "missing: the snapshot's log goes on in it".to_string()
                };
                return Err(corrupt(&segment::segment_name(start_seq), 0, why));
            }
        }
        for w in live.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(corrupt(
                    &segment::segment_name(w[0] + 1),
                    0,
                    "missing between two segments of the log",
                ));
            }
        }

        // What to do with the last segment once replayed.
        enum Last {
            Keep,
            TruncateAt(u64),
            Rewrite,
        }
        let mut last_action = Last::Keep;
        let mut closed_bytes = 0;
        let mut last_len = 0;
        for (i, &seq) in live.iter().enumerate() {
            let name = segment::segment_name(seq);
            let is_last = i + 1 == live.len();
            let data = disk.read(&name).map_err(StorageError::io("read", &name))?;
            let expected = SegmentHeader {
                seq,
                base_xid: if seq == start_seq { snapshot_xid } else { rec.last_xid },
            };
            let contents = read_segment(&data);
            let header = match contents.header {
                Ok(h) => h,
                Err(why) => {
                    // A segment is created, its header written and synced, then the directory
                    // synced, before anything else goes in it: a crash in between can leave a
                    // prefix of the header and zeros, and nothing more.
                    let good = expected.encode();
                    let same = data.iter().zip(good.iter()).take_while(|(a, b)| a == b).count();
                    if is_last && data[same..].iter().all(|&b| b == 0) {
                        last_action = Last::Rewrite;
                        break;
                    }
                    return Err(corrupt(&name, 0, why));
                }
            };
            if header.seq != seq {
                return Err(corrupt(&name, 8, format!("header says segment {}", header.seq)));
            }
            if header.base_xid != expected.base_xid {
                return Err(corrupt(
                    &name,
                    16,
                    format!(
                        "segment starts after xid {} but the log before it ends at xid {}",
                        header.base_xid, expected.base_xid
                    ),
                ));
            }
            for (offset, r) in contents.records {
                match r {
                    Record::Update { xid, key, value } => {
                        if next_min.is_none_or(|m| xid < m) {
                            return Err(corrupt(&name, offset, format!("update xid {xid} after xid {}", rec.last_xid)));
                        }
                        apply(&mut rec.store, &key, value);
                        rec.last_xid = xid;
                        next_min = xid.checked_add(1);
                    }
                    Record::ViewMark(view) => rec.view = view,
                }
                rec.records_replayed += 1;
            }
            let mut len = data.len() as u64;
            if let Some(stop) = contents.stop {
                if !(is_last && stop.torn) {
                    return Err(corrupt(&name, stop.offset, stop.error.to_string()));
                }
                // Zeros to the end are the preallocated rest of the segment (or a write none of
                // which reached the disk): the next record goes over them. Anything else is cut
                // off, so that what is left of it cannot follow the next records.
                if !stop.zeros_to_end {
                    rec.torn_tail = Some((name.clone(), stop.offset, len - stop.offset));
                    last_action = Last::TruncateAt(stop.offset);
                }
                len = stop.offset;
            }
            if is_last {
                last_len = len;
            } else {
                closed_bytes += len;
            }
        }

        let seq = live.last().copied().unwrap_or(start_seq);
        let name = segment::segment_name(seq);
        let mut stats = LogStats::default();
        let (file, written, allocated) = if live.is_empty() || matches!(last_action, Last::Rewrite) {
            // A new log, or one whose last segment was never started properly.
            let mut f = disk.create(&name).map_err(StorageError::io("create", &name))?;
            let header = SegmentHeader {
                seq,
                base_xid: rec.last_xid,
            }
            .encode();
            f.append(&header).map_err(StorageError::io("write", &name))?;
            f.sync().map_err(StorageError::io("fdatasync", &name))?;
            disk.sync_dir().map_err(StorageError::io("fsync", "."))?;
            stats.file_syncs += 1;
            stats.dir_syncs += 1;
            stats.bytes_written += header.len() as u64;
            (f, header.len() as u64, header.len() as u64)
        } else {
            let mut f = disk.open_append(&name).map_err(StorageError::io("open", &name))?;
            if let Last::TruncateAt(at) = last_action {
                f.truncate(at).map_err(StorageError::io("truncate", &name))?;
                f.sync().map_err(StorageError::io("fdatasync", &name))?;
                stats.file_syncs += 1;
            }
            let allocated = f.len().map_err(StorageError::io("stat", &name))?;
            (f, last_len, allocated)
        };

        // Covered by the snapshot: left over from a crash between writing it and removing them.
        for &old in segs.iter().filter(|&&s| s < start_seq) {
            let n = segment::segment_name(old);
            disk.remove(&n).map_err(StorageError::io("remove", &n))?;
            stats.segments_removed += 1;
        }
        for &old in snaps.iter().filter(|&&s| s < start_seq) {
            let n = snapshot::snapshot_name(old);
            disk.remove(&n).map_err(StorageError::io("remove", &n))?;
        }

        let log = Log {
            disk,
            cfg,
            seq,
            name,
            file,
            written,
            allocated,
            unsynced: false,
            buf: Vec::new(),
            start_seq,
            closed_bytes,
            snapshot_seq: snaps.last().copied(),
            snapshot_bytes,
            last_xid: rec.last_xid,
            next_min,
            durable_xid: rec.last_xid,
            view: rec.view.clone(),
            stats,
            failed: None,
        };
        Ok((log, rec))
    }

    /// Removes every log and snapshot file and starts an empty log: what a replica does after
    /// `StorageError::Corrupt`, before it rejoins as a new replica.
    pub fn reset(disk: D, cfg: LogConfig) -> Result<Self, StorageError> {
        let names = disk.list().map_err(StorageError::io("list", "."))?;
        for name in names {
            let ours = segment::parse_segment_name(&name).is_some()
                || snapshot::parse_snapshot_name(&name).is_some()
                || (name.starts_with("snap-") && name.ends_with(".snap.tmp"));
            if ours {
                disk.remove(&name).map_err(StorageError::io("remove", &name))?;
            }
        }
        disk.sync_dir().map_err(StorageError::io("fsync", "."))?;
        let (log, _) = Log::open(disk, cfg)?;
        Ok(log)
    }

    fn check(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(why) => Err(StorageError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Remembers an I/O failure: after one, nothing more is written (see `StorageError::Failed`).
    fn guard<T>(&mut self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e @ StorageError::Io { .. }) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    /// Buffers an applied update; durable at the next `sync` that returns. Xids must increase
    /// (xid 0 is taken once, first, by a log whose state is empty at xid 0). May write, and
    /// when the segment is full sync it and start the next one.
    pub fn append(&mut self, u: &Update) -> Result<(), StorageError> {
        self.check()?;
        if u.key.len() > MAX_KEY_BYTES {
            return Err(StorageError::KeyTooLong {
                bytes: u.key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        if self.next_min.is_none_or(|m| u.xid < m) {
            return Err(StorageError::OutOfOrder {
                xid: u.xid,
                last: self.last_xid,
            });
        }
        let r = self.make_room(record::update_frame_len(u.key.len()));
        self.guard(r)?;
        record::encode_update(u.xid, &u.key, u.value, &mut self.buf);
        self.last_xid = u.xid;
        self.next_min = u.xid.checked_add(1);
        self.stats.records_appended += 1;
        if self.buf.len() >= self.cfg.write_buffer_bytes {
            let r = self.write_buf();
            self.guard(r)?;
        }
        Ok(())
    }

    /// Buffers a view mark (see `Record::ViewMark`); durable at the next `sync`.
    pub fn append_view_mark(&mut self, view: &ViewMark) -> Result<(), StorageError> {
        self.check()?;
        let mut frame = Vec::new();
        if record::encode_view_mark(view, &mut frame).is_none() {
            return Err(StorageError::ViewTooLarge {
                members: view.members.len(),
            });
        }
        let r = self.make_room(frame.len());
        self.guard(r)?;
        self.buf.extend_from_slice(&frame);
        self.view = view.clone();
        self.stats.records_appended += 1;
        Ok(())
    }

    /// Makes everything appended so far durable with one `fdatasync` (none if nothing is new)
    /// and returns the highest xid now durable. The caller batches: one `sync` for all the
    /// updates applied since the last one (group commit).
    pub fn sync(&mut self) -> Result<Xid, StorageError> {
        self.check()?;
        let r = self.sync_segment();
        self.guard(r)?;
        self.durable_xid = self.last_xid;
        Ok(self.durable_xid)
    }

    /// Records that the store is exactly `store` at `xid` and the log goes on from there:
    /// compaction (`store` is the state after everything appended) and installing a state
    /// transfer (`xid` may then be anything) alike. Written to a temporary file, synced, renamed
    /// into place and the directory synced; then the next segment is started and the segments
    /// and snapshot it replaces are removed. Durable when it returns, with everything appended
    /// before it.
    pub fn write_snapshot(&mut self, store: &Store, xid: Xid) -> Result<(), StorageError> {
        self.check()?;
        let r = self.snapshot_inner(store, xid);
        self.guard(r)
    }

    fn snapshot_inner(&mut self, store: &Store, xid: Xid) -> Result<(), StorageError> {
        let new_seq = self.seq + 1;
        let Some(bytes) = snapshot::encode(new_seq, xid, &self.view, store) else {
            let bytes = store.keys().map(String::len).max().unwrap_or(0);
            return Err(StorageError::KeyTooLong {
                bytes,
                limit: MAX_KEY_BYTES,
            });
        };
        // The log up to here reaches the disk first: if the snapshot does not land, recovery
        // still finds the whole state it would have replaced.
        self.sync_segment()?;
        let name = snapshot::snapshot_name(new_seq);
        let tmp = format!("{name}.tmp");
        let mut f = self.disk.create(&tmp).map_err(StorageError::io("create", &tmp))?;
        f.append(&bytes).map_err(StorageError::io("write", &tmp))?;
        f.sync().map_err(StorageError::io("fdatasync", &tmp))?;
        self.disk.rename(&tmp, &name).map_err(StorageError::io("rename", &tmp))?;
        self.disk.sync_dir().map_err(StorageError::io("fsync", "."))?;
        self.stats.bytes_written += bytes.len() as u64;
        self.stats.file_syncs += 1;
        self.stats.dir_syncs += 1;
        self.stats.snapshots_written += 1;

        // The snapshot is the state from here on. Its segment may be missing after a crash
        // (recovery then creates it): nothing can have been appended to it yet.
        let old_start = self.start_seq;
        let old_end = self.seq;
        let old_snapshot = self.snapshot_seq.replace(new_seq);
        self.start_seq = new_seq;
        self.snapshot_bytes = bytes.len() as u64;
        self.last_xid = xid;
        self.next_min = next_after_state(xid, store.is_empty());
        self.durable_xid = xid;
        self.start_segment(new_seq, xid)?;
        self.closed_bytes = 0;
        for seq in old_start..=old_end {
            let n = segment::segment_name(seq);
            self.disk.remove(&n).map_err(StorageError::io("remove", &n))?;
            self.stats.segments_removed += 1;
        }
        if let Some(old) = old_snapshot {
            let n = snapshot::snapshot_name(old);
            self.disk.remove(&n).map_err(StorageError::io("remove", &n))?;
        }
        Ok(())
    }

    /// Closes the current segment if a frame of `frame_len` bytes would take it past the limit.
    fn make_room(&mut self, frame_len: usize) -> Result<(), StorageError> {
        let len = self.written + self.buf.len() as u64;
        if len > SEGMENT_HEADER_LEN as u64 && len + frame_len as u64 > self.cfg.max_segment_bytes {
            // Synced before the next one starts: a torn write can then only ever be at the
            // end of the last segment, which is where recovery looks for one. Cut to its
            // records first, since only the last segment may end in zeros.
            self.write_buf()?;
            if self.allocated > self.written {
                self.file.truncate(self.written).map_err(StorageError::io("truncate", &self.name))?;
                self.allocated = self.written;
                self.unsynced = true;
            }
            self.sync_segment()?;
            self.closed_bytes += self.written;
            self.start_segment(self.seq + 1, self.last_xid)?;
            self.durable_xid = self.last_xid;
        }
        Ok(())
    }

    fn start_segment(&mut self, seq: u64, base_xid: Xid) -> Result<(), StorageError> {
        let name = segment::segment_name(seq);
        let mut f = self.disk.create(&name).map_err(StorageError::io("create", &name))?;
        let header = SegmentHeader { seq, base_xid }.encode();
        f.append(&header).map_err(StorageError::io("write", &name))?;
        f.sync().map_err(StorageError::io("fdatasync", &name))?;
        self.disk.sync_dir().map_err(StorageError::io("fsync", "."))?;
        self.stats.bytes_written += header.len() as u64;
        self.stats.file_syncs += 1;
        self.stats.dir_syncs += 1;
        self.seq = seq;
        self.name = name;
        self.file = f;
        self.written = header.len() as u64;
        self.allocated = self.written;
        self.unsynced = false;
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.written + self.buf.len() as u64;
        self.file
            .write_at(self.written, &self.buf)
            .map_err(StorageError::io("write", &self.name))?;
        if end > self.allocated {
            self.allocated = end;
            self.preallocate()?;
        }
        self.written = end;
        self.stats.bytes_written += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Zeros from the end of the file to `preallocate_bytes` past it, within the segment's limit;
    /// they reach the disk with the sync that follows, the last one that has metadata to write
    /// for a while.
    fn preallocate(&mut self) -> Result<(), StorageError> {
        let target = (self.allocated + self.cfg.preallocate_bytes).min(self.cfg.max_segment_bytes);
        if target <= self.allocated {
            return Ok(());
        }
        let zeros = vec![0; usize::try_from(target - self.allocated).unwrap_or(0)];
        self.file
            .write_at(self.allocated, &zeros)
            .map_err(StorageError::io("preallocate", &self.name))?;
        self.stats.bytes_preallocated += zeros.len() as u64;
        self.allocated += zeros.len() as u64;
        Ok(())
    }

    fn sync_segment(&mut self) -> Result<(), StorageError> {
        self.write_buf()?;
        if self.unsynced {
            self.file.sync().map_err(StorageError::io("fdatasync", &self.name))?;
            self.unsynced = false;
            self.stats.file_syncs += 1;
            self.stats.group_commits += 1;
        }
        Ok(())
    }

    /// The xid of the last update appended (or of the last snapshot, if later).
    pub fn last_xid(&self) -> Xid {
        self.last_xid
    }

    /// The highest xid the last `sync` (or snapshot, or segment change) made durable.
    pub fn durable_xid(&self) -> Xid {
        self.durable_xid
    }

    /// Bytes of log since the last snapshot, buffered ones included: what recovery would
    /// replay, and what `SnapshotPolicy` weighs.
    pub fn log_bytes(&self) -> u64 {
        self.closed_bytes + self.written + self.buf.len() as u64
    }

    /// Size of the last snapshot file (0 without one).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
    }

    /// Segments recovery would read.
    pub fn segment_count(&self) -> u64 {
        self.seq - self.start_seq + 1
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }
}
