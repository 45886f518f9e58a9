//! External merge sort of delta operations, bounded in memory: plain
//! synchronous code (run on a blocking thread), tested on its own.
//!
//! ## Accounting
//!
//! An operation costs its struct slot in the buffer (`size_of::<Op>()`, for
//! every slot of the buffer's capacity, used or not) plus its heap bytes (the
//! capacity of its key-and-value allocation, plus an estimate of the
//! allocator's overhead). The buffer never grows past the budget minus one
//! I/O buffer (the spill writer's); an operation alone larger than that is
//! still accepted, alone in the buffer.
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
//! allocation.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;

/// Estimated allocator overhead of one heap allocation.
const ALLOC_OVERHEAD: usize = 16;
/// Bytes of a record's fixed header in a run file.
const RECORD_HEADER: usize = 24;
/// `value_len` of a delete in a run file.
const DELETE_MARK: u32 = u32::MAX;
/// Smallest buffer growth, in slots.
const MIN_SLOTS: usize = 16;

/// What an operation does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Sets the value.
    Put,
    /// Removes the key.
    Delete,
}

/// A `put` or `delete` of the changelog, with its position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    /// The key, then the value (a put's).
    data: Vec<u8>,
    /// Length of the key in `data`.
    key_len: usize,
    /// Put or delete.
    kind: Kind,
    /// Position in the changelog: larger is newer.
    order: u64,
    /// `wal_epoch` of the operation.
    epoch: i64,
}

impl Op {
    /// A put of `value` at `key`.
    pub(crate) fn put(key: &[u8], value: &[u8], order: u64, epoch: i64) -> Self {
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Self {
            data,
            key_len: key.len(),
            kind: Kind::Put,
            order,
            epoch,
        }
    }

    /// A delete of `key`.
    pub(crate) fn delete(key: &[u8], order: u64, epoch: i64) -> Self {
        Self {
            data: key.to_vec(),
            key_len: key.len(),
            kind: Kind::Delete,
            order,
            epoch,
        }
    }

    /// The key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.data[..self.key_len]
    }

    /// The value of a put; `None` for a delete.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        match self.kind {
            Kind::Put => Some(&self.data[self.key_len..]),
            Kind::Delete => None,
        }
    }

    /// `wal_epoch` of the operation.
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Accounted heap bytes.
    fn heap_cost(&self) -> usize {
        self.data.capacity() + ALLOC_OVERHEAD
    }

    /// Sorts by key, newest first for equal keys.
    fn sort_cmp(&self, other: &Self) -> Ordering {
        self.key()
            .cmp(other.key())
            .then(other.order.cmp(&self.order))
    }
}

/// Accounted bytes of one buffer slot.
const SLOT: usize = size_of::<Op>();

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
    /// The split of `budget`: I/O buffers of budget/64 (4 KiB to 1 MiB,
    /// at most a quarter of the budget) and as many runs merged at once
    /// as fit (2 to 64).
    pub(crate) fn for_budget(budget: usize) -> Self {
        let io_buffer_bytes = (budget / 64)
            .clamp(4 << 10, 1 << 20)
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

    /// Bytes the in-memory buffer may hold: the budget less the spill
    /// writer's buffer.
    fn buffer_limit(&self) -> usize {
        self.budget.saturating_sub(self.io_buffer_bytes)
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

/// Accumulates operations and spills sorted runs past the budget.
pub(crate) struct ExternalSorter {
    /// Budget and buffer sizes.
    config: SortConfig,
    /// Operations not yet spilled.
    buffer: Vec<Op>,
    /// Accounted heap bytes of `buffer`'s operations.
    heap_bytes: usize,
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
            buffer: Vec::new(),
            heap_bytes: 0,
            runs: Vec::new(),
            dir: None,
            next_run: 0,
            max_record: 0,
            stats: SortStats::default(),
        }
    }

    /// Accounted bytes of the buffer.
    fn accounted(&self) -> usize {
        self.buffer.capacity() * SLOT + self.heap_bytes
    }

    /// Whether an operation of heap cost `cost` fits without passing the
    /// limit (growing the buffer by one slot if it is full).
    fn fits(&self, cost: usize) -> bool {
        let slots = self.buffer.capacity().max(self.buffer.len() + 1);
        slots * SLOT + self.heap_bytes + cost <= self.config.buffer_limit()
    }

    /// Adds an operation, spilling the buffer first if it would not fit.
    pub(crate) fn push(&mut self, op: Op) -> Result<(), CheckpointError> {
        let cost = op.heap_cost();
        if !self.fits(cost) && !self.buffer.is_empty() {
            self.spill()?;
        }
        if !self.fits(cost) {
            // An operation too large for the budget even alone: release
            // the spare slots and take it alone.
            self.buffer = Vec::new();
        }
        let len = self.buffer.len();
        if len == self.buffer.capacity() {
            let room = self
                .config
                .buffer_limit()
                .saturating_sub(self.heap_bytes + cost)
                / SLOT;
            let target = (len * 2).max(MIN_SLOTS).min(room).max(len + 1);
            self.buffer.reserve_exact(target - len);
        }
        self.max_record = self.max_record.max(op.data.len());
        self.heap_bytes += cost;
        self.buffer.push(op);
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

    /// Sorts the buffer, keeps the newest operation per key and writes
    /// it as a run. Keeps the buffer's capacity.
    fn spill(&mut self) -> Result<(), CheckpointError> {
        sort_newest_per_key(&mut self.buffer);
        let path = self.new_run_path()?;
        let ops = std::mem::take(&mut self.buffer);
        let capacity = ops.capacity();
        let mut writer = RunWriter::create(path, self.config.io_buffer_bytes)?;
        for op in ops {
            writer.write(&op)?;
        }
        let (run, bytes) = writer.finish()?;
        self.runs.push(run);
        self.stats.runs_spilled += 1;
        self.stats.spilled_bytes += bytes;
        self.heap_bytes = 0;
        self.buffer = Vec::with_capacity(capacity);
        Ok(())
    }

    /// Ends the input: the operations sorted by key, newest per key.
    /// Merges runs in passes until at most `fan_in` remain.
    pub(crate) fn finish(mut self) -> Result<SortedOps, CheckpointError> {
        if self.runs.is_empty() {
            let mut ops = std::mem::take(&mut self.buffer);
            sort_newest_per_key(&mut ops);
            let merger = Merger::new(vec![Source::Memory(ops.into_iter())])?;
            return Ok(SortedOps {
                merger,
                _dir: None,
                stats: self.stats,
            });
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        // The merge needs only the runs' read buffers.
        self.buffer = Vec::new();
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
        while let Some(op) = merger.next_op()? {
            writer.write(&op)?;
        }
        let (run, bytes) = writer.finish()?;
        self.stats.runs_merged += 1;
        self.stats.spilled_bytes += bytes;
        Ok(run)
    }
}

/// Sorts by key and keeps the newest operation of each key.
fn sort_newest_per_key(ops: &mut Vec<Op>) {
    ops.sort_unstable_by(Op::sort_cmp);
    // `dedup_by` keeps the first of equal neighbours: the newest.
    ops.dedup_by(|later, kept| later.key() == kept.key());
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

    /// Appends a record.
    fn write(&mut self, op: &Op) -> Result<(), CheckpointError> {
        let too_long = || {
            io_error(
                "write sort run",
                &self.path,
                io::Error::new(io::ErrorKind::InvalidInput, "key or value of 4 GiB or more"),
            )
        };
        let key_len = u32::try_from(op.key_len).map_err(|_| too_long())?;
        let value_len = match op.kind {
            Kind::Put => u32::try_from(op.data.len() - op.key_len)
                .ok()
                .filter(|&l| l != DELETE_MARK)
                .ok_or_else(too_long)?,
            Kind::Delete => DELETE_MARK,
        };
        let mut header = [0_u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&key_len.to_le_bytes());
        header[4..8].copy_from_slice(&value_len.to_le_bytes());
        header[8..16].copy_from_slice(&op.order.to_le_bytes());
        header[16..24].copy_from_slice(&op.epoch.to_le_bytes());
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(&op.data))
            .map_err(|e| io_error("write sort run", &self.path, e))?;
        self.records += 1;
        self.bytes += (RECORD_HEADER + op.data.len()) as u64;
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
        })
    }

    /// The next record; `None` after the last (and the file is removed).
    fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
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
            return Ok(None);
        }
        let op = read_record(&mut self.reader, self.max_record)
            .map_err(|e| io_error("read sort run", path, e))?;
        self.remaining -= 1;
        Ok(Some(op))
    }
}

/// Reads one record; lengths past `max_record` are corruption.
fn read_record(reader: &mut impl Read, max_record: usize) -> io::Result<Op> {
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
    let order = u64::from_le_bytes(eight(8));
    let epoch = i64::from_le_bytes(eight(16));
    let (kind, value_len) = if value_len == DELETE_MARK {
        (Kind::Delete, 0)
    } else {
        (Kind::Put, value_len as usize)
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
    let mut data = vec![0_u8; len];
    reader.read_exact(&mut data)?;
    Ok(Op {
        data,
        key_len,
        kind,
        order,
        epoch,
    })
}

/// Where a merge takes operations from, each sorted by key, one per key.
enum Source {
    /// The sorted in-memory buffer.
    Memory(std::vec::IntoIter<Op>),
    /// A run file.
    Run(RunReader),
}

impl Source {
    /// The next operation.
    fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
        match self {
            Self::Memory(ops) => Ok(ops.next()),
            Self::Run(reader) => reader.next_op(),
        }
    }
}

/// A source's current operation in the merge heap: the greatest is the
/// smallest key, newest first.
struct Head {
    /// The operation.
    op: Op,
    /// Index of its source.
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops the greatest.
        other.op.sort_cmp(&self.op)
    }
}

/// K-way merge of sources: the newest operation of each key, in key order.
struct Merger {
    /// The sources.
    sources: Vec<Source>,
    /// Each unfinished source's current operation.
    heap: BinaryHeap<Head>,
}

impl Merger {
    /// Starts a merge.
    fn new(mut sources: Vec<Source>) -> Result<Self, CheckpointError> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (source, s) in sources.iter_mut().enumerate() {
            if let Some(op) = s.next_op()? {
                heap.push(Head { op, source });
            }
        }
        Ok(Self { sources, heap })
    }

    /// Takes the top operation and refills from its source.
    fn pop(&mut self) -> Result<Option<Op>, CheckpointError> {
        let Some(Head { op, source }) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.sources[source].next_op()? {
            self.heap.push(Head { op: next, source });
        }
        Ok(Some(op))
    }

    /// The newest operation of the next key; older ones are skipped.
    fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
        let Some(newest) = self.pop()? else {
            return Ok(None);
        };
        while self.heap.peek().is_some_and(|h| h.op.key() == newest.key()) {
            self.pop()?;
        }
        Ok(Some(newest))
    }
}

/// The sorted operations: the newest per key (deletes included), in key
/// order. Holds the run files until dropped.
pub(crate) struct SortedOps {
    /// The final merge.
    merger: Merger,
    /// The run files' directory, removed when dropped.
    _dir: Option<tempfile::TempDir>,
    /// Figures.
    stats: SortStats,
}

impl SortedOps {
    /// The next key's newest operation.
    pub(crate) fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
        self.merger.next_op()
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
            sorter.push(op.clone()).unwrap();
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
        assert_eq!((c.io_buffer_bytes, c.fan_in), (1 << 20, 63));
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
                .push(Op::put(format!("{k:08}").as_bytes(), &value, i + 1, 1))
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
        let err = read_record(&mut bytes.as_slice(), 1_000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Truncated payload.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2_u32.to_le_bytes());
        bytes.extend_from_slice(&2_u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(b"ab");
        let err = read_record(&mut bytes.as_slice(), 1_000).unwrap_err();
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
            sorter.push(op.clone()).unwrap();
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
