//! The thread-per-core ingester: pinned core threads, group commit, async
//! durable acknowledgements and checkpoint scheduling.
//!
//! [`IngesterBuilder::open`] starts one OS thread per core, pinned to its CPU
//! (where the OS refuses, the thread runs unpinned and a warning is logged
//! once). Each thread owns its core's [`CoreWalWriter`]: no lock is shared
//! between cores. Producers route each key by its crc32c to one core, so a
//! key's writes stay in order on that core.
//!
//! Every write returns a future that resolves only after the fdatasync that
//! covers it succeeded ([`IngestHandle::put`]); the `submit_*` variants
//! return once the request is queued (waiting while the core's bounded
//! channel is full: backpressure) and give a [`Durable`] future to await
//! later. A core groups whatever is queued into one fdatasync (group
//! commit). A failed write or fsync poisons that core: every pending and
//! later write on it fails with [`IngestError::Poisoned`], which says that
//! the process must stop and recover.
//!
//! Checkpoints run on the tokio runtime, on a schedule
//! ([`IngestSettings::checkpoint_interval_ms`],
//! [`IngestSettings::checkpoint_wal_bytes`]) or on demand
//! ([`Ingester::checkpoint`]); ingest goes on into the next epoch while the
//! previous one uploads.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use walhouse::runtime::{IngestSettings, Ingester};
//! use walhouse::store::Store;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::local(&dir.path().join("table"))?;
//! let settings = IngestSettings { cores: 2, pin_threads: false, ..IngestSettings::default() };
//! let ingester = Ingester::builder(dir.path(), store).settings(settings).open().await?;
//! ingester.put("user:1", "alice").await?; // durable when this returns
//! ingester.delete("user:2").await?;
//! let outcome = ingester.checkpoint().await?;
//! assert_eq!(outcome.manifest.stats.entries, 2); // the put and the delete
//! let report = ingester.shutdown(false).await?;
//! assert_eq!(report.metrics.entries, 2);
//! # Ok(())
//! # }
//! ```

mod core;
pub mod datadir;
mod error;
mod handle;
pub(crate) mod live;
mod metrics;
mod owner;
mod scheduler;
mod settings;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use self::core::{spawn_cores, Work};
pub use self::datadir::{lock_data_dir, wal_cores};
pub use self::error::IngestError;
use self::handle::HandleInner;
pub use self::handle::{Durable, IngestHandle, WriteOp};
use self::live::Live;
use self::metrics::Counters;
pub use self::metrics::{HistogramSnapshot, IngestMetrics, LatencyHistogram};
pub use self::owner::{check_table_owner, claim_table, Ownership};
use self::scheduler::{record_checkpoint, run_checkpoint, schedule};
pub use self::settings::IngestSettings;
use crate::checkpoint::{CheckpointOutcome, Checkpointer, StateBuilt};
use crate::per_core_wal::{
    next_sequence_after, CoreWalWriter, OpRef, PerCoreWalManager, WalFileSystem,
};
use crate::store::Store;

/// What [`Ingester::shutdown`] did.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The final checkpoint, when one was asked for and anything was new.
    pub final_checkpoint: Option<CheckpointOutcome>,
    /// What the `state` table's build did after the last checkpoint (it
    /// runs after each commit; shutdown waits for it, and after a final
    /// checkpoint builds whatever version is still missing).
    pub state: StateBuilt,
    /// Counters and histograms over the ingester's life.
    pub metrics: IngestMetrics,
}

/// Builds an [`Ingester`].
#[derive(Debug)]
pub struct IngesterBuilder {
    data_dir: PathBuf,
    store: Store,
    settings: IngestSettings,
    fs: Option<Arc<dyn WalFileSystem>>,
    ownership: Ownership,
    live: Option<Arc<Live>>,
}

impl IngesterBuilder {
    /// Replaces the settings.
    #[must_use]
    pub fn settings(mut self, settings: IngestSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The file system the WAL goes through (default: the OS's); tests
    /// inject faults here.
    #[must_use]
    pub fn file_system(mut self, fs: Arc<dyn WalFileSystem>) -> Self {
        self.fs = Some(fs);
        self
    }

    /// How a table owned by another data directory is treated (default:
    /// [`Ownership::Claim`], which refuses it).
    #[must_use]
    pub fn ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Keeps every acknowledged write in memory until a checkpoint covers
    /// it, for the front door's lookups ([`crate::Walhouse`]).
    #[must_use]
    pub(crate) fn live_state(mut self, live: Arc<Live>) -> Self {
        self.live = Some(live);
        self
    }

    /// Opens the data directory (locking it), checks its record (store and
    /// cores, written on first open) and the table's owner, probes the store (see
    /// [`Store::probe`]), repairs torn WAL tails,
    /// resumes sequences after the newest checkpoint, and starts the core
    /// threads and the checkpoint scheduler. Must run inside a tokio
    /// runtime.
    pub async fn open(self) -> Result<Ingester, IngestError> {
        Ingester::open_inner(self).await
    }
}

struct Shared {
    handle: IngestHandle,
    counters: Arc<Counters>,
    manager: Mutex<PerCoreWalManager>,
    checkpointer: Checkpointer,
    live: Option<Arc<Live>>,
}

/// The thread-per-core ingester. Dereferences to its [`IngestHandle`] for
/// writes; see the [module docs](self).
pub struct Ingester {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<CoreWalWriter>>,
    scheduler: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    _lock: File,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester")
            .field("data_dir", &self.data_dir)
            .field("cores", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Ingester {
    type Target = IngestHandle;

    fn deref(&self) -> &IngestHandle {
        &self.shared.handle
    }
}

impl Ingester {
    /// A builder for the data directory (`<data_dir>/wal` holds the WAL) and
    /// the object store of the tables.
    pub fn builder(data_dir: impl Into<PathBuf>, store: Store) -> IngesterBuilder {
        IngesterBuilder {
            data_dir: data_dir.into(),
            store,
            settings: IngestSettings::default(),
            fs: None,
            ownership: Ownership::Claim,
            live: None,
        }
    }

    async fn open_inner(b: IngesterBuilder) -> Result<Self, IngestError> {
        let s = b.settings;
        s.validate()?;
        let lock = lock_data_dir(&b.data_dir)?;
        let recorded = datadir::DataDirRecord::read(&b.data_dir)?;
        if let Some(r) = &recorded {
            r.check(&b.data_dir, b.store.name(), s.cores)?;
        }
        let wal_dir = datadir::wal_dir(&b.data_dir);
        let existing = wal_cores(&wal_dir)?;
        if existing > s.cores {
            return Err(IngestError::InvalidSetting {
                field: "cores",
                reason: format!(
                    "{} holds the logs of {existing} cores; open it with at least {existing} \
                     cores (fewer would leave entries unread)",
                    wal_dir.display()
                ),
            });
        }
        // The commit protocol needs create-only PUTs: refuse a store that
        // ignores them before anything is written.
        b.store
            .probe()
            .await
            .map_err(|e| IngestError::Store(Arc::new(e)))?;
        let is_new = recorded.is_none();
        let record =
            recorded.unwrap_or_else(|| datadir::DataDirRecord::new(b.store.name(), s.cores));
        claim_table(&b.store, &record, &b.data_dir, b.ownership).await?;
        // Written once, before anything is acknowledged.
        if is_new {
            record.write(&b.data_dir)?;
        }
        let checkpointer = Checkpointer::new(b.store, s.checkpoint.clone())?.with_owner(&record.id);
        let config = s.wal_config(&b.data_dir);
        let mut builder = PerCoreWalManager::builder(config.clone());
        if let Some(fs) = b.fs {
            builder = builder.file_system(fs);
        }
        let latest = checkpointer.latest().await?;
        // What the newest checkpoint covers per core (all `None`: there is
        // none). A log starting after it lost segments: refused at open.
        let covered: Vec<Option<u64>> = latest
            .as_ref()
            .map_or_else(|| vec![None; s.cores], |m| m.covered_sequences(s.cores));
        if let Some(m) = &latest {
            let next: Vec<u64> = covered.iter().map(|&c| next_sequence_after(c)).collect();
            builder = builder.resume_at(next, m.epochs.last + 1);
            // A crash may have cut the state table's build of the newest
            // checkpoints short: it runs again in the background.
            checkpointer.spawn_state_build(m.checkpoint).await;
        }
        builder = builder.covered(covered);
        // Every repair of the open (a cut tail, a removed segment) was
        // logged as a warning by the WAL.
        let mut manager = builder.create()?;
        let counters = Arc::new(Counters::default());
        let live = b.live;
        let (senders, threads) = spawn_cores(&s, &mut manager, &counters, live.as_ref(), &wal_dir)?;
        let max_op_bytes = (config.max_record_bytes as usize).saturating_sub(64);
        let shared = Arc::new(Shared {
            handle: IngestHandle {
                inner: Arc::new(HandleInner {
                    senders,
                    max_op_bytes,
                }),
            },
            counters,
            manager: Mutex::new(manager),
            checkpointer,
            live,
        });
        let scheduler = if s.checkpoint_interval_ms > 0 || s.checkpoint_wal_bytes > 0 {
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(schedule(
                shared.clone(),
                stop_rx,
                Duration::from_millis(s.checkpoint_interval_ms),
                s.checkpoint_wal_bytes,
            ));
            Some((stop_tx, task))
        } else {
            None
        };
        Ok(Self {
            shared,
            threads,
            scheduler,
            _lock: lock,
            data_dir: b.data_dir,
        })
    }

    /// A cloneable handle for producer tasks.
    #[must_use]
    pub fn handle(&self) -> IngestHandle {
        self.shared.handle.clone()
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The checkpointer (store, settings, listing, verify, GC).
    #[must_use]
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.shared.checkpointer
    }

    /// Counters and latency histograms since open.
    #[must_use]
    pub fn metrics(&self) -> IngestMetrics {
        self.shared.counters.snapshot()
    }

    /// Loads the puts and deletes of the WAL that no checkpoint covers
    /// (what an earlier run acknowledged after its last checkpoint) into
    /// `live`, in the order recovery applies them; returns how many. Call
    /// it before any write of this run.
    pub(crate) async fn load_tail(&self, live: &Live) -> Result<u64, IngestError> {
        let covered = match self.shared.checkpointer.latest().await? {
            Some(m) => m.covered_sequences(self.cores()),
            None => vec![None; self.cores()],
        };
        let manager = self.shared.manager.lock().await;
        let mut stream = manager.merge_stream()?.skip_covered(covered);
        let mut loaded = 0;
        // Per core (the one its key routes to), in log order.
        let mut tails: Vec<Vec<(u64, WriteOp)>> = vec![Vec::new(); self.cores()];
        while let Some(entry) = stream.next_ref() {
            let entry = entry?;
            let op = match entry.operation {
                OpRef::Put { key, value } => WriteOp::Put {
                    key: key.to_vec(),
                    value: value.to_vec(),
                },
                OpRef::Delete { key } => WriteOp::Delete { key: key.to_vec() },
                _ => continue,
            };
            if let Some(tail) = tails.get_mut(self.core_of(op.key())) {
                tail.push((entry.epoch, op));
            }
            loaded += 1;
        }
        live.load(tails);
        Ok(loaded)
    }

    /// Checkpoints everything acknowledged before the call (and whatever
    /// else reached the sealed epoch): seals the epoch on every core, uploads
    /// the Parquet files, commits the manifest, removes the covered WAL
    /// segments. Writes go on into the next epoch meanwhile. One checkpoint
    /// runs at a time.
    pub async fn checkpoint(&self) -> Result<CheckpointOutcome, IngestError> {
        run_checkpoint(&self.shared).await
    }

    /// Stops: the scheduler first (waiting for a running checkpoint), then
    /// every core thread after it synced and acknowledged what was queued
    /// before; then, if `final_checkpoint`, checkpoints what is new.
    /// Requests queued later fail with [`IngestError::ShutDown`].
    pub async fn shutdown(mut self, final_checkpoint: bool) -> Result<ShutdownReport, IngestError> {
        if let Some((stop, task)) = self.scheduler.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let mut waits = Vec::new();
        for core in 0..self.shared.handle.cores() {
            if let Ok(rx) = self.shared.handle.send(core, Work::Shutdown).await {
                waits.push(rx);
            }
        }
        let _ = Durable {
            acks: waits,
            next: 0,
        }
        .await;
        let threads = std::mem::take(&mut self.threads);
        let writers = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(std::thread::JoinHandle::join)
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| IngestError::ShutDown)?;
        let mut manager = self.shared.manager.lock().await;
        let mut poisoned = None;
        for w in writers {
            match w {
                Ok(writer) => {
                    if writer.is_poisoned() {
                        poisoned = Some(writer.core_id());
                    }
                    manager.attach_writer(writer)?;
                }
                Err(_) => return Err(IngestError::ShutDown),
            }
        }
        let mut outcome = None;
        let new_entries =
            manager.total_size() > 0 && self.shared.counters.entries.load(Ordering::Relaxed) > 0;
        if final_checkpoint && poisoned.is_none() && new_entries {
            let started = Instant::now();
            match self.shared.checkpointer.checkpoint(&mut manager).await {
                Ok(o) => {
                    record_checkpoint(&self.shared.counters, &o, started);
                    outcome = Some(o);
                }
                Err(e) => {
                    self.shared
                        .counters
                        .checkpoint_failures
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
        }
        drop(manager);
        let state = if outcome.is_some() {
            self.shared.checkpointer.finish_state().await?
        } else {
            // Without a final checkpoint the store may be unreachable: only
            // the build already running is waited for; a failure of it is
            // left to the next checkpoint, which builds what is missing.
            match self.shared.checkpointer.wait_state_build().await {
                Ok(built) => built,
                Err(e) => {
                    tracing::warn!(error = %e, "the state table's build failed; the next checkpoint redoes it");
                    StateBuilt::default()
                }
            }
        };
        Ok(ShutdownReport {
            final_checkpoint: outcome,
            state,
            metrics: self.shared.counters.snapshot(),
        })
    }
}
