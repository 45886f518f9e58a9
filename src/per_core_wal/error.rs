//! Errors of the per-core WAL.
//!
//! Every variant that comes from reading a segment names the file, the core,
//! the segment number and the byte offset, so a message alone says what broke
//! and where. [`PerCoreWalError::kind`] gives the coarse class a caller acts on, and the
//! error converts into the crate's [`crate::Error`].

use std::path::PathBuf;

/// What a caller should do about an error: the crate's [`crate::ErrorKind`],
/// also reachable here for code written against this module.
pub use crate::ErrorKind;

/// Errors that can occur in per-core WAL operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerCoreWalError {
    /// An I/O operation failed.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// The operation that failed (`"create segment"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Serialization error when writing entries.
    #[error("serialization error: {0}")]
    Serialization(String),

    /// Deserialization error when reading entries.
    #[error("deserialization error: {0}")]
    Deserialization(String),

    /// A complete record whose checksum does not match its length and payload.
    #[error(
        "checksum mismatch in {} (core {core_id}, segment {segment}) at offset {position}: \
         stored {expected:#010x}, computed {actual:#010x}",
        path.display()
    )]
    ChecksumMismatch {
        /// The segment file.
        path: PathBuf,
        /// Core ID of the segment.
        core_id: usize,
        /// Segment number.
        segment: u64,
        /// Byte offset of the record in the file.
        position: u64,
        /// Checksum stored in the record.
        expected: u32,
        /// Checksum computed from the bytes read.
        actual: u32,
    },

    /// A record cut off by a crash at the end of a segment. Tolerated (and
    /// truncated away by `open` and `repair_all_segments`) only at the end of a
    /// core's newest segment.
    #[error(
        "torn write in {} (core {core_id}, segment {segment}) at offset {position}: {reason}",
        path.display()
    )]
    TornWrite {
        /// The segment file.
        path: PathBuf,
        /// Core ID of the segment.
        core_id: usize,
        /// Segment number.
        segment: u64,
        /// Byte offset where the incomplete record starts.
        position: u64,
        /// What was incomplete.
        reason: String,
    },

    /// Bytes that cannot be a record or a segment header.
    #[error(
        "corrupt WAL segment {} (core {core_id}, segment {segment}) at offset {position}: {reason}",
        path.display()
    )]
    Corrupted {
        /// The segment file.
        path: PathBuf,
        /// Core ID of the segment.
        core_id: usize,
        /// Segment number.
        segment: u64,
        /// Byte offset of the bad bytes.
        position: u64,
        /// What is wrong with them.
        reason: String,
    },

    /// Sequence numbers do not continue from one segment to the next: records
    /// (or whole segments) are missing.
    #[error(
        "gap in core {core_id}'s log at {}: expected sequence {expected}, found {actual}",
        path.display()
    )]
    SequenceGap {
        /// The segment where numbering does not continue.
        path: PathBuf,
        /// Core ID.
        core_id: usize,
        /// The sequence number that should come next.
        expected: u64,
        /// The sequence number found.
        actual: u64,
    },

    /// A core's oldest remaining segment starts after the first sequence
    /// nothing covers: whole segments at the front of its log were deleted
    /// or lost, and their entries are in neither the checkpoint nor the WAL.
    #[error(
        "gap in core {core_id}'s log at {}: its oldest segment starts at sequence {found}, \
         but {} so the log must start at or before sequence {expected}; \
         segments before it are missing (deleted or lost) and entries \
         {expected}..{found} would be silently dropped",
        path.display(),
        covered.map_or_else(
            || "no checkpoint covers this core,".to_owned(),
            |s| format!("the checkpoint covers it only up to sequence {s},")
        )
    )]
    MissingSegments {
        /// The oldest remaining segment file of the core.
        path: PathBuf,
        /// Core ID.
        core_id: usize,
        /// The latest sequence the log may start at (the checkpoint's
        /// covered sequence + 1, or 0 without one).
        expected: u64,
        /// The sequence the oldest segment's header says it starts at.
        found: u64,
        /// The checkpoint's last covered sequence of this core (`None`: no
        /// checkpoint covers it).
        covered: Option<u64>,
    },

    /// Invalid core ID.
    #[error("invalid core ID {core_id}: max is {max_core_id}")]
    InvalidCoreId {
        /// The invalid core ID.
        core_id: usize,
        /// The maximum valid core ID.
        max_core_id: usize,
    },

    /// The WAL directory holds segments of a core the configuration does not
    /// have: opening would ignore (and later lose) them.
    #[error(
        "{} belongs to core {core_id}, but the WAL is configured with {num_cores} cores; \
         open it with at least {} cores",
        path.display(), core_id + 1
    )]
    UnexpectedCore {
        /// The segment file.
        path: PathBuf,
        /// The core it belongs to.
        core_id: usize,
        /// The configured number of cores.
        num_cores: usize,
    },

    /// No segment exists for a core (`open` requires an existing WAL).
    #[error("no WAL segment found for core {core_id} in {}", path.display())]
    SegmentNotFound {
        /// Core ID.
        core_id: usize,
        /// The directory searched.
        path: PathBuf,
    },

    /// A record larger than `max_record_bytes`.
    #[error("record of {size} bytes on core {core_id} exceeds max_record_bytes = {max}")]
    RecordTooLarge {
        /// Core ID.
        core_id: usize,
        /// Size of the encoded record payload.
        size: usize,
        /// The configured limit.
        max: u32,
    },

    /// A configuration field is out of range.
    #[error("invalid WAL configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field, as named in `PerCoreWalConfig`.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// The writer saw a failed write or fsync and refuses further work. A
    /// failed fsync is never retried: what the kernel dropped cannot be known.
    #[error(
        "WAL writer for core {core_id} is poisoned after a failed {cause}; \
         recovery is needed: reopen the WAL to continue from what is durable"
    )]
    Poisoned {
        /// Core ID.
        core_id: usize,
        /// The failure that poisoned it.
        cause: String,
    },

    /// The writer of this core was moved out of the manager
    /// (`PerCoreWalManager::take_writer`); its owner must do this.
    #[error("the writer of core {core_id} is detached from the manager (owned by another thread)")]
    WriterDetached {
        /// Core ID.
        core_id: usize,
    },

    /// Segments of an epoch cannot be merged or removed yet: a core is still
    /// writing in that epoch.
    #[error(
        "epoch {epoch} is not sealed: core {core_id} still writes in epoch {active_epoch}; \
         advance the epoch and write a barrier on every core first"
    )]
    EpochNotSealed {
        /// The epoch asked for.
        epoch: u64,
        /// A core whose active segment is still at or below it.
        core_id: usize,
        /// That core's active epoch.
        active_epoch: u64,
    },

    /// Recovery read an operation its in-memory state cannot hold (a key of
    /// 4 GiB or more, a core past 65,535): the WAL is damaged.
    #[error("recovery failed: {0}")]
    RecoveryFailed(String),

    /// A thread of walhouse's panicked: a bug, not damaged data.
    #[error("{thread} panicked: {message}")]
    ThreadPanicked {
        /// Which thread (`"a demo writer thread"`, ...).
        thread: &'static str,
        /// The panic's message.
        message: String,
    },
}

impl PerCoreWalError {
    /// The coarse class of this error: what the caller should do.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { .. } => ErrorKind::Io,
            Self::ChecksumMismatch { .. }
            | Self::TornWrite { .. }
            | Self::Corrupted { .. }
            | Self::SequenceGap { .. }
            | Self::MissingSegments { .. }
            | Self::Deserialization(_)
            | Self::RecoveryFailed(_) => ErrorKind::Corrupt,
            Self::Poisoned { .. } => ErrorKind::Poisoned,
            Self::ThreadPanicked { .. } => ErrorKind::Internal,
            Self::Serialization(_)
            | Self::InvalidCoreId { .. }
            | Self::UnexpectedCore { .. }
            | Self::SegmentNotFound { .. }
            | Self::RecordTooLarge { .. }
            | Self::InvalidConfig { .. }
            | Self::WriterDetached { .. }
            | Self::EpochNotSealed { .. } => ErrorKind::InvalidInput,
        }
    }

    /// Wraps an I/O error with the operation and the path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
