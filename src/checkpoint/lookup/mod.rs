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
//! pages of `key` whose column-index min/max include the key are decoded
//! (newest first in a changelog file), and the key is searched in them (by
//! binary search in a state file, whose keys are sorted). Then, in a state
//! file, the one page of `value` that holds the row found (by the offset
//! index) is decoded; in a changelog file that row alone is read (`key`,
//! `value`, `op`: the reader skips to it inside its pages).
//!
//! # The cache
//!
//! One `moka` cache under a byte budget ([`LookupSettings::cache_bytes`])
//! holds parsed log entries (manifests and state versions), Parquet footers
//! (metadata with the page indexes), parsed bloom filters, deletion vectors,
//! decoded pages of `key` and of state files' `value` (so a repeated
//! lookup in a page searches memory) and the byte ranges of the changelog
//! rows recently read. Each entry's
//! weight is its size in bytes (approximate for parsed structures).
//!
//! Keys are chosen so that a changed object is never served stale:
//!
//! - A log entry is keyed on its path plus the size, `e_tag` and
//!   `last_modified` the LIST that found it returned. Entries are written
//!   create-only and never rewritten, but a table root that is wiped and
//!   written again reuses the names; any rewrite changes the `e_tag` (and on
//!   stores without one, the modification time).
//! - A data file's footer, bloom filters, decoded pages and byte ranges,
//!   and a deletion vector, are keyed on the file's path plus the size and
//!   crc32c that the log entry records. Data files are immutable and their names carry a
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

mod cache;
mod scan;
mod select;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::builder::BinaryBuilder;
use arrow_array::{Array, BinaryArray, RecordBatch};
use futures::TryStreamExt;
use object_store::ObjectMeta;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::PageIndexPolicy;
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

use self::cache::{weigh, CacheKey, CacheValue, CachedReader, FileId};
use self::select::{key_pages, page_of_row, Page};
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
    /// Row groups whose `key` pages were searched.
    pub row_groups_read: u64,
    /// Pages of `key` and of a state file's `value` decoded (cache misses;
    /// the cache holds them decoded).
    pub pages_decoded: u64,
    /// Pages served decoded from the cache.
    pub page_hits: u64,
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
    pages_decoded: AtomicU64,
    page_hits: AtomicU64,
    ranges_fetched: AtomicU64,
    range_hits: AtomicU64,
    bytes_fetched: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
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
            pages_decoded: get(&c.pages_decoded),
            page_hits: get(&c.page_hits),
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

    /// The index of `file`'s `key` column (a file without one is corrupt).
    fn key_column(
        &self,
        file: &DataFile,
        metadata: &ArrowReaderMetadata,
    ) -> Result<usize, CheckpointError> {
        let schema = metadata.parquet_schema();
        (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == "key")
            .ok_or_else(|| self.corrupt(file, "no column `key`".into()))
    }

    /// The bloom filter on `key` of row group `rg`, from the cache or the
    /// store (`None`: the file has none).
    async fn bloom(
        &self,
        f: &Opened<'_>,
        rg: usize,
        column: usize,
    ) -> Result<Option<Arc<Sbbf>>, CheckpointError> {
        let key = CacheKey::Bloom(Arc::clone(&f.id), rg);
        if let Some(CacheValue::Bloom(b, _)) = self.cache.get(&key).await {
            bump(&self.counters.bloom_hits, 1);
            return Ok(b);
        }
        bump(&self.counters.blooms_loaded, 1);
        let length = f
            .metadata
            .metadata()
            .row_group(rg)
            .column(column)
            .bloom_filter_length()
            .unwrap_or(0);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(&f.id, false),
            f.metadata.clone(),
        );
        let bloom = builder
            .get_row_group_column_bloom_filter(rg, column)
            .await
            .map_err(|e| read_error(&self.store, &f.file.path, e))?
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
        let f = Opened { file, id, metadata };
        let parquet = f.metadata.metadata();
        let column = self.key_column(file, &f.metadata)?;
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
            if let Some(bloom) = self.bloom(&f, rg, column).await? {
                if !bloom.check(key) {
                    bump(&self.counters.row_groups_pruned_by_bloom, 1);
                    continue;
                }
            }
            candidates.push(rg);
        }
        // In a changelog file the last operation wins: newest row group
        // first, and in it the newest page first.
        let changelog = matches!(rows, Rows::Changelog);
        if changelog {
            candidates.reverse();
        }
        for rg in candidates {
            let mut pages = key_pages(parquet, rg, column, key);
            if pages.is_empty() {
                bump(&self.counters.row_groups_pruned_by_pages, 1);
                continue;
            }
            bump(&self.counters.row_groups_read, 1);
            if changelog {
                pages.reverse();
            }
            for page in pages {
                let keys = self.page(&f, rg, "key", &page).await?;
                // A changelog's other operations (commits, markers) have no
                // key; every row of a state file has one.
                if !changelog && keys.null_count() > 0 {
                    return Err(self.corrupt(file, format!("row group {rg}: a null key")));
                }
                let Some(at) = find_key(&keys, key, changelog) else {
                    continue;
                };
                let row = page.rows.start + at;
                let found = if changelog {
                    self.changelog_row(&f, rg, row, key).await?
                } else {
                    Found::Put(self.state_value(&f, rg, row).await?)
                };
                let before: i64 = (0..rg).map(|g| parquet.row_group(g).num_rows()).sum();
                let row = u64::try_from(before).unwrap_or(0) + row as u64;
                return match rows {
                    Rows::State(Some(dv)) if self.vector(dv).await?.contains(row) => Ok(None),
                    _ => Ok(Some(found)),
                };
            }
        }
        Ok(None)
    }

    /// The value of row `row` of row group `rg` of a state file, from the
    /// decoded page of `value` that holds it.
    async fn state_value(
        &self,
        f: &Opened<'_>,
        rg: usize,
        row: usize,
    ) -> Result<Vec<u8>, CheckpointError> {
        let parquet = f.metadata.metadata();
        let schema = f.metadata.parquet_schema();
        let column = (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == "value")
            .ok_or_else(|| self.corrupt(f.file, "no column `value`".into()))?;
        let page = page_of_row(parquet, rg, column, row);
        let values = self.page(f, rg, "value", &page).await?;
        if values.null_count() > 0 {
            return Err(self.corrupt(f.file, format!("row group {rg}: a null value")));
        }
        Ok(values.value(row - page.rows.start).to_vec())
    }

    /// The operation on `key` in row `row` of row group `rg` of a changelog
    /// file, read alone (its `key`, `value` and `op`) from the pages that
    /// hold it, through the range cache, and decoded like recovery decodes
    /// it ([`ChangelogRows`]).
    async fn changelog_row(
        &self,
        f: &Opened<'_>,
        rg: usize,
        row: usize,
        key: &[u8],
    ) -> Result<Found, CheckpointError> {
        let corrupt = |reason: String| self.corrupt(f.file, reason);
        let columns = ["key", "value", "op"];
        let batches = self.read_rows(f, rg, row..row + 1, &columns, true).await?;
        let [batch] = batches.as_slice() else {
            return Err(corrupt(format!(
                "row group {rg} has no row {row} (its page index says it has)"
            )));
        };
        let rows = ChangelogRows::of(batch).map_err(corrupt)?;
        match rows.change(0, row as u64).map_err(corrupt)? {
            Change::Put(k, value) if k == key => Ok(Found::Put(value.to_vec())),
            Change::Delete(k) if k == key => Ok(Found::Deleted),
            _ => Err(corrupt(format!(
                "row {row} of row group {rg}: its page of `key` holds the key, its operation \
                 is not a put or delete of it"
            ))),
        }
    }

    /// The decoded values of `page` of row group `rg`'s binary column
    /// `column` (`key` or `value`), from the cache or the store. The raw
    /// page is not cached: its decoded values are, so a lookup in a page
    /// read before searches memory.
    async fn page(
        &self,
        f: &Opened<'_>,
        rg: usize,
        column: &'static str,
        page: &Page,
    ) -> Result<BinaryArray, CheckpointError> {
        let cache_key = CacheKey::Page(Arc::clone(&f.id), rg, column, page.page);
        if let Some(CacheValue::Page(values)) = self.cache.get(&cache_key).await {
            bump(&self.counters.page_hits, 1);
            return Ok(values);
        }
        bump(&self.counters.pages_decoded, 1);
        let batches = self
            .read_rows(f, rg, page.rows.clone(), &[column], false)
            .await?;
        let mut parts = Vec::with_capacity(batches.len());
        for batch in &batches {
            parts.push(binary_column(batch, column).map_err(|e| self.corrupt(f.file, e))?);
        }
        let values = if let [one] = parts.as_slice() {
            (*one).clone()
        } else {
            let mut joined = BinaryBuilder::new();
            for part in &parts {
                for v in *part {
                    joined.append_option(v);
                }
            }
            joined.finish()
        };
        if values.len() != page.rows.len() {
            return Err(self.corrupt(
                f.file,
                format!(
                    "row group {rg}: a page of `{column}` holds {} rows, its index says {}",
                    values.len(),
                    page.rows.len()
                ),
            ));
        }
        self.cache
            .insert(cache_key, CacheValue::Page(values.clone()))
            .await;
        Ok(values)
    }

    /// The `columns` of `rows` of row group `rg`, in batches.
    async fn read_rows(
        &self,
        f: &Opened<'_>,
        rg: usize,
        rows: Range<usize>,
        columns: &[&str],
        cache_ranges: bool,
    ) -> Result<Vec<RecordBatch>, CheckpointError> {
        let parquet = f.metadata.metadata();
        let rg_rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
        let wanted = rows.len().max(1);
        let selection = RowSelection::from_consecutive_ranges(std::iter::once(rows), rg_rows);
        let mask = ProjectionMask::columns(f.metadata.parquet_schema(), columns.iter().copied());
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.reader(&f.id, cache_ranges),
            f.metadata.clone(),
        )
        .with_row_groups(vec![rg])
        .with_row_selection(selection)
        .with_projection(mask)
        .with_batch_size(wanted)
        .build()
        .map_err(|e| read_error(&self.store, &f.file.path, e))?;
        stream
            .try_collect()
            .await
            .map_err(|e| read_error(&self.store, &f.file.path, e))
    }
}

/// A data file being searched: its log entry's figures, its cache identity
/// and its footer.
struct Opened<'a> {
    file: &'a DataFile,
    id: Arc<FileId>,
    metadata: ArrowReaderMetadata,
}

/// The row of `keys` (one page of a file's `key` column) that holds `key`:
/// in a changelog page the last one (the last operation wins; rows of other
/// operations have no key); in a state
/// page, whose keys are sorted and distinct, by binary search.
fn find_key(keys: &BinaryArray, key: &[u8], changelog: bool) -> Option<usize> {
    if changelog {
        return (0..keys.len())
            .rev()
            .find(|&i| keys.is_valid(i) && keys.value(i) == key);
    }
    let (mut lo, mut hi) = (0, keys.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if keys.value(mid) < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo < keys.len() && keys.value(lo) == key).then_some(lo)
}
