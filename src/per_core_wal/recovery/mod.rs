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
//!
//! The submodules follow that path: [`repair`] cuts torn tails and reports
//! segment statistics, [`replay`] reads the cores into sorted runs (each a
//! [`run`]), and [`merge_runs`] merges the runs onto the base state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::log::{CoreLogReader, Repair, SegmentRead};
use super::manager::PerCoreWalConfig;
#[cfg(test)]
use super::merge::MergeStream;
use super::segment::{list_segments, ReadLimits, SegmentFile, SegmentNaming};
use super::state_map::StateMap;

mod merge_runs;
mod repair;
mod replay;
mod run;

use repair::Repaired;
pub use repair::SegmentStats;
use replay::Partial;

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
    use std::collections::BTreeMap;

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
}
