//! The commit protocol: changelog files, then the manifest (create-only),
//! then, and only then, removal of the WAL segments the manifest covers;
//! then the `state` table's version, built on a task of its own
//! (`state_build.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use object_store::ObjectStoreExt;

use super::delta::{
    latest_state_version, list_log_snapshots, list_versions, load_state_version, log_dir,
    parse_log_path, snapshot_files, snapshot_path, write_log_checkpoint, CHANGELOG_TABLE,
    STATE_TABLE,
};
use super::error::CheckpointError;
use super::manifest::{
    commit_manifest_after, latest_manifest, list_manifests, load_manifest, CheckpointStats,
    CoreCoverage, DataFile, EpochRange, Manifest, StateRef, MANIFEST_FORMAT_VERSION,
};
use super::owner::check_owner;
use super::parquet::{file_crc32c, write_changelog_tee, ChangelogSummary};
use super::schema::SCHEMA_VERSION;
use super::state_build::{changelog_after, changelog_checkpoint, SharedBackground};
use super::{CheckpointSettings, GraceCheck};
use crate::per_core_wal::PerCoreWalManager;
use crate::store::Store;

/// What a committed checkpoint did.
#[derive(Debug, Clone)]
pub struct CheckpointOutcome {
    /// The committed manifest.
    pub manifest: Manifest,
    /// WAL segment files removed after the commit.
    pub removed_segments: usize,
    /// Bytes of changelog files written.
    pub bytes_written: u64,
    /// Wall time of the checkpoint, up to its commit and the WAL's removal
    /// (the `state` table's version is built after it, see
    /// [`Checkpointer::finish_state`]).
    pub duration: Duration,
    /// Time spent after the commit waiting for the state table's build of
    /// the checkpoint before (zero when it was done).
    pub waited_for_state: Duration,
}

/// What [`Checkpointer::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The checkpoint verified.
    pub checkpoint: u64,
    /// Whether the `state` table's version of it exists (its files are
    /// among those checked); when not, its build is still to come.
    pub state_version: bool,
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
    /// Older checkpoints: the state files only they referenced are removed,
    /// so reading the state table as of them fails; their log entries stay
    /// until a Delta log checkpoint at or before the oldest retained
    /// version (and the state table's newest) stands in for them.
    pub versions_expired: Vec<u64>,
    /// Delta log objects removed (`<table>/_delta_log/…` entries and log
    /// checkpoints, and their snapshots under `_walhouse/log-snapshots/`):
    /// those of versions before the newest log checkpoint at or before
    /// both the oldest retained version and the state table's newest
    /// version, older than the grace period.
    pub log_objects_removed: Vec<String>,
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
///
/// Clones share the background build of the `state` table
/// ([`Checkpointer::finish_state`]).
#[derive(Debug, Clone)]
pub struct Checkpointer {
    pub(crate) store: Store,
    pub(crate) settings: CheckpointSettings,
    pub(crate) owner_id: Option<String>,
    pub(crate) background: SharedBackground,
}

impl Checkpointer {
    /// A checkpointer for the table at `store`'s root.
    pub fn new(store: Store, settings: CheckpointSettings) -> Result<Self, CheckpointError> {
        validate(&settings)?;
        Ok(Self {
            store,
            settings,
            owner_id: None,
            background: SharedBackground::default(),
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
    /// checkpoints everything up to it: a committed Delta version of
    /// `changelog` on return, the `state` table's built after it in the
    /// background ([`Checkpointer::finish_state`] waits for it).
    ///
    /// This is the checkpoint of a [`PerCoreWalManager`] driven directly
    /// (the seed's API); [`crate::Walhouse::checkpoint`] is the one of a
    /// running ingester.
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
    pub(crate) async fn advance_epoch(
        &self,
        wal: &mut PerCoreWalManager,
    ) -> Result<u64, CheckpointError> {
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
    /// Order of durability: the changelog files are uploaded (and fsynced
    /// on a local store); then the manifest is committed with a create-only
    /// PUT; then the WAL segments of the covered epochs are removed. A
    /// failure before the commit leaves no manifest and the WAL intact: the
    /// next checkpoint covers the same entries again, and GC removes the
    /// orphaned files. Entries the previous checkpoint already holds (left
    /// by a crash between its commit and its WAL removal) are skipped by
    /// sequence number, never written twice.
    ///
    /// After the commit it waits for the `state` table's build of the
    /// checkpoint before, if that is still running, then starts this one's
    /// on a task of its own and returns: the state table's version N is
    /// built off the checkpoint's critical path
    /// ([`Checkpointer::finish_state`] waits for it).
    pub(crate) async fn checkpoint_sealed(
        &self,
        wal: &PerCoreWalManager,
        epoch: u64,
    ) -> Result<CheckpointOutcome, CheckpointError> {
        let started = Instant::now();
        let previous = latest_manifest(&self.store).await?;
        if let Some(prev) = &previous {
            if epoch <= prev.epochs.last {
                return Err(CheckpointError::EpochCovered {
                    epoch,
                    checkpoint: prev.checkpoint,
                    last: prev.epochs.last,
                });
            }
        }
        let number = previous.as_ref().map_or(1, |m| m.checkpoint + 1);
        // Garbage collection keeps every object of an in-flight checkpoint:
        // the marker is written before the first object and removed after
        // the failure, or after the state table's version is built, see
        // `Checkpointer::gc`.
        self.put_inflight_marker(number).await?;
        let result = self
            .checkpoint_numbered(wal, epoch, number, previous, started)
            .await;
        match result {
            Ok(mut outcome) => {
                let waiting = Instant::now();
                self.spawn_state_build(number).await;
                outcome.waited_for_state = waiting.elapsed();
                outcome.duration = started.elapsed();
                Ok(outcome)
            }
            Err(e) => {
                self.remove_inflight_marker(number).await;
                Err(e)
            }
        }
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
        let changelog = write_changelog_tee(
            &self.store,
            number,
            stream,
            wal.num_cores(),
            &self.settings,
            None,
        )
        .await?;
        let new_files: Vec<DataFile> = changelog.files.clone();
        let state = match self.state_ref(previous.as_ref(), &changelog.files).await {
            Ok(state) => state,
            Err(e) => {
                self.remove_unreferenced(&new_files).await;
                return Err(e);
            }
        };
        let mut manifest = manifest_for(
            number,
            EpochRange {
                first: first_epoch,
                last: epoch,
            },
            previous.as_ref(),
            &changelog,
            state,
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
        let removed_segments = wal.remove_segments_up_to_epoch(epoch)?;
        // The state table's follows its version's build.
        self.log_checkpoint_if_due(CHANGELOG_TABLE, number).await;
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
            manifest,
            removed_segments,
            duration: started.elapsed(),
            waited_for_state: Duration::ZERO,
        })
    }

    /// A Delta log checkpoint of `table` at `version` if one is due
    /// (every `log_checkpoint_interval` versions). Best effort: without it
    /// readers replay more log entries.
    pub(crate) async fn log_checkpoint_if_due(&self, table: &str, version: u64) {
        let interval = self.settings.log_checkpoint_interval;
        if interval > 0 && version.is_multiple_of(interval) {
            if let Err(e) = write_log_checkpoint(&self.store, table, version).await {
                tracing::warn!(
                    table,
                    version,
                    error = %e,
                    "cannot write the Delta log checkpoint; readers replay the log instead"
                );
            }
        }
    }

    /// The state of the next checkpoint for lookups: the newest full
    /// rewrite of the state table that has committed (known from this
    /// process's builds, else read from the state table's log once), and
    /// every changelog file after it, this checkpoint's `changelog`
    /// included.
    async fn state_ref(
        &self,
        previous: Option<&Manifest>,
        changelog: &[DataFile],
    ) -> Result<StateRef, CheckpointError> {
        if previous.is_some() && self.background.snapshot().is_none() {
            if let Some(v) = latest_state_version(&self.store).await? {
                self.background
                    .set_snapshot(v.snapshot_checkpoint, &v.snapshot);
            }
        }
        let mut state = previous.map_or_else(
            || StateRef {
                snapshot_checkpoint: 0,
                snapshot: Vec::new(),
                deltas: Vec::new(),
                delta_bytes: 0,
            },
            |p| p.state.clone(),
        );
        if let Some((checkpoint, files)) = self.background.snapshot() {
            if checkpoint > state.snapshot_checkpoint {
                let deltas = changelog_after(&state.deltas, checkpoint).ok_or_else(|| {
                    CheckpointError::CorruptObject {
                        store: self.store.name().to_owned(),
                        path: previous
                            .map_or_else(String::new, |p| super::manifest_path(p.checkpoint)),
                        reason: "a changelog file's name does not carry its checkpoint".into(),
                    }
                })?;
                state.snapshot_checkpoint = checkpoint;
                state.snapshot = files;
                state.deltas = deltas;
            }
        }
        state.deltas.extend(changelog.iter().cloned());
        state.delta_bytes = state.deltas.iter().map(|f| f.size).sum();
        Ok(state)
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

    pub(crate) async fn durable(&self, paths: &[String]) -> Result<(), CheckpointError> {
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
    /// newest) exists with the recorded size and crc32c: those its manifest
    /// references, and those of the `state` table's version of it if that
    /// is built. Reads every byte.
    pub async fn verify(&self, checkpoint: Option<u64>) -> Result<VerifyReport, CheckpointError> {
        let number = match checkpoint {
            Some(n) => n,
            None => match list_manifests(&self.store).await?.last() {
                Some(&n) => n,
                None => return Ok(VerifyReport::default()),
            },
        };
        let manifest = load_manifest(&self.store, number).await?;
        let state = self.state_version(number).await?;
        let mut report = VerifyReport {
            checkpoint: number,
            state_version: state.is_some(),
            ..VerifyReport::default()
        };
        let mut files = manifest.referenced_files();
        files.extend(state.iter().flat_map(super::StateVersion::referenced_files));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        for file in files {
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
    /// used), and the staging files of interrupted local uploads. Then the
    /// Delta logs are cleaned up behind a log checkpoint, as Delta's log
    /// retention does: with `C` the newest version that has a log
    /// checkpoint and is at most both the oldest retained checkpoint and
    /// the state table's newest version, the log entries, log checkpoints
    /// and their snapshots of versions before `C` that are older than the
    /// grace period are removed (a reader starts from `C`'s log
    /// checkpoint; every retained version, and the state build's starting
    /// point, keep their entries).
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
        // 3. The manifests and state versions, read last.
        let numbers = list_manifests(&self.store).await?;
        let keep = self.settings.retain_checkpoints.max(1);
        let (old, retained) = numbers.split_at(numbers.len().saturating_sub(keep));
        let (referenced, newest_state) = self.referenced_objects(&numbers, retained).await?;
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
        if let (Some(&oldest), Some(state)) = (retained.first(), newest_state) {
            report.log_objects_removed = self.clean_logs(oldest.min(state), grace, now).await?;
        }
        Ok(report)
    }

    /// Removes, in both tables, the log objects of versions before the
    /// newest log checkpoint at or before `boundary` (see
    /// [`Checkpointer::gc`]) that are older than `grace`.
    async fn clean_logs(
        &self,
        boundary: u64,
        grace: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, CheckpointError> {
        let old = |meta: &object_store::ObjectMeta| {
            now.duration_since(SystemTime::from(meta.last_modified))
                .unwrap_or_default()
                >= grace
        };
        let mut removed = Vec::new();
        for table in [CHANGELOG_TABLE, STATE_TABLE] {
            let snapshots = list_log_snapshots(&self.store, table).await?;
            let Some(keep_from) = snapshots.iter().map(|(v, _)| *v).rfind(|&v| v <= boundary)
            else {
                continue;
            };
            let dir = log_dir(table);
            let metas = self
                .store
                .list_all(&self.store.path(&dir))
                .await
                .map_err(|e| CheckpointError::store(&self.store, "list", format!("{dir}/"), e))?;
            let mut doomed: Vec<String> = metas
                .iter()
                .filter(|m| old(m))
                .filter_map(|m| {
                    let rel = self.store.relative(&m.location)?;
                    let version = parse_log_path(table, rel).or_else(|| {
                        let name = rel.strip_prefix(&dir)?.strip_prefix('/')?;
                        name.strip_suffix(".checkpoint.parquet")?.parse().ok()
                    })?;
                    (version < keep_from).then(|| rel.to_owned())
                })
                .collect();
            doomed.extend(
                snapshots
                    .iter()
                    .filter(|(v, m)| *v < keep_from && old(m))
                    .map(|(v, _)| snapshot_path(table, *v)),
            );
            // Oldest first: a cleanup cut short leaves a log that still
            // starts at a version with all the entries after it.
            doomed.sort();
            for rel in doomed {
                self.delete(&rel).await?;
                removed.push(rel);
            }
        }
        Ok(removed)
    }

    /// The objects gc keeps of the checkpoints `numbers`: every
    /// changelog file (the table is append-only: every version's files stay
    /// in its latest version), the files the `retained` manifests and state
    /// versions reference, and the newest state
    /// version's whatever the retention (the next build starts from it, and
    /// recovery reads it, while the state table lags behind the changelog);
    /// and that newest state version (`None`: none yet).
    async fn referenced_objects(
        &self,
        numbers: &[u64],
        retained: &[u64],
    ) -> Result<(BTreeSet<String>, Option<u64>), CheckpointError> {
        let state_versions = list_versions(&self.store, STATE_TABLE).await?;
        let mut referenced = BTreeSet::new();
        // The changelog files of versions whose log entries were cleaned
        // up: the newest log checkpoint holds every file added before it.
        referenced.extend(snapshot_files(&self.store, CHANGELOG_TABLE).await?);
        let mut add = |files: Vec<&DataFile>| {
            referenced.extend(files.into_iter().map(|f| f.path.clone()));
        };
        for &n in numbers {
            let manifest = load_manifest(&self.store, n).await?;
            if retained.contains(&n) {
                add(manifest.referenced_files());
            } else {
                add(manifest.changelog.iter().collect());
            }
        }
        let newest = state_versions.iter().rfind(|&&v| v > 0).copied();
        for &v in &state_versions {
            if v > 0 && (retained.contains(&v) || Some(v) == newest) {
                add(load_state_version(&self.store, v).await?.referenced_files());
            }
        }
        Ok((referenced, newest))
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

    pub(crate) async fn put_inflight_marker(&self, number: u64) -> Result<(), CheckpointError> {
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
    pub(crate) async fn remove_inflight_marker(&self, number: u64) {
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
    pub(crate) async fn remove_unreferenced(&self, files: &[DataFile]) {
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
/// `state/checkpoint=N/...`, `state/dv-<N, 20 digits>/...`, or a log entry
/// `<table>/_delta_log/<N, 20 digits>.json`.
fn object_checkpoint(relative: &str) -> Option<u64> {
    // A log entry being written (its staging file on a local store).
    for table in [CHANGELOG_TABLE, STATE_TABLE] {
        if let Some(n) = parse_log_path(table, relative) {
            return Some(n);
        }
    }
    if let Some(rest) = relative.strip_prefix("state/checkpoint=") {
        return rest.split('/').next()?.parse().ok();
    }
    if let Some(rest) = relative.strip_prefix("state/dv-") {
        return rest.split('/').next()?.parse().ok();
    }
    changelog_checkpoint(relative)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::{object_checkpoint, CheckpointSettings, Checkpointer};
    use crate::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
    use crate::store::Store;

    /// The epoch protocol the ingester drives (crate-private): a core
    /// whose writer runs on its own thread keeps writing the next epoch
    /// while the sealed one is checkpointed.
    #[tokio::test]
    async fn ingest_goes_on_while_a_checkpoint_uploads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut m =
            PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
        let cp = Checkpointer::new(Store::memory(), CheckpointSettings::default()).unwrap();
        for i in 0..2000_u64 {
            let key = format!("k{:04}", i % 150).into_bytes();
            m.writer((i % 2) as usize)
                .append_put(&key, format!("v{i}").as_bytes())
                .unwrap();
        }
        m.sync_all().unwrap();
        let sealed = m.advance_epoch();
        m.set_epoch_all(sealed);
        m.write_epoch_barrier_all().unwrap();
        m.sync_all().unwrap();
        // Core 1's writer goes to its own thread and keeps writing epoch 1.
        let mut w1 = m.take_writer(1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let writer = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) || n < 100 {
                w1.append_put(format!("live{n}").as_bytes(), b"x").unwrap();
                n += 1;
                if n.is_multiple_of(50) {
                    w1.sync().unwrap();
                }
            }
            w1.sync().unwrap();
            (w1, n)
        });
        let out = cp.checkpoint_sealed(&m, sealed - 1).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let (w1, live) = writer.join().unwrap();
        m.attach_writer(w1).unwrap();
        let rest = m.merge_segments().unwrap();
        let live_keys = rest
            .iter()
            .filter(|e| e.key().is_some_and(|k| k.starts_with(b"live")))
            .count();
        println!(
            "entries appended during the checkpoint: {live}; still in the WAL after it: {live_keys}"
        );
        assert_eq!(live_keys as u64, live);
        assert!(out.manifest.stats.entries >= 2000);
    }

    #[test]
    fn every_object_a_checkpoint_or_its_state_build_writes_names_it() {
        for (path, n) in [
            (
                "changelog/epoch=3/part-00000000000000000007-0001-x.parquet",
                Some(7),
            ),
            ("state/checkpoint=7/part-0000-x.parquet", Some(7)),
            (
                "state/dv-00000000000000000007/deletion_vector_x.bin",
                Some(7),
            ),
            ("state/_delta_log/00000000000000000007.json", Some(7)),
            ("changelog/_delta_log/00000000000000000007.json", Some(7)),
            ("state/_delta_log/_last_checkpoint", None),
            ("changelog/epoch=3/notes", None),
        ] {
            assert_eq!(object_checkpoint(path), n, "{path}");
        }
    }
}
