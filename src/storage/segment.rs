//! A segment file: a 32-byte header, then frames (`record.rs`) back to back. The log is a run
//! of segments with consecutive sequence numbers; only the last one is ever written to.
//!
//! Header: `"CRWALSG1" | seq (u64 LE) | base xid (u64 LE) | format version (u32 LE) | crc32c
//! of the 28 bytes before (u32 LE)`. The base xid is the log's last xid when the segment was
//! started; recovery checks it against what it replayed, so a segment from another log or a
//! lost one in between does not go unnoticed.

use super::record::{self, FrameError, Record, FRAME_HEADER_LEN};
use crate::core::Xid;

pub const SEGMENT_HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"CRWALSG1";
const FORMAT_VERSION: u32 = 1;
/// The unit a disk writes atomically, at best: a stretch of zeros this aligned inside a frame is
/// a write that never reached the disk, not a flipped bit.
const SECTOR: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub base_xid: Xid,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&self.seq.to_le_bytes());
        h[16..24].copy_from_slice(&self.base_xid.to_le_bytes());
        h[24..28].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        let Some(h) = b.get(..SEGMENT_HEADER_LEN) else {
            return Err("segment header cut short");
        };
        let field = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or_default());
        let stored = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
        if &h[..8] != MAGIC {
            return Err("not a segment file (bad magic)");
        }
        if crc32c::crc32c(&h[..28]) != stored {
            return Err("segment header checksum mismatch");
        }
        if u32::from_le_bytes(h[24..28].try_into().unwrap_or_default()) != FORMAT_VERSION {
            return Err("unknown segment format version");
        }
        Ok(SegmentHeader {
            seq: field(8),
            base_xid: field(16),
        })
    }
}

pub fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// Where and why reading a segment stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub offset: u64,
    pub error: FrameError,
    /// Whether what is there looks like a write a crash cut short: the frame runs past the end
    /// of the file, or a sector-aligned stretch of it is zeros, or it and everything after it
    /// are zeros. Only the last segment can end that way; a flipped bit does not look like it.
    pub torn: bool,
    /// Whether everything from here to the end of the file is zeros: the preallocated, not yet
    /// written rest of the last segment (`LogConfig::preallocate_bytes`), or a write none of
    /// which reached the disk.
    pub zeros_to_end: bool,
}

/// Everything that can be read from one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentContents {
    pub header: Result<SegmentHeader, &'static str>,
    /// Each record with its offset in the file, in file order; all have valid checksums.
    pub records: Vec<(u64, Record)>,
    /// End of the last valid record (the header's end when there is none).
    pub valid_len: u64,
    /// `None` when the records run exactly to the end of the file.
    pub stop: Option<Stop>,
}

/// Reads a whole segment file. Never panics, whatever the bytes: the fuzz target
/// `fuzz/fuzz_targets/log_reader.rs` feeds it arbitrary ones.
pub fn read_segment(data: &[u8]) -> SegmentContents {
    let header = SegmentHeader::decode(data);
    let mut out = SegmentContents {
        header,
        records: Vec::new(),
        valid_len: 0,
        stop: None,
    };
    if out.header.is_err() {
        return out;
    }
    let mut at = SEGMENT_HEADER_LEN;
    while at < data.len() {
        match record::decode(&data[at..]) {
            Ok((rec, len)) => {
                out.records.push((at as u64, rec));
                at += len;
            }
            Err(error) => {
                let torn = looks_torn(data, at, &error);
                out.stop = Some(Stop {
                    offset: at as u64,
                    error,
                    torn,
                    zeros_to_end: data[at..].iter().all(|&b| b == 0),
                });
                break;
            }
        }
    }
    // Only whole frames move `at`, so it never passes the end.
    out.valid_len = at as u64;
    out
}

/// See `Stop::torn`. etcd's WAL decoder uses the same sector test (`isTornEntry`).
fn looks_torn(data: &[u8], at: usize, error: &FrameError) -> bool {
    let rest = &data[at..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    let end = match error {
        FrameError::Truncated { .. } => return true,
        FrameError::BadLength(_) => at + FRAME_HEADER_LEN.min(rest.len()),
        FrameError::BadChecksum { .. } | FrameError::BadPayload(_) => match record::claimed_frame_len(rest) {
            Some(len) => at + len,
            None => return false,
        },
    };
    // A write cut short with the file already extended over it (zeros to the end of the file,
    // reaching back into this frame).
    if end > at && data[end - 1..].iter().all(|&b| b == 0) {
        return true;
    }
    let mut chunk_start = at;
    while chunk_start < end {
        let chunk_end = ((chunk_start / SECTOR) + 1) * SECTOR;
        let chunk_end = chunk_end.min(end);
        if data[chunk_start..chunk_end].iter().all(|&b| b == 0) {
            return true;
        }
        chunk_start = chunk_end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut data = SegmentHeader { seq: 3, base_xid: 10 }.encode().to_vec();
        let mut starts = Vec::new();
        for r in records {
            starts.push(data.len());
            record::encode(r, &mut data).unwrap();
        }
        (data, starts)
    }

    fn updates(n: u64) -> Vec<Record> {
        (1..=n)
            .map(|i| Record::Update {
                xid: 10 + i,
                key: format!("key{i}"),
                value: i as i32 * 3 - 7,
            })
            .collect()
    }

    #[test]
    fn segment_names_round_trip() {
        for seq in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(parse_segment_name(&segment_name(seq)), Some(seq));
        }
        for bad in [
            "wal-1.log",
            "wal-000000000000000g.log",
            "snap-0000000000000001.snap",
            "wal-0000000000000001.log.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_whole_segment_reads_back() {
        let recs = updates(5);
        let (data, _) = segment(&recs);
        let c = read_segment(&data);
        assert_eq!(c.header, Ok(SegmentHeader { seq: 3, base_xid: 10 }));
        assert_eq!(c.records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), recs);
        assert_eq!(c.stop, None);
        assert_eq!(c.valid_len, data.len() as u64);
    }

    /// A crash can cut the file anywhere after the header: every cut reads as the records
    /// wholly before it plus a torn tail.
    #[test]
    fn every_cut_is_a_torn_tail_after_a_prefix() {
        let recs = updates(4);
        let (data, starts) = segment(&recs);
        for cut in SEGMENT_HEADER_LEN..data.len() {
            let c = read_segment(&data[..cut]);
            let whole = starts.iter().skip(1).chain([&data.len()]).filter(|&&end| end <= cut).count();
            assert_eq!(c.records.len(), whole, "cut at {cut}");
            match &c.stop {
                None => assert!(starts.contains(&cut)),
                Some(stop) => assert!(stop.torn, "cut at {cut}: {stop:?}"),
            }
        }
    }

    /// A cut write whose remaining bytes read as zeros (the file's size got to the disk, its
    /// data did not) is torn too.
    #[test]
    fn a_zero_filled_tail_is_torn() {
        let recs = updates(4);
        let (data, starts) = segment(&recs);
        for cut in starts[2] + 1..data.len() {
            let mut d = data.clone();
            d[cut..].fill(0);
            let c = read_segment(&d);
            let stop = c.stop.expect("the zeroed record is refused");
            assert!(stop.torn, "zeros from {cut}: {stop:?}");
            assert!(c.records.len() >= 2);
        }
    }

    /// A flipped byte in any record of a small log is refused, and reported as damage rather
    /// than a torn tail (except in the very last record when it leaves a zero at the end, which
    /// cannot be told from a torn write).
    #[test]
    fn corruption_at_every_offset_is_detected() {
        let recs = updates(6);
        let (data, starts) = segment(&recs);
        for at in 0..data.len() {
            let mut d = data.clone();
            d[at] ^= 0x5a;
            let c = read_segment(&d);
            if at < SEGMENT_HEADER_LEN {
                assert!(c.header.is_err(), "flip at {at} in the header");
                continue;
            }
            let hit = starts.iter().rposition(|&s| s <= at).unwrap();
            assert_eq!(c.records.len(), hit, "flip at {at}");
            assert_eq!(c.records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), recs[..hit]);
            let stop = c.stop.expect("a damaged record stops the reader");
            assert_eq!(stop.offset, starts[hit] as u64);
            if hit + 1 < recs.len() {
                assert!(!stop.torn, "flip at {at} mistaken for a torn write: {stop:?}");
            }
        }
    }

    #[test]
    fn a_bad_header_yields_nothing() {
        let (mut data, _) = segment(&updates(2));
        data[9] ^= 1;
        let c = read_segment(&data);
        assert!(c.header.is_err());
        assert!(c.records.is_empty());
        assert_eq!(read_segment(&[]).header, Err("segment header cut short"));
    }
}
