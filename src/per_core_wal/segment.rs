//! Segment files: their names, and [`SegmentCursor`], the buffered reader of
//! one segment that validates every record and tells a torn tail from
//! corruption.
//!
//! ## Naming
//!
//! A core's log is a series of segments numbered from 0. The file name is the
//! configured pattern (default `wal-{core_id}.log`) with `{core_id}` replaced by
//! `<core>-<segment>`, the segment zero-padded to 10 digits:
//! `wal-3-0000000042.log` is segment 42 of core 3. Names therefore start with
//! `wal-<core>`, sort by segment within a core, and numbers past 10 digits
//! still parse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::entry::{EntryRef, OrderKey};
use super::error::PerCoreWalError;
use super::format::{self, SegmentHeader, HEADER_LEN, RECORD_HEADER_LEN};
use super::fs::{WalFile, WalFileSystem};

/// How segment files are named: the pattern split around `{core_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentNaming {
    prefix: String,
    suffix: String,
}

impl Default for SegmentNaming {
    /// The default pattern, `wal-{core_id}.log`.
    fn default() -> Self {
        Self {
            prefix: "wal-".to_owned(),
            suffix: ".log".to_owned(),
        }
    }
}

impl SegmentNaming {
    /// Splits a pattern; `None` if it lacks `{core_id}`.
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        let (prefix, suffix) = pattern.split_once("{core_id}")?;
        if prefix.is_empty() && suffix.is_empty() {
            return None;
        }
        Some(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The file name of segment `segment` of core `core_id`.
    pub(crate) fn file_name(&self, core_id: usize, segment: u64) -> String {
        format!("{}{core_id}-{segment:010}{}", self.prefix, self.suffix)
    }

    /// Parses a file name back into (core, segment).
    pub(crate) fn parse(&self, name: &str) -> Option<(usize, u64)> {
        let middle = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        let (core, segment) = middle.split_once('-')?;
        if core.is_empty()
            || segment.is_empty()
            || !core.bytes().all(|b| b.is_ascii_digit())
            || !segment.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some((core.parse().ok()?, segment.parse().ok()?))
    }
}

/// A segment file found in the WAL directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) core_id: usize,
    pub(crate) segment: u64,
    pub(crate) path: PathBuf,
}

/// Every segment file in `dir`, in no particular order.
fn parse_dir(
    fs: &dyn WalFileSystem,
    dir: &Path,
    naming: &SegmentNaming,
) -> Result<Vec<SegmentFile>, PerCoreWalError> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| PerCoreWalError::io("list WAL directory", dir, e))?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let (core_id, segment) = naming.parse(&name)?;
            Some(SegmentFile {
                core_id,
                segment,
                path: dir.join(name),
            })
        })
        .collect())
}

/// Lists the segment files of cores `0..num_cores`, each core's sorted by
/// number. A segment of any other core is an error: opening without it
/// would later lose it.
pub(crate) fn list_segments(
    fs: &dyn WalFileSystem,
    dir: &Path,
    naming: &SegmentNaming,
    num_cores: usize,
) -> Result<Vec<Vec<SegmentFile>>, PerCoreWalError> {
    let mut by_core: Vec<Vec<SegmentFile>> = vec![Vec::new(); num_cores];
    for file in parse_dir(fs, dir, naming)? {
        match by_core.get_mut(file.core_id) {
            Some(segments) => segments.push(file),
            None => {
                return Err(PerCoreWalError::UnexpectedCore {
                    path: file.path,
                    core_id: file.core_id,
                    num_cores,
                })
            }
        }
    }
    for segments in &mut by_core {
        segments.sort_by_key(|s| s.segment);
    }
    Ok(by_core)
}

/// The segment files of one core, sorted by number.
pub(crate) fn list_core_segments(
    fs: &dyn WalFileSystem,
    dir: &Path,
    naming: &SegmentNaming,
    core_id: usize,
) -> Result<Vec<SegmentFile>, PerCoreWalError> {
    let mut segments: Vec<SegmentFile> = parse_dir(fs, dir, naming)?
        .into_iter()
        .filter(|s| s.core_id == core_id)
        .collect();
    segments.sort_by_key(|s| s.segment);
    Ok(segments)
}

/// The smallest record on disk: frame (8), tag (1), sequence (1), timestamp (8).
const MIN_RECORD_LEN: u64 = 18;

/// What the cursor found at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A valid record; read it with [`SegmentCursor::current`].
    Record,
    /// The end of the readable range.
    End,
    /// Only zero bytes from `position` to the end: a preallocated or
    /// zero-filled tail, which reads as the end of the log.
    ZeroTail { position: u64 },
    /// Invalid bytes from `position` to the end, with no valid record after
    /// them: what a crash in the middle of a write leaves.
    Torn { position: u64, reason: String },
}

/// The location and metadata of the current record inside the buffer.
#[derive(Debug, Clone, Copy)]
struct Current {
    payload_start: usize,
    payload_len: usize,
}

/// How a cursor reads its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Through a read buffer of at most `read_buffer_bytes` plus a record.
    Buffered,
    /// Up to its limit in one piece ([`WalFileSystem::read_whole`]: mapped,
    /// on the real file system), which [`SegmentCursor::data`] exposes: a
    /// record's key and value are at fixed offsets of that buffer.
    Whole,
}

/// Limits a cursor works within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    pub(crate) max_record_bytes: u32,
    pub(crate) read_buffer_bytes: usize,
}

/// Buffered, validating reader of one segment file. It never allocates more
/// than `read_buffer_bytes` plus one record of at most `max_record_bytes`.
#[derive(Debug)]
pub(crate) struct SegmentCursor {
    file: Box<dyn WalFile>,
    path: PathBuf,
    header: SegmentHeader,
    core_id: u16,
    /// Bytes past this offset are not read.
    limit: u64,
    /// Offset of the next record to read.
    pos: u64,
    /// Read buffer; only `buf[..valid]` holds file bytes. Its length only
    /// grows (zeroed once), so a refill does not zero it again.
    buf: Vec<u8>,
    /// The whole readable range (offset 0 to `limit`) when the cursor reads
    /// [`Reading::Whole`]; `buf` is then unused.
    whole: Option<Bytes>,
    valid: usize,
    buf_start: u64,
    current: Option<Current>,
    limits: ReadLimits,
    /// Sequence the next record must carry (`None` after `open_from`).
    expected_sequence: Option<u64>,
    last_timestamp: i64,
    records: u64,
}

impl SegmentCursor {
    /// Opens a segment, checks its header and positions the cursor after it.
    /// `limit` caps how far it reads (`None`: the file's length now).
    pub(crate) fn open(
        fs: &Arc<dyn WalFileSystem>,
        path: &Path,
        expected: Option<(usize, u64)>,
        limit: Option<u64>,
        limits: ReadLimits,
    ) -> Result<Self, PerCoreWalError> {
        Self::open_as(fs, path, expected, limit, limits, Reading::Buffered)
    }

    /// [`SegmentCursor::open`], reading the segment as `reading` says.
    pub(crate) fn open_as(
        fs: &Arc<dyn WalFileSystem>,
        path: &Path,
        expected: Option<(usize, u64)>,
        limit: Option<u64>,
        limits: ReadLimits,
        reading: Reading,
    ) -> Result<Self, PerCoreWalError> {
        let file = fs
            .open_read(path)
            .map_err(|e| PerCoreWalError::io("open segment", path, e))?;
        let file_len = file
            .len()
            .map_err(|e| PerCoreWalError::io("stat segment", path, e))?;
        let limit = limit.map_or(file_len, |l| l.min(file_len));
        let mut head = [0u8; HEADER_LEN];
        let n = read_full_at(&*file, &mut head, 0)
            .map_err(|e| PerCoreWalError::io("read segment header", path, e))?;
        let corrupt = |reason: String| PerCoreWalError::Corrupted {
            path: path.to_path_buf(),
            core_id: expected.map_or(usize::MAX, |e| e.0),
            segment: expected.map_or(u64::MAX, |e| e.1),
            position: 0,
            reason,
        };
        let header = SegmentHeader::decode(&head[..n]).map_err(corrupt)?;
        let core_id = u16::try_from(header.core_id)
            .map_err(|_| corrupt(format!("core id {} is out of range", header.core_id)))?;
        if let Some((core, segment)) = expected {
            if usize::from(core_id) != core || header.segment != segment {
                return Err(corrupt(format!(
                    "header says core {core_id} segment {}, the file name says core {core} segment {segment}",
                    header.segment
                )));
            }
        }
        let whole = if reading == Reading::Whole {
            Some(
                fs.read_whole(path, limit)
                    .map_err(|e| PerCoreWalError::io("read segment", path, e))?,
            )
        } else {
            None
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            header,
            core_id,
            limit,
            pos: HEADER_LEN as u64,
            buf: Vec::new(),
            valid: whole.as_ref().map_or(0, Bytes::len),
            buf_start: if whole.is_some() {
                0
            } else {
                HEADER_LEN as u64
            },
            whole,
            current: None,
            limits,
            expected_sequence: Some(header.first_sequence),
            last_timestamp: header.timestamp_floor,
            records: 0,
        })
    }

    /// Moves the cursor to `position` (a record boundary the caller knows);
    /// sequence continuity is checked again from the first record read there.
    pub(crate) fn seek(&mut self, position: u64) {
        self.pos = position.max(HEADER_LEN as u64);
        if self.whole.is_none() {
            self.valid = 0;
            self.buf_start = self.pos;
        }
        self.current = None;
        self.expected_sequence = None;
        self.last_timestamp = i64::MIN;
    }

    pub(crate) fn header(&self) -> &SegmentHeader {
        &self.header
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Offset just past the last record read (where the next one starts).
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The merge key of the current record, without decoding it again.
    pub(crate) fn current_key(&self) -> Option<OrderKey> {
        self.current?;
        Some(OrderKey {
            epoch: self.header.epoch,
            timestamp_ns: self.last_timestamp,
            core_id: self.core_id,
            sequence: self.expected_sequence?.wrapping_sub(1),
        })
    }

    /// Records read so far.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// The sequence number the next record would carry (valid after the
    /// first record or when the cursor started at the header).
    pub(crate) fn next_sequence(&self) -> Option<u64> {
        self.expected_sequence
    }

    pub(crate) fn last_timestamp(&self) -> i64 {
        self.last_timestamp
    }

    fn corrupt(&self, position: u64, reason: String) -> PerCoreWalError {
        PerCoreWalError::Corrupted {
            path: self.path.clone(),
            core_id: usize::from(self.core_id),
            segment: self.header.segment,
            position,
            reason,
        }
    }

    /// Makes `[pos, pos + n)` available in the buffer (n <= limit - pos).
    fn fill(&mut self, pos: u64, n: usize) -> Result<(), PerCoreWalError> {
        let end = pos + n as u64;
        let buf_end = self.buf_start + self.valid as u64;
        if pos >= self.buf_start && end <= buf_end {
            return Ok(());
        }
        if self.whole.is_some() {
            return Err(PerCoreWalError::io(
                "read segment",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("offset {end} is past the {buf_end} bytes read"),
                ),
            ));
        }
        // Keep the bytes from `pos` on, then read as much as fits.
        if pos >= self.buf_start && pos <= buf_end {
            let keep_from = usize::try_from(pos - self.buf_start)
                .unwrap_or(usize::MAX)
                .min(self.valid);
            self.buf.copy_within(keep_from..self.valid, 0);
            self.valid -= keep_from;
        } else {
            self.valid = 0;
        }
        self.buf_start = pos;
        let want = n.max(self.limits.read_buffer_bytes);
        let available = usize::try_from(self.limit - pos).unwrap_or(usize::MAX);
        let target = want.min(available).max(n);
        let have = self.valid;
        if target > have {
            if self.buf.len() < target {
                // Exact growth: doubling could allocate twice the largest record.
                self.buf.reserve_exact(target - self.buf.len());
                self.buf.resize(target, 0);
            }
            let mut filled = have;
            while filled < target {
                let read = self
                    .file
                    .read_at(&mut self.buf[filled..target], pos + filled as u64)
                    .map_err(|e| PerCoreWalError::io("read segment", &self.path, e))?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            self.valid = filled;
            if filled < n {
                return Err(PerCoreWalError::io(
                    "read segment",
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("file shrank below offset {end} while reading"),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads and validates the next record.
    ///
    /// Returns an error for corruption that is not a tail: a record whose
    /// checksum is right but whose contents are wrong, or invalid bytes that
    /// have a valid record after them.
    pub(crate) fn advance(&mut self) -> Result<Step, PerCoreWalError> {
        self.current = None;
        let pos = self.pos;
        let remaining = self.limit.saturating_sub(pos);
        if remaining == 0 {
            return Ok(Step::End);
        }
        let invalid = match self.check_frame(pos, remaining)? {
            Ok(current) => {
                let payload = &self.data()[current.payload_start..][..current.payload_len];
                let entry = match format::decode_payload(payload, self.core_id, self.header.epoch) {
                    Ok(entry) => entry,
                    Err(reason) => {
                        return Err(
                            self.corrupt(pos, format!("record has a valid checksum but {reason}"))
                        )
                    }
                };
                let (sequence, timestamp) = (entry.sequence, entry.timestamp_ns);
                if let Some(expected) = self.expected_sequence {
                    if sequence != expected {
                        return Err(PerCoreWalError::SequenceGap {
                            path: self.path.clone(),
                            core_id: usize::from(self.core_id),
                            expected,
                            actual: sequence,
                        });
                    }
                }
                if timestamp <= self.last_timestamp {
                    return Err(self.corrupt(
                        pos,
                        format!(
                            "timestamp {timestamp} does not increase (previous {})",
                            self.last_timestamp
                        ),
                    ));
                }
                self.expected_sequence = Some(sequence.wrapping_add(1));
                self.last_timestamp = timestamp;
                self.records += 1;
                self.pos = pos + (RECORD_HEADER_LEN + current.payload_len) as u64;
                self.current = Some(current);
                return Ok(Step::Record);
            }
            Err(invalid) => invalid,
        };
        if self.all_zero_from(pos)? {
            return Ok(Step::ZeroTail { position: pos });
        }
        match self.find_valid_record_after(pos)? {
            None => Ok(Step::Torn {
                position: pos,
                reason: invalid.describe(),
            }),
            Some(next) => Err(match invalid {
                Invalid::Checksum { stored, computed } => PerCoreWalError::ChecksumMismatch {
                    path: self.path.clone(),
                    core_id: usize::from(self.core_id),
                    segment: self.header.segment,
                    position: pos,
                    expected: stored,
                    actual: computed,
                },
                other => self.corrupt(
                    pos,
                    format!(
                        "{}; a valid record follows at offset {next}, so this is not a torn tail",
                        other.describe()
                    ),
                ),
            }),
        }
    }

    /// Checks the frame at `pos`: length bounds and checksum. On success the
    /// record is in the buffer.
    fn check_frame(
        &mut self,
        pos: u64,
        remaining: u64,
    ) -> Result<Result<Current, Invalid>, PerCoreWalError> {
        if remaining < RECORD_HEADER_LEN as u64 {
            return Ok(Err(Invalid::ShortFrame { remaining }));
        }
        self.fill(pos, RECORD_HEADER_LEN)?;
        let at = usize::try_from(pos - self.buf_start).unwrap_or(usize::MAX);
        let len = format::le_u32(&self.data()[at..at + 4]);
        let stored = format::le_u32(&self.data()[at + 4..at + 8]);
        if len == 0 {
            return Ok(Err(Invalid::ZeroLength));
        }
        if len > self.limits.max_record_bytes {
            return Ok(Err(Invalid::TooLong {
                len,
                max: self.limits.max_record_bytes,
            }));
        }
        if u64::from(len) > remaining - RECORD_HEADER_LEN as u64 {
            return Ok(Err(Invalid::PastEnd {
                len,
                available: remaining - RECORD_HEADER_LEN as u64,
            }));
        }
        let total = RECORD_HEADER_LEN + len as usize;
        self.fill(pos, total)?;
        let at = usize::try_from(pos - self.buf_start).unwrap_or(usize::MAX);
        let payload = &self.data()[at + RECORD_HEADER_LEN..at + total];
        let computed = format::record_crc(len, payload);
        if computed != stored {
            return Ok(Err(Invalid::Checksum { stored, computed }));
        }
        Ok(Ok(Current {
            payload_start: at + RECORD_HEADER_LEN,
            payload_len: len as usize,
        }))
    }

    /// Drops the segment's clean pages from the OS page cache (a hint; see
    /// [`WalFile::drop_cache`]).
    pub(crate) fn drop_cache(&self) -> std::io::Result<()> {
        self.file.drop_cache()
    }

    /// The current record (after [`Step::Record`]).
    pub(crate) fn current(&self) -> Option<EntryRef<'_>> {
        let c = self.current?;
        let payload = &self.data()[c.payload_start..][..c.payload_len];
        format::decode_payload(payload, self.core_id, self.header.epoch).ok()
    }

    /// The bytes the cursor reads records from: the whole segment from
    /// offset 0 after [`Reading::Whole`], else the read buffer
    /// (which starts at some offset and moves).
    pub(crate) fn data(&self) -> &[u8] {
        match &self.whole {
            Some(whole) => whole,
            None => &self.buf[..self.valid],
        }
    }

    /// The whole segment, if the cursor was opened with
    /// [`Reading::Whole`].
    pub(crate) fn whole(&self) -> Option<&Bytes> {
        self.whole.as_ref()
    }

    /// True if every byte from `pos` to the limit is zero.
    fn all_zero_from(&mut self, pos: u64) -> Result<bool, PerCoreWalError> {
        let span = usize::try_from(self.limit.saturating_sub(pos)).unwrap_or(usize::MAX);
        let mut chunk = vec![0u8; self.limits.read_buffer_bytes.clamp(4096, 1 << 20).min(span)];
        let mut at = pos;
        while at < self.limit {
            let n = usize::try_from(self.limit - at)
                .unwrap_or(usize::MAX)
                .min(chunk.len());
            let read = read_full_at(&*self.file, &mut chunk[..n], at)
                .map_err(|e| PerCoreWalError::io("read segment", &self.path, e))?;
            if chunk[..read].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            if read < n {
                break;
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Looks for a record that passes every check at an offset after `pos`.
    /// Memory: one window plus one record of at most `max_record_bytes`.
    fn find_valid_record_after(&self, pos: u64) -> Result<Option<u64>, PerCoreWalError> {
        const WINDOW: usize = 1 << 20;
        let io = |e| PerCoreWalError::io("read segment", &self.path, e);
        let span = usize::try_from(self.limit.saturating_sub(pos)).unwrap_or(usize::MAX);
        let mut window = vec![0u8; WINDOW.min(span)];
        let mut w_start = pos + 1;
        let mut w_len = 0usize;
        let mut record = Vec::new();
        // A record that really follows the bad bytes at `pos` continues this
        // segment's numbering: its sequence is at least the expected one and
        // at most one more per smallest possible record (18 bytes) in
        // between, and its timestamp is later. A record copied inside a
        // value (another log's, say) almost never fits that window.
        let follows = |sequence: u64, timestamp: i64, at: u64| {
            let window_ok = self.expected_sequence.is_none_or(|e| {
                sequence >= e && sequence <= e.saturating_add((at - pos) / MIN_RECORD_LEN)
            });
            window_ok && timestamp > self.last_timestamp
        };
        let mut q = pos + 1;
        while q + RECORD_HEADER_LEN as u64 <= self.limit {
            if q + RECORD_HEADER_LEN as u64 > w_start + w_len as u64 {
                w_start = q;
                let n = usize::try_from(self.limit - q)
                    .unwrap_or(usize::MAX)
                    .min(window.len());
                w_len = read_full_at(&*self.file, &mut window[..n], q).map_err(io)?;
                if w_len < RECORD_HEADER_LEN {
                    break;
                }
            }
            let at = usize::try_from(q - w_start).unwrap_or(usize::MAX);
            let len = format::le_u32(&window[at..at + 4]);
            let fits = len > 0
                && len <= self.limits.max_record_bytes
                && q + (RECORD_HEADER_LEN as u64) + u64::from(len) <= self.limit;
            // Cheap checks of the payload's first bytes before any checksum:
            // without them a torn multi-MiB record could cost a checksum of
            // up to max_record_bytes at every offset.
            let prefix_end =
                at + RECORD_HEADER_LEN + (len as usize).min(format::PAYLOAD_PREFIX_LEN);
            let plausible = !fits
                || prefix_end > w_len
                || format::payload_prefix(&window[at + RECORD_HEADER_LEN..prefix_end])
                    .is_some_and(|(sequence, timestamp)| follows(sequence, timestamp, q));
            if fits && plausible {
                let stored = format::le_u32(&window[at + 4..at + 8]);
                let end = at + RECORD_HEADER_LEN + len as usize;
                let payload: &[u8] = if end <= w_len {
                    &window[at + RECORD_HEADER_LEN..end]
                } else {
                    record.clear();
                    record.reserve_exact(len as usize);
                    record.resize(len as usize, 0);
                    let n = read_full_at(&*self.file, &mut record, q + RECORD_HEADER_LEN as u64)
                        .map_err(io)?;
                    &record[..n]
                };
                if payload.len() == len as usize
                    && format::record_crc(len, payload) == stored
                    && format::decode_payload(payload, self.core_id, self.header.epoch)
                        .is_ok_and(|e| follows(e.sequence, e.timestamp_ns, q))
                {
                    return Ok(Some(q));
                }
            }
            q += 1;
        }
        Ok(None)
    }
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, Copy)]
enum Invalid {
    ShortFrame { remaining: u64 },
    ZeroLength,
    TooLong { len: u32, max: u32 },
    PastEnd { len: u32, available: u64 },
    Checksum { stored: u32, computed: u32 },
}

impl Invalid {
    fn describe(self) -> String {
        match self {
            Self::ShortFrame { remaining } => format!(
                "incomplete record header: {remaining} bytes left, need {RECORD_HEADER_LEN}"
            ),
            Self::ZeroLength => "zero-length record".to_owned(),
            Self::TooLong { len, max } => {
                format!("record length {len} exceeds max_record_bytes {max}")
            }
            Self::PastEnd { len, available } => {
                format!("record length {len} but only {available} bytes follow")
            }
            Self::Checksum { stored, computed } => {
                format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(
    file: &dyn WalFile,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_round_trip() {
        let n = SegmentNaming::new("wal-{core_id}.log").unwrap();
        assert_eq!(n.file_name(3, 42), "wal-3-0000000042.log");
        assert_eq!(n.parse("wal-3-0000000042.log"), Some((3, 42)));
        assert_eq!(
            n.parse("wal-12-12345678901.log"),
            Some((12, 12_345_678_901))
        );
        assert_eq!(n.parse("wal-3.log"), None);
        assert_eq!(n.parse("wal--1.log"), None);
        assert_eq!(n.parse("wal-3-0000000042.log.tmp"), None);
        assert_eq!(n.parse("other"), None);
        assert!(SegmentNaming::new("no-placeholder").is_none());
    }
}
