//! The per-core writer: appends records to the core's active segment through
//! a reusable buffer, rotates segments, and syncs.
//!
//! Durability: `append_*` calls are buffered and not durable; an entry is
//! durable once a later [`CoreWalWriter::sync`] returned `Ok`. A failed write
//! or fsync poisons the writer: every later call fails with
//! [`PerCoreWalError::Poisoned`] and the WAL must be reopened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::clock::WalClock;
use super::error::PerCoreWalError;
use super::format::{self, EncodeOp, SegmentHeader, HEADER_LEN};
use super::fs::{WalFile, WalFileSystem};
use super::segment::{list_core_segments, SegmentNaming};

/// A write-buffer flush that is not a sync ends on a multiple of this many
/// bytes of the segment file: see [`CoreWalWriter::flush_aligned`].
const FLUSH_ALIGN: u64 = 64 << 10;

/// What a writer publishes for the manager (which may not own it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Published {
    /// Active segment number.
    pub(crate) segment: u64,
    /// Epoch of the active segment.
    pub(crate) segment_epoch: u64,
    /// Durable length of the active segment.
    pub(crate) synced_position: u64,
    /// Sequence the next entry gets, as of the last sync.
    pub(crate) next_sequence: u64,
}

/// State shared by one core's writer and the manager, and nobody else: no
/// lock is shared between cores.
#[derive(Debug, Default)]
pub(crate) struct CoreShared {
    /// Epoch the manager asks the writer to move to (never decreases).
    pub(crate) requested_epoch: AtomicU64,
    /// Bytes of the core's sealed segments still on disk.
    pub(crate) sealed_bytes: AtomicU64,
    published: Mutex<Published>,
}

impl CoreShared {
    pub(crate) fn published(&self) -> Published {
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, p: Published) {
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = p;
    }
}

/// Everything a writer needs to start its next segment.
#[derive(Debug, Clone)]
pub(crate) struct WriterInit {
    pub(crate) core_id: usize,
    pub(crate) dir: PathBuf,
    pub(crate) naming: SegmentNaming,
    pub(crate) fs: Arc<dyn WalFileSystem>,
    pub(crate) clock: Arc<dyn WalClock>,
    pub(crate) shared: Arc<CoreShared>,
    pub(crate) segment: u64,
    pub(crate) epoch: u64,
    pub(crate) next_sequence: u64,
    pub(crate) last_timestamp: i64,
    pub(crate) segment_bytes: u64,
    pub(crate) max_record_bytes: u32,
    pub(crate) write_buffer_bytes: usize,
}

/// Per-core WAL writer.
///
/// Each core owns its own writer: it is `Send`, holds no lock shared with
/// other cores, and can be moved to the core's thread with
/// `PerCoreWalManager::take_writer`. Record format: see the module docs.
#[derive(Debug)]
pub struct CoreWalWriter {
    core_id: usize,
    dir: PathBuf,
    naming: SegmentNaming,
    fs: Arc<dyn WalFileSystem>,
    clock: Arc<dyn WalClock>,
    shared: Arc<CoreShared>,
    file: Box<dyn WalFile>,
    path: PathBuf,
    segment: u64,
    segment_epoch: u64,
    /// Bytes appended but not yet handed to the file.
    buf: Vec<u8>,
    position: u64,
    synced_position: u64,
    epoch: u64,
    sequence: u64,
    last_timestamp: i64,
    entries_since_sync: u64,
    records_in_segment: u64,
    segment_bytes: u64,
    max_record_bytes: u32,
    write_buffer_bytes: usize,
    poisoned: Option<String>,
}

impl CoreWalWriter {
    /// Creates the writer's first segment (number `init.segment`) and syncs
    /// the file and the directory before returning.
    pub(crate) fn start(init: WriterInit) -> Result<Self, PerCoreWalError> {
        let path = init
            .dir
            .join(init.naming.file_name(init.core_id, init.segment));
        let file = create_segment(&*init.fs, &init.dir, &path, &header_for(&init))?;
        init.shared
            .requested_epoch
            .fetch_max(init.epoch, Ordering::Relaxed);
        let writer = Self {
            core_id: init.core_id,
            dir: init.dir,
            naming: init.naming,
            fs: init.fs,
            clock: init.clock,
            shared: init.shared,
            file,
            path,
            segment: init.segment,
            segment_epoch: init.epoch,
            buf: Vec::with_capacity(init.write_buffer_bytes + 256),
            position: HEADER_LEN as u64,
            synced_position: HEADER_LEN as u64,
            epoch: init.epoch,
            sequence: init.next_sequence,
            last_timestamp: init.last_timestamp,
            entries_since_sync: 0,
            records_in_segment: 0,
            segment_bytes: init.segment_bytes,
            max_record_bytes: init.max_record_bytes,
            write_buffer_bytes: init.write_buffer_bytes,
            poisoned: None,
        };
        writer.publish();
        Ok(writer)
    }

    /// Returns the core ID for this writer.
    #[must_use]
    pub fn core_id(&self) -> usize {
        self.core_id
    }

    /// Write position in the active segment in bytes, including appended
    /// entries that are not yet synced.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Durable length of the active segment: every entry before it survives a
    /// crash. Positions are per segment; see [`CoreWalWriter::segment_number`].
    #[must_use]
    pub fn synced_position(&self) -> u64 {
        self.synced_position
    }

    /// The writer's epoch: the epoch of the next entry.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
            .max(self.shared.requested_epoch.load(Ordering::Relaxed))
    }

    /// The sequence number the next entry gets. Sequence numbers start at 0,
    /// increase by one per entry and are never reused, across segments and
    /// restarts.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Path of the active segment file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of the active segment.
    #[must_use]
    pub fn segment_number(&self) -> u64 {
        self.segment
    }

    /// Epoch of the active segment (the writer's epoch may be ahead of it
    /// until the next append starts a new segment).
    #[must_use]
    pub fn segment_epoch(&self) -> u64 {
        self.segment_epoch
    }

    pub(crate) fn shared(&self) -> &Arc<CoreShared> {
        &self.shared
    }

    pub(crate) fn segment_path_of(&self, segment: u64) -> PathBuf {
        self.dir.join(self.naming.file_name(self.core_id, segment))
    }

    /// Entries appended since the last successful sync.
    #[must_use]
    pub fn entries_since_sync(&self) -> u64 {
        self.entries_since_sync
    }

    /// True once a failed write or fsync has poisoned the writer.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Sets the epoch of the following entries.
    ///
    /// Epochs never go back: a smaller value than the current epoch is
    /// ignored (the seed allowed it, which broke the merge order). The writer
    /// starts a new segment for the new epoch before the next entry, so every
    /// segment holds a single epoch.
    pub fn set_epoch(&mut self, epoch: u64) {
        if epoch < self.epoch() {
            tracing::warn!(
                core = self.core_id,
                current = self.epoch(),
                asked = epoch,
                "ignored set_epoch: epochs never go back"
            );
        }
        self.epoch = self.epoch().max(epoch);
    }

    /// Appends a Put. Buffered: durable after the next successful `sync`.
    /// Returns the record's byte offset in the active segment.
    #[inline]
    pub fn append_put(&mut self, key: &[u8], value: &[u8]) -> Result<u64, PerCoreWalError> {
        self.append_op(EncodeOp::Put { key, value })
    }

    /// Appends a Delete. Buffered: durable after the next successful `sync`.
    pub fn append_delete(&mut self, key: &[u8]) -> Result<u64, PerCoreWalError> {
        self.append_op(EncodeOp::Delete { key })
    }

    /// Appends a Checkpoint marker. Buffered. An id above `i64::MAX` is
    /// refused (nothing is written): checkpoints store it in a signed 64-bit
    /// column.
    pub fn append_checkpoint(&mut self, checkpoint_id: u64) -> Result<u64, PerCoreWalError> {
        self.check_storable("checkpoint id", checkpoint_id)?;
        self.append_op(EncodeOp::Checkpoint { id: checkpoint_id })
    }

    /// Refuses a value that no checkpoint could store (the lakehouse tables
    /// hold offsets and ids in signed 64-bit columns): an entry that is
    /// written must be checkpointable, or every later checkpoint would fail.
    fn check_storable(&self, what: &str, value: u64) -> Result<(), PerCoreWalError> {
        if i64::try_from(value).is_err() {
            return Err(PerCoreWalError::Serialization(format!(
                "core {}: {what} {value} is above {}, the largest a checkpoint stores \
                 (a signed 64-bit column); nothing was written",
                self.core_id,
                i64::MAX
            )));
        }
        Ok(())
    }

    /// Appends an `EpochBarrier` carrying the writer's current epoch: every
    /// later entry of this core has at least this epoch. If the epoch moved
    /// since the last entry, the previous segment is sealed first, so the
    /// barrier opens the new epoch's segment. Buffered.
    pub fn append_epoch_barrier(&mut self) -> Result<u64, PerCoreWalError> {
        let epoch = self.epoch();
        self.append_op(EncodeOp::EpochBarrier { epoch })
    }

    /// Appends a Commit of source offsets and watermark (stored sorted by
    /// source). Buffered. An offset above `i64::MAX` is refused (nothing is
    /// written): checkpoints store offsets in a signed 64-bit column.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the seed's signature takes the map by value"
    )]
    pub fn append_commit(
        &mut self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<u64, PerCoreWalError> {
        for (source, &offset) in &offsets {
            self.check_storable(&format!("offset of source {source:?}"), offset)?;
        }
        // Commits are rare: one vector to sort the sources is fine here.
        let mut pairs: Vec<(&str, u64)> = offsets.iter().map(|(s, o)| (s.as_str(), *o)).collect();
        pairs.sort_unstable();
        self.append_op(EncodeOp::Commit {
            offsets: &pairs,
            watermark,
        })
    }

    fn check_poisoned(&self) -> Result<(), PerCoreWalError> {
        match &self.poisoned {
            Some(cause) => Err(PerCoreWalError::Poisoned {
                core_id: self.core_id,
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, cause: String, err: PerCoreWalError) -> PerCoreWalError {
        tracing::error!(core = self.core_id, %cause, error = %err, "WAL writer poisoned");
        self.poisoned = Some(cause);
        err
    }

    /// Inlined into each `append_*`, so the operation's kind is known where
    /// it is encoded.
    #[inline]
    fn append_op(&mut self, op: EncodeOp<'_>) -> Result<u64, PerCoreWalError> {
        self.check_poisoned()?;
        let epoch = self.epoch();
        if epoch != self.segment_epoch {
            self.epoch = epoch;
            self.rotate_inner()?;
        }
        let now = self.clock.now_ns();
        let timestamp = next_timestamp(now, self.last_timestamp).ok_or_else(|| {
            PerCoreWalError::Serialization(format!(
                "core {}: no timestamp after i64::MAX is left for the next entry",
                self.core_id
            ))
        })?;
        let start = self.buf.len();
        let len = format::encode_record(
            &mut self.buf,
            self.sequence,
            timestamp,
            op,
            self.max_record_bytes,
        )
        .map_err(|size| PerCoreWalError::RecordTooLarge {
            core_id: self.core_id,
            size,
            max: self.max_record_bytes,
        })?;
        let record_len = u64::from(len) + format::RECORD_HEADER_LEN as u64;
        if self.records_in_segment > 0 && self.position + record_len > self.segment_bytes {
            // The record belongs in a new segment: hand the bytes before it
            // to the old one, seal it, and keep the record for the new one.
            let record = self.buf.split_off(start);
            let rotated = self.rotate_inner();
            self.buf.extend_from_slice(&record);
            rotated?;
        }
        let offset = self.position;
        self.position += record_len;
        self.sequence += 1;
        self.last_timestamp = timestamp;
        self.entries_since_sync += 1;
        self.records_in_segment += 1;
        if self.buf.len() >= self.write_buffer_bytes {
            self.flush_aligned()?;
        }
        Ok(offset)
    }

    /// Hands the file the buffered bytes up to the last multiple of
    /// [`FLUSH_ALIGN`] in the segment, and keeps the rest (less than
    /// `FLUSH_ALIGN` bytes) for the next write. Not durable.
    ///
    /// Each such `write()` ends on a page boundary of the file, so the next
    /// one starts on one: the kernel fills whole page-cache pages and never
    /// goes back to a page that a previous write left half full (a page
    /// written twice costs a second copy and lookup in the page cache).
    fn flush_aligned(&mut self) -> Result<(), PerCoreWalError> {
        // The buffer holds the segment's bytes just before `position`.
        let buffered = self.buf.len() as u64;
        let buf_start = self.position - buffered;
        let aligned_end = self.position / FLUSH_ALIGN * FLUSH_ALIGN;
        if aligned_end <= buf_start {
            // No boundary inside the buffer (only with a `write_buffer_bytes`
            // below `FLUSH_ALIGN`, as in tests): hand over all of it.
            return self.flush_buffer();
        }
        let n =
            usize::try_from(aligned_end - buf_start).expect("at most the buffer's length, a usize");
        if let Err(e) = self.file.append(&self.buf[..n]) {
            let err = PerCoreWalError::io("write segment", &self.path, e);
            return Err(self.poison("write".into(), err));
        }
        self.buf.drain(..n);
        Ok(())
    }

    /// Hands buffered bytes to the file (not durable).
    fn flush_buffer(&mut self) -> Result<(), PerCoreWalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.append(&self.buf) {
            let err = PerCoreWalError::io("write segment", &self.path, e);
            return Err(self.poison("write".into(), err));
        }
        self.buf.clear();
        Ok(())
    }

    /// Makes every appended entry durable (`write` then `fdatasync`).
    ///
    /// On `Ok`, every entry appended before the call survives a crash. A
    /// failure poisons the writer: fsync is never retried, since the kernel
    /// may have dropped the dirty pages it failed to write.
    pub fn sync(&mut self) -> Result<(), PerCoreWalError> {
        self.check_poisoned()?;
        self.flush_buffer()?;
        if let Err(e) = self.file.sync_data() {
            let err = PerCoreWalError::io("fdatasync", &self.path, e);
            return Err(self.poison("fdatasync".into(), err));
        }
        self.synced_position = self.position;
        self.entries_since_sync = 0;
        self.publish();
        Ok(())
    }

    /// Seals the active segment (syncing it) and starts a new one, even if
    /// the epoch did not change. Everything appended before is durable on `Ok`.
    pub fn rotate(&mut self) -> Result<(), PerCoreWalError> {
        self.check_poisoned()?;
        self.epoch = self.epoch();
        self.rotate_inner()
    }

    fn rotate_inner(&mut self) -> Result<(), PerCoreWalError> {
        self.sync()?;
        let next = self.segment + 1;
        let path = self.dir.join(self.naming.file_name(self.core_id, next));
        let header = SegmentHeader {
            core_id: u32::try_from(self.core_id).unwrap_or(u32::MAX),
            segment: next,
            epoch: self.epoch,
            first_sequence: self.sequence,
            timestamp_floor: self.last_timestamp,
        };
        let file = match create_segment(&*self.fs, &self.dir, &path, &header) {
            Ok(file) => file,
            Err(err) => return Err(self.poison("segment creation".into(), err)),
        };
        self.shared
            .sealed_bytes
            .fetch_add(self.position, Ordering::Relaxed);
        self.file = file;
        self.path = path;
        self.segment = next;
        self.segment_epoch = self.epoch;
        self.position = HEADER_LEN as u64;
        self.synced_position = HEADER_LEN as u64;
        self.records_in_segment = 0;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        self.shared.publish(Published {
            segment: self.segment,
            segment_epoch: self.segment_epoch,
            synced_position: self.synced_position,
            next_sequence: self.sequence,
        });
    }

    /// Removes the log prefix a checkpoint covers, up to `position` in the
    /// active segment.
    ///
    /// Safe version of the seed's `truncate`, which cut the live file at
    /// `position` and so dropped every entry appended after it. Here nothing
    /// at or after `position` is ever removed: every sealed segment of this
    /// core is removed, and the active segment too when `position` is its
    /// end (the writer first moves to a new segment). When entries follow
    /// `position`, the active segment stays whole and its entries before
    /// `position` are returned again by the next merge.
    pub fn truncate(&mut self, position: u64) -> Result<(), PerCoreWalError> {
        self.check_poisoned()?;
        if position > self.position {
            return Err(PerCoreWalError::InvalidConfig {
                field: "position",
                reason: format!(
                    "truncate({position}) is past the end of core {}'s active segment ({})",
                    self.core_id, self.position
                ),
            });
        }
        if position == self.position {
            self.rotate()?;
        }
        self.remove_segments_before(self.segment)
    }

    /// Removes the log this writer wrote so far once a checkpoint covers it.
    ///
    /// Safe version of the seed's `reset`: it removes whole segments (the
    /// writer moves to a new one first) and does not reset the sequence
    /// number to 0, so sequences are never reused.
    pub fn reset(&mut self) -> Result<(), PerCoreWalError> {
        self.truncate(self.position)
    }

    /// Removes every segment of this core numbered below `keep_from`, and
    /// syncs the directory.
    pub(crate) fn remove_segments_before(&mut self, keep_from: u64) -> Result<(), PerCoreWalError> {
        let mine = list_core_segments(&*self.fs, &self.dir, &self.naming, self.core_id)?;
        let mut removed = false;
        for seg in mine.iter().filter(|s| s.segment < keep_from) {
            let len = self
                .fs
                .open_read(&seg.path)
                .and_then(|f| f.len())
                .unwrap_or(0);
            self.fs
                .remove_file(&seg.path)
                .map_err(|e| PerCoreWalError::io("remove covered segment", &seg.path, e))?;
            let _ =
                self.shared
                    .sealed_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(len))
                    });
            removed = true;
        }
        if removed {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| PerCoreWalError::io("sync WAL directory", &self.dir, e))?;
        }
        Ok(())
    }
}

/// The timestamp of the next entry: the clock, but always after the previous
/// entry's, so a clock stepping back never reorders a core's entries.
/// `None` once the previous entry used `i64::MAX`.
#[must_use]
pub(crate) fn next_timestamp(now: i64, last: i64) -> Option<i64> {
    Some(now.max(last.checked_add(1)?))
}

fn header_for(init: &WriterInit) -> SegmentHeader {
    SegmentHeader {
        core_id: u32::try_from(init.core_id).unwrap_or(u32::MAX),
        segment: init.segment,
        epoch: init.epoch,
        first_sequence: init.next_sequence,
        timestamp_floor: init.last_timestamp,
    }
}

/// Creates a segment with its header, syncs it and the directory: after
/// `Ok`, the segment survives a crash.
fn create_segment(
    fs: &dyn WalFileSystem,
    dir: &Path,
    path: &Path,
    header: &SegmentHeader,
) -> Result<Box<dyn WalFile>, PerCoreWalError> {
    let mut file = fs
        .create_new(path)
        .map_err(|e| PerCoreWalError::io("create segment", path, e))?;
    file.append(&header.encode())
        .map_err(|e| PerCoreWalError::io("write segment header", path, e))?;
    file.sync_data()
        .map_err(|e| PerCoreWalError::io("fdatasync new segment", path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| PerCoreWalError::io("sync WAL directory", dir, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::next_timestamp;

    #[test]
    fn timestamps_stay_strictly_increasing_when_the_clock_steps_back() {
        let clock = [100, 200, 150, 150, 90, 300, 300];
        let mut last = i64::MIN;
        let mut out = Vec::new();
        for now in clock {
            last = next_timestamp(now, last).unwrap();
            out.push(last);
        }
        assert_eq!(out, vec![100, 200, 201, 202, 203, 300, 301]);
        assert_eq!(next_timestamp(5, i64::MAX), None);
    }
}
