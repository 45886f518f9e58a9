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
    /// The table root holds checkpoints of the layout before Delta Lake
    /// (`manifests/<N>.json`), which this build neither reads nor extends.
    #[error(
        "the table at {store} is in walhouse's old layout ({manifests} manifest(s) under \
         manifests/, no changelog/_delta_log/): this build reads and writes only Delta Lake \
         tables; recover it with the walhouse release that wrote it, or start a new table root"
    )]
    OldLayout {
        /// The store's name.
        store: String,
        /// Objects found under `manifests/`.
        manifests: usize,
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
    /// The epoch asked for is already in a committed checkpoint.
    #[error(
        "epoch {epoch} is already covered by checkpoint {checkpoint} (epochs up to {last}): \
         nothing to checkpoint"
    )]
    EpochCovered {
        /// The epoch asked for.
        epoch: u64,
        /// The newest checkpoint.
        checkpoint: u64,
        /// The last epoch it covers.
        last: u64,
    },
    /// A background task of a checkpoint failed (panicked, was cancelled,
    /// or stopped because another part of the checkpoint failed).
    #[error("checkpoint task failed: {0}")]
    Task(String),
    /// A task panicked or was cancelled: a bug in walhouse (or a shutdown),
    /// not damaged data. The message names the operation that ran (for
    /// example `recovery task (WAL replay) panicked: ...`); nothing was
    /// changed in the store by it. Retrying gives the same panic: report it.
    #[error("{task} {reason}")]
    TaskPanicked {
        /// The operation whose task stopped (`"recovery task (WAL replay)"`,
        /// `"recovery task (merging the WAL onto the checkpoint)"`, ...).
        task: &'static str,
        /// `panicked: <message>` or `was cancelled`.
        reason: String,
    },
    /// A store read failed on every attempt: transient errors (see
    /// [`crate::store::is_transient`]) are retried
    /// [`crate::store::RETRY_ATTEMPTS`] times with exponential backoff
    /// before this is returned. Retry later.
    #[error("{op} of {path} on {store} failed after {attempts} attempts: {source}")]
    StoreRetried {
        /// The store's name (no secrets).
        store: String,
        /// The operation (`"list"`, `"get"`, ...).
        op: &'static str,
        /// The object or prefix.
        path: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: object_store::Error,
    },
}

impl CheckpointError {
    /// What the caller should do.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Store { source, .. } => match source {
                object_store::Error::NotFound { .. } => K::NotFound,
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. } => K::InvalidInput,
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => K::Conflict,
                _ => K::Unavailable,
            },
            Self::StoreRetried { .. } => K::Unavailable,
            Self::ManifestConflict { .. } | Self::NotOwner { .. } => K::Conflict,
            Self::OldLayout { .. } | Self::InvalidSetting { .. } | Self::EpochCovered { .. } => {
                K::InvalidInput
            }
            Self::CorruptObject { .. } | Self::Parquet { .. } => K::Corrupt,
            Self::Wal(e) => e.kind(),
            Self::Io { .. } => K::Io,
            Self::Arrow { .. } | Self::Task(_) | Self::TaskPanicked { .. } => K::Internal,
        }
    }

    /// The error of a task that did not finish: names `task`, the operation
    /// it ran, and the panic's message.
    pub(crate) fn joined(task: &'static str, e: tokio::task::JoinError) -> Self {
        let reason = if e.is_panic() {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            format!("panicked: {message}")
        } else {
            "was cancelled".to_owned()
        };
        Self::TaskPanicked { task, reason }
    }

    /// A failed store call: [`CheckpointError::Store`] after one attempt
    /// (a permanent error), [`CheckpointError::StoreRetried`] after more.
    pub(crate) fn store(
        store: &crate::store::Store,
        op: &'static str,
        path: impl Into<String>,
        failed: crate::store::Retried,
    ) -> Self {
        let (store, path) = (store.name().to_owned(), path.into());
        if failed.attempts > 1 {
            Self::StoreRetried {
                store,
                op,
                path,
                attempts: failed.attempts,
                source: failed.source,
            }
        } else {
            Self::Store {
                store,
                op,
                path,
                source: failed.source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue: a panic in recovery's WAL task was reported as "checkpoint
    /// task failed: ..." although the command was `recover`.
    #[tokio::test]
    async fn a_panicked_task_names_its_operation_and_its_message() {
        let handle = tokio::task::spawn_blocking(|| -> u32 { panic!("index out of bounds") });
        let e = CheckpointError::joined("recovery task (WAL replay)", handle.await.unwrap_err());
        let text = e.to_string();
        println!("{text}");
        assert_eq!(
            text,
            "recovery task (WAL replay) panicked: index out of bounds"
        );
        assert!(!text.contains("checkpoint"), "{text}");
        assert!(!matches!(e, CheckpointError::CorruptObject { .. }));
    }
}
