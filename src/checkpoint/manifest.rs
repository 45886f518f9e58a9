//! The manifest: what walhouse records of a checkpoint. It travels inside
//! the checkpoint's Delta log entry of the `changelog` table
//! (`changelog/_delta_log/<N, 20 digits>.json`, field `walhouse` of its
//! `commitInfo` action), which is the single commit point, written last with
//! a create-only PUT. There is no "latest" pointer; the newest checkpoint is
//! found by listing `changelog/_delta_log/`. Its JSON Schema is
//! `schemas/manifest.schema.json` (a test proves it matches).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::delta::{
    changelog_entry, commit_entry, ensure_tables, list_versions, log_path, owner_metadata,
    walhouse_info, DeletionVectorDescriptor, CHANGELOG_TABLE,
};
use super::error::CheckpointError;
use crate::store::Store;

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// One data file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Path under the table root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// crc32c (Castagnoli) of the whole file.
    pub crc32c: u32,
    /// Rows in the file.
    pub rows: u64,
}

/// Epochs a checkpoint's changelog covers, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EpochRange {
    /// First epoch covered (the previous checkpoint's last + 1, or 0).
    pub first: u64,
    /// Last epoch covered: every entry of an epoch up to it is in the table.
    pub last: u64,
}

/// How far a checkpoint covers one core's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoreCoverage {
    /// Core ID.
    pub core: u32,
    /// Highest sequence number of this core the checkpoints up to this one
    /// hold (`None`: none yet). Recovery replays the core's entries after it.
    pub last_sequence: Option<u64>,
}

/// Where the state (latest value per key) of a checkpoint is, for readers
/// that apply changelog deltas to a sorted snapshot (lookups): the newest
/// full rewrite of the `state` table that was complete when the checkpoint
/// committed, and every changelog file after it.
///
/// The `state` table's own version of the checkpoint (its files and
/// deletion vectors) is not here: it is built after the commit, off the
/// checkpoint's critical path, and recorded in that table's log entry
/// ([`StateVersion`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRef {
    /// Checkpoint whose full snapshot is the base (0: none yet).
    pub snapshot_checkpoint: u64,
    /// The snapshot's files (`state/checkpoint=<N>/`), sorted by key.
    pub snapshot: Vec<DataFile>,
    /// Changelog files after the snapshot, up to and including this
    /// checkpoint's, in commit order: applied in order over the snapshot,
    /// they give the state.
    pub deltas: Vec<DataFile>,
    /// Bytes of `deltas`.
    pub delta_bytes: u64,
}

/// Version N of the `state` Delta table, as its log entry's
/// `commitInfo.walhouse` records it: the state after checkpoint N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateVersion {
    /// The checkpoint (and Delta version) N.
    pub checkpoint: u64,
    /// The newest checkpoint at or before N whose state was a full rewrite
    /// (a snapshot: the first one, and every compaction).
    pub snapshot_checkpoint: u64,
    /// The files that rewrite wrote, sorted by key and disjoint (some may
    /// have left the table since, every row of theirs replaced).
    pub snapshot: Vec<DataFile>,
    /// The files of the table at version N, each with the deletion vector
    /// that marks its replaced and deleted rows: their live rows are the
    /// state, one row per live key.
    pub table: Vec<StateFile>,
    /// Live keys (rows of `table` no deletion vector marks).
    pub keys: u64,
}

impl StateVersion {
    /// Every object version N references: its files, their deletion
    /// vectors, and the snapshot's files.
    #[must_use]
    pub fn referenced_files(&self) -> Vec<&DataFile> {
        let mut files: Vec<&DataFile> = self
            .table
            .iter()
            .map(|f| &f.file)
            .chain(
                self.table
                    .iter()
                    .filter_map(|f| f.deletion_vector.as_ref().map(|dv| &dv.file)),
            )
            .chain(&self.snapshot)
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        files
    }
}

/// A file of the `state` Delta table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// The Parquet file (sorted by key).
    pub file: DataFile,
    /// Its deletion vector, if any row of it is no longer live.
    pub deletion_vector: Option<StateDv>,
}

impl StateFile {
    /// Rows of the file the deletion vector marks deleted.
    #[must_use]
    pub fn deleted_rows(&self) -> u64 {
        self.deletion_vector.as_ref().map_or(0, |dv| {
            u64::try_from(dv.descriptor.cardinality).unwrap_or(0)
        })
    }
}

/// A deletion vector of a state file: the Delta descriptor and the file that
/// holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateDv {
    /// As the Delta `add` action carries it.
    pub descriptor: DeletionVectorDescriptor,
    /// The `deletion_vector_<uuid>.bin` file (rows: 0).
    pub file: DataFile,
}

/// Counts of what a checkpoint holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointStats {
    /// WAL entries in this checkpoint's changelog.
    pub entries: u64,
    /// Puts among them.
    pub puts: u64,
    /// Deletes among them.
    pub deletes: u64,
    /// Bytes of WAL records they came from.
    pub wal_bytes: u64,
}

/// A checkpoint's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Version of the Parquet schemas in `schemas/`.
    pub schema_version: u32,
    /// Checkpoint number, from 1; the manifest's name.
    pub checkpoint: u64,
    /// When it was committed (RFC 3339, UTC).
    pub created_at: String,
    /// Epochs the changelog covers.
    pub epochs: EpochRange,
    /// Per core, how far the checkpoints up to this one cover its log.
    pub cores: Vec<CoreCoverage>,
    /// This checkpoint's changelog files.
    pub changelog: Vec<DataFile>,
    /// The state: base snapshot plus changelog deltas.
    pub state: StateRef,
    /// Latest offset per source from `Commit` entries, up to this checkpoint.
    pub source_offsets: BTreeMap<String, u64>,
    /// Latest watermark from `Commit` entries, up to this checkpoint.
    pub watermark: Option<i64>,
    /// Counts.
    pub stats: CheckpointStats,
    /// The data directory that owned the table when this checkpoint was
    /// committed (the `owner_id` of `_walhouse/owner.json`), if the writer
    /// checks ownership. Both tables carry it as the property
    /// `walhouse.ownerId`: set at creation, and again (a `metaData` action)
    /// by the first checkpoint after a take-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

impl Manifest {
    /// The last sequence of core `core` that this checkpoint covers (`None`:
    /// no entry of that core yet).
    #[must_use]
    pub fn covered_sequence(&self, core: usize) -> Option<u64> {
        self.cores
            .iter()
            .find(|c| c.core as usize == core)
            .and_then(|c| c.last_sequence)
    }

    /// [`Manifest::covered_sequence`] of cores `0..num_cores`.
    #[must_use]
    pub fn covered_sequences(&self, num_cores: usize) -> Vec<Option<u64>> {
        (0..num_cores).map(|c| self.covered_sequence(c)).collect()
    }

    /// Every object the manifest references (changelog, snapshot, deltas;
    /// the `state` table's version has its own, [`StateVersion`]).
    #[must_use]
    pub fn referenced_files(&self) -> Vec<&DataFile> {
        let mut files: Vec<&DataFile> = self
            .changelog
            .iter()
            .chain(&self.state.snapshot)
            .chain(&self.state.deltas)
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        files
    }
}

/// Path of manifest `checkpoint` under the table root: the `changelog`
/// table's Delta log entry of version `checkpoint`.
#[must_use]
pub fn manifest_path(checkpoint: u64) -> String {
    log_path(CHANGELOG_TABLE, checkpoint)
}

/// Numbers of every committed checkpoint, ascending (the `changelog`
/// table's versions from 1; version 0 creates the table).
///
/// A table root in the layout before Delta Lake (`manifests/`) is
/// [`CheckpointError::OldLayout`].
pub async fn list_manifests(store: &Store) -> Result<Vec<u64>, CheckpointError> {
    let mut numbers = list_versions(store, CHANGELOG_TABLE).await?;
    numbers.retain(|&n| n > 0);
    if numbers.is_empty() {
        refuse_old_layout(store).await?;
    }
    Ok(numbers)
}

/// An error if the table root holds manifests of the layout before Delta
/// Lake, which this build does not read.
pub(crate) async fn refuse_old_layout(store: &Store) -> Result<(), CheckpointError> {
    let old = store
        .list_all(&store.path("manifests"))
        .await
        .map_err(|e| CheckpointError::store(store, "list", "manifests/", e))?;
    if old.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::OldLayout {
            store: store.name().to_owned(),
            manifests: old.len(),
        })
    }
}

/// Reads and parses manifest `checkpoint` from its Delta log entry.
/// Unreadable JSON, an entry without walhouse's manifest, or a manifest
/// whose number or format does not match, is an error naming the object.
pub async fn load_manifest(store: &Store, checkpoint: u64) -> Result<Manifest, CheckpointError> {
    let rel = manifest_path(checkpoint);
    let bytes = store
        .get_all(&store.path(&rel))
        .await
        .map_err(|e| CheckpointError::store(store, "get", &rel, e))?;
    parse_manifest(store, &rel, checkpoint, &bytes)
}

/// The manifest inside log entry `rel` of checkpoint `checkpoint`.
pub(crate) fn parse_manifest(
    store: &Store,
    rel: &str,
    checkpoint: u64,
    bytes: &[u8],
) -> Result<Manifest, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: rel.to_owned(),
        reason,
    };
    let manifest: Manifest = walhouse_info(bytes, "manifest").map_err(corrupt)?;
    if manifest.format_version != MANIFEST_FORMAT_VERSION {
        return Err(corrupt(format!(
            "manifest format {} (this build reads {MANIFEST_FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    if manifest.checkpoint != checkpoint {
        return Err(corrupt(format!(
            "manifest says checkpoint {} but is named {checkpoint}",
            manifest.checkpoint
        )));
    }
    Ok(manifest)
}

/// The newest manifest, if any.
pub async fn latest_manifest(store: &Store) -> Result<Option<Manifest>, CheckpointError> {
    match list_manifests(store).await?.last() {
        Some(&n) => load_manifest(store, n).await.map(Some),
        None => Ok(None),
    }
}

/// Commits `manifest`: one create-only PUT of the `changelog` table's log
/// entry of version `manifest.checkpoint` (its changelog files as `add`
/// actions, each source's offset as a `txn` action, the manifest in
/// `commitInfo.walhouse`), durable on `Ok` ([`Store::put_create_durable`]).
/// Before checkpoint 1, version 0 of both tables is created (an existing
/// one is kept if it is walhouse's).
///
/// The `state` table's entry of the same version is not written here: see
/// [`Checkpointer`](super::Checkpointer), which completes it right after,
/// and again before the next checkpoint or at recovery if a crash came
/// between.
///
/// A conflict (another entry of this version exists) means another writer
/// won: [`CheckpointError::ManifestConflict`]. An ambiguous outcome (an
/// error after which the PUT may have happened, such as a timeout) is
/// resolved by reading the object back: ours if the bytes are the same, a
/// conflict if they differ, the original error if it is absent.
pub async fn commit_manifest(store: &Store, manifest: &Manifest) -> Result<(), CheckpointError> {
    commit_manifest_after(store, manifest, None).await
}

/// [`commit_manifest`] knowing the manifest of the checkpoint before
/// (`previous`): if the owner changed since it, the entry also sets the
/// table property `walhouse.ownerId` anew.
pub(crate) async fn commit_manifest_after(
    store: &Store,
    manifest: &Manifest,
    previous: Option<&Manifest>,
) -> Result<(), CheckpointError> {
    if manifest.checkpoint == 1 {
        ensure_tables(store, manifest.owner_id.as_deref()).await?;
    }
    let metadata = owner_metadata(store, CHANGELOG_TABLE, manifest, previous).await?;
    let body = changelog_entry(manifest, metadata)?;
    commit_entry(
        store,
        manifest_path(manifest.checkpoint),
        body,
        manifest.checkpoint,
    )
    .await
}

/// The JSON Schema of [`Manifest`], as `schemas/manifest.schema.json` holds it.
#[must_use]
pub fn manifest_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default()
}

/// The JSON Schema of [`StateVersion`], as `schemas/state_version.schema.json`
/// holds it.
#[must_use]
pub fn state_version_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(StateVersion)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_state_version_schema_matches_the_code() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/state_version.schema.json")).unwrap();
        assert_eq!(
            file,
            state_version_json_schema(),
            "schemas/state_version.schema.json is stale: regenerate it with \
             `cargo run -- schema state-version > schemas/state_version.schema.json`"
        );
    }

    #[test]
    fn a_manifest_is_the_changelog_tables_log_entry() {
        assert_eq!(
            manifest_path(7),
            "changelog/_delta_log/00000000000000000007.json"
        );
    }

    #[test]
    fn checked_in_json_schema_matches_the_code() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/manifest.schema.json")).unwrap();
        assert_eq!(
            file,
            manifest_json_schema(),
            "schemas/manifest.schema.json is stale: regenerate it with \
             `cargo run -- schema manifest > schemas/manifest.schema.json`"
        );
    }
}
