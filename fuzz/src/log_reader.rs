//! `log_reader`: the input is the bytes of a log segment file. Reading it never panics, and
//! every record it yields is exactly what encoding that record writes, checksum included (so
//! none fails its checksum); the reader stops at the first byte that is not such a record. The
//! same bytes also go through the snapshot decoder (same promise) and through recovery as the
//! only segment of a log, whose store must then be the replay of exactly the records read.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use chainrep::core::Store;
use chainrep::storage::segment::{read_segment, segment_name, SEGMENT_HEADER_LEN};
use chainrep::storage::{record, snapshot, Disk, DiskFile, Log, LogConfig, Record, StorageError};

pub fn run(data: &[u8]) {
    check_segment_reader(data);
    check_snapshot_decoder(data);
    check_recovery(data);
}

fn check_segment_reader(data: &[u8]) {
    let c = read_segment(data);
    let Ok(header) = c.header else {
        assert!(c.records.is_empty() && c.stop.is_none());
        return;
    };
    assert_eq!(
        &header.encode()[..],
        &data[..SEGMENT_HEADER_LEN],
        "a header read back re-encodes to its bytes"
    );
    let mut at = SEGMENT_HEADER_LEN;
    for (offset, rec) in &c.records {
        assert_eq!(*offset as usize, at, "records are back to back");
        let mut frame = Vec::new();
        record::encode(rec, &mut frame).expect("a record read back is within the limits");
        assert_eq!(&data[at..at + frame.len()], &frame[..], "record at {at} re-encodes to its bytes");
        let stored = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        let field: [u8; 4] = data[at + 4..at + 8].try_into().unwrap();
        assert_eq!(
            stored,
            record::frame_crc(field, &data[at + 8..at + frame.len()]),
            "checksum of the record at {at}"
        );
        at += frame.len();
    }
    assert_eq!(c.valid_len as usize, at);
    match &c.stop {
        Some(stop) => {
            assert_eq!(stop.offset as usize, at);
            assert!(at < data.len());
            assert!(record::decode(&data[at..]).is_err());
        }
        None => assert_eq!(at, data.len()),
    }
}

fn check_snapshot_decoder(data: &[u8]) {
    if let Ok(s) = snapshot::decode(data) {
        let again = snapshot::encode(s.seq, s.xid, &s.view, &s.store).expect("keys within the limit");
        assert_eq!(again, data, "a snapshot read back re-encodes to its bytes");
        assert!(s.store.values().all(|&v| v != 0));
    }
}

/// Recovery of a log whose only file is `data` as segment 0: an error, or the replay of the
/// records the reader yields (all of them, or, past a torn tail, all before it).
fn check_recovery(data: &[u8]) {
    let disk = MemDisk::default();
    disk.files.borrow_mut().insert(segment_name(0), data.to_vec());
    let c = read_segment(data);
    match Log::open(disk.clone(), LogConfig::default()) {
        Ok((_, rec)) => {
            let mut store = Store::new();
            let mut last_xid = 0;
            for (_, r) in &c.records {
                if let Record::Update { xid, key, value } = r {
                    if *value == 0 {
                        store.remove(key);
                    } else {
                        store.insert(key.clone(), *value);
                    }
                    last_xid = *xid;
                }
            }
            assert_eq!(rec.records_replayed as usize, c.records.len());
            assert_eq!((rec.store, rec.last_xid), (store, last_xid));
            // The file now holds the header and exactly those records, then nothing or zeros
            // only (the rest of a preallocated segment, which the next record overwrites).
            let after = disk.files.borrow().get(&segment_name(0)).cloned().unwrap_or_default();
            let c2 = read_segment(&after);
            assert!(c2.stop.as_ref().is_none_or(|s| s.zeros_to_end), "{:?}", c2.stop);
            assert_eq!(c2.records, c.records);
        }
        Err(StorageError::Corrupt { .. }) => {}
        Err(e) => panic!("recovery of bytes in memory failed otherwise than as corrupt: {e}"),
    }
}

/// Files in memory, for recovery without a file system (no crashes: that is `SimDisk`'s job in
/// the unit tests; this only needs to hold one file).
#[derive(Clone, Default)]
struct MemDisk {
    files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
}

struct MemFile {
    disk: MemDisk,
    name: String,
}

impl Disk for MemDisk {
    type File = MemFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.borrow().keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<MemFile> {
        self.files.borrow_mut().insert(name.to_string(), Vec::new());
        self.open_append(name)
    }

    fn open_append(&self, name: &str) -> io::Result<MemFile> {
        Ok(MemFile {
            disk: self.clone(),
            name: name.to_string(),
        })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.files
            .borrow()
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files.borrow_mut();
        let data = files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        files.insert(to.to_string(), data);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files
            .borrow_mut()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}

impl DiskFile for MemFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut files = self.disk.files.borrow_mut();
        let file = files.entry(self.name.clone()).or_default();
        let offset = offset as usize;
        if file.len() < offset + data.len() {
            file.resize(offset + data.len(), 0);
        }
        file[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.disk
            .files
            .borrow_mut()
            .entry(self.name.clone())
            .or_default()
            .resize(len as usize, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.files.borrow().get(&self.name).map_or(0, |d| d.len() as u64))
    }
}
