//! Format v1 of WAL segments: the segment header, the record frame and the
//! payload codec. `schemas/wal-format.md` documents the same bytes for readers
//! outside Rust; `testdata/wal-v1/` holds golden segments.
//!
//! ```text
//! segment  = header record*
//! header   = 64 bytes, little endian:
//!              0  magic            8 bytes  "WALHOUSE"
//!              8  format version   u16      1
//!             10  header length    u16      64
//!             12  core id          u32
//!             16  segment number   u64
//!             24  epoch            u64      every record of the segment has this epoch
//!             32  first sequence   u64      sequence of the first record (or of the next, if none)
//!             40  timestamp floor  i64      every record's timestamp_ns is greater
//!             48  reserved         12 bytes zero
//!             60  crc32c           u32      of bytes 0..60
//! record   = len u32 | crc u32 | payload (len bytes)
//!              len > 0 and len <= max_record_bytes; crc = crc32c(len bytes ++ payload)
//! payload  = tag u8 | sequence varint | timestamp_ns i64 | body
//!   tag 1 Put          key_len varint | key | value (the rest of the payload)
//!   tag 2 Delete       key (the rest of the payload)
//!   tag 3 Checkpoint   id varint
//!   tag 4 Commit       flags u8 (bit 0: watermark present) | [watermark i64]
//!                      | count varint | count x (source_len varint | source utf-8 | offset varint)
//!   tag 5 EpochBarrier epoch varint (equals the segment's epoch)
//! varint   = unsigned LEB128, at most 10 bytes
//! ```

use super::entry::{CommitOffsets, EntryRef, OpRef};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WALHOUSE";
/// The segment format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment header in bytes.
pub const HEADER_LEN: usize = HEADER_LEN_U16 as usize;
const HEADER_LEN_U16: u16 = 64;
/// Size of a record's frame (length and checksum) in bytes.
pub const RECORD_HEADER_LEN: usize = 8;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CHECKPOINT: u8 = 3;
const TAG_COMMIT: u8 = 4;
const TAG_EPOCH_BARRIER: u8 = 5;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Core that owns the segment.
    pub core_id: u32,
    /// Position of the segment in the core's series, starting at 0.
    pub segment: u64,
    /// The epoch of every record in the segment.
    pub epoch: u64,
    /// Sequence number of the segment's first record.
    pub first_sequence: u64,
    /// Every record's timestamp is strictly greater than this.
    pub timestamp_floor: i64,
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&HEADER_LEN_U16.to_le_bytes());
        b[12..16].copy_from_slice(&self.core_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_sequence.to_le_bytes());
        b[40..48].copy_from_slice(&self.timestamp_floor.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_LEN {
            return Err(format!(
                "segment header is {} bytes, need {HEADER_LEN}",
                b.len()
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(format!(
                "bad magic {:02x?}, expected \"WALHOUSE\"",
                &b[0..8]
            ));
        }
        let stored = le_u32(&b[60..64]);
        let actual = crc32c::crc32c(&b[0..60]);
        if stored != actual {
            return Err(format!(
                "header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        let header_len = u16::from_le_bytes([b[10], b[11]]);
        if usize::from(header_len) != HEADER_LEN {
            return Err(format!("header length {header_len}, expected {HEADER_LEN}"));
        }
        Ok(Self {
            core_id: le_u32(&b[12..16]),
            segment: le_u64(&b[16..24]),
            epoch: le_u64(&b[24..32]),
            first_sequence: le_u64(&b[32..40]),
            timestamp_floor: i64::from_le_bytes(le_array(&b[40..48])),
        })
    }
}

fn le_array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(le_array(b))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(le_array(b))
}

/// The checksum of a record: crc32c over the 4 length bytes and the payload.
#[must_use]
pub fn record_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

#[inline]
#[expect(
    clippy::cast_possible_truncation,
    reason = "each byte takes the low 7 bits (the last one is below 0x80)"
)]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn get_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    // One byte (lengths of short keys, small numbers): no loop.
    if let Some((&first, rest)) = b.split_first() {
        if first & 0x80 == 0 {
            return Some((u64::from(first), rest));
        }
    }
    get_varint_long(b)
}

fn get_varint_long(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7f);
        if i == 9 && part > 1 {
            return None; // more than 64 bits
        }
        v |= part << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

fn get_len_prefixed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = get_varint(b)?;
    let len = usize::try_from(len).ok()?;
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// Bytes that hold a payload's tag, sequence and timestamp (or the whole
/// payload, if shorter).
pub(crate) const PAYLOAD_PREFIX_LEN: usize = 1 + 10 + 8;

/// The (sequence, timestamp) at the start of a payload whose first
/// `min(len, PAYLOAD_PREFIX_LEN)` bytes are `prefix`; `None` if they cannot
/// start a valid payload.
pub(crate) fn payload_prefix(prefix: &[u8]) -> Option<(u64, i64)> {
    let (&tag, rest) = prefix.split_first()?;
    if !(TAG_PUT..=TAG_EPOCH_BARRIER).contains(&tag) {
        return None;
    }
    let (sequence, rest) = get_varint(rest)?;
    let ts = rest.get(..8)?;
    Some((sequence, i64::from_le_bytes(le_array(ts))))
}

/// The operation to encode; borrowed, so encoding needs no allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EncodeOp<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Checkpoint {
        id: u64,
    },
    Commit {
        offsets: &'a [(&'a str, u64)],
        watermark: Option<i64>,
    },
    EpochBarrier {
        epoch: u64,
    },
}

/// Longest frame head: length, checksum, tag, sequence varint, timestamp,
/// and the varint that starts a Put, Checkpoint or `EpochBarrier` body.
const FRAME_HEAD_MAX: usize = RECORD_HEADER_LEN + 1 + 10 + 8 + 10;

/// Writes `v` as a varint at the start of `out` and returns its length.
/// `out` must have room for 10 bytes (it is part of a frame head).
#[inline]
#[expect(
    clippy::cast_possible_truncation,
    reason = "each byte takes the low 7 bits (the last one is below 0x80)"
)]
fn write_varint(out: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// Appends one framed record to `buf`. Returns the payload length, or the
/// payload length that exceeded `max_record_bytes` (then `buf` is unchanged).
///
/// The frame's fixed part (length, checksum, tag, sequence, timestamp and a
/// leading body varint) is built in a stack array, the payload length is
/// known before `buf` is touched, and `buf` grows once: one reservation and
/// at most three copies (head, key, value) per record. The checksum is one
/// crc32c pass over the contiguous `len ++ payload` bytes.
#[inline]
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    sequence: u64,
    timestamp_ns: i64,
    op: EncodeOp<'_>,
    max_record_bytes: u32,
) -> Result<u32, usize> {
    let mut head = [0u8; FRAME_HEAD_MAX];
    head[RECORD_HEADER_LEN] = match op {
        EncodeOp::Put { .. } => TAG_PUT,
        EncodeOp::Delete { .. } => TAG_DELETE,
        EncodeOp::Checkpoint { .. } => TAG_CHECKPOINT,
        EncodeOp::Commit { .. } => TAG_COMMIT,
        EncodeOp::EpochBarrier { .. } => TAG_EPOCH_BARRIER,
    };
    let mut n = RECORD_HEADER_LEN + 1;
    n += write_varint(&mut head[n..], sequence);
    head[n..n + 8].copy_from_slice(&timestamp_ns.to_le_bytes());
    n += 8;
    let (first, second): (&[u8], &[u8]) = match op {
        EncodeOp::Put { key, value } => {
            n += write_varint(&mut head[n..], key.len() as u64);
            (key, value)
        }
        EncodeOp::Delete { key } => (key, &[]),
        EncodeOp::Checkpoint { id } => {
            n += write_varint(&mut head[n..], id);
            (&[], &[])
        }
        EncodeOp::EpochBarrier { epoch } => {
            n += write_varint(&mut head[n..], epoch);
            (&[], &[])
        }
        EncodeOp::Commit { offsets, watermark } => {
            return encode_commit_record(buf, &head[..n], offsets, watermark, max_record_bytes);
        }
    };
    let payload_len = n - RECORD_HEADER_LEN + first.len() + second.len();
    let len = match u32::try_from(payload_len) {
        Ok(len) if len <= max_record_bytes => len,
        _ => return Err(payload_len),
    };
    // The length goes in twice for now: bytes 4..8 are where the checksum
    // goes, and until then they make `len ++ payload` contiguous for it.
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&len.to_le_bytes());
    let start = buf.len();
    buf.reserve(n + first.len() + second.len());
    buf.extend_from_slice(&head[..n]);
    buf.extend_from_slice(first);
    buf.extend_from_slice(second);
    seal_frame(buf, start, len);
    Ok(len)
}

/// Writes the checksum of the frame that starts at `start` (the rest of
/// `buf`), whose bytes 4..8 hold the length `len` until then.
#[inline]
fn seal_frame(buf: &mut [u8], start: usize, len: u32) {
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The rare Commit record: its body is built in `buf` after `head` (the
/// frame head up to the timestamp) and taken back out if it is too large.
fn encode_commit_record(
    buf: &mut Vec<u8>,
    head: &[u8],
    offsets: &[(&str, u64)],
    watermark: Option<i64>,
    max_record_bytes: u32,
) -> Result<u32, usize> {
    let start = buf.len();
    buf.extend_from_slice(head);
    match watermark {
        Some(w) => {
            buf.push(1);
            buf.extend_from_slice(&w.to_le_bytes());
        }
        None => buf.push(0),
    }
    put_varint(buf, offsets.len() as u64);
    for &(source, offset) in offsets {
        put_varint(buf, source.len() as u64);
        buf.extend_from_slice(source.as_bytes());
        put_varint(buf, offset);
    }
    let payload_len = buf.len() - start - RECORD_HEADER_LEN;
    let len = match u32::try_from(payload_len) {
        Ok(len) if len <= max_record_bytes => len,
        _ => {
            buf.truncate(start);
            return Err(payload_len);
        }
    };
    buf[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    seal_frame(buf, start, len);
    Ok(len)
}

/// Decodes a payload whose checksum was verified. `core_id` and `epoch` come
/// from the segment header. The error is a reason for a corruption report.
pub(crate) fn decode_payload(
    payload: &[u8],
    core_id: u16,
    epoch: u64,
) -> Result<EntryRef<'_>, &'static str> {
    let (&tag, rest) = payload.split_first().ok_or("empty payload")?;
    let (sequence, rest) = get_varint(rest).ok_or("bad sequence varint")?;
    if rest.len() < 8 {
        return Err("payload too short for the timestamp");
    }
    let (ts, body) = rest.split_at(8);
    let timestamp_ns = i64::from_le_bytes(le_array(ts));
    let operation = match tag {
        TAG_PUT => {
            let (key, value) = get_len_prefixed(body).ok_or("bad key length in put")?;
            OpRef::Put { key, value }
        }
        TAG_DELETE => OpRef::Delete { key: body },
        TAG_CHECKPOINT => {
            let (id, rest) = get_varint(body).ok_or("bad checkpoint id varint")?;
            if !rest.is_empty() {
                return Err("trailing bytes after checkpoint id");
            }
            OpRef::Checkpoint { id }
        }
        TAG_COMMIT => decode_commit(body)?,
        TAG_EPOCH_BARRIER => {
            let (barrier, rest) = get_varint(body).ok_or("bad barrier epoch varint")?;
            if !rest.is_empty() {
                return Err("trailing bytes after barrier epoch");
            }
            if barrier != epoch {
                return Err("epoch barrier does not carry the segment's epoch");
            }
            OpRef::EpochBarrier { epoch: barrier }
        }
        _ => return Err("unknown operation tag"),
    };
    Ok(EntryRef {
        epoch,
        sequence,
        core_id,
        timestamp_ns,
        operation,
    })
}

fn decode_commit(body: &[u8]) -> Result<OpRef<'_>, &'static str> {
    let (&flags, rest) = body.split_first().ok_or("commit without flags")?;
    let (watermark, rest) = match flags {
        0 => (None, rest),
        1 if rest.len() >= 8 => {
            let (w, rest) = rest.split_at(8);
            (Some(i64::from_le_bytes(le_array(w))), rest)
        }
        1 => return Err("commit watermark cut short"),
        _ => return Err("unknown commit flags"),
    };
    let (count, pairs) = get_varint(rest).ok_or("bad commit count varint")?;
    // Each pair takes at least 2 bytes, so a count above that is corruption
    // (and is never used to allocate).
    if count > (pairs.len() / 2) as u64 {
        return Err("commit count larger than its bytes");
    }
    let count = usize::try_from(count).map_err(|_| "commit count overflows")?;
    let mut cursor = pairs;
    for _ in 0..count {
        let (_, _, rest) = split_commit_pair(cursor).ok_or("bad commit source or offset")?;
        cursor = rest;
    }
    if !cursor.is_empty() {
        return Err("trailing bytes after commit offsets");
    }
    Ok(OpRef::Commit {
        offsets: CommitOffsets {
            count,
            bytes: pairs,
        },
        watermark,
    })
}

/// Splits one (source, offset) pair off the front of `b`.
pub(crate) fn split_commit_pair(b: &[u8]) -> Option<(&str, u64, &[u8])> {
    let (source, rest) = get_len_prefixed(b)?;
    let source = std::str::from_utf8(source).ok()?;
    let (offset, rest) = get_varint(rest)?;
    Some((source, offset, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let h = SegmentHeader {
            core_id: 3,
            segment: 7,
            epoch: 9,
            first_sequence: 1234,
            timestamp_floor: -5,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(SegmentHeader::decode(&bad).is_err(), "flip in byte {i}");
        }
        assert!(SegmentHeader::decode(&bytes[..63]).is_err());
    }

    #[test]
    fn put_of_16_and_100_bytes_fits_in_150() {
        let mut buf = Vec::new();
        let key = [7u8; 16];
        let value = [9u8; 100];
        // A large sequence number and timestamp: the worst realistic case.
        encode_record(
            &mut buf,
            u64::from(u32::MAX),
            i64::MAX,
            EncodeOp::Put {
                key: &key,
                value: &value,
            },
            u32::MAX,
        )
        .unwrap();
        assert!(buf.len() <= 150, "record takes {} bytes", buf.len());
    }

    #[test]
    fn record_checksum_covers_length() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 2, EncodeOp::Delete { key: b"abc" }, 1024)
            .map_err(|_| ())
            .unwrap();
        let len = le_u32(&buf[0..4]);
        let crc = le_u32(&buf[4..8]);
        assert_eq!(crc, record_crc(len, &buf[8..]));
        assert_ne!(crc, crc32c::crc32c(&buf[8..]), "length must be covered");
    }

    #[test]
    fn oversized_payload_is_refused_and_buffer_untouched() {
        let mut buf = vec![1, 2, 3];
        let r = encode_record(
            &mut buf,
            1,
            2,
            EncodeOp::Put {
                key: b"k",
                value: &[0u8; 100],
            },
            50,
        );
        assert!(r.is_err());
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn varint_rejects_overlong() {
        assert_eq!(get_varint(&[0x80; 11]), None);
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        let mut b = Vec::new();
        put_varint(&mut b, u64::MAX);
        assert_eq!(get_varint(&b), Some((u64::MAX, &[][..])));
    }
}
