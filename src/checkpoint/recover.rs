//! Recovery: the newest checkpoint from the store (the `state` Delta table
//! at its newest version, deletion vectors applied, then the changelog of
//! any checkpoint after that version whose state build has not committed
//! yet), then the local WAL tail.
//!
//! The newest manifest is the only one used: if it cannot be (unreadable
//! JSON, a referenced object missing or not matching its size and crc32c),
//! recovery fails naming the object. It never falls back to an older
//! checkpoint, which would lack acknowledged data.

use std::collections::{BTreeMap, HashMap};
use std::path::Path as FsPath;

use arrow_array::{Array, BinaryArray, RecordBatch};
use futures::TryStreamExt;
use roaring::RoaringTreemap;

use super::changelog_rows::{Change, ChangelogRows};
use super::delta::{latest_state_version, read_existing};
use super::error::CheckpointError;
use super::manifest::{latest_manifest, DataFile, Manifest, StateVersion};
use super::parquet::{file_crc32c, open_parquet_stream, read_error};
use super::state_build::changelog_after;
use crate::per_core_wal::{
    next_sequence_after, LogStart, PerCoreRecoveredState, PerCoreRecoveryManager, PerCoreWalConfig,
    StateMapBuilder,
};
use crate::store::Store;

/// What recovery rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The checkpoint the state started from (`None`: no checkpoint yet).
    pub checkpoint: Option<u64>,
    /// Whether a local WAL was found. Without one (a new machine), the state
    /// is exactly the checkpoint's, and the writers must resume after its
    /// sequences (`PerCoreWalManagerBuilder::resume_at`).
    pub wal_present: bool,
    /// The final state, offsets, watermark, epoch and what the writers need
    /// to resume (`next_sequences`, `final_epoch`).
    pub state: PerCoreRecoveredState,
    /// Objects of the checkpoint verified (size and crc32c) before decoding.
    pub objects_verified: usize,
}

/// Recovers from the newest checkpoint in `store` plus the WAL described by
/// `wal_config`: verifies every object the manifest references before
/// decoding any and loads the snapshot and the changelog deltas after it;
/// meanwhile, on other threads, repairs the WAL's torn tails and replays
/// each core's entries the manifest does not cover; then applies those onto
/// the checkpoint's state. Idempotent.
///
/// Detectable damage is an error, never a shorter state: a core whose
/// oldest remaining segment starts after what the checkpoint covers (after
/// sequence 0 without a checkpoint) is
/// [`PerCoreWalError::MissingSegments`](crate::per_core_wal::PerCoreWalError::MissingSegments),
/// naming the core, the file and the sequences. What the repair removed (a
/// torn tail cut, a segment whose header never became durable) is in
/// `state.repairs` and logged as a warning. Transient store errors on the
/// reads are retried ([`crate::store::RETRY_ATTEMPTS`]); a panic in one of
/// its tasks is [`CheckpointError::TaskPanicked`] naming the task.
pub async fn recover(
    store: &Store,
    wal_config: &PerCoreWalConfig,
) -> Result<Recovered, CheckpointError> {
    let manifest = latest_manifest(store).await?;
    let covered: Vec<Option<u64>> = manifest
        .as_ref()
        .map_or_else(Vec::new, |m| m.covered_sequences(wal_config.num_cores));
    let wal_present = wal_exists(&wal_config.base_dir);
    // The WAL is repaired and replayed on threads of its own while the
    // checkpoint is verified and loaded; it is merged onto the loaded state
    // after. Both are awaited before anything returns, errors included, so
    // no repair runs on after recovery failed.
    let replay = wal_present.then(|| {
        let recovery = PerCoreRecoveryManager::new(wal_config.clone());
        let covered = covered.clone();
        // The manifest (or its absence) is the whole truth about what was
        // removed: every core's log must start where it stops covering.
        tokio::task::spawn_blocking(move || recovery.replay(&covered, LogStart::EveryCore))
    });
    let mut base = PerCoreRecoveredState::default();
    let mut objects_verified = 0;
    let loaded = async {
        if let Some(m) = &manifest {
            // The state table's build of the newest checkpoints may not have
            // committed (it runs after the commit): their changelog follows.
            let version = latest_state_version(store).await?;
            let deltas = pending_changelog(store, m, version.as_ref())?;
            objects_verified = verify_all(store, m, version.as_ref(), &deltas).await?;
            load_state(store, version.as_ref(), &deltas, &mut base).await?;
            base.source_offsets = m.source_offsets.clone().into_iter().collect();
            base.watermark = m.watermark;
            base.final_epoch = m.epochs.last;
        }
        Ok::<(), CheckpointError>(())
    }
    .await;
    let replayed = match replay {
        Some(handle) => Some(
            handle
                .await
                .map_err(|e| CheckpointError::joined("recovery task (WAL replay)", e))?,
        ),
        None => None,
    };
    // A bad checkpoint is reported before anything the WAL found.
    loaded?;
    let state = if let Some(replayed) = replayed {
        let replayed = replayed?;
        tokio::task::spawn_blocking(move || replayed.onto(base))
            .await
            .map_err(|e| {
                CheckpointError::joined("recovery task (merging the WAL onto the checkpoint)", e)
            })??
    } else {
        tracing::warn!(
            wal = %wal_config.base_dir.display(),
            checkpoint = manifest.as_ref().map(|m| m.checkpoint),
            "no local WAL: recovered only what the object store holds"
        );
        let next = (0..wal_config.num_cores)
            .map(|core| next_sequence_after(covered.get(core).copied().flatten()))
            .collect();
        PerCoreRecoveredState {
            next_sequences: next,
            ..base
        }
    };
    Ok(Recovered {
        checkpoint: manifest.map(|m| m.checkpoint),
        wal_present,
        state,
        objects_verified,
    })
}

fn wal_exists(dir: &FsPath) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// The changelog files of the checkpoints after state version `version`
/// up to `manifest`'s, in commit order.
pub(crate) fn pending_changelog(
    store: &Store,
    manifest: &Manifest,
    version: Option<&StateVersion>,
) -> Result<Vec<DataFile>, CheckpointError> {
    let since = version.map_or(0, |v| v.checkpoint);
    let corrupt = |reason: String| CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: super::delta::log_path(super::delta::STATE_TABLE, since),
        reason,
    };
    if since > manifest.checkpoint || since < manifest.state.snapshot_checkpoint {
        return Err(corrupt(format!(
            "the state table's newest version is {since}, but checkpoint {} is the newest \
             and its state is based on version {}",
            manifest.checkpoint, manifest.state.snapshot_checkpoint
        )));
    }
    changelog_after(&manifest.state.deltas, since).ok_or_else(|| {
        corrupt(format!(
            "a changelog file of manifest {} does not name its checkpoint",
            manifest.checkpoint
        ))
    })
}

/// Checks the size and crc32c of every object recovery reads (the state
/// table's files and deletion vectors, the changelog after it); the first
/// mismatch or missing object is an error naming it.
async fn verify_all(
    store: &Store,
    manifest: &Manifest,
    version: Option<&StateVersion>,
    deltas: &[DataFile],
) -> Result<usize, CheckpointError> {
    let mut files: Vec<&DataFile> = version
        .map(StateVersion::referenced_files)
        .unwrap_or_default()
        .into_iter()
        .chain(deltas)
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    for file in &files {
        let (size, crc) = file_crc32c(store, &file.path).await?;
        if size != file.size || crc != file.crc32c {
            return Err(CheckpointError::CorruptObject {
                store: store.name().to_owned(),
                path: file.path.clone(),
                reason: format!(
                    "{size} bytes with crc32c {crc:#010x}; checkpoint {} says {} bytes with {:#010x}",
                    manifest.checkpoint, file.size, file.crc32c
                ),
            });
        }
    }
    Ok(files.len())
}

/// The state table at `version`: the live rows (those no deletion vector
/// marks) of every file. The snapshot's files are sorted and disjoint, so
/// their rows go to one arena in order; the rows of the files of later
/// checkpoints (their changes) are applied over it, and then the changelog
/// files `deltas` in order.
async fn load_state(
    store: &Store,
    version: Option<&StateVersion>,
    deltas: &[DataFile],
    out: &mut PerCoreRecoveredState,
) -> Result<(), CheckpointError> {
    let mut snapshot = StateMapBuilder::new();
    let mut changes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut vectors = HashMap::new();
    for entry in version.map_or(&[][..], |v| v.table.as_slice()) {
        let file = &entry.file;
        let deleted = match &entry.deletion_vector {
            Some(dv) => read_existing(store, dv, &mut vectors).await?,
            None => RoaringTreemap::new(),
        };
        let in_snapshot = version.is_some_and(|v| v.snapshot.iter().any(|f| f.path == file.path));
        let mut row = 0_u64;
        for_each_batch(store, file, |batch| {
            let (keys, values) = (
                binary(store, file, batch, "key")?,
                binary(store, file, batch, "value")?,
            );
            if in_snapshot {
                snapshot.reserve(
                    batch.num_rows(),
                    keys.value_data().len() + values.value_data().len(),
                );
            }
            for r in 0..batch.num_rows() {
                if !deleted.contains(row) {
                    if in_snapshot {
                        snapshot.push(keys.value(r), values.value(r));
                    } else {
                        changes.insert(keys.value(r).to_vec(), Some(values.value(r).to_vec()));
                    }
                }
                row += 1;
            }
            Ok(())
        })
        .await?;
    }
    // The changelog after the version, in order (the last change of a key
    // wins).
    for file in deltas {
        let mut at = 0_u64;
        for_each_batch(store, file, |batch| {
            let rows = ChangelogRows::of(batch).map_err(|e| corrupt(store, file, e))?;
            for r in 0..batch.num_rows() {
                match rows.change(r, at).map_err(|e| corrupt(store, file, e))? {
                    Change::Put(key, value) => {
                        changes.insert(key.to_vec(), Some(value.to_vec()));
                    }
                    Change::Delete(key) => {
                        changes.insert(key.to_vec(), None);
                    }
                    Change::Marker => {}
                }
                at += 1;
            }
            Ok(())
        })
        .await?;
    }
    out.state = snapshot.finish().with_changes(changes);
    Ok(())
}

fn corrupt(store: &Store, file: &DataFile, reason: String) -> CheckpointError {
    CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: file.path.clone(),
        reason,
    }
}

fn binary<'a>(
    store: &Store,
    file: &DataFile,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a BinaryArray, CheckpointError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| corrupt(store, file, format!("no binary column `{name}`")))
}

async fn for_each_batch(
    store: &Store,
    file: &DataFile,
    mut f: impl FnMut(&RecordBatch) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let mut stream = open_parquet_stream(store, file).await?;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| read_error(store, &file.path, e))?
    {
        f(&batch)?;
    }
    Ok(())
}
