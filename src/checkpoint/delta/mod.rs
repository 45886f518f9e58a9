//! The two Delta Lake tables of a table root: `changelog/` (every
//! operation, append-only, partitioned by `epoch`) and `state/` (one row per
//! live key, merge-on-read with deletion vectors). Delta version N of both is
//! walhouse checkpoint N; version 0 creates them.
//!
//! The commit point of checkpoint N is the create-only PUT of
//! `changelog/_delta_log/<N>.json`, which carries walhouse's manifest in
//! `commitInfo.walhouse`. The `state` table's version N is built after
//! that commit, off the checkpoint's critical path, from its version N-1
//! and the changelog of checkpoint N (see `Checkpointer::finish_state`),
//! and committed with a create-only PUT of `state/_delta_log/<N>.json`; a
//! crash before it leaves it to the next checkpoint, which builds every
//! missing version in order. A reader of either table sees only files that
//! a committed version references.

pub(crate) mod dv;
mod log;
mod log_checkpoint;
mod merge;
mod tables;

pub use dv::DeletionVectorDescriptor;
pub(crate) use log::{
    create_entry, list_versions, log_dir, log_path, parse_log_path, walhouse_info, Created,
};
pub use log::{CHANGELOG_TABLE, EPOCH_PARTITION, STATE_TABLE};
pub(crate) use merge::{mark_replaced, read_existing};
pub use tables::OWNER_PROPERTY;
pub(crate) use tables::{
    changelog_entry, commit_entry, ensure_tables, latest_state_version, list_log_snapshots,
    load_state_version, owner_metadata, parse_state_version, snapshot_files, snapshot_path,
    state_entry, write_log_checkpoint,
};
