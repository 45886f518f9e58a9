//! The two Delta Lake tables of a table root: `changelog/` (every
//! operation, append-only, partitioned by `epoch`) and `state/` (one row per
//! live key, merge-on-read with deletion vectors). Delta version N of both is
//! walhouse checkpoint N; version 0 creates them.
//!
//! The commit point of checkpoint N is the create-only PUT of
//! `changelog/_delta_log/<N>.json`, which carries walhouse's manifest in
//! `commitInfo.walhouse`. The `state` table's entry N follows from the
//! manifests of N and N-1 alone (byte for byte), so it is completed
//! idempotently: right after the commit, and again before the next
//! checkpoint or at recovery if a crash came between. A reader of either
//! table sees only files that a committed version references.

pub(crate) mod dv;
mod log;
mod log_checkpoint;
mod merge;
mod tables;

pub use dv::DeletionVectorDescriptor;
pub(crate) use log::{decode_entry, list_versions, log_dir, log_path, parse_log_path};
pub use log::{CHANGELOG_TABLE, EPOCH_PARTITION, STATE_TABLE};
pub(crate) use merge::{mark_replaced, read_existing};
pub use tables::OWNER_PROPERTY;
pub(crate) use tables::{
    changelog_entry, commit_entry, complete_state_version, ensure_state_version, ensure_tables,
    owner_metadata, write_log_checkpoints,
};
