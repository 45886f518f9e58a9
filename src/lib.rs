//! # walhouse
//!
//! A storage engine and lakehouse ingester: per-core writers on pinned
//! threads append key/value changelog operations to local write-ahead logs;
//! a checkpoint coordinator merges sealed segments by epoch into Parquet
//! tables on object storage; recovery reads the newest checkpoint plus the
//! local WAL tail.
//!
//! - [`per_core_wal`]: the seed-compatible per-core WAL on a crash-safe
//!   segment format with a streaming merge;
//! - [`checkpoint`]: sealed epochs as Parquet tables on an object store,
//!   committed by a manifest;
//! - [`store`]: object stores by URL;
//! - [`malloc`]: glibc malloc thresholds for checkpoint work (opt-in, for
//!   `main`).

pub(crate) mod arena;
pub mod checkpoint;
mod error;
pub mod malloc;
pub mod per_core_wal;
pub mod runtime;
pub mod store;
mod walhouse;

pub use error::{Error, ErrorKind};
pub use walhouse::{Opened, Reads, Shutdown, Walhouse, WalhouseBuilder};
