//! [`IngestSettings`]: the ingester's settings, plain data with every
//! default stated, validated at open.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::IngestError;
use crate::checkpoint::CheckpointSettings;
use crate::per_core_wal::PerCoreWalConfig;

/// Settings of an [`Ingester`](super::Ingester) (plain data; the store and directory go
/// through the builder). Every default is stated on its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Core threads, one WAL per core. Default: the machine's CPUs. The WAL
    /// directory keeps its cores: reopening with fewer cores than it holds is
    /// refused.
    pub cores: usize,
    /// Pin each core thread to its CPU. Default: true. Where the OS refuses,
    /// threads run unpinned (one warning).
    pub pin_threads: bool,
    /// Requests each core's channel holds before producers wait
    /// (backpressure). A batch counts as one request. Default: 4096.
    pub channel_capacity: usize,
    /// Most entries per group commit (one fdatasync). Default: 65 536.
    pub group_commit_entries: usize,
    /// Most key+value bytes per group commit. Default: 8 MiB.
    pub group_commit_bytes: usize,
    /// How long a core waits for more requests before syncing a group,
    /// in microseconds. Default: 0 (sync at once; requests arriving during
    /// the fsync form the next group).
    pub group_commit_delay_us: u64,
    /// Checkpoint every this many milliseconds when new entries were
    /// written (0: never on a timer). Default: 60 000.
    pub checkpoint_interval_ms: u64,
    /// Checkpoint as soon as the WAL holds this many bytes (0: never on
    /// size). Default: 256 MiB.
    pub checkpoint_wal_bytes: u64,
    /// WAL segment size in bytes. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Checkpoint settings (Parquet, snapshots, retention as
    /// `retain_checkpoints`).
    pub checkpoint: CheckpointSettings,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            pin_threads: true,
            channel_capacity: 4096,
            group_commit_entries: 65_536,
            group_commit_bytes: 8 << 20,
            group_commit_delay_us: 0,
            checkpoint_interval_ms: 60_000,
            checkpoint_wal_bytes: 256 << 20,
            segment_bytes: 64 << 20,
            checkpoint: CheckpointSettings::default(),
        }
    }
}

impl IngestSettings {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |field, reason: &str| {
            Err(IngestError::InvalidSetting {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.cores == 0 || self.cores > 4096 {
            return bad("cores", "must be 1..=4096");
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity", "must be at least 1");
        }
        if self.group_commit_entries == 0 {
            return bad("group_commit_entries", "must be at least 1");
        }
        if self.group_commit_bytes == 0 {
            return bad("group_commit_bytes", "must be at least 1");
        }
        if self.group_commit_delay_us > 1_000_000 {
            return bad("group_commit_delay_us", "must be at most 1 000 000 (1 s)");
        }
        Ok(())
    }

    pub(super) fn wal_config(&self, data_dir: &Path) -> PerCoreWalConfig {
        PerCoreWalConfig::new(&super::datadir::wal_dir(data_dir), self.cores)
            .with_segment_bytes(self.segment_bytes)
    }
}
