//! The writes acknowledged since the newest checkpoint, kept in memory so
//! that [`crate::Walhouse::get`] and [`crate::Walhouse::scan`] see them.
//!
//! Each core thread records its puts and deletes here after the group
//! commit's fdatasync and before it acknowledges them, in the order of its
//! log; a key always goes to the same core, so per key the newest write is
//! the one kept. Each entry remembers the epoch its write went into. When a
//! checkpoint commits, the entries of the epochs it covers leave (the
//! checkpoint answers for them); [`Live::floor`] is the newest checkpoint
//! that trimmed, so a reader knows how new a checkpoint it must read.
//!
//! Memory: each entry holds its key and value plus about 80 bytes of map
//! overhead ([`Live::bytes`] counts key + value + 80). It is bounded by
//! what is written between two checkpoints: the scheduler's
//! `checkpoint_wal_bytes` and `checkpoint_interval_ms` start a checkpoint
//! as the WAL grows, and each commit empties the map of what it covered. A
//! checkpoint that keeps failing (an unreachable store) lets it grow like
//! the WAL does.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::WriteOp;

/// Bytes an entry costs beyond its key and value (map node, vector headers).
const ENTRY_OVERHEAD: u64 = 80;

/// The newest write of a key since the newest checkpoint.
#[derive(Debug, Clone)]
struct Entry {
    /// `None`: deleted.
    value: Option<Vec<u8>>,
    /// The epoch the write went into.
    epoch: u64,
}

/// Acknowledged writes not yet in a checkpoint: one map per core.
#[derive(Debug)]
pub(crate) struct Live {
    cores: Vec<Mutex<BTreeMap<Vec<u8>, Entry>>>,
    bytes: AtomicU64,
    floor: AtomicU64,
}

fn cost(key: &[u8], value: Option<&[u8]>) -> u64 {
    (key.len() + value.map_or(0, <[u8]>::len)) as u64 + ENTRY_OVERHEAD
}

impl Live {
    pub(crate) fn new(cores: usize) -> Self {
        Self {
            cores: (0..cores).map(|_| Mutex::new(BTreeMap::new())).collect(),
            bytes: AtomicU64::new(0),
            floor: AtomicU64::new(0),
        }
    }

    fn core(&self, core: usize) -> Option<MutexGuard<'_, BTreeMap<Vec<u8>, Entry>>> {
        // A panic while the lock was held left whole entries (every change
        // is one insert or remove): the map is still usable.
        self.cores
            .get(core)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records the durable writes `ops` of `core`, made in `epoch`, in
    /// their order.
    pub(crate) fn apply(&self, core: usize, epoch: u64, ops: impl IntoIterator<Item = WriteOp>) {
        let Some(mut map) = self.core(core) else {
            return;
        };
        for op in ops {
            let (key, value) = match op {
                WriteOp::Put { key, value } => (key, Some(value)),
                WriteOp::Delete { key } => (key, None),
            };
            let added = cost(&key, value.as_deref());
            let key_len = key.len();
            if let Some(old) = map.insert(key, Entry { value, epoch }) {
                let old_value = old.value.as_deref().map_or(0, <[u8]>::len);
                self.bytes.fetch_sub(
                    (key_len + old_value) as u64 + ENTRY_OVERHEAD,
                    Ordering::Relaxed,
                );
            }
            self.bytes.fetch_add(added, Ordering::Relaxed);
        }
    }

    /// Records the writes of the WAL's tail at open: per core, `(epoch, op)`
    /// in log order. Equal to [`Live::apply`] of each in turn, but sorted
    /// and built in bulk (a sort and a linear build instead of one tree
    /// insert per write: inserts of random keys spent most of an open in
    /// key comparisons and cache misses), one thread per core.
    pub(crate) fn load(&self, tails: Vec<Vec<(u64, WriteOp)>>) {
        std::thread::scope(|scope| {
            for (core, tail) in tails.into_iter().enumerate() {
                scope.spawn(move || self.load_core(core, tail));
            }
        });
    }

    fn load_core(&self, core: usize, tail: Vec<(u64, WriteOp)>) {
        if tail.is_empty() {
            return;
        }
        let Some(mut map) = self.core(core) else {
            return;
        };
        if !map.is_empty() {
            // Not at open: keep the newest-wins order of single inserts.
            drop(map);
            for (epoch, op) in tail {
                self.apply(core, epoch, [op]);
            }
            return;
        }
        // `from_iter` sorts stably and keeps the last of equal keys: the
        // newest write of each key, as inserts in log order would.
        let built: BTreeMap<Vec<u8>, Entry> = tail
            .into_iter()
            .map(|(epoch, op)| match op {
                WriteOp::Put { key, value } => (
                    key,
                    Entry {
                        value: Some(value),
                        epoch,
                    },
                ),
                WriteOp::Delete { key } => (key, Entry { value: None, epoch }),
            })
            .collect();
        let bytes: u64 = built.iter().map(|(k, e)| cost(k, e.value.as_deref())).sum();
        *map = built;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The newest write of `key` on `core` since the newest checkpoint:
    /// `Some(None)` when it was deleted, `None` when it was not written.
    #[expect(
        clippy::option_option,
        reason = "crate-private: not written since, or written (a value or deleted)"
    )]
    pub(crate) fn get(&self, core: usize, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.core(core)?.get(key).map(|e| e.value.clone())
    }

    /// The newest writes of every key in the range, from every core.
    pub(crate) fn range(
        &self,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for core in 0..self.cores.len() {
            if let Some(map) = self.core(core) {
                out.extend(
                    map.range(range.clone())
                        .map(|(k, e)| (k.clone(), e.value.clone())),
                );
            }
        }
        out
    }

    /// Checkpoint `checkpoint`, covering the epochs up to `last_epoch`, has
    /// committed: its writes leave. The floor is raised first, so a reader
    /// that misses a trimmed entry reads this checkpoint or a newer one.
    pub(crate) fn committed(&self, checkpoint: u64, last_epoch: u64) {
        self.floor.fetch_max(checkpoint, Ordering::SeqCst);
        for core in 0..self.cores.len() {
            if let Some(mut map) = self.core(core) {
                map.retain(|key, e| {
                    let keep = e.epoch > last_epoch;
                    if !keep {
                        self.bytes
                            .fetch_sub(cost(key, e.value.as_deref()), Ordering::Relaxed);
                    }
                    keep
                });
            }
        }
    }

    /// The newest checkpoint whose writes left the map (0: none yet).
    pub(crate) fn floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Bytes the map holds (keys, values and overhead).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Keys the map holds.
    pub(crate) fn len(&self) -> usize {
        (0..self.cores.len())
            .filter_map(|c| self.core(c).map(|m| m.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> WriteOp {
        WriteOp::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn the_newest_write_wins_bytes_are_counted_once_and_a_commit_trims_its_epochs() {
        let live = Live::new(2);
        live.apply(0, 1, [put(b"a", b"1"), put(b"b", b"22")]);
        live.apply(
            0,
            2,
            [put(b"a", b"333"), WriteOp::Delete { key: b"b".to_vec() }],
        );
        live.apply(1, 2, [put(b"c", b"4")]);
        assert_eq!(live.get(0, b"a"), Some(Some(b"333".to_vec())));
        assert_eq!(
            live.get(0, b"b"),
            Some(None),
            "deleted since the checkpoint"
        );
        assert_eq!(live.get(0, b"c"), None, "another core's key");
        let expected = (1 + 3 + 80) + (1 + 80) + (1 + 1 + 80);
        assert_eq!(live.bytes(), expected);
        let all = live.range((Bound::Unbounded, Bound::Unbounded));
        assert_eq!(all.len(), 3);
        live.committed(7, 1);
        assert_eq!(live.floor(), 7);
        assert_eq!(
            live.len(),
            3,
            "epoch 2's writes are newer than checkpoint 7"
        );
        live.committed(8, 2);
        assert_eq!((live.len(), live.bytes(), live.floor()), (0, 0, 8));
    }

    /// A tail loaded in bulk holds what applying it write by write holds:
    /// the newest write of each key with its epoch, bytes counted once.
    #[test]
    fn a_tail_loaded_in_bulk_equals_it_applied_write_by_write() {
        let mut tails = vec![Vec::new(), Vec::new()];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..5_000_u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let core = usize::from(x.is_multiple_of(2));
            let key = format!("k{}", x % 700).into_bytes();
            let op = if x.is_multiple_of(5) {
                WriteOp::Delete { key }
            } else {
                WriteOp::Put {
                    key,
                    value: i.to_be_bytes().to_vec(),
                }
            };
            tails[core].push((i / 1000, op));
        }
        let one_by_one = Live::new(2);
        for (core, tail) in tails.iter().enumerate() {
            for (epoch, op) in tail {
                one_by_one.apply(core, *epoch, [op.clone()]);
            }
        }
        let bulk = Live::new(2);
        bulk.load(tails);
        assert_eq!(bulk.bytes(), one_by_one.bytes());
        assert_eq!(bulk.len(), one_by_one.len());
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(bulk.range(all.clone()), one_by_one.range(all));
        // The epochs came along: trimming epochs 0..=3 leaves the same keys.
        bulk.committed(1, 3);
        one_by_one.committed(1, 3);
        assert_eq!(bulk.len(), one_by_one.len());
        assert!(bulk.len() > 0 && bulk.len() < 700);
        println!(
            "5,000 writes over 700 keys on 2 cores: {} keys, {} bytes, equal both ways",
            one_by_one.len(),
            one_by_one.bytes()
        );
    }
}
