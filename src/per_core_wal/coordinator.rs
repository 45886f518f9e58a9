//! The checkpoint coordinator's WAL side: seal an epoch on every core, stream
//! the sealed entries, and remove them once a checkpoint covers them.
//!
//! This is the part of the seed's coordinator that belongs to the WAL layer.
//! Turning the stream into Parquet on object storage is the checkpoint
//! layer's job; it drives this type.

use super::error::PerCoreWalError;
use super::manager::PerCoreWalManager;
use super::merge::MergeStream;

/// Coordinates checkpoints across all per-core WAL segments.
///
/// A checkpoint of epoch `E`:
/// 1. [`seal_epoch`](Self::seal_epoch) advances the global epoch to `E + 1`,
///    writes a barrier on every core (each core first seals its epoch-`E`
///    segment and starts a new one) and syncs;
/// 2. [`sealed_entries`](Self::sealed_entries) streams every entry of the
///    epochs up to `E` in merge order while ingest goes on into `E + 1`;
/// 3. once the checkpoint is durable, [`complete`](Self::complete) removes
///    the segments it covers, and nothing else.
#[derive(Debug)]
pub struct PerCoreCheckpointCoordinator {
    wal_manager: PerCoreWalManager,
}

impl PerCoreCheckpointCoordinator {
    /// Creates a coordinator over `wal_manager`.
    #[must_use]
    pub fn new(wal_manager: PerCoreWalManager) -> Self {
        Self { wal_manager }
    }

    /// Returns a reference to the WAL manager.
    #[must_use]
    pub fn wal_manager(&self) -> &PerCoreWalManager {
        &self.wal_manager
    }

    /// Returns a mutable reference to the WAL manager.
    pub fn wal_manager_mut(&mut self) -> &mut PerCoreWalManager {
        &mut self.wal_manager
    }

    /// Returns the current epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.wal_manager.epoch()
    }

    /// Seals the current epoch on every attached writer and returns it: on
    /// `Ok`, all its entries are in sealed, synced segments. Detached writers
    /// seal when they next append (their owner writes the barrier);
    /// [`sealed_entries`](Self::sealed_entries) refuses until they have.
    pub fn seal_epoch(&mut self) -> Result<u64, PerCoreWalError> {
        let next = self.wal_manager.advance_epoch();
        self.wal_manager.set_epoch_all(next);
        self.wal_manager.write_epoch_barrier_all()?;
        self.wal_manager.sync_all()?;
        Ok(next - 1)
    }

    /// Every entry of the epochs up to `epoch`, in merge order, streamed with
    /// bounded memory. Fails with `EpochNotSealed` while a core still writes
    /// in such an epoch.
    pub fn sealed_entries(&self, epoch: u64) -> Result<MergeStream, PerCoreWalError> {
        self.wal_manager.merge_sealed(epoch)
    }

    /// Removes the segments of the epochs up to `epoch`: call it only after
    /// the checkpoint holding them is durable. Returns the files removed.
    pub fn complete(&mut self, epoch: u64) -> Result<usize, PerCoreWalError> {
        self.wal_manager.remove_segments_up_to_epoch(epoch)
    }

    /// Syncs every attached writer without checkpointing.
    pub fn flush(&mut self) -> Result<(), PerCoreWalError> {
        self.wal_manager.sync_all()
    }
}
