//! External merge sort of delta operations, bounded in memory: plain
//! synchronous code (run on a blocking thread), tested on its own.
//!
//! ## Buffer and accounting
//!
//! Operations are not allocated one by one. Their keys and values are
//! appended to one byte arena, and each operation is a fixed 40-byte entry
//! (the key's first 8 bytes as a big-endian integer, offsets, lengths,
//! order, epoch) in one vector. Sorting moves entries only and compares the
//! 8-byte prefixes first, reaching into the arena only for keys that share
//! a prefix. Both allocations are kept across spills, so a sort allocates
//! its buffer once instead of once per operation.
//!
//! The accounted bytes are the capacities of these allocations. There are
//! two such buffers, each within half of the budget less one I/O buffer (the
//! spill writer's): when the one being filled is full, a background thread
//! sorts it and writes it as a run while the other one fills. Spilling thus
//! no longer stops the input (the changelog being written feeds the sort,
//! and it waited for every spill). A buffer waits only when the other one is
//! still being written. An operation alone larger than a buffer's share is
//! still accepted, alone in the buffer.
//!
//! At the end, the last buffer is merged from memory with the runs when it
//! fits beside their read buffers, instead of being written and read back.
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

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;

/// Bytes of a record's fixed header in a run file.
const RECORD_HEADER: usize = 24;
/// `value_len` of a delete in a run file and in an entry.
const DELETE_MARK: u32 = u32::MAX;
/// Smallest growth of the entry vector, in entries.
const MIN_SLOTS: usize = 16;
/// Smallest growth of the arena, in bytes.
const MIN_ARENA: usize = 1 << 10;

/// The first 8 bytes of `key` as a big-endian integer (zero-padded): a
/// smaller prefix means a smaller key; equal prefixes say nothing.
fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// An operation in the buffer; its key and value live in the arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// [`key_prefix`] of the key.
    prefix: u64,
    /// Offset of the key in the arena (the value follows it).
    offset: usize,
    /// Length of the key.
    key_len: u32,
    /// Length of the value; [`DELETE_MARK`] for a delete.
    value_len: u32,
    /// Position in the changelog: larger is newer.
    order: u64,
    /// `wal_epoch` of the operation.
    epoch: i64,
}

/// Accounted bytes of one entry.
const ENTRY: usize = size_of::<Entry>();

impl Entry {
    /// The operation, with its bytes from `arena`.
    fn view<'a>(&self, arena: &'a [u8]) -> OpView<'a> {
        let key_end = self.offset + self.key_len as usize;
        OpView {
            prefix: self.prefix,
            key: &arena[self.offset..key_end],
            value: (self.value_len != DELETE_MARK)
                .then(|| &arena[key_end..key_end + self.value_len as usize]),
            order: self.order,
            epoch: self.epoch,
        }
    }
}

/// A `put` or `delete`, borrowed from the sorter's buffer or a run reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpView<'a> {
    /// [`key_prefix`] of `key`.
    prefix: u64,
    /// The key.
    pub(crate) key: &'a [u8],
    /// The value of a put; `None` for a delete.
    pub(crate) value: Option<&'a [u8]>,
    /// Position in the changelog: larger is newer.
    pub(crate) order: u64,
    /// `wal_epoch` of the operation.
    pub(crate) epoch: i64,
}

impl OpView<'_> {
    /// Sorts by key, newest first for equal keys.
    fn sort_cmp(&self, other: &OpView<'_>) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key.cmp(other.key))
            .then(other.order.cmp(&self.order))
    }

    /// Whether both have the same key.
    fn same_key(&self, other: &OpView<'_>) -> bool {
        self.prefix == other.prefix && self.key == other.key
    }
}

/// Memory budget of the sort and how it is split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortConfig {
    /// Total budget in bytes (`sort_memory_bytes`).
    pub(crate) budget: usize,
    /// Size of each run file's read or write buffer.
    pub(crate) io_buffer_bytes: usize,
    /// Most runs merged at once: their read buffers plus one write
    /// buffer fit in the budget.
    pub(crate) fan_in: usize,
    /// Directory for run files (`None`: the system's temporary directory).
    pub(crate) spill_dir: Option<PathBuf>,
}

impl SortConfig {
    /// The split of `budget`: I/O buffers of budget/64 (4 KiB to 64 KiB,
    /// at most a quarter of the budget) and as many runs merged at once as
    /// fit (2 to 64). 64 KiB, not more: a merge of 50 runs read through
    /// 256 KiB buffers (12.5 MiB) spent 38 % of its time copying records
    /// out of buffers the cache no longer held; with 64 KiB buffers the
    /// first checkpoint of 10 M entries took 12 % less time.
    pub(crate) fn for_budget(budget: usize) -> Self {
        let io_buffer_bytes = (budget / 64)
            .clamp(4 << 10, 64 << 10)
            .min(budget / 4)
            .max(512);
        let fan_in = (budget / io_buffer_bytes).saturating_sub(1).clamp(2, 64);
        Self {
            budget,
            io_buffer_bytes,
            fan_in,
            spill_dir: None,
        }
    }

    /// Bytes each of the two in-memory buffers may hold: half of the budget
    /// less the spill writer's buffer.
    fn buffer_limit(&self) -> usize {
        self.budget.saturating_sub(self.io_buffer_bytes) / 2
    }
}

/// Figures of a sort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SortStats {
    /// Operations pushed.
    pub(crate) ops: u64,
    /// Sorted runs spilled from memory.
    pub(crate) runs_spilled: u64,
    /// Runs written by intermediate merge passes.
    pub(crate) runs_merged: u64,
    /// Intermediate merge passes (more runs than `fan_in`).
    pub(crate) merge_passes: u64,
    /// Bytes written to run files, all passes.
    pub(crate) spilled_bytes: u64,
    /// High-water mark of the buffer's accounted bytes.
    pub(crate) max_buffered_bytes: usize,
}

/// A sorted run on local disk.
#[derive(Debug)]
struct Run {
    /// The file.
    path: PathBuf,
    /// Records in it.
    records: u64,
}

/// A local-file error.
fn io_error(op: &'static str, path: &Path, source: io::Error) -> CheckpointError {
    CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A buffer's entries and arena.
type Buffer = (Vec<Entry>, Vec<u8>);

/// What a spill thread gives back: the buffer's emptied allocations, and
/// the run with its bytes.
type SpillOutcome = (Buffer, Result<(Run, u64), CheckpointError>);

/// A buffer being sorted and written as a run by a background thread. The
/// thread gives back the buffer's allocations (emptied) with the run.
struct SpillJob {
    handle: std::thread::JoinHandle<SpillOutcome>,
    /// The run file's path, for errors.
    path: PathBuf,
    /// Accounted bytes of the buffer it holds.
    bytes: usize,
}

/// Accumulates operations and spills sorted runs past the budget.
pub(crate) struct ExternalSorter {
    /// Budget and buffer sizes.
    config: SortConfig,
    /// Operations not yet spilled.
    entries: Vec<Entry>,
    /// Their keys and values.
    arena: Vec<u8>,
    /// The other buffer, while a background thread spills it.
    spilling: Option<SpillJob>,
    /// The other buffer's allocations, empty, once its spill is done.
    spare: Option<Buffer>,
    /// Runs spilled so far, oldest first.
    runs: Vec<Run>,
    /// Directory of the run files, made at the first spill; removed
    /// with its files when dropped.
    dir: Option<tempfile::TempDir>,
    /// Runs created, for file names.
    next_run: u64,
    /// Largest key-and-value length seen: the read-back limit.
    max_record: usize,
    /// Figures.
    stats: SortStats,
}

impl ExternalSorter {
    /// A sorter within `config`'s budget.
    pub(crate) fn new(config: SortConfig) -> Self {
        Self {
            config,
            entries: Vec::new(),
            arena: Vec::new(),
            spilling: None,
            spare: None,
            runs: Vec::new(),
            dir: None,
            next_run: 0,
            max_record: 0,
            stats: SortStats::default(),
        }
    }

    /// Accounted bytes of both buffers.
    fn accounted(&self) -> usize {
        let other = match (&self.spilling, &self.spare) {
            (Some(job), _) => job.bytes,
            (None, Some((entries, arena))) => entries.capacity() * ENTRY + arena.capacity(),
            (None, None) => 0,
        };
        self.entries.capacity() * ENTRY + self.arena.capacity() + other
    }

    /// Makes room for one more entry of `bytes` key and value bytes within
    /// the limit, growing the allocations by a quarter or more at a time;
    /// false if that does not fit.
    fn reserve(&mut self, bytes: usize) -> bool {
        let limit = self.config.buffer_limit();
        let (cur_e, cur_a) = (self.entries.capacity(), self.arena.capacity());
        let need_e = self.entries.len() + 1;
        let need_a = self.arena.len().saturating_add(bytes);
        let (grow_e, grow_a) = (need_e > cur_e, need_a > cur_a);
        if !grow_e && !grow_a {
            return true;
        }
        let min_e = cur_e.max(need_e);
        let min_a = cur_a.max(need_a);
        let Some(mut spare) = min_e
            .checked_mul(ENTRY)
            .and_then(|e| e.checked_add(min_a))
            .and_then(|used| limit.checked_sub(used))
        else {
            return false;
        };
        let mut new_e = cur_e;
        if grow_e {
            let want = (cur_e * 2).max(MIN_SLOTS).saturating_sub(min_e);
            let room = if grow_a { spare / 2 } else { spare };
            let extra = want.min(room / ENTRY);
            // Growing by a sliver only to grow again soon: spill instead.
            if cur_e > 0 && min_e + extra < cur_e + cur_e / 4 {
                return false;
            }
            spare -= extra * ENTRY;
            new_e = min_e + extra;
        }
        let mut new_a = cur_a;
        if grow_a {
            let want = (cur_a * 2).max(MIN_ARENA).saturating_sub(min_a);
            let extra = want.min(spare);
            if cur_a > 0 && min_a + extra < cur_a + cur_a / 4 && !self.arena.is_empty() {
                return false;
            }
            new_a = min_a + extra;
        }
        self.entries.reserve_exact(new_e - self.entries.len());
        self.arena.reserve_exact(new_a - self.arena.len());
        true
    }

    /// Adds a put of `value` at `key`, spilling the buffer first if it
    /// would not fit.
    pub(crate) fn push_put(
        &mut self,
        key: &[u8],
        value: &[u8],
        order: u64,
        epoch: i64,
    ) -> Result<(), CheckpointError> {
        self.push(key, Some(value), order, epoch)
    }

    /// Adds a delete of `key`, spilling the buffer first if it would not
    /// fit.
    pub(crate) fn push_delete(
        &mut self,
        key: &[u8],
        order: u64,
        epoch: i64,
    ) -> Result<(), CheckpointError> {
        self.push(key, None, order, epoch)
    }

    fn push(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        order: u64,
        epoch: i64,
    ) -> Result<(), CheckpointError> {
        let too_long = || {
            let path = self
                .dir
                .as_ref()
                .map_or_else(PathBuf::new, |d| d.path().to_path_buf());
            io_error(
                "sort a delta operation",
                &path,
                io::Error::new(io::ErrorKind::InvalidInput, "key or value of 4 GiB or more"),
            )
        };
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let value_len = match value {
            Some(v) => u32::try_from(v.len())
                .ok()
                .filter(|&l| l != DELETE_MARK)
                .ok_or_else(too_long)?,
            None => DELETE_MARK,
        };
        let bytes = key.len() + value.map_or(0, <[u8]>::len);
        if !self.reserve(bytes) {
            if !self.entries.is_empty() {
                self.spill()?;
            }
            if !self.reserve(bytes) {
                // An operation too large for the budget even alone: release
                // the buffers and take it alone.
                self.entries = Vec::with_capacity(1);
                self.arena = Vec::with_capacity(bytes);
            }
        }
        let offset = self.arena.len();
        self.arena.extend_from_slice(key);
        if let Some(v) = value {
            self.arena.extend_from_slice(v);
        }
        self.entries.push(Entry {
            prefix: key_prefix(key),
            offset,
            key_len,
            value_len,
            order,
            epoch,
        });
        self.max_record = self.max_record.max(bytes);
        self.stats.ops += 1;
        self.stats.max_buffered_bytes = self.stats.max_buffered_bytes.max(self.accounted());
        Ok(())
    }

    /// The path of a new run file (making the directory at first use).
    fn new_run_path(&mut self) -> Result<PathBuf, CheckpointError> {
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

    /// Hands the buffer to a background thread that sorts it, keeps the
    /// newest operation per key and writes it as a run; input goes on into
    /// the other buffer. Waits first for the previous spill, if any, whose
    /// emptied allocations become the buffer to fill.
    fn spill(&mut self) -> Result<(), CheckpointError> {
        self.wait_for_spill()?;
        let path = self.new_run_path()?;
        let (fill_entries, fill_arena) = self.spare.take().unwrap_or_default();
        let mut entries = std::mem::replace(&mut self.entries, fill_entries);
        let mut arena = std::mem::replace(&mut self.arena, fill_arena);
        let bytes = entries.capacity() * ENTRY + arena.capacity();
        let io_bytes = self.config.io_buffer_bytes;
        let thread_path = path.clone();
        let handle = std::thread::Builder::new()
            .name("walhouse-sort-spill".into())
            .spawn(move || {
                sort_newest_per_key(&mut entries, &arena);
                let result = write_sorted_run(&entries, &arena, thread_path, io_bytes);
                entries.clear();
                arena.clear();
                ((entries, arena), result)
            })
            .map_err(|e| io_error("start the thread writing sort run", &path, e))?;
        self.spilling = Some(SpillJob {
            handle,
            path,
            bytes,
        });
        Ok(())
    }

    /// Waits for the background spill, if any: its run joins the others and
    /// its emptied allocations become the spare buffer.
    fn wait_for_spill(&mut self) -> Result<(), CheckpointError> {
        let Some(job) = self.spilling.take() else {
            return Ok(());
        };
        let (buffer, result) = job.handle.join().map_err(|_| {
            CheckpointError::Task(format!(
                "the thread writing sort run {} panicked",
                job.path.display()
            ))
        })?;
        self.spare = Some(buffer);
        let (run, bytes) = result?;
        self.add_spilled_run(run, bytes);
        Ok(())
    }

    /// A run written from a buffer joins the others.
    fn add_spilled_run(&mut self, run: Run, bytes: u64) {
        self.runs.push(run);
        self.stats.runs_spilled += 1;
        self.stats.spilled_bytes += bytes;
    }

    /// Ends the input: the operations sorted by key, newest per key.
    /// Merges runs in passes until at most `fan_in` remain.
    pub(crate) fn finish(mut self) -> Result<SortedOps, CheckpointError> {
        let mut entries = std::mem::take(&mut self.entries);
        let arena = std::mem::take(&mut self.arena);
        // Sorted while a background spill may still be writing its run.
        sort_newest_per_key(&mut entries, &arena);
        self.wait_for_spill()?;
        self.spare = None;
        // The last buffer stays in memory for the merge if it fits in the
        // budget beside the runs' read buffers.
        let beside_runs = self
            .runs
            .len()
            .saturating_mul(self.config.io_buffer_bytes)
            .saturating_add(entries.capacity() * ENTRY + arena.capacity());
        if self.runs.is_empty()
            || (self.runs.len() < self.config.fan_in && beside_runs <= self.config.budget)
        {
            let memory = Source::Memory {
                entries,
                arena,
                next: 0,
            };
            let runs = std::mem::take(&mut self.runs);
            let mut sources = self.open_runs(runs)?;
            sources.push(memory);
            return Ok(SortedOps {
                merger: Merger::new(sources)?,
                _dir: self.dir.take(),
                stats: self.stats,
            });
        }
        if !entries.is_empty() {
            let path = self.new_run_path()?;
            let (run, bytes) =
                write_sorted_run(&entries, &arena, path, self.config.io_buffer_bytes)?;
            self.add_spilled_run(run, bytes);
        }
        // The merge needs only the runs' read buffers.
        drop((entries, arena));
        while self.runs.len() > self.config.fan_in {
            self.stats.merge_passes += 1;
            let runs = std::mem::take(&mut self.runs);
            let mut groups = runs.into_iter().peekable();
            while groups.peek().is_some() {
                let group: Vec<Run> = groups.by_ref().take(self.config.fan_in).collect();
                let run = if group.len() == 1 {
                    group
                        .into_iter()
                        .next()
                        .ok_or_else(|| CheckpointError::Task("empty merge group".into()))?
                } else {
                    self.merge_group(group)?
                };
                self.runs.push(run);
            }
        }
        let runs = std::mem::take(&mut self.runs);
        let sources = self.open_runs(runs)?;
        Ok(SortedOps {
            merger: Merger::new(sources)?,
            _dir: self.dir.take(),
            stats: self.stats,
        })
    }

    /// Opens runs for reading.
    fn open_runs(&self, runs: Vec<Run>) -> Result<Vec<Source>, CheckpointError> {
        runs.into_iter()
            .map(|run| {
                RunReader::open(run, self.config.io_buffer_bytes, self.max_record).map(Source::Run)
            })
            .collect()
    }

    /// Merges a group of runs into one.
    fn merge_group(&mut self, group: Vec<Run>) -> Result<Run, CheckpointError> {
        let mut merger = Merger::new(self.open_runs(group)?)?;
        let path = self.new_run_path()?;
        let mut writer = RunWriter::create(path, self.config.io_buffer_bytes)?;
        while let Some(op) = merger.current() {
            writer.write(&op)?;
            merger.advance()?;
        }
        let (run, bytes) = writer.finish()?;
        self.stats.runs_merged += 1;
        self.stats.spilled_bytes += bytes;
        Ok(run)
    }
}

impl Drop for ExternalSorter {
    /// Waits for a background spill, so that its thread is done with the
    /// run directory before the directory is removed.
    fn drop(&mut self) {
        if let Some(job) = self.spilling.take() {
            let _ = job.handle.join();
        }
    }
}

/// Writes `entries`, already sorted (newest per key), as a run at `path`:
/// the run and its bytes.
fn write_sorted_run(
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

/// Sorts entries by key (newest first for equal keys) and keeps the newest
/// of each key.
fn sort_newest_per_key(entries: &mut Vec<Entry>, arena: &[u8]) {
    // Prefixes decide almost every comparison; the keys (bounds-checked
    // slices of the arena) are looked at only when they are equal.
    entries.sort_unstable_by(|a, b| {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| a.view(arena).sort_cmp(&b.view(arena)))
    });
    // `dedup_by` keeps the first of equal neighbours: the newest.
    entries.dedup_by(|later, kept| later.view(arena).same_key(&kept.view(arena)));
}

/// Writes a run file through a buffer.
struct RunWriter {
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
    fn create(path: PathBuf, buffer_bytes: usize) -> Result<Self, CheckpointError> {
        let file = File::create(&path).map_err(|e| io_error("create sort run", &path, e))?;
        Ok(Self {
            writer: BufWriter::with_capacity(buffer_bytes, file),
            path,
            records: 0,
            bytes: 0,
        })
    }

    /// Appends a record. Lengths were checked when the operation was pushed.
    fn write(&mut self, op: &OpView<'_>) -> Result<(), CheckpointError> {
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
    fn finish(self) -> Result<(Run, u64), CheckpointError> {
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
struct Record {
    /// Key, then value.
    data: Vec<u8>,
    /// [`key_prefix`] of the key.
    prefix: u64,
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
    fn view(&self) -> OpView<'_> {
        let (key, value) = self.data.split_at(self.key_len);
        OpView {
            prefix: self.prefix,
            key,
            value: (!self.delete).then_some(value),
            order: self.order,
            epoch: self.epoch,
        }
    }
}

/// Reads a run file back through a buffer.
struct RunReader {
    /// The buffered file.
    reader: BufReader<File>,
    /// The run.
    run: Run,
    /// Records not read yet.
    remaining: u64,
    /// Largest key-and-value length allowed.
    max_record: usize,
    /// The record read last.
    record: Record,
}

impl RunReader {
    /// Opens a run.
    fn open(run: Run, buffer_bytes: usize, max_record: usize) -> Result<Self, CheckpointError> {
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
    fn advance(&mut self) -> Result<bool, CheckpointError> {
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
    record.prefix = key_prefix(&record.data[..key_len]);
    Ok(())
}

/// Where a merge takes operations from, each sorted by key, one per key.
enum Source {
    /// The sorted in-memory buffer.
    Memory {
        /// Sorted entries, one per key.
        entries: Vec<Entry>,
        /// Their bytes.
        arena: Vec<u8>,
        /// The entry after the current one (0: none read yet).
        next: usize,
    },
    /// A run file.
    Run(RunReader),
}

impl Source {
    /// Moves to the next operation; false past the last.
    fn advance(&mut self) -> Result<bool, CheckpointError> {
        match self {
            Self::Memory { entries, next, .. } => {
                *next += 1;
                Ok(*next <= entries.len())
            }
            Self::Run(reader) => reader.advance(),
        }
    }

    /// The current operation's key prefix (after an `advance` that
    /// returned true).
    fn prefix(&self) -> u64 {
        match self {
            Self::Memory { entries, next, .. } => entries[*next - 1].prefix,
            Self::Run(reader) => reader.record.prefix,
        }
    }

    /// The current operation (after an `advance` that returned true).
    fn view(&self) -> OpView<'_> {
        match self {
            Self::Memory {
                entries,
                arena,
                next,
            } => entries[*next - 1].view(arena),
            Self::Run(reader) => reader.record.view(),
        }
    }
}

/// K-way merge of sources: the newest operation of each key, in key order.
/// A binary min-heap of source indices, ordered by their current operation;
/// the source of the operation being output is held out of the heap. Each
/// heap slot carries its operation's key prefix, so most comparisons are
/// of two integers in the heap itself (the keys are read only when the
/// prefixes are equal).
struct Merger {
    /// The sources.
    sources: Vec<Source>,
    /// (key prefix of the current operation, index) of the sources with a
    /// current operation, as a heap.
    heap: Vec<(u64, usize)>,
    /// The source whose current operation is the output.
    current: Option<usize>,
}

impl Merger {
    /// Starts a merge, positioned at the first output.
    fn new(mut sources: Vec<Source>) -> Result<Self, CheckpointError> {
        let mut heap = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            if source.advance()? {
                heap.push((source.prefix(), i));
            }
        }
        let mut merger = Self {
            sources,
            heap,
            current: None,
        };
        for i in (0..merger.heap.len() / 2).rev() {
            merger.sift_down(i);
        }
        merger.select()?;
        Ok(merger)
    }

    /// Whether heap slot `a`'s operation sorts before slot `b`'s.
    fn less(&self, a: usize, b: usize) -> bool {
        let ((prefix_a, a), (prefix_b, b)) = (self.heap[a], self.heap[b]);
        if prefix_a != prefix_b {
            return prefix_a < prefix_b;
        }
        self.sources[a].view().sort_cmp(&self.sources[b].view()) == Ordering::Less
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && self.less(l, smallest) {
                smallest = l;
            }
            if r < n && self.less(r, smallest) {
                smallest = r;
            }
            if smallest == i {
                return;
            }
            self.heap.swap(i, smallest);
            i = smallest;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                return;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    /// Removes and returns the top source.
    fn pop(&mut self) -> Option<usize> {
        if self.heap.is_empty() {
            return None;
        }
        let (_, top) = self.heap.swap_remove(0);
        if !self.heap.is_empty() {
            self.sift_down(0);
        }
        Some(top)
    }

    /// Takes the smallest operation as the output, moving the sources
    /// that hold older operations of the same key past them.
    fn select(&mut self) -> Result<(), CheckpointError> {
        self.current = self.pop();
        let Some(top) = self.current else {
            return Ok(());
        };
        let top_prefix = self.sources[top].prefix();
        while let Some(&(prefix, other)) = self.heap.first() {
            if prefix != top_prefix
                || !self.sources[other]
                    .view()
                    .same_key(&self.sources[top].view())
            {
                break;
            }
            if self.sources[other].advance()? {
                self.heap[0].0 = self.sources[other].prefix();
                self.sift_down(0);
            } else {
                self.pop();
            }
        }
        Ok(())
    }

    /// The output operation; `None` when the merge is done.
    fn current(&self) -> Option<OpView<'_>> {
        self.current.map(|s| self.sources[s].view())
    }

    /// Moves to the next key's newest operation.
    fn advance(&mut self) -> Result<(), CheckpointError> {
        if let Some(source) = self.current.take() {
            if self.sources[source].advance()? {
                self.heap.push((self.sources[source].prefix(), source));
                self.sift_up(self.heap.len() - 1);
            }
        }
        self.select()
    }
}

/// The sorted operations: the newest per key (deletes included), in key
/// order, as a cursor. Holds the run files until dropped.
pub(crate) struct SortedOps {
    /// The final merge.
    merger: Merger,
    /// The run files' directory, removed when dropped.
    _dir: Option<tempfile::TempDir>,
    /// Figures.
    stats: SortStats,
}

impl SortedOps {
    /// The current key's newest operation; `None` past the last key.
    pub(crate) fn current(&self) -> Option<OpView<'_>> {
        self.merger.current()
    }

    /// Moves to the next key.
    pub(crate) fn advance(&mut self) -> Result<(), CheckpointError> {
        self.merger.advance()
    }

    /// Figures of the sort.
    pub(crate) fn stats(&self) -> SortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// An owned operation, for the tests' inputs and outputs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Op {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        order: u64,
        epoch: i64,
    }

    impl Op {
        fn put(key: &[u8], value: &[u8], order: u64, epoch: i64) -> Self {
            Self {
                key: key.to_vec(),
                value: Some(value.to_vec()),
                order,
                epoch,
            }
        }

        fn delete(key: &[u8], order: u64, epoch: i64) -> Self {
            Self {
                key: key.to_vec(),
                value: None,
                order,
                epoch,
            }
        }

        fn key(&self) -> &[u8] {
            &self.key
        }

        fn value(&self) -> Option<&[u8]> {
            self.value.as_deref()
        }

        fn epoch(&self) -> i64 {
            self.epoch
        }
    }

    impl ExternalSorter {
        fn push_op(&mut self, op: &Op) -> Result<(), CheckpointError> {
            match op.value() {
                Some(v) => self.push_put(op.key(), v, op.order, op.epoch),
                None => self.push_delete(op.key(), op.order, op.epoch),
            }
        }
    }

    impl SortedOps {
        /// The current operation, owned, then advance.
        fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
            let Some(view) = self.current() else {
                return Ok(None);
            };
            let op = Op {
                key: view.key.to_vec(),
                value: view.value.map(<[u8]>::to_vec),
                order: view.order,
                epoch: view.epoch,
            };
            self.advance()?;
            Ok(Some(op))
        }
    }

    /// Deterministic pseudo-random numbers (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The newest op per key, as (key, Some((value, epoch)) or None).
    type Model = BTreeMap<Vec<u8>, Option<(Vec<u8>, i64)>>;

    fn model_of(ops: &[Op]) -> Model {
        let mut model = Model::new();
        for op in ops {
            model.insert(
                op.key().to_vec(),
                op.value().map(|v| (v.to_vec(), op.epoch())),
            );
        }
        model
    }

    fn sort_all(config: SortConfig, ops: &[Op]) -> (Vec<Op>, SortStats) {
        let mut sorter = ExternalSorter::new(config);
        for op in ops {
            sorter.push_op(op).unwrap();
        }
        let mut newest = sorter.finish().unwrap();
        let mut out = Vec::new();
        while let Some(op) = newest.next_op().unwrap() {
            out.push(op);
        }
        (out, newest.stats())
    }

    fn assert_matches_model(out: &[Op], ops: &[Op]) {
        let model = model_of(ops);
        assert_eq!(out.len(), model.len(), "one operation per key");
        for pair in out.windows(2) {
            assert!(pair[0].key() < pair[1].key(), "strictly sorted by key");
        }
        for (op, (key, expected)) in out.iter().zip(&model) {
            assert_eq!(op.key(), key.as_slice());
            assert_eq!(op.value().map(|v| (v.to_vec(), op.epoch())), *expected);
        }
    }

    fn random_ops(rng: &mut Rng, n: u64, key_space: u64) -> Vec<Op> {
        (1..=n)
            .map(|order| {
                let key = format!("key-{:06}", rng.below(key_space)).into_bytes();
                let epoch = i64::try_from(order / 100).unwrap();
                if rng.below(4) == 0 {
                    Op::delete(&key, order, epoch)
                } else {
                    let len = usize::try_from(rng.below(40)).unwrap();
                    let value = vec![u8::try_from(order % 251).unwrap(); len];
                    Op::put(&key, &value, order, epoch)
                }
            })
            .collect()
    }

    #[test]
    fn config_splits_the_budget() {
        let c = SortConfig::for_budget(64 << 10);
        assert_eq!((c.io_buffer_bytes, c.fan_in), (4 << 10, 15));
        let c = SortConfig::for_budget(64 << 20);
        assert_eq!((c.io_buffer_bytes, c.fan_in), (64 << 10, 64));
        let c = SortConfig::for_budget(4 << 10);
        assert_eq!((c.io_buffer_bytes, c.fan_in), (1 << 10, 3));
        let c = SortConfig::for_budget(0);
        assert_eq!(c.fan_in, 2);
        assert_eq!(c.buffer_limit(), 0);
    }

    #[test]
    fn empty_input_gives_nothing() {
        let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &[]);
        assert!(out.is_empty());
        assert_eq!(stats, SortStats::default());
    }

    #[test]
    fn in_memory_overwrites_and_deletes() {
        let ops = vec![
            Op::put(b"b", b"1", 1, 0),
            Op::put(b"a", b"1", 2, 0),
            Op::put(b"b", b"2", 3, 1),
            Op::delete(b"a", 4, 1),
            Op::delete(b"c", 5, 1),
            Op::put(b"c", b"3", 6, 2),
            Op::put(b"", b"empty key", 7, 2),
            Op::put(b"d", b"", 8, 3),
        ];
        let (out, stats) = sort_all(SortConfig::for_budget(1 << 20), &ops);
        assert_eq!(stats.runs_spilled, 0);
        assert_matches_model(&out, &ops);
        let keys: Vec<&[u8]> = out.iter().map(Op::key).collect();
        assert_eq!(keys, [&b""[..], b"a", b"b", b"c", b"d"]);
        assert_eq!(out[1].value(), None, "a is deleted");
        assert_eq!((out[2].value(), out[2].epoch()), (Some(&b"2"[..]), 1));
    }

    #[test]
    fn tiny_budget_many_runs_random_ops() {
        let mut rng = Rng(7);
        let ops = random_ops(&mut rng, 20_000, 3_000);
        let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &ops);
        println!("tiny budget: {stats:?}");
        assert!(stats.runs_spilled > 100, "{stats:?}");
        assert!(stats.merge_passes > 1, "{stats:?}");
        assert!(stats.max_buffered_bytes <= 4 << 10, "{stats:?}");
        assert_matches_model(&out, &ops);
    }

    #[test]
    fn last_buffer_is_merged_from_memory_with_the_runs() {
        // A few spills (fewer runs than the fan-in), then a partly filled
        // buffer whose operations overwrite and delete keys of the runs.
        let mut rng = Rng(11);
        let ops = random_ops(&mut rng, 2_500, 800);
        let mut sorter = ExternalSorter::new(SortConfig::for_budget(64 << 10));
        for op in &ops {
            sorter.push_op(op).unwrap();
            assert!(sorter.accounted() <= 64 << 10);
        }
        let spills = sorter.next_run;
        assert!(
            !sorter.entries.is_empty(),
            "the last buffer holds operations"
        );
        let mut newest = sorter.finish().unwrap();
        let mut out = Vec::new();
        while let Some(op) = newest.next_op().unwrap() {
            out.push(op);
        }
        let stats = newest.stats();
        println!("last buffer from memory: {spills} spills, {stats:?}");
        assert!((2..=8).contains(&spills), "{stats:?}");
        assert_eq!(
            stats.runs_spilled, spills,
            "the last buffer was not written"
        );
        assert_eq!(stats.merge_passes, 0);
        assert_matches_model(&out, &ops);
    }

    #[test]
    fn a_failed_background_spill_is_an_error_naming_the_run() {
        // The run directory vanishes after the first spill: the next run
        // cannot be created by its background thread, and the sort says so.
        let mut rng = Rng(5);
        let ops = random_ops(&mut rng, 4_000, 4_000);
        let mut sorter = ExternalSorter::new(SortConfig::for_budget(64 << 10));
        let mut pushed = 0;
        while sorter.next_run == 0 {
            sorter.push_op(&ops[pushed]).unwrap();
            pushed += 1;
        }
        let dir = sorter.dir.as_ref().unwrap().path().to_path_buf();
        sorter.wait_for_spill().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let err = ops[pushed..]
            .iter()
            .try_for_each(|op| sorter.push_op(op))
            .and_then(|()| sorter.finish().map(drop))
            .unwrap_err();
        println!("spill into a removed directory: {err}");
        let CheckpointError::Io { op, path, .. } = &err else {
            panic!("not an I/O error: {err:?}");
        };
        assert_eq!(*op, "create sort run");
        assert!(
            path.starts_with(&dir) && path.to_string_lossy().contains("run-"),
            "{err}"
        );
    }

    #[test]
    fn equal_keys_in_different_runs() {
        // Every 50 ops, the same keys come back: each run holds every key
        // of the small set, so the merge must pick the newest run's.
        let mut ops = Vec::new();
        let mut order = 0;
        for round in 0..40_i64 {
            for k in 0..50 {
                order += 1;
                let key = format!("k{k:02}").into_bytes();
                let op = match (round + k) % 5 {
                    0 => Op::delete(&key, order, round),
                    _ => Op::put(&key, format!("v{round}").as_bytes(), order, round),
                };
                ops.push(op);
            }
        }
        let config = SortConfig {
            budget: 4 << 10,
            io_buffer_bytes: 512,
            fan_in: 4,
            spill_dir: None,
        };
        let (out, stats) = sort_all(config, &ops);
        println!("equal keys: {stats:?}");
        assert!(stats.runs_spilled >= 10, "{stats:?}");
        assert!(stats.merge_passes >= 1, "{stats:?}");
        assert_matches_model(&out, &ops);
        // Last round is 39: keys with (39 + k) % 5 == 0 are deleted.
        assert_eq!(out.iter().filter(|o| o.value().is_none()).count(), 10);
    }

    #[test]
    fn operation_larger_than_the_budget_is_taken_alone() {
        let big = vec![7_u8; 10_000];
        let ops = vec![
            Op::put(b"a", b"small", 1, 0),
            Op::put(b"b", &big, 2, 0),
            Op::put(b"c", b"small", 3, 0),
            Op::put(b"b", &big[..5_000], 4, 1),
        ];
        let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &ops);
        assert!(stats.runs_spilled >= 2, "{stats:?}");
        assert_matches_model(&out, &ops);
    }

    /// The bounded-memory proof: 200k distinct keys through 64 KiB.
    #[test]
    fn memory_stays_within_the_budget() {
        const BUDGET: usize = 64 << 10;
        const KEYS: u64 = 200_000;
        let mut rng = Rng(42);
        let mut sorter = ExternalSorter::new(SortConfig::for_budget(BUDGET));
        // Keys pushed in a scrambled order (a permutation of 0..KEYS).
        for i in 0..KEYS {
            let k = (i * 7_919) % KEYS;
            let value = rng.next().to_le_bytes();
            sorter
                .push_op(&Op::put(format!("{k:08}").as_bytes(), &value, i + 1, 1))
                .unwrap();
            assert!(sorter.accounted() <= BUDGET);
        }
        let mut newest = sorter.finish().unwrap();
        let mut count = 0_u64;
        let mut previous: Option<Vec<u8>> = None;
        while let Some(op) = newest.next_op().unwrap() {
            assert!(previous.as_deref() < Some(op.key()));
            previous = Some(op.key().to_vec());
            count += 1;
        }
        let stats = newest.stats();
        println!(
            "bounded memory: {KEYS} keys, budget {BUDGET} B: {} runs spilled, {} merge passes \
             ({} runs merged), {} bytes spilled, max buffered {} B",
            stats.runs_spilled,
            stats.merge_passes,
            stats.runs_merged,
            stats.spilled_bytes,
            stats.max_buffered_bytes
        );
        assert_eq!(count, KEYS);
        assert!(stats.runs_spilled > 1);
        assert!(stats.max_buffered_bytes <= BUDGET);
        assert!(stats.max_buffered_bytes > BUDGET / 2, "the budget is used");
    }

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

    #[test]
    fn run_files_round_trip_and_are_removed() {
        let ops = vec![
            Op::delete(b"a", 9, -1),
            Op::put(b"b", b"value", 10, i64::MAX),
        ];
        let mut sorter = ExternalSorter::new(SortConfig::for_budget(1 << 20));
        for op in &ops {
            sorter.push_op(op).unwrap();
        }
        sorter.spill().unwrap();
        let dir = sorter.dir.as_ref().unwrap().path().to_path_buf();
        let mut newest = sorter.finish().unwrap();
        assert_eq!(newest.next_op().unwrap().as_ref(), Some(&ops[0]));
        assert_eq!(newest.next_op().unwrap().as_ref(), Some(&ops[1]));
        assert_eq!(newest.next_op().unwrap(), None);
        assert_eq!(newest.stats().runs_spilled, 1);
        drop(newest);
        assert!(!dir.exists(), "the run directory goes with the sort");
    }
}
