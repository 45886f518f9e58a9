//! Reading Parquet files and objects back from the store: record batch
//! streams over range requests, the crc32c of a whole object, and the
//! errors of reading through the store.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{parquet_error, store_error};
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::manifest::DataFile;
use crate::store::Store;

/// Footer bytes fetched in the first read of a file (one request for most
/// footers).
pub(crate) const FOOTER_PREFETCH_BYTES: usize = 64 << 10;

/// Reads the footer (metadata, with the page indexes `options` asks for) of
/// a Parquet file of `size` bytes through `fetch`, whose first read takes
/// the last [`FOOTER_PREFETCH_BYTES`].
pub(crate) fn load_metadata<'a, F>(
    fetch: F,
    size: u64,
    options: Option<&'a ArrowReaderOptions>,
) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>>
where
    F: parquet::arrow::async_reader::MetadataFetch + Send + 'a,
{
    async move {
        let metadata = ParquetMetaDataReader::new()
            .with_arrow_reader_options(options)
            .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
            .load_and_finish(fetch, size)
            .await?;
        Ok(Arc::new(metadata))
    }
    .boxed()
}

/// An error from reading Parquet through the store: a store failure inside
/// the reader (unreachable store, 503, timeout) becomes a
/// [`CheckpointError::Store`] naming the store and the operation; anything
/// else is a decoding error naming the object.
pub(crate) fn read_error(store: &Store, path: &str, source: ParquetError) -> CheckpointError {
    match source {
        ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(e) => store_error(store.name(), "read", path, *e),
            Err(other) => parquet_error(path, ParquetError::External(other)),
        },
        other => parquet_error(path, other),
    }
}

/// An [`AsyncFileReader`] over one object of known size (parquet's own
/// `ParquetObjectReader` is deprecated in favour of implementing this).
#[derive(Debug, Clone)]
pub(crate) struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(external)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let size = self.size;
        load_metadata(self, size, options)
    }
}

/// A stream of the record batches of `file`, read with range requests (the
/// footer, then the column chunks of one row group at a time).
///
/// The object's size is checked against `file.size` first (a HEAD):
/// [`CheckpointError::CorruptObject`] naming the path if it differs.
pub(crate) async fn open_parquet_stream(
    store: &Store,
    file: &DataFile,
) -> Result<ParquetRecordBatchStream<StoreReader>, CheckpointError> {
    open_parquet_columns(store, file, None).await
}

/// [`open_parquet_stream`] of only the top-level columns `columns` (all
/// when `None`); a column the file lacks is
/// [`CheckpointError::CorruptObject`].
pub(crate) async fn open_parquet_columns(
    store: &Store,
    file: &DataFile,
    columns: Option<&[&str]>,
) -> Result<ParquetRecordBatchStream<StoreReader>, CheckpointError> {
    let path = store.path(&file.path);
    let meta = store
        .head(&path)
        .await
        .map_err(|e| CheckpointError::store(store, "head", &file.path, e))?;
    if meta.size != file.size {
        return Err(CheckpointError::CorruptObject {
            store: store.name().to_owned(),
            path: file.path.clone(),
            reason: format!(
                "object is {} bytes, the manifest says {}",
                meta.size, file.size
            ),
        });
    }
    let reader = StoreReader {
        store: Arc::clone(store.object_store()),
        path,
        size: file.size,
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| read_error(store, &file.path, e))?;
    let builder = match columns {
        None => builder,
        Some(names) => {
            let mut roots = Vec::with_capacity(names.len());
            for name in names {
                let index = builder.schema().index_of(name).map_err(|_| {
                    CheckpointError::CorruptObject {
                        store: store.name().to_owned(),
                        path: file.path.clone(),
                        reason: format!("no column `{name}`"),
                    }
                })?;
                roots.push(index);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder.with_projection(mask)
        }
    };
    builder
        .build()
        .map_err(|e| read_error(store, &file.path, e))
}

/// Size and crc32c of the object `relative`, streamed (never held whole).
pub(crate) async fn file_crc32c(
    store: &Store,
    relative: &str,
) -> Result<(u64, u32), CheckpointError> {
    // Ranges of 8 MiB, not the object's byte stream: a local store reads a
    // stream in 8 KiB chunks, each on a blocking thread of its own, so
    // verifying a large file would be mostly thread switches.
    const RANGE: u64 = 8 << 20;
    let path = store.path(relative);
    let size = store
        .head(&path)
        .await
        .map_err(|e| CheckpointError::store(store, "head", relative, e))?
        .size;
    let mut crc = 0_u32;
    let mut at = 0_u64;
    while at < size {
        let end = size.min(at + RANGE);
        let chunk = store
            .retrying("get", relative, || {
                store.object_store().get_range(&path, at..end)
            })
            .await
            .map_err(|e| CheckpointError::store(store, "get", relative, e))?;
        crc = crc32c::crc32c_append(crc, &chunk);
        at = end;
    }
    Ok((size, crc))
}
