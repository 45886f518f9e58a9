//! One core's log as a series of segments: the scan (and repair) done at open,
//! and [`CoreLogReader`], the strict reader that walks segments in order and
//! checks that they continue one another.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::{EntryRef, OrderKey};
use super::error::PerCoreWalError;
use super::format::{SegmentHeader, HEADER_LEN};
use super::fs::WalFileSystem;
use super::segment::{read_full_at, ReadLimits, Reading, SegmentCursor, SegmentFile, Step};

/// Bytes a repair removed from the WAL: a torn or zero-filled tail cut off a
/// core's newest segment, or a newest segment whose header never became
/// durable, removed whole. Recovery and [`PerCoreWalManager::open`] report
/// every one (and log it as a warning): nothing is dropped unsaid.
///
/// [`PerCoreWalManager::open`]: super::PerCoreWalManager::open
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The core whose log it was.
    pub core_id: usize,
    /// The segment file.
    pub path: PathBuf,
    /// First byte removed.
    pub from: u64,
    /// End of the bytes removed (the file's length before the repair).
    pub to: u64,
    /// Why the bytes were not records, and what was done.
    pub reason: String,
}

impl Repair {
    /// Logs the repair as a warning (shown by default): what was done
    /// (`what`), the file, the byte range and why.
    fn warn(&self, what: &'static str) {
        tracing::warn!(
            core = self.core_id, path = %self.path.display(), from = self.from, to = self.to,
            reason = %self.reason, "WAL repair: {what}"
        );
    }
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {}: {} bytes [{}, {}) of {}: {}",
            self.core_id,
            self.to - self.from,
            self.from,
            self.to,
            self.path.display(),
            self.reason
        )
    }
}

/// What the open-time scan of one core found (and repaired).
#[derive(Debug, Clone)]
pub(crate) struct CoreScan {
    /// Segments left after repair, oldest first.
    pub(crate) segments: Vec<SegmentFile>,
    /// Epoch of the newest segment.
    pub(crate) epoch: u64,
    /// Number the next segment gets.
    pub(crate) next_segment: u64,
    /// Sequence the next entry gets.
    pub(crate) next_sequence: u64,
    /// Timestamp of the last entry (or the newest header's floor).
    pub(crate) last_timestamp: i64,
    /// Bytes of all remaining segment files.
    pub(crate) total_bytes: u64,
    /// Valid end of the newest segment.
    pub(crate) valid_end: u64,
    /// Bytes cut off the newest segment's tail (torn or zero-filled).
    pub(crate) truncated_bytes: u64,
    /// The oldest remaining segment and the sequence its header says it
    /// starts at.
    pub(crate) oldest: (PathBuf, u64),
}

/// What the open-time scan of one core found, and every repair it made
/// (also when no segment is left).
#[derive(Debug, Clone)]
pub(crate) struct ScanOutcome {
    /// `None`: the core has no segment (left).
    pub(crate) scan: Option<CoreScan>,
    /// Byte ranges removed, oldest first.
    pub(crate) repairs: Vec<Repair>,
}

/// Reads a header without the cursor's buffering: the header or the reason
/// it is invalid, and the file's length.
pub(crate) fn read_header(
    fs: &Arc<dyn WalFileSystem>,
    path: &Path,
) -> Result<(Result<SegmentHeader, String>, u64), PerCoreWalError> {
    let file = fs
        .open_read(path)
        .map_err(|e| PerCoreWalError::io("open segment", path, e))?;
    let len = file
        .len()
        .map_err(|e| PerCoreWalError::io("stat segment", path, e))?;
    let mut head = [0u8; HEADER_LEN];
    let n = read_full_at(&*file, &mut head, 0)
        .map_err(|e| PerCoreWalError::io("read segment header", path, e))?;
    Ok((SegmentHeader::decode(&head[..n]), len))
}

/// True if every byte of the file is zero (a preallocated file).
fn file_all_zero(fs: &Arc<dyn WalFileSystem>, path: &Path) -> Result<bool, PerCoreWalError> {
    let file = fs
        .open_read(path)
        .map_err(|e| PerCoreWalError::io("open segment", path, e))?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = read_full_at(&*file, &mut chunk, at)
            .map_err(|e| PerCoreWalError::io("read segment", path, e))?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < chunk.len() {
            return Ok(true);
        }
        at += n as u64;
    }
}

/// Scans a core's segments: checks every header and that numbers, epochs and
/// first sequences line up, then reads the newest segment to its valid end.
/// With `repair`, a torn or zero-filled tail of the newest segment is
/// truncated (and synced), and a newest segment whose header never became
/// durable (no records can depend on it) is removed.
pub(crate) fn scan_core(
    fs: &Arc<dyn WalFileSystem>,
    dir: &Path,
    core_id: usize,
    mut segments: Vec<SegmentFile>,
    limits: ReadLimits,
    repair: bool,
) -> Result<ScanOutcome, PerCoreWalError> {
    let mut repairs = drop_unfinished_newest(fs, dir, core_id, &mut segments, repair)?;
    let Some(newest) = segments.last().cloned() else {
        return Ok(ScanOutcome {
            scan: None,
            repairs,
        });
    };

    // Headers of the older segments: cheap, and they catch a missing file.
    let mut previous: Option<(u64, SegmentHeader)> = None;
    let mut oldest_first_sequence = None;
    let mut total_bytes = 0u64;
    for seg in &segments {
        let (header, len) = read_header(fs, &seg.path)?;
        let header = header.map_err(|reason| PerCoreWalError::Corrupted {
            path: seg.path.clone(),
            core_id,
            segment: seg.segment,
            position: 0,
            reason,
        })?;
        check_header(seg, &header, previous.map(|p| p.1))?;
        oldest_first_sequence.get_or_insert(header.first_sequence);
        total_bytes += len;
        previous = Some((len, header));
    }

    let mut cursor = SegmentCursor::open(
        fs,
        &newest.path,
        Some((core_id, newest.segment)),
        None,
        limits,
    )?;
    let file_end = cursor.limit();
    let (valid_end, tail_reason) = loop {
        match cursor.advance()? {
            Step::Record => {}
            Step::End => break (cursor.position(), String::new()),
            Step::ZeroTail { position } => break (position, "zero-filled tail".to_owned()),
            Step::Torn { position, reason } => {
                if !repair {
                    return Err(PerCoreWalError::TornWrite {
                        path: newest.path.clone(),
                        core_id,
                        segment: newest.segment,
                        position,
                        reason,
                    });
                }
                break (position, format!("torn tail: {reason}"));
            }
        }
    };
    let truncated_bytes = file_end - valid_end;
    if truncated_bytes > 0 && repair {
        let mut file = fs
            .open_write(&newest.path)
            .map_err(|e| PerCoreWalError::io("open segment for repair", &newest.path, e))?;
        file.set_len(valid_end)
            .map_err(|e| PerCoreWalError::io("truncate torn tail", &newest.path, e))?;
        file.sync_data()
            .map_err(|e| PerCoreWalError::io("fdatasync truncated segment", &newest.path, e))?;
        total_bytes -= truncated_bytes;
        let cut = Repair {
            core_id,
            path: newest.path.clone(),
            from: valid_end,
            to: file_end,
            reason: format!("{tail_reason}; truncated"),
        };
        cut.warn("cut the tail of the newest segment");
        repairs.push(cut);
    }
    let header = *cursor.header();
    let oldest = (
        segments
            .first()
            .map_or_else(|| newest.path.clone(), |s| s.path.clone()),
        oldest_first_sequence.unwrap_or(header.first_sequence),
    );
    let scan = Some(CoreScan {
        epoch: header.epoch,
        next_segment: newest.segment + 1,
        next_sequence: cursor.next_sequence().unwrap_or(header.first_sequence),
        last_timestamp: cursor.last_timestamp(),
        segments,
        total_bytes,
        valid_end,
        truncated_bytes,
        oldest,
    });
    Ok(ScanOutcome { scan, repairs })
}

/// The first sequence of a core that a checkpoint covering it up to
/// `covered` does not hold (0 when nothing covers it): where its log must
/// start, and where its writer resumes.
#[must_use]
pub(crate) fn next_sequence_after(covered: Option<u64>) -> u64 {
    covered.map_or(0, |last| last + 1)
}

/// Checks that a core's log starts where nothing covers it: at or before
/// sequence `covered + 1` when a checkpoint covers the core up to `covered`
/// (the segments before may have been removed once it was committed), at
/// sequence 0 when no checkpoint covers it. A later start means whole
/// segments at the front are missing (deleted or lost) and their entries are
/// in neither the checkpoint nor the WAL: [`PerCoreWalError::MissingSegments`].
/// A core without segments, or whose segments hold no entry, is fine.
pub(crate) fn check_log_start(
    core_id: usize,
    scan: &CoreScan,
    covered: Option<u64>,
) -> Result<(), PerCoreWalError> {
    let (path, first) = &scan.oldest;
    let expected = next_sequence_after(covered);
    if *first > expected {
        return Err(PerCoreWalError::MissingSegments {
            path: path.clone(),
            core_id,
            expected,
            found: *first,
            covered,
        });
    }
    Ok(())
}

/// A crash while creating a segment can leave a file whose header is
/// incomplete. Nothing was acknowledged in it (the header is synced before
/// any record), so with `repair` it is removed; a longer file with a bad
/// header is corruption. Returns what was removed.
fn drop_unfinished_newest(
    fs: &Arc<dyn WalFileSystem>,
    dir: &Path,
    core_id: usize,
    segments: &mut Vec<SegmentFile>,
    repair: bool,
) -> Result<Vec<Repair>, PerCoreWalError> {
    let mut removed = Vec::new();
    while let Some(newest) = segments.last() {
        let (header, len) = read_header(fs, &newest.path)?;
        match header {
            Ok(_) => break,
            Err(reason) => {
                // Longer than a header and not all zero: records were synced
                // after a header that is now damaged. That is corruption.
                if len > HEADER_LEN as u64 && !file_all_zero(fs, &newest.path)? {
                    return Err(PerCoreWalError::Corrupted {
                        path: newest.path.clone(),
                        core_id,
                        segment: newest.segment,
                        position: 0,
                        reason,
                    });
                }
                if !repair {
                    return Err(PerCoreWalError::TornWrite {
                        path: newest.path.clone(),
                        core_id,
                        segment: newest.segment,
                        position: 0,
                        reason: format!("segment header never completed ({reason})"),
                    });
                }
                if newest.segment > 0 && segments.len() == 1 {
                    return Err(PerCoreWalError::Corrupted {
                        path: newest.path.clone(),
                        core_id,
                        segment: newest.segment,
                        position: 0,
                        reason: format!(
                            "the only segment of the core has no valid header ({reason}), \
                             so the next sequence number is unknown"
                        ),
                    });
                }
                fs.remove_file(&newest.path)
                    .map_err(|e| PerCoreWalError::io("remove torn segment", &newest.path, e))?;
                fs.sync_dir(dir)
                    .map_err(|e| PerCoreWalError::io("sync WAL directory", dir, e))?;
                let gone = Repair {
                    core_id,
                    path: newest.path.clone(),
                    from: 0,
                    to: len,
                    reason: format!("segment header never became durable ({reason}); file removed"),
                };
                gone.warn("removed the newest segment");
                removed.push(gone);
                segments.pop();
            }
        }
    }
    Ok(removed)
}

/// Checks a header against its file name and the previous segment's header.
fn check_header(
    seg: &SegmentFile,
    header: &SegmentHeader,
    previous: Option<SegmentHeader>,
) -> Result<(), PerCoreWalError> {
    let corrupt = |reason: String| PerCoreWalError::Corrupted {
        path: seg.path.clone(),
        core_id: seg.core_id,
        segment: seg.segment,
        position: 0,
        reason,
    };
    if usize::try_from(header.core_id).ok() != Some(seg.core_id) || header.segment != seg.segment {
        return Err(corrupt(format!(
            "header says core {} segment {}, the file name says core {} segment {}",
            header.core_id, header.segment, seg.core_id, seg.segment
        )));
    }
    if let Some(prev) = previous {
        if header.segment != prev.segment + 1 {
            return Err(corrupt(format!(
                "segment {} follows segment {}: segments in between are missing",
                header.segment, prev.segment
            )));
        }
        if header.epoch < prev.epoch {
            return Err(corrupt(format!(
                "epoch {} is older than the previous segment's epoch {}",
                header.epoch, prev.epoch
            )));
        }
        if header.first_sequence < prev.first_sequence {
            return Err(PerCoreWalError::SequenceGap {
                path: seg.path.clone(),
                core_id: seg.core_id,
                expected: prev.first_sequence,
                actual: header.first_sequence,
            });
        }
    }
    Ok(())
}

/// A segment to read and how far.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRead {
    pub(crate) file: SegmentFile,
    /// Read up to this offset (`None`: the whole file).
    pub(crate) limit: Option<u64>,
}

/// Strict reader of one core's segments, oldest first. Every record is
/// checked; between segments the numbers must be consecutive, the first
/// sequence must continue the previous segment and epochs must not go back.
/// Any torn or zero-filled tail is an error here: sealed segments were synced
/// whole, and the active one is read only up to its synced length.
#[derive(Debug)]
pub(crate) struct CoreLogReader {
    fs: Arc<dyn WalFileSystem>,
    core_id: usize,
    pending: VecDeque<SegmentRead>,
    cursor: Option<SegmentCursor>,
    limits: ReadLimits,
    /// (segment, next sequence, epoch) at the end of the last finished segment.
    previous: Option<(u64, u64, u64)>,
    last_timestamp: i64,
    bytes: u64,
    /// How each segment is read.
    reading: Reading,
    /// Drop each segment's pages from the page cache once read to its end.
    drop_cache: bool,
}

impl CoreLogReader {
    pub(crate) fn new(
        fs: Arc<dyn WalFileSystem>,
        core_id: usize,
        segments: Vec<SegmentRead>,
        limits: ReadLimits,
    ) -> Self {
        Self {
            fs,
            core_id,
            pending: segments.into(),
            cursor: None,
            limits,
            previous: None,
            last_timestamp: i64::MIN,
            bytes: 0,
            reading: Reading::Buffered,
            drop_cache: false,
        }
    }

    /// This reader, reading each segment in one piece: see
    /// [`CoreLogReader::segment_bytes`].
    pub(crate) fn whole_segments(mut self) -> Self {
        self.reading = Reading::Whole;
        self
    }

    /// With [`CoreLogReader::whole_segments`]: the current segment's number
    /// and its bytes from offset 0 (the current record's key and value are
    /// slices of them).
    pub(crate) fn segment_bytes(&self) -> Option<(u64, &bytes::Bytes)> {
        let cursor = self.cursor.as_ref()?;
        Some((cursor.header().segment, cursor.whole()?))
    }

    /// Drops each segment's pages from the OS page cache once it is read to
    /// its end (see [`MergeStream::drop_cache_after_read`]).
    pub(crate) fn set_drop_cache(&mut self, drop_cache: bool) {
        self.drop_cache = drop_cache;
    }

    /// Bytes of the segments finished so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The (segment, offset) just past the last record read, if any.
    pub(crate) fn position(&self) -> Option<(u64, u64)> {
        self.cursor
            .as_ref()
            .map(|c| (c.header().segment, c.position()))
    }

    /// Moves to the next record; `false` at the end of the last segment.
    pub(crate) fn advance(&mut self) -> Result<bool, PerCoreWalError> {
        loop {
            if self.cursor.is_none() {
                let Some(next) = self.pending.pop_front() else {
                    return Ok(false);
                };
                let cursor = SegmentCursor::open_as(
                    &self.fs,
                    &next.file.path,
                    Some((self.core_id, next.file.segment)),
                    next.limit,
                    self.limits,
                    self.reading,
                )?;
                self.check_continuity(&cursor)?;
                self.cursor = Some(cursor);
            }
            let cursor = self.cursor.as_mut().expect("set above");
            match cursor.advance()? {
                Step::Record => {
                    let ts = cursor.last_timestamp();
                    if ts <= self.last_timestamp {
                        return Err(PerCoreWalError::Corrupted {
                            path: cursor.path().to_path_buf(),
                            core_id: self.core_id,
                            segment: cursor.header().segment,
                            position: cursor.position(),
                            reason: format!(
                                "timestamp {ts} does not increase over the previous segment's {}",
                                self.last_timestamp
                            ),
                        });
                    }
                    self.last_timestamp = ts;
                    return Ok(true);
                }
                Step::End => {
                    let header = *cursor.header();
                    self.previous = Some((
                        header.segment,
                        cursor.next_sequence().unwrap_or(header.first_sequence),
                        header.epoch,
                    ));
                    self.bytes += cursor.position();
                    if self.drop_cache {
                        // Only a hint: a failure costs nothing but memory.
                        if let Err(e) = cursor.drop_cache() {
                            tracing::debug!(path = %cursor.path().display(), error = %e, "cannot drop a read segment's cached pages");
                        }
                    }
                    self.cursor = None;
                }
                Step::ZeroTail { position } => {
                    return Err(PerCoreWalError::Corrupted {
                        path: cursor.path().to_path_buf(),
                        core_id: self.core_id,
                        segment: cursor.header().segment,
                        position,
                        reason: "zero bytes where synced records should be".to_owned(),
                    })
                }
                Step::Torn { position, reason } => {
                    return Err(PerCoreWalError::Corrupted {
                        path: cursor.path().to_path_buf(),
                        core_id: self.core_id,
                        segment: cursor.header().segment,
                        position,
                        reason: format!("{reason} inside a sealed or synced range"),
                    })
                }
            }
        }
    }

    fn check_continuity(&self, cursor: &SegmentCursor) -> Result<(), PerCoreWalError> {
        let Some((prev_segment, next_sequence, prev_epoch)) = self.previous else {
            return Ok(());
        };
        let header = cursor.header();
        let corrupt = |reason: String| PerCoreWalError::Corrupted {
            path: cursor.path().to_path_buf(),
            core_id: self.core_id,
            segment: header.segment,
            position: 0,
            reason,
        };
        if header.segment != prev_segment + 1 {
            return Err(corrupt(format!(
                "segment {} follows segment {prev_segment}: segments in between are missing",
                header.segment
            )));
        }
        if header.first_sequence != next_sequence {
            return Err(PerCoreWalError::SequenceGap {
                path: cursor.path().to_path_buf(),
                core_id: self.core_id,
                expected: next_sequence,
                actual: header.first_sequence,
            });
        }
        if header.epoch < prev_epoch {
            return Err(corrupt(format!(
                "epoch {} is older than the previous segment's epoch {prev_epoch}",
                header.epoch
            )));
        }
        Ok(())
    }

    /// The merge key of the current record.
    pub(crate) fn current_key(&self) -> Option<OrderKey> {
        self.cursor.as_ref()?.current_key()
    }

    /// The current record (after `advance` returned `true`).
    pub(crate) fn current(&self) -> Option<EntryRef<'_>> {
        self.cursor.as_ref()?.current()
    }
}
