//! Parallel replay of the cores' logs: each core's segments are read whole
//! and its puts and deletes kept as positions, folded into one sorted
//! [`Run`] per core, with the commits' offsets and watermark beside it. The
//! runs go on to [`super::merge_runs`].

use std::collections::HashMap;

use super::run::{CoreOps, Run, DELETED, FOLD_ROWS};
use super::PerCoreRecoveryManager;
use crate::per_core_wal::entry::{OpRef, OrderKey};
use crate::per_core_wal::error::PerCoreWalError;
use crate::per_core_wal::log::CoreLogReader;

impl PerCoreRecoveryManager {
    /// Replays the cores on up to `available_parallelism` threads (a thread
    /// reads whole cores), each into its own map of latest operation per key.
    pub(super) fn replay_parallel(
        &self,
        covered: &[Option<u64>],
    ) -> Result<Vec<Partial>, PerCoreWalError> {
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
}

/// What one replay thread found in its cores.
#[derive(Debug, Default)]
pub(super) struct Partial {
    /// One per core read.
    pub(super) runs: Vec<Run>,
    /// Per core read, its first sequence (`None`: no entry).
    pub(super) first_seen: Vec<(usize, Option<u64>)>,
    /// Latest offset per source, with its merge position.
    pub(super) offsets: HashMap<String, (OrderKey, u64)>,
    /// Latest watermark, with its merge position.
    pub(super) watermark: Option<(OrderKey, i64)>,
    pub(super) replayed: usize,
    pub(super) skipped: usize,
    pub(super) records_replayed: usize,
    pub(super) records_skipped: usize,
    pub(super) max_epoch: u64,
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
