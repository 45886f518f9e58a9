//! Errors of checkpoints: each names the store, the object and the operation.

use std::path::PathBuf;

use crate::per_core_wal::PerCoreWalError;

/// Errors of writing, committing, reading or collecting checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An object-store operation failed (unreachable store, missing bucket,
    /// denied credentials, timeout). Nothing was committed; retry later.
    #[error("{op} of {path} on {store} failed: {source}")]
    Store {
        /// The store's name (no secrets).
        store: String,
        /// The operation (`"put"`, `"list"`, `"multipart upload"`, ...).
        op: &'static str,
        /// The object or prefix.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Another writer committed this checkpoint number first: this writer
    /// must stop (two writers share one table root).
    #[error(
        "manifest {path} on {store} already exists: another writer committed checkpoint \
         {checkpoint} first; this writer stops (only one writer may use a table root)"
    )]
    ManifestConflict {
        /// The store's name.
        store: String,
        /// The manifest's path.
        path: String,
        /// The checkpoint number both wanted.
        checkpoint: u64,
    },
    /// The table is owned by another data directory (or its owner object
    /// is gone): this writer must not commit. Nothing was committed; the WAL
    /// is kept.
    #[error(
        "the table at {store} is owned by {owner}, not by this data directory (id {ours}); \
         nothing was committed and the WAL is kept"
    )]
    NotOwner {
        /// The store's name.
        store: String,
        /// The owner found, for people.
        owner: String,
        /// This writer's data-directory identity.
        ours: String,
    },
    /// An object is not what its manifest says (size, checksum) or cannot be
    /// decoded.
    #[error("corrupt object {path} on {store}: {reason}")]
    CorruptObject {
        /// The store's name.
        store: String,
        /// The object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Encoding or decoding Parquet failed.
    #[error("Parquet error on {path}: {source}")]
    Parquet {
        /// The object or local file.
        path: String,
        /// The error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building Arrow data failed.
    #[error("Arrow error while {context}: {source}")]
    Arrow {
        /// What was being built.
        context: String,
        /// The error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The WAL could not be sealed, read or trimmed.
    #[error(transparent)]
    Wal(#[from] PerCoreWalError),
    /// A local file operation (temporary sort runs, fsync of a local store).
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid checkpoint setting {field}: {reason}")]
    InvalidSetting {
        /// The field of `CheckpointSettings`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A background task failed (panicked or was cancelled).
    #[error("checkpoint task failed: {0}")]
    Task(String),
}
