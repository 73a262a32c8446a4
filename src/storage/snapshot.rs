//! A snapshot file: the whole store at one xid, and where the log goes on from it.
//!
//! `"CRSNAP01" | log seq (u64) | xid (u64) | view version (u64) | entry count (u64) | entries
//! | crc32c of everything before (u32)`, all little-endian; an entry is `key length (u32) | key
//! | value (i32)`, keys in ascending order, no value 0 (the store's own invariants). Recovery
//! replays the segments from `log seq` on top of it.
//!
//! Written to `<name>.tmp`, synced, renamed, and the directory synced: the name appears only
//! once the whole content is durable, so a snapshot file whose checksum fails was damaged after
//! it was written, never torn.

use super::record::{decode_members, view_mark_payload_len, MAX_KEY_BYTES};
use crate::core::{Store, ViewMark, Xid};

const MAGIC: &[u8; 8] = b"CRSNAP02";
const FIXED: usize = 8 + 8 * 4;
const TRAILER: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The first log segment to replay on top of it.
    pub seq: u64,
    pub xid: Xid,
    pub view: ViewMark,
    pub store: Store,
}

pub fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:016x}.snap")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// The file's exact size, without encoding it.
pub fn encoded_len(store: &Store, view: &ViewMark) -> u64 {
    let members: u64 = 2 + view.members.iter().map(|m| 1 + m.len() as u64).sum::<u64>();
    (FIXED + TRAILER) as u64 + members + store.keys().map(|k| 8 + k.len() as u64).sum::<u64>()
}

/// `None` if a key is over `MAX_KEY_BYTES` (the log would have refused it first) or the view's
/// members do not fit a view mark record.
pub fn encode(seq: u64, xid: Xid, view: &ViewMark, store: &Store) -> Option<Vec<u8>> {
    view_mark_payload_len(view)?;
    let mut out = Vec::with_capacity(encoded_len(store, view) as usize);
    out.extend_from_slice(MAGIC);
    for field in [seq, xid, view.version] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&(view.members.len() as u16).to_le_bytes());
    for m in &view.members {
        out.push(m.len() as u8);
        out.extend_from_slice(m.as_bytes());
    }
    out.extend_from_slice(&(store.len() as u64).to_le_bytes());
    for (key, value) in store {
        if key.len() > MAX_KEY_BYTES {
            return None;
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// Why a snapshot file is refused, and at which offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError {
    pub offset: u64,
    pub reason: String,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| SnapshotError {
                offset: self.at as u64,
                reason: format!("{what} runs past the end"),
            })?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// Never panics and never returns a snapshot whose checksum fails; the fuzz target
/// `log_reader` also feeds it arbitrary bytes.
pub fn decode(data: &[u8]) -> Result<Snapshot, SnapshotError> {
    let err = |offset: usize, reason: &str| SnapshotError {
        offset: offset as u64,
        reason: reason.to_string(),
    };
    if data.len() < FIXED + TRAILER {
        return Err(err(0, "shorter than a snapshot's fixed fields"));
    }
    if &data[..8] != MAGIC {
        return Err(err(0, "not a snapshot file (bad magic)"));
    }
    let body_len = data.len() - TRAILER;
    let stored = u32::from_le_bytes(data[body_len..].try_into().unwrap_or_default());
    let computed = crc32c::crc32c(&data[..body_len]);
    if stored != computed {
        return Err(err(
            body_len,
            &format!("snapshot checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        ));
    }
    let mut r = Reader {
        data: &data[..body_len],
        at: 8,
    };
    let seq = r.u64("log seq")?;
    let xid = r.u64("xid")?;
    let view_version = r.u64("view version")?;
    let members_at = r.at;
    let (members, used) = decode_members(&r.data[members_at..]).map_err(|e| err(members_at, e))?;
    r.at += used;
    let count = r.u64("entry count")?;
    let mut store = Store::new();
    let mut last: Option<&str> = None;
    for _ in 0..count {
        let at = r.at;
        let len = r.u32("key length")? as usize;
        if len > MAX_KEY_BYTES {
            return Err(err(at, "key over the limit"));
        }
        let key = std::str::from_utf8(r.take(len, "key")?).map_err(|_| err(at, "key is not UTF-8"))?;
        let value = r.u32("value")? as i32;
        if value == 0 {
            return Err(err(at, "a stored value of 0 (absent keys are not stored)"));
        }
        if last.is_some_and(|l| l >= key) {
            return Err(err(at, "keys out of order"));
        }
        last = Some(key);
        store.insert(key.to_string(), value);
    }
    if r.at != body_len {
        return Err(err(r.at, "bytes after the last entry"));
    }
    Ok(Snapshot {
        seq,
        xid,
        view: ViewMark {
            version: view_version,
            members,
        },
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view without members: the entry count is then at bytes 34..42.
    fn view(version: u64) -> ViewMark {
        ViewMark {
            version,
            members: Vec::new(),
        }
    }

    fn store() -> Store {
        [("a", 1), ("b", -5), ("ключ", i32::MAX), ("zz", i32::MIN)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn snapshots_round_trip() {
        for s in [Store::new(), store()] {
            let view = ViewMark {
                version: 3,
                members: vec!["10.0.0.1:7000".into(), "b:2".into()],
            };
            let bytes = encode(7, 42, &view, &s).unwrap();
            assert_eq!(bytes.len() as u64, encoded_len(&s, &view));
            assert_eq!(
                decode(&bytes),
                Ok(Snapshot {
                    seq: 7,
                    xid: 42,
                    view,
                    store: s
                })
            );
        }
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = encode(7, 42, &view(3), &store()).unwrap();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x21;
            assert!(decode(&bad).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
        }
    }

    #[test]
    fn a_valid_checksum_over_invalid_entries_is_refused() {
        let reseal = |mut body: Vec<u8>| {
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let mut body = encode(1, 1, &view(1), &store()).unwrap();
        body.truncate(body.len() - TRAILER);
        // An entry count far beyond the bytes: refused without allocating for it.
        let mut huge = body.clone();
        huge[34..42].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&reseal(huge)).is_err());
        let mut zero = Vec::from(&body[..42]);
        zero[34..42].copy_from_slice(&1u64.to_le_bytes());
        zero.extend_from_slice(&1u32.to_le_bytes());
        zero.push(b'k');
        zero.extend_from_slice(&0i32.to_le_bytes());
        assert_eq!(
            decode(&reseal(zero)).unwrap_err().reason,
            "a stored value of 0 (absent keys are not stored)"
        );
        let mut trailing = body.clone();
        trailing.push(0);
        assert_eq!(decode(&reseal(trailing)).unwrap_err().reason, "bytes after the last entry");
    }

    #[test]
    fn snapshot_names_round_trip() {
        assert_eq!(parse_snapshot_name(&snapshot_name(0x1f)), Some(0x1f));
        assert_eq!(parse_snapshot_name("snap-0000000000000001.snap.tmp"), None);
    }
}
