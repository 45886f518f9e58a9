//! The ingester's error, [`IngestError`]; it converts into the crate's
//! [`crate::Error`].

use std::path::PathBuf;
use std::sync::Arc;

use super::datadir;
use crate::checkpoint::CheckpointError;
use crate::per_core_wal::PerCoreWalError;
use crate::store::StoreError;

/// Errors of the ingester. Cheap to clone: one failed group commit fails
/// every request of the group with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A write or fdatasync failed on this core. It is never retried (the
    /// kernel may have dropped the pages it failed to write): nothing more
    /// is written on this core. Stop the process and reopen, which recovers
    /// from what is durable.
    #[error(
        "core {core_id} is poisoned by a failed {cause}; nothing more is written on it: \
         stop and reopen the data directory to recover"
    )]
    Poisoned {
        /// The core.
        core_id: usize,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The request was refused and not written (an oversized record, say).
    #[error("core {core_id} refused the write: {reason}")]
    Rejected {
        /// The core.
        core_id: usize,
        /// Why.
        reason: String,
    },
    /// The ingester shut down (or its core thread stopped) before the
    /// request was queued or acknowledged.
    #[error("the ingester is shut down; the request was not acknowledged")]
    ShutDown,
    /// Another process holds the data directory.
    #[error(
        "{} is locked by another walhouse process (a running `walhouse ingest`?): \
         one process per data directory",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Opening the WAL, or a file in the data directory, failed.
    #[error("{0}")]
    Wal(Arc<PerCoreWalError>),
    /// The object store cannot be used: unreachable, or it does not honour
    /// the create-only PUT the commit protocol needs (the store probe).
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// A checkpoint failed. The WAL is kept; the next checkpoint retries.
    #[error("checkpoint failed: {0}")]
    Checkpoint(Arc<CheckpointError>),
    /// The data directory was created with another store or core count
    /// than it is opened with (its record, `walhouse.json`, says which).
    #[error(
        "data directory {} was created with {field} {recorded}, but is opened with {field} \
         {given}: open it with {field} {recorded} (a data directory keeps its store and cores)",
        data_dir.display()
    )]
    Mismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// `store` or `cores`.
        field: &'static str,
        /// What its record says.
        recorded: String,
        /// What it was opened with.
        given: String,
    },
    /// The table is owned by another data directory: this one must not
    /// write to it. Nothing was acknowledged.
    #[error(
        "the table at {store} is owned by {owner}; data directory {} (id {ours}) is not its \
         owner and wrote nothing: use the owning data directory, another store, or, only if \
         the owner is gone for good, take the table over (`walhouse ingest --take-over`)",
        data_dir.display()
    )]
    NotOwner {
        /// The store.
        store: String,
        /// The owner, for people.
        owner: String,
        /// This data directory.
        data_dir: PathBuf,
        /// Its identity.
        ours: String,
    },
    /// A read-only command was pointed at a directory that is not a data
    /// directory; nothing was created.
    #[error("no data directory at {}: no {} and no {}/", path.display(), datadir::RECORD_FILE, datadir::WAL_DIR)]
    NoDataDir {
        /// The path given.
        path: PathBuf,
    },
    /// An I/O error on a file of the data directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl IngestError {
    /// What the caller should do.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Poisoned { .. } | Self::ShutDown => K::Poisoned,
            Self::Rejected { .. } | Self::InvalidSetting { .. } | Self::Mismatch { .. } => {
                K::InvalidInput
            }
            Self::Locked { .. } | Self::NotOwner { .. } => K::Conflict,
            Self::Wal(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Checkpoint(e) => e.kind(),
            Self::NoDataDir { .. } => K::NotFound,
            Self::Io { .. } => K::Io,
        }
    }
}

impl From<PerCoreWalError> for IngestError {
    fn from(e: PerCoreWalError) -> Self {
        Self::Wal(Arc::new(e))
    }
}

impl From<CheckpointError> for IngestError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(Arc::new(e))
    }
}
