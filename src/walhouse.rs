//! The front door: [`Walhouse`], one handle on a data directory that
//! ingests, checkpoints, looks up and scans.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{
    CheckpointOutcome, CheckpointReader, Checkpointer, LookupSettings, Manifest,
};
use crate::runtime::live::Live;
use crate::runtime::{
    IngestHandle, IngestMetrics, IngestSettings, Ingester, Ownership, ShutdownReport, WriteOp,
};
use crate::store::Store;
use crate::Error;

/// How [`Walhouse::shutdown`] leaves the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Checkpoint whatever is new, wait for the state table's build, then
    /// stop: the store then holds everything acknowledged, and the WAL only
    /// what came after.
    Checkpoint,
    /// Sync every core and stop without a checkpoint: everything
    /// acknowledged is durable in the WAL, and the next open checkpoints
    /// it. Use it when the store is unreachable.
    Sync,
}

/// What [`Walhouse::get`] and [`Walhouse::scan`] answer from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reads {
    /// The newest checkpoint plus every write acknowledged since, which are
    /// held in memory until a checkpoint covers them (key + value + about
    /// 80 bytes each; the core threads record them after the fdatasync).
    #[default]
    Live,
    /// The newest checkpoint only (found again by a LIST at most every
    /// `relist_after_ms`): nothing is held in memory, for a process that
    /// only writes (the CLI's `ingest`).
    Checkpointed,
}

/// What [`Walhouse::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The newest checkpoint (`None`: a new table).
    pub checkpoint: Option<u64>,
    /// Puts and deletes in the WAL after it (what an earlier run
    /// acknowledged after its last checkpoint), loaded into memory for
    /// lookups ([`Reads::Live`]; 0 with [`Reads::Checkpointed`]); the next
    /// checkpoint takes them.
    pub tail_entries: u64,
}

/// Builds a [`Walhouse`]: see [`Walhouse::builder`].
#[derive(Debug)]
pub struct WalhouseBuilder {
    data_dir: PathBuf,
    store: Store,
    settings: IngestSettings,
    lookup: LookupSettings,
    ownership: Ownership,
    reads: Reads,
}

impl WalhouseBuilder {
    /// What `get` and `scan` answer from (default: [`Reads::Live`]).
    #[must_use]
    pub fn reads(mut self, reads: Reads) -> Self {
        self.reads = reads;
        self
    }

    /// Replaces the ingest settings (cores, group commit, checkpoint
    /// schedule and the checkpoint settings in them).
    #[must_use]
    pub fn settings(mut self, settings: IngestSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Replaces the lookup settings (cache budget, how often the newest
    /// checkpoint is listed again).
    #[must_use]
    pub fn lookup(mut self, lookup: LookupSettings) -> Self {
        self.lookup = lookup;
        self
    }

    /// How a table that another data directory owns is treated (default:
    /// [`Ownership::Claim`], which refuses it).
    #[must_use]
    pub fn ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Opens the data directory; see [`Walhouse::open`].
    pub async fn open(self) -> Result<Walhouse, Error> {
        let live = Arc::new(Live::new(self.settings.cores));
        let mut builder = Ingester::builder(&self.data_dir, self.store.clone())
            .settings(self.settings)
            .ownership(self.ownership);
        if self.reads == Reads::Live {
            builder = builder.live_state(Arc::clone(&live));
        }
        let ingester = builder.open().await?;
        let reader = CheckpointReader::open(self.store, self.lookup);
        let checkpoint = ingester
            .checkpointer()
            .latest()
            .await?
            .map(|m| m.checkpoint);
        // The WAL's tail (what an earlier run acknowledged after the newest
        // checkpoint) joins the writes held for lookups.
        let tail_entries = match self.reads {
            Reads::Live => ingester.load_tail(&live).await?,
            Reads::Checkpointed => 0,
        };
        let opened = Opened {
            checkpoint,
            tail_entries,
        };
        Ok(Walhouse {
            ingester,
            reader,
            live,
            opened,
        })
    }
}

/// One data directory: its WAL, its tables in the object store, and the
/// core threads that write them.
///
/// Open it with [`Walhouse::open`] (or [`Walhouse::builder`]); it holds the
/// directory's lock until it is shut down or dropped.
///
/// | job | call | durable / visible when |
/// |---|---|---|
/// | write | [`put`](Self::put), [`delete`](Self::delete), [`write`](Self::write) | on return: fdatasync'd in the WAL, and seen by `get` and `scan` |
/// | ingest (exactly once) | [`commit`](Self::commit) (a source's offset and the watermark, in the same log as its writes) | on return |
/// | many producers | [`handle`](Self::handle) (cheap to clone, `Send + Sync`) | when its future resolves |
/// | checkpoint | [`checkpoint`](Self::checkpoint), or the schedule in the settings | on return: a committed Delta version of `changelog` (`state` follows, built in the background) |
/// | recover | [`open`](Self::open) (newest checkpoint + WAL tail) | before it returns |
/// | look up | [`get`](Self::get) | the newest checkpoint plus everything acknowledged since |
/// | scan | [`scan`](Self::scan), [`scan_prefix`](Self::scan_prefix) | likewise |
/// | stop | [`shutdown`](Self::shutdown) with [`Shutdown::Checkpoint`] or [`Shutdown::Sync`] | |
///
/// Memory: the writes acknowledged since the newest checkpoint are kept in
/// memory for `get` and `scan` (key + value + about 80 bytes each,
/// [`Walhouse::live_bytes`]); each checkpoint drops what it covered, so the
/// checkpoint schedule bounds it. Lookups in the checkpoint go through a
/// cache of [`LookupSettings::cache_bytes`].
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use walhouse::runtime::IngestSettings;
/// use walhouse::store::Store;
/// use walhouse::{Shutdown, Walhouse};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::local(&dir.path().join("table"))?; // or Store::from_url("s3://...")
/// let settings = IngestSettings { cores: 2, pin_threads: false, ..IngestSettings::default() };
/// let db = Walhouse::builder(dir.path().join("data"), store).settings(settings).open().await?;
/// db.put("user:1", "ada").await?; // durable on return
/// db.put("user:2", "grace").await?;
/// db.delete("user:2").await?;
/// assert_eq!(db.get(b"user:1").await?, Some(b"ada".to_vec()));
/// db.checkpoint().await?; // Delta Lake version 1 of the tables in the store
/// db.put("user:3", "edsger").await?; // after the checkpoint: held in memory too
/// let users: Vec<_> = db.scan_prefix(b"user:").await?.into_iter().map(|(k, _)| k).collect();
/// assert_eq!(users, [b"user:1".to_vec(), b"user:3".to_vec()]);
/// db.shutdown(Shutdown::Checkpoint).await?;
/// # Ok(())
/// # }
/// ```
pub struct Walhouse {
    ingester: Ingester,
    reader: CheckpointReader,
    live: Arc<Live>,
    opened: Opened,
}

impl std::fmt::Debug for Walhouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walhouse")
            .field("data_dir", &self.ingester.data_dir())
            .field("store", &self.ingester.checkpointer().store().name())
            .field("cores", &self.ingester.cores())
            .field("live_keys", &self.live.len())
            .finish_non_exhaustive()
    }
}

impl Walhouse {
    /// Opens `data_dir` (created if missing) on `store` with the default
    /// settings: takes the directory's lock, checks its record (the store
    /// and core count it was created with) and the table's owner, probes
    /// that the store honours create-only PUTs, repairs torn WAL tails, and
    /// reads what an earlier run acknowledged after its last checkpoint
    /// into memory (recovery: the newest checkpoint plus that tail is what
    /// `get` and `scan` answer). Must run inside a tokio runtime.
    ///
    /// Errors: [`crate::ErrorKind::Conflict`] (another process holds the
    /// directory, another data directory owns the table),
    /// [`crate::ErrorKind::InvalidInput`] (opened with another store or
    /// core count than it was created with), `Unavailable` (the store),
    /// `Corrupt` (a damaged WAL or checkpoint).
    pub async fn open(data_dir: impl Into<PathBuf>, store: Store) -> Result<Self, Error> {
        Self::builder(data_dir, store).open().await
    }

    /// A builder, for settings other than the defaults.
    pub fn builder(data_dir: impl Into<PathBuf>, store: Store) -> WalhouseBuilder {
        WalhouseBuilder {
            data_dir: data_dir.into(),
            store,
            settings: IngestSettings::default(),
            lookup: LookupSettings::default(),
            ownership: Ownership::Claim,
            reads: Reads::Live,
        }
    }

    /// What the open found.
    #[must_use]
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Puts `value` under `key`; durable (fdatasync'd) on return, and seen
    /// by [`get`](Self::get) and [`scan`](Self::scan).
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        Ok(self.ingester.put(key, value).await?)
    }

    /// Deletes `key`; durable on return.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<(), Error> {
        Ok(self.ingester.delete(key).await?)
    }

    /// Writes `ops`, each to its key's core; durable on return. Ops of one
    /// core are written in order, in one group commit when they fit.
    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<(), Error> {
        Ok(self.ingester.put_batch(ops).await?)
    }

    /// Records that `offsets` (source name to offset) and `watermark` are
    /// ingested: durable on return, and in the next checkpoint's Delta
    /// `txn` actions. Call it after the writes it covers have returned.
    pub async fn commit(
        &self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<(), Error> {
        Ok(self.ingester.commit(offsets, watermark).await?)
    }

    /// A cloneable handle for producer tasks: the ingester's API (submit,
    /// batches, durability futures). Its writes are seen by `get` and
    /// `scan` like this handle's.
    #[must_use]
    pub fn handle(&self) -> IngestHandle {
        self.ingester.handle()
    }

    /// Checkpoints everything acknowledged before the call: a committed
    /// Delta Lake version of `changelog` on return (the `state` table's
    /// version is built after it, in the background). Writes go on
    /// meanwhile. One checkpoint runs at a time.
    pub async fn checkpoint(&self) -> Result<CheckpointOutcome, Error> {
        Ok(self.ingester.checkpoint().await?)
    }

    /// The value of `key` in the live state: the newest checkpoint plus
    /// every write acknowledged since (`None`: absent or deleted).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(found) = self.live.get(self.ingester.core_of(key), key) {
            return Ok(found);
        }
        // Missed in memory: the checkpoint that took it out (or a newer
        // one) answers.
        let Some(manifest) = self.newest_at_least(self.live.floor()).await? else {
            return Ok(None);
        };
        Ok(self.reader.get_in(&manifest, key).await?)
    }

    /// The live keys in `range` with their values, sorted by key.
    ///
    /// The result is held in memory, and the checkpoint's files that can
    /// hold keys of the range are read (row groups outside it by their
    /// statistics are skipped): scan bounded ranges.
    pub async fn scan(
        &self,
        range: impl RangeBounds<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        loop {
            let floor = self.live.floor();
            let manifest = self.newest_at_least(floor).await?;
            let mut rows: BTreeMap<Vec<u8>, Option<Vec<u8>>> = match &manifest {
                Some(m) => self
                    .reader
                    .scan_in(m, range.clone())
                    .await?
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect(),
                None => BTreeMap::new(),
            };
            let live = self.live.range(range.clone());
            // A checkpoint newer than the one read took writes out of memory
            // meanwhile: read again.
            if self.live.floor() > manifest.as_ref().map_or(0, |m| m.checkpoint) {
                continue;
            }
            rows.extend(live);
            return Ok(rows
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect());
        }
    }

    /// The live keys that start with `prefix`, sorted; see
    /// [`scan`](Self::scan).
    pub async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.scan((Bound::Included(prefix.to_vec()), end)).await
    }

    /// Bytes of the writes held in memory since the newest checkpoint.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.live.bytes()
    }

    /// The checkpointer: listing, verification and garbage collection of
    /// the tables.
    #[must_use]
    pub fn checkpointer(&self) -> &Checkpointer {
        self.ingester.checkpointer()
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.ingester.data_dir()
    }

    /// Counters and latency histograms since open.
    #[must_use]
    pub fn metrics(&self) -> IngestMetrics {
        self.ingester.metrics()
    }

    /// Stops; see [`Shutdown`]. Writes submitted after it began fail.
    pub async fn shutdown(self, how: Shutdown) -> Result<ShutdownReport, Error> {
        Ok(self.ingester.shutdown(how == Shutdown::Checkpoint).await?)
    }

    /// The newest manifest, at least checkpoint `floor` (listed again when
    /// the reader's is older).
    async fn newest_at_least(&self, floor: u64) -> Result<Option<Arc<Manifest>>, Error> {
        let newest = self.reader.newest().await?;
        if newest.as_ref().map_or(0, |m| m.checkpoint) >= floor {
            return Ok(newest);
        }
        Ok(self.reader.refresh().await?)
    }
}

/// The smallest key after every key that starts with `prefix` (`None`:
/// there is none, the prefix is empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_end_of_a_prefix_is_the_first_key_after_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
