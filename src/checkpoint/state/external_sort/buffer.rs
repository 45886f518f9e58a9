//! The sorter's two in-memory buffers: operations appended to an arena,
//! their accounting against the budget, and the background spill of a full
//! buffer as a sorted run. The first step of the sort.
//!
//! ## Buffer and accounting
//!
//! Operations are not allocated one by one. Their keys and values are
//! appended to one byte arena, and each operation is a fixed 48-byte entry
//! (the key's [`KeyHead`], offsets, lengths, order, epoch) in one vector.
//! Sorting moves entries only and compares the heads (the keys' first 16
//! bytes) first, reaching into the arena only for keys that share them. Both allocations are kept across spills, so a sort allocates
//! its buffer once instead of once per operation.
//!
//! The accounted bytes are the capacities of these allocations. There are
//! two such buffers, each within half of the budget less one I/O buffer (the
//! spill writer's): when the one being filled is full, a background thread
//! sorts it and writes it as a run while the other one fills. Spilling thus
//! does not stop the input (the changelog being written feeds the sort): a
//! buffer waits only when the other one is still being written. An
//! operation alone larger than a buffer's share is still accepted, alone in
//! the buffer.

use std::io;
use std::path::PathBuf;

use super::run::{write_sorted_run, Run};
use super::{io_error, ExternalSorter, OpView, DELETE_MARK};
use crate::arena::KeyHead;
use crate::checkpoint::CheckpointError;

/// Smallest growth of the entry vector, in entries.
const MIN_SLOTS: usize = 16;

/// Smallest growth of the arena, in bytes.
const MIN_ARENA: usize = 1 << 10;

/// An operation in the buffer; its key and value live in the arena.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// [`KeyHead`] of the key.
    pub(super) head: KeyHead,
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
pub(super) const ENTRY: usize = size_of::<Entry>();

impl Entry {
    /// The operation, with its bytes from `arena`.
    pub(super) fn view<'a>(&self, arena: &'a [u8]) -> OpView<'a> {
        let key_end = self.offset + self.key_len as usize;
        OpView {
            head: self.head,
            key: &arena[self.offset..key_end],
            value: (self.value_len != DELETE_MARK)
                .then(|| &arena[key_end..key_end + self.value_len as usize]),
            order: self.order,
            epoch: self.epoch,
        }
    }
}

/// A buffer's entries and arena.
pub(super) type Buffer = (Vec<Entry>, Vec<u8>);

/// What a spill thread gives back: the buffer's emptied allocations, and
/// the run with its bytes.
type SpillOutcome = (Buffer, Result<(Run, u64), CheckpointError>);

/// A buffer being sorted and written as a run by a background thread. The
/// thread gives back the buffer's allocations (emptied) with the run.
pub(super) struct SpillJob {
    handle: std::thread::JoinHandle<SpillOutcome>,
    /// The run file's path, for errors.
    path: PathBuf,
    /// Accounted bytes of the buffer it holds.
    bytes: usize,
}

impl ExternalSorter {
    /// Accounted bytes of both buffers.
    pub(super) fn accounted(&self) -> usize {
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

    pub(super) fn push(
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
            head: KeyHead::of(key),
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

    /// Hands the buffer to a background thread that sorts it, keeps the
    /// newest operation per key and writes it as a run; input goes on into
    /// the other buffer. Waits first for the previous spill, if any, whose
    /// emptied allocations become the buffer to fill.
    pub(super) fn spill(&mut self) -> Result<(), CheckpointError> {
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
    pub(super) fn wait_for_spill(&mut self) -> Result<(), CheckpointError> {
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
    pub(super) fn add_spilled_run(&mut self, run: Run, bytes: u64) {
        self.runs.push(run);
        self.stats.runs_spilled += 1;
        self.stats.spilled_bytes += bytes;
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

/// Sorts entries by key (newest first for equal keys) and keeps the newest
/// of each key.
pub(super) fn sort_newest_per_key(entries: &mut Vec<Entry>, arena: &[u8]) {
    // Heads decide almost every comparison; the keys (bounds-checked
    // slices of the arena) are looked at only when they are equal.
    entries.sort_unstable_by(|a, b| {
        a.head
            .cmp(&b.head)
            .then_with(|| a.view(arena).sort_cmp(&b.view(arena)))
    });
    // `dedup_by` keeps the first of equal neighbours: the newest.
    entries.dedup_by(|later, kept| later.view(arena).same_key(&kept.view(arena)));
}
