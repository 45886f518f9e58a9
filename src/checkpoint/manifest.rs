//! The manifest: the single commit point of a checkpoint, written last with a
//! create-only PUT at `manifests/<N, 20 digits>.json`. There is no "latest"
//! pointer; the newest checkpoint is found by listing `manifests/`. Its JSON
//! Schema is `schemas/manifest.schema.json` (a test proves it matches).

use std::collections::BTreeMap;

use object_store::PutPayload;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::CheckpointError;
use crate::store::Store;

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

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

/// Where the state (latest value per key) of a checkpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRef {
    /// Checkpoint whose full snapshot is the base.
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
    /// Live keys in the state, if a snapshot was written by this checkpoint.
    pub snapshot_keys: Option<u64>,
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

    /// Every object the manifest references (changelog, snapshot, deltas).
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

/// Path of manifest `checkpoint` under the table root.
#[must_use]
pub fn manifest_path(checkpoint: u64) -> String {
    format!("manifests/{checkpoint:020}.json")
}

/// Parses a manifest path back into its number.
fn parse_manifest_name(relative: &str) -> Option<u64> {
    let name = relative.strip_prefix("manifests/")?.strip_suffix(".json")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

fn store_err(
    store: &Store,
    op: &'static str,
    path: &str,
    source: object_store::Error,
) -> CheckpointError {
    CheckpointError::Store {
        store: store.name().to_owned(),
        op,
        path: path.to_owned(),
        source,
    }
}

/// Numbers of every manifest in the store, ascending.
pub async fn list_manifests(store: &Store) -> Result<Vec<u64>, CheckpointError> {
    let prefix = store.path("manifests");
    let metas = store
        .list_all(&prefix)
        .await
        .map_err(|e| CheckpointError::store(store, "list", "manifests/", e))?;
    let mut numbers: Vec<u64> = metas
        .iter()
        .filter_map(|m| store.relative(&m.location).and_then(parse_manifest_name))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Reads and parses manifest `checkpoint`. Unreadable JSON, or a manifest
/// whose number or format does not match, is an error naming the object.
pub async fn load_manifest(store: &Store, checkpoint: u64) -> Result<Manifest, CheckpointError> {
    let rel = manifest_path(checkpoint);
    let bytes = store
        .get_all(&store.path(&rel))
        .await
        .map_err(|e| CheckpointError::store(store, "get", &rel, e))?;
    let corrupt = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: rel.clone(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("invalid manifest JSON: {e}")))?;
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

/// Commits `manifest` with a create-only PUT ([`Store::put_create_durable`]:
/// on a local store the manifest is durable, and whole, before its name
/// appears). Durable on `Ok`.
///
/// A conflict (the object exists) means another writer won:
/// [`CheckpointError::ManifestConflict`]. An ambiguous outcome (an error
/// after which the PUT may have happened, such as a timeout) is resolved by
/// reading the object back: ours if the bytes are the same, a conflict if
/// they differ, the original error if it is absent.
pub async fn commit_manifest(store: &Store, manifest: &Manifest) -> Result<(), CheckpointError> {
    let rel = manifest_path(manifest.checkpoint);
    let path = store.path(&rel);
    let body = serde_json::to_vec_pretty(manifest)
        .map_err(|e| CheckpointError::Task(format!("cannot encode manifest: {e}")))?;
    let conflict = || CheckpointError::ManifestConflict {
        store: store.name().to_owned(),
        path: rel.clone(),
        checkpoint: manifest.checkpoint,
    };
    // Durable before its name appears (on a local store): a crash between
    // the PUT and `Store::make_durable` must not leave an empty newest
    // manifest, which recovery refuses.
    match store
        .put_create_durable(&rel, PutPayload::from(body.clone()))
        .await
    {
        Ok(()) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            // A retried PUT of ours may also land here: compare.
            match read_back(store, &path).await {
                Ok(Some(existing)) if existing == body => Ok(()),
                _ => Err(conflict()),
            }
        }
        Err(e) => match read_back(store, &path).await {
            Ok(Some(existing)) if existing == body => Ok(()),
            Ok(Some(_)) => Err(conflict()),
            _ => Err(store_err(store, "create-only put", &rel, e)),
        },
    }
}

async fn read_back(
    store: &Store,
    path: &object_store::path::Path,
) -> Result<Option<Vec<u8>>, object_store::Error> {
    match store.get_all(path).await {
        Ok(got) => Ok(Some(got.to_vec())),
        Err(e) if matches!(e.source, object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.source),
    }
}

/// The JSON Schema of [`Manifest`], as `schemas/manifest.schema.json` holds it.
#[must_use]
pub fn manifest_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_sort_and_parse() {
        assert_eq!(manifest_path(7), "manifests/00000000000000000007.json");
        assert_eq!(
            parse_manifest_name(&manifest_path(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_manifest_name("manifests/x.json"), None);
        assert_eq!(parse_manifest_name("manifests/.json"), None);
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
