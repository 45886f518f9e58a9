//! Recovery from the per-core WAL: repair torn tails, replay every entry in
//! merge order, report per-segment statistics.
//!
//! This is the WAL half of recovery. Loading the newest checkpoint from the
//! object store first (and replaying only what it does not cover) builds on
//! it in the checkpoint layer.
//!
//! Replay is parallel: the cores are split over `available_parallelism`
//! threads. A thread reads each of its cores' segments whole (mapped
//! read-only by the real file system, so keys and values stay where they
//! are), records the position of every put and delete, sorts the positions
//! by key and keeps per key the core's last operation: a sorted run per
//! core. The runs are then merged with the checkpoint's state, keeping per
//! key the operation with the greatest merge order (epoch, `timestamp_ns`,
//! core), which is the last one in `MergeStream`'s order. Deleted keys are
//! dropped. The result is a [`StateMap`] whose slots point into the
//! segments: no allocation and no copy per key. It is what a sequential
//! replay in merge order gives: a unit test checks this, with the same keys
//! written on several cores.

#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::entry::{OpRef, OrderKey};
use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::log::{check_log_start, scan_core, CoreLogReader, Repair, SegmentRead};
use super::manager::PerCoreWalConfig;
#[cfg(test)]
use super::merge::MergeStream;
use super::segment::{list_segments, ReadLimits, SegmentCursor, SegmentFile, SegmentNaming, Step};
use super::state_map::{bytes, Slot, StateMap, AT_BITS};

/// State rebuilt by replaying the WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerCoreRecoveredState {
    /// Latest value of every live key (deleted keys are absent), sorted.
    /// Its keys and values are read from the WAL's segments where they lie
    /// (mapped read-only by [`StdFileSystem`]): the segment files must not be
    /// truncated or rewritten while it lives; removing them is fine.
    pub state: StateMap,
    /// Source offsets of the last `Commit` per source.
    pub source_offsets: HashMap<String, u64>,
    /// Watermark of the last `Commit` that carried one.
    pub watermark: Option<i64>,
    /// Highest epoch found.
    pub final_epoch: u64,
    /// Number of WAL entries replayed (records, commits and epoch barriers).
    pub entries_replayed: usize,
    /// WAL entries skipped because a checkpoint already covers them.
    pub entries_skipped: usize,
    /// Records (puts and deletes) among `entries_replayed`: what users
    /// wrote, without the commits and the WAL's own epoch barriers.
    pub records_replayed: usize,
    /// Records (puts and deletes) among `entries_skipped`.
    pub records_skipped: usize,
    /// Per core, the sequence number the next entry must get.
    pub next_sequences: Vec<u64>,
    /// Per core, the valid end of the newest segment after repair.
    pub wal_positions: Vec<u64>,
    /// Per core, bytes cut from a torn or zero-filled tail by the repair.
    pub truncated_bytes: Vec<u64>,
    /// Every byte range the repair removed (tails cut, segments whose header
    /// never became durable removed whole), with the file and the reason;
    /// each is also logged as a warning. Empty when nothing was repaired.
    pub repairs: Vec<Repair>,
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
        Ok(self
            .repair(&[], LogStart::CoveredCores)?
            .into_iter()
            .map(|r| r.valid_end)
            .collect())
    }

    /// Repairs every core's newest segment, then checks where each core's
    /// log starts ([`check_log_start`]) for the cores `start` says.
    fn repair(
        &self,
        covered: &[Option<u64>],
        start: LogStart,
    ) -> Result<Vec<Repaired>, PerCoreWalError> {
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        (0..self.wal_config.num_cores)
            .map(|core_id| {
                let segments = listed.get(core_id).cloned().unwrap_or_default();
                let outcome = scan_core(
                    &self.fs,
                    &self.wal_config.base_dir,
                    core_id,
                    segments,
                    limits,
                    true,
                )?;
                let covered = covered.get(core_id).copied().flatten();
                if let Some(scan) = &outcome.scan {
                    if start == LogStart::EveryCore || covered.is_some() {
                        check_log_start(core_id, scan, covered)?;
                    }
                }
                let mut r = outcome.scan.map_or_else(Repaired::default, |s| Repaired {
                    valid_end: s.valid_end,
                    truncated: s.truncated_bytes,
                    next_sequence: s.next_sequence,
                    epoch: s.epoch,
                    repairs: Vec::new(),
                });
                r.repairs = outcome.repairs;
                Ok(r)
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
                            .map(|core_id| {
                                let reader = self.core_reader(&listed, core_id, limits);
                                (core_id, reader.whole_segments())
                            })
                            .collect();
                        scope.spawn(move || replay_cores(mine, covered))
                    })
                    .collect();
                handles
                    .into_iter()
                    // A panic is a bug, not damaged data: it goes on to
                    // the caller (checkpoint recovery names the task).
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
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
        base: PerCoreRecoveredState,
        covered: &[Option<u64>],
    ) -> Result<PerCoreRecoveredState, PerCoreWalError> {
        self.replay(covered, LogStart::CoveredCores)?.onto(base)
    }

    /// The first half of [`PerCoreRecoveryManager::recover_onto`]: repairs
    /// torn tails and replays the cores into sorted runs, which do not need
    /// the base state yet (checkpoint recovery loads it meanwhile).
    ///
    /// With [`LogStart::EveryCore`], `covered` is the whole truth (the
    /// newest checkpoint's coverage, or no checkpoint at all): every core's
    /// log must start at or before its covered sequence + 1, at 0 where
    /// nothing covers it.
    pub(crate) fn replay(
        &self,
        covered: &[Option<u64>],
        start: LogStart,
    ) -> Result<WalReplay, PerCoreWalError> {
        let repaired = self.repair(covered, start)?;
        let done = self.replay_parallel(covered)?;
        Ok(WalReplay {
            base_dir: self.wal_config.base_dir.clone(),
            cores: self.wal_config.num_cores,
            covered: covered.to_vec(),
            repaired,
            done,
        })
    }
}

/// Which cores' first sequence recovery checks against the coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStart {
    /// Only cores with a covered sequence: the WAL alone (the seed's API)
    /// cannot know which segments a checkpoint it does not see removed.
    CoveredCores,
    /// Every core: the coverage given is the newest checkpoint's, or there
    /// is no checkpoint, so a core nothing covers must start at 0.
    EveryCore,
}

/// What the repair found in one core's log.
#[derive(Debug, Clone, Default)]
struct Repaired {
    valid_end: u64,
    truncated: u64,
    next_sequence: u64,
    epoch: u64,
    repairs: Vec<Repair>,
}

/// A replayed WAL waiting for its base state: see
/// [`PerCoreRecoveryManager::replay`].
#[derive(Debug)]
pub(crate) struct WalReplay {
    base_dir: PathBuf,
    cores: usize,
    covered: Vec<Option<u64>>,
    repaired: Vec<Repaired>,
    done: Vec<Partial>,
}

impl WalReplay {
    /// Merges the replay onto `base` (every WAL entry is newer than it).
    pub(crate) fn onto(
        self,
        mut base: PerCoreRecoveredState,
    ) -> Result<PerCoreRecoveredState, PerCoreWalError> {
        let Self {
            base_dir,
            cores,
            covered,
            mut repaired,
            done,
        } = self;
        let base_state = std::mem::take(&mut base.state);
        let mut out = PerCoreRecoveredState {
            wal_positions: repaired.iter().map(|r| r.valid_end).collect(),
            truncated_bytes: repaired.iter().map(|r| r.truncated).collect(),
            next_sequences: repaired.iter().map(|r| r.next_sequence).collect(),
            final_epoch: repaired
                .iter()
                .map(|r| r.epoch)
                .max()
                .unwrap_or(0)
                .max(base.final_epoch),
            repairs: repaired
                .iter_mut()
                .flat_map(|r| std::mem::take(&mut r.repairs))
                .collect(),
            ..base
        };
        let mut first_seen: Vec<Option<u64>> = vec![None; cores];
        let mut offsets: HashMap<String, (OrderKey, u64)> = HashMap::new();
        let mut watermark: Option<(OrderKey, i64)> = None;
        let mut runs = Vec::with_capacity(done.len());
        for p in done {
            out.entries_replayed += p.replayed;
            out.entries_skipped += p.skipped;
            out.records_replayed += p.records_replayed;
            out.records_skipped += p.records_skipped;
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
            runs.extend(p.runs);
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
                    path: base_dir.clone(),
                    core_id: core,
                    expected: last_covered + 1,
                    actual: first,
                });
            }
        }
        out.state = merge_runs(base_state, runs);
        Ok(out)
    }
}

impl PerCoreRecoveryManager {
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

/// A put or delete one core's replay read. `prefix` and `prefix2` (the
/// key's first 16 bytes, see [`head_of`]) order and tell apart most keys
/// without reading them. The key is at `at` ([`AT_BITS`] of offset under
/// the number of the core's segment, its arena); the value follows the key
/// and runs to the end of the record.
#[derive(Debug, Clone, Copy)]
struct Row {
    prefix: u64,
    prefix2: u64,
    /// Strictly increases within a core: it orders one core's operations.
    timestamp_ns: i64,
    at: u64,
    key_len: u32,
    /// [`DELETED`] for a delete.
    value_len: u32,
}

/// `value_len` of a deleted key (records are shorter than 4 GiB).
const DELETED: u32 = u32::MAX;

impl Row {
    fn arena(&self) -> usize {
        usize::try_from(self.at >> AT_BITS).expect("arena numbers fit")
    }

    fn key_at(&self) -> u64 {
        self.at & ((1 << AT_BITS) - 1)
    }

    fn key<'a>(&self, arenas: &'a [Bytes]) -> &'a [u8] {
        bytes(&arenas[self.arena()], self.key_at(), self.key_len)
    }
}

/// A key's first 16 bytes as two big-endian numbers, zero-padded: their
/// order is the keys' byte order wherever they differ.
fn head_of(key: &[u8]) -> (u64, u64) {
    let mut bytes = [0_u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    let (a, b) = bytes.split_at(8);
    (
        u64::from_be_bytes(a.try_into().expect("8 bytes")),
        u64::from_be_bytes(b.try_into().expect("8 bytes")),
    )
}

/// The order of two keys from their [`head_of`] and lengths, when these
/// decide it: different heads, or equal heads of keys of at most 16 bytes
/// (then the shorter key is a prefix of the longer). `None`: compare the
/// bytes.
fn head_order(a: (u64, u64, u32), b: (u64, u64, u32)) -> Option<std::cmp::Ordering> {
    match (a.0, a.1).cmp(&(b.0, b.1)) {
        std::cmp::Ordering::Equal if a.2 <= 16 && b.2 <= 16 => Some(a.2.cmp(&b.2)),
        std::cmp::Ordering::Equal => None,
        order => Some(order),
    }
}

/// Key order of two rows, each with its arenas.
fn row_order(a: &Row, a_arenas: &[Bytes], b: &Row, b_arenas: &[Bytes]) -> std::cmp::Ordering {
    head_order(
        (a.prefix, a.prefix2, a.key_len),
        (b.prefix, b.prefix2, b.key_len),
    )
    .unwrap_or_else(|| a.key(a_arenas).cmp(b.key(b_arenas)))
}

fn same_key(a: &Row, a_arenas: &[Bytes], b: &Row, b_arenas: &[Bytes]) -> bool {
    row_order(a, a_arenas, b, b_arenas).is_eq()
}

/// Rows one core's replay holds before it folds them to the latest
/// operation per key (40 bytes each: 320 MiB). A fold that keeps more than
/// half of them doubles the threshold, so distinct keys are sorted at most
/// a few extra times and many overwrites of few keys stay small.
const FOLD_ROWS: usize = 8 << 20;

/// One core's replay: its puts and deletes in the order read (folded to the
/// latest per key, in key order, each time there are `fold_at` of them).
#[derive(Debug)]
struct CoreOps {
    rows: Vec<Row>,
    fold_at: usize,
    /// The core's segments read so far (each whole: mapped, on the real
    /// file system).
    arenas: Vec<Bytes>,
    /// (first timestamp, epoch) at each change of epoch.
    epochs: Vec<(i64, u64)>,
}

impl CoreOps {
    fn new(fold_at: usize) -> Self {
        Self {
            rows: Vec::new(),
            fold_at,
            arenas: Vec::new(),
            epochs: Vec::new(),
        }
    }

    /// Records a put (`value_len`) or delete ([`DELETED`]) of `key`, which
    /// lies at `key_at` of the newest arena.
    fn push(
        &mut self,
        key: &[u8],
        key_at: u64,
        value_len: u32,
        epoch: u64,
        timestamp_ns: i64,
    ) -> Result<(), PerCoreWalError> {
        let failed = |what: &str| PerCoreWalError::RecoveryFailed(what.to_owned());
        let key_len = u32::try_from(key.len()).map_err(|_| failed("a key of 4 GiB or more"))?;
        let arena = self
            .arenas
            .len()
            .checked_sub(1)
            .ok_or_else(|| failed("an operation read before its segment"))?;
        if key_at >> AT_BITS != 0 || (arena as u64) >> (64 - AT_BITS) != 0 {
            return Err(failed(
                "a segment of 1 TiB or more, or more than 16 M segments of one core",
            ));
        }
        if self.epochs.last().is_none_or(|e| e.1 != epoch) {
            self.epochs.push((timestamp_ns, epoch));
        }
        let (prefix, prefix2) = head_of(key);
        self.rows.push(Row {
            prefix,
            prefix2,
            timestamp_ns,
            at: ((arena as u64) << AT_BITS) | key_at,
            key_len,
            value_len,
        });
        if self.rows.len() >= self.fold_at {
            latest_per_key(&mut self.rows, &self.arenas);
            self.fold_at = self.fold_at.max(self.rows.len() * 2);
        }
        Ok(())
    }

    /// The latest operation per key, sorted by key: the rows are sorted by
    /// (key, timestamp) and of each key the last is kept (a core's
    /// operations come in merge order, timestamps strictly increasing).
    fn into_run(self, core: u16) -> Run {
        let Self {
            mut rows,
            arenas,
            epochs,
            ..
        } = self;
        latest_per_key(&mut rows, &arenas);
        Run {
            core,
            rows,
            arenas,
            epochs,
        }
    }
}

/// Sorts one core's rows by (key, timestamp) and keeps the last of each key
/// (a core's operations come in merge order, timestamps strictly
/// increasing).
fn latest_per_key(rows: &mut Vec<Row>, arenas: &[Bytes]) {
    rows.sort_unstable_by(|a, b| {
        row_order(a, arenas, b, arenas).then(a.timestamp_ns.cmp(&b.timestamp_ns))
    });
    let mut kept = 0;
    for i in 0..rows.len() {
        let last_of_key = rows
            .get(i + 1)
            .is_none_or(|next| !same_key(&rows[i], arenas, next, arenas));
        if last_of_key {
            rows[kept] = rows[i];
            kept += 1;
        }
    }
    rows.truncate(kept);
}

/// One core's latest operation per key, sorted by key, and the arenas
/// holding their bytes.
#[derive(Debug, Default)]
struct Run {
    core: u16,
    rows: Vec<Row>,
    arenas: Vec<Bytes>,
    /// (first timestamp, epoch) at each change of epoch.
    epochs: Vec<(i64, u64)>,
}

impl Run {
    /// Merge order of a row of this run against one of another core:
    /// (epoch, timestamp, core) decides as [`OrderKey`] does, since within a
    /// core timestamps strictly increase.
    fn order(&self, row: &Row) -> (u64, i64, u16) {
        let at = self.epochs.partition_point(|e| e.0 <= row.timestamp_ns);
        let epoch = at.checked_sub(1).map_or(0, |i| self.epochs[i].1);
        (epoch, row.timestamp_ns, self.core)
    }
}

/// What one replay thread found in its cores.
#[derive(Debug, Default)]
struct Partial {
    /// One per core read.
    runs: Vec<Run>,
    /// Per core read, its first sequence (`None`: no entry).
    first_seen: Vec<(usize, Option<u64>)>,
    /// Latest offset per source, with its merge position.
    offsets: HashMap<String, (OrderKey, u64)>,
    /// Latest watermark, with its merge position.
    watermark: Option<(OrderKey, i64)>,
    replayed: usize,
    skipped: usize,
    records_replayed: usize,
    records_skipped: usize,
    max_epoch: u64,
}

/// Reads `readers` (whole cores, each segment in one piece) into one run
/// per core.
fn replay_cores(
    readers: Vec<(usize, CoreLogReader)>,
    covered: &[Option<u64>],
) -> Result<Partial, (usize, PerCoreWalError)> {
    let mut p = Partial::default();
    for (core, reader) in readers {
        let run = replay_core(core, reader, covered, &mut p).map_err(|e| (core, e))?;
        p.runs.push(run);
    }
    Ok(p)
}

/// Reads one core's log, keeps the positions of its puts and deletes (no
/// key or value is copied: they stay in the segments) and its commits'
/// offsets and watermark, then sorts the positions into the core's run.
fn replay_core(
    core: usize,
    mut reader: CoreLogReader,
    covered: &[Option<u64>],
    p: &mut Partial,
) -> Result<Run, PerCoreWalError> {
    let skip_to = covered.get(core).copied().flatten();
    let mut ops = CoreOps::new(FOLD_ROWS);
    let mut segment = None;
    let mut first = None;
    while reader.advance()? {
        let (Some((number, data)), Some(entry)) = (reader.segment_bytes(), reader.current()) else {
            return Err(PerCoreWalError::Deserialization(
                "record vanished from the read buffer".into(),
            ));
        };
        if segment != Some(number) {
            segment = Some(number);
            ops.arenas.push(data.clone());
            // A reservation is not touched memory: records take at least 20
            // bytes, and a Row 40.
            ops.rows.reserve(data.len() / 64);
        }
        first.get_or_insert(entry.sequence);
        if skip_to.is_some_and(|c| entry.sequence <= c) {
            p.skipped += 1;
            if matches!(entry.operation, OpRef::Put { .. } | OpRef::Delete { .. }) {
                p.records_skipped += 1;
            }
            continue;
        }
        p.replayed += 1;
        p.max_epoch = p.max_epoch.max(entry.epoch);
        let (key, value_len) = match entry.operation {
            OpRef::Put { key, value } => {
                let len = u32::try_from(value.len())
                    .ok()
                    .filter(|&n| n != DELETED)
                    .ok_or_else(|| {
                        PerCoreWalError::RecoveryFailed("a value of 4 GiB or more".into())
                    })?;
                (key, len)
            }
            OpRef::Delete { key } => (key, DELETED),
            OpRef::Commit { offsets, watermark } => {
                let order = entry.order_key();
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
                continue;
            }
            OpRef::Checkpoint { .. } | OpRef::EpochBarrier { .. } => continue,
        };
        p.records_replayed += 1;
        let key_at = key.as_ptr().addr().wrapping_sub(data.as_ptr().addr());
        debug_assert!(
            key_at + key.len() <= data.len(),
            "the key lies in its segment"
        );
        ops.push(
            key,
            key_at as u64,
            value_len,
            entry.epoch,
            entry.timestamp_ns,
        )?;
    }
    p.first_seen.push((core, first));
    let core = u16::try_from(core).map_err(|_| {
        PerCoreWalError::RecoveryFailed(format!("core {core} is past the 65536 cores a WAL holds"))
    })?;
    Ok(ops.into_run(core))
}

/// Merges the base state (a checkpoint's, older than every WAL entry) with
/// the cores' sorted runs: per key the operation with the greatest merge
/// position wins, and deleted keys are dropped.
///
/// The key space is cut into ranges at quantiles of the largest source
/// (the base or a run), and
/// the ranges are merged on `available_parallelism` threads. A merge only
/// picks slots (offsets into the base's and the runs' arenas): no key or
/// value is copied, and the arenas become the result's. Then a WAL segment
/// whose live bytes are under half of it is copied down to them
/// ([`compact`]), so overwrites do not keep whole segments alive.
fn merge_runs(base: StateMap, runs: Vec<Run>) -> StateMap {
    const MIN_ROWS_PER_RANGE: usize = 1 << 16;
    let total = runs.iter().map(|r| r.rows.len()).sum::<usize>() + base.len();
    let ranges = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(total / MIN_ROWS_PER_RANGE)
        .max(1);
    merge_runs_in(base, runs, ranges)
}

/// One run's rows of a key range, the run, and the number in the result of
/// its first arena.
type RunPiece<'a> = (&'a [Row], &'a Run, usize);

/// [`merge_runs`] over at most `ranges` key ranges (one thread each).
fn merge_runs_in(base: StateMap, runs: Vec<Run>, ranges: usize) -> StateMap {
    let (mut arenas, base_slots) = base.into_parts();
    let first_run_arena = arenas.len();
    let mut run_arena = Vec::with_capacity(runs.len());
    let mut next = first_run_arena;
    for run in &runs {
        run_arena.push(next);
        next += run.arenas.len();
    }
    // Split keys: quantiles of the largest source (the base or a run),
    // strictly increasing. `ranges` may come from the total of all sources,
    // so every run can be empty (a WAL tail of barriers and commits only,
    // right after a checkpoint) while the base is large: an empty source
    // gives no split key, never an index.
    let largest_run = runs.iter().max_by_key(|r| r.rows.len());
    let run_rows = largest_run.map_or(0, |r| r.rows.len());
    let quantiles: Vec<&[u8]> = match largest_run {
        Some(run) if run_rows >= base_slots.len() => {
            quantile_keys(run_rows, ranges, |i| run.rows[i].key(&run.arenas))
        }
        _ => quantile_keys(base_slots.len(), ranges, |i| base_slots[i].key(&arenas)),
    };
    let mut splits: Vec<&[u8]> = Vec::new();
    for key in quantiles {
        if splits.last().is_none_or(|last| *last < key) {
            splits.push(key);
        }
    }
    // Range r holds the keys in [splits[r - 1], splits[r]).
    let base_cuts = cut(&splits, base_slots.len(), |i| base_slots[i].key(&arenas));
    let run_cuts: Vec<Vec<std::ops::Range<usize>>> = runs
        .iter()
        .map(|run| cut(&splits, run.rows.len(), |i| run.rows[i].key(&run.arenas)))
        .collect();
    let jobs: Vec<(&[Slot], Vec<RunPiece<'_>>)> = (0..=splits.len())
        .map(|r| {
            let pieces = runs
                .iter()
                .zip(&run_cuts)
                .zip(&run_arena)
                .map(|((run, cuts), &first)| (&run.rows[cuts[r].clone()], run, first))
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
    let total: usize = merged.iter().map(Vec::len).sum();
    let mut merged = merged.into_iter();
    let mut slots = merged.next().unwrap_or_default();
    slots.reserve_exact(total - slots.len());
    for piece in merged {
        slots.extend_from_slice(&piece);
    }
    drop(base_slots);
    for run in runs {
        drop(run.rows);
        arenas.extend(run.arenas);
    }
    compact(&mut arenas, &mut slots, first_run_arena);
    StateMap::from_parts(arenas, slots)
}

/// The keys at the `ranges - 1` inner quantiles of `len` sorted keys (none
/// for an empty source: nothing is indexed).
fn quantile_keys<'a>(
    len: usize,
    ranges: usize,
    key_at: impl Fn(usize) -> &'a [u8],
) -> Vec<&'a [u8]> {
    if len == 0 {
        return Vec::new();
    }
    // i < ranges, so i * len / ranges < len.
    (1..ranges).map(|i| key_at(i * len / ranges)).collect()
}

/// Copies the live keys and values of every arena from `from` on (WAL
/// segments) whose live bytes are under half of it into one new arena, and
/// drops those arenas: a segment of mostly overwritten or deleted keys does
/// not stay in memory for a few live ones.
fn compact(arenas: &mut Vec<Bytes>, slots: &mut [Slot], from: usize) {
    let mut live = vec![0_u64; arenas.len()];
    for s in slots.iter() {
        live[s.arena()] += u64::from(s.key_len) + u64::from(s.value_len);
    }
    let sparse: Vec<bool> = arenas
        .iter()
        .zip(&live)
        .enumerate()
        .map(|(i, (arena, &live))| i >= from && !arena.is_empty() && live * 2 < arena.len() as u64)
        .collect();
    if !sparse.contains(&true) {
        return;
    }
    let size: u64 = live
        .iter()
        .zip(&sparse)
        .filter(|(_, &s)| s)
        .map(|(l, _)| l)
        .sum();
    let mut arena = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let id = arenas.len();
    for s in slots.iter_mut().filter(|s| sparse[s.arena()]) {
        let key_at = arena.len() as u64;
        arena.extend_from_slice(s.key(arenas));
        arena.extend_from_slice(s.value(arenas));
        *s = Slot::new(id, key_at, s.key_len, s.value_len);
    }
    for (a, sparse) in arenas.iter_mut().zip(sparse) {
        if sparse {
            *a = Bytes::new();
        }
    }
    arenas.push(Bytes::from(arena));
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
/// row) and the cores' sorted rows in that range.
fn merge_range(base_arenas: &[Bytes], base: &[Slot], runs: &[RunPiece<'_>]) -> Vec<Slot> {
    let capacity = runs.iter().map(|r| r.0.len()).max().unwrap_or(0) + base.len();
    let mut merged: Vec<Slot> = Vec::with_capacity(capacity);
    let mut at = vec![0_usize; runs.len()];
    let mut b = 0;
    loop {
        // The run whose head has the smallest key.
        let mut smallest: Option<usize> = None;
        for (i, &(rows, run, _)) in runs.iter().enumerate() {
            let Some(head) = rows.get(at[i]) else {
                continue;
            };
            let better = smallest.is_none_or(|s| {
                let (srows, srun, _) = runs[s];
                row_order(head, &run.arenas, &srows[at[s]], &srun.arenas).is_lt()
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
        for (i, &(rows, run, _)) in runs.iter().enumerate() {
            if let Some(head) = rows.get(at[i]) {
                let wrun = runs[winner.1].1;
                if same_key(head, &run.arenas, &winner.0, &wrun.arenas) {
                    if run.order(head) > wrun.order(&winner.0) {
                        winner = (*head, i);
                    }
                    at[i] += 1;
                }
            }
        }
        let (row, (_, run, first)) = (winner.0, runs[winner.1]);
        // Base keys before the winner's come first; an equal one is replaced.
        // The base's keys are read in order; the winner's bytes (at a random
        // place of a segment) only when the first 16 bytes do not decide.
        while let Some(slot) = base.get(b) {
            let base_key = slot.key(base_arenas);
            let (p1, p2) = head_of(base_key);
            let order = head_order(
                (p1, p2, slot.key_len),
                (row.prefix, row.prefix2, row.key_len),
            )
            .unwrap_or_else(|| base_key.cmp(row.key(&run.arenas)));
            match order {
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
            merged.push(Slot::new(
                first + row.arena(),
                row.key_at(),
                row.key_len,
                row.value_len,
            ));
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
            let mut records = 0;
            for i in 0..4000_u64 {
                let core = usize::try_from(next() % cores as u64).unwrap();
                let key = format!("k{:04}", next() % 150).into_bytes();
                let w = m.writer(core);
                match next() % 10 {
                    0 => {
                        w.append_delete(&key).unwrap();
                        records += 1;
                    }
                    1 => {
                        let src = format!("s{}", next() % 3);
                        let offsets: HashMap<String, u64> = [(src, i)].into();
                        let watermark = (i % 2 == 0).then_some(i64::try_from(i).unwrap());
                        w.append_commit(offsets, watermark).unwrap();
                    }
                    _ => {
                        w.append_put(&key, format!("v{i}").as_bytes()).unwrap();
                        records += 1;
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
            assert_eq!(got.records_replayed, records, "{cores} cores");

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

    #[test]
    fn the_state_outlives_its_segments_and_sparse_ones_are_copied_down() {
        let tmp = tempfile::tempdir().unwrap();
        let config = PerCoreWalConfig::new(tmp.path(), 2).with_segment_bytes(64 << 10);
        let mut m = PerCoreWalManager::new(config.clone()).unwrap();
        // Core 0: distinct keys (its segments stay mapped). Core 1: 20 keys
        // overwritten over many segments (all but the newest values dead).
        for i in 0..3000_u32 {
            let value = format!("value {i} {}", "x".repeat(64));
            m.writer(0)
                .append_put(format!("distinct-{i:05}").as_bytes(), value.as_bytes())
                .unwrap();
            m.writer(1)
                .append_put(format!("hot-{:02}", i % 20).as_bytes(), value.as_bytes())
                .unwrap();
        }
        m.sync_all().unwrap();
        drop(m);
        let manager = PerCoreRecoveryManager::new(config);
        let (expected, _, _) = sequential(&manager);
        let got = manager.recover().unwrap();
        let (arenas, _) = got.state.clone().into_parts();
        let dropped = arenas.iter().filter(|a| a.is_empty()).count();
        let kept = arenas.iter().filter(|a| !a.is_empty()).count();
        // Core 1's segments were copied down (and dropped); core 0's kept.
        assert!(dropped >= 4, "{dropped} arenas dropped of {}", arenas.len());
        // Removing every segment file leaves the mapped state readable.
        let mut removed = 0;
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
            removed += 1;
        }
        assert_eq!(got.state, expected);
        assert_eq!(got.state.len(), 3020);
        println!(
            "{} keys equal to the sequential merge after removing {removed} segment files; \
             {dropped} sparse segments copied down, {kept} arenas kept",
            got.state.len()
        );
    }

    /// A core's run from its operations in order: (key, value or `None`
    /// for a delete, epoch, timestamp), all in one arena.
    /// (key, value or `None` for a delete, epoch, timestamp).
    type TestOp = (Vec<u8>, Option<Vec<u8>>, u64, i64);

    fn run_of(core: u16, ops: &[TestOp], fold_at: usize) -> Run {
        let mut arena = Vec::new();
        let mut at = Vec::new();
        for (k, v, _, _) in ops {
            at.push(arena.len() as u64);
            arena.extend_from_slice(k);
            arena.extend_from_slice(v.as_deref().unwrap_or_default());
        }
        let mut c = CoreOps::new(fold_at);
        c.arenas.push(Bytes::from(arena));
        for ((k, v, epoch, ts), at) in ops.iter().zip(at) {
            let len = v
                .as_ref()
                .map_or(DELETED, |v| u32::try_from(v.len()).unwrap());
            c.push(k, at, len, *epoch, *ts).unwrap();
        }
        c.into_run(core)
    }

    #[test]
    fn merging_in_key_ranges_equals_merging_in_one_and_the_model() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut tried = 0;
        let mut compacted = 0;
        for (ranges, keys) in [(2_usize, 1000_u64), (3, 1000), (4, 40), (7, 1000)] {
            // Keys that share their first 8 bytes and keys that do not.
            let key = |next: &mut dyn FnMut() -> u64| {
                let n = next() % keys;
                if n.is_multiple_of(2) {
                    format!("k{n:04}").into_bytes()
                } else {
                    format!("customer:{n:06}").into_bytes()
                }
            };
            let mut base = BTreeMap::new();
            for _ in 0..300 {
                base.insert(key(&mut next), b"base".to_vec());
            }
            let mut all = Vec::new();
            let mut runs = Vec::new();
            for core in 0..3_u16 {
                let mut ops = Vec::new();
                let (mut epoch, mut ts) = (0, 0);
                for s in 0..400_u64 {
                    let k = key(&mut next);
                    let v =
                        (!next().is_multiple_of(5)).then(|| format!("v{core}.{s}").into_bytes());
                    epoch += u64::from(next().is_multiple_of(50));
                    ts += 1 + i64::try_from(next() % 3).unwrap();
                    all.push(((epoch, ts, core), k.clone(), v.clone()));
                    ops.push((k, v, epoch, ts));
                }
                runs.push(ops);
            }
            all.sort_by_key(|a| a.0);
            let mut model = base.clone();
            for (_, k, v) in all {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let make = |fold_at| {
                let runs: Vec<Run> = runs
                    .iter()
                    .enumerate()
                    .map(|(core, ops)| run_of(u16::try_from(core).unwrap(), ops, fold_at))
                    .collect();
                (StateMap::from(base.clone()), runs)
            };
            let (base1, runs1) = make(FOLD_ROWS);
            let (base2, runs2) = make(FOLD_ROWS);
            // Folded every 16 rows (doubling while folds keep over half).
            let (base3, runs3) = make(16);
            if keys == 40 {
                // 400 operations on 40 keys never held more than 2 x 40 + 16.
                for run in &runs3 {
                    assert!(run.rows.capacity() <= 128, "{}", run.rows.capacity());
                }
            }
            let one = merge_runs_in(base1, runs1, 1);
            let split = merge_runs_in(base2, runs2, ranges);
            let folded = merge_runs_in(base3, runs3, ranges);
            assert!(!one.is_empty());
            assert_eq!(one, model, "one range, {keys} keys");
            assert_eq!(split, model, "{ranges} ranges, {keys} keys");
            assert_eq!(folded, model, "folded, {ranges} ranges, {keys} keys");
            // 40 keys overwritten 1200 times: the runs' arenas are sparse.
            let (arenas, _) = split.into_parts();
            compacted += usize::from(arenas.iter().filter(|a| a.is_empty()).count() == 3);
            tried += 1;
        }
        assert_eq!(compacted, 1, "only the 40-key case leaves sparse arenas");
        println!(
            "{tried} range counts merged equal to one range and to the model; \
             {compacted} case compacted its sparse arenas"
        );
    }

    /// Issue: the split keys were quantiles of the largest run even when
    /// every run was empty (a WAL tail of barriers only, right after a
    /// checkpoint) and `ranges` came from the base's size: index 0 of an
    /// empty run.
    #[test]
    fn empty_runs_over_a_big_base_split_on_the_base() {
        let base: BTreeMap<Vec<u8>, Vec<u8>> = (0..5000_u32)
            .map(|i| (format!("k{i:05}").into_bytes(), b"base".to_vec()))
            .collect();
        let mut merged = 0;
        for ranges in [1_usize, 2, 3, 8] {
            let empty = vec![run_of(0, &[], FOLD_ROWS), run_of(1, &[], FOLD_ROWS)];
            let got = merge_runs_in(StateMap::from(base.clone()), empty, ranges);
            assert_eq!(got, base, "{ranges} ranges, empty runs");
            // A run smaller than the base: the base still gives the splits.
            let small = vec![
                run_of(
                    0,
                    &[
                        (b"k00007".to_vec(), None, 0, 1),
                        (b"k02500".to_vec(), Some(b"new".to_vec()), 0, 2),
                        (b"zzz".to_vec(), Some(b"last".to_vec()), 0, 3),
                    ],
                    FOLD_ROWS,
                ),
                run_of(1, &[], FOLD_ROWS),
            ];
            let mut model = base.clone();
            model.remove(&b"k00007"[..]);
            model.insert(b"k02500".to_vec(), b"new".to_vec());
            model.insert(b"zzz".to_vec(), b"last".to_vec());
            let got = merge_runs_in(StateMap::from(base.clone()), small, ranges);
            assert_eq!(got, model, "{ranges} ranges, a small run");
            // Nothing at all.
            let none = merge_runs_in(StateMap::default(), vec![run_of(0, &[], FOLD_ROWS)], ranges);
            assert!(none.is_empty());
            merged += 3;
        }
        println!("{merged} merges of empty or small runs over a 5000-key base in 1 to 8 ranges");
    }

    #[test]
    fn head_order_agrees_with_byte_order() {
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
            b"abcdefghijklmno",
            b"abcdefghijklmno\0",
            b"abcdefghijklmnop",
            b"abcdefghijklmnop\0",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnoq",
            b"abcdefghijklmnoq\0\0",
            b"b",
        ];
        let arena = [Bytes::from(keys.concat())];
        let mut rows = Vec::new();
        let mut at = 0_u64;
        for k in &keys {
            let len = u32::try_from(k.len()).unwrap();
            let (prefix, prefix2) = head_of(k);
            rows.push(Row {
                prefix,
                prefix2,
                timestamp_ns: 0,
                at,
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
