//! Recovery from the per-core WAL: repair torn tails, replay every entry in
//! merge order, report per-segment statistics.
//!
//! This is the WAL half of recovery. Loading the newest checkpoint from the
//! object store first (and replaying only what it does not cover) builds on
//! it in the checkpoint layer.
//!
//! Replay is parallel: the cores are split over `available_parallelism`
//! threads. Each thread keeps the latest operation per key, with that
//! entry's merge-order key (epoch, `timestamp_ns`, core, sequence), copies
//! its bytes into the thread's arena, and sorts what it kept by key. The
//! sorted runs are then merged with the checkpoint's state, keeping per key
//! the operation with the greatest order key, which is the last one in
//! `MergeStream`'s order. Deleted keys are dropped. The result is a
//! [`StateMap`] whose slots point into the threads' arenas: no allocation
//! per key. It is what a sequential replay in merge order gives: a unit
//! test checks this, with the same keys written on several cores.

#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::{OpRef, OrderKey};
use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::log::{scan_core, CoreLogReader, SegmentRead};
use super::manager::PerCoreWalConfig;
#[cfg(test)]
use super::merge::MergeStream;
use super::segment::{list_segments, ReadLimits, SegmentCursor, SegmentFile, SegmentNaming, Step};
use super::state_map::{bytes, Slot, StateMap};

/// State rebuilt by replaying the WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerCoreRecoveredState {
    /// Latest value of every live key (deleted keys are absent), sorted.
    pub state: StateMap,
    /// Source offsets of the last `Commit` per source.
    pub source_offsets: HashMap<String, u64>,
    /// Watermark of the last `Commit` that carried one.
    pub watermark: Option<i64>,
    /// Highest epoch found.
    pub final_epoch: u64,
    /// Number of WAL entries replayed.
    pub entries_replayed: usize,
    /// WAL entries skipped because a checkpoint already covers them.
    pub entries_skipped: usize,
    /// Per core, the sequence number the next entry must get.
    pub next_sequences: Vec<u64>,
    /// Per core, the valid end of the newest segment after repair.
    pub wal_positions: Vec<u64>,
    /// Per core, bytes cut from a torn or zero-filled tail by the repair.
    pub truncated_bytes: Vec<u64>,
}

/// Statistics for one WAL segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStats {
    /// Core ID.
    pub core_id: usize,
    /// Segment number.
    pub segment: u64,
    /// Path to the segment file.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// Number of valid entries.
    pub entry_count: usize,
    /// Smallest epoch in the segment (every entry of a segment has the same).
    pub min_epoch: u64,
    /// Largest epoch in the segment.
    pub max_epoch: u64,
    /// Sequence of the first entry.
    pub first_sequence: u64,
    /// Offset just past the last valid record.
    pub valid_end: u64,
    /// Bytes after `valid_end`: a torn or zero-filled tail.
    pub tail_bytes: u64,
    /// Why the tail is not records (empty if there is none).
    pub tail_reason: String,
}

/// Recovery manager for per-core WAL segments.
#[derive(Debug, Clone)]
pub struct PerCoreRecoveryManager {
    wal_config: PerCoreWalConfig,
    fs: Arc<dyn WalFileSystem>,
}

impl PerCoreRecoveryManager {
    /// Creates a recovery manager for the WAL described by `wal_config`.
    #[must_use]
    pub fn new(wal_config: PerCoreWalConfig) -> Self {
        Self::with_file_system(wal_config, Arc::new(StdFileSystem))
    }

    /// Same, with every file operation going through `fs`.
    #[must_use]
    pub fn with_file_system(wal_config: PerCoreWalConfig, fs: Arc<dyn WalFileSystem>) -> Self {
        Self { wal_config, fs }
    }

    fn listed(&self) -> Result<Vec<Vec<SegmentFile>>, PerCoreWalError> {
        self.wal_config.validate()?;
        let naming = SegmentNaming::new(&self.wal_config.segment_pattern).expect("validated");
        list_segments(
            &*self.fs,
            &self.wal_config.base_dir,
            &naming,
            self.wal_config.num_cores,
        )
    }

    /// Repairs every core's newest segment: truncates a torn or zero-filled
    /// tail (and syncs the truncation), and removes a newest segment whose
    /// header never became durable. Returns each core's valid end.
    ///
    /// Run it while no writer has the WAL open. Corruption that is not a
    /// torn tail is an error and nothing is truncated for it.
    pub fn repair_all_segments(&self) -> Result<Vec<u64>, PerCoreWalError> {
        Ok(self.repair()?.into_iter().map(|r| r.0).collect())
    }

    /// (valid end, truncated bytes, next sequence, epoch) per core.
    fn repair(&self) -> Result<Vec<(u64, u64, u64, u64)>, PerCoreWalError> {
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        (0..self.wal_config.num_cores)
            .map(|core_id| {
                let segments = listed.get(core_id).cloned().unwrap_or_default();
                let scan = scan_core(
                    &self.fs,
                    &self.wal_config.base_dir,
                    core_id,
                    segments,
                    limits,
                    true,
                )?;
                Ok(scan.map_or((0, 0, 0, 0), |s| {
                    (s.valid_end, s.truncated_bytes, s.next_sequence, s.epoch)
                }))
            })
            .collect()
    }

    /// A strict reader of every listed segment of one core, read whole.
    fn core_reader(
        &self,
        listed: &[Vec<SegmentFile>],
        core_id: usize,
        limits: ReadLimits,
    ) -> CoreLogReader {
        let reads = listed
            .get(core_id)
            .into_iter()
            .flatten()
            .map(|file| SegmentRead {
                file: file.clone(),
                limit: None,
            })
            .collect();
        CoreLogReader::new(Arc::clone(&self.fs), core_id, reads, limits)
    }

    /// A strict merge stream over every segment of every core (after repair):
    /// the sequential reference the parallel replay is tested against.
    #[cfg(test)]
    fn stream(&self) -> Result<MergeStream, PerCoreWalError> {
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        let readers = (0..self.wal_config.num_cores)
            .map(|core_id| self.core_reader(&listed, core_id, limits))
            .collect();
        Ok(MergeStream::new(readers, self.wal_config.num_cores))
    }

    /// Replays the cores on up to `available_parallelism` threads (a thread
    /// reads whole cores), each into its own map of latest operation per key.
    fn replay_parallel(&self, covered: &[Option<u64>]) -> Result<Vec<Partial>, PerCoreWalError> {
        let cores = self.wal_config.num_cores;
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, cores.max(1));
        let partials: Vec<Result<Partial, (usize, PerCoreWalError)>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let mine: Vec<(usize, CoreLogReader)> = (w..cores)
                            .step_by(workers)
                            .map(|core_id| (core_id, self.core_reader(&listed, core_id, limits)))
                            .collect();
                        scope.spawn(move || replay_cores(mine, covered))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err((
                                0,
                                PerCoreWalError::Deserialization("a replay thread panicked".into()),
                            ))
                        })
                    })
                    .collect()
            });
        // Deterministic: the lowest-numbered failing core's error.
        let mut failures: Vec<(usize, PerCoreWalError)> = Vec::new();
        let mut done = Vec::with_capacity(partials.len());
        for p in partials {
            match p {
                Ok(p) => done.push(p),
                Err(e) => failures.push(e),
            }
        }
        if let Some((_, e)) = failures.into_iter().min_by_key(|(core, _)| *core) {
            return Err(e);
        }

        Ok(done)
    }

    /// Repairs torn tails, then replays every entry of every core in merge
    /// order into the final state. Idempotent: a second run gives the same
    /// state. Corruption anywhere but a newest segment's tail is an error
    /// naming the file and offset.
    pub fn recover(&self) -> Result<PerCoreRecoveredState, PerCoreWalError> {
        self.recover_onto(PerCoreRecoveredState::default(), &[])
    }

    /// Repairs torn tails, then replays onto `base` (a state loaded from a
    /// checkpoint) every entry whose sequence is above `covered[core]` (the
    /// checkpoint's last covered sequence of that core; `None` or a missing
    /// core: replay all of it).
    ///
    /// If a core's log starts after `covered + 1`, entries are in neither
    /// the checkpoint nor the WAL: that is a [`PerCoreWalError::SequenceGap`],
    /// never a silent loss.
    pub fn recover_onto(
        &self,
        mut base: PerCoreRecoveredState,
        covered: &[Option<u64>],
    ) -> Result<PerCoreRecoveredState, PerCoreWalError> {
        let repaired = self.repair()?;
        let cores = self.wal_config.num_cores;
        let done = self.replay_parallel(covered)?;
        let base_state = std::mem::take(&mut base.state);
        let mut out = PerCoreRecoveredState {
            wal_positions: repaired.iter().map(|r| r.0).collect(),
            truncated_bytes: repaired.iter().map(|r| r.1).collect(),
            next_sequences: repaired.iter().map(|r| r.2).collect(),
            final_epoch: repaired
                .iter()
                .map(|r| r.3)
                .max()
                .unwrap_or(0)
                .max(base.final_epoch),
            ..base
        };
        let mut first_seen: Vec<Option<u64>> = vec![None; cores];
        let mut offsets: HashMap<String, (OrderKey, u64)> = HashMap::new();
        let mut watermark: Option<(OrderKey, i64)> = None;
        let mut runs = Vec::with_capacity(done.len());
        for p in done {
            out.entries_replayed += p.replayed;
            out.entries_skipped += p.skipped;
            out.final_epoch = out.final_epoch.max(p.max_epoch);
            for (core, first) in p.first_seen {
                first_seen[core] = first;
            }
            for (source, (order, offset)) in p.offsets {
                match offsets.get(&source) {
                    Some((o, _)) if *o > order => {}
                    _ => {
                        offsets.insert(source, (order, offset));
                    }
                }
            }
            if let Some((order, w)) = p.watermark {
                if watermark.is_none_or(|(o, _)| o < order) {
                    watermark = Some((order, w));
                }
            }
            runs.push(p.run);
        }
        for (source, (_, offset)) in offsets {
            out.source_offsets.insert(source, offset);
        }
        if let Some((_, w)) = watermark {
            out.watermark = Some(w);
        }
        for (core, first) in first_seen.into_iter().enumerate() {
            let Some(last_covered) = covered.get(core).copied().flatten() else {
                continue;
            };
            let first = first.unwrap_or(out.next_sequences[core]);
            if first > last_covered + 1 {
                return Err(PerCoreWalError::SequenceGap {
                    path: self.wal_config.base_dir.clone(),
                    core_id: core,
                    expected: last_covered + 1,
                    actual: first,
                });
            }
        }
        out.state = merge_runs(base_state, runs);
        Ok(out)
    }

    /// Statistics of every segment, read without changing anything: a torn
    /// tail is reported, corruption elsewhere is an error.
    pub fn segment_stats(&self) -> Result<Vec<SegmentStats>, PerCoreWalError> {
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        let mut stats = Vec::new();
        for file in listed.iter().flatten() {
            let mut cursor = SegmentCursor::open(
                &self.fs,
                &file.path,
                Some((file.core_id, file.segment)),
                None,
                limits,
            )?;
            let (valid_end, tail_reason) = loop {
                match cursor.advance()? {
                    Step::Record => {}
                    Step::End => break (cursor.position(), String::new()),
                    Step::ZeroTail { position } => break (position, "zero-filled tail".to_owned()),
                    Step::Torn { position, reason } => break (position, reason),
                }
            };
            let header = *cursor.header();
            stats.push(SegmentStats {
                core_id: file.core_id,
                segment: file.segment,
                path: file.path.clone(),
                file_size: cursor.limit(),
                entry_count: usize::try_from(cursor.records()).unwrap_or(usize::MAX),
                min_epoch: header.epoch,
                max_epoch: header.epoch,
                first_sequence: header.first_sequence,
                valid_end,
                tail_bytes: cursor.limit() - valid_end,
                tail_reason,
            });
        }
        Ok(stats)
    }
}

/// One key's latest operation among the entries a replay thread read. The
/// key and value bytes are in the thread's arena; `prefix` (the key's first
/// 8 bytes, big-endian, zero-padded) orders and tells apart most keys
/// without reading the arena.
#[derive(Debug, Clone, Copy)]
struct Row {
    prefix: u64,
    order: OrderKey,
    key_at: u64,
    value_at: u64,
    key_len: u32,
    /// [`DELETED`] for a delete.
    value_len: u32,
}

/// `value_len` of a deleted key (records are shorter than 4 GiB).
const DELETED: u32 = u32::MAX;

impl Row {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        bytes(arena, self.key_at, self.key_len)
    }
}

fn prefix_of(key: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// Key order of two rows, each with its arena: zero-padding keeps the
/// prefix order consistent with the byte order of the keys, and equal
/// prefixes fall back to the keys.
fn row_order(a: &Row, a_arena: &[u8], b: &Row, b_arena: &[u8]) -> std::cmp::Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| a.key(a_arena).cmp(b.key(b_arena)))
}

fn same_key(a: &Row, a_arena: &[u8], b: &Row, b_arena: &[u8]) -> bool {
    a.prefix == b.prefix && a.key_len == b.key_len && a.key(a_arena) == b.key(b_arena)
}

/// The latest operation per key of one replay thread: the rows in a
/// vector, their bytes in one arena, and a hash table of row indexes to
/// find them. Memory grows with the distinct keys (and the bytes of values
/// that do not fit where the key's previous value was), not the entries.
///
/// A slot holds the row index and 32 bits of the key's hash, so growing the
/// table rehashes from the slots without reading the keys.
struct Latest {
    rows: Vec<Row>,
    arena: Vec<u8>,
    index: hashbrown::HashTable<(u32, u32)>,
    hasher: foldhash::fast::RandomState,
}

impl Latest {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            arena: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Records `value` (`None`: a delete) for `key` at `order` unless a
    /// later operation on the key is already recorded.
    fn upsert(
        &mut self,
        key: &[u8],
        order: OrderKey,
        value: Option<&[u8]>,
    ) -> Result<(), PerCoreWalError> {
        use std::hash::BuildHasher as _;
        let Self {
            rows,
            arena,
            index,
            hasher,
        } = self;
        let too_long = || PerCoreWalError::RecoveryFailed("a key or value of 4 GiB or more".into());
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let value_len = match value {
            Some(v) => u32::try_from(v.len())
                .ok()
                .filter(|&n| n != DELETED)
                .ok_or_else(too_long)?,
            None => DELETED,
        };
        let prefix = prefix_of(key);
        let short = hash32(hasher.hash_one(key));
        let hash = widen(short);
        let found = index.find(hash, |&(i, h)| {
            let r = &rows[i as usize];
            h == short
                && r.prefix == prefix
                && r.key_len == key_len
                && bytes(arena, r.key_at, r.key_len) == key
        });
        if let Some(&(i, _)) = found {
            let row = &mut rows[i as usize];
            if row.order < order {
                row.order = order;
                if let Some(v) = value {
                    if row.value_len == DELETED || value_len > row.value_len {
                        row.value_at = arena.len() as u64;
                        arena.extend_from_slice(v);
                    } else {
                        let at = usize::try_from(row.value_at).expect("arena offsets fit");
                        arena[at..at + v.len()].copy_from_slice(v);
                    }
                }
                row.value_len = value_len;
            }
            return Ok(());
        }
        let i = u32::try_from(rows.len()).map_err(|_| {
            PerCoreWalError::RecoveryFailed(
                "more than 4 G distinct keys in one replay thread".into(),
            )
        })?;
        let key_at = arena.len() as u64;
        arena.extend_from_slice(key);
        let value_at = arena.len() as u64;
        arena.extend_from_slice(value.unwrap_or_default());
        rows.push(Row {
            prefix,
            order,
            key_at,
            value_at,
            key_len,
            value_len,
        });
        index.insert_unique(hash, (i, short), |&(_, h)| widen(h));
        Ok(())
    }

    /// The rows sorted by key, with their arena (the index is dropped first).
    fn into_run(self) -> Run {
        drop(self.index);
        let Self {
            mut rows, arena, ..
        } = self;
        rows.sort_unstable_by(|a, b| row_order(a, &arena, b, &arena));
        Run { rows, arena }
    }
}

/// The top 32 bits of a 64-bit hash.
fn hash32(hash: u64) -> u32 {
    u32::try_from(hash >> 32).unwrap_or(u32::MAX)
}

/// A 64-bit table hash from 32 bits: the table takes its 7-bit tag from the
/// top bits and the bucket from the low bits, so both halves carry them.
fn widen(short: u32) -> u64 {
    (u64::from(short) << 32) | u64::from(short)
}

/// One replay thread's latest operation per key, sorted by key, and the
/// arena holding their bytes.
#[derive(Debug, Default)]
struct Run {
    rows: Vec<Row>,
    arena: Vec<u8>,
}

/// What one replay thread found in its cores.
#[derive(Debug, Default)]
struct Partial {
    run: Run,
    /// Per core read, its first sequence (`None`: no entry).
    first_seen: Vec<(usize, Option<u64>)>,
    /// Latest offset per source, with its merge position.
    offsets: HashMap<String, (OrderKey, u64)>,
    /// Latest watermark, with its merge position.
    watermark: Option<(OrderKey, i64)>,
    replayed: usize,
    skipped: usize,
    max_epoch: u64,
}

/// Reads `readers` (whole cores) and keeps the latest operation per key. A
/// core's entries come in increasing merge order (timestamps strictly
/// increase and epochs never go back within a core, which the reader
/// checks), so across the cores of one thread the greatest order key is the
/// last operation in merge order.
fn replay_cores(
    readers: Vec<(usize, CoreLogReader)>,
    covered: &[Option<u64>],
) -> Result<Partial, (usize, PerCoreWalError)> {
    let mut latest = Latest::new();
    let mut p = Partial::default();
    for (core, mut reader) in readers {
        let skip_to = covered.get(core).copied().flatten();
        let mut first = None;
        loop {
            match reader.advance() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err((core, e)),
            }
            let Some(entry) = reader.current() else {
                let e =
                    PerCoreWalError::Deserialization("record vanished from the read buffer".into());
                return Err((core, e));
            };
            first.get_or_insert(entry.sequence);
            if skip_to.is_some_and(|c| entry.sequence <= c) {
                p.skipped += 1;
                continue;
            }
            p.replayed += 1;
            p.max_epoch = p.max_epoch.max(entry.epoch);
            let order = entry.order_key();
            match entry.operation {
                OpRef::Put { key, value } => {
                    latest
                        .upsert(key, order, Some(value))
                        .map_err(|e| (core, e))?;
                }
                OpRef::Delete { key } => latest.upsert(key, order, None).map_err(|e| (core, e))?,
                OpRef::Commit { offsets, watermark } => {
                    for (source, offset) in offsets {
                        match p.offsets.get_mut(source) {
                            Some(slot) if slot.0 < order => *slot = (order, offset),
                            Some(_) => {}
                            None => {
                                p.offsets.insert(source.to_owned(), (order, offset));
                            }
                        }
                    }
                    if let Some(w) = watermark {
                        if p.watermark.is_none_or(|(o, _)| o < order) {
                            p.watermark = Some((order, w));
                        }
                    }
                }
                OpRef::Checkpoint { .. } | OpRef::EpochBarrier { .. } => {}
            }
        }
        p.first_seen.push((core, first));
    }
    p.run = latest.into_run();
    Ok(p)
}

/// Merges the base state (a checkpoint's, older than every WAL entry) with
/// the threads' sorted runs: per key the operation with the greatest merge
/// position wins, and deleted keys are dropped.
///
/// The key space is cut into ranges at quantiles of the largest run, and
/// the ranges are merged on `available_parallelism` threads. A merge only
/// picks slots (offsets into the base's and the runs' arenas): no key or
/// value is copied, and the arenas become the result's.
fn merge_runs(base: StateMap, runs: Vec<Run>) -> StateMap {
    const MIN_ROWS_PER_RANGE: usize = 1 << 16;
    let total = runs.iter().map(|r| r.rows.len()).sum::<usize>() + base.len();
    let ranges = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(total / MIN_ROWS_PER_RANGE)
        .max(1);
    merge_runs_in(base, runs, ranges)
}

/// One run's rows of a key range, its arena and its arena's number in the
/// result.
type RunPiece<'a> = (&'a [Row], &'a [u8], u32);

/// [`merge_runs`] over at most `ranges` key ranges (one thread each).
fn merge_runs_in(base: StateMap, runs: Vec<Run>, ranges: usize) -> StateMap {
    let (mut arenas, base_slots) = base.into_parts();
    let first_run_arena = arenas.len();
    // Split keys: quantiles of the largest run, strictly increasing.
    let mut splits: Vec<&[u8]> = Vec::new();
    if let Some(largest) = runs.iter().max_by_key(|r| r.rows.len()) {
        for i in 1..ranges {
            let key = largest.rows[i * largest.rows.len() / ranges].key(&largest.arena);
            if splits.last().is_none_or(|last| *last < key) {
                splits.push(key);
            }
        }
    }
    // Range r holds the keys in [splits[r - 1], splits[r]).
    let base_cuts = cut(&splits, base_slots.len(), |i| base_slots[i].key(&arenas));
    let run_cuts: Vec<Vec<std::ops::Range<usize>>> = runs
        .iter()
        .map(|run| cut(&splits, run.rows.len(), |i| run.rows[i].key(&run.arena)))
        .collect();
    let jobs: Vec<(&[Slot], Vec<RunPiece<'_>>)> = (0..=splits.len())
        .map(|r| {
            let pieces = runs
                .iter()
                .zip(&run_cuts)
                .enumerate()
                .map(|(t, (run, cuts))| {
                    let id = u32::try_from(first_run_arena + t).expect("fewer than 4 G arenas");
                    (&run.rows[cuts[r].clone()], run.arena.as_slice(), id)
                })
                .collect();
            (&base_slots[base_cuts[r].clone()], pieces)
        })
        .collect();
    let merged: Vec<Vec<Slot>> = if jobs.len() == 1 {
        jobs.into_iter()
            .map(|(b, p): (&[Slot], Vec<RunPiece<'_>>)| merge_range(&arenas, b, &p))
            .collect()
    } else {
        let arenas = &arenas;
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(b, p): (&[Slot], Vec<RunPiece<'_>>)| {
                    scope.spawn(move || merge_range(arenas, b, &p))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut slots = Vec::with_capacity(merged.iter().map(Vec::len).sum());
    for piece in merged {
        slots.extend_from_slice(&piece);
    }
    drop(base_slots);
    arenas.extend(runs.into_iter().map(|r| {
        drop(r.rows);
        r.arena
    }));
    StateMap::from_parts(arenas, slots)
}

/// The ranges of `0..len` holding the keys in `[splits[r - 1], splits[r])`,
/// for keys sorted by `key_at`.
fn cut<'a>(
    splits: &[&[u8]],
    len: usize,
    key_at: impl Fn(usize) -> &'a [u8],
) -> Vec<std::ops::Range<usize>> {
    let mut bounds = vec![0];
    let mut from = 0;
    for split in splits {
        let (mut lo, mut hi) = (from, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key_at(mid) < *split {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        bounds.push(lo);
        from = lo;
    }
    bounds.push(len);
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Merges one key range: `base` (slots into `base_arenas`, older than every
/// row) and the threads' sorted rows in that range.
fn merge_range(base_arenas: &[Vec<u8>], base: &[Slot], runs: &[RunPiece<'_>]) -> Vec<Slot> {
    let capacity = runs.iter().map(|r| r.0.len()).max().unwrap_or(0) + base.len();
    let mut merged: Vec<Slot> = Vec::with_capacity(capacity);
    let mut at = vec![0_usize; runs.len()];
    let mut b = 0;
    loop {
        // The run whose head has the smallest key.
        let mut smallest: Option<usize> = None;
        for (i, &(rows, arena, _)) in runs.iter().enumerate() {
            let Some(head) = rows.get(at[i]) else {
                continue;
            };
            let better = smallest.is_none_or(|s| {
                let (srows, sarena, _) = runs[s];
                row_order(head, arena, &srows[at[s]], sarena).is_lt()
            });
            if better {
                smallest = Some(i);
            }
        }
        let Some(s) = smallest else {
            merged.extend_from_slice(&base[b..]);
            break;
        };
        let mut winner = (runs[s].0[at[s]], s);
        at[s] += 1;
        for (i, &(rows, arena, _)) in runs.iter().enumerate() {
            if let Some(head) = rows.get(at[i]) {
                if same_key(head, arena, &winner.0, runs[winner.1].1) {
                    if head.order > winner.0.order {
                        winner = (*head, i);
                    }
                    at[i] += 1;
                }
            }
        }
        let (row, (_, arena, id)) = (winner.0, runs[winner.1]);
        let key = row.key(arena);
        // Base keys before the winner's come first; an equal one is replaced.
        while let Some(slot) = base.get(b) {
            match slot.key(base_arenas).cmp(key) {
                std::cmp::Ordering::Less => {
                    merged.push(*slot);
                    b += 1;
                }
                std::cmp::Ordering::Equal => {
                    b += 1;
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        if row.value_len != DELETED {
            merged.push(Slot {
                key_at: row.key_at,
                value_at: row.value_at,
                key_len: row.key_len,
                value_len: row.value_len,
                arena: id,
            });
        }
    }
    merged
}

/// Recovers the WAL in `wal_dir` with `num_cores` cores: repairs torn tails
/// and replays every entry.
///
/// `checkpoint_dir` is the seed's parameter; this version does not read
/// checkpoints from it yet, so every entry still in the WAL is replayed.
pub fn recover_per_core(
    wal_dir: &Path,
    checkpoint_dir: &Path,
    num_cores: usize,
) -> Result<PerCoreRecoveredState, PerCoreWalError> {
    let _ = checkpoint_dir;
    PerCoreRecoveryManager::new(PerCoreWalConfig::new(wal_dir, num_cores)).recover()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::per_core_wal::{PerCoreWalManager, WalOperation};

    type Reference = (
        BTreeMap<Vec<u8>, Vec<u8>>,
        HashMap<String, u64>,
        Option<i64>,
    );

    /// The sequential replay in merge order the parallel one must equal.
    fn sequential(m: &PerCoreRecoveryManager) -> Reference {
        let (mut state, mut offsets, mut watermark) = (BTreeMap::new(), HashMap::new(), None);
        for entry in m.stream().unwrap() {
            match entry.unwrap().operation {
                WalOperation::Put { key, value } => {
                    state.insert(key, value);
                }
                WalOperation::Delete { key } => {
                    state.remove(&key);
                }
                WalOperation::Commit {
                    offsets: o,
                    watermark: w,
                } => {
                    offsets.extend(o);
                    if w.is_some() {
                        watermark = w;
                    }
                }
                _ => {}
            }
        }
        (state, offsets, watermark)
    }

    #[test]
    fn parallel_replay_equals_the_sequential_merge_with_keys_on_several_cores() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for cores in [1_usize, 2, 3, 5] {
            let tmp = tempfile::tempdir().unwrap();
            let config = PerCoreWalConfig::new(tmp.path(), cores).with_segment_bytes(4096);
            let mut m = PerCoreWalManager::new(config.clone()).unwrap();
            let mut base = BTreeMap::new();
            base.insert(b"k0001".to_vec(), b"from the checkpoint".to_vec());
            base.insert(b"only-in-base".to_vec(), b"kept".to_vec());
            for i in 0..4000_u64 {
                let core = usize::try_from(next() % cores as u64).unwrap();
                let key = format!("k{:04}", next() % 150).into_bytes();
                let w = m.writer(core);
                match next() % 10 {
                    0 => {
                        w.append_delete(&key).unwrap();
                    }
                    1 => {
                        let src = format!("s{}", next() % 3);
                        let offsets: HashMap<String, u64> = [(src, i)].into();
                        let watermark = (i % 2 == 0).then_some(i64::try_from(i).unwrap());
                        w.append_commit(offsets, watermark).unwrap();
                    }
                    _ => {
                        w.append_put(&key, format!("v{i}").as_bytes()).unwrap();
                    }
                }
                if i % 500 == 499 {
                    let epoch = m.advance_epoch();
                    m.set_epoch_all(epoch);
                }
            }
            m.sync_all().unwrap();
            drop(m);
            let manager = PerCoreRecoveryManager::new(config);
            let (state, offsets, watermark) = sequential(&manager);
            let got = manager.recover().unwrap();
            assert_eq!(got.state, state, "{cores} cores");
            assert_eq!(got.source_offsets, offsets, "{cores} cores");
            assert_eq!(got.watermark, watermark, "{cores} cores");
            assert_eq!(got.entries_replayed, 4000);

            // Onto a checkpoint's state: every WAL operation is newer.
            let onto = PerCoreRecoveredState {
                state: StateMap::from(base.clone()),
                ..PerCoreRecoveredState::default()
            };
            let got = manager.recover_onto(onto, &[]).unwrap();
            let mut expected = base.clone();
            let mut seq = PerCoreRecoveredState::default();
            for entry in manager.stream().unwrap() {
                match entry.unwrap().operation {
                    WalOperation::Put { key, value } => {
                        expected.insert(key, value);
                    }
                    WalOperation::Delete { key } => {
                        expected.remove(&key);
                    }
                    _ => {}
                }
            }
            seq.state = StateMap::from(expected);
            assert_eq!(got.state, seq.state, "{cores} cores, onto a base");
            println!(
                "{cores} cores: {} keys, {} sources, equal to the sequential merge",
                got.state.len(),
                got.source_offsets.len()
            );
        }
    }

    const ZERO: OrderKey = OrderKey {
        epoch: 0,
        timestamp_ns: 0,
        core_id: 0,
        sequence: 0,
    };

    #[test]
    fn merging_in_key_ranges_equals_merging_in_one() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut tried = 0;
        for ranges in [2_usize, 3, 4, 7] {
            let make = |next: &mut dyn FnMut() -> u64| {
                let mut base = BTreeMap::new();
                for _ in 0..300 {
                    let k = format!("k{:04}", next() % 1000).into_bytes();
                    base.insert(k, b"base".to_vec());
                }
                let runs: Vec<Run> = (0..3_u16)
                    .map(|core| {
                        let mut latest = Latest::new();
                        for s in 0..400_u64 {
                            let key = format!("k{:04}", next() % 1000).into_bytes();
                            let value = (!next().is_multiple_of(5)).then(|| format!("v{core}.{s}"));
                            let order = OrderKey {
                                epoch: next() % 3,
                                timestamp_ns: i64::try_from(s).unwrap(),
                                core_id: core,
                                sequence: s,
                            };
                            latest
                                .upsert(&key, order, value.as_ref().map(String::as_bytes))
                                .unwrap();
                        }
                        latest.into_run()
                    })
                    .collect();
                let base = StateMap::from(base);
                (base, runs)
            };
            let seed_state = next();
            let mut a = seed_state;
            let mut gen_a = move || {
                a ^= a << 13;
                a ^= a >> 7;
                a ^= a << 17;
                a
            };
            let mut b = seed_state;
            let mut gen_b = move || {
                b ^= b << 13;
                b ^= b >> 7;
                b ^= b << 17;
                b
            };
            let (base1, runs1) = make(&mut gen_a);
            let (base2, runs2) = make(&mut gen_b);
            let one = merge_runs_in(base1, runs1, 1);
            let split = merge_runs_in(base2, runs2, ranges);
            assert!(!one.is_empty());
            assert_eq!(one, split, "{ranges} ranges");
            tried += 1;
        }
        println!("{tried} range counts merged equal to one range");
    }

    #[test]
    fn prefix_order_agrees_with_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"b",
        ];
        let arena: Vec<u8> = keys.concat();
        let mut rows = Vec::new();
        let mut at = 0_u64;
        for k in &keys {
            let len = u32::try_from(k.len()).unwrap();
            rows.push(Row {
                prefix: prefix_of(k),
                order: ZERO,
                key_at: at,
                value_at: at + u64::from(len),
                key_len: len,
                value_len: DELETED,
            });
            at += u64::from(len);
        }
        for (a, ra) in keys.iter().zip(&rows) {
            for (b, rb) in keys.iter().zip(&rows) {
                assert_eq!(
                    row_order(ra, &arena, rb, &arena),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
                assert_eq!(same_key(ra, &arena, rb, &arena), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
