//! Parquet files on the object store: a streaming writer that uploads as it
//! encodes ([`ParquetSink`]), the changelog writer that turns a WAL merge into
//! `changelog/epoch=<E>/` files ([`write_changelog`], in `changelog.rs`), and readers
//! ([`open_parquet_stream`], [`file_crc32c`]).
//!
//! Memory is bounded: the Arrow side holds at most a few batches (a bounded
//! channel between the merge and the encoder), the encoder one row group in
//! progress, written straight into upload parts of `upload_part_bytes` (the
//! parts of the row group just closed wait for a slot among
//! [`MAX_PARTS_IN_FLIGHT`] parts on the wire). Nothing ever holds a whole
//! file.
//!
//! Files are written with zstd (by default not on a binary column whose
//! sample does not compress, decided per row group in `compression.rs`:
//! [`CompressionMode`](crate::checkpoint::CompressionMode)), page-level
//! statistics (so the column and offset indexes are written), a bloom
//! filter on `key`, row groups of
//! `row_group_rows` rows and the Arrow schema embedded.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutOptions, PutPayloadMut};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowLeafColumn};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use tokio::task::JoinSet;

use super::error::CheckpointError;
use super::manifest::DataFile;
use super::CheckpointSettings;
use crate::store::Store;

mod changelog;
mod compression;

use compression::Factories;

#[cfg(test)]
pub(crate) use changelog::write_changelog;
pub(crate) use changelog::{write_changelog_tee, ChangelogBatch, ChangelogSummary};

/// Multipart parts uploading at once per file; with the part being filled,
/// an upload holds at most this many + 1 parts of `upload_part_bytes`.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 4;

/// Footer bytes fetched in the first read of a file (one request for most
/// footers).
const FOOTER_PREFETCH_BYTES: usize = 64 << 10;

fn store_error(
    store: &str,
    op: &'static str,
    path: &str,
    source: object_store::Error,
) -> CheckpointError {
    CheckpointError::Store {
        store: store.to_owned(),
        op,
        path: path.to_owned(),
        source,
    }
}

fn parquet_error(path: &str, source: ParquetError) -> CheckpointError {
    CheckpointError::Parquet {
        path: path.to_owned(),
        source,
    }
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

fn check_settings(settings: &CheckpointSettings) -> Result<(), CheckpointError> {
    if settings.row_group_rows == 0 {
        return Err(CheckpointError::InvalidSetting {
            field: "row_group_rows",
            reason: "must be at least 1".into(),
        });
    }
    if settings.upload_part_bytes == 0 {
        return Err(CheckpointError::InvalidSetting {
            field: "upload_part_bytes",
            reason: "must be at least 1 (S3 needs 5 MiB)".into(),
        });
    }
    if let Err(e) = ZstdLevel::try_new(settings.zstd_level) {
        return Err(CheckpointError::InvalidSetting {
            field: "zstd_level",
            reason: e.to_string(),
        });
    }
    Ok(())
}

/// Integer columns that grow by small steps along the rows (the changelog
/// is in merge order: `timestamp_ns` increases, each core's `sequence` by 1).
const DELTA_COLUMNS: [&str; 3] = ["sequence", "ts", "timestamp_ns"];

/// The writer properties of every data file; the columns named in
/// `uncompressed` are stored without compression.
fn writer_properties(
    settings: &CheckpointSettings,
    uncompressed: &[&str],
) -> Result<WriterProperties, ParquetError> {
    // Dictionaries only where values repeat (op, epoch, core, state's
    // last_epoch): for near-unique columns (keys, values, sequences,
    // timestamps) the writer would build a dictionary and abandon it, which
    // the profile put at 10-17 % of a checkpoint.
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(settings.zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows))
        .set_column_bloom_filter_enabled(ColumnPath::from("key"), true)
        .set_dictionary_enabled(false);
    for column in ["op", "wal_epoch", "core", "last_epoch"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), true);
    }
    // Small steps between rows: DELTA_BINARY_PACKED stores each page as a
    // first value and bit-packed differences instead of 8 bytes a row; a
    // standard encoding that Spark, pyarrow, DuckDB and DataFusion read.
    for column in DELTA_COLUMNS {
        builder =
            builder.set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    for column in uncompressed {
        builder =
            builder.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
    }
    Ok(builder.build())
}

// ---------------------------------------------------------------------------
// Upload: the parts of one object on their way to the object store.

/// The bytes of one object on their way to the store: a single PUT if the
/// whole file fits in one part, otherwise a multipart upload of parts of
/// exactly `part_bytes` (the last one shorter). Counts the bytes and their
/// crc32c: each part's crc32c is computed by its upload task, off the
/// encoder's thread, and the parts' are combined in order at the end.
///
/// The first store error is kept (parquet's writer only sees a message) so
/// the sink reports it as [`CheckpointError::Store`].
struct Upload {
    store: Store,
    /// The object's path under the table root.
    relative: String,
    path: Path,
    part_bytes: usize,
    buffer: PutPayloadMut,
    multipart: Option<Box<dyn MultipartUpload>>,
    /// Uploads in flight; each returns its part number, crc32c and length.
    parts: JoinSet<object_store::Result<(usize, u32, usize)>>,
    /// Per part sent (by number): its crc32c and length, once uploaded.
    part_crcs: Vec<Option<(u32, usize)>>,
    /// A second handle on each whole part sent: once the store has dropped
    /// its own, the part's buffer is unique again and goes back to the
    /// [`PartWriter`] ([`Upload::returned_buffers`]).
    sent: Vec<Bytes>,
    size: u64,
    crc: u32,
    failure: Option<(&'static str, object_store::Error)>,
}

impl Upload {
    fn new(store: Store, relative: String, part_bytes: usize) -> Self {
        Self {
            path: store.path(&relative),
            store,
            relative,
            part_bytes,
            buffer: PutPayloadMut::new(),
            multipart: None,
            parts: JoinSet::new(),
            part_crcs: Vec::new(),
            sent: Vec::new(),
            size: 0,
            crc: 0,
            failure: None,
        }
    }

    /// Keeps the first store error; parquet gets a description.
    fn fail(&mut self, op: &'static str, source: object_store::Error) -> ParquetError {
        let message = format!("{op} of {} failed: {source}", self.path);
        if self.failure.is_none() {
            self.failure = Some((op, source));
        }
        ParquetError::General(message)
    }

    async fn append(&mut self, mut bytes: Bytes) -> Result<(), ParquetError> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = self.part_bytes - self.buffer.content_length();
            if bytes.len() < room {
                self.buffer.push(bytes);
                break;
            }
            let piece = bytes.split_to(room);
            if piece.len() == self.part_bytes {
                self.sent.push(piece.clone());
            }
            self.buffer.push(piece);
            let part = std::mem::take(&mut self.buffer);
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Starts the multipart upload if needed, waits until a slot among
    /// [`MAX_PARTS_IN_FLIGHT`] is free, and starts uploading `part`.
    async fn send_part(&mut self, part: PutPayloadMut) -> Result<(), ParquetError> {
        if self.multipart.is_none() {
            match self.store.put_multipart(&self.relative).await {
                Ok(upload) => self.multipart = Some(upload),
                Err(e) => return Err(self.fail("start multipart upload", e)),
            }
        }
        self.wait_for_parts(MAX_PARTS_IN_FLIGHT - 1).await?;
        if let Some(upload) = self.multipart.as_mut() {
            let payload = part.freeze();
            let bytes = payload.clone();
            let put = upload.put_part(payload);
            let number = self.part_crcs.len();
            self.part_crcs.push(None);
            self.parts.spawn(async move {
                let crc = bytes.iter().fold(0, |crc, b| crc32c::crc32c_append(crc, b));
                put.await.map(|()| (number, crc, bytes.content_length()))
            });
        }
        Ok(())
    }

    /// Waits until at most `in_flight` parts are still uploading.
    async fn wait_for_parts(&mut self, in_flight: usize) -> Result<(), ParquetError> {
        while self.parts.len() > in_flight {
            match self.parts.join_next().await {
                Some(Ok(Ok((number, crc, len)))) => {
                    if let Some(slot) = self.part_crcs.get_mut(number) {
                        *slot = Some((crc, len));
                    }
                }
                None => {}
                Some(Ok(Err(e))) => return Err(self.fail("upload part", e)),
                Some(Err(join)) => {
                    let e = object_store::Error::Generic {
                        store: "walhouse upload",
                        source: Box::new(join),
                    };
                    return Err(self.fail("upload part", e));
                }
            }
        }
        Ok(())
    }

    /// The buffers of sent parts the store no longer holds, emptied, with
    /// their capacity.
    fn returned_buffers(&mut self) -> Vec<Vec<u8>> {
        let mut returned = Vec::new();
        for part in std::mem::take(&mut self.sent) {
            match part.try_into_mut() {
                Ok(unique) => {
                    let mut buffer = Vec::from(unique);
                    buffer.clear();
                    returned.push(buffer);
                }
                Err(shared) => self.sent.push(shared),
            }
        }
        returned
    }

    /// Uploads what is buffered and completes the object.
    async fn finish_upload(&mut self) -> Result<(), ParquetError> {
        let rest = std::mem::take(&mut self.buffer);
        if self.multipart.is_none() {
            let payload = rest.freeze();
            self.crc = payload
                .iter()
                .fold(0, |crc, b| crc32c::crc32c_append(crc, b));
            return match self
                .store
                .object_store()
                .put_opts(&self.path, payload, PutOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(self.fail("put", e)),
            };
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        self.wait_for_parts(0).await?;
        let mut crc = 0;
        for (number, part) in self.part_crcs.iter().enumerate() {
            let Some((part_crc, len)) = *part else {
                return Err(ParquetError::General(format!(
                    "part {number} of {} has no checksum",
                    self.path
                )));
            };
            crc = if number == 0 {
                part_crc
            } else {
                crc32c::crc32c_combine(crc, part_crc, len)
            };
        }
        self.crc = crc;
        let Some(upload) = self.multipart.as_mut() else {
            return Ok(());
        };
        match upload.complete().await {
            Ok(_) => {
                self.multipart = None;
                Ok(())
            }
            Err(e) => Err(self.fail("complete multipart upload", e)),
        }
    }

    /// Cancels the parts in flight and aborts the multipart upload, so no
    /// object and (on stores that keep them) no parts are left. Best effort.
    async fn abort(&mut self) {
        self.parts.shutdown().await;
        self.part_crcs.clear();
        self.buffer = PutPayloadMut::new();
        self.sent.clear();
        if let Some(mut upload) = self.multipart.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(path = %self.path, error = %e, "cannot abort multipart upload");
            }
        }
    }
}

impl Drop for Upload {
    // A sink dropped mid-upload (its future cancelled) aborts its multipart
    // upload in the background rather than leaving parts behind.
    fn drop(&mut self) {
        if let Some(mut upload) = self.multipart.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// The synchronous side of an upload: the Parquet encoder writes into it,
/// and it cuts the bytes into parts of exactly `part_bytes`, each allocated
/// at its full size (no buffer growing by reallocation, no copy of a whole
/// row group). The async side takes the full parts after each write, and
/// gives back the buffers of parts the store is done with, so a file reuses
/// a few part buffers instead of allocating (and page-faulting) a fresh one
/// per part.
struct PartWriter {
    /// Size of each part.
    part_bytes: usize,
    /// The part being filled.
    current: Vec<u8>,
    /// Full parts not yet handed to the upload.
    full: Vec<Bytes>,
    /// Empty buffers of `part_bytes` capacity, to fill next (at most
    /// [`MAX_PARTS_IN_FLIGHT`] + 1: as many as can be in flight).
    spare: Vec<Vec<u8>>,
    /// Parts filled in a recycled buffer.
    reused: u64,
}

impl PartWriter {
    fn new(part_bytes: usize) -> Self {
        Self {
            part_bytes,
            current: Vec::new(),
            full: Vec::new(),
            spare: Vec::new(),
            reused: 0,
        }
    }

    /// Keeps `buffers` (empty) for the next parts.
    fn recycle(&mut self, buffers: Vec<Vec<u8>>) {
        for buffer in buffers {
            if buffer.capacity() >= self.part_bytes && self.spare.len() <= MAX_PARTS_IN_FLIGHT {
                self.spare.push(buffer);
            }
        }
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.capacity() == 0 {
                self.current = match self.spare.pop() {
                    Some(buffer) => {
                        self.reused += 1;
                        buffer
                    }
                    None => Vec::with_capacity(self.part_bytes),
                };
            }
            let n = (self.part_bytes - self.current.len()).min(rest.len());
            self.current.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.current.len() == self.part_bytes {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// ParquetSink

/// Batches whose buffers hold less than this are encoded on the calling
/// thread (spawning encoder threads would cost more than it saves).
const PARALLEL_ENCODE_MIN_BYTES: usize = 256 << 10;

/// The column writers of the row group in progress.
struct RowGroupInProgress {
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
}

/// The encoder of one file: the file writer (footer, row group metadata),
/// and the column writers of the row group in progress. Each batch's leaf
/// columns are encoded on up to [`encoder_threads`] threads at once (zstd
/// and statistics of one column do not depend on the others), so a file
/// uses more than one core; the row group is appended to the file in column
/// order once it has `row_group_rows` rows.
struct Encoder {
    file: SerializedFileWriter<PartWriter>,
    factories: Factories,
    schema: SchemaRef,
    row_group_rows: usize,
    in_progress: Option<RowGroupInProgress>,
    threads: usize,
}

/// Threads that encode the columns of one batch: the setting, or the cores
/// available when it is 0 (at least 1).
fn encoder_threads(settings: &CheckpointSettings) -> usize {
    match settings.encode_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    }
}

impl Encoder {
    fn new(
        sink: PartWriter,
        schema: SchemaRef,
        settings: &CheckpointSettings,
    ) -> Result<Self, ParquetError> {
        // ArrowWriter builds the Parquet schema and embeds the Arrow schema
        // in the footer's metadata; its parts are then driven directly.
        let writer = ArrowWriter::try_new(
            sink,
            Arc::clone(&schema),
            Some(writer_properties(settings, &[])?),
        )?;
        let (file, factory) = writer.into_serialized_writer()?;
        Ok(Self {
            file,
            factories: Factories::new(settings, Arc::clone(&schema), factory),
            schema,
            row_group_rows: settings.row_group_rows,
            in_progress: None,
            threads: encoder_threads(settings),
        })
    }

    /// Encodes `batch`, cutting row groups at `row_group_rows` rows.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let fields = self.schema.fields();
        if batch.num_columns() != fields.len()
            || fields
                .iter()
                .zip(batch.columns())
                .any(|(f, c)| f.data_type() != c.data_type())
        {
            return Err(ParquetError::ArrowError(format!(
                "the batch's schema {} does not match the file's {}",
                batch.schema(),
                self.schema
            )));
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let buffered = self.in_progress.as_ref().map_or(0, |g| g.rows);
            let take = (self.row_group_rows - buffered).min(batch.num_rows() - offset);
            let piece = batch.slice(offset, take);
            self.write_piece(&piece)?;
            offset += take;
            if self.in_progress.as_ref().map_or(0, |g| g.rows) >= self.row_group_rows {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Encodes `piece` (which fits the row group in progress) into its
    /// column writers, the leaf columns spread over the encoder threads.
    fn write_piece(&mut self, piece: &RecordBatch) -> Result<(), ParquetError> {
        if self.in_progress.is_none() {
            let index = self.file.flushed_row_groups().len();
            self.in_progress = Some(RowGroupInProgress {
                writers: self.factories.column_writers(index, piece)?,
                rows: 0,
            });
        }
        let Some(group) = self.in_progress.as_mut() else {
            return Ok(());
        };
        // (weight, writer, leaf): the weight is the column's buffer bytes
        // shared among its leaves, a proxy for the cost of encoding.
        let mut jobs = Vec::with_capacity(group.writers.len());
        let mut writers = group.writers.iter_mut();
        for (field, column) in self.schema.fields().iter().zip(piece.columns()) {
            let leaves = compute_leaves(field.as_ref(), column)?;
            let weight = column.get_buffer_memory_size() / leaves.len().max(1);
            for leaf in leaves {
                let writer = writers.next().ok_or_else(|| {
                    ParquetError::General("more leaf columns than column writers".into())
                })?;
                jobs.push((weight, writer, leaf));
            }
        }
        group.rows += piece.num_rows();
        let total: usize = jobs.iter().map(|(w, _, _)| w).sum();
        let threads = self.threads.min(jobs.len());
        if threads <= 1 || total < PARALLEL_ENCODE_MIN_BYTES {
            for (_, writer, leaf) in jobs {
                writer.write(&leaf)?;
            }
            return Ok(());
        }
        // Longest job first, each to the least loaded thread.
        jobs.sort_by_key(|(w, _, _)| std::cmp::Reverse(*w));
        let mut bins: Vec<(usize, Vec<(&mut ArrowColumnWriter, ArrowLeafColumn)>)> =
            (0..threads).map(|_| (0, Vec::new())).collect();
        for (weight, writer, leaf) in jobs {
            if let Some(bin) = bins.iter_mut().min_by_key(|(load, _)| *load) {
                bin.0 += weight;
                bin.1.push((writer, leaf));
            }
        }
        let encode = |bin: Vec<(&mut ArrowColumnWriter, ArrowLeafColumn)>| {
            bin.into_iter()
                .try_for_each(|(writer, leaf)| writer.write(&leaf))
        };
        let mut bins = bins.into_iter().map(|(_, bin)| bin);
        let local = bins.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let handles: Vec<_> = bins.map(|bin| scope.spawn(move || encode(bin))).collect();
            let mut result = encode(local);
            for handle in handles {
                let joined = handle.join().unwrap_or_else(|_| {
                    Err(ParquetError::General(
                        "a column encoder thread panicked".into(),
                    ))
                });
                result = result.and(joined);
            }
            result
        })
    }

    /// Closes the row group in progress and appends it to the file.
    fn flush(&mut self) -> Result<(), ParquetError> {
        let Some(group) = self.in_progress.take() else {
            return Ok(());
        };
        let chunks = group
            .writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<Result<Vec<_>, _>>()?;
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }

    /// Bytes written to the sink plus the estimated encoded size of the row
    /// group in progress.
    fn bytes_written(&self) -> u64 {
        let in_progress: usize = self.in_progress.as_ref().map_or(0, |g| {
            g.writers
                .iter()
                .map(ArrowColumnWriter::get_estimated_total_bytes)
                .sum()
        });
        (self.file.bytes_written() as u64).saturating_add(in_progress as u64)
    }

    /// Writes the last row group and the footer.
    fn finish(&mut self) -> Result<ParquetMetaData, ParquetError> {
        self.flush()?;
        self.file.finish()
    }
}

/// One Parquet file being written to the store: batches are encoded into row
/// groups and uploaded as each row group is done (multipart past one part).
///
/// Nothing is visible on the store until [`ParquetSink::finish`] returns
/// `Ok`. On any failure of `write` or `finish` the upload is aborted before
/// the error is returned, and the sink refuses further writes.
pub(crate) struct ParquetSink {
    store_name: String,
    relative: String,
    writer: Option<Encoder>,
    upload: Upload,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("store", &self.store_name)
            .field("path", &self.relative)
            .field("bytes_written", &self.bytes_written())
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Starts `relative` (a path under the table root) on `store`.
    ///
    /// Nothing is sent to the store yet; the first part (or the whole file,
    /// if it stays under `upload_part_bytes`) goes out as row groups fill.
    #[expect(
        clippy::unused_async,
        reason = "async so that a store round trip may be added without changing callers"
    )]
    pub(crate) async fn create(
        store: &Store,
        relative: String,
        schema: SchemaRef,
        settings: &CheckpointSettings,
    ) -> Result<Self, CheckpointError> {
        check_settings(settings)?;
        let upload = Upload::new(store.clone(), relative.clone(), settings.upload_part_bytes);
        let writer = Encoder::new(
            PartWriter::new(settings.upload_part_bytes),
            schema,
            settings,
        )
        .map_err(|e| parquet_error(&relative, e))?;
        Ok(Self {
            store_name: store.name().to_owned(),
            relative,
            writer: Some(writer),
            upload,
        })
    }

    /// Encodes `batch`; full parts of a finished row group are uploaded
    /// before this returns. Nothing is durable until [`ParquetSink::finish`].
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<(), CheckpointError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.failed_already());
        };
        if let Err(e) = writer.write(batch) {
            return Err(self.fail(e).await);
        }
        self.send_full_parts().await
    }

    /// Hands the encoder's full parts to the upload.
    async fn send_full_parts(&mut self) -> Result<(), CheckpointError> {
        let parts = match self.writer.as_mut() {
            Some(writer) => std::mem::take(&mut writer.file.inner_mut().full),
            None => return Err(self.failed_already()),
        };
        for part in parts {
            if let Err(e) = self.upload.append(part).await {
                return Err(self.fail(e).await);
            }
        }
        let returned = self.upload.returned_buffers();
        if let Some(writer) = self.writer.as_mut() {
            writer.file.inner_mut().recycle(returned);
        }
        Ok(())
    }

    /// Bytes handed to the store so far plus the estimated encoded size of
    /// the row group in progress (for rolling files at `max_file_bytes`).
    pub(crate) fn bytes_written(&self) -> u64 {
        self.writer.as_ref().map_or(0, Encoder::bytes_written)
    }

    /// Closes the file; the object exists on the store when this returns
    /// `Ok` (durable for remote stores; a local store needs
    /// [`Store::make_durable`]).
    pub(crate) async fn finish(mut self) -> Result<DataFile, CheckpointError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(self.failed_already());
        };
        let metadata = match writer.finish() {
            Ok(metadata) => metadata,
            Err(e) => return Err(self.fail(e).await),
        };
        self.send_full_parts().await?;
        let Some(mut writer) = self.writer.take() else {
            return Err(self.failed_already());
        };
        let rest = std::mem::take(&mut writer.file.inner_mut().current);
        drop(writer);
        let mut result = Ok(());
        if !rest.is_empty() {
            result = self.upload.append(Bytes::from(rest)).await;
        }
        if result.is_ok() {
            result = self.upload.finish_upload().await;
        }
        if let Err(e) = result {
            return Err(self.fail(e).await);
        }
        Ok(DataFile {
            path: std::mem::take(&mut self.relative),
            size: self.upload.size,
            crc32c: self.upload.crc,
            rows: u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0),
        })
    }

    /// Aborts the upload (best effort, for error paths): no object is left by
    /// a multipart upload, and a single PUT was never sent.
    pub(crate) async fn abort(mut self) {
        self.writer = None;
        self.upload.abort().await;
    }

    /// Aborts after `error` and turns it into the error to return: the
    /// store's own error if the upload failed, else the encoder's.
    async fn fail(&mut self, error: ParquetError) -> CheckpointError {
        self.writer = None;
        let failure = self.upload.failure.take();
        self.upload.abort().await;
        match failure {
            Some((op, source)) => store_error(&self.store_name, op, &self.relative, source),
            None => parquet_error(&self.relative, error),
        }
    }

    fn failed_already(&self) -> CheckpointError {
        parquet_error(
            &self.relative,
            ParquetError::General("the file was aborted after an earlier error".into()),
        )
    }
}

// ---------------------------------------------------------------------------
// Readers

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
        async move {
            let size = self.size;
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
    // stream in 8 KiB chunks, each on a blocking thread of its own, which
    // made verifying a 120 MB checkpoint mostly thread switches.
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

#[cfg(test)]
mod tests;
