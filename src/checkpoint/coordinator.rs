//! The seed's `PerCoreCheckpointCoordinator`: a WAL manager and a
//! [`Checkpointer`] together. `walhouse::per_core_wal` re-exports it, so the
//! seed's module path keeps working while the WAL layer itself knows nothing
//! of Parquet or object stores.

use std::collections::BTreeMap;

use super::commit::{CheckpointOutcome, Checkpointer, GcReport};
use super::error::CheckpointError;
use super::manifest::Manifest;
use crate::per_core_wal::{MergeStream, PerCoreWalError, PerCoreWalManager};

/// Coordinates checkpoints across all per-core WAL segments.
///
/// [`create_checkpoint`](Self::create_checkpoint) does what the seed's did,
/// safely: advance the epoch, write a barrier on every core (each seals its
/// segment of the old epoch and starts a new one), sync, stream-merge the
/// sealed segments into Parquet on the object store, commit the manifest,
/// and only then remove the segments the manifest covers. Entries appended
/// meanwhile are in later epochs and stay in the WAL.
#[derive(Debug)]
pub struct PerCoreCheckpointCoordinator {
    wal_manager: PerCoreWalManager,
    checkpointer: Checkpointer,
}

impl PerCoreCheckpointCoordinator {
    /// Creates a coordinator over `wal_manager`, writing checkpoints with
    /// `checkpointer`.
    #[must_use]
    pub fn new(wal_manager: PerCoreWalManager, checkpointer: Checkpointer) -> Self {
        Self {
            wal_manager,
            checkpointer,
        }
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

    /// The checkpointer.
    #[must_use]
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// Returns the current epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.wal_manager.epoch()
    }

    /// Seals the current epoch on every attached writer and returns it: on
    /// `Ok`, all its entries are in sealed, synced segments. Detached writers
    /// seal at their next append; checkpointing the epoch waits for them
    /// ([`PerCoreWalError::EpochNotSealed`] until then).
    pub fn seal_epoch(&mut self) -> Result<u64, PerCoreWalError> {
        let next = self.wal_manager.advance_epoch();
        self.wal_manager.set_epoch_all(next);
        self.wal_manager.write_epoch_barrier_all()?;
        self.wal_manager.sync_all()?;
        Ok(next - 1)
    }

    /// Every entry of the epochs up to `epoch`, in merge order.
    pub fn sealed_entries(&self, epoch: u64) -> Result<MergeStream, PerCoreWalError> {
        self.wal_manager.merge_sealed(epoch)
    }

    /// Seals the current epoch and checkpoints everything up to it. The
    /// `state` table's version of it is built after the commit, on a task of
    /// its own: `self.checkpointer().finish_state()` waits for it.
    pub async fn create_checkpoint(&mut self) -> Result<CheckpointOutcome, CheckpointError> {
        self.checkpointer.checkpoint(&mut self.wal_manager).await
    }

    /// Checkpoints the epochs up to `epoch`, already sealed by every core
    /// (the runtime's path, with writers on their own threads).
    pub async fn checkpoint_sealed(
        &self,
        epoch: u64,
    ) -> Result<CheckpointOutcome, CheckpointError> {
        self.checkpointer
            .checkpoint_sealed(&self.wal_manager, epoch)
            .await
    }

    /// Syncs every attached writer without checkpointing.
    pub fn flush(&mut self) -> Result<(), PerCoreWalError> {
        self.wal_manager.sync_all()
    }

    /// Source offsets of the newest checkpoint.
    pub async fn source_offsets(&self) -> Result<BTreeMap<String, u64>, CheckpointError> {
        Ok(self
            .checkpointer
            .latest()
            .await?
            .map(|m| m.source_offsets)
            .unwrap_or_default())
    }

    /// Watermark of the newest checkpoint.
    pub async fn watermark(&self) -> Result<Option<i64>, CheckpointError> {
        Ok(self.checkpointer.latest().await?.and_then(|m| m.watermark))
    }

    /// Every committed checkpoint, oldest first.
    pub async fn list_checkpoints(&self) -> Result<Vec<Manifest>, CheckpointError> {
        self.checkpointer.checkpoints().await
    }

    /// Keeps the newest `keep_count` checkpoints and garbage-collects the
    /// rest (objects younger than the grace period stay).
    pub async fn cleanup_old_checkpoints(
        &self,
        keep_count: usize,
    ) -> Result<GcReport, CheckpointError> {
        let mut settings = self.checkpointer.settings().clone();
        settings.retain_checkpoints = keep_count.max(1);
        Checkpointer::new(self.checkpointer.store().clone(), settings)?
            .gc()
            .await
    }
}
