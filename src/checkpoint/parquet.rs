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
//!
//! The writer's path: the settings are checked and turned into writer
//! properties (`properties.rs`), batches are encoded into row groups
//! (`encoder.rs`) and cut into parts that are uploaded as they fill
//! (`upload.rs`), all behind [`ParquetSink`]. The readers are in `read.rs`.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::errors::ParquetError;

use super::error::CheckpointError;
use super::manifest::DataFile;
use super::CheckpointSettings;
use crate::store::Store;

mod changelog;
mod compression;
mod encoder;
mod properties;
mod read;
mod upload;

use encoder::Encoder;
use properties::{check_settings, writer_properties};
use upload::{PartWriter, Upload};

#[cfg(test)]
pub(crate) use changelog::write_changelog;
pub(crate) use changelog::{write_changelog_tee, ChangelogBatch, ChangelogSummary};
pub(crate) use read::{
    file_crc32c, load_metadata, open_parquet_columns, open_parquet_stream, read_error,
};

/// Multipart parts uploading at once per file; with the part being filled,
/// an upload holds at most this many + 1 parts of `upload_part_bytes`.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 4;

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

#[cfg(test)]
mod tests;
