//! The commit protocol: data files, then the manifest (create-only), then,
//! and only then, removal of the WAL segments the manifest covers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use super::delta::{
    complete_state_version, ensure_state_version, mark_replaced, write_log_checkpoints,
};
use super::error::CheckpointError;
use super::manifest::{
    commit_manifest_after, latest_manifest, list_manifests, load_manifest, CheckpointStats,
    CoreCoverage, DataFile, EpochRange, Manifest, StateFile, StateRef, MANIFEST_FORMAT_VERSION,
};
use super::owner::check_owner;
use super::parquet::{file_crc32c, write_changelog_tee, ChangelogSummary};
use super::schema::SCHEMA_VERSION;
use super::state::{build_snapshot, build_snapshot_fed, Build, SnapshotSummary, TouchedKeys};
use super::{CheckpointSettings, GraceCheck};
use crate::per_core_wal::{MergeStream, PerCoreWalManager};
use crate::store::Store;

/// Changelog batches queued for the snapshot built alongside it.
const TEE_BATCHES: usize = 2;

/// What a committed checkpoint did.
#[derive(Debug, Clone)]
pub struct CheckpointOutcome {
    /// The committed manifest.
    pub manifest: Manifest,
    /// WAL segment files removed after the commit.
    pub removed_segments: usize,
    /// Bytes of data files written (changelog and snapshot).
    pub bytes_written: u64,
    /// Whether this checkpoint wrote a full state snapshot.
    pub snapshot_written: bool,
    /// Wall time of the whole checkpoint.
    pub duration: Duration,
}

/// What [`Checkpointer::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The checkpoint verified.
    pub checkpoint: u64,
    /// Files checked.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// One line per file that is missing or differs, naming it.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when every file matched.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`Checkpointer::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Checkpoints (Delta versions) whose files are kept, so that time
    /// travel to them works.
    pub retained: Vec<u64>,
    /// Older checkpoints: their log entries stay (the Delta log is only
    /// cleaned up behind a Delta log checkpoint), but the state files only
    /// they referenced are removed, so reading the state table as of them
    /// fails.
    pub versions_expired: Vec<u64>,
    /// Data objects removed (unreferenced and older than the grace period).
    pub objects_removed: Vec<String>,
    /// Unreferenced objects (and staging files) kept because they are
    /// younger than the grace period.
    pub objects_in_grace: usize,
    /// Staging files of local multipart uploads a crash left behind (older
    /// than the grace period; `<object>#<digits>`, never listed as objects).
    pub staging_files_removed: Vec<String>,
    /// Unreferenced objects (and staging files) kept because a checkpoint
    /// that is still running wrote them.
    pub objects_in_flight: usize,
    /// In-flight markers removed as stale (checkpoint numbers).
    pub stale_markers_removed: Vec<u64>,
}

/// Writes checkpoints of sealed WAL epochs to a store and manages them.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    store: Store,
    settings: CheckpointSettings,
    owner_id: Option<String>,
}

impl Checkpointer {
    /// A checkpointer for the table at `store`'s root.
    pub fn new(store: Store, settings: CheckpointSettings) -> Result<Self, CheckpointError> {
        validate(&settings)?;
        Ok(Self {
            store,
            settings,
            owner_id: None,
        })
    }

    /// Commits only while the data directory `owner_id` owns the table
    /// (`_walhouse/owner.json`, see [`TableOwner`](super::TableOwner)):
    /// every checkpoint reads the owner just before its commit and fails
    /// with [`CheckpointError::NotOwner`] otherwise.
    #[must_use]
    pub fn with_owner(mut self, owner_id: &str) -> Self {
        self.owner_id = Some(owner_id.to_owned());
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &CheckpointSettings {
        &self.settings
    }

    /// Seals the current epoch on every core (all writers attached), then
    /// checkpoints everything up to it. See [`Checkpointer::checkpoint_sealed`].
    pub async fn checkpoint(
        &self,
        wal: &mut PerCoreWalManager,
    ) -> Result<CheckpointOutcome, CheckpointError> {
        // The sealed epoch must be past what the newest checkpoint covers,
        // even when the WAL was reopened at an older epoch (its covered
        // segments may still be on disk after a crash).
        let next = self.advance_epoch(wal).await?;
        wal.write_epoch_barrier_all()?;
        wal.sync_all()?;
        self.checkpoint_sealed(wal, next - 1).await
    }

    /// Advances the WAL's epoch (every writer, attached or detached, moves
    /// to it) past the newest checkpoint's last epoch, even when the WAL was
    /// reopened at an older epoch, and returns it: once every core has
    /// written its barrier, `epoch - 1` is sealed and can be checkpointed.
    pub async fn advance_epoch(&self, wal: &mut PerCoreWalManager) -> Result<u64, CheckpointError> {
        let covered_epoch = latest_manifest(&self.store).await?.map(|m| m.epochs.last);
        let mut next = wal.advance_epoch();
        if let Some(last) = covered_epoch {
            next = next.max(last + 2);
        }
        wal.set_epoch_all(next);
        Ok(next)
    }

    /// Checkpoints every WAL entry of the epochs up to `epoch`, which every
    /// core must have sealed (writers may be detached and keep appending to
    /// later epochs meanwhile).
    ///
    /// Order of durability: the changelog (and, when due, snapshot) files are
    /// uploaded (and fsynced on a local store); then the manifest is
    /// committed with a create-only PUT; then the WAL segments of the
    /// covered epochs are removed. A failure before the commit leaves no
    /// manifest and the WAL intact: the next checkpoint covers the same
    /// entries again, and GC removes the orphaned files. Entries the previous
    /// checkpoint already holds (left by a crash between its commit and its
    /// WAL removal) are skipped by sequence number, never written twice.
    pub async fn checkpoint_sealed(
        &self,
        wal: &PerCoreWalManager,
        epoch: u64,
    ) -> Result<CheckpointOutcome, CheckpointError> {
        let started = Instant::now();
        let previous = latest_manifest(&self.store).await?;
        if let Some(prev) = &previous {
            if epoch <= prev.epochs.last {
                return Err(CheckpointError::InvalidSetting {
                    field: "epoch",
                    reason: format!(
                        "epoch {epoch} is already covered by checkpoint {} (epochs up to {})",
                        prev.checkpoint, prev.epochs.last
                    ),
                });
            }
        }
        let number = previous.as_ref().map_or(1, |m| m.checkpoint + 1);
        // A crash between the previous commit and its `state` entry left
        // that entry to complete (the same bytes as it would have had).
        if let Some(prev) = &previous {
            ensure_state_version(&self.store, prev).await?;
        }
        // Garbage collection keeps every object of an in-flight checkpoint:
        // the marker is written before the first object and removed after
        // the commit (or the failure), see `Checkpointer::gc`.
        self.put_inflight_marker(number).await?;
        let result = self
            .checkpoint_numbered(wal, epoch, number, previous, started)
            .await;
        self.remove_inflight_marker(number).await;
        result
    }

    /// [`Checkpointer::checkpoint_sealed`] once its number is known and its
    /// in-flight marker is written.
    async fn checkpoint_numbered(
        &self,
        wal: &PerCoreWalManager,
        epoch: u64,
        number: u64,
        previous: Option<Manifest>,
        started: Instant,
    ) -> Result<CheckpointOutcome, CheckpointError> {
        let first_epoch = previous.as_ref().map_or(0, |m| m.epochs.last + 1);
        // A crash after the previous commit may have left covered segments;
        // their entries are skipped by sequence, and removed with the rest
        // once this checkpoint is committed.
        let covered = previous
            .as_ref()
            .map_or_else(Vec::new, |p| p.covered_sequences(wal.num_cores()));
        // The segments are read once, then removed after the commit: their
        // cached pages are dropped as the merge finishes each one, so the
        // removal after the commit has no page cache to free.
        let stream = wal
            .merge_sealed(epoch)?
            .skip_covered(covered)
            .drop_cache_after_read();
        let (changelog, state_written, kind) = self
            .write_changelog_and_state(number, previous.as_ref(), stream, wal.num_cores())
            .await?;

        let (state, snapshot, mut state_files) = self
            .next_state(
                number,
                previous.as_ref(),
                &changelog.files,
                state_written,
                kind,
            )
            .await?;
        let snapshot_written = snapshot.is_some();
        let mut new_files: Vec<DataFile> = changelog.files.clone();
        new_files.append(&mut state_files);
        let mut manifest = manifest_for(
            number,
            EpochRange {
                first: first_epoch,
                last: epoch,
            },
            previous.as_ref(),
            &changelog,
            state,
            snapshot.map(|s| s.keys),
            wal.num_cores(),
        );
        manifest.owner_id.clone_from(&self.owner_id);

        let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
        let written = started.elapsed();
        self.durable(&paths).await?;
        let synced = started.elapsed();
        if let Some(id) = &self.owner_id {
            check_owner(&self.store, id).await?;
        }
        // Durable on return (`Store::put_create_durable`): the commit point.
        commit_manifest_after(&self.store, &manifest, previous.as_ref()).await?;
        let committed = started.elapsed();
        // The `state` table's entry of this version follows from the
        // manifests alone: if it fails here, the next checkpoint or
        // recovery writes it (the same bytes).
        if let Err(e) = complete_state_version(&self.store, &manifest, previous.as_ref()).await {
            tracing::warn!(
                checkpoint = number,
                error = %e,
                "checkpoint committed, but the state table's entry of this version is not \
                 written yet; the next checkpoint or recovery writes it"
            );
        }
        let removed_segments = wal.remove_segments_up_to_epoch(epoch)?;
        let interval = self.settings.log_checkpoint_interval;
        if interval > 0 && number.is_multiple_of(interval) {
            // Best effort: without it readers replay more log entries.
            if let Err(e) = write_log_checkpoints(&self.store, number).await {
                tracing::warn!(
                    checkpoint = number,
                    error = %e,
                    "cannot write the Delta log checkpoint; readers replay the log instead"
                );
            }
        }
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            checkpoint = number,
            epochs = ?(first_epoch, epoch),
            entries = manifest.stats.entries,
            files = new_files.len(),
            removed_segments,
            write_us = micros(written),
            fsync_us = micros(synced.saturating_sub(written)),
            commit_us = micros(committed.saturating_sub(synced)),
            remove_us = micros(started.elapsed().saturating_sub(committed)),
            "checkpoint committed"
        );
        Ok(CheckpointOutcome {
            bytes_written: new_files.iter().map(|f| f.size).sum(),
            snapshot_written,
            manifest,
            removed_segments,
            duration: started.elapsed(),
        })
    }

    /// The state of checkpoint `number`, and the new files it wrote for it:
    /// a new full snapshot when due (the first checkpoint, every
    /// `snapshot_every`, past `snapshot_delta_bytes` of changelog, or when
    /// the state table's files or deleted rows pass their limits), else the
    /// previous snapshot plus the changelog deltas after it, and in the
    /// `state` table the changes `built` alongside the changelog with
    /// deletion vectors over the older files.
    ///
    /// `written` is what [`Checkpointer::write_changelog_and_state`] built
    /// alongside the changelog, a snapshot or only the changes (`kind`).
    async fn next_state(
        &self,
        number: u64,
        previous: Option<&Manifest>,
        changelog: &[DataFile],
        written: SnapshotSummary,
        kind: Build,
    ) -> Result<(StateRef, Option<SnapshotSummary>, Vec<DataFile>), CheckpointError> {
        let (base_checkpoint, base, mut deltas, mut delta_bytes) = match previous {
            Some(p) => (
                p.state.snapshot_checkpoint,
                p.state.snapshot.clone(),
                p.state.deltas.clone(),
                p.state.delta_bytes,
            ),
            None => (0, Vec::new(), Vec::new(), 0),
        };
        deltas.extend(changelog.iter().cloned());
        delta_bytes += changelog.iter().map(|f| f.size).sum::<u64>();
        let snapshot = |snap: SnapshotSummary| {
            let state = StateRef {
                snapshot_checkpoint: number,
                snapshot: snap.files.clone(),
                deltas: Vec::new(),
                delta_bytes: 0,
                table: snap
                    .files
                    .iter()
                    .map(|f| StateFile {
                        file: f.clone(),
                        deletion_vector: None,
                    })
                    .collect(),
            };
            let files = snap.files.clone();
            (state, Some(snap), files)
        };
        if kind == Build::Snapshot {
            return Ok(snapshot(written));
        }
        if delta_bytes > self.settings.snapshot_delta_bytes {
            // Due only now that the changelog's size is known: the changes
            // built alongside are not needed.
            self.remove_unreferenced(&written.files).await;
            let snap = build_snapshot(&self.store, number, &base, &deltas, &self.settings).await?;
            return Ok(snapshot(snap));
        }
        let live = previous.map_or(&[][..], |p| p.state.table.as_slice());
        let touched = written.touched.unwrap_or_else(TouchedKeys::empty);
        let marked = match mark_replaced(&self.store, number, live, &touched).await {
            Ok(marked) => marked,
            Err(e) => {
                self.remove_unreferenced(&written.files).await;
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
        table.extend(written.files.iter().map(|f| StateFile {
            file: f.clone(),
            deletion_vector: None,
        }));
        let mut files = written.files;
        files.extend(marked.dv_file);
        let state = StateRef {
            snapshot_checkpoint: base_checkpoint,
            snapshot: base,
            deltas,
            delta_bytes,
            table,
        };
        Ok((state, None, files))
    }

    /// Writes the changelog of checkpoint `number` and, at the same time on
    /// another task, from the changelog's batches (no files read back), the
    /// state: a full snapshot when one is due whatever the changelog holds,
    /// else only the changes (live puts as files, touched keys kept).
    async fn write_changelog_and_state(
        &self,
        number: u64,
        previous: Option<&Manifest>,
        stream: MergeStream,
        num_cores: usize,
    ) -> Result<(ChangelogSummary, SnapshotSummary, Build), CheckpointError> {
        let build = if self.snapshot_due_before(number, previous) {
            Build::Snapshot
        } else {
            Build::Changes
        };
        // The state build sorts the changelog's batches while they are
        // encoded (on another worker), instead of reading the files back.
        let (tee, current) = mpsc::channel(TEE_BATCHES);
        let (store, settings) = (self.store.clone(), self.settings.clone());
        let (base, deltas) = match (build, previous) {
            (Build::Snapshot, Some(p)) => (p.state.snapshot.clone(), p.state.deltas.clone()),
            _ => Default::default(),
        };
        let state = tokio::spawn(async move {
            build_snapshot_fed(
                &store,
                number,
                &base,
                &deltas,
                Some(current),
                &settings,
                build,
            )
            .await
        });
        let changelog = write_changelog_tee(
            &self.store,
            number,
            stream,
            num_cores,
            &self.settings,
            Some(tee),
        )
        .await;
        // The state build usually runs on after the changelog is written
        // (its final merge and its own file): the changelog's files are
        // fsynced meanwhile instead of after it. `checkpoint_sealed` still
        // makes every new file durable before the commit (a no-op for these
        // by then).
        let early_sync = async {
            match &changelog {
                Ok(c) => {
                    let paths: Vec<String> = c.files.iter().map(|f| f.path.clone()).collect();
                    self.durable(&paths).await
                }
                Err(_) => Ok(()),
            }
        };
        let (synced, state) = tokio::join!(early_sync, state);
        let state = state
            .map_err(|e| CheckpointError::Task(format!("state task of checkpoint {number}: {e}")));
        let state = state.and_then(|r| r);
        let changelog = changelog.and_then(|c| synced.map(|()| c));
        match (changelog, state) {
            (Ok(changelog), Ok(state)) => Ok((changelog, state, build)),
            (Ok(changelog), Err(e)) => {
                self.remove_unreferenced(&changelog.files).await;
                Err(e)
            }
            (Err(e), Ok(state)) => {
                self.remove_unreferenced(&state.files).await;
                Err(e)
            }
            // When both failed, one only saw the other stop (a `Task`
            // error): the other's error is the cause.
            (Err(e), Err(s)) => Err(match (&e, &s) {
                (CheckpointError::Task(_), other) if !matches!(other, CheckpointError::Task(_)) => {
                    s
                }
                _ => e,
            }),
        }
    }

    /// Whether a snapshot is due whatever this checkpoint's changelog
    /// holds (the first checkpoint, every `snapshot_every`, or a delta
    /// already past `snapshot_delta_bytes`). Then it is built alongside the
    /// changelog; a snapshot due only once the new changelog's size is known
    /// reads the changelog files back instead.
    fn snapshot_due_before(&self, number: u64, previous: Option<&Manifest>) -> bool {
        previous.is_none_or(|p| {
            let table = &p.state.table;
            let rows: u64 = table.iter().map(|f| f.file.rows).sum();
            let deleted: u64 = table.iter().map(StateFile::deleted_rows).sum();
            number - p.state.snapshot_checkpoint >= self.settings.snapshot_every
                || p.state.delta_bytes > self.settings.snapshot_delta_bytes
                || table.len() > self.settings.state_max_files
                || deleted * 100 > rows * u64::from(self.settings.state_max_deleted_percent)
        })
    }

    /// An error of a local file operation on `relative` (a path under a
    /// local store's root).
    fn local_error(
        &self,
        op: &'static str,
        relative: &str,
        source: std::io::Error,
    ) -> CheckpointError {
        CheckpointError::Io {
            op,
            path: self
                .store
                .local_dir()
                .map_or_else(|| relative.into(), |dir| dir.join(relative)),
            source,
        }
    }

    async fn durable(&self, paths: &[String]) -> Result<(), CheckpointError> {
        self.store
            .make_durable(paths)
            .await
            .map_err(|source| CheckpointError::Io {
                op: "fsync checkpoint files",
                path: self
                    .store
                    .local_dir()
                    .map(ToOwned::to_owned)
                    .unwrap_or_default(),
                source,
            })
    }

    /// Every committed manifest, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Manifest>, CheckpointError> {
        let mut out = Vec::new();
        for n in list_manifests(&self.store).await? {
            out.push(load_manifest(&self.store, n).await?);
        }
        Ok(out)
    }

    /// The newest committed manifest, if any.
    pub async fn latest(&self) -> Result<Option<Manifest>, CheckpointError> {
        latest_manifest(&self.store).await
    }

    /// Checks that every file of checkpoint `checkpoint` (default: the
    /// newest) exists with the recorded size and crc32c. Reads every byte.
    pub async fn verify(&self, checkpoint: Option<u64>) -> Result<VerifyReport, CheckpointError> {
        let number = match checkpoint {
            Some(n) => n,
            None => match list_manifests(&self.store).await?.last() {
                Some(&n) => n,
                None => return Ok(VerifyReport::default()),
            },
        };
        let manifest = load_manifest(&self.store, number).await?;
        let mut report = VerifyReport {
            checkpoint: number,
            ..VerifyReport::default()
        };
        for file in manifest.referenced_files() {
            report.files += 1;
            match file_crc32c(&self.store, &file.path).await {
                Ok((size, crc)) => {
                    report.bytes += size;
                    if size != file.size {
                        report.problems.push(format!(
                            "{}: size {size}, manifest says {}",
                            file.path, file.size
                        ));
                    } else if crc != file.crc32c {
                        report.problems.push(format!(
                            "{}: crc32c {crc:#010x}, manifest says {:#010x}",
                            file.path, file.crc32c
                        ));
                    }
                }
                Err(e) => report.problems.push(format!("{}: {e}", file.path)),
            }
        }
        Ok(report)
    }

    /// Retention, then garbage collection, with Delta VACUUM's rule: an
    /// object is removed only when no retained version references it, no
    /// in-flight checkpoint will reference it, and it is older than
    /// `gc_grace_secs`.
    ///
    /// The newest `retain_checkpoints` versions stay readable (time travel);
    /// the changelog table is append-only, so every changelog file any
    /// version added stays. Removes every other object under `changelog/`
    /// and `state/` that is older than the grace period (orphans of failed
    /// checkpoints, state files and deletion vectors only expired versions
    /// used), and the staging files of interrupted local uploads. Log
    /// entries (`_delta_log/`) are never removed.
    ///
    /// Safe beside a running checkpoint of the table's writer, whatever the
    /// grace: the objects are listed first, then the in-flight markers
    /// (`_walhouse/inflight/<checkpoint>.json`, written before a
    /// checkpoint's first object and removed after its commit), then the
    /// manifests. An object seen in the listing was written after its
    /// checkpoint's marker, so either the marker is still there (the object
    /// is kept) or the checkpoint has committed before the marker went, and
    /// its manifest is among the kept ones. A marker older than
    /// [`STALE_MARKER_SECS`] (and the grace) is the leftover of a writer
    /// that crashed mid-checkpoint; it is removed, and its objects with it
    /// on a later run.
    ///
    /// A grace below [`MIN_GC_GRACE_SECS`] is refused unless
    /// `gc_grace_check` is [`GraceCheck::Off`] (Delta's
    /// `retentionDurationCheck`): a short grace also removes objects that a
    /// writer of an older walhouse, or one using the store without
    /// markers, is still uploading.
    pub async fn gc(&self) -> Result<GcReport, CheckpointError> {
        if self.settings.gc_grace_check == GraceCheck::Enforce
            && self.settings.gc_grace_secs < MIN_GC_GRACE_SECS
        {
            return Err(CheckpointError::InvalidSetting {
                field: "gc_grace_secs",
                reason: format!(
                    "{} s is below the safe minimum of {MIN_GC_GRACE_SECS} s; set \
                     gc_grace_check = \"off\" (`walhouse gc --force`) to use it anyway",
                    self.settings.gc_grace_secs
                ),
            });
        }
        let grace = Duration::from_secs(self.settings.gc_grace_secs);
        let now = SystemTime::now();
        // 1. The objects and staging files.
        let (objects, staged) = self.list_data_objects().await?;
        // 2. The in-flight markers.
        let markers = self.inflight_markers().await?;
        let stale = grace.max(Duration::from_secs(STALE_MARKER_SECS));
        let mut inflight = BTreeSet::new();
        let mut stale_markers = Vec::new();
        for (number, modified) in markers {
            if now.duration_since(modified).unwrap_or_default() >= stale {
                stale_markers.push(number);
            } else {
                inflight.insert(number);
            }
        }
        // 3. The manifests, read last. The changelog table is append-only:
        // every version's files stay in its latest version. The state
        // table's files stay while a retained version references them.
        let numbers = list_manifests(&self.store).await?;
        let keep = self.settings.retain_checkpoints.max(1);
        let split = numbers.len().saturating_sub(keep);
        let (old, retained) = numbers.split_at(split);
        let mut referenced = BTreeSet::new();
        for &n in &numbers {
            let manifest = load_manifest(&self.store, n).await?;
            let files = if retained.contains(&n) {
                manifest.referenced_files()
            } else {
                manifest.changelog.iter().collect()
            };
            referenced.extend(files.into_iter().map(|f| f.path.clone()));
        }
        let mut report = GcReport {
            retained: retained.to_vec(),
            versions_expired: old.to_vec(),
            ..GcReport::default()
        };
        let protected = |rel: &str| {
            referenced.contains(rel)
                || object_checkpoint(rel).is_some_and(|n| inflight.contains(&n))
        };
        for (rel, modified) in objects {
            if protected(&rel) {
                if !referenced.contains(&rel) {
                    report.objects_in_flight += 1;
                }
                continue;
            }
            if now.duration_since(modified).unwrap_or_default() < grace {
                report.objects_in_grace += 1;
                continue;
            }
            self.delete(&rel).await?;
            report.objects_removed.push(rel);
        }
        for (rel, modified) in staged {
            let object = rel.rsplit_once('#').map_or(rel.as_str(), |(o, _)| o);
            if protected(object) {
                report.objects_in_flight += 1;
                continue;
            }
            if now.duration_since(modified).unwrap_or_default() < grace {
                report.objects_in_grace += 1;
                continue;
            }
            self.store
                .remove_local_staging_file(&rel)
                .await
                .map_err(|source| self.local_error("remove staging file", &rel, source))?;
            report.staging_files_removed.push(rel);
        }
        for n in stale_markers {
            self.delete(&inflight_path(n)).await?;
            report.stale_markers_removed.push(n);
        }
        Ok(report)
    }

    /// Every object under `changelog/` and `state/`, and the staging files
    /// of interrupted local uploads, each with when it was last written.
    async fn list_data_objects(&self) -> Result<(Vec<Listed>, Vec<Listed>), CheckpointError> {
        let mut objects = Vec::new();
        let mut staged = Vec::new();
        for prefix in ["changelog", "state"] {
            let metas = self
                .store
                .list_all(&self.store.path(prefix))
                .await
                .map_err(|e| {
                    CheckpointError::store(&self.store, "list", format!("{prefix}/"), e)
                })?;
            for meta in metas {
                if let Some(rel) = self.store.relative(&meta.location) {
                    // The Delta logs are never garbage.
                    if rel.contains("/_delta_log/") {
                        continue;
                    }
                    objects.push((rel.to_owned(), SystemTime::from(meta.last_modified)));
                }
            }
            staged.extend(
                self.store
                    .local_staging_files(prefix)
                    .await
                    .map_err(|source| self.local_error("list staging files", prefix, source))?,
            );
        }
        Ok((objects, staged))
    }

    async fn put_inflight_marker(&self, number: u64) -> Result<(), CheckpointError> {
        let rel = inflight_path(number);
        let body = format!(
            "{{\"checkpoint\":{number},\"started_at\":\"{}\"}}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let path = self.store.path(&rel);
        let body = bytes::Bytes::from(body);
        // A plain PUT of the same bytes: safe to retry.
        self.store
            .retrying("put", &rel, || {
                self.store.object_store().put(&path, body.clone().into())
            })
            .await
            .map_err(|e| CheckpointError::store(&self.store, "put", rel.clone(), e))?;
        // Not fsynced: gc on this machine sees it in the page cache, and a
        // marker lost with a crash protects nothing that is still needed
        // (the restarted writer redoes the checkpoint with new objects).
        Ok(())
    }

    /// Best effort: a marker left behind only delays the removal of its
    /// checkpoint's orphans until it is stale.
    async fn remove_inflight_marker(&self, number: u64) {
        let rel = inflight_path(number);
        if let Err(e) = self.delete(&rel).await {
            tracing::warn!(path = rel, error = %e, "cannot remove the in-flight marker of a finished checkpoint; gc removes it once it is stale");
        }
    }

    /// The in-flight markers and when each was written.
    async fn inflight_markers(&self) -> Result<Vec<(u64, SystemTime)>, CheckpointError> {
        let metas = self
            .store
            .list_all(&self.store.path(INFLIGHT_DIR))
            .await
            .map_err(|e| {
                CheckpointError::store(&self.store, "list", format!("{INFLIGHT_DIR}/"), e)
            })?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = self.store.relative(&m.location)?;
                let n = rel
                    .strip_prefix(INFLIGHT_DIR)?
                    .strip_prefix('/')?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((n, SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    /// Deletes files no manifest references (best effort: garbage
    /// collection removes what remains).
    async fn remove_unreferenced(&self, files: &[DataFile]) {
        for file in files {
            if let Err(e) = self.delete(&file.path).await {
                tracing::warn!(path = file.path, error = %e, "cannot delete an unreferenced file; garbage collection will");
            }
        }
    }

    async fn delete(&self, relative: &str) -> Result<(), CheckpointError> {
        match self
            .store
            .object_store()
            .delete(&self.store.path(relative))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(CheckpointError::Store {
                store: self.store.name().to_owned(),
                op: "delete",
                path: relative.to_owned(),
                source,
            }),
        }
    }
}

/// The manifest of checkpoint `number`: coverage, offsets and watermark
/// carry forward from the previous manifest where this one has none.
fn manifest_for(
    number: u64,
    epochs: EpochRange,
    previous: Option<&Manifest>,
    changelog: &ChangelogSummary,
    state: StateRef,
    snapshot_keys: Option<u64>,
    num_cores: usize,
) -> Manifest {
    let cores = (0..num_cores)
        .map(|core| CoreCoverage {
            core: u32::try_from(core).unwrap_or(u32::MAX),
            last_sequence: changelog
                .last_sequence
                .get(core)
                .copied()
                .flatten()
                .or_else(|| previous.and_then(|p| p.covered_sequence(core))),
        })
        .collect();
    let mut source_offsets = previous
        .map(|p| p.source_offsets.clone())
        .unwrap_or_default();
    source_offsets.extend(changelog.source_offsets.clone());
    Manifest {
        owner_id: None,
        format_version: MANIFEST_FORMAT_VERSION,
        schema_version: SCHEMA_VERSION,
        checkpoint: number,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        epochs,
        cores,
        changelog: changelog.files.clone(),
        state,
        source_offsets,
        watermark: changelog
            .watermark
            .or_else(|| previous.and_then(|p| p.watermark)),
        stats: CheckpointStats {
            entries: changelog.entries,
            puts: changelog.puts,
            deletes: changelog.deletes,
            wal_bytes: changelog.wal_bytes,
            snapshot_keys,
        },
    }
}

fn validate(s: &CheckpointSettings) -> Result<(), CheckpointError> {
    let bad = |field, reason: String| Err(CheckpointError::InvalidSetting { field, reason });
    if s.row_group_rows == 0 {
        return bad("row_group_rows", "must be at least 1".into());
    }
    if s.upload_part_bytes < 5 << 20 {
        return bad(
            "upload_part_bytes",
            format!(
                "{} is below S3's minimum part size of 5 MiB",
                s.upload_part_bytes
            ),
        );
    }
    if s.max_file_bytes < 1 << 10 {
        return bad(
            "max_file_bytes",
            format!("{} is below 1 KiB", s.max_file_bytes),
        );
    }
    if s.snapshot_every == 0 {
        return bad("snapshot_every", "must be at least 1".into());
    }
    if s.sort_memory_bytes < 64 << 10 {
        return bad(
            "sort_memory_bytes",
            format!("{} is below the minimum of 64 KiB", s.sort_memory_bytes),
        );
    }
    if s.state_max_files == 0 {
        return bad("state_max_files", "must be at least 1".into());
    }
    if s.state_max_deleted_percent > 100 {
        return bad(
            "state_max_deleted_percent",
            format!("{} is above 100", s.state_max_deleted_percent),
        );
    }
    if s.retain_checkpoints == 0 {
        return bad("retain_checkpoints", "must keep at least 1".into());
    }
    Ok(())
}

/// An object's path under the table root and when it was last written.
type Listed = (String, SystemTime);

/// Where in-flight markers live, under the table root.
const INFLIGHT_DIR: &str = "_walhouse/inflight";

/// The smallest `gc_grace_secs` that [`Checkpointer::gc`] takes without
/// [`GraceCheck::Off`]: one hour.
pub const MIN_GC_GRACE_SECS: u64 = 3600;

/// Age past which an in-flight marker is taken for the leftover of a writer
/// that crashed mid-checkpoint (when the grace is not longer): one day. A
/// writer that restarts retries the same checkpoint number and writes its
/// marker anew.
pub const STALE_MARKER_SECS: u64 = 24 * 3600;

fn inflight_path(checkpoint: u64) -> String {
    format!("{INFLIGHT_DIR}/{checkpoint:020}.json")
}

/// The checkpoint that wrote a data object, from its name:
/// `changelog/epoch=E/part-<checkpoint, 20 digits>-...`,
/// `state/checkpoint=N/...` or `state/dv-<N, 20 digits>/...`.
fn object_checkpoint(relative: &str) -> Option<u64> {
    if let Some(rest) = relative.strip_prefix("state/checkpoint=") {
        return rest.split('/').next()?.parse().ok();
    }
    if let Some(rest) = relative.strip_prefix("state/dv-") {
        return rest.split('/').next()?.parse().ok();
    }
    let rest = relative.strip_prefix("changelog/")?;
    let name = rest.rsplit('/').next()?;
    let digits = name.strip_prefix("part-")?.get(..20)?;
    digits.parse().ok()
}
