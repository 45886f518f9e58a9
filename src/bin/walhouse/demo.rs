//! The demo job: what `walhouse demo` runs, through the front door
//! ([`Walhouse`]) alone. One producer per core writes synthetic records in
//! durable batches; the process stops with the records only in the WAL and
//! reopens (recovery replays the WAL), checks every key against a model of
//! what was written, and checkpoints everything as Delta Lake tables on the
//! store (a folder under the data directory by default), verifying the
//! checkpoint; then a small round of overwrites and deletes becomes a
//! second checkpoint (deletion vectors on the state table), and a last one
//! stays in the WAL: the process reopens once more from the checkpoint plus
//! that tail and checks the state against the model again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walhouse::checkpoint::{CheckpointOutcome, Manifest, StateBuilt, StateVersion};
use walhouse::runtime::datadir::{wal_dir, DEFAULT_TABLE_DIR};
use walhouse::runtime::{IngestSettings, WriteOp};
use walhouse::store::Store;
use walhouse::{Reads, Shutdown, Walhouse};

/// Any error of the demo, with its message.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory for the WAL (`<data_dir>/wal`).
    pub data_dir: PathBuf,
    /// Records to write in total, across cores.
    pub records: u64,
    /// Number of cores (writer threads).
    pub cores: usize,
    /// Entries per sync (group size) of each writer.
    pub sync_every: u64,
    /// Object store URL for the tables (default: `<data_dir>/table`).
    pub store: Option<String>,
    /// Counts the records written so far (for a progress bar).
    pub progress: Option<Arc<AtomicU64>>,
}

/// What a demo run measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Records written (puts and deletes).
    pub records: u64,
    /// Time to write and sync every record.
    pub ingest: Duration,
    /// fdatasync calls made by the writers.
    pub syncs: u64,
    /// Segment files on disk after ingest.
    pub segments: usize,
    /// Bytes of the WAL on disk after ingest.
    pub wal_bytes: u64,
    /// Time of the checkpoint (seal, Parquet upload, Delta commit, WAL
    /// removal).
    pub checkpoint: Duration,
    /// Time of the `state` table's version 1 (a full snapshot), built after
    /// the checkpoint's commit.
    pub state_build: Duration,
    /// What that build wrote.
    pub state: StateBuilt,
    /// The committed manifest.
    pub manifest: Manifest,
    /// The manifest of the second checkpoint (the first tail's overwrites
    /// and deletes).
    pub second: Manifest,
    /// The `state` table's version of the second checkpoint.
    pub second_state: StateVersion,
    /// Bytes of Parquet written.
    pub checkpoint_bytes: u64,
    /// WAL segment files removed after the commit.
    pub removed_segments: usize,
    /// The store holding the tables.
    pub table: String,
    /// Time to reopen from the second checkpoint plus the WAL tail.
    pub full_recovery: Duration,
    /// Puts and deletes that reopening read from the WAL after the
    /// checkpoint.
    pub full_recovery_replayed: u64,
    /// Puts and deletes read from the WAL by the first reopen (no
    /// checkpoint yet).
    pub replayed: u64,
    /// Time of the first reopen.
    pub recovery: Duration,
    /// Live keys in the recovered state.
    pub live_keys: usize,
    /// Whether the recovered state equals the model of what was written.
    pub verified: bool,
}

/// The key and value of record `i` of core `core`: every tenth record
/// overwrites an earlier key, every seventeenth deletes one.
fn record(core: usize, i: u64) -> (Vec<u8>, Option<[u8; 100]>) {
    let key_id = if i % 10 == 9 { i / 2 } else { i };
    let key = format!("c{core:02}-k{key_id:012}").into_bytes();
    if i % 17 == 16 {
        return (key, None);
    }
    let mut value = [0u8; 100];
    for (j, b) in value.iter_mut().enumerate() {
        *b = u8::try_from(i.wrapping_mul(31).wrapping_add(j as u64) & 0xff).unwrap_or_default();
    }
    (key, Some(value))
}

/// The settings of every open: `cores` core threads, checkpoints only when
/// the demo asks, 16 MiB segments (so the ingest rotates segments).
fn settings(cores: usize) -> IngestSettings {
    IngestSettings {
        cores,
        pin_threads: false,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        segment_bytes: 16 << 20,
        ..IngestSettings::default()
    }
}

async fn open(opts: &DemoOptions, store: &Store, reads: Reads) -> Result<Walhouse, DemoError> {
    Ok(Walhouse::builder(&opts.data_dir, store.clone())
        .settings(settings(opts.cores))
        .reads(reads)
        .open()
        .await?)
}

/// Writes the records: one producer task per core label (`record(core, i)`),
/// each in durable batches of `sync_every`, in order, so a key's last write
/// is its last record. Returns the time it took.
async fn ingest(db: &Walhouse, opts: &DemoOptions) -> Result<Duration, DemoError> {
    let per_core = opts.records / opts.cores as u64;
    let extra = opts.records % opts.cores as u64;
    let batch = usize::try_from(opts.sync_every.max(1)).unwrap_or(usize::MAX);
    let started = Instant::now();
    let mut producers = Vec::new();
    for core in 0..opts.cores {
        let handle = db.handle();
        let count = per_core + u64::from((core as u64) < extra);
        let progress = opts.progress.clone();
        producers.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(batch);
            for i in 0..count {
                pending.push(match record(core, i) {
                    (key, Some(value)) => WriteOp::Put {
                        key,
                        value: value.to_vec(),
                    },
                    (key, None) => WriteOp::Delete { key },
                });
                if pending.len() == batch || i + 1 == count {
                    let n = pending.len() as u64;
                    handle
                        .put_batch(std::mem::replace(&mut pending, Vec::with_capacity(batch)))
                        .await?;
                    if let Some(p) = &progress {
                        p.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            Ok::<_, walhouse::runtime::IngestError>(())
        }));
    }
    for p in producers {
        p.await
            .map_err(|e| format!("a demo producer task failed: {e}"))??;
    }
    Ok(started.elapsed())
}

/// Writes 1 % of the records again: overwrites and deletes of existing
/// keys (other keys in each `round`), applied to `model` too, then reads
/// every key written back. Returns how many it wrote.
async fn write_tail(
    db: &Walhouse,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    opts: &DemoOptions,
    round: u64,
) -> Result<u64, DemoError> {
    let tail = (opts.records / 100).max(1);
    let mut batch = Vec::new();
    let mut keys = Vec::new();
    for i in 0..tail {
        let core = usize::try_from(i).unwrap_or(0) % opts.cores;
        let (key, _) = record(core, i * 3 + round);
        keys.push(key.clone());
        if i % 5 == 4 {
            model.remove(&key);
            batch.push(WriteOp::Delete { key });
        } else {
            let value = format!("tail{round}-{i}").into_bytes();
            model.insert(key.clone(), value.clone());
            batch.push(WriteOp::Put { key, value });
        }
        if batch.len() == 1000 {
            db.write(std::mem::take(&mut batch)).await?;
        }
    }
    db.write(batch).await?;
    // Every key just written reads back its last write (from memory: no
    // checkpoint holds them yet).
    for key in &keys {
        if db.get(key).await? != model.get(key).cloned() {
            return Err(format!("get of {key:?} after the tail does not match the model").into());
        }
    }
    Ok(tail)
}

/// The last write of every key the ingest wrote, deletes left out.
fn model_of(opts: &DemoOptions) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let per_core = opts.records / opts.cores as u64;
    let extra = opts.records % opts.cores as u64;
    let mut model = BTreeMap::new();
    for core in 0..opts.cores {
        let count = per_core + u64::from((core as u64) < extra);
        for i in 0..count {
            match record(core, i) {
                (key, Some(value)) => model.insert(key, value.to_vec()),
                (key, None) => model.remove(&key),
            };
        }
    }
    model
}

/// The WAL's segment files and their bytes.
fn wal_files(data_dir: &Path) -> Result<(usize, u64), DemoError> {
    let dir = wal_dir(data_dir);
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("list {}: {e}", dir.display()))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .map_err(|e| format!("list {}: {e}", dir.display()))?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// Whether every key of `model`, and no other, is in `db` with its value.
async fn matches(db: &Walhouse, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<bool, DemoError> {
    let all = db.scan(..).await?;
    Ok(all.len() == model.len()
        && all
            .iter()
            .zip(model)
            .all(|((k, v), (mk, mv))| k == mk && v == mv))
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_demo(opts))
}

async fn run_demo(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let store = match &opts.store {
        Some(url) => Store::from_url(url)?,
        None => Store::local(&opts.data_dir.join(DEFAULT_TABLE_DIR))?,
    };
    // Ingest, then stop with everything only in the WAL (no lookups asked
    // of this run: nothing is held in memory for them).
    let db = open(opts, &store, Reads::Checkpointed).await?;
    let ingest = ingest(&db, opts).await?;
    let syncs = db.metrics().fsyncs;
    let (segments, wal_bytes) = wal_files(&opts.data_dir)?;
    db.shutdown(Shutdown::Sync).await?;

    // Restart: opening replays the WAL; every key reads back its last
    // write (a key lives on one core, so that core's order decides).
    let started = Instant::now();
    let db = open(opts, &store, Reads::Live).await?;
    let recovery = started.elapsed();
    let replayed = db.opened().tail_entries;
    let mut model = model_of(opts);
    let mut verified = matches(&db, &model).await?;
    let live_keys = model.len();

    // Checkpoint 1: every record becomes version 1 of the Delta tables;
    // then the covered WAL segments are removed.
    let started = Instant::now();
    let outcome: CheckpointOutcome = db.checkpoint().await?;
    let checkpoint = started.elapsed();
    let started = Instant::now();
    let first_state = db.checkpointer().finish_state().await?;
    let state_time = started.elapsed();
    let report = db.checkpointer().verify(None).await?;
    verified &= report.is_ok() && report.state_version;
    verified &= outcome.manifest.stats.puts + outcome.manifest.stats.deletes == opts.records;
    verified &= first_state.keys == Some(live_keys as u64);
    // Read back from the checkpoint now (memory no longer holds them).
    verified &= matches(&db, &model).await?;

    // Checkpoint 2: overwrite and delete a few keys of every core; the
    // state table's version 2 adds them as a new file and marks their old
    // rows in deletion vectors over checkpoint 1's snapshot.
    write_tail(&db, &mut model, opts, 0).await?;
    let second = db
        .shutdown(Shutdown::Checkpoint)
        .await?
        .final_checkpoint
        .ok_or("the second checkpoint found nothing to checkpoint")?;
    let db = open(opts, &store, Reads::Live).await?;
    let second_state = db
        .checkpointer()
        .state_version(second.manifest.checkpoint)
        .await?
        .ok_or("the shutdown did not build the state table's version 2")?;
    verified &= db.checkpointer().verify(None).await?.is_ok();
    verified &= second_state.keys == model.len() as u64;
    verified &= second.manifest.checkpoint == outcome.manifest.checkpoint + 1;

    // A WAL tail after the second checkpoint, then restart from the
    // checkpoint plus the tail.
    let tail = write_tail(&db, &mut model, opts, 1).await?;
    db.shutdown(Shutdown::Sync).await?;
    let started = Instant::now();
    let db = open(opts, &store, Reads::Live).await?;
    let full_recovery = started.elapsed();
    let opened = db.opened().clone();
    verified &= matches(&db, &model).await?;
    verified &= opened.checkpoint == Some(second.manifest.checkpoint);
    verified &= opened.tail_entries == tail;
    let table = db.checkpointer().store().name().to_owned();
    db.shutdown(Shutdown::Sync).await?;

    Ok(DemoReport {
        records: opts.records,
        ingest,
        syncs,
        segments,
        wal_bytes,
        checkpoint,
        state_build: state_time,
        state: first_state,
        manifest: outcome.manifest,
        second: second.manifest,
        second_state,
        checkpoint_bytes: outcome.bytes_written,
        removed_segments: outcome.removed_segments,
        table,
        full_recovery,
        full_recovery_replayed: opened.tail_entries,
        replayed,
        recovery,
        live_keys,
        verified,
    })
}
