//! The manager: opens (and repairs) every core's log, hands out writers,
//! advances epochs, syncs, merges and removes covered segments.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::clock::{SystemClock, WalClock};
use super::entry::PerCoreWalEntry;
use super::error::PerCoreWalError;
use super::fs::{StdFileSystem, WalFileSystem};
use super::log::{
    check_log_start, read_header, scan_core, CoreLogReader, CoreScan, Repair, SegmentRead,
};
use super::merge::MergeStream;
use super::reaper::Reaper;
use super::segment::{list_segments, ReadLimits, SegmentFile, SegmentNaming};
use super::writer::{CoreShared, CoreWalWriter, WriterInit};

/// Per core, (segment, offset an active segment was read to).
type MergedSegments = Vec<Vec<(u64, Option<u64>)>>;

/// Configuration for per-core WAL: plain data with documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerCoreWalConfig {
    /// Directory of the segment files. Default: `wal`.
    pub base_dir: PathBuf,
    /// Number of cores, one log each (1 to 65,536). Default: 1.
    pub num_cores: usize,
    /// File name pattern; `{core_id}` becomes `<core>-<segment, 10 digits>`.
    /// Default: `wal-{core_id}.log`, giving `wal-3-0000000042.log`.
    pub segment_pattern: String,
    /// A core starts a new segment before one would grow past this many
    /// bytes (and whenever its epoch advances). Default: 64 MiB.
    pub segment_bytes: u64,
    /// Largest record payload; larger appends are refused and a larger
    /// length on disk is corruption, never an allocation. Default: 16 MiB.
    pub max_record_bytes: u32,
    /// A writer hands its buffer to the OS once it holds this many bytes:
    /// the bytes up to the segment's last 64 KiB boundary (so each `write()`
    /// fills whole pages); the rest waits for the next write or a sync.
    /// Default: 256 KiB.
    pub write_buffer_bytes: usize,
    /// Read buffer per segment reader (so per core in a merge).
    /// Default: 256 KiB.
    pub read_buffer_bytes: usize,
}

impl Default for PerCoreWalConfig {
    fn default() -> Self {
        Self {
            base_dir: PathBuf::from("wal"),
            num_cores: 1,
            segment_pattern: "wal-{core_id}.log".to_owned(),
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            write_buffer_bytes: 256 << 10,
            read_buffer_bytes: 256 << 10,
        }
    }
}

impl PerCoreWalConfig {
    /// Creates a configuration with the defaults for `num_cores` cores in `base_dir`.
    #[must_use]
    pub fn new(base_dir: &Path, num_cores: usize) -> Self {
        Self {
            base_dir: base_dir.to_path_buf(),
            num_cores,
            ..Self::default()
        }
    }

    /// Sets the file name pattern; it must contain `{core_id}`.
    #[must_use]
    pub fn with_segment_pattern(mut self, pattern: &str) -> Self {
        pattern.clone_into(&mut self.segment_pattern);
        self
    }

    /// Sets `segment_bytes`.
    #[must_use]
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Sets `max_record_bytes`.
    #[must_use]
    pub fn with_max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Path of segment `segment` of core `core_id` (whether or not it exists).
    #[must_use]
    pub fn segment_file_path(&self, core_id: usize, segment: u64) -> PathBuf {
        let naming = SegmentNaming::new(&self.segment_pattern).unwrap_or_default();
        self.base_dir.join(naming.file_name(core_id, segment))
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), PerCoreWalError> {
        let bad = |field, reason: String| Err(PerCoreWalError::InvalidConfig { field, reason });
        if self.num_cores == 0 || self.num_cores > usize::from(u16::MAX) + 1 {
            return bad(
                "num_cores",
                format!("{} is not between 1 and 65536", self.num_cores),
            );
        }
        if SegmentNaming::new(&self.segment_pattern).is_none() {
            return bad(
                "segment_pattern",
                format!("{:?} must contain {{core_id}}", self.segment_pattern),
            );
        }
        if self.segment_bytes < 4096 {
            return bad(
                "segment_bytes",
                format!("{} is below the minimum of 4096", self.segment_bytes),
            );
        }
        if !(64..=1 << 30).contains(&self.max_record_bytes) {
            return bad(
                "max_record_bytes",
                format!("{} is not between 64 and 1 GiB", self.max_record_bytes),
            );
        }
        if self.write_buffer_bytes == 0 || self.write_buffer_bytes > 1 << 30 {
            return bad(
                "write_buffer_bytes",
                format!("{} is not between 1 and 1 GiB", self.write_buffer_bytes),
            );
        }
        if !(4096..=1 << 30).contains(&self.read_buffer_bytes) {
            return bad(
                "read_buffer_bytes",
                format!("{} is not between 4096 and 1 GiB", self.read_buffer_bytes),
            );
        }
        Ok(())
    }

    fn naming(&self) -> SegmentNaming {
        SegmentNaming::new(&self.segment_pattern).expect("validated at open")
    }

    pub(crate) fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_record_bytes: self.max_record_bytes,
            read_buffer_bytes: self.read_buffer_bytes,
        }
    }
}

/// What opening found and repaired in one core's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreOpenReport {
    /// Core ID.
    pub core_id: usize,
    /// Segments that were on disk (after repair).
    pub segments: usize,
    /// Bytes cut from the newest segment's torn or zero-filled tail.
    pub truncated_bytes: u64,
    /// Whether a newest segment whose header never became durable was removed.
    pub removed_empty_segment: bool,
    /// Every byte range the repair removed (the file, the range, the
    /// reason), as recovery reports them; each was logged as a warning.
    pub repairs: Vec<Repair>,
    /// Sequence the writer continues with.
    pub next_sequence: u64,
}

/// Components of a manager: the file system and the clock.
#[derive(Debug, Clone)]
pub struct PerCoreWalManagerBuilder {
    config: PerCoreWalConfig,
    fs: Arc<dyn WalFileSystem>,
    clock: Arc<dyn WalClock>,
    resume: Option<(Vec<u64>, u64)>,
    covered: Option<Vec<Option<u64>>>,
}

impl PerCoreWalManagerBuilder {
    /// Refuses to open a log that starts after what the newest checkpoint
    /// covers (`covered[core]`, `None`: nothing, so it must start at 0):
    /// [`PerCoreWalError::MissingSegments`]. For the ingester, which knows
    /// the newest checkpoint (or that there is none).
    #[must_use]
    pub(crate) fn covered(mut self, covered: Vec<Option<u64>>) -> Self {
        self.covered = Some(covered);
        self
    }

    /// Uses `fs` for every file operation (tests pass a simulated disk).
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn WalFileSystem>) -> Self {
        self.fs = fs;
        self
    }

    /// Uses `clock` for entry timestamps.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn WalClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Continues after a recovery: every core's next sequence is at least
    /// `next_sequences[core]` and the epoch at least `epoch`, even where the
    /// local log is gone (a new machine recovering from the object store),
    /// so no sequence number a checkpoint holds is ever reused.
    #[must_use]
    pub fn resume_at(mut self, next_sequences: Vec<u64>, epoch: u64) -> Self {
        self.resume = Some((next_sequences, epoch));
        self
    }

    /// Opens the WAL, creating the directory and the logs of cores that have
    /// none. Same as [`PerCoreWalManager::new`].
    pub fn create(self) -> Result<PerCoreWalManager, PerCoreWalError> {
        PerCoreWalManager::open_inner(self, true)
    }

    /// Opens an existing WAL. Same as [`PerCoreWalManager::open`].
    pub fn open(self) -> Result<PerCoreWalManager, PerCoreWalError> {
        PerCoreWalManager::open_inner(self, false)
    }
}

/// Per-core WAL manager.
///
/// Owns the writers until they are moved to their threads
/// ([`PerCoreWalManager::take_writer`]); keeps, per core, only what it needs
/// to advance epochs, report positions, merge and remove covered segments.
#[derive(Debug)]
pub struct PerCoreWalManager {
    config: PerCoreWalConfig,
    naming: SegmentNaming,
    fs: Arc<dyn WalFileSystem>,
    writers: Vec<Option<CoreWalWriter>>,
    shared: Vec<Arc<CoreShared>>,
    global_epoch: Arc<AtomicU64>,
    /// Per core, the segments the last `merge_segments*` call read, with
    /// the offset an active segment was read to (`None`: sealed, read
    /// whole), for `reset_all`.
    last_merge: Mutex<MergedSegments>,
    reports: Vec<CoreOpenReport>,
    /// Deletes covered segments in the background (see [`Reaper`]).
    reaper: Reaper,
}

impl PerCoreWalManager {
    /// A builder to set the file system or clock before opening.
    #[must_use]
    pub fn builder(config: PerCoreWalConfig) -> PerCoreWalManagerBuilder {
        PerCoreWalManagerBuilder {
            config,
            fs: Arc::new(StdFileSystem),
            clock: Arc::new(SystemClock),
            resume: None,
            covered: None,
        }
    }

    /// Opens the WAL in `config.base_dir`, creating the directory and a log
    /// for every core that has none.
    ///
    /// Unlike the seed, an existing WAL is recovered rather than appended to
    /// blindly: torn tails are truncated, sequence numbers and epochs
    /// continue, and every writer starts a new segment. On `Ok` every
    /// writer's first segment is durable.
    pub fn new(config: PerCoreWalConfig) -> Result<Self, PerCoreWalError> {
        Self::builder(config).create()
    }

    /// Opens an existing WAL: every core must have a segment. Torn tails of
    /// the newest segments are truncated (and the truncation synced); every
    /// writer continues in a new segment at the highest epoch found.
    pub fn open(config: PerCoreWalConfig) -> Result<Self, PerCoreWalError> {
        Self::builder(config).open()
    }

    fn open_inner(b: PerCoreWalManagerBuilder, create: bool) -> Result<Self, PerCoreWalError> {
        let PerCoreWalManagerBuilder {
            config,
            fs,
            clock,
            resume,
            covered,
        } = b;
        config.validate()?;
        let naming = config.naming();
        let dir = config.base_dir.clone();
        if create {
            fs.create_dir_all(&dir)
                .map_err(|e| PerCoreWalError::io("create WAL directory", &dir, e))?;
        }
        let listed = match list_segments(&*fs, &dir, &naming, config.num_cores) {
            Ok(listed) => listed,
            Err(PerCoreWalError::Io { .. }) if !create => {
                return Err(PerCoreWalError::SegmentNotFound {
                    core_id: 0,
                    path: dir,
                })
            }
            Err(e) => return Err(e),
        };
        let (scans, repairs) = scan_cores(&fs, &config, listed, create, covered.as_deref())?;
        let (floor_sequences, floor_epoch) = resume.unwrap_or_default();
        let epoch = scans
            .iter()
            .flatten()
            .map(|s| s.epoch)
            .max()
            .unwrap_or(0)
            .max(floor_epoch);
        let mut writers = Vec::with_capacity(config.num_cores);
        let mut shared = Vec::with_capacity(config.num_cores);
        let mut reports = Vec::with_capacity(config.num_cores);
        for ((core_id, scan), repairs) in scans.into_iter().enumerate().zip(repairs) {
            let core_shared = Arc::new(CoreShared::default());
            let floor = floor_sequences.get(core_id).copied().unwrap_or(0);
            let (segment, next_sequence, last_timestamp) =
                scan.as_ref().map_or((0, floor, i64::MIN), |s| {
                    (s.next_segment, s.next_sequence.max(floor), s.last_timestamp)
                });
            if let Some(s) = &scan {
                core_shared
                    .sealed_bytes
                    .store(s.total_bytes, Ordering::Relaxed);
            }
            reports.push(CoreOpenReport {
                core_id,
                segments: scan.as_ref().map_or(0, |s| s.segments.len()),
                truncated_bytes: scan.as_ref().map_or(0, |s| s.truncated_bytes),
                // A cut tail starts after the header; a removed segment at 0.
                removed_empty_segment: repairs.iter().any(|r| r.from == 0),
                next_sequence,
                repairs,
            });
            let writer = CoreWalWriter::start(WriterInit {
                core_id,
                dir: dir.clone(),
                naming: naming.clone(),
                fs: Arc::clone(&fs),
                clock: Arc::clone(&clock),
                shared: Arc::clone(&core_shared),
                segment,
                epoch,
                next_sequence,
                last_timestamp,
                segment_bytes: config.segment_bytes,
                max_record_bytes: config.max_record_bytes,
                write_buffer_bytes: config.write_buffer_bytes,
            })?;
            writers.push(Some(writer));
            shared.push(core_shared);
        }
        Ok(Self {
            last_merge: Mutex::new(vec![Vec::new(); config.num_cores]),
            reaper: Reaper::new(Arc::clone(&fs), &dir),
            config,
            naming,
            fs,
            writers,
            shared,
            global_epoch: Arc::new(AtomicU64::new(epoch)),
            reports,
        })
    }

    /// Returns the configuration.
    #[must_use]
    pub fn config(&self) -> &PerCoreWalConfig {
        &self.config
    }

    /// Returns the number of cores.
    #[must_use]
    pub fn num_cores(&self) -> usize {
        self.config.num_cores
    }

    /// What opening found and repaired, per core.
    #[must_use]
    pub fn open_reports(&self) -> &[CoreOpenReport] {
        &self.reports
    }

    /// Returns the current global epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.global_epoch.load(Ordering::Acquire)
    }

    /// Returns a shared reference to the global epoch counter.
    #[must_use]
    pub fn epoch_ref(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.global_epoch)
    }

    /// Gets the writer for a specific core.
    ///
    /// # Panics
    ///
    /// Panics if `core_id >= num_cores` or the writer was taken with
    /// [`PerCoreWalManager::take_writer`]; [`PerCoreWalManager::writer_checked`]
    /// returns an error instead.
    #[must_use]
    pub fn writer(&mut self, core_id: usize) -> &mut CoreWalWriter {
        match self.writer_checked(core_id) {
            Ok(writer) => writer,
            Err(e) => panic!("{e}"),
        }
    }

    /// Gets the writer for a specific core, checking bounds.
    pub fn writer_checked(
        &mut self,
        core_id: usize,
    ) -> Result<&mut CoreWalWriter, PerCoreWalError> {
        let max_core_id = self.config.num_cores - 1;
        self.writers
            .get_mut(core_id)
            .ok_or(PerCoreWalError::InvalidCoreId {
                core_id,
                max_core_id,
            })?
            .as_mut()
            .ok_or(PerCoreWalError::WriterDetached { core_id })
    }

    /// Moves a core's writer out, to be owned by that core's thread. The
    /// manager still advances its epoch (the writer picks the new epoch up
    /// at its next append), reports its synced position, merges its synced
    /// entries and removes its covered segments.
    pub fn take_writer(&mut self, core_id: usize) -> Result<CoreWalWriter, PerCoreWalError> {
        self.writer_checked(core_id)?;
        self.writers[core_id]
            .take()
            .ok_or(PerCoreWalError::WriterDetached { core_id })
    }

    /// Gives a writer taken with [`PerCoreWalManager::take_writer`] back.
    pub fn attach_writer(&mut self, writer: CoreWalWriter) -> Result<(), PerCoreWalError> {
        let core_id = writer.core_id();
        let slot = self
            .writers
            .get_mut(core_id)
            .ok_or(PerCoreWalError::InvalidCoreId {
                core_id,
                max_core_id: self.config.num_cores - 1,
            })?;
        if slot.is_some() || !Arc::ptr_eq(&self.shared[core_id], writer.shared()) {
            return Err(PerCoreWalError::InvalidConfig {
                field: "writer",
                reason: format!("core {core_id}'s writer does not belong to this manager"),
            });
        }
        *slot = Some(writer);
        Ok(())
    }

    /// Advances the global epoch and returns the new epoch. Writers move to
    /// it with [`PerCoreWalManager::set_epoch_all`].
    #[must_use]
    pub fn advance_epoch(&self) -> u64 {
        self.global_epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Sets the epoch on all writers, attached or detached (a detached
    /// writer applies it at its next append). Epochs never go back.
    pub fn set_epoch_all(&mut self, epoch: u64) {
        self.global_epoch.fetch_max(epoch, Ordering::AcqRel);
        for shared in &self.shared {
            shared.requested_epoch.fetch_max(epoch, Ordering::Relaxed);
        }
        for writer in self.writers.iter_mut().flatten() {
            writer.set_epoch(epoch);
        }
    }

    /// Syncs every attached writer: on `Ok`, every entry they appended is
    /// durable. Detached writers are synced by their owners.
    pub fn sync_all(&mut self) -> Result<(), PerCoreWalError> {
        for writer in self.writers.iter_mut().flatten() {
            writer.sync()?;
        }
        Ok(())
    }

    /// Write positions in each core's active segment, including unsynced
    /// entries (for a detached writer: its last synced position).
    #[must_use]
    pub fn positions(&self) -> Vec<u64> {
        (0..self.config.num_cores)
            .map(|c| match &self.writers[c] {
                Some(w) => w.position(),
                None => self.shared[c].published().synced_position,
            })
            .collect()
    }

    /// Durable length of each core's active segment.
    #[must_use]
    pub fn synced_positions(&self) -> Vec<u64> {
        (0..self.config.num_cores)
            .map(|c| match &self.writers[c] {
                Some(w) => w.synced_position(),
                None => self.shared[c].published().synced_position,
            })
            .collect()
    }

    /// The sequence number each core's next entry gets (for a detached
    /// writer: as of its last sync).
    #[must_use]
    pub fn next_sequences(&self) -> Vec<u64> {
        (0..self.config.num_cores)
            .map(|c| match &self.writers[c] {
                Some(w) => w.sequence(),
                None => self.shared[c].published().next_sequence,
            })
            .collect()
    }

    fn attached_all(&mut self) -> Result<Vec<&mut CoreWalWriter>, PerCoreWalError> {
        if let Some(core_id) = self.writers.iter().position(Option::is_none) {
            return Err(PerCoreWalError::WriterDetached { core_id });
        }
        Ok(self.writers.iter_mut().flatten().collect())
    }

    /// Removes, per core, the log prefix up to `positions[core]` in the
    /// active segment (see [`CoreWalWriter::truncate`]).
    ///
    /// Safe version of the seed's `truncate_all`, which cut live files and
    /// dropped entries appended after the positions: nothing at or after a
    /// position is removed. All writers must be attached.
    pub fn truncate_all(&mut self, positions: &[u64]) -> Result<(), PerCoreWalError> {
        if positions.len() != self.config.num_cores {
            return Err(PerCoreWalError::InvalidConfig {
                field: "positions",
                reason: format!(
                    "{} positions for {} cores",
                    positions.len(),
                    self.config.num_cores
                ),
            });
        }
        for (writer, &position) in self.attached_all()?.into_iter().zip(positions) {
            writer.truncate(position)?;
        }
        Ok(())
    }

    /// Removes the segments whose entries the last `merge_segments` or
    /// `merge_segments_up_to_epoch` returned.
    ///
    /// Safe version of the seed's `reset_all`, which emptied every live
    /// segment and so dropped entries appended after the merge, and reset
    /// sequence numbers to 0. Here a segment is removed only if the merge
    /// read all of it: sealed segments it read, and an active segment only
    /// when nothing was appended after the merge (the writer then moves to a
    /// new segment). Sequence numbers continue. All writers must be attached.
    pub fn reset_all(&mut self) -> Result<(), PerCoreWalError> {
        let merged = std::mem::take(
            &mut *self
                .last_merge
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let fs = Arc::clone(&self.fs);
        let mut writers = self.attached_all()?;
        for (writer, read) in writers.iter_mut().zip(merged) {
            // Remove the longest prefix of segments the merge read whole.
            let mut keep_from = None;
            for (segment, read_to) in read {
                let whole = match read_to {
                    None => true,
                    Some(read_to) if segment == writer.segment_number() => {
                        if writer.position() == read_to {
                            writer.rotate()?;
                            true
                        } else {
                            false
                        }
                    }
                    // Active at merge time, sealed since: whole only if
                    // nothing was appended after the merge read it.
                    Some(read_to) => {
                        let path = writer.segment_path_of(segment);
                        read_header(&fs, &path).map(|h| h.1)? == read_to
                    }
                };
                if !whole {
                    break;
                }
                keep_from = Some(segment + 1);
            }
            if let Some(keep_from) = keep_from {
                writer.remove_segments_before(keep_from)?;
            }
        }
        Ok(())
    }

    /// Per core: the active segment number, its epoch and how far it can be
    /// read (the synced length).
    fn active(&self, core_id: usize) -> (u64, u64, u64) {
        if let Some(w) = &self.writers[core_id] {
            (w.segment_number(), w.segment_epoch(), w.synced_position())
        } else {
            let p = self.shared[core_id].published();
            (p.segment, p.segment_epoch, p.synced_position)
        }
    }

    /// Segments of every core with their epochs, oldest first, and the
    /// active segment read only up to its synced length.
    fn plan(&self) -> Result<Vec<Vec<(SegmentRead, u64)>>, PerCoreWalError> {
        let listed = list_segments(
            &*self.fs,
            &self.config.base_dir,
            &self.naming,
            self.config.num_cores,
        )?;
        let mut plan = Vec::with_capacity(self.config.num_cores);
        for core_id in 0..self.config.num_cores {
            let (active, _, synced) = self.active(core_id);
            let mut reads = Vec::new();
            for file in listed.get(core_id).into_iter().flatten() {
                if file.segment > active {
                    continue; // created after we looked at the writer
                }
                let epoch = segment_epoch(&self.fs, file)?;
                let limit = (file.segment == active).then_some(synced);
                reads.push((
                    SegmentRead {
                        file: file.clone(),
                        limit,
                    },
                    epoch,
                ));
            }
            plan.push(reads);
        }
        Ok(plan)
    }

    fn stream_from(&self, plan: Vec<Vec<SegmentRead>>) -> MergeStream {
        let limits = self.config.read_limits();
        let readers = plan
            .into_iter()
            .enumerate()
            .map(|(core_id, reads)| {
                CoreLogReader::new(Arc::clone(&self.fs), core_id, reads, limits)
            })
            .collect();
        MergeStream::new(readers, self.config.num_cores)
    }

    fn collect_recording(
        &self,
        plan: Vec<Vec<SegmentRead>>,
    ) -> Result<Vec<PerCoreWalEntry>, PerCoreWalError> {
        let read: MergedSegments = plan
            .iter()
            .map(|reads| reads.iter().map(|r| (r.file.segment, r.limit)).collect())
            .collect();
        let entries = self.stream_from(plan).collect::<Result<Vec<_>, _>>()?;
        *self
            .last_merge
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = read;
        Ok(entries)
    }

    /// Every durable entry of every core, in (epoch, `timestamp_ns`,
    /// `core_id`, sequence) order, as a stream with memory bounded by
    /// cores x read buffer. Active segments are read up to their synced
    /// length.
    pub fn merge_stream(&self) -> Result<MergeStream, PerCoreWalError> {
        let plan = self.plan()?;
        Ok(self.stream_from(strip(plan, |_| true)))
    }

    /// Merges every durable entry of all segments into a `Vec`, sorted by
    /// (epoch, `timestamp_ns`, `core_id`, sequence). Built on
    /// [`PerCoreWalManager::merge_stream`]; kept for the seed's callers (it
    /// holds every entry in memory). Entries appended but not synced are not
    /// included.
    pub fn merge_segments(&self) -> Result<Vec<PerCoreWalEntry>, PerCoreWalError> {
        let plan = self.plan()?;
        self.collect_recording(strip(plan, |_| true))
    }

    /// Like [`PerCoreWalManager::merge_segments`], only entries with
    /// `epoch <= max_epoch`.
    pub fn merge_segments_up_to_epoch(
        &self,
        max_epoch: u64,
    ) -> Result<Vec<PerCoreWalEntry>, PerCoreWalError> {
        let plan = self.plan()?;
        self.collect_recording(strip(plan, |epoch| epoch <= max_epoch))
    }

    fn check_sealed(&self, epoch: u64) -> Result<(), PerCoreWalError> {
        for core_id in 0..self.config.num_cores {
            let (_, active_epoch, _) = self.active(core_id);
            if active_epoch <= epoch {
                return Err(PerCoreWalError::EpochNotSealed {
                    epoch,
                    core_id,
                    active_epoch,
                });
            }
        }
        Ok(())
    }

    /// Streams every entry with `epoch <= epoch`, all of them in sealed
    /// segments: what a checkpoint of the epochs up to `epoch` must hold.
    ///
    /// Fails with [`PerCoreWalError::EpochNotSealed`] unless every core has
    /// moved past `epoch` (its active segment is of a later epoch), so no
    /// entry of those epochs can still be appended.
    pub fn merge_sealed(&self, epoch: u64) -> Result<MergeStream, PerCoreWalError> {
        self.check_sealed(epoch)?;
        let plan = self.plan()?;
        Ok(self.stream_from(strip(plan, |e| e <= epoch)))
    }

    /// Removes every segment whose epoch is at most `epoch` (and syncs the
    /// directory), once a checkpoint covering those epochs is durable.
    /// Returns how many segment files were removed.
    ///
    /// A removed segment is renamed into `.retired/` under the WAL directory
    /// and deleted there by a background thread (the manager's drop waits
    /// for it; files a crash leaves there are deleted at the next open), so
    /// the call does not wait for the disk to free the blocks. A file system
    /// that cannot rename has them removed in the call.
    ///
    /// Only whole sealed segments are removed, and only when every core has
    /// moved past `epoch` ([`PerCoreWalError::EpochNotSealed`] otherwise):
    /// no entry of a later epoch can be lost.
    pub fn remove_segments_up_to_epoch(&self, epoch: u64) -> Result<usize, PerCoreWalError> {
        self.check_sealed(epoch)?;
        let plan = self.plan()?;
        // Each core's covered segments go oldest first, stopping at its
        // first failure, so a core never has a gap between segments. A
        // retirement is a rename (the deletion runs in the background), so
        // the cores take their turns on this thread.
        let mut removed = 0;
        let mut retired = Vec::new();
        let mut first_error = None;
        for (core_id, reads) in plan.into_iter().enumerate() {
            for (read, seg_epoch) in reads {
                if seg_epoch > epoch {
                    break;
                }
                let path = read.file.path;
                let len = read_header(&self.fs, &path).map_or(0, |h| h.1);
                match self.reaper.retire(&path) {
                    Ok(moved) => retired.extend(moved),
                    Err(e) => {
                        first_error.get_or_insert_with(|| {
                            PerCoreWalError::io("remove covered segment", &path, e)
                        });
                        break;
                    }
                }
                let _ = self.shared[core_id].sealed_bytes.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |b| Some(b.saturating_sub(len)),
                );
                removed += 1;
            }
        }
        if removed > 0 {
            if let Err(e) = self.fs.sync_dir(&self.config.base_dir) {
                first_error = Some(PerCoreWalError::io(
                    "sync WAL directory",
                    &self.config.base_dir,
                    e,
                ));
            }
        }
        self.reaper.delete(retired);
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Writes an epoch barrier on every attached writer (a writer whose
    /// epoch moved first seals its previous segment). Detached writers are
    /// written to by their owners.
    pub fn write_epoch_barrier_all(&mut self) -> Result<(), PerCoreWalError> {
        for writer in self.writers.iter_mut().flatten() {
            writer.append_epoch_barrier()?;
        }
        Ok(())
    }

    /// Bytes of all segments on disk, plus appended-but-unwritten bytes of
    /// attached writers.
    #[must_use]
    pub fn total_size(&self) -> u64 {
        (0..self.config.num_cores)
            .map(|c| {
                let active = match &self.writers[c] {
                    Some(w) => w.position(),
                    None => self.shared[c].published().synced_position,
                };
                self.shared[c].sealed_bytes.load(Ordering::Relaxed) + active
            })
            .sum()
    }

    /// Path of a core's active segment.
    ///
    /// # Panics
    ///
    /// Panics if `core_id >= num_cores`.
    #[must_use]
    pub fn segment_path(&self, core_id: usize) -> PathBuf {
        let (segment, _, _) = self.active(core_id);
        self.config
            .base_dir
            .join(self.naming.file_name(core_id, segment))
    }
}

/// Per core: its scan (`None`: no segment left), and the repairs made.
type Scanned = (Vec<Option<CoreScan>>, Vec<Vec<Repair>>);

/// Scans (and repairs) every core's log at open. With `covered`, a log
/// starting after it is refused ([`check_log_start`]).
fn scan_cores(
    fs: &Arc<dyn WalFileSystem>,
    config: &PerCoreWalConfig,
    listed: Vec<Vec<SegmentFile>>,
    create: bool,
    covered: Option<&[Option<u64>]>,
) -> Result<Scanned, PerCoreWalError> {
    let dir = &config.base_dir;
    let limits = config.read_limits();
    let mut scans = Vec::with_capacity(config.num_cores);
    let mut repairs = Vec::with_capacity(config.num_cores);
    let mut listed = listed.into_iter();
    for core_id in 0..config.num_cores {
        let segments = listed.next().unwrap_or_default();
        let had_segments = !segments.is_empty();
        let outcome = scan_core(fs, dir, core_id, segments, limits, true)?;
        // A core whose only segment never got a durable header (and was
        // removed, as recovery does) has a log, just an empty one.
        if outcome.scan.is_none() && !create && !had_segments {
            return Err(PerCoreWalError::SegmentNotFound {
                core_id,
                path: dir.clone(),
            });
        }
        if let (Some(covered), Some(scan)) = (covered, &outcome.scan) {
            check_log_start(core_id, scan, covered.get(core_id).copied().flatten())?;
        }
        scans.push(outcome.scan);
        repairs.push(outcome.repairs);
    }
    Ok((scans, repairs))
}

fn segment_epoch(fs: &Arc<dyn WalFileSystem>, file: &SegmentFile) -> Result<u64, PerCoreWalError> {
    let (header, _) = read_header(fs, &file.path)?;
    header
        .map(|h| h.epoch)
        .map_err(|reason| PerCoreWalError::Corrupted {
            path: file.path.clone(),
            core_id: file.core_id,
            segment: file.segment,
            position: 0,
            reason,
        })
}

/// Keeps the segments whose epoch passes `keep` (epochs only grow along a
/// core's log, so this is a prefix).
fn strip(plan: Vec<Vec<(SegmentRead, u64)>>, keep: impl Fn(u64) -> bool) -> Vec<Vec<SegmentRead>> {
    plan.into_iter()
        .map(|reads| {
            reads
                .into_iter()
                .take_while(|(_, epoch)| keep(*epoch))
                .map(|(read, _)| read)
                .collect()
        })
        .collect()
}
