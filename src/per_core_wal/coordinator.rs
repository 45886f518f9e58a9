//! The seed's checkpoint coordinator lives in the checkpoint layer (it writes
//! Parquet to object storage); it is re-exported here so the seed's module
//! path keeps working.

pub use crate::checkpoint::coordinator::PerCoreCheckpointCoordinator;
