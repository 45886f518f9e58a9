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
pub(crate) mod live;
mod metrics;
pub mod ndjson;

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Mutex};

use self::core::{GroupLimits, Request, Work};
use self::live::Live;
use self::metrics::Counters;
pub use self::metrics::{HistogramSnapshot, IngestMetrics, LatencyHistogram};
use crate::checkpoint::{
    CheckpointError, CheckpointOutcome, CheckpointSettings, Checkpointer, StateBuilt, TableOwner,
};
use crate::per_core_wal::{
    CoreWalWriter, OpRef, PerCoreWalConfig, PerCoreWalError, PerCoreWalManager, WalFileSystem,
};
use crate::store::{Store, StoreError};

/// Errors of the ingester. Cheap to clone: one failed group commit fails
/// every request of the group with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A write or fdatasync failed on this core. It is never retried (the
    /// kernel may have dropped the pages it failed to write): nothing more
    /// is written on this core. Stop the process and reopen, which recovers
    /// from what is durable.
    #[error(
        "core {core_id} is poisoned by a failed {cause}; nothing more is written on it: \
         stop and reopen the data directory to recover"
    )]
    Poisoned {
        /// The core.
        core_id: usize,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The request was refused and not written (an oversized record, say).
    #[error("core {core_id} refused the write: {reason}")]
    Rejected {
        /// The core.
        core_id: usize,
        /// Why.
        reason: String,
    },
    /// The ingester shut down (or its core thread stopped) before the
    /// request was queued or acknowledged.
    #[error("the ingester is shut down; the request was not acknowledged")]
    ShutDown,
    /// Another process holds the data directory.
    #[error(
        "{} is locked by another walhouse process (a running `walhouse ingest`?): \
         one process per data directory",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Opening the WAL, or a file in the data directory, failed.
    #[error("{0}")]
    Wal(Arc<PerCoreWalError>),
    /// The object store cannot be used: unreachable, or it does not honour
    /// the create-only PUT the commit protocol needs (the store probe).
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// A checkpoint failed. The WAL is kept; the next checkpoint retries.
    #[error("checkpoint failed: {0}")]
    Checkpoint(Arc<CheckpointError>),
    /// The data directory was created with another store or core count
    /// than it is opened with (its record, `walhouse.json`, says which).
    #[error(
        "data directory {} was created with {field} {recorded}, but is opened with {field} \
         {given}: open it with {field} {recorded} (a data directory keeps its store and cores)",
        data_dir.display()
    )]
    Mismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// `store` or `cores`.
        field: &'static str,
        /// What its record says.
        recorded: String,
        /// What it was opened with.
        given: String,
    },
    /// The table is owned by another data directory: this one must not
    /// write to it. Nothing was acknowledged.
    #[error(
        "the table at {store} is owned by {owner}; data directory {} (id {ours}) is not its \
         owner and wrote nothing: use the owning data directory, another store, or, only if \
         the owner is gone for good, take the table over (`walhouse ingest --take-over`)",
        data_dir.display()
    )]
    NotOwner {
        /// The store.
        store: String,
        /// The owner, for people.
        owner: String,
        /// This data directory.
        data_dir: PathBuf,
        /// Its identity.
        ours: String,
    },
    /// A read-only command was pointed at a directory that is not a data
    /// directory; nothing was created.
    #[error("no data directory at {}: no {} and no {}/", path.display(), datadir::RECORD_FILE, datadir::WAL_DIR)]
    NoDataDir {
        /// The path given.
        path: PathBuf,
    },
    /// An I/O error on a file of the data directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl IngestError {
    /// What the caller should do.
    #[must_use]
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Poisoned { .. } | Self::ShutDown => K::Poisoned,
            Self::Rejected { .. } | Self::InvalidSetting { .. } | Self::Mismatch { .. } => {
                K::InvalidInput
            }
            Self::Locked { .. } | Self::NotOwner { .. } => K::Conflict,
            Self::Wal(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Checkpoint(e) => e.kind(),
            Self::NoDataDir { .. } => K::NotFound,
            Self::Io { .. } => K::Io,
        }
    }
}

impl From<PerCoreWalError> for IngestError {
    fn from(e: PerCoreWalError) -> Self {
        Self::Wal(Arc::new(e))
    }
}

impl From<CheckpointError> for IngestError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(Arc::new(e))
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Put { key, value } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
        }
    }
}

/// Settings of an [`Ingester`] (plain data; the store and directory go
/// through the builder). Every default is stated on its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// Core threads, one WAL per core. Default: the machine's CPUs. The WAL
    /// directory keeps its cores: reopening with fewer cores than it holds is
    /// refused.
    pub cores: usize,
    /// Pin each core thread to its CPU. Default: true. Where the OS refuses,
    /// threads run unpinned (one warning).
    pub pin_threads: bool,
    /// Requests each core's channel holds before producers wait
    /// (backpressure). A batch counts as one request. Default: 4096.
    pub channel_capacity: usize,
    /// Most entries per group commit (one fdatasync). Default: 65 536.
    pub group_commit_entries: usize,
    /// Most key+value bytes per group commit. Default: 8 MiB.
    pub group_commit_bytes: usize,
    /// How long a core waits for more requests before syncing a group,
    /// in microseconds. Default: 0 (sync at once; requests arriving during
    /// the fsync form the next group).
    pub group_commit_delay_us: u64,
    /// Checkpoint every this many milliseconds when new entries were
    /// written (0: never on a timer). Default: 60 000.
    pub checkpoint_interval_ms: u64,
    /// Checkpoint as soon as the WAL holds this many bytes (0: never on
    /// size). Default: 256 MiB.
    pub checkpoint_wal_bytes: u64,
    /// WAL segment size in bytes. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Checkpoint settings (Parquet, snapshots, retention as
    /// `retain_checkpoints`).
    pub checkpoint: CheckpointSettings,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            pin_threads: true,
            channel_capacity: 4096,
            group_commit_entries: 65_536,
            group_commit_bytes: 8 << 20,
            group_commit_delay_us: 0,
            checkpoint_interval_ms: 60_000,
            checkpoint_wal_bytes: 256 << 20,
            segment_bytes: 64 << 20,
            checkpoint: CheckpointSettings::default(),
        }
    }
}

impl IngestSettings {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |field, reason: &str| {
            Err(IngestError::InvalidSetting {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.cores == 0 || self.cores > 4096 {
            return bad("cores", "must be 1..=4096");
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity", "must be at least 1");
        }
        if self.group_commit_entries == 0 {
            return bad("group_commit_entries", "must be at least 1");
        }
        if self.group_commit_bytes == 0 {
            return bad("group_commit_bytes", "must be at least 1");
        }
        if self.group_commit_delay_us > 1_000_000 {
            return bad("group_commit_delay_us", "must be at most 1 000 000 (1 s)");
        }
        Ok(())
    }

    fn wal_config(&self, data_dir: &Path) -> PerCoreWalConfig {
        PerCoreWalConfig::new(&data_dir.join("wal"), self.cores)
            .with_segment_bytes(self.segment_bytes)
    }
}

/// The future of a write's durability: resolves after the fdatasync that
/// covers it (`Ok`), or with the error that prevented it.
#[must_use = "a write is durable only when its Durable future resolves"]
pub struct Durable {
    acks: Vec<oneshot::Receiver<Result<(), IngestError>>>,
    next: usize,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("acks", &self.acks.len())
            .field("done", &self.next)
            .finish()
    }
}

impl Future for Durable {
    type Output = Result<(), IngestError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while self.next < self.acks.len() {
            let i = self.next;
            match Pin::new(&mut self.acks[i]).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(()))) => self.next += 1,
                Poll::Ready(Ok(Err(e))) => {
                    self.next = self.acks.len();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(_)) => {
                    self.next = self.acks.len();
                    return Poll::Ready(Err(IngestError::ShutDown));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

struct HandleInner {
    senders: Vec<flume::Sender<Request>>,
    max_op_bytes: usize,
}

/// A cheap, cloneable handle for producers (`Send + Sync`).
#[derive(Clone)]
pub struct IngestHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for IngestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestHandle")
            .field("cores", &self.inner.senders.len())
            .finish()
    }
}

impl IngestHandle {
    /// Number of cores.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.inner.senders.len()
    }

    /// The core a key is routed to (crc32c of the key modulo the cores).
    #[must_use]
    pub fn core_of(&self, key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % self.inner.senders.len()
    }

    async fn send(
        &self,
        core: usize,
        work: Work,
    ) -> Result<oneshot::Receiver<Result<(), IngestError>>, IngestError> {
        let (ack, rx) = oneshot::channel();
        let req = Request {
            work,
            enqueued: Instant::now(),
            ack,
        };
        self.inner.senders[core]
            .send_async(req)
            .await
            .map_err(|_| IngestError::ShutDown)?;
        Ok(rx)
    }

    /// The most key plus value bytes one put takes (the WAL's record limit,
    /// 16 MiB by default, less the record's own fields).
    #[must_use]
    pub fn max_write_bytes(&self) -> usize {
        self.inner.max_op_bytes
    }

    /// Checks a write the way [`IngestHandle::submit`] does before queueing
    /// it: a write refused here is never written, and a write that passes is
    /// one every checkpoint can store.
    pub fn validate(&self, op: &WriteOp) -> Result<(), IngestError> {
        self.check(op)
    }

    /// Checks a commit the way [`IngestHandle::submit_commit`] does: every
    /// offset must fit a signed 64-bit column (checkpoints and Delta `txn`
    /// actions store them so), and the sources must fit one WAL record.
    pub fn validate_commit(&self, offsets: &HashMap<String, u64>) -> Result<(), IngestError> {
        let reject = |reason: String| IngestError::Rejected { core_id: 0, reason };
        for (source, &offset) in offsets {
            if i64::try_from(offset).is_err() {
                return Err(reject(format!(
                    "offset {offset} of source {source:?} is above {}, the largest a \
                     checkpoint stores (a signed 64-bit column)",
                    i64::MAX
                )));
            }
        }
        let bytes: usize = offsets.keys().map(|s| s.len() + 16).sum();
        if bytes > self.inner.max_op_bytes {
            return Err(reject(format!(
                "a commit of {} sources takes about {bytes} bytes, more than the {} a WAL \
                 record holds",
                offsets.len(),
                self.inner.max_op_bytes
            )));
        }
        Ok(())
    }

    fn check(&self, op: &WriteOp) -> Result<(), IngestError> {
        if op.len() > self.inner.max_op_bytes {
            return Err(IngestError::Rejected {
                core_id: self.core_of(op.key()),
                reason: format!(
                    "key and value take {} bytes, more than the {} a WAL record holds",
                    op.len(),
                    self.inner.max_op_bytes
                ),
            });
        }
        Ok(())
    }

    /// Queues one put or delete (waiting while its core's channel is full)
    /// and returns the future of its durability. Not durable on return.
    pub async fn submit(&self, op: WriteOp) -> Result<Durable, IngestError> {
        self.check(&op)?;
        let core = self.core_of(op.key());
        let rx = self.send(core, Work::One(op)).await?;
        Ok(Durable {
            acks: vec![rx],
            next: 0,
        })
    }

    /// Queues a batch (split by core; each key's writes keep their order)
    /// and returns the future of its durability: it resolves when every
    /// write of the batch is durable. Not durable on return.
    pub async fn submit_batch(&self, ops: Vec<WriteOp>) -> Result<Durable, IngestError> {
        for op in &ops {
            self.check(op)?;
        }
        let cores = self.cores();
        let mut acks = Vec::new();
        if cores == 1 {
            if !ops.is_empty() {
                acks.push(self.send(0, Work::Write(ops)).await?);
            }
        } else {
            let mut per_core: Vec<Vec<WriteOp>> = vec![Vec::new(); cores];
            for op in ops {
                per_core[self.core_of(op.key())].push(op);
            }
            for (core, ops) in per_core.into_iter().enumerate() {
                if !ops.is_empty() {
                    acks.push(self.send(core, Work::Write(ops)).await?);
                }
            }
        }
        Ok(Durable { acks, next: 0 })
    }

    /// Sets `key` to `value`; returns once that is durable.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), IngestError> {
        self.submit(WriteOp::Put {
            key: key.into(),
            value: value.into(),
        })
        .await?
        .await
    }

    /// Removes `key`; returns once that is durable.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<(), IngestError> {
        self.submit(WriteOp::Delete { key: key.into() })
            .await?
            .await
    }

    /// Writes a batch; returns once all of it is durable.
    pub async fn put_batch(&self, ops: Vec<WriteOp>) -> Result<(), IngestError> {
        self.submit_batch(ops).await?.await
    }

    /// Waits until everything queued before the call, on every core, is
    /// durable.
    pub async fn flush(&self) -> Result<(), IngestError> {
        let mut acks = Vec::with_capacity(self.cores());
        for core in 0..self.cores() {
            acks.push(self.send(core, Work::Flush).await?);
        }
        Durable { acks, next: 0 }.await
    }

    /// Records the source offsets and watermark of an exactly-once source.
    /// First waits until every write queued before the call is durable on
    /// every core, so a recovered offset never runs ahead of the data; then
    /// queues the commit and returns its durability future.
    pub async fn submit_commit(
        &self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<Durable, IngestError> {
        self.validate_commit(&offsets)?;
        self.flush().await?;
        let rx = self.send(0, Work::Commit { offsets, watermark }).await?;
        Ok(Durable {
            acks: vec![rx],
            next: 0,
        })
    }

    /// [`IngestHandle::submit_commit`], then waits until the commit is durable.
    pub async fn commit(
        &self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<(), IngestError> {
        self.submit_commit(offsets, watermark).await?.await
    }
}

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

/// How [`IngesterBuilder::open`] treats a table that another data directory
/// owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ownership {
    /// Claim a table nobody owns; refuse one another data directory owns
    /// ([`IngestError::NotOwner`]) before anything is acknowledged.
    #[default]
    Claim,
    /// Take the table over whoever owns it: for a data directory that
    /// replaces a lost one (a new machine). The old owner, if it still runs,
    /// fails its next checkpoint and commits nothing more.
    TakeOver,
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

/// Makes the data directory of `record` the owner of the table at `store`,
/// or refuses with [`IngestError::NotOwner`] when another one owns it
/// (unless `ownership` is [`Ownership::TakeOver`]).
pub async fn claim_table(
    store: &Store,
    record: &datadir::DataDirRecord,
    data_dir: &Path,
    ownership: Ownership,
) -> Result<(), IngestError> {
    let ours = TableOwner::new(
        &record.id,
        &std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
    );
    let owner = match TableOwner::read(store).await? {
        Some(owner) => owner,
        None => ours.claim(store).await?,
    };
    if owner.owner_id == record.id {
        return Ok(());
    }
    match ownership {
        Ownership::TakeOver => {
            tracing::warn!(previous = %owner, "taking the table over from its previous owner");
            ours.take_over(store).await?;
            Ok(())
        }
        Ownership::Claim => Err(IngestError::NotOwner {
            store: store.name().to_owned(),
            owner: owner.to_string(),
            data_dir: data_dir.to_path_buf(),
            ours: record.id.clone(),
        }),
    }
}

/// Refuses a data directory whose table another data directory owns (for
/// the commands that read both, such as recovery). A table nobody owns, or a
/// directory without a record (written before records existed), passes.
pub async fn check_table_owner(
    store: &Store,
    data_dir: &Path,
    record: Option<&datadir::DataDirRecord>,
) -> Result<(), IngestError> {
    let Some(record) = record else {
        return Ok(());
    };
    match TableOwner::read(store).await? {
        Some(owner) if owner.owner_id != record.id => Err(IngestError::NotOwner {
            store: store.name().to_owned(),
            owner: owner.to_string(),
            data_dir: data_dir.to_path_buf(),
            ours: record.id.clone(),
        }),
        _ => Ok(()),
    }
}

/// Takes `<data_dir>/LOCK` exclusively (released when the file closes,
/// also when the process is killed).
pub fn lock_data_dir(data_dir: &Path) -> Result<File, IngestError> {
    let io = |op, path: &Path, e| IngestError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(e),
    };
    std::fs::create_dir_all(data_dir).map_err(|e| io("create data directory", data_dir, e))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IngestError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io("lock", &path, e)),
    }
}

/// Cores of the WAL in `wal_dir`: one more than the highest core that has
/// a `wal-<core>-*.log` segment (0 when there is none).
pub fn wal_cores(wal_dir: &Path) -> Result<usize, IngestError> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(IngestError::Io {
                op: "list WAL directory",
                path: wal_dir.to_path_buf(),
                source: Arc::new(e),
            })
        }
    };
    let mut cores = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("wal-") else {
            continue;
        };
        if Path::new(name).extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        if let Some(core) = rest.split('-').next().and_then(|c| c.parse::<usize>().ok()) {
            cores = cores.max(core + 1);
        }
    }
    Ok(cores)
}

type CoreThreads = (
    Vec<flume::Sender<Request>>,
    Vec<std::thread::JoinHandle<CoreWalWriter>>,
);

/// Moves every core's writer to a thread of its own, pinned when asked.
fn spawn_cores(
    s: &IngestSettings,
    manager: &mut PerCoreWalManager,
    counters: &Arc<Counters>,
    live: Option<&Arc<Live>>,
    wal_dir: &Path,
) -> Result<CoreThreads, IngestError> {
    let limits = GroupLimits {
        entries: s.group_commit_entries as u64,
        bytes: s.group_commit_bytes as u64,
        delay: Duration::from_micros(s.group_commit_delay_us),
    };
    let cpus = if s.pin_threads {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut senders = Vec::with_capacity(s.cores);
    let mut threads = Vec::with_capacity(s.cores);
    for core in 0..s.cores {
        let writer = manager.take_writer(core)?;
        let (tx, rx) = flume::bounded(s.channel_capacity);
        senders.push(tx);
        let cpu = if s.pin_threads {
            if cpus.is_empty() {
                pin_warning_once(core);
                None
            } else {
                Some(cpus[core % cpus.len()])
            }
        } else {
            None
        };
        let counters = counters.clone();
        let live = live.cloned();
        let thread = std::thread::Builder::new()
            .name(format!("walhouse-core-{core}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        pin_warning_once(core);
                    }
                }
                core::run(writer, &rx, limits, &counters, live.as_deref())
            })
            .map_err(|e| IngestError::Io {
                op: "spawn core thread",
                path: wal_dir.to_path_buf(),
                source: Arc::new(e),
            })?;
        threads.push(thread);
    }
    Ok((senders, threads))
}

fn pin_warning_once(core: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            core,
            "the OS refused to pin a core thread to its CPU; running unpinned"
        );
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
        let wal_dir = b.data_dir.join("wal");
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
            let next: Vec<u64> = covered
                .iter()
                .map(|c| c.map_or(0, |last| last + 1))
                .collect();
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

    /// Whether the WAL holds a put or delete that no checkpoint covers
    /// (written by an earlier run; read from the logs).
    pub(crate) async fn wal_has_tail(&self) -> Result<bool, IngestError> {
        let covered = match self.shared.checkpointer.latest().await? {
            Some(m) => m.covered_sequences(self.cores()),
            None => vec![None; self.cores()],
        };
        let manager = self.shared.manager.lock().await;
        let mut stream = manager.merge_stream()?.skip_covered(covered);
        while let Some(entry) = stream.next_ref() {
            if matches!(entry?.operation, OpRef::Put { .. } | OpRef::Delete { .. }) {
                return Ok(true);
            }
        }
        Ok(false)
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

fn record_checkpoint(c: &Counters, o: &CheckpointOutcome, started: Instant) {
    c.checkpoints.fetch_add(1, Ordering::Relaxed);
    c.checkpoint_wal_bytes
        .fetch_add(o.manifest.stats.wal_bytes, Ordering::Relaxed);
    c.checkpoint_object_bytes
        .fetch_add(o.bytes_written, Ordering::Relaxed);
    c.checkpoint_duration.record(started.elapsed());
}

async fn run_checkpoint(shared: &Shared) -> Result<CheckpointOutcome, IngestError> {
    let mut manager = shared.manager.lock().await;
    let started = Instant::now();
    let result = async {
        let next = shared.checkpointer.advance_epoch(&mut manager).await?;
        let mut acks = Vec::new();
        for core in 0..shared.handle.cores() {
            acks.push(shared.handle.send(core, Work::Seal { epoch: next }).await?);
        }
        Durable { acks, next: 0 }.await?;
        Ok::<_, IngestError>(
            shared
                .checkpointer
                .checkpoint_sealed(&manager, next - 1)
                .await?,
        )
    }
    .await;
    match &result {
        Ok(o) => {
            record_checkpoint(&shared.counters, o, started);
            if let Some(live) = &shared.live {
                live.committed(o.manifest.checkpoint, o.manifest.epochs.last);
            }
            tracing::info!(
                checkpoint = o.manifest.checkpoint,
                epochs = ?(o.manifest.epochs.first, o.manifest.epochs.last),
                entries = o.manifest.stats.entries,
                bytes = o.bytes_written,
                secs = o.duration.as_secs_f64(),
                "checkpoint committed"
            );
        }
        Err(e) => {
            shared
                .counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "checkpoint failed; the WAL is kept and the next one retries");
        }
    }
    result
}

async fn schedule(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    wal_bytes: u64,
) {
    let tick = Duration::from_millis(100).min(if interval.is_zero() {
        Duration::from_millis(100)
    } else {
        interval
    });
    let mut last = Instant::now();
    let mut entries_at_last = 0;
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        if Instant::now() < retry_at {
            continue;
        }
        let entries = shared.counters.entries.load(Ordering::Relaxed);
        let timer_due =
            !interval.is_zero() && last.elapsed() >= interval && entries != entries_at_last;
        let size_due = wal_bytes > 0
            && shared
                .manager
                .try_lock()
                .is_ok_and(|m| m.total_size() >= wal_bytes);
        if !(timer_due || size_due) {
            continue;
        }
        let run = run_checkpoint(&shared);
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = stop.changed() => {
                // Let the running checkpoint finish: stopping half way is
                // safe, but finishing is cheaper than redoing it.
                (&mut run).await
            }
        };
        last = Instant::now();
        if result.is_ok() {
            entries_at_last = entries;
            backoff = Duration::ZERO;
        } else {
            backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            retry_at = Instant::now() + backoff;
        }
        if *stop.borrow() {
            return;
        }
    }
}
