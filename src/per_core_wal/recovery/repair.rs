//! Repair of the newest segments' torn or zero-filled tails before replay,
//! and per-segment statistics read without changing anything: the first
//! step of WAL recovery.

use std::path::PathBuf;

use super::{LogStart, PerCoreRecoveryManager};
use crate::per_core_wal::error::PerCoreWalError;
use crate::per_core_wal::log::{check_log_start, scan_core, Repair};
use crate::per_core_wal::segment::{SegmentCursor, Step};

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

impl PerCoreRecoveryManager {
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
    pub(super) fn repair(
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

/// What the repair found in one core's log.
#[derive(Debug, Clone, Default)]
pub(super) struct Repaired {
    pub(super) valid_end: u64,
    pub(super) truncated: u64,
    pub(super) next_sequence: u64,
    pub(super) epoch: u64,
    pub(super) repairs: Vec<Repair>,
}
