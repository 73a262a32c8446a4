//! The little file I/O the log and snapshots need, behind a trait so that the same code runs on
//! the real file system (`FsDisk`) and on the simulated disk of the tests (`SimDisk`), which
//! loses unsynced writes and tears the last one on a crash, replayably by seed.
//!
//! A `Disk` is one flat directory; files are named, never nested.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// One directory of files.
pub trait Disk {
    type File: DiskFile;
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A new empty file (an existing one of that name is emptied), open for appending. The name
    /// is durable only after `sync_dir`.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// An existing file, open for writing.
    fn open_append(&self, name: &str) -> io::Result<Self::File>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Replaces `to` with `from` atomically; durable only after `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Durable only after `sync_dir`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals so far durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
}

/// An open file.
pub trait DiskFile {
    /// Writes `data` at `offset`; past the end the file grows, with zeros in any gap.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.len()?;
        self.write_at(end, data)
    }
    /// Makes everything written so far durable, with the size needed to read it back
    /// (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (durable after `sync`).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's size.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A directory of the real file system.
#[derive(Clone, Debug)]
pub struct FsDisk {
    dir: PathBuf,
}

impl FsDisk {
    /// Creates the directory if it is missing. Its entry in its parent is not synced here: the
    /// deployment is expected to create the data directory once, before the replica runs.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FsDisk { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Disk for FsDisk {
    type File = FsFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            // A name that is not UTF-8 is nobody's file of ours; leave it alone.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(self.path(name))?;
        Ok(FsFile { file, len: 0 })
    }

    fn open_append(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        let len = file.metadata()?.len();
        Ok(FsFile { file, len })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

pub struct FsFile {
    file: File,
    /// The file's size, kept here so that an append is one `pwrite` with no `fstat` or seek.
    len: u64,
}

impl DiskFile for FsFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset)?;
        self.len = self.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}
