//! One log record on disk: `crc32c (u32 LE) | length field (u32 LE) | payload`, where the
//! payload is a type byte and its fields. The length field is the payload's length in its low 24
//! bits and a check byte of them in its top 8 (the low byte of their crc32c). The checksum
//! covers the length field as well as the payload.
//!
//! Why a check byte for the length: a damaged length alone could make a record in the middle of
//! the last segment seem to run past the end of the file, which is what a write cut short by a
//! crash looks like, and the reader would drop it and everything after it as a torn tail. With
//! the check byte such damage reads as an impossible length, which is reported as corruption.
//!
//! Decoding never trusts the length before bounding it: nothing is allocated from it, and a
//! length of 0 (what a zero-filled or preallocated region reads as) is never a record.

use crate::core::{ViewMark, Xid};

/// Checksum and length.
pub const FRAME_HEADER_LEN: usize = 8;
/// A key's limit on disk. The replica refuses longer keys long before (`--max-key-bytes`,
/// 1,024 by default); this bound only keeps a record's size, and what a reader may be asked to
/// hold, fixed.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Type, xid, value, key: the largest payload there is.
pub const MAX_PAYLOAD: usize = 1 + 8 + 4 + MAX_KEY_BYTES;
/// The most a frame can take on disk.
pub const MAX_FRAME: usize = FRAME_HEADER_LEN + MAX_PAYLOAD;

const TYPE_UPDATE: u8 = 1;
const TYPE_VIEW_MARK: u8 = 2;

/// What the log holds: enough to rebuild the store and the replica's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The key's absolute value from `xid` on (0: the key is gone). The client's callback
    /// address is not kept: after a restart nobody waits for it.
    Update { xid: Xid, key: String, value: i32 },
    /// The latest membership view that listed this replica (`core::ViewMark`: its version is
    /// what `RetainedMark::view_version` compares, and its members are who must be back before
    /// this copy is offered), so that a restarted replica can say how recent its state is.
    ViewMark(ViewMark),
}

/// Why the bytes at some offset are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame runs past the end of the data (`needed` bytes from its start).
    Truncated { needed: usize },
    /// A length field whose check byte does not match, or a length of 0 or over `MAX_PAYLOAD`:
    /// no record has it.
    BadLength(u32),
    /// Complete, but the checksum does not match.
    BadChecksum { stored: u32, computed: u32 },
    /// The checksum matches but the payload is not a record this version writes.
    BadPayload(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed } => write!(f, "record cut short by the end of the file ({needed} bytes needed)"),
            FrameError::BadLength(field) => write!(f, "impossible record length field {field:#010x}"),
            FrameError::BadChecksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            FrameError::BadPayload(why) => write!(f, "checksum matches but the payload is invalid: {why}"),
        }
    }
}

/// The length field for a payload of `len` bytes (`len < 2^24`).
pub fn length_field(len: usize) -> u32 {
    let low = (len as u32) & 0x00ff_ffff;
    let check = crc32c::crc32c(&low.to_le_bytes()[..3]) & 0xff;
    low | (check << 24)
}

/// The payload length a length field holds, if its check byte matches and it is in range.
fn payload_len(field: u32) -> Option<usize> {
    let len = (field & 0x00ff_ffff) as usize;
    ((1..=MAX_PAYLOAD).contains(&len) && length_field(len) == field).then_some(len)
}

/// The checksum of a frame: over the length field, then the payload.
pub fn frame_crc(len_field: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_field), payload)
}

/// The size `encode_update` will write for a key of `key_len` bytes.
pub fn update_frame_len(key_len: usize) -> usize {
    FRAME_HEADER_LEN + 1 + 8 + 4 + key_len
}

/// Appends an update's frame to `out`. The caller checks `key.len() <= MAX_KEY_BYTES`.
pub fn encode_update(xid: Xid, key: &str, value: i32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    out.push(TYPE_UPDATE);
    out.extend_from_slice(&xid.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    seal(out, start);
}

/// A member's address on disk: at most this many bytes (a `host:port`).
pub const MAX_ADDR_BYTES: usize = 255;

/// Bytes of a view mark's payload, if it fits in a record: type, version, member count, then a
/// length byte and the address per member.
pub fn view_mark_payload_len(view: &ViewMark) -> Option<usize> {
    let mut len = 1 + 8 + 2;
    for m in &view.members {
        if m.len() > MAX_ADDR_BYTES {
            return None;
        }
        len += 1 + m.len();
    }
    (view.members.len() <= u16::MAX as usize && len <= MAX_PAYLOAD).then_some(len)
}

/// Appends a view mark's frame to `out`; `None` (nothing appended) if it does not fit a record.
pub fn encode_view_mark(view: &ViewMark, out: &mut Vec<u8>) -> Option<()> {
    view_mark_payload_len(view)?;
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    out.push(TYPE_VIEW_MARK);
    out.extend_from_slice(&view.version.to_le_bytes());
    out.extend_from_slice(&(view.members.len() as u16).to_le_bytes());
    for m in &view.members {
        out.push(m.len() as u8);
        out.extend_from_slice(m.as_bytes());
    }
    seal(out, start);
    Some(())
}

/// Reads the members of a view mark or a snapshot: a `u16` count, then a length byte and the
/// address each. Bounded by `bytes`; the offset after them.
pub fn decode_members(bytes: &[u8]) -> Result<(Vec<String>, usize), &'static str> {
    let count = bytes.get(..2).ok_or("member count cut short")?;
    let count = u16::from_le_bytes([count[0], count[1]]) as usize;
    let mut at = 2;
    let mut members = Vec::new();
    for _ in 0..count {
        let len = *bytes.get(at).ok_or("member address cut short")? as usize;
        let addr = bytes.get(at + 1..at + 1 + len).ok_or("member address cut short")?;
        members.push(std::str::from_utf8(addr).map_err(|_| "member address is not UTF-8")?.to_owned());
        at += 1 + len;
    }
    Ok((members, at))
}

/// Appends any record's frame; `None` for a key over the limit.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Option<()> {
    match record {
        Record::Update { xid, key, value } => {
            if key.len() > MAX_KEY_BYTES {
                return None;
            }
            encode_update(*xid, key, *value, out)
        }
        Record::ViewMark(view) => encode_view_mark(view, out)?,
    }
    Some(())
}

/// Fills in length and checksum of the frame that starts at `start` and runs to the end of `out`.
fn seal(out: &mut [u8], start: usize) {
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    debug_assert!((1..=MAX_PAYLOAD).contains(&payload_len));
    let len_field = length_field(payload_len).to_le_bytes();
    let crc = frame_crc(len_field, &out[start + FRAME_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len_field);
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The length a frame starting at `buf[0]` claims, once bounded: `Some(total frame bytes)`.
pub fn claimed_frame_len(buf: &[u8]) -> Option<usize> {
    Some(FRAME_HEADER_LEN + payload_len(u32_at(buf, 4)?)?)
}

/// Decodes the frame at the start of `buf`: the record and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Record, usize), FrameError> {
    let (Some(stored), Some(field)) = (u32_at(buf, 0), u32_at(buf, 4)) else {
        return Err(FrameError::Truncated { needed: FRAME_HEADER_LEN });
    };
    let Some(len) = payload_len(field) else {
        return Err(FrameError::BadLength(field));
    };
    let total = FRAME_HEADER_LEN + len;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
        return Err(FrameError::Truncated { needed: total });
    };
    let computed = frame_crc(field.to_le_bytes(), payload);
    if computed != stored {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    Ok((decode_payload(payload)?, total))
}

fn decode_payload(p: &[u8]) -> Result<Record, FrameError> {
    match p.first() {
        Some(&TYPE_UPDATE) => {
            let (Some(xid), Some(value)) = (u64_at(p, 1), u32_at(p, 9)) else {
                return Err(FrameError::BadPayload("update shorter than its fixed fields"));
            };
            let key = p.get(13..).unwrap_or_default();
            if key.len() > MAX_KEY_BYTES {
                return Err(FrameError::BadPayload("key over the limit"));
            }
            let key = std::str::from_utf8(key).map_err(|_| FrameError::BadPayload("key is not UTF-8"))?;
            Ok(Record::Update {
                xid,
                key: key.to_owned(),
                value: value as i32,
            })
        }
        Some(&TYPE_VIEW_MARK) => {
            let version = u64_at(p, 1).ok_or(FrameError::BadPayload("view mark shorter than its fixed fields"))?;
            let (members, used) = decode_members(&p[9..]).map_err(FrameError::BadPayload)?;
            if 9 + used != p.len() {
                return Err(FrameError::BadPayload("bytes after a view mark's members"));
            }
            Ok(Record::ViewMark(ViewMark { version, members }))
        }
        _ => Err(FrameError::BadPayload("unknown record type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Update {
                xid: 1,
                key: "a".into(),
                value: 5,
            },
            Record::Update {
                xid: 2,
                key: "ключ".into(),
                value: -7,
            },
            Record::ViewMark(ViewMark {
                version: 9,
                members: vec!["10.0.0.1:7000".into(), "h:1".into()],
            }),
            Record::Update {
                xid: u64::MAX,
                key: String::new(),
                value: 0,
            },
            Record::Update {
                xid: 4,
                key: "k".repeat(MAX_KEY_BYTES),
                value: i32::MIN,
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        for r in sample() {
            let mut buf = Vec::new();
            encode(&r, &mut buf).unwrap();
            assert_eq!(decode(&buf), Ok((r, buf.len())));
        }
    }

    #[test]
    fn a_key_over_the_limit_is_refused() {
        let r = Record::Update {
            xid: 1,
            key: "k".repeat(MAX_KEY_BYTES + 1),
            value: 1,
        };
        assert_eq!(encode(&r, &mut Vec::new()), None);
    }

    #[test]
    fn every_cut_of_a_frame_is_truncated() {
        let mut buf = Vec::new();
        encode(
            &Record::Update {
                xid: 3,
                key: "key".into(),
                value: 12,
            },
            &mut buf,
        )
        .unwrap();
        for cut in 0..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Err(FrameError::Truncated { .. })), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for r in sample().into_iter().take(3) {
            let mut buf = Vec::new();
            encode(&r, &mut buf).unwrap();
            for at in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[at] ^= 1 << bit;
                    match decode(&bad) {
                        Ok((got, _)) => panic!("flip of bit {bit} at {at} decoded to {got:?}"),
                        Err(FrameError::BadPayload(_)) => panic!("flip at {at} passed the checksum"),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0; 64]), Err(FrameError::BadLength(0)));
    }

    #[test]
    fn a_valid_checksum_over_a_bad_payload_is_refused() {
        for payload in [
            &[9u8, 1, 2][..],
            &[TYPE_UPDATE, 1, 2, 3][..],
            &[TYPE_VIEW_MARK, 1][..],
            &[TYPE_UPDATE, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0xff][..],
        ] {
            let mut buf = vec![0; FRAME_HEADER_LEN];
            buf.extend_from_slice(payload);
            seal(&mut buf, 0);
            assert!(matches!(decode(&buf), Err(FrameError::BadPayload(_))), "{payload:?}");
        }
    }
}
