//! The `state` table's versions, built after each checkpoint's commit, off
//! its critical path.
//!
//! Version N of the `state` table follows from its version N-1 and the
//! changelog of checkpoint N: the changes (the changelog's live puts,
//! sorted by key, as new files) plus deletion vectors over the older files
//! for every key it put or deleted; or, when the table has too many files,
//! too many deleted rows, or the last full rewrite is `snapshot_every`
//! checkpoints old, a full rewrite into sorted, large files (compaction)
//! from the last one and the changelog since. Its log entry (a create-only
//! PUT) records the result in `commitInfo.walhouse` ([`StateVersion`]).
//!
//! A checkpoint commits its changelog, then hands the build of its state
//! version to a task of its own and returns; the next checkpoint waits for
//! that task after its own commit, so the state is at most one version
//! behind the changelog while checkpoints keep coming, and a slow build
//! holds back checkpoints instead of piling up. After a crash, the next
//! build starts at the newest state version in the log and builds every
//! missing one in order. Any complete state version N holds the same rows
//! (its files differ only in name): two builders racing for one version
//! keep the first entry and delete the loser's files.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::delta::{
    create_entry, latest_state_version, list_versions, load_state_version, log_path, mark_replaced,
    owner_metadata, parse_state_version, state_entry, Created, STATE_TABLE,
};
use super::error::CheckpointError;
use super::manifest::{load_manifest, DataFile, Manifest, StateFile, StateVersion};
use super::owner::check_owner;
use super::state::{build_snapshot, build_snapshot_fed, Build, TouchedKeys};
use super::Checkpointer;

/// What [`Checkpointer::finish_state`] (or the background build it waited
/// for) built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateBuilt {
    /// Versions of the `state` table written, oldest first.
    pub versions: Vec<u64>,
    /// Those among them that were a full rewrite (compaction).
    pub compacted: Vec<u64>,
    /// Bytes of the files written (state files and deletion vectors).
    pub bytes_written: u64,
    /// Live keys of the newest version written.
    pub keys: Option<u64>,
    /// Wall time of the builds.
    pub duration: Duration,
}

/// The background build of a [`Checkpointer`], shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// The build running or finished, not yet waited for.
    job: tokio::sync::Mutex<Option<JoinHandle<Result<StateBuilt, CheckpointError>>>>,
    /// The newest full rewrite this process committed: its checkpoint and
    /// files (the base of later manifests' [`StateRef`](super::StateRef)).
    snapshot: Mutex<Option<(u64, Vec<DataFile>)>>,
}

impl Background {
    /// The newest full rewrite of the state table this process committed.
    pub(crate) fn snapshot(&self) -> Option<(u64, Vec<DataFile>)> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records a full rewrite that committed (only if newer).
    pub(crate) fn set_snapshot(&self, checkpoint: u64, files: &[DataFile]) {
        let mut slot = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_none_or(|(n, _)| *n < checkpoint) {
            *slot = Some((checkpoint, files.to_vec()));
        }
    }
}

impl Checkpointer {
    /// Waits for the background build of the `state` table, then builds any
    /// version still missing (after a crash) up to the newest checkpoint:
    /// on `Ok`, the `state` table's newest version is the newest
    /// checkpoint's. Returns what was built, by the background task and
    /// now.
    ///
    /// Call it before the process exits (the CLI and the ingester's
    /// shutdown do): a build cut short is redone by the next checkpoint,
    /// but until then readers of the `state` table see the version before.
    pub async fn finish_state(&self) -> Result<StateBuilt, CheckpointError> {
        let mut built = self.wait_state_build().await?;
        let Some(latest) = self.latest().await? else {
            return Ok(built);
        };
        let more = self.build_state_up_to(latest.checkpoint).await?;
        built.versions.extend(more.versions);
        built.compacted.extend(more.compacted);
        built.bytes_written += more.bytes_written;
        built.keys = more.keys.or(built.keys);
        built.duration += more.duration;
        Ok(built)
    }

    /// Version `checkpoint` of the `state` table, if it is built.
    pub async fn state_version(
        &self,
        checkpoint: u64,
    ) -> Result<Option<StateVersion>, CheckpointError> {
        if checkpoint == 0
            || !list_versions(&self.store, STATE_TABLE)
                .await?
                .contains(&checkpoint)
        {
            return Ok(None);
        }
        load_state_version(&self.store, checkpoint).await.map(Some)
    }

    /// Waits for the background build, if one was started and not waited
    /// for.
    pub(crate) async fn wait_state_build(&self) -> Result<StateBuilt, CheckpointError> {
        let job = self.background.job.lock().await.take();
        match job {
            None => Ok(StateBuilt::default()),
            Some(handle) => handle
                .await
                .map_err(|e| CheckpointError::joined("state table build", e))?,
        }
    }

    /// After the commit of checkpoint `number`: waits for the build started
    /// by the checkpoint before (its failure is logged: this build redoes
    /// what it left), then starts the build of every state version up to
    /// `number` on a task of its own.
    pub(crate) async fn spawn_state_build(&self, number: u64) {
        let mut slot = self.background.job.lock().await;
        if let Some(previous) = slot.take() {
            match previous.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(
                    checkpoint = number,
                    error = %e,
                    "the state table's build after the previous checkpoint failed; this \
                     checkpoint's build redoes it"
                ),
                Err(e) => tracing::warn!(
                    checkpoint = number,
                    error = %e,
                    "the state table's build after the previous checkpoint did not finish; \
                     this checkpoint's build redoes it"
                ),
            }
        }
        let this = self.clone();
        *slot = Some(tokio::spawn(
            async move { this.build_state_up_to(number).await },
        ));
    }

    /// Builds, in order, every version of the `state` table after its newest
    /// one up to `up_to` (a committed checkpoint).
    pub(crate) async fn build_state_up_to(
        &self,
        up_to: u64,
    ) -> Result<StateBuilt, CheckpointError> {
        let started = Instant::now();
        let mut built = StateBuilt::default();
        let mut previous = latest_state_version(&self.store).await?;
        let first = previous.as_ref().map_or(1, |v| v.checkpoint + 1);
        if first > up_to {
            return Ok(built);
        }
        if let Some(v) = &previous {
            self.background
                .set_snapshot(v.snapshot_checkpoint, &v.snapshot);
        }
        let mut previous_manifest = match first {
            1 => None,
            n => Some(load_manifest(&self.store, n - 1).await?),
        };
        for number in first..=up_to {
            let manifest = load_manifest(&self.store, number).await?;
            // Garbage collection keeps the files of a build in progress.
            self.put_inflight_marker(number).await?;
            let result = self
                .build_state_version(&manifest, previous_manifest.as_ref(), previous.as_ref())
                .await;
            self.remove_inflight_marker(number).await;
            let (version, bytes) = result?;
            if version.snapshot_checkpoint == number {
                built.compacted.push(number);
                self.background.set_snapshot(number, &version.snapshot);
            }
            built.versions.push(number);
            built.bytes_written += bytes;
            built.keys = Some(version.keys);
            previous = Some(version);
            previous_manifest = Some(manifest);
        }
        built.duration = started.elapsed();
        Ok(built)
    }

    /// Whether version N of the state table (after `previous`, for the
    /// checkpoint of `manifest`) is a full rewrite.
    fn compaction_due(&self, manifest: &Manifest, previous: &StateVersion) -> bool {
        let rows: u64 = previous.table.iter().map(|f| f.file.rows).sum();
        let deleted: u64 = previous.table.iter().map(StateFile::deleted_rows).sum();
        let delta_bytes: u64 =
            changelog_after(&manifest.state.deltas, previous.snapshot_checkpoint)
                .map_or(u64::MAX, |d| d.iter().map(|f| f.size).sum());
        manifest.checkpoint - previous.snapshot_checkpoint >= self.settings.snapshot_every
            || delta_bytes > self.settings.snapshot_delta_bytes
            || previous.table.len() > self.settings.state_max_files
            || deleted * 100 > rows * u64::from(self.settings.state_max_deleted_percent)
    }

    /// Builds and commits version `manifest.checkpoint` of the state table
    /// after `previous` (its version before; `None` for checkpoint 1).
    /// Returns it and the bytes written.
    async fn build_state_version(
        &self,
        manifest: &Manifest,
        previous_manifest: Option<&Manifest>,
        previous: Option<&StateVersion>,
    ) -> Result<(StateVersion, u64), CheckpointError> {
        let number = manifest.checkpoint;
        let started = Instant::now();
        let (version, new_files) = match previous {
            Some(p) if !self.compaction_due(manifest, p) => self.state_changes(manifest, p).await?,
            _ => self.state_rewrite(manifest, previous).await?,
        };
        let bytes: u64 = new_files.iter().map(|f| f.size).sum();
        let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
        if let Err(e) = self.durable(&paths).await {
            self.remove_unreferenced(&new_files).await;
            return Err(e);
        }
        let before = previous.map_or(&[][..], |p| p.table.as_slice());
        let metadata =
            owner_metadata(&self.store, STATE_TABLE, manifest, previous_manifest).await?;
        let body = state_entry(&version, before, manifest, metadata)?;
        let rel = log_path(STATE_TABLE, number);
        // As for the changelog: nothing is committed once another data
        // directory took the table over.
        if let Some(id) = &self.owner_id {
            if let Err(e) = check_owner(&self.store, id).await {
                self.remove_unreferenced(&new_files).await;
                return Err(e);
            }
        }
        let version = match create_entry(&self.store, &rel, body).await {
            Ok(Created::Ours) => version,
            Ok(Created::Theirs(existing)) => {
                // Another build of this version committed first: any
                // complete version holds the same rows.
                let theirs = parse_state_version(&self.store, &rel, number, &existing)?;
                self.remove_unreferenced(&new_files).await;
                tracing::info!(
                    checkpoint = number,
                    "another build committed this state version first; its files are kept"
                );
                return Ok((theirs, 0));
            }
            Err(e) => {
                self.remove_unreferenced(&new_files).await;
                return Err(e);
            }
        };
        self.log_checkpoint_if_due(STATE_TABLE, number).await;
        tracing::info!(
            checkpoint = number,
            compacted = version.snapshot_checkpoint == number,
            files = version.table.len(),
            keys = version.keys,
            bytes,
            build_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "state table version committed"
        );
        Ok((version, bytes))
    }

    /// Version N as a full rewrite: the last rewrite's files merged with
    /// every changelog file after it, into new sorted files.
    async fn state_rewrite(
        &self,
        manifest: &Manifest,
        previous: Option<&StateVersion>,
    ) -> Result<(StateVersion, Vec<DataFile>), CheckpointError> {
        let number = manifest.checkpoint;
        let (base, since): (&[DataFile], u64) =
            previous.map_or((&[], 0), |p| (&p.snapshot, p.snapshot_checkpoint));
        let deltas = changelog_after(&manifest.state.deltas, since)
            .ok_or_else(|| self.unnamed_changelog(number))?;
        let snap = build_snapshot(&self.store, number, base, &deltas, &self.settings).await?;
        let version = StateVersion {
            checkpoint: number,
            snapshot_checkpoint: number,
            snapshot: snap.files.clone(),
            table: snap
                .files
                .iter()
                .map(|f| StateFile {
                    file: f.clone(),
                    deletion_vector: None,
                })
                .collect(),
            keys: snap.keys,
        };
        Ok((version, snap.files))
    }

    /// Version N as changes: the live puts of checkpoint N's changelog as
    /// new sorted files, and deletion vectors over `previous`'s files for
    /// every key it put or deleted.
    async fn state_changes(
        &self,
        manifest: &Manifest,
        previous: &StateVersion,
    ) -> Result<(StateVersion, Vec<DataFile>), CheckpointError> {
        let number = manifest.checkpoint;
        let changes = build_snapshot_fed(
            &self.store,
            number,
            &[],
            &manifest.changelog,
            None,
            &self.settings,
            Build::Changes,
        )
        .await?;
        let touched = changes.touched.unwrap_or_else(TouchedKeys::empty);
        let marked = match mark_replaced(&self.store, number, &previous.table, &touched).await {
            Ok(marked) => marked,
            Err(e) => {
                self.remove_unreferenced(&changes.files).await;
                return Err(e);
            }
        };
        tracing::debug!(
            checkpoint = number,
            touched_keys = touched.len(),
            rows_newly_deleted = marked.rows_newly_deleted,
            files_dropped = marked.files_dropped,
            "state table: older rows marked deleted"
        );
        let mut table = marked.table;
        table.extend(changes.files.iter().map(|f| StateFile {
            file: f.clone(),
            deletion_vector: None,
        }));
        let keys = table
            .iter()
            .map(|f| f.file.rows.saturating_sub(f.deleted_rows()))
            .sum();
        let mut files = changes.files;
        files.extend(marked.dv_file);
        let version = StateVersion {
            checkpoint: number,
            snapshot_checkpoint: previous.snapshot_checkpoint,
            snapshot: previous.snapshot.clone(),
            table,
            keys,
        };
        Ok((version, files))
    }

    fn unnamed_changelog(&self, number: u64) -> CheckpointError {
        CheckpointError::CorruptObject {
            store: self.store.name().to_owned(),
            path: super::manifest_path(number),
            reason: "a changelog file's name does not carry its checkpoint \
                     (changelog/epoch=<E>/part-<checkpoint, 20 digits>-...)"
                .into(),
        }
    }
}

/// The files of `deltas` (changelog files in commit order) that checkpoints
/// after `checkpoint` wrote; `None` if a name does not say which wrote it.
pub(crate) fn changelog_after(deltas: &[DataFile], checkpoint: u64) -> Option<Vec<DataFile>> {
    let mut out = Vec::new();
    for file in deltas {
        if changelog_checkpoint(&file.path)? > checkpoint {
            out.push(file.clone());
        }
    }
    Some(out)
}

/// The checkpoint that wrote changelog file `relative`
/// (`changelog/epoch=E/part-<checkpoint, 20 digits>-...`).
pub(crate) fn changelog_checkpoint(relative: &str) -> Option<u64> {
    let rest = relative.strip_prefix("changelog/")?;
    let name = rest.rsplit('/').next()?;
    let digits = name.strip_prefix("part-")?.get(..20)?;
    digits.parse().ok()
}

/// Shared background state of a checkpointer.
pub(crate) type SharedBackground = Arc<Background>;

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> DataFile {
        DataFile {
            path: path.into(),
            size: 1,
            crc32c: 0,
            rows: 1,
        }
    }

    #[test]
    fn changelog_after_keeps_the_files_of_later_checkpoints_in_order() {
        let deltas = [
            file("changelog/epoch=3/part-00000000000000000002-0-a.parquet"),
            file("changelog/epoch=4/part-00000000000000000003-0-b.parquet"),
            file("changelog/epoch=4/part-00000000000000000003-1-c.parquet"),
            file("changelog/epoch=6/part-00000000000000000004-0-d.parquet"),
        ];
        let after: Vec<_> = changelog_after(&deltas, 2)
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            after,
            [&*deltas[1].path, &*deltas[2].path, &*deltas[3].path]
        );
        assert_eq!(changelog_after(&deltas, 4).unwrap(), []);
        assert_eq!(changelog_after(&deltas, 0).unwrap().len(), 4);
        assert!(changelog_after(&[file("changelog/x.parquet")], 0).is_none());
    }
}
