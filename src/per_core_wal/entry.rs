//! WAL entries: the owned [`PerCoreWalEntry`] of the seed API and the borrowed
//! [`EntryRef`] the streaming readers hand out without allocating.

use std::cmp::Ordering;
use std::collections::HashMap;

/// Operations that can be logged in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalOperation {
    /// Put a key-value pair.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a key.
    Delete {
        /// The key to delete.
        key: Vec<u8>,
    },
    /// Checkpoint marker.
    Checkpoint {
        /// Checkpoint ID.
        id: u64,
    },
    /// Commit offsets for exactly-once semantics.
    Commit {
        /// Map of topic/partition to offset.
        offsets: HashMap<String, u64>,
        /// Current watermark at commit time.
        watermark: Option<i64>,
    },
    /// Barrier for an epoch boundary. The writer writes it with its current
    /// epoch: every later entry of that core has an epoch at least this one.
    EpochBarrier {
        /// The epoch the barrier was written in.
        epoch: u64,
    },
}

/// Per-core WAL entry with epoch for cross-core ordering.
///
/// Entries are ordered by (epoch, `timestamp_ns`, `core_id`, `sequence`) for
/// deterministic recovery; within one core, timestamps are strictly
/// increasing, so the order never reorders a core's own entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerCoreWalEntry {
    /// Global epoch (for ordering during recovery).
    pub epoch: u64,
    /// Core-local sequence number (increases by one per entry, never reused).
    pub sequence: u64,
    /// Core ID that wrote this entry.
    pub core_id: u16,
    /// Timestamp in nanoseconds since the Unix epoch, strictly increasing per core.
    pub timestamp_ns: i64,
    /// The actual operation.
    pub operation: WalOperation,
}

impl PerCoreWalEntry {
    /// Creates a new Put entry.
    #[must_use]
    pub fn put(
        core_id: u16,
        epoch: u64,
        sequence: u64,
        key: Vec<u8>,
        value: Vec<u8>,
        timestamp_ns: i64,
    ) -> Self {
        Self {
            epoch,
            sequence,
            core_id,
            timestamp_ns,
            operation: WalOperation::Put { key, value },
        }
    }

    /// Creates a new Delete entry.
    #[must_use]
    pub fn delete(
        core_id: u16,
        epoch: u64,
        sequence: u64,
        key: Vec<u8>,
        timestamp_ns: i64,
    ) -> Self {
        Self {
            epoch,
            sequence,
            core_id,
            timestamp_ns,
            operation: WalOperation::Delete { key },
        }
    }

    /// Creates a new Checkpoint entry.
    #[must_use]
    pub fn checkpoint(
        core_id: u16,
        epoch: u64,
        sequence: u64,
        checkpoint_id: u64,
        timestamp_ns: i64,
    ) -> Self {
        Self {
            epoch,
            sequence,
            core_id,
            timestamp_ns,
            operation: WalOperation::Checkpoint { id: checkpoint_id },
        }
    }

    /// Creates a new Commit entry.
    #[must_use]
    pub fn commit(
        core_id: u16,
        epoch: u64,
        sequence: u64,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
        timestamp_ns: i64,
    ) -> Self {
        Self {
            epoch,
            sequence,
            core_id,
            timestamp_ns,
            operation: WalOperation::Commit { offsets, watermark },
        }
    }

    /// Creates a new `EpochBarrier` entry.
    #[must_use]
    pub fn epoch_barrier(core_id: u16, epoch: u64, sequence: u64, timestamp_ns: i64) -> Self {
        Self {
            epoch,
            sequence,
            core_id,
            timestamp_ns,
            operation: WalOperation::EpochBarrier { epoch },
        }
    }

    /// Returns true if this is a Put operation.
    #[must_use]
    pub fn is_put(&self) -> bool {
        matches!(self.operation, WalOperation::Put { .. })
    }

    /// Returns true if this is a Delete operation.
    #[must_use]
    pub fn is_delete(&self) -> bool {
        matches!(self.operation, WalOperation::Delete { .. })
    }

    /// Returns true if this is a Checkpoint operation.
    #[must_use]
    pub fn is_checkpoint(&self) -> bool {
        matches!(self.operation, WalOperation::Checkpoint { .. })
    }

    /// Returns true if this is a state-modifying operation (Put or Delete).
    #[must_use]
    pub fn is_state_operation(&self) -> bool {
        self.is_put() || self.is_delete()
    }

    /// Gets the key if this is a Put or Delete operation.
    #[must_use]
    pub fn key(&self) -> Option<&[u8]> {
        match &self.operation {
            WalOperation::Put { key, .. } | WalOperation::Delete { key } => Some(key),
            _ => None,
        }
    }

    /// Gets the value if this is a Put operation.
    #[must_use]
    pub fn value(&self) -> Option<&[u8]> {
        match &self.operation {
            WalOperation::Put { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Returns the wall-clock time in nanoseconds since the Unix epoch (0 if
    /// the clock is before 1970). Writers do not use it directly: they make it
    /// strictly increasing per core.
    #[must_use]
    pub fn now_ns() -> i64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Seconds and nanoseconds, not `as_nanos()`: the u128 path costs
        // a noticeable share of an append.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            i64::try_from(d.as_secs())
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .and_then(|n| n.checked_add(i64::from(d.subsec_nanos())))
                .unwrap_or(i64::MAX)
        })
    }

    /// The merge key: (epoch, `timestamp_ns`, `core_id`, sequence).
    #[must_use]
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            epoch: self.epoch,
            timestamp_ns: self.timestamp_ns,
            core_id: self.core_id,
            sequence: self.sequence,
        }
    }
}

impl Ord for PerCoreWalEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for PerCoreWalEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The merge order of entries: (epoch, `timestamp_ns`, `core_id`, sequence),
/// compared field by field in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// Global epoch.
    pub epoch: u64,
    /// Timestamp in nanoseconds.
    pub timestamp_ns: i64,
    /// Core that wrote the entry.
    pub core_id: u16,
    /// Core-local sequence number.
    pub sequence: u64,
}

/// A decoded entry that borrows its key, value and commit offsets from a
/// reader's buffer: what the streaming merge hands out without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Global epoch.
    pub epoch: u64,
    /// Core-local sequence number.
    pub sequence: u64,
    /// Core that wrote the entry.
    pub core_id: u16,
    /// Timestamp in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The operation.
    pub operation: OpRef<'a>,
}

/// The operation of an [`EntryRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpRef<'a> {
    /// Put a key-value pair.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Checkpoint marker.
    Checkpoint {
        /// Checkpoint ID.
        id: u64,
    },
    /// Source offsets and watermark of an exactly-once commit.
    Commit {
        /// The offsets, in the order they were written (sorted by source).
        offsets: CommitOffsets<'a>,
        /// Watermark at commit time.
        watermark: Option<i64>,
    },
    /// Barrier for an epoch boundary.
    EpochBarrier {
        /// The epoch the barrier was written in.
        epoch: u64,
    },
}

/// The (source, offset) pairs of a commit record, decoded lazily from bytes the
/// codec has already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOffsets<'a> {
    pub(crate) count: usize,
    pub(crate) bytes: &'a [u8],
}

impl<'a> CommitOffsets<'a> {
    /// Number of (source, offset) pairs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the commit names no source.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates the pairs in the order they were written.
    #[must_use]
    pub fn iter(&self) -> CommitOffsetsIter<'a> {
        CommitOffsetsIter {
            remaining: self.count,
            bytes: self.bytes,
        }
    }
}

impl<'a> IntoIterator for &CommitOffsets<'a> {
    type Item = (&'a str, u64);
    type IntoIter = CommitOffsetsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for CommitOffsets<'a> {
    type Item = (&'a str, u64);
    type IntoIter = CommitOffsetsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the pairs of [`CommitOffsets`].
#[derive(Debug, Clone)]
pub struct CommitOffsetsIter<'a> {
    remaining: usize,
    bytes: &'a [u8],
}

impl<'a> Iterator for CommitOffsetsIter<'a> {
    type Item = (&'a str, u64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // The codec validated these bytes when the record was decoded, so a
        // failure here is a bug, not bad input: end the iteration.
        let (source, offset, rest) = super::format::split_commit_pair(self.bytes)?;
        self.bytes = rest;
        self.remaining -= 1;
        Some((source, offset))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl EntryRef<'_> {
    /// The merge key: (epoch, `timestamp_ns`, `core_id`, sequence).
    #[must_use]
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            epoch: self.epoch,
            timestamp_ns: self.timestamp_ns,
            core_id: self.core_id,
            sequence: self.sequence,
        }
    }

    /// Copies the entry into an owned [`PerCoreWalEntry`].
    #[must_use]
    pub fn to_owned_entry(&self) -> PerCoreWalEntry {
        let operation = match self.operation {
            OpRef::Put { key, value } => WalOperation::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            OpRef::Delete { key } => WalOperation::Delete { key: key.to_vec() },
            OpRef::Checkpoint { id } => WalOperation::Checkpoint { id },
            OpRef::Commit { offsets, watermark } => WalOperation::Commit {
                offsets: offsets.iter().map(|(s, o)| (s.to_owned(), o)).collect(),
                watermark,
            },
            OpRef::EpochBarrier { epoch } => WalOperation::EpochBarrier { epoch },
        };
        PerCoreWalEntry {
            epoch: self.epoch,
            sequence: self.sequence,
            core_id: self.core_id,
            timestamp_ns: self.timestamp_ns,
            operation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(epoch: u64, ts: i64, core: u16, seq: u64) -> PerCoreWalEntry {
        PerCoreWalEntry::put(core, epoch, seq, vec![1], vec![2], ts)
    }

    #[test]
    fn order_is_epoch_then_timestamp_then_core_then_sequence() {
        assert!(put(1, 1000, 0, 100) < put(2, 500, 1, 1), "epoch first");
        assert!(put(1, 1000, 1, 1) < put(1, 2000, 0, 0), "then timestamp");
        assert!(put(1, 1000, 0, 9) < put(1, 1000, 1, 1), "then core");
        assert!(put(1, 1000, 1, 1) < put(1, 1000, 1, 2), "then sequence");
    }

    #[test]
    fn accessors_match_operation() {
        let p = PerCoreWalEntry::put(0, 1, 1, b"k".to_vec(), b"v".to_vec(), 5);
        assert!(p.is_put() && p.is_state_operation() && !p.is_delete());
        assert_eq!((p.key(), p.value()), (Some(&b"k"[..]), Some(&b"v"[..])));
        let d = PerCoreWalEntry::delete(0, 1, 2, b"k".to_vec(), 5);
        assert!(d.is_delete() && d.value().is_none());
        let c = PerCoreWalEntry::checkpoint(0, 1, 3, 7, 5);
        assert!(c.is_checkpoint() && !c.is_state_operation() && c.key().is_none());
    }
}
