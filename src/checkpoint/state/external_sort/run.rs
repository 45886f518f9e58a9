//! Run files: a sorted buffer, or the output of a merge pass, written to
//! local disk and read back record by record by the merge.
//!
//! ## Run file format
//!
//! Local temporary files, written and read back by this process only:
//!
//! ```text
//! run    = record*          (count kept in memory; trailing bytes are an error)
//! record = key_len u32 LE | value_len u32 LE (u32::MAX: delete)
//!          | order u64 LE | epoch i64 LE | key | value
//! ```
//!
//! Records are sorted by key, one per key (the newest). On reading, a length
//! beyond the largest record the sorter saw is corruption, never an
//! allocation. A reader keeps its current record in one reused buffer.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use super::buffer::Entry;
use super::{io_error, ExternalSorter, OpView, DELETE_MARK};
use crate::arena::KeyHead;
use crate::checkpoint::CheckpointError;

/// Bytes of a record's fixed header in a run file.
const RECORD_HEADER: usize = 24;

/// A sorted run on local disk.
#[derive(Debug)]
pub(super) struct Run {
    /// The file.
    path: PathBuf,
    /// Records in it.
    records: u64,
}

impl ExternalSorter {
    /// The path of a new run file (making the directory at first use).
    pub(super) fn new_run_path(&mut self) -> Result<PathBuf, CheckpointError> {
        let dir = if let Some(dir) = self.dir.take() {
            dir
        } else {
            let parent = self
                .config
                .spill_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            tempfile::Builder::new()
                .prefix("walhouse-snapshot-sort-")
                .tempdir_in(&parent)
                .map_err(|e| io_error("create sort directory", &parent, e))?
        };
        let path = dir.path().join(format!("run-{:06}.bin", self.next_run));
        self.dir = Some(dir);
        self.next_run += 1;
        Ok(path)
    }
}

/// Writes `entries`, already sorted (newest per key), as a run at `path`:
/// the run and its bytes.
pub(super) fn write_sorted_run(
    entries: &[Entry],
    arena: &[u8],
    path: PathBuf,
    io_buffer_bytes: usize,
) -> Result<(Run, u64), CheckpointError> {
    let mut writer = RunWriter::create(path, io_buffer_bytes)?;
    for entry in entries {
        writer.write(&entry.view(arena))?;
    }
    writer.finish()
}

/// Writes a run file through a buffer.
pub(super) struct RunWriter {
    /// The buffered file.
    writer: BufWriter<File>,
    /// Its path.
    path: PathBuf,
    /// Records written.
    records: u64,
    /// Bytes written.
    bytes: u64,
}

impl RunWriter {
    /// Creates the file.
    pub(super) fn create(path: PathBuf, buffer_bytes: usize) -> Result<Self, CheckpointError> {
        let file = File::create(&path).map_err(|e| io_error("create sort run", &path, e))?;
        Ok(Self {
            writer: BufWriter::with_capacity(buffer_bytes, file),
            path,
            records: 0,
            bytes: 0,
        })
    }

    /// Appends a record. Lengths were checked when the operation was pushed.
    pub(super) fn write(&mut self, op: &OpView<'_>) -> Result<(), CheckpointError> {
        let too_long = || {
            io_error(
                "write sort run",
                &self.path,
                io::Error::new(io::ErrorKind::InvalidInput, "key or value of 4 GiB or more"),
            )
        };
        let key_len = u32::try_from(op.key.len()).map_err(|_| too_long())?;
        let value_len = match op.value {
            Some(v) => u32::try_from(v.len())
                .ok()
                .filter(|&l| l != DELETE_MARK)
                .ok_or_else(too_long)?,
            None => DELETE_MARK,
        };
        let mut header = [0_u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&key_len.to_le_bytes());
        header[4..8].copy_from_slice(&value_len.to_le_bytes());
        header[8..16].copy_from_slice(&op.order.to_le_bytes());
        header[16..24].copy_from_slice(&op.epoch.to_le_bytes());
        let value = op.value.unwrap_or_default();
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(op.key))
            .and_then(|()| self.writer.write_all(value))
            .map_err(|e| io_error("write sort run", &self.path, e))?;
        self.records += 1;
        self.bytes += (RECORD_HEADER + op.key.len() + value.len()) as u64;
        Ok(())
    }

    /// Flushes and closes the file (no fsync: it is temporary).
    pub(super) fn finish(self) -> Result<(Run, u64), CheckpointError> {
        let Self {
            writer,
            path,
            records,
            bytes,
        } = self;
        writer
            .into_inner()
            .map_err(|e| io_error("write sort run", &path, e.into_error()))?;
        Ok((Run { path, records }, bytes))
    }
}

/// A record read from a run: header fields, and key then value in a
/// buffer reused from record to record.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// Key, then value.
    data: Vec<u8>,
    /// [`KeyHead`] of the key.
    pub(super) head: KeyHead,
    /// Length of the key in `data`.
    key_len: usize,
    /// Whether it is a delete.
    delete: bool,
    /// Position in the changelog.
    order: u64,
    /// `wal_epoch`.
    epoch: i64,
}

impl Record {
    pub(super) fn view(&self) -> OpView<'_> {
        let (key, value) = self.data.split_at(self.key_len);
        OpView {
            head: self.head,
            key,
            value: (!self.delete).then_some(value),
            order: self.order,
            epoch: self.epoch,
        }
    }
}

/// Reads a run file back through a buffer.
pub(super) struct RunReader {
    /// The buffered file.
    reader: BufReader<File>,
    /// The run.
    run: Run,
    /// Records not read yet.
    remaining: u64,
    /// Largest key-and-value length allowed.
    max_record: usize,
    /// The record read last.
    pub(super) record: Record,
}

impl RunReader {
    /// Opens a run.
    pub(super) fn open(
        run: Run,
        buffer_bytes: usize,
        max_record: usize,
    ) -> Result<Self, CheckpointError> {
        let file = File::open(&run.path).map_err(|e| io_error("open sort run", &run.path, e))?;
        Ok(Self {
            reader: BufReader::with_capacity(buffer_bytes, file),
            remaining: run.records,
            run,
            max_record,
            record: Record::default(),
        })
    }

    /// Reads the next record into `self.record`; false after the last (and
    /// the file is removed).
    pub(super) fn advance(&mut self) -> Result<bool, CheckpointError> {
        let path = &self.run.path;
        if self.remaining == 0 {
            let trailing = self
                .reader
                .fill_buf()
                .map_err(|e| io_error("read sort run", path, e))?;
            if !trailing.is_empty() {
                let e = io::Error::new(io::ErrorKind::InvalidData, "bytes after the last record");
                return Err(io_error("read sort run", path, e));
            }
            // Free the disk space now; the directory goes at the end anyway.
            let _ = std::fs::remove_file(path);
            return Ok(false);
        }
        read_record(&mut self.reader, self.max_record, &mut self.record)
            .map_err(|e| io_error("read sort run", path, e))?;
        self.remaining -= 1;
        Ok(true)
    }
}

/// Reads one record into `record` (reusing its buffer); lengths past
/// `max_record` are corruption.
fn read_record(reader: &mut impl Read, max_record: usize, record: &mut Record) -> io::Result<()> {
    let mut header = [0_u8; RECORD_HEADER];
    reader.read_exact(&mut header)?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let eight = |at: usize| {
        let mut b = [0_u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        b
    };
    let key_len = word(0) as usize;
    let value_len = word(4);
    let (delete, value_len) = if value_len == DELETE_MARK {
        (true, 0)
    } else {
        (false, value_len as usize)
    };
    let len = key_len
        .checked_add(value_len)
        .filter(|&l| l <= max_record)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record of {key_len} + {value_len} bytes, more than the {max_record} written"
                ),
            )
        })?;
    record.data.resize(len, 0);
    reader.read_exact(&mut record.data)?;
    record.key_len = key_len;
    record.delete = delete;
    record.order = u64::from_le_bytes(eight(8));
    record.epoch = i64::from_le_bytes(eight(16));
    record.head = KeyHead::of(&record.data[..key_len]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_run_records_are_errors_not_allocations() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes()[..]); // key_len 4 GiB
        bytes.extend_from_slice(&3_u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let err = read_record(&mut bytes.as_slice(), 1_000, &mut Record::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Truncated payload.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2_u32.to_le_bytes());
        bytes.extend_from_slice(&2_u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(b"ab");
        let err = read_record(&mut bytes.as_slice(), 1_000, &mut Record::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
