//! The demo job: what `walhouse demo` runs. It writes synthetic records on
//! every core (each writer on its own thread), advances the epoch while they
//! write (so every core rotates), merges and checks the order, reopens the
//! WAL as after a restart, replays it and checks the state against a model
//! of what was written, then checkpoints everything as Parquet tables on the
//! store (a folder under the data directory by default), verifies the
//! checkpoint, writes a small WAL tail, and recovers from the checkpoint plus
//! the tail, checking the state against the model again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walhouse::runtime::datadir::{wal_dir, DEFAULT_TABLE_DIR};

use walhouse::checkpoint::{
    recover, CheckpointSettings, Checkpointer, Manifest, StateBuilt, StateVersion,
};
use walhouse::per_core_wal::{
    PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalError, PerCoreWalManager,
};
use walhouse::runtime::{IngestSettings, WriteOp};
use walhouse::store::Store;
use walhouse::{Shutdown, Walhouse};

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
    /// Entries the streaming merge returned (records plus barriers).
    pub merged: u64,
    /// Time of the streaming merge.
    pub merge: Duration,
    /// Time of the checkpoint (seal, Parquet upload, manifest, WAL removal).
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
    /// Records written after the second checkpoint (the WAL tail).
    pub tail: u64,
    /// Time to recover from the second checkpoint plus the WAL tail.
    pub full_recovery: Duration,
    /// WAL entries that recovery replayed on top of the checkpoint.
    pub full_recovery_replayed: usize,
    /// Entries replayed by recovery after the restart.
    pub replayed: usize,
    /// Time of the recovery.
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

/// Writes the records on every core, each writer on its own thread, moving
/// every core to epoch 1 while they write. Returns the time it took, the
/// fdatasync calls and the epoch the cores ended in.
fn ingest(
    manager: &mut PerCoreWalManager,
    opts: &DemoOptions,
) -> Result<(Duration, u64, u64), PerCoreWalError> {
    let per_core = opts.records / opts.cores as u64;
    let extra = opts.records % opts.cores as u64;
    let started = Instant::now();
    let mut handles = Vec::new();
    for core in 0..opts.cores {
        let mut writer = manager.take_writer(core)?;
        let count = per_core + u64::from((core as u64) < extra);
        let sync_every = opts.sync_every.max(1);
        let progress = opts.progress.clone();
        handles.push(std::thread::spawn(move || -> Result<_, PerCoreWalError> {
            let mut syncs = 0u64;
            for i in 0..count {
                match record(core, i) {
                    (key, Some(value)) => writer.append_put(&key, &value)?,
                    (key, None) => writer.append_delete(&key)?,
                };
                if i % sync_every == sync_every - 1 {
                    writer.sync()?;
                    syncs += 1;
                    if let Some(p) = &progress {
                        p.fetch_add(sync_every, Ordering::Relaxed);
                    }
                }
            }
            writer.append_epoch_barrier()?;
            writer.sync()?;
            Ok((writer, syncs + 1))
        }));
        if core == 0 {
            // Let the writers get going, then move every core to epoch 1:
            // detached writers pick it up at their next append and rotate.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(10));
    let epoch = manager.advance_epoch();
    manager.set_epoch_all(epoch);
    let mut syncs = 0;
    for handle in handles {
        let (writer, n) = handle
            .join()
            .map_err(|p| PerCoreWalError::ThreadPanicked {
                thread: "a demo writer thread",
                message: panic_message(p.as_ref()),
            })??;
        syncs += n;
        manager.attach_writer(writer)?;
    }
    // Cores that finished before seeing epoch 1 get there now.
    manager.write_epoch_barrier_all()?;
    manager.sync_all()?;
    Ok((started.elapsed(), syncs, epoch))
}

/// Writes 1 % of the records again after the checkpoint through the
/// thread-per-core [`Ingester`] (durable acknowledgements, group commit):
/// overwrites and deletes of existing keys (other keys in each `round`),
/// applied to `model` too. With `checkpoint`, the ingester checkpoints them
/// when it shuts down and returns that checkpoint.
async fn write_tail(
    store: &Store,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    opts: &DemoOptions,
    round: u64,
    checkpoint: bool,
) -> Result<(u64, Option<walhouse::checkpoint::CheckpointOutcome>), DemoError> {
    let settings = IngestSettings {
        cores: opts.cores,
        pin_threads: false,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        segment_bytes: 16 << 20,
        ..IngestSettings::default()
    };
    let db = Walhouse::builder(&opts.data_dir, store.clone())
        .settings(settings)
        .open()
        .await?;
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
    let report = db
        .shutdown(if checkpoint {
            Shutdown::Checkpoint
        } else {
            Shutdown::Sync
        })
        .await?;
    Ok((tail, report.final_checkpoint))
}

/// The last write of every key the ingest wrote (`None`: deleted).
fn model_of(opts: &DemoOptions, per_core: u64, extra: u64) -> BTreeMap<Vec<u8>, Option<[u8; 100]>> {
    let mut model = BTreeMap::new();
    for core in 0..opts.cores {
        let count = per_core + u64::from((core as u64) < extra);
        for i in 0..count {
            let (key, value) = record(core, i);
            model.insert(key, value);
        }
    }
    model
}

/// Merges every segment and checks the order; returns the entries and the
/// time taken.
fn check_merge(manager: &PerCoreWalManager) -> Result<(u64, Duration), DemoError> {
    let started = Instant::now();
    let mut stream = manager.merge_stream()?;
    let mut last = None;
    while let Some(entry) = stream.next_ref() {
        let key = entry?.order_key();
        if last.is_some_and(|l| l >= key) {
            return Err(format!("merge out of order at {key:?}").into());
        }
        last = Some(key);
    }
    Ok((stream.entries(), started.elapsed()))
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let wal_dir = wal_dir(&opts.data_dir);
    let config = PerCoreWalConfig::new(&wal_dir, opts.cores).with_segment_bytes(16 << 20);
    let mut manager = PerCoreWalManager::new(config.clone())?;
    let base_sequence = manager.next_sequences();
    let per_core = opts.records / opts.cores as u64;
    let extra = opts.records % opts.cores as u64;

    let (ingest, syncs, _) = ingest(&mut manager, opts)?;
    let segments = std::fs::read_dir(&wal_dir)
        .map_err(|e| PerCoreWalError::Io {
            op: "list WAL directory",
            path: wal_dir.clone(),
            source: e,
        })?
        .count();
    let wal_bytes = manager.total_size();

    let (merged, merge) = check_merge(&manager)?;
    drop(manager);

    // Restart: recovery replays the whole WAL; its state must be exactly the
    // model of every record written (a key lives on one core, so the order of
    // that core's records decides its value).
    let started = Instant::now();
    let recovered = PerCoreRecoveryManager::new(config.clone()).recover()?;
    let recovery = started.elapsed();
    let model = model_of(opts, per_core, extra);
    let live: BTreeMap<&[u8], &[u8]> = model
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.as_slice(), v.as_slice())))
        .collect();
    let mut verified = recovered.state.len() == live.len()
        && recovered.state.iter().all(|(k, v)| live.get(k) == Some(&v));

    // Checkpoint: every sealed epoch becomes Parquet on the store, committed
    // by a manifest; then the covered WAL segments are removed.
    let mut manager = PerCoreWalManager::open(config.clone())?;
    let store = match &opts.store {
        Some(url) => Store::from_url(url)?,
        None => Store::local(&opts.data_dir.join(DEFAULT_TABLE_DIR))?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(store.probe())?;
    let checkpointer = Checkpointer::new(store, CheckpointSettings::default())?;
    let started = Instant::now();
    let outcome = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
    let checkpoint = started.elapsed();
    let started = Instant::now();
    let first_state = runtime.block_on(checkpointer.finish_state())?;
    let state_time = started.elapsed();
    let report = runtime.block_on(checkpointer.verify(None))?;
    verified &= report.is_ok() && report.state_version;
    verified &= outcome.manifest.stats.entries == merged;
    verified &= first_state.keys == Some(live.len() as u64);
    verified &= manager
        .next_sequences()
        .iter()
        .zip(&base_sequence)
        .all(|(n, b)| *n > *b);

    // Checkpoint 2: overwrite and delete a few keys of every core; the
    // state table's version 2 adds them as a new file and marks their old
    // rows in deletion vectors over checkpoint 1's snapshot.
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> =
        live.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    drop(manager);
    let (_, second) =
        runtime.block_on(write_tail(checkpointer.store(), &mut model, opts, 0, true))?;
    let second = second.ok_or("the second checkpoint found nothing to checkpoint")?;
    let second_state = runtime
        .block_on(checkpointer.state_version(second.manifest.checkpoint))?
        .ok_or("the ingester's shutdown did not build the state table's version 2")?;
    verified &= runtime.block_on(checkpointer.verify(None))?.is_ok();
    verified &= second_state.keys == model.len() as u64;
    verified &= second.manifest.checkpoint == outcome.manifest.checkpoint + 1;

    // A WAL tail after the second checkpoint, then restart and recover from
    // the checkpoint plus the tail.
    let (tail, _) =
        runtime.block_on(write_tail(checkpointer.store(), &mut model, opts, 1, false))?;
    let started = Instant::now();
    let recovered_all = runtime.block_on(recover(checkpointer.store(), &config))?;
    let full_recovery = started.elapsed();
    verified &= recovered_all.state.state == model;
    verified &= recovered_all.checkpoint == Some(second.manifest.checkpoint);

    Ok(DemoReport {
        records: opts.records,
        ingest,
        syncs,
        segments,
        wal_bytes,
        merged,
        merge,
        checkpoint,
        state_build: state_time,
        state: first_state,
        manifest: outcome.manifest,
        second: second.manifest,
        second_state,
        checkpoint_bytes: outcome.bytes_written,
        removed_segments: outcome.removed_segments,
        table: checkpointer.store().name().to_owned(),
        tail,
        full_recovery,
        full_recovery_replayed: recovered_all.state.entries_replayed,
        replayed: recovered.entries_replayed,
        recovery,
        live_keys: recovered.state.len(),
        verified,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
