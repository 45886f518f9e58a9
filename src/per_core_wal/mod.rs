//! # Per-Core WAL
//!
//! Per-core WAL segments for a thread-per-core architecture. Each core writes
//! to its own log without contention; a streaming merge orders all cores'
//! entries for checkpoints and recovery.
//!
//! **This module is the compatibility layer.** It keeps the public names
//! and meaning of `laminar-storage` 0.18.12's `per_core_wal`, so code
//! written against the seed (its doc example below included) compiles with
//! only the crate name changed. It is a thin layer over the same machinery
//! the rest of walhouse uses: new code opens a data directory with
//! [`crate::Walhouse`], which owns the WAL, the core threads, checkpoints
//! and lookups; the types here are for driving one WAL by hand.
//!
//! It runs on a crash-safe format. What differs from the seed, and why:
//!
//! - **A core's log is a series of segments** (`wal-<core>-<segment>.log`),
//!   not one file. A core starts a new segment when its epoch advances and
//!   before a segment passes `segment_bytes`, so every segment holds one
//!   epoch. A new segment and its directory entry are synced before any entry
//!   is written to it.
//! - **Nothing is dropped by a checkpoint.** Segments are removed only whole
//!   and sealed: by [`PerCoreWalManager::remove_segments_up_to_epoch`], which
//!   names the epoch covered, or by the seed's `reset_all` / `truncate_all` /
//!   `reset` / `truncate`, which here remove only what was merged or lies
//!   before the given position, and never reset sequence numbers.
//! - **Checksums cover the length**, a zero-length record is invalid, a
//!   length above `max_record_bytes` or the bytes left is corruption (never
//!   an allocation), so zero-filled tails read as the end of the log.
//! - **Only a torn tail of a core's newest segment is tolerated**, and
//!   `open` / `repair_all_segments` truncate it and sync the truncation.
//!   Corruption anywhere else, or a gap in sequence numbers between segments,
//!   is an error naming the file and offset. Every byte range a repair
//!   removes is reported ([`Repair`]). Checkpoint recovery also refuses a
//!   log whose oldest segment starts after what the checkpoint covers
//!   ([`PerCoreWalError::MissingSegments`]).
//! - **Timestamps are strictly increasing per core**, so a wall clock
//!   stepping back never reorders a core's entries; epochs never go back.
//! - **Writers can be owned by their core's thread**
//!   ([`PerCoreWalManager::take_writer`]); the manager still advances epochs,
//!   reports synced positions, merges and removes covered segments.
//! - **The merge streams** ([`MergeStream`]) with memory bounded by cores x
//!   read buffer; `merge_segments` still returns a `Vec`, built on it.
//! - **File system and clock are seams** ([`WalFileSystem`], [`WalClock`]),
//!   so tests run the WAL on a simulated disk.
//! - **Recovery replays the cores in parallel** ([`PerCoreRecoveryManager`])
//!   and returns the state as a [`StateMap`]: sorted, its keys and values
//!   left where they are in the WAL's segments (mapped read-only by
//!   [`StdFileSystem`]) rather than two allocations per key.
//!
//! ## Format v1
//!
//! Documented in `schemas/wal-format.md`; golden files in `testdata/wal-v1/`.
//!
//! ```text
//! segment = header (64 bytes: "WALHOUSE", version 1, core, segment number,
//!           epoch, first sequence, timestamp floor, crc32c) record*
//! record  = [len u32 LE][crc32c u32 LE of len ++ payload][payload]
//! payload = tag u8 | sequence varint | timestamp_ns i64 LE | body
//!   Put: key_len varint, key, value (rest)    Delete: key (rest)
//!   Checkpoint: id varint                     EpochBarrier: epoch varint
//!   Commit: flags u8, [watermark i64], count varint, (len varint, source, offset varint)*
//! ```
//!
//! A put's overhead is its record header (8 bytes) plus the payload's tag,
//! varint sequence, timestamp and varint key length (BENCHMARKS.md has the
//! bytes per put against the seed's).
//!
//! ## Core invariant
//!
//! ```text
//! Checkpoint(epoch) + WAL.replay(epoch..current) = Consistent State
//! ```
//!
//! Entries are ordered by (epoch, `timestamp_ns`, `core_id`, sequence).
//!
//! ## Example
//!
//! The seed's example, with only the crate name and the directory changed:
//!
//! ```rust
//! use walhouse::per_core_wal::{
//!     PerCoreWalConfig, PerCoreWalManager, WalOperation,
//! };
//! use std::path::Path;
//! # let tmp = tempfile::tempdir().unwrap();
//! # let wal_dir = tmp.path().join("wal");
//!
//! // Create manager for 4 cores
//! let config = PerCoreWalConfig::new(Path::new(&wal_dir), 4);
//! let mut manager = PerCoreWalManager::new(config).unwrap();
//!
//! // Each core writes to its own segment (lock-free)
//! manager.writer(0).append_put(b"key1", b"value1").unwrap();
//! manager.writer(1).append_put(b"key2", b"value2").unwrap();
//! manager.writer(0).sync().unwrap();
//! manager.writer(1).sync().unwrap();
//!
//! // During checkpoint, merge all segments
//! let merged = manager.merge_segments().unwrap();
//! // merged is sorted by (epoch, timestamp_ns)
//! # assert_eq!(merged.len(), 2);
//! # assert!(merged.windows(2).all(|w| w[0] <= w[1]));
//! # assert!(matches!(&merged[0].operation, WalOperation::Put { key, .. } if key == b"key1"));
//! ```
//!
//! Moving a writer to its own thread, then checkpointing an epoch:
//!
//! ```rust
//! use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
//! # let tmp = tempfile::tempdir().unwrap();
//! let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(tmp.path(), 2)).unwrap();
//! let mut w1 = manager.take_writer(1).unwrap();
//! let t = std::thread::spawn(move || {
//!     w1.append_put(b"k", b"v").unwrap();
//!     w1.sync().unwrap(); // durable from here on
//!     w1
//! });
//! manager.writer(0).append_delete(b"gone").unwrap();
//! manager.sync_all().unwrap();
//! let w1 = t.join().unwrap();
//! manager.attach_writer(w1).unwrap();
//!
//! // Seal epoch 0 on every core, stream it, then drop what a checkpoint covers.
//! let epoch = manager.advance_epoch();
//! manager.set_epoch_all(epoch);
//! manager.write_epoch_barrier_all().unwrap();
//! let sealed: Vec<_> = manager.merge_sealed(epoch - 1).unwrap().collect::<Result<_, _>>().unwrap();
//! assert_eq!(sealed.len(), 2);
//! manager.remove_segments_up_to_epoch(epoch - 1).unwrap();
//! ```

mod clock;
mod coordinator;
mod entry;
mod error;
mod format;
mod fs;
mod log;
mod manager;
mod merge;
mod reader;
mod reaper;
mod recovery;
mod segment;
mod state_map;
mod writer;
#[cfg(test)]
pub(crate) use writer::CoreShared;

pub use clock::{SystemClock, WalClock};
pub use coordinator::PerCoreCheckpointCoordinator;
pub use entry::{
    CommitOffsets, CommitOffsetsIter, EntryRef, OpRef, OrderKey, PerCoreWalEntry, WalOperation,
};
pub use error::{ErrorKind, PerCoreWalError};
pub use format::{SegmentHeader, FORMAT_VERSION, HEADER_LEN, RECORD_HEADER_LEN, SEGMENT_MAGIC};
pub use fs::{StdFileSystem, WalFile, WalFileSystem};
pub(crate) use log::next_sequence_after;
pub use log::Repair;
pub use manager::{CoreOpenReport, PerCoreWalConfig, PerCoreWalManager, PerCoreWalManagerBuilder};
pub use merge::MergeStream;
pub use reader::{PerCoreWalReader, WalReadResult};
pub(crate) use recovery::LogStart;
pub use recovery::{recover_per_core, PerCoreRecoveredState, PerCoreRecoveryManager, SegmentStats};
pub(crate) use state_map::StateMapBuilder;
pub use state_map::{StateMap, StateMapIter};
pub use writer::CoreWalWriter;
