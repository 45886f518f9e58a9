//! The streaming k-way merge of all cores' segments in the order
//! (epoch, `timestamp_ns`, `core_id`, sequence).
//!
//! Memory is one read buffer (plus at most one record of `max_record_bytes`)
//! per core and a heap of one key per core: it does not grow with the WAL.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::entry::{EntryRef, OrderKey, PerCoreWalEntry};
use super::error::PerCoreWalError;
use super::log::CoreLogReader;

/// Streaming merge of every core's entries in (epoch, `timestamp_ns`,
/// `core_id`, sequence) order.
///
/// Iterate it for owned [`PerCoreWalEntry`] values, or call
/// [`MergeStream::next_ref`] to borrow each entry from the readers' buffers
/// without allocating. After an error the stream ends.
#[derive(Debug)]
pub struct MergeStream {
    readers: Vec<CoreLogReader>,
    heap: BinaryHeap<Reverse<(OrderKey, usize)>>,
    /// Reader whose current entry was handed out and must advance next.
    pending: Option<usize>,
    started: bool,
    failed: bool,
    entries: u64,
    skipped: u64,
    /// Per core, the (segment, offset) just past the last entry handed out.
    positions: Vec<Option<(u64, u64)>>,
    /// Per core, the last sequence to skip.
    covered: Vec<Option<u64>>,
}

impl MergeStream {
    pub(crate) fn new(readers: Vec<CoreLogReader>, num_cores: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(readers.len()),
            readers,
            pending: None,
            started: false,
            failed: false,
            entries: 0,
            skipped: 0,
            positions: vec![None; num_cores],
            covered: Vec::new(),
        }
    }

    /// Skips, per core, every entry whose sequence is at most
    /// `covered[core]` (what a checkpoint already holds); `None` or a
    /// missing core skips nothing.
    #[must_use]
    pub fn skip_covered(mut self, covered: Vec<Option<u64>>) -> Self {
        self.covered = covered;
        self
    }

    /// Drops each segment's pages from the OS page cache (`fadvise
    /// DONTNEED`; clean pages only, the file is untouched) once the stream
    /// has read it to its end. For a checkpoint, whose segments are read
    /// once and then removed: the kernel frees their cache while the merge
    /// runs instead of when they are unlinked after the commit.
    #[must_use]
    pub fn drop_cache_after_read(mut self) -> Self {
        for reader in &mut self.readers {
            reader.set_drop_cache(true);
        }
        self
    }

    /// Entries skipped by [`MergeStream::skip_covered`].
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Entries handed out so far.
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of the segments read to their end so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.readers.iter().map(CoreLogReader::bytes).sum()
    }

    /// Per core, the (segment, offset) just past the last entry handed out.
    #[must_use]
    pub fn positions(&self) -> &[Option<(u64, u64)>] {
        &self.positions
    }

    fn key_of(&self, index: usize) -> Result<OrderKey, PerCoreWalError> {
        self.readers[index].current_key().ok_or_else(|| {
            PerCoreWalError::Deserialization("record vanished from the read buffer".into())
        })
    }

    fn step(&mut self) -> Result<Option<usize>, PerCoreWalError> {
        if !self.started {
            self.started = true;
            for index in 0..self.readers.len() {
                if self.readers[index].advance()? {
                    let key = self.key_of(index)?;
                    self.heap.push(Reverse((key, index)));
                }
            }
        } else if let Some(index) = self.pending.take() {
            self.advance_top(index)?;
        }
        loop {
            let Some(&Reverse((key, index))) = self.heap.peek() else {
                return Ok(None);
            };
            let core = usize::from(key.core_id);
            if self
                .covered
                .get(core)
                .copied()
                .flatten()
                .is_some_and(|c| key.sequence <= c)
            {
                self.skipped += 1;
                self.advance_top(index)?;
                continue;
            }
            self.pending = Some(index);
            self.entries += 1;
            if let Some(slot) = self.positions.get_mut(core) {
                *slot = self.readers[index].position();
            }
            return Ok(Some(index));
        }
    }

    /// Advances the reader of the heap's top entry and replaces the top in
    /// place (one sift, not pop + push), or pops it at that reader's end.
    fn advance_top(&mut self, index: usize) -> Result<(), PerCoreWalError> {
        if self.readers[index].advance()? {
            let key = self.key_of(index)?;
            if let Some(mut top) = self.heap.peek_mut() {
                *top = Reverse((key, index));
            }
        } else {
            self.heap.pop();
        }
        Ok(())
    }

    /// The next entry in merge order, borrowed from the reader's buffer until
    /// the next call. `None` at the end (and after an error).
    pub fn next_ref(&mut self) -> Option<Result<EntryRef<'_>, PerCoreWalError>> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(index)) => self.readers[index].current().map(Ok),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Iterator for MergeStream {
    type Item = Result<PerCoreWalEntry, PerCoreWalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|e| e.to_owned_entry()))
    }
}
