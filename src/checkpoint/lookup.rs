//! Point lookups on the newest checkpoint: [`CheckpointReader::get`].
//!
//! The answer is a key's value as of the checkpoint, read from the `state`
//! Delta table and the changelog after it:
//!
//! - the newest version of `state` at or before the checkpoint (its build
//!   runs after the commit, so it can be one version behind) holds one live
//!   row per key: a row its file's deletion vector marks is not live;
//! - the changelog files of the checkpoints after that version are searched
//!   first, newest first, and within a file the last operation on the key
//!   wins (a `delete` means absent);
//! - a key none of them touches is looked up in the state version's files
//!   (each sorted by key); a row found there counts only if its deletion
//!   vector does not mark it, and the vector is read only then.
//!
//! Only what can hold the key is read. For each file, a row group is read
//! only if its `key` statistics (min/max) include the key and its bloom
//! filter on `key` does not rule it out; inside that row group, only the
//! pages whose column-index min/max include the key are selected (the
//! offset index turns them into a row selection), so the reader fetches
//! those pages and the matching pages of the other columns.
//!
//! # The cache
//!
//! One `moka` cache under a byte budget ([`LookupSettings::cache_bytes`])
//! holds parsed log entries (manifests and state versions), Parquet footers
//! (metadata with the page indexes), parsed bloom filters, deletion vectors
//! and the byte ranges (pages, column chunks) recently read. Each entry's
//! weight is its size in bytes (approximate for parsed structures).
//!
//! Keys are chosen so that a changed object is never served stale:
//!
//! - A log entry is keyed on its path plus the size, `e_tag` and
//!   `last_modified` the LIST that found it returned. Entries are written
//!   create-only and never rewritten, but a table root that is wiped and
//!   written again reuses the names; any rewrite changes the `e_tag` (and on
//!   stores without one, the modification time).
//! - A data file's footer, bloom filters and byte ranges, and a deletion
//!   vector, are keyed on the file's path plus the size and crc32c that the
//!   log entry records. Data files are immutable and their names carry a
//!   random unique part, so the writer never reuses a path; if something
//!   else rewrites one, an entry that references the new content records a
//!   new size or crc32c, so the new content gets new cache keys. The
//!   entry's figures are used instead of a HEAD per lookup: a cached lookup
//!   then makes no request at all. (A replacement with identical size and
//!   crc32c but different bytes would go unnoticed: that is a 1-in-2^32
//!   corruption, the same one full verification by crc32c in recovery
//!   accepts.) When the footer is first read, a HEAD checks that the
//!   object's size is the entry's.
//!
//! Which checkpoint is the newest is found by a LIST of
//! `changelog/_delta_log/` (and one of `state/_delta_log/`), done again
//! when it is older than [`LookupSettings::relist_after_ms`]; between
//! LISTs, lookups answer as of the checkpoint last found (a consistent,
//! possibly older, checkpoint — never a mix). [`CheckpointReader::refresh`]
//! forces a LIST.

use std::collections::BTreeMap;
use std::ops::{Bound, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use serde::{Deserialize, Serialize};

use roaring::RoaringTreemap;

use super::changelog_rows::{binary_column, Change, ChangelogRows};
use super::delta::{
    dv::read_dv, log_dir, log_path, parse_log_path, parse_state_version, CHANGELOG_TABLE,
    STATE_TABLE,
};
use super::error::CheckpointError;
use super::manifest::{load_manifest, DataFile, Manifest, StateDv, StateVersion};
use super::parquet::read_error;
use super::recover::pending_changelog;
use crate::store::Store;

/// Footer bytes fetched in the first read of a file.
const FOOTER_PREFETCH_BYTES: usize = 64 << 10;

/// Lookup settings: plain data with documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LookupSettings {
    /// Byte budget of the cache (log entries, footers, bloom filters,
    /// deletion vectors, pages). Default: 64 MiB.
    pub cache_bytes: u64,
    /// The newest manifest is found again by a LIST when the last LIST is
    /// older than this; 0 lists on every lookup. Default: 1000 ms.
    pub relist_after_ms: u64,
}

impl Default for LookupSettings {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            relist_after_ms: 1000,
        }
    }
}

/// Counters of a [`CheckpointReader`] since it was opened (each only grows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Lookups answered.
    pub lookups: u64,
    /// LIST requests of `changelog/_delta_log/` and `state/_delta_log/`.
    pub lists: u64,
    /// Manifests read from the store (cache misses).
    pub manifests_loaded: u64,
    /// State table versions read from the store (cache misses).
    pub state_versions_loaded: u64,
    /// Deletion vectors read from the store (cache misses).
    pub vectors_loaded: u64,
    /// Parquet footers read from the store (cache misses).
    pub footers_loaded: u64,
    /// Footers served from the cache.
    pub footer_hits: u64,
    /// Bloom filters read from the store (cache misses).
    pub blooms_loaded: u64,
    /// Bloom filters served from the cache.
    pub bloom_hits: u64,
    /// Row groups of the files searched.
    pub row_groups_total: u64,
    /// Row groups skipped by their `key` min/max.
    pub row_groups_pruned_by_stats: u64,
    /// Row groups skipped by their bloom filter.
    pub row_groups_pruned_by_bloom: u64,
    /// Row groups skipped because no page's min/max holds the key.
    pub row_groups_pruned_by_pages: u64,
    /// Row groups whose pages were decoded.
    pub row_groups_read: u64,
    /// Byte ranges fetched from the store for pages (cache misses).
    pub ranges_fetched: u64,
    /// Byte ranges served from the cache.
    pub range_hits: u64,
    /// Bytes fetched from the store (footers, bloom filters, pages).
    pub bytes_fetched: u64,
}

#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    lists: AtomicU64,
    manifests_loaded: AtomicU64,
    state_versions_loaded: AtomicU64,
    vectors_loaded: AtomicU64,
    footers_loaded: AtomicU64,
    footer_hits: AtomicU64,
    blooms_loaded: AtomicU64,
    bloom_hits: AtomicU64,
    row_groups_total: AtomicU64,
    row_groups_pruned_by_stats: AtomicU64,
    row_groups_pruned_by_bloom: AtomicU64,
    row_groups_pruned_by_pages: AtomicU64,
    row_groups_read: AtomicU64,
    ranges_fetched: AtomicU64,
    range_hits: AtomicU64,
    bytes_fetched: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Identity of a data file's content: path, size and crc32c from the
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    path: String,
    size: u64,
    crc32c: u32,
}

impl FileId {
    fn of(file: &DataFile) -> Arc<Self> {
        Arc::new(Self {
            path: file.path.clone(),
            size: file.size,
            crc32c: file.crc32c,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    /// A log entry (a manifest or a state version): path, size, `e_tag` and
    /// `last_modified` (ns) from LIST.
    Entry {
        path: String,
        size: u64,
        e_tag: Option<String>,
        modified_ns: i64,
    },
    Footer(Arc<FileId>),
    Bloom(Arc<FileId>, usize),
    Range(Arc<FileId>, u64, u64),
    /// A deletion vector: its file and offset.
    Vector(Arc<FileId>, i32),
}

#[derive(Debug, Clone)]
enum CacheValue {
    Manifest(Arc<Manifest>, u32),
    State(Arc<StateVersion>, u32),
    Vector(Arc<RoaringTreemap>, u32),
    Footer(ArrowReaderMetadata),
    Bloom(Option<Arc<Sbbf>>, u32),
    Range(Bytes),
}

fn weigh(key: &CacheKey, value: &CacheValue) -> u32 {
    let key_bytes = match key {
        CacheKey::Entry { path, .. } => path.len(),
        CacheKey::Footer(f)
        | CacheKey::Bloom(f, _)
        | CacheKey::Range(f, _, _)
        | CacheKey::Vector(f, _) => f.path.len(),
    };
    let value_bytes = match value {
        CacheValue::Manifest(_, w)
        | CacheValue::State(_, w)
        | CacheValue::Vector(_, w)
        | CacheValue::Bloom(_, w) => *w as usize,
        CacheValue::Footer(m) => m.metadata().memory_size(),
        CacheValue::Range(b) => b.len(),
    };
    u32::try_from(64 + key_bytes + value_bytes).unwrap_or(u32::MAX)
}

/// What one file says about a key.
enum Found {
    Put(Vec<u8>),
    Deleted,
}

/// The kind of file searched.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// A changelog file: the last `put` or `delete` of the key wins.
    Changelog,
    /// A state file (sorted, a key at most once), with the deletion vector
    /// that marks its rows no longer live.
    State(Option<&'a StateDv>),
}

/// What lookups as of one checkpoint read: its manifest, the newest
/// version of the state table at or before it, and the changelog files of
/// the checkpoints after that version.
#[derive(Debug)]
struct View {
    manifest: Arc<Manifest>,
    state: Option<Arc<StateVersion>>,
    pending: Vec<DataFile>,
}

/// The newest checkpoint as last listed.
#[derive(Debug, Clone)]
struct Pinned {
    at: Instant,
    view: Option<Arc<View>>,
}

/// Point lookups on the newest checkpoint of a table, with a byte-bounded
/// cache of manifests, Parquet footers, bloom filters and pages.
///
/// Cheap to share: clone it (the clones share the cache and counters).
///
/// ```no_run
/// # async fn example() -> Result<(), walhouse::checkpoint::CheckpointError> {
/// use walhouse::checkpoint::{CheckpointReader, LookupSettings};
/// use walhouse::store::Store;
///
/// let store = Store::from_url("file:///tmp/table").expect("a valid URL");
/// let reader = CheckpointReader::open(store, LookupSettings::default());
/// if let Some(value) = reader.get(b"some key").await? {
///     println!("{} bytes", value.len());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CheckpointReader {
    store: Store,
    settings: LookupSettings,
    cache: moka::future::Cache<CacheKey, CacheValue>,
    pinned: Arc<Mutex<Option<Pinned>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for CheckpointReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointReader")
            .field("store", &self.store.name())
            .field("settings", &self.settings)
            .field("cached_bytes", &self.cache.weighted_size())
            .finish_non_exhaustive()
    }
}

impl CheckpointReader {
    /// A reader of the table in `store`. Nothing is read until the first
    /// lookup.
    #[must_use]
    pub fn open(store: Store, settings: LookupSettings) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(weigh)
            .build();
        Self {
            store,
            settings,
            cache,
            pinned: Arc::new(Mutex::new(None)),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The value of `key` as of the newest checkpoint (`None`: absent or
    /// deleted; also `None` when the table has no checkpoint yet).
    ///
    /// Errors name the object: a store failure (retry), or a file that is
    /// not what its log entry says or cannot be decoded (corrupt).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        if let Some(view) = self.newest_view().await? {
            self.get_from(&view, key).await
        } else {
            bump(&self.counters.lookups, 1);
            Ok(None)
        }
    }

    /// The value of `key` as of `manifest`'s checkpoint: read from the
    /// newest state table version at or before it (a LIST of the state
    /// table's log, unless `manifest` is the one pinned by the last LIST)
    /// and the changelog after that version.
    pub async fn get_in(
        &self,
        manifest: &Manifest,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, CheckpointError> {
        let view = self.view_for(manifest).await?;
        self.get_from(&view, key).await
    }

    /// The newest manifest (`None`: no checkpoint yet), listing again if the
    /// last LIST is older than `relist_after_ms`.
    pub async fn newest(&self) -> Result<Option<Arc<Manifest>>, CheckpointError> {
        Ok(self.newest_view().await?.map(|v| Arc::clone(&v.manifest)))
    }

    /// Lists `changelog/_delta_log/` and `state/_delta_log/` now and pins
    /// the newest checkpoint (and the state version lookups read for it)
    /// for later lookups.
    pub async fn refresh(&self) -> Result<Option<Arc<Manifest>>, CheckpointError> {
        Ok(self.refresh_view().await?.map(|v| Arc::clone(&v.manifest)))
    }

    /// The live keys of `range` as of `manifest`'s checkpoint, with their
    /// values, sorted: the state version's rows in the range (those no
    /// deletion vector marks), then the changelog after it applied in
    /// order. Row groups whose `key` statistics lie outside the range are
    /// not read. The result is held in memory.
    pub async fn scan_in(
        &self,
        manifest: &Manifest,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, CheckpointError> {
        let view = self.view_for(manifest).await?;
        let mut rows: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for entry in view.state.iter().flat_map(|v| &v.table) {
            let file = &entry.file;
            let mut deleted: Option<Arc<RoaringTreemap>> = None;
            for (row, key, value) in self.rows_in(file, &range, Rows::State(None)).await? {
                if let Some(dv) = &entry.deletion_vector {
                    if deleted.is_none() {
                        deleted = Some(self.vector(dv).await?);
                    }
                    if deleted.as_ref().is_some_and(|d| d.contains(row)) {
                        continue;
                    }
                }
                rows.insert(key, value);
            }
        }
        for file in &view.pending {
            for (_, key, value) in self.rows_in(file, &range, Rows::Changelog).await? {
                rows.insert(key, value);
            }
        }
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// The view for `manifest`: the pinned one if it is that checkpoint's.
    async fn view_for(&self, manifest: &Manifest) -> Result<Arc<View>, CheckpointError> {
        let pinned = self
            .pinned_copy()
            .and_then(|p| p.view)
            .filter(|v| *v.manifest == *manifest);
        match pinned {
            Some(view) => Ok(view),
            None => Ok(Arc::new(self.view_of(Arc::new(manifest.clone())).await?)),
        }
    }

    /// The rows of `file` whose key is in `range`, in file order, with their
    /// row numbers: a state file's as puts, a changelog file's puts and
    /// deletes (`None`: deleted). Only row groups whose `key` statistics
    /// overlap the range are read.
    async fn rows_in(
        &self,
        file: &DataFile,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        rows: Rows<'_>,
    ) -> Result<Vec<(u64, Vec<u8>, Option<Vec<u8>>)>, CheckpointError> {
        let id = FileId::of(file);
        let metadata = self.footer(file, &id).await?;
        let parquet = metadata.metadata();
        let schema = metadata.parquet_schema();
        let column = (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == "key")
            .ok_or_else(|| self.corrupt(file, "no column `key`".into()))?;
        let changelog = matches!(rows, Rows::Changelog);
        let columns: &[&str] = if changelog {
            &["key", "value", "op"]
        } else {
            &["key", "value"]
        };
        let mut out = Vec::new();
        let mut first_row = 0_u64;
        for rg in 0..parquet.num_row_groups() {
            let meta = parquet.row_group(rg);
            let start = first_row;
            first_row += u64::try_from(meta.num_rows()).unwrap_or(0);
            let stats = meta.column(column).statistics();
            let min = stats.and_then(|s| s.min_bytes_opt());
            let max = stats.and_then(|s| s.max_bytes_opt());
            if meta.num_rows() == 0 || !overlaps(range, min, max) {
                continue;
            }
            let mask = ProjectionMask::columns(schema, columns.iter().copied());
            let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
                self.reader(&id, false),
                metadata.clone(),
            )
            .with_row_groups(vec![rg])
            .with_projection(mask)
            .build()
            .map_err(|e| read_error(&self.store, &file.path, e))?;
            let mut row = start;
            while let Some(batch) = stream
                .try_next()
                .await
                .map_err(|e| read_error(&self.store, &file.path, e))?
            {
                let corrupt = |reason: String| self.corrupt(file, reason);
                if changelog {
                    let decoded = ChangelogRows::of(&batch).map_err(corrupt)?;
                    for r in 0..batch.num_rows() {
                        let (key, value) = match decoded.change(r, row).map_err(corrupt)? {
                            Change::Put(k, v) => (k, Some(v)),
                            Change::Delete(k) => (k, None),
                            Change::Marker => {
                                row += 1;
                                continue;
                            }
                        };
                        if in_range(range, key) {
                            out.push((row, key.to_vec(), value.map(<[u8]>::to_vec)));
                        }
                        row += 1;
                    }
                } else {
                    let keys = binary_column(&batch, "key").map_err(corrupt)?;
                    let values = binary_column(&batch, "value").map_err(corrupt)?;
                    for r in 0..batch.num_rows() {
                        if keys.is_null(r) || values.is_null(r) {
                            return Err(corrupt(format!("state row {row}: a null key or value")));
                        }
                        if in_range(range, keys.value(r)) {
                            out.push((row, keys.value(r).to_vec(), Some(values.value(r).to_vec())));
                        }
                        row += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn get_from(&self, view: &View, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        bump(&self.counters.lookups, 1);
        for file in view.pending.iter().rev() {
            match self.search(file, key, Rows::Changelog).await? {
                Some(Found::Put(value)) => return Ok(Some(value)),
                Some(Found::Deleted) => return Ok(None),
                None => {}
            }
        }
        // One live row per key in the state version: the first found wins.
        for entry in view.state.iter().flat_map(|v| &v.table) {
            let rows = Rows::State(entry.deletion_vector.as_ref());
            if let Some(Found::Put(value)) = self.search(&entry.file, key, rows).await? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    async fn newest_view(&self) -> Result<Option<Arc<View>>, CheckpointError> {
        let fresh = Duration::from_millis(self.settings.relist_after_ms);
        if let Some(p) = self.pinned_copy() {
            if p.at.elapsed() < fresh {
                return Ok(p.view);
            }
        }
        self.refresh_view().await
    }

    async fn refresh_view(&self) -> Result<Option<Arc<View>>, CheckpointError> {
        let at = Instant::now();
        let view = match self.list_newest(CHANGELOG_TABLE, u64::MAX).await? {
            Some((number, meta)) => {
                let manifest = self.manifest(number, &meta).await?;
                Some(Arc::new(self.view_of(manifest).await?))
            }
            None => None,
        };
        if let Ok(mut pinned) = self.pinned.lock() {
            *pinned = Some(Pinned {
                at,
                view: view.clone(),
            });
        }
        Ok(view)
    }

    /// What a lookup as of `manifest` reads: the newest state version at or
    /// before its checkpoint (by a LIST), and the changelog after it.
    async fn view_of(&self, manifest: Arc<Manifest>) -> Result<View, CheckpointError> {
        let state = match self.list_newest(STATE_TABLE, manifest.checkpoint).await? {
            Some((version, meta)) => Some(self.state_version(version, &meta).await?),
            None => None,
        };
        let pending = pending_changelog(&self.store, &manifest, state.as_deref())?;
        Ok(View {
            manifest,
            state,
            pending,
        })
    }

    /// Counters since the reader was opened.
    #[must_use]
    pub fn stats(&self) -> LookupStats {
        let c = &*self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LookupStats {
            lookups: get(&c.lookups),
            lists: get(&c.lists),
            manifests_loaded: get(&c.manifests_loaded),
            state_versions_loaded: get(&c.state_versions_loaded),
            vectors_loaded: get(&c.vectors_loaded),
            footers_loaded: get(&c.footers_loaded),
            footer_hits: get(&c.footer_hits),
            blooms_loaded: get(&c.blooms_loaded),
            bloom_hits: get(&c.bloom_hits),
            row_groups_total: get(&c.row_groups_total),
            row_groups_pruned_by_stats: get(&c.row_groups_pruned_by_stats),
            row_groups_pruned_by_bloom: get(&c.row_groups_pruned_by_bloom),
            row_groups_pruned_by_pages: get(&c.row_groups_pruned_by_pages),
            row_groups_read: get(&c.row_groups_read),
            ranges_fetched: get(&c.ranges_fetched),
            range_hits: get(&c.range_hits),
            bytes_fetched: get(&c.bytes_fetched),
        }
    }

    /// Bytes the cache holds now (after pending evictions are applied).
    pub async fn cached_bytes(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    fn pinned_copy(&self) -> Option<Pinned> {
        self.pinned.lock().ok().and_then(|p| p.clone())
    }

    /// The newest version after 0 and at most `at_most` in `table`'s log
    /// (`None`: none), with what the LIST returned of its entry.
    async fn list_newest(
        &self,
        table: &str,
        at_most: u64,
    ) -> Result<Option<(u64, ObjectMeta)>, CheckpointError> {
        bump(&self.counters.lists, 1);
        let dir = log_dir(table);
        let metas: Vec<ObjectMeta> = self
            .store
            .list_all(&self.store.path(&dir))
            .await
            .map_err(|e| CheckpointError::store(&self.store, "list", format!("{dir}/"), e))?;
        // Version 0 creates the table; checkpoints are versions from 1.
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = self.store.relative(&m.location)?;
                let n = parse_log_path(table, rel).filter(|&n| n > 0 && n <= at_most)?;
                Some((n, m))
            })
            .max_by_key(|(n, _)| *n))
    }

    fn entry_key(meta: &ObjectMeta) -> CacheKey {
        CacheKey::Entry {
            path: meta.location.to_string(),
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
        }
    }

    fn entry_weight(meta: &ObjectMeta) -> u32 {
        u32::try_from(meta.size.saturating_mul(2)).unwrap_or(u32::MAX)
    }

    async fn manifest(
        &self,
        number: u64,
        meta: &ObjectMeta,
    ) -> Result<Arc<Manifest>, CheckpointError> {
        let key = Self::entry_key(meta);
        if let Some(CacheValue::Manifest(m, _)) = self.cache.get(&key).await {
            return Ok(m);
        }
        bump(&self.counters.manifests_loaded, 1);
        let manifest = Arc::new(load_manifest(&self.store, number).await?);
        let weight = Self::entry_weight(meta);
        self.cache
            .insert(key, CacheValue::Manifest(Arc::clone(&manifest), weight))
            .await;
        Ok(manifest)
    }

    async fn state_version(
        &self,
        version: u64,
        meta: &ObjectMeta,
    ) -> Result<Arc<StateVersion>, CheckpointError> {
        let key = Self::entry_key(meta);
        if let Some(CacheValue::State(v, _)) = self.cache.get(&key).await {
            return Ok(v);
        }
        bump(&self.counters.state_versions_loaded, 1);
        let rel = log_path(STATE_TABLE, version);
        let bytes = self
            .store
            .get_all(&meta.location)
            .await
            .map_err(|e| CheckpointError::store(&self.store, "get", &rel, e))?;
        let parsed = Arc::new(parse_state_version(&self.store, &rel, version, &bytes)?);
        let weight = Self::entry_weight(meta);
        self.cache
            .insert(key, CacheValue::State(Arc::clone(&parsed), weight))
            .await;
        Ok(parsed)
    }

    /// The rows `dv` marks, from the cache or the store: one ranged GET of
    /// the vector (its size field, data and CRC), checked like the whole
    /// file is in recovery.
    async fn vector(&self, dv: &StateDv) -> Result<Arc<RoaringTreemap>, CheckpointError> {
        let d = &dv.descriptor;
        let key = CacheKey::Vector(FileId::of(&dv.file), d.offset.unwrap_or(1));
        if let Some(CacheValue::Vector(v, _)) = self.cache.get(&key).await {
            return Ok(v);
        }
        bump(&self.counters.vectors_loaded, 1);
        let bad = |reason: String| CheckpointError::CorruptObject {
            store: self.store.name().to_owned(),
            path: dv.file.path.clone(),
            reason: format!("deletion vector: {reason}"),
        };
        let rows = if d.storage_type == "i" {
            d.read_inline().map_err(|e| bad(e.to_string()))?
        } else {
            let (Ok(start), Ok(size)) = (
                u64::try_from(d.offset.unwrap_or(1)),
                u64::try_from(d.size_in_bytes),
            ) else {
                return Err(bad(format!(
                    "offset {:?} or size {} is negative",
                    d.offset, d.size_in_bytes
                )));
            };
            let range = start..start + 4 + size + 4;
            let got = self
                .store
                .get_range(&self.store.path(&dv.file.path), range)
                .await
                .map_err(|e| CheckpointError::store(&self.store, "get", &dv.file.path, e))?;
            bump(&self.counters.bytes_fetched, got.len() as u64);
            // `read_dv` reads a whole file: the version byte (checked when
            // the file is verified), then the vector at offset 1.
            let mut file = Vec::with_capacity(1 + got.len());
            file.push(1);
            file.extend_from_slice(&got);
            read_dv(&file, Some(1), d.size_in_bytes).map_err(|e| bad(e.to_string()))?
        };
        let weight = u32::try_from(rows.serialized_size()).unwrap_or(u32::MAX);
        let rows = Arc::new(rows);
        self.cache
            .insert(key, CacheValue::Vector(Arc::clone(&rows), weight))
            .await;
        Ok(rows)
    }

    fn corrupt(&self, file: &DataFile, reason: String) -> CheckpointError {
        CheckpointError::CorruptObject {
            store: self.store.name().to_owned(),
            path: file.path.clone(),
            reason,
        }
    }

    fn reader(&self, id: &Arc<FileId>, cache_ranges: bool) -> CachedReader {
        CachedReader {
            store: Arc::clone(self.store.object_store()),
            path: self.store.path(&id.path),
            id: Arc::clone(id),
            cache: cache_ranges.then(|| self.cache.clone()),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The footer (with page indexes) of `file`, from the cache or the store.
    async fn footer(
        &self,
        file: &DataFile,
        id: &Arc<FileId>,
    ) -> Result<ArrowReaderMetadata, CheckpointError> {
        let key = CacheKey::Footer(Arc::clone(id));
        if let Some(CacheValue::Footer(m)) = self.cache.get(&key).await {
            bump(&self.counters.footer_hits, 1);
            return Ok(m);
        }
        bump(&self.counters.footers_loaded, 1);
        let meta = self
            .store
            .head(&self.store.path(&file.path))
            .await
            .map_err(|e| CheckpointError::store(&self.store, "head", &file.path, e))?;
        if meta.size != file.size {
            return Err(self.corrupt(
                file,
                format!(
                    "object is {} bytes, the manifest says {}",
                    meta.size, file.size
                ),
            ));
        }
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let mut reader = self.reader(id, false);
        let metadata = ArrowReaderMetadata::load_async(&mut reader, options)
            .await
            .map_err(|e| read_error(&self.store, &file.path, e))?;
        self.cache
            .insert(key, CacheValue::Footer(metadata.clone()))
            .await;
        Ok(metadata)
    }

    /// The bloom filter on `key` of row group `rg`, from the cache or the
    /// store (`None`: the file has none).
    async fn bloom(
        &self,
        file: &DataFile,
        id: &Arc<FileId>,
        metadata: &ArrowReaderMetadata,
        rg: usize,
        column: usize,
    ) -> Result<Option<Arc<Sbbf>>, CheckpointError> {
        let key = CacheKey::Bloom(Arc::clone(id), rg);
        if let Some(CacheValue::Bloom(b, _)) = self.cache.get(&key).await {
            bump(&self.counters.bloom_hits, 1);
            return Ok(b);
        }
        bump(&self.counters.blooms_loaded, 1);
        let length = metadata
            .metadata()
            .row_group(rg)
            .column(column)
            .bloom_filter_length()
            .unwrap_or(0);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(id, false),
            metadata.clone(),
        );
        let bloom = builder
            .get_row_group_column_bloom_filter(rg, column)
            .await
            .map_err(|e| read_error(&self.store, &file.path, e))?
            .map(Arc::new);
        let weight = u32::try_from(length).unwrap_or(0).saturating_add(64);
        self.cache
            .insert(key, CacheValue::Bloom(bloom.clone(), weight))
            .await;
        Ok(bloom)
    }

    /// What `file` says about `key`: for a changelog file the last `put` or
    /// `delete` of it, for a state file its value if that row is live.
    async fn search(
        &self,
        file: &DataFile,
        key: &[u8],
        rows: Rows<'_>,
    ) -> Result<Option<Found>, CheckpointError> {
        let id = FileId::of(file);
        let metadata = self.footer(file, &id).await?;
        let parquet = metadata.metadata();
        let schema = metadata.parquet_schema();
        let column = (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == "key")
            .ok_or_else(|| self.corrupt(file, "no column `key`".into()))?;
        let groups = parquet.num_row_groups();
        bump(&self.counters.row_groups_total, groups as u64);
        let mut candidates = Vec::new();
        for rg in 0..groups {
            let meta = parquet.row_group(rg);
            let stats = meta.column(column).statistics();
            let outside = stats.is_some_and(|s| {
                s.min_bytes_opt().is_some_and(|min| key < min)
                    || s.max_bytes_opt().is_some_and(|max| key > max)
            });
            if outside || meta.num_rows() == 0 {
                bump(&self.counters.row_groups_pruned_by_stats, 1);
                continue;
            }
            if let Some(bloom) = self.bloom(file, &id, &metadata, rg, column).await? {
                if !bloom.check(key) {
                    bump(&self.counters.row_groups_pruned_by_bloom, 1);
                    continue;
                }
            }
            candidates.push(rg);
        }
        // In a changelog file the last operation wins: newest row group first.
        if matches!(rows, Rows::Changelog) {
            candidates.reverse();
        }
        for rg in candidates {
            let Some(pages) = page_selection(parquet, rg, column, key) else {
                bump(&self.counters.row_groups_pruned_by_pages, 1);
                continue;
            };
            bump(&self.counters.row_groups_read, 1);
            let Some((found, row)) = self
                .read_row_group(file, &id, &metadata, rg, &pages, key, rows)
                .await?
            else {
                continue;
            };
            return match rows {
                Rows::State(Some(dv)) if self.vector(dv).await?.contains(row) => Ok(None),
                _ => Ok(Some(found)),
            };
        }
        Ok(None)
    }

    /// The last (changelog) or first (state) row with `key` among the rows
    /// `pages` of row group `rg`, and its row number in the file.
    #[expect(
        clippy::too_many_arguments,
        reason = "private helper; the arguments are one lookup's context"
    )]
    async fn read_row_group(
        &self,
        file: &DataFile,
        id: &Arc<FileId>,
        metadata: &ArrowReaderMetadata,
        rg: usize,
        pages: &[Range<usize>],
        key: &[u8],
        rows: Rows<'_>,
    ) -> Result<Option<(Found, u64)>, CheckpointError> {
        let changelog = matches!(rows, Rows::Changelog);
        let columns: &[&str] = if changelog {
            &["key", "value", "op"]
        } else {
            &["key", "value"]
        };
        let parquet = metadata.metadata();
        let rg_rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
        let first_row: i64 = (0..rg).map(|g| parquet.row_group(g).num_rows()).sum();
        let selection = RowSelection::from_consecutive_ranges(pages.iter().cloned(), rg_rows);
        let mask = ProjectionMask::columns(metadata.parquet_schema(), columns.iter().copied());
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(id, true),
            metadata.clone(),
        )
        .with_row_groups(vec![rg])
        .with_row_selection(selection)
        .with_projection(mask)
        .build()
        .map_err(|e| read_error(&self.store, &file.path, e))?;
        let mut found = None;
        let mut seen = 0;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| read_error(&self.store, &file.path, e))?
        {
            if let Some((f, r)) = self.scan(file, &batch, key, changelog)? {
                let row = selected_row(pages, seen + r).ok_or_else(|| {
                    self.corrupt(
                        file,
                        format!("row group {rg} has fewer rows than its pages"),
                    )
                })?;
                let row = u64::try_from(first_row).unwrap_or(0) + row as u64;
                found = Some((f, row));
                if !changelog {
                    break;
                }
            }
            seen += batch.num_rows();
        }
        Ok(found)
    }

    /// The last row of `batch` with `key`, as a [`Found`], and its index in
    /// the batch. A changelog batch is decoded like recovery decodes it
    /// ([`ChangelogRows`]): a bad row on the way is an error.
    fn scan(
        &self,
        file: &DataFile,
        batch: &RecordBatch,
        key: &[u8],
        changelog: bool,
    ) -> Result<Option<(Found, usize)>, CheckpointError> {
        let corrupt = |reason: String| self.corrupt(file, reason);
        if changelog {
            let rows = ChangelogRows::of(batch).map_err(corrupt)?;
            for r in (0..batch.num_rows()).rev() {
                // Row numbers here count the rows the page index selected.
                match rows.change(r, r as u64).map_err(corrupt)? {
                    Change::Put(k, value) if k == key => {
                        return Ok(Some((Found::Put(value.to_vec()), r)))
                    }
                    Change::Delete(k) if k == key => return Ok(Some((Found::Deleted, r))),
                    _ => {}
                }
            }
            return Ok(None);
        }
        let keys = binary_column(batch, "key").map_err(corrupt)?;
        let values = binary_column(batch, "value").map_err(corrupt)?;
        for r in 0..batch.num_rows() {
            if keys.is_null(r) || values.is_null(r) {
                return Err(corrupt(format!("state row {r}: a null key or value")));
            }
            if keys.value(r) == key {
                return Ok(Some((Found::Put(values.value(r).to_vec()), r)));
            }
        }
        Ok(None)
    }
}

/// Whether `key` is in `range`.
fn in_range(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>), key: &[u8]) -> bool {
    let above_start = match &range.0 {
        Bound::Included(lo) => key >= lo.as_slice(),
        Bound::Excluded(lo) => key > lo.as_slice(),
        Bound::Unbounded => true,
    };
    let below_end = match &range.1 {
        Bound::Included(hi) => key <= hi.as_slice(),
        Bound::Excluded(hi) => key < hi.as_slice(),
        Bound::Unbounded => true,
    };
    above_start && below_end
}

/// Whether keys between `min` and `max` (a row group's statistics; `None`:
/// unknown) can be in `range`.
fn overlaps(
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    min: Option<&[u8]>,
    max: Option<&[u8]>,
) -> bool {
    let below = match (&range.0, max) {
        (Bound::Included(lo), Some(max)) => max < lo.as_slice(),
        (Bound::Excluded(lo), Some(max)) => max <= lo.as_slice(),
        _ => false,
    };
    let above = match (&range.1, min) {
        (Bound::Included(hi), Some(min)) => min > hi.as_slice(),
        (Bound::Excluded(hi), Some(min)) => min >= hi.as_slice(),
        _ => false,
    };
    !below && !above
}

/// The row (in its row group) of the `ordinal`-th row that `pages` select.
fn selected_row(pages: &[Range<usize>], mut ordinal: usize) -> Option<usize> {
    for p in pages {
        let len = p.end - p.start;
        if ordinal < len {
            return Some(p.start + ordinal);
        }
        ordinal -= len;
    }
    None
}

/// The rows of row group `rg` in pages whose `key` min/max can hold `key`
/// (`None`: no page can). Without page indexes, every row.
fn page_selection(
    parquet: &ParquetMetaData,
    rg: usize,
    column: usize,
    key: &[u8],
) -> Option<Vec<Range<usize>>> {
    let rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
    let all = || Some(std::iter::once(0..rows).collect());
    let (Some(columns), Some(offsets)) = (parquet.column_index(), parquet.offset_index()) else {
        return all();
    };
    let (Some(ColumnIndexMetaData::BYTE_ARRAY(index)), Some(offset)) = (
        columns.get(rg).and_then(|c| c.get(column)),
        offsets.get(rg).and_then(|o| o.get(column)),
    ) else {
        return all();
    };
    let pages = offset.page_locations();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (p, page) in pages.iter().enumerate() {
        if index.is_null_page(p) {
            continue;
        }
        let min = index.min_value(p);
        let max = index.max_value(p);
        if min.is_some_and(|m| key < m) || max.is_some_and(|m| key > m) {
            continue;
        }
        let start = usize::try_from(page.first_row_index).unwrap_or(0);
        let end = pages
            .get(p + 1)
            .map_or(rows, |n| usize::try_from(n.first_row_index).unwrap_or(rows));
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end.max(start)),
        }
    }
    if ranges.is_empty() {
        return None;
    }
    Some(ranges)
}

/// An [`AsyncFileReader`] over one data file that serves byte ranges from
/// the cache when it may (`cache` set) and counts what it fetches.
struct CachedReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    id: Arc<FileId>,
    cache: Option<moka::future::Cache<CacheKey, CacheValue>>,
    counters: Arc<Counters>,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl CachedReader {
    async fn ranges(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
        if let Some(cache) = &self.cache {
            for (slot, r) in out.iter_mut().zip(&ranges) {
                let key = CacheKey::Range(Arc::clone(&self.id), r.start, r.end);
                if let Some(CacheValue::Range(b)) = cache.get(&key).await {
                    bump(&self.counters.range_hits, 1);
                    *slot = Some(b);
                }
            }
        }
        let missing: Vec<usize> = (0..ranges.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let wanted: Vec<Range<u64>> = missing.iter().map(|&i| ranges[i].clone()).collect();
            let fetched = self
                .store
                .get_ranges(&self.path, &wanted)
                .await
                .map_err(external)?;
            for (&i, bytes) in missing.iter().zip(fetched) {
                bump(&self.counters.bytes_fetched, bytes.len() as u64);
                if let Some(cache) = &self.cache {
                    bump(&self.counters.ranges_fetched, 1);
                    let r = &ranges[i];
                    let key = CacheKey::Range(Arc::clone(&self.id), r.start, r.end);
                    cache.insert(key, CacheValue::Range(bytes.clone())).await;
                }
                out[i] = Some(bytes);
            }
        }
        out.into_iter()
            .map(|b| b.ok_or_else(|| ParquetError::General("a range was not fetched".into())))
            .collect()
    }
}

impl AsyncFileReader for CachedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            let mut got = self.ranges(vec![range]).await?;
            got.pop()
                .ok_or_else(|| ParquetError::General("a range was not fetched".into()))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.ranges(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.id.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
