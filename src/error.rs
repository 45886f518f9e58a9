//! The crate's error: [`Error`], with a coarse [`ErrorKind`] that tells the
//! caller what to do.
//!
//! Each module keeps an error enum of its own that carries the context (the
//! file, core, segment and offset of a WAL error; the store, object and
//! operation of a checkpoint error). Every one of them converts into
//! [`Error`] with `?`, and [`Error`] keeps it: its message is the module
//! error's, and [`Error::wal`], [`Error::checkpoint`], [`Error::store`] and
//! [`Error::ingest`] give it back for callers that need a field.
//!
//! ```
//! use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
//! use walhouse::{Error, ErrorKind};
//!
//! fn open(dir: &std::path::Path) -> Result<PerCoreWalManager, Error> {
//!     Ok(PerCoreWalManager::new(PerCoreWalConfig::new(dir, 0))?)
//! }
//! let e = open(&std::env::temp_dir().join("walhouse-error-doc")).unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::InvalidInput); // no cores: fix the call
//! ```

use crate::checkpoint::CheckpointError;
use crate::per_core_wal::PerCoreWalError;
use crate::runtime::IngestError;
use crate::store::StoreError;

/// What a caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bytes on disk or in the object store are not what was written (a
    /// checksum, a length, a header, the sequence numbering, a Parquet file
    /// or a log entry). The data needs attention; nothing was dropped
    /// silently.
    Corrupt,
    /// The call or the configuration is wrong (a setting out of range, an
    /// unknown core, an oversized record, a store that does not honour
    /// create-only PUTs, an epoch already checkpointed). Fix the input;
    /// retrying the same call fails the same way.
    InvalidInput,
    /// The operating system refused a local operation (disk full,
    /// permissions, a missing directory). Fix the cause and retry; nothing
    /// was acknowledged that is not durable.
    Io,
    /// Another writer holds what this one needs: the data directory's lock,
    /// the table (another owner), or the checkpoint number (committed first
    /// by someone else). This writer stops; retrying does not help.
    Conflict,
    /// The object store failed in a way worth retrying later (unreachable,
    /// timed out, throttled), after the retries walhouse already made.
    /// Nothing was committed by the failed call.
    Unavailable,
    /// A write or fdatasync failed earlier (or the handle was shut down) and
    /// the handle refuses further work. Reopen the data directory: recovery
    /// continues from what is durable.
    Poisoned,
    /// What was asked for does not exist: a checkpoint, a table, a data
    /// directory.
    NotFound,
    /// A bug in walhouse: a task panicked or an internal step failed that
    /// should not. Retrying gives the same result: report it.
    Internal,
}

/// The crate's error: a module error and its [`ErrorKind`].
///
/// Its `Display` is the module error's message, which names what broke and
/// where; [`std::error::Error::source`] continues the chain.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<Repr>);

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error(transparent)]
    Wal(PerCoreWalError),
    #[error(transparent)]
    Checkpoint(CheckpointError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Ingest(IngestError),
}

impl Error {
    /// What the caller should do.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match &*self.0 {
            Repr::Wal(e) => e.kind(),
            Repr::Checkpoint(e) => e.kind(),
            Repr::Store(e) => e.kind(),
            Repr::Ingest(e) => e.kind(),
        }
    }

    /// The WAL error inside (also one a checkpoint or the ingester met).
    #[must_use]
    pub fn wal(&self) -> Option<&PerCoreWalError> {
        match &*self.0 {
            Repr::Wal(e) | Repr::Checkpoint(CheckpointError::Wal(e)) => Some(e),
            Repr::Ingest(IngestError::Wal(e)) => Some(e.as_ref()),
            Repr::Ingest(IngestError::Checkpoint(c)) => match c.as_ref() {
                CheckpointError::Wal(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// The checkpoint error inside (also one the ingester met).
    #[must_use]
    pub fn checkpoint(&self) -> Option<&CheckpointError> {
        match &*self.0 {
            Repr::Checkpoint(e) => Some(e),
            Repr::Ingest(IngestError::Checkpoint(e)) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// The store error inside (also one the ingester met).
    #[must_use]
    pub fn store(&self) -> Option<&StoreError> {
        match &*self.0 {
            Repr::Store(e) => Some(e),
            Repr::Ingest(IngestError::Store(e)) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// The ingester's error inside.
    #[must_use]
    pub fn ingest(&self) -> Option<&IngestError> {
        match &*self.0 {
            Repr::Ingest(e) => Some(e),
            _ => None,
        }
    }
}

macro_rules! from_module_error {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Self(Box::new(Repr::$variant(e)))
            }
        }
    )*};
}

from_module_error!(
    Wal(PerCoreWalError),
    Checkpoint(CheckpointError),
    Store(StoreError),
    Ingest(IngestError),
);

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_module_error_converts_and_keeps_its_message_and_kind() {
        let io = || std::io::Error::other("disk on fire");
        let wal = PerCoreWalError::Poisoned {
            core_id: 3,
            cause: "fdatasync failed".into(),
        };
        let cases: Vec<(Error, ErrorKind)> = vec![
            (
                PerCoreWalError::io("fdatasync", "/d/wal-3.log", io()).into(),
                ErrorKind::Io,
            ),
            (wal.into(), ErrorKind::Poisoned),
            (
                CheckpointError::ManifestConflict {
                    store: "s".into(),
                    path: "changelog/_delta_log/1.json".into(),
                    checkpoint: 1,
                }
                .into(),
                ErrorKind::Conflict,
            ),
            (
                CheckpointError::CorruptObject {
                    store: "s".into(),
                    path: "state/x.parquet".into(),
                    reason: "crc".into(),
                }
                .into(),
                ErrorKind::Corrupt,
            ),
            (
                CheckpointError::TaskPanicked {
                    task: "recovery task (WAL replay)",
                    reason: "panicked: boom".into(),
                }
                .into(),
                ErrorKind::Internal,
            ),
            (
                StoreError::NoTable {
                    url: "file:///nowhere".into(),
                }
                .into(),
                ErrorKind::NotFound,
            ),
            (
                IngestError::Locked {
                    path: PathBuf::from("/d/LOCK"),
                }
                .into(),
                ErrorKind::Conflict,
            ),
            (
                IngestError::Checkpoint(Arc::new(CheckpointError::Io {
                    op: "write sort run",
                    path: PathBuf::from("/tmp/run"),
                    source: io(),
                }))
                .into(),
                ErrorKind::Io,
            ),
        ];
        for (e, kind) in cases {
            println!("{kind:?}: {e}");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn the_module_error_inside_is_reachable() {
        let e: Error = IngestError::Wal(Arc::new(PerCoreWalError::InvalidCoreId {
            core_id: 9,
            max_core_id: 1,
        }))
        .into();
        assert!(matches!(
            e.wal(),
            Some(PerCoreWalError::InvalidCoreId { core_id: 9, .. })
        ));
        assert!(e.ingest().is_some());
        assert!(e.checkpoint().is_none());
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("core ID 9"), "{e}");
    }
}
