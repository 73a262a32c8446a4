//! A disk in memory that fails the way real ones do, for tests (and the simulator, with the
//! `sim` feature), in the spirit of TigerBeetle's simulated storage:
//!
//! - writes and truncations are volatile until the file's `sync`;
//! - creations, renames and removals are volatile until `sync_dir`;
//! - `crash` keeps what was synced, and of the rest a prefix: a prefix of each file's pending
//!   writes, the first write not kept possibly torn (a prefix of its bytes, and sometimes zeros
//!   in place of the rest, as when the size reached the disk but the data did not), and a prefix
//!   of the pending directory operations;
//! - `corrupt` flips a byte of a file's stored content (what a read will then return);
//! - `fail_next_sync` makes the next file sync fail with an I/O error, as a disk that could not
//!   write back does: part of what it had pending reached the disk, the rest never will, and
//!   reads still show all of it (Linux keeps the pages, marked clean: a later sync that
//!   succeeds does not make them durable, the trap PostgreSQL's "fsyncgate" fell into).
//!
//! Every choice comes from the caller's RNG, so a failing run replays from its seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_chacha::rand_core::Rng;

use super::disk::{Disk, DiskFile};

#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// What a lookup sees now.
    dir: BTreeMap<String, u64>,
    /// What survives a crash, before `pending_dir` is applied.
    durable_dir: BTreeMap<String, u64>,
    pending_dir: Vec<DirOp>,
    /// Bumped by `crash`: handles opened before it fail, as a dead process's would.
    epoch: u64,
    /// Armed by `fail_next_sync`: a draw that picks how many pending writes still land.
    failing_sync: Option<u64>,
    stats: SimStats,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub bytes_written: u64,
    pub crashes: u64,
    pub failed_syncs: u64,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

enum FileOp {
    Write(usize, Vec<u8>),
    Truncate(usize),
}

/// `data` written at `offset` of `file`, which grows (zeros in any gap) when it reaches past
/// the end.
fn write_into(file: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset..end].copy_from_slice(data);
}

#[derive(Clone)]
enum DirOp {
    Link(String, u64),
    Rename(String, String),
    Remove(String),
}

fn apply_dir(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            dir.insert(name.clone(), *ino);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = dir.remove(from) {
                dir.insert(to.clone(), ino);
            }
        }
        DirOp::Remove(name) => {
            dir.remove(name);
        }
    }
}

fn below(rng: &mut impl Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file (simulated)"))
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is still
        // what it was, so carry on rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power loss: see the module's comment. Open handles stop working.
    pub fn crash(&self, rng: &mut impl Rng) {
        let mut st = self.lock();
        let st = &mut *st;
        let keep = below(rng, st.pending_dir.len() + 1);
        for op in st.pending_dir.drain(..).take(keep) {
            apply_dir(&mut st.durable_dir, &op);
        }
        st.dir = st.durable_dir.clone();
        let live: std::collections::HashSet<u64> = st.dir.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        let mut inos: Vec<u64> = st.inodes.keys().copied().collect();
        // HashMap order is random per process: draw per file in a fixed order.
        inos.sort_unstable();
        for ino in inos {
            let Some(inode) = st.inodes.get_mut(&ino) else { continue };
            let mut data = std::mem::take(&mut inode.durable);
            let keep = below(rng, inode.pending.len() + 1);
            for op in &inode.pending[..keep] {
                match op {
                    FileOp::Write(offset, bytes) => write_into(&mut data, *offset, bytes),
                    FileOp::Truncate(len) => data.resize(*len, 0),
                }
            }
            if let Some(FileOp::Write(offset, bytes)) = inode.pending.get(keep) {
                if rng.next_u32() & 1 == 0 {
                    let cut = below(rng, bytes.len());
                    write_into(&mut data, *offset, &bytes[..cut]);
                    // Over the old end: the size reached the disk but the rest of the data did
                    // not. Over bytes already there, the rest of them simply stay.
                    if rng.next_u32() & 1 == 0 && data.len() < offset + bytes.len() {
                        data.resize(offset + bytes.len(), 0);
                    }
                }
            }
            inode.pending.clear();
            inode.durable = data.clone();
            inode.data = data;
        }
        st.epoch += 1;
        st.stats.crashes += 1;
    }

    /// Flips one byte of one non-empty file's content, as bit rot would; the file and offset,
    /// or `None` when every file is empty.
    pub fn corrupt(&self, rng: &mut impl Rng) -> Option<(String, usize)> {
        let mut st = self.lock();
        let candidates: Vec<(String, u64)> = st
            .dir
            .iter()
            .filter(|(_, ino)| st.inodes.get(ino).is_some_and(|i| !i.data.is_empty()))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (name, ino) = candidates[below(rng, candidates.len())].clone();
        let inode = st.inodes.get_mut(&ino)?;
        let at = below(rng, inode.data.len());
        let flip = (rng.next_u32() % 255 + 1) as u8;
        inode.data[at] ^= flip;
        if at < inode.durable.len() {
            inode.durable[at] ^= flip;
        }
        Some((name, at))
    }

    /// The next file sync fails (see the module's comment); `draw` decides how many of that
    /// file's pending writes reached the disk regardless (a prefix), replayably.
    pub fn fail_next_sync(&self, draw: u64) {
        self.lock().failing_sync = Some(draw);
    }

    /// Disarms `fail_next_sync`; whether it was still armed (no sync came).
    pub fn clear_failing_sync(&self) -> bool {
        self.lock().failing_sync.take().is_some()
    }

    /// The current content of a file, for tests.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        st.dir.get(name).and_then(|ino| st.inodes.get(ino)).map(|i| i.data.clone())
    }

    /// Total bytes of all files now.
    pub fn total_bytes(&self) -> u64 {
        let st = self.lock();
        st.dir
            .values()
            .filter_map(|ino| st.inodes.get(ino))
            .map(|i| i.data.len() as u64)
            .sum()
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().dir.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<SimFile> {
        let mut st = self.lock();
        let epoch = st.epoch;
        if let Some(&ino) = st.dir.get(name) {
            if let Some(inode) = st.inodes.get_mut(&ino) {
                inode.data.clear();
                inode.pending.push(FileOp::Truncate(0));
            }
            return Ok(SimFile {
                disk: self.clone(),
                ino,
                epoch,
            });
        }
        let ino = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(ino, Inode::default());
        st.dir.insert(name.to_string(), ino);
        st.pending_dir.push(DirOp::Link(name.to_string(), ino));
        Ok(SimFile {
            disk: self.clone(),
            ino,
            epoch,
        })
    }

    fn open_append(&self, name: &str) -> io::Result<SimFile> {
        let st = self.lock();
        let ino = *st.dir.get(name).ok_or_else(|| not_found(name))?;
        Ok(SimFile {
            disk: self.clone(),
            ino,
            epoch: st.epoch,
        })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.contents(name).ok_or_else(|| not_found(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.dir.remove(from).ok_or_else(|| not_found(from))?;
        st.dir.insert(to.to_string(), ino);
        st.pending_dir.push(DirOp::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.dir.remove(name).ok_or_else(|| not_found(name))?;
        st.pending_dir.push(DirOp::Remove(name.to_string()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        for op in st.pending_dir.drain(..) {
            apply_dir(&mut st.durable_dir, &op);
        }
        st.stats.dir_syncs += 1;
        Ok(())
    }
}

/// A handle on one simulated file; it keeps working after a rename or removal, as a file
/// descriptor does, and stops at the next crash.
pub struct SimFile {
    disk: SimDisk,
    ino: u64,
    epoch: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode, &mut SimStats) -> T) -> io::Result<T> {
        let mut st = self.disk.lock();
        let st = &mut *st;
        if st.epoch != self.epoch {
            return Err(io::Error::other("file handle from before a simulated crash"));
        }
        match st.inodes.get_mut(&self.ino) {
            Some(inode) => Ok(f(inode, &mut st.stats)),
            // Removed and no longer named: writes go nowhere, as to an unlinked file.
            None => Err(io::Error::other("file handle of a file the crash removed")),
        }
    }
}

impl DiskFile for SimFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(|_| io::Error::other("offset past what a simulated file holds"))?;
        self.with(|inode, stats| {
            write_into(&mut inode.data, offset, data);
            inode.pending.push(FileOp::Write(offset, data.to_vec()));
            stats.bytes_written += data.len() as u64;
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        let failing = self.disk.lock().failing_sync.take();
        self.with(|inode, stats| {
            // What reaches the disk is what was written since the last sync, not the file as
            // reads see it: after a failed sync the two differ by the writes that were lost.
            let keep = match failing {
                None => inode.pending.len(),
                Some(draw) => (draw % (inode.pending.len() as u64 + 1)) as usize,
            };
            for op in inode.pending.drain(..).take(keep) {
                match op {
                    FileOp::Write(offset, bytes) => write_into(&mut inode.durable, offset, &bytes),
                    FileOp::Truncate(len) => inode.durable.resize(len, 0),
                }
            }
            if failing.is_none() {
                stats.file_syncs += 1;
                return Ok(());
            }
            stats.failed_syncs += 1;
            Err(io::Error::other("simulated EIO: write-back failed"))
        })?
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|inode, _| {
            let len = len as usize;
            inode.data.resize(len, 0);
            inode.pending.push(FileOp::Truncate(len));
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|inode, _| inode.data.len() as u64)
    }
}
