//! Lakehouse checkpoints: sealed WAL epochs become two Delta Lake tables on
//! an object store; checkpoint N is Delta version N of both, committed by
//! one create-only PUT of the `changelog` table's log entry.
//!
//! Layout under the table root (see `../shared/DESIGN.md`):
//!
//! ```text
//! changelog/_delta_log/<N, 20 digits>.json                     commit point of checkpoint N (manifest in commitInfo.walhouse)
//! changelog/epoch=<E>/part-<checkpoint>-<n>-<unique>.parquet   every operation of epoch E (partition `epoch`)
//! state/_delta_log/<N, 20 digits>.json                         the state table's version N (built after checkpoint N's commit)
//! state/checkpoint=<N>/part-<n>-<unique>.parquet               a snapshot (all live keys) or the changes of checkpoint N, sorted by key
//! state/dv-<N, 20 digits>/deletion_vector_<uuid>.bin         rows of older state files that checkpoint N replaced or deleted
//! _walhouse/inflight/<N, 20 digits>.json                       checkpoint N is running (gc keeps its objects)
//! _walhouse/owner.json                                         the data directory that owns the table
//! ```

mod changelog_rows;
mod commit;
pub(crate) mod coordinator;
mod delta;
mod error;
mod lookup;
mod manifest;
mod owner;
mod parquet;
mod recover;
mod schema;
mod state;
mod state_build;

pub use commit::{
    CheckpointOutcome, Checkpointer, GcReport, VerifyReport, MIN_GC_GRACE_SECS, STALE_MARKER_SECS,
};
pub use delta::{
    DeletionVectorDescriptor, CHANGELOG_TABLE, EPOCH_PARTITION, OWNER_PROPERTY, STATE_TABLE,
};
pub use error::CheckpointError;
pub use lookup::{CheckpointReader, LookupSettings, LookupStats};
pub use manifest::{
    commit_manifest, latest_manifest, list_manifests, load_manifest, manifest_json_schema,
    manifest_path, state_version_json_schema, CheckpointStats, CoreCoverage, DataFile, EpochRange,
    Manifest, StateDv, StateFile, StateRef, StateVersion, MANIFEST_FORMAT_VERSION,
};
pub use owner::{TableOwner, OWNER_FORMAT_VERSION, OWNER_PATH};
pub use recover::{recover, Recovered};
pub use schema::{changelog_schema, state_schema, SCHEMA_VERSION};
pub use state_build::StateBuilt;

use serde::{Deserialize, Serialize};

/// Checkpoint settings: plain data with documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointSettings {
    /// Rows per Parquet row group. Default: 65,536 (a row group in progress
    /// is held in memory until it is closed, per file being written).
    pub row_group_rows: usize,
    /// A data file is closed and a new one started past this many bytes.
    /// Default: 256 MiB.
    pub max_file_bytes: u64,
    /// Size of each multipart upload part, and so of the upload buffer.
    /// Default: 8 MiB.
    pub upload_part_bytes: usize,
    /// A full state snapshot every this many checkpoints (1: every one).
    /// Default: 8.
    pub snapshot_every: u64,
    /// A full state snapshot once the changelog since the last one passes
    /// this many bytes. Default: 1 GiB.
    pub snapshot_delta_bytes: u64,
    /// The `state` table is compacted (the next checkpoint writes a full
    /// snapshot) once it holds more files than this. Default: 16.
    pub state_max_files: usize,
    /// The `state` table is compacted once more than this percentage of
    /// the rows of its files are marked deleted by deletion vectors
    /// (replaced or deleted keys), which readers read and skip. Default: 30.
    pub state_max_deleted_percent: u32,
    /// Memory for sorting the delta when building a snapshot; beyond it,
    /// sorted runs spill to local temporary files. Default: 64 MiB.
    pub sort_memory_bytes: usize,
    /// A Delta log checkpoint (`<N>.checkpoint.parquet` and
    /// `_last_checkpoint` in both tables' `_delta_log/`) after every this
    /// many versions, so readers do not replay every JSON entry; 0: never.
    /// Default: 10.
    pub log_checkpoint_interval: u64,
    /// Checkpoints kept by retention. Default: 3.
    pub retain_checkpoints: usize,
    /// GC removes unreferenced objects only when older than this. Default:
    /// 3600 s, which is also the least GC takes unless `gc_grace_check` is
    /// off.
    pub gc_grace_secs: u64,
    /// Whether GC refuses a `gc_grace_secs` below
    /// [`MIN_GC_GRACE_SECS`]. Default: [`GraceCheck::Enforce`].
    pub gc_grace_check: GraceCheck,
    /// Directory for the snapshot sort's spilled runs (removed after use).
    /// Default: `None`, the system's temporary directory; set it where that
    /// is a RAM disk.
    pub spill_dir: Option<std::path::PathBuf>,
    /// zstd level of every Parquet page, 1 (fastest) to 22. Default: 1.
    /// Higher levels shrink compressible columns a little more at a much
    /// higher CPU cost.
    pub zstd_level: i32,
    /// Target size of a data page of the `state` table's files, before
    /// compression. Default: 64 KiB. A point lookup decodes one page of
    /// `key` and the page of `value` that holds the key's row, so smaller
    /// pages make lookups cheaper; larger ones compress repeating values
    /// better and scan a little faster. A page of a binary column (`key`,
    /// `value`) ends near this size; other columns' pages are checked every
    /// 256 rows; at most 20,000 rows a page. (The changelog's pages are
    /// 1 MiB.)
    pub page_bytes: usize,
    /// Threads that encode the columns of one Parquet file at once (0: one
    /// per CPU). Default: 1. More threads shorten a checkpoint a little but
    /// raise its peak memory (glibc keeps an arena per thread), so the
    /// default stays on the calling thread.
    pub encode_threads: usize,
    /// Which columns are zstd-compressed. Default:
    /// [`CompressionMode::Adaptive`].
    pub compression: CompressionMode,
}

/// Whether garbage collection refuses a grace period below
/// [`MIN_GC_GRACE_SECS`] (as Delta's VACUUM refuses a retention below its
/// default unless its retention check is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraceCheck {
    /// Refuse a shorter grace with an error naming the setting.
    #[default]
    Enforce,
    /// Take any grace. In-flight checkpoints are still protected by their
    /// markers; objects of writers that write none are not.
    Off,
}

/// How the pages of a data file are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompressionMode {
    /// zstd on every column, except a top-level binary column (`key`,
    /// `value`) whose bytes do not compress: at the start of each row group
    /// a sample of the column (its first 64 KiB) is compressed, and if that
    /// saves less than 1/8 of it, the column's pages in that row group are
    /// stored uncompressed. Random or already compressed values then cost no
    /// zstd time for nothing. Readers see the codec per column chunk, as
    /// Parquet records it.
    #[default]
    Adaptive,
    /// zstd on every column of every row group.
    Always,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            row_group_rows: 64 * 1024,
            max_file_bytes: 256 << 20,
            upload_part_bytes: 8 << 20,
            snapshot_every: 8,
            snapshot_delta_bytes: 1 << 30,
            state_max_files: 16,
            state_max_deleted_percent: 30,
            sort_memory_bytes: 64 << 20,
            log_checkpoint_interval: 10,
            retain_checkpoints: 3,
            gc_grace_secs: 3600,
            gc_grace_check: GraceCheck::Enforce,
            spill_dir: None,
            zstd_level: 1,
            page_bytes: 64 << 10,
            encode_threads: 1,
            compression: CompressionMode::Adaptive,
        }
    }
}
