//! External merge sort of delta operations, bounded in memory: plain
//! synchronous code (run on a blocking thread), tested on its own.
//!
//! Operations go into one of two in-memory buffers ([`buffer`]); a full
//! buffer is sorted and spilled as a run file ([`run`], which also gives
//! the file format) while the other fills. [`ExternalSorter::finish`] merges
//! the runs ([`merge`]) into [`SortedOps`]: the newest operation per key, in
//! key order. This file holds the sorter's face: its settings and figures,
//! the operations it hands out, and the end of the input.
//!
//! At the end, the last buffer is merged from memory with the runs when it
//! fits beside their read buffers, instead of being written and read back.

use std::cmp::Ordering;
use std::io;
use std::path::{Path, PathBuf};

use crate::arena::KeyHead;
use crate::checkpoint::CheckpointError;

mod buffer;
mod merge;
mod run;
#[cfg(test)]
mod tests;

use buffer::{sort_newest_per_key, Buffer, Entry, SpillJob, ENTRY};
use merge::{Merger, Source};
use run::{write_sorted_run, Run, RunReader, RunWriter};

/// `value_len` of a delete in a run file and in an entry.
const DELETE_MARK: u32 = u32::MAX;

/// A `put` or `delete`, borrowed from the sorter's buffer or a run reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpView<'a> {
    /// [`KeyHead`] of `key`.
    head: KeyHead,
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
        self.head
            .cmp_keys(self.key, other.head, other.key)
            .then(other.order.cmp(&self.order))
    }

    /// Whether both have the same key.
    fn same_key(&self, other: &OpView<'_>) -> bool {
        self.head == other.head && self.key == other.key
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
    /// fit (2 to 64). 64 KiB, not more: larger buffers fall out of the CPU
    /// cache during a wide merge, and copying records out of them costs
    /// more than the fewer reads save.
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
