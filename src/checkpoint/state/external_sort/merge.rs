//! The k-way merge of sorted sources (run files and the last in-memory
//! buffer) into the newest operation per key, in key order: the last step
//! of the sort, read through [`super::SortedOps`] and by merge passes.

use std::cmp::Ordering;

use super::buffer::Entry;
use super::run::RunReader;
use super::OpView;
use crate::arena::KeyHead;
use crate::checkpoint::CheckpointError;

/// Where a merge takes operations from, each sorted by key, one per key.
pub(super) enum Source {
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

    /// The current operation's key head (after an `advance` that
    /// returned true).
    fn head(&self) -> KeyHead {
        match self {
            Self::Memory { entries, next, .. } => entries[*next - 1].head,
            Self::Run(reader) => reader.record.head,
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
/// heap slot carries its key head ([`KeyHead`]), so most comparisons are
/// of two pairs of integers in the heap itself (the keys are read only
/// when the heads are equal).
pub(super) struct Merger {
    /// The sources.
    sources: Vec<Source>,
    /// (key head of the current operation, index) of the sources with a
    /// current operation, as a heap.
    heap: Vec<(KeyHead, usize)>,
    /// The source whose current operation is the output.
    current: Option<usize>,
}

impl Merger {
    /// Starts a merge, positioned at the first output.
    pub(super) fn new(mut sources: Vec<Source>) -> Result<Self, CheckpointError> {
        let mut heap = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            if source.advance()? {
                heap.push((source.head(), i));
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
        let ((head_a, a), (head_b, b)) = (self.heap[a], self.heap[b]);
        if head_a != head_b {
            return head_a < head_b;
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
        let top_head = self.sources[top].head();
        while let Some(&(head, other)) = self.heap.first() {
            if head != top_head
                || !self.sources[other]
                    .view()
                    .same_key(&self.sources[top].view())
            {
                break;
            }
            if self.sources[other].advance()? {
                self.heap[0].0 = self.sources[other].head();
                self.sift_down(0);
            } else {
                self.pop();
            }
        }
        Ok(())
    }

    /// The output operation; `None` when the merge is done.
    pub(super) fn current(&self) -> Option<OpView<'_>> {
        self.current.map(|s| self.sources[s].view())
    }

    /// Moves to the next key's newest operation.
    pub(super) fn advance(&mut self) -> Result<(), CheckpointError> {
        if let Some(source) = self.current.take() {
            if self.sources[source].advance()? {
                self.heap.push((self.sources[source].head(), source));
                self.sift_up(self.heap.len() - 1);
            }
        }
        self.select()
    }
}
