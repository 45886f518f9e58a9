//! The lookup cache's keys and values, and the Parquet reader that serves
//! byte ranges from it.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, BinaryArray};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use roaring::RoaringTreemap;

use super::{bump, Counters};
use crate::checkpoint::manifest::{DataFile, Manifest, StateVersion};

/// Identity of a data file's content: path, size and crc32c from the
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    pub(super) path: String,
    pub(super) size: u64,
    crc32c: u32,
}

impl FileId {
    pub(super) fn of(file: &DataFile) -> Arc<Self> {
        Arc::new(Self {
            path: file.path.clone(),
            size: file.size,
            crc32c: file.crc32c,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CacheKey {
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
    /// The decoded values of one page of a binary column: file, row group,
    /// column, page number.
    Page(Arc<FileId>, usize, &'static str, usize),
    /// A deletion vector: its file and offset.
    Vector(Arc<FileId>, i32),
}

#[derive(Debug, Clone)]
pub(super) enum CacheValue {
    Manifest(Arc<Manifest>, u32),
    State(Arc<StateVersion>, u32),
    Vector(Arc<RoaringTreemap>, u32),
    Footer(ArrowReaderMetadata),
    Bloom(Option<Arc<Sbbf>>, u32),
    Range(Bytes),
    Page(BinaryArray),
}

pub(super) fn weigh(key: &CacheKey, value: &CacheValue) -> u32 {
    let key_bytes = match key {
        CacheKey::Entry { path, .. } => path.len(),
        CacheKey::Footer(f)
        | CacheKey::Bloom(f, _)
        | CacheKey::Range(f, _, _)
        | CacheKey::Page(f, _, _, _)
        | CacheKey::Vector(f, _) => f.path.len(),
    };
    let value_bytes = match value {
        CacheValue::Manifest(_, w)
        | CacheValue::State(_, w)
        | CacheValue::Vector(_, w)
        | CacheValue::Bloom(_, w) => *w as usize,
        CacheValue::Footer(m) => m.metadata().memory_size(),
        CacheValue::Range(b) => b.len(),
        CacheValue::Page(p) => p.get_array_memory_size(),
    };
    u32::try_from(64 + key_bytes + value_bytes).unwrap_or(u32::MAX)
}

/// An [`AsyncFileReader`] over one data file that serves byte ranges from
/// the cache when it may (`cache` set) and counts what it fetches.
pub(super) struct CachedReader {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) path: Path,
    pub(super) id: Arc<FileId>,
    pub(super) cache: Option<moka::future::Cache<CacheKey, CacheValue>>,
    pub(super) counters: Arc<Counters>,
}

pub(super) fn external(e: object_store::Error) -> ParquetError {
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
        let size = self.id.size;
        crate::checkpoint::parquet::load_metadata(self, size, options)
    }
}
