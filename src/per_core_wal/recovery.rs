//! Recovery from the per-core WAL: repair torn tails, replay every entry in
//! merge order, report per-segment statistics.
//!
//! This is the WAL half of recovery. Loading the newest checkpoint from the
//! object store first (and replaying only what it does not cover) builds on
//! it in the checkpoint layer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::OpRef;
use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::log::{scan_core, CoreLogReader, SegmentRead};
use super::manager::PerCoreWalConfig;
use super::merge::MergeStream;
use super::segment::{list_segments, SegmentCursor, SegmentFile, SegmentNaming, Step};

/// State rebuilt by replaying the WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerCoreRecoveredState {
    /// Latest value of every live key (deleted keys are absent).
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
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

    /// A strict merge stream over every segment of every core (after repair).
    fn stream(&self) -> Result<MergeStream, PerCoreWalError> {
        let listed = self.listed()?;
        let limits = self.wal_config.read_limits();
        let readers = (0..self.wal_config.num_cores)
            .map(|core_id| {
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
            })
            .collect();
        Ok(MergeStream::new(readers, self.wal_config.num_cores))
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
        let repaired = self.repair()?;
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
        let cores = self.wal_config.num_cores;
        let mut first_seen: Vec<Option<u64>> = vec![None; cores];
        let mut stream = self.stream()?;
        while let Some(entry) = stream.next_ref() {
            let entry = entry?;
            let core = usize::from(entry.core_id);
            if let Some(slot) = first_seen.get_mut(core) {
                slot.get_or_insert(entry.sequence);
            }
            if covered
                .get(core)
                .copied()
                .flatten()
                .is_some_and(|c| entry.sequence <= c)
            {
                out.entries_skipped += 1;
                continue;
            }
            out.entries_replayed += 1;
            out.final_epoch = out.final_epoch.max(entry.epoch);
            match entry.operation {
                OpRef::Put { key, value } => {
                    out.state.insert(key.to_vec(), value.to_vec());
                }
                OpRef::Delete { key } => {
                    out.state.remove(key);
                }
                OpRef::Commit { offsets, watermark } => {
                    for (source, offset) in offsets {
                        out.source_offsets.insert(source.to_owned(), offset);
                    }
                    if watermark.is_some() {
                        out.watermark = watermark;
                    }
                }
                OpRef::Checkpoint { .. } | OpRef::EpochBarrier { .. } => {}
            }
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
