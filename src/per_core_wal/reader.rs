//! The seed's single-segment reader, on format v1.

use std::path::Path;
use std::sync::Arc;

use super::entry::PerCoreWalEntry;
use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::manager::PerCoreWalConfig;
use super::segment::{SegmentCursor, SegmentNaming, Step};

/// Result of reading a WAL record.
#[derive(Debug)]
pub enum WalReadResult {
    /// Successfully read an entry.
    Entry(PerCoreWalEntry),
    /// End of the records: the end of the file, or a zero-filled
    /// (preallocated) tail, which reads as the end of the log.
    Eof,
    /// Invalid bytes at the end of the file with no valid record after them:
    /// what a crash in the middle of a write leaves. Tolerated only at the
    /// end of a core's newest segment.
    TornWrite {
        /// Position where the incomplete record starts.
        position: u64,
        /// Description of what was incomplete.
        reason: String,
    },
    /// A complete record with a wrong checksum and valid records after it:
    /// corruption, not a torn tail.
    ChecksumMismatch {
        /// Position of the corrupted record.
        position: u64,
        /// Checksum stored in the record.
        expected: u32,
        /// Checksum computed from the bytes read.
        actual: u32,
    },
    /// Other corruption: a record whose checksum is right but whose contents
    /// are wrong, or invalid bytes followed by a valid record.
    Corrupted {
        /// Position of the corrupted record.
        position: u64,
        /// Description of the corruption.
        reason: String,
    },
}

/// Reader of a single segment file, validating every record.
///
/// It allocates at most its read buffer plus one record of at most
/// `max_record_bytes`, whatever the bytes in the file.
#[derive(Debug)]
pub struct PerCoreWalReader {
    core_id: usize,
    cursor: SegmentCursor,
    /// The last corruption found, kept to turn into an error with context.
    last_error: Option<PerCoreWalError>,
    done: bool,
}

impl PerCoreWalReader {
    /// Opens a WAL segment for reading with the default limits, checking its
    /// header (and that it belongs to `core_id`).
    pub fn open(core_id: usize, path: &Path) -> Result<Self, PerCoreWalError> {
        Self::open_with(
            &(Arc::new(StdFileSystem) as Arc<dyn WalFileSystem>),
            &PerCoreWalConfig::default(),
            core_id,
            path,
        )
    }

    /// Opens a segment through `fs` with the limits of `config`.
    pub fn open_with(
        fs: &Arc<dyn WalFileSystem>,
        config: &PerCoreWalConfig,
        core_id: usize,
        path: &Path,
    ) -> Result<Self, PerCoreWalError> {
        // A file named like a segment of this core gets its number checked
        // against the header (and named in errors); other names are allowed.
        let expected = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| SegmentNaming::new(&config.segment_pattern)?.parse(n))
            .filter(|&(core, _)| core == core_id);
        let cursor = SegmentCursor::open(fs, path, expected, None, config.read_limits())?;
        if usize::try_from(cursor.header().core_id).ok() != Some(core_id) {
            return Err(PerCoreWalError::Corrupted {
                path: path.to_path_buf(),
                core_id,
                segment: cursor.header().segment,
                position: 0,
                reason: format!(
                    "segment belongs to core {}, not core {core_id}",
                    cursor.header().core_id
                ),
            });
        }
        Ok(Self {
            core_id,
            cursor,
            last_error: None,
            done: false,
        })
    }

    /// Opens a WAL segment and starts reading at `position`, which must be a
    /// record boundary (a position a writer or reader reported). Positions
    /// inside the header start after it.
    pub fn open_from(core_id: usize, path: &Path, position: u64) -> Result<Self, PerCoreWalError> {
        let mut reader = Self::open(core_id, path)?;
        reader.cursor.seek(position);
        Ok(reader)
    }

    /// Returns the core ID for this segment.
    #[must_use]
    pub fn core_id(&self) -> usize {
        self.core_id
    }

    /// The segment's number.
    #[must_use]
    pub fn segment_number(&self) -> u64 {
        self.cursor.header().segment
    }

    /// The epoch of every entry in this segment.
    #[must_use]
    pub fn segment_epoch(&self) -> u64 {
        self.cursor.header().epoch
    }

    /// Sequence number of the segment's first entry.
    #[must_use]
    pub fn first_sequence(&self) -> u64 {
        self.cursor.header().first_sequence
    }

    /// Position just past the last record read.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.cursor.position()
    }

    /// The file length when the reader opened it.
    #[must_use]
    pub fn file_len(&self) -> u64 {
        self.cursor.limit()
    }

    /// Reads the next entry with a detailed status. Corruption comes back as
    /// [`WalReadResult::ChecksumMismatch`] or [`WalReadResult::Corrupted`];
    /// only I/O errors and sequence gaps are `Err`.
    pub fn read_next(&mut self) -> Result<WalReadResult, PerCoreWalError> {
        match self.cursor.advance() {
            Ok(Step::Record) => {
                let entry = self.cursor.current().ok_or_else(|| {
                    PerCoreWalError::Deserialization("record vanished from the read buffer".into())
                })?;
                Ok(WalReadResult::Entry(entry.to_owned_entry()))
            }
            Ok(Step::End | Step::ZeroTail { .. }) => Ok(WalReadResult::Eof),
            Ok(Step::Torn { position, reason }) => {
                Ok(WalReadResult::TornWrite { position, reason })
            }
            Err(e) => {
                // Corruption is reported as a result; the error, with its
                // file and offset, is kept for `read_all`.
                let result = match &e {
                    PerCoreWalError::ChecksumMismatch {
                        position,
                        expected,
                        actual,
                        ..
                    } => WalReadResult::ChecksumMismatch {
                        position: *position,
                        expected: *expected,
                        actual: *actual,
                    },
                    PerCoreWalError::Corrupted {
                        position, reason, ..
                    } => WalReadResult::Corrupted {
                        position: *position,
                        reason: reason.clone(),
                    },
                    _ => return Err(e),
                };
                self.last_error = Some(e);
                Ok(result)
            }
        }
    }

    fn torn_error(&self, position: u64, reason: String) -> PerCoreWalError {
        PerCoreWalError::TornWrite {
            path: self.cursor.path().to_path_buf(),
            core_id: self.core_id,
            segment: self.cursor.header().segment,
            position,
            reason,
        }
    }

    fn take_error(&mut self) -> PerCoreWalError {
        self.last_error.take().unwrap_or_else(|| {
            PerCoreWalError::Deserialization("corruption reported without detail".into())
        })
    }

    /// Reads all entries of the segment.
    ///
    /// A torn tail ends the read (it may be a crash's leftover; use
    /// [`PerCoreWalReader::read_next`] to see it). Unlike the seed, corruption
    /// is an error naming the file and offset, never a silent stop.
    pub fn read_all(&mut self) -> Result<Vec<PerCoreWalEntry>, PerCoreWalError> {
        let mut entries = Vec::new();
        loop {
            match self.read_next()? {
                WalReadResult::Entry(entry) => entries.push(entry),
                WalReadResult::Eof | WalReadResult::TornWrite { .. } => return Ok(entries),
                WalReadResult::ChecksumMismatch { .. } | WalReadResult::Corrupted { .. } => {
                    return Err(self.take_error())
                }
            }
        }
    }

    /// Reads the entries with `epoch <= max_epoch` (a segment holds a single
    /// epoch, so this is all of them or none).
    pub fn read_up_to_epoch(
        &mut self,
        max_epoch: u64,
    ) -> Result<Vec<PerCoreWalEntry>, PerCoreWalError> {
        if self.segment_epoch() > max_epoch {
            return Ok(Vec::new());
        }
        self.read_all()
    }

    /// The offset just past the last valid record, where a torn or
    /// zero-filled tail starts (or the file's end). Corruption that is not a
    /// tail is an error.
    pub fn find_valid_end(&mut self) -> Result<u64, PerCoreWalError> {
        loop {
            match self.read_next()? {
                WalReadResult::Entry(_) => {}
                WalReadResult::Eof => return Ok(PerCoreWalReader::position(self)),
                WalReadResult::TornWrite { position, .. } => return Ok(position),
                WalReadResult::ChecksumMismatch { .. } | WalReadResult::Corrupted { .. } => {
                    return Err(self.take_error())
                }
            }
        }
    }
}

impl Iterator for PerCoreWalReader {
    type Item = Result<PerCoreWalEntry, PerCoreWalError>;

    /// Entries until the end; a torn tail or corruption is yielded once as an
    /// error, then the iteration ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.read_next() {
            Ok(WalReadResult::Entry(entry)) => return Some(Ok(entry)),
            Ok(WalReadResult::Eof) => {
                self.done = true;
                return None;
            }
            Ok(WalReadResult::TornWrite { position, reason }) => self.torn_error(position, reason),
            Ok(WalReadResult::ChecksumMismatch { .. } | WalReadResult::Corrupted { .. }) => {
                self.take_error()
            }
            Err(e) => e,
        };
        self.done = true;
        Some(Err(item))
    }
}
