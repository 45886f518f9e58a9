//! The encoder of one Parquet file: batches become row groups, their leaf
//! columns encoded on several threads, and the bytes go into the
//! [`PartWriter`] that feeds the upload.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowLeafColumn};
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::writer::SerializedFileWriter;

use super::compression::Factories;
use super::upload::PartWriter;
use super::writer_properties;
use crate::checkpoint::CheckpointSettings;

/// Batches whose buffers hold less than this are encoded on the calling
/// thread (spawning encoder threads would cost more than it saves).
pub(super) const PARALLEL_ENCODE_MIN_BYTES: usize = 256 << 10;

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
pub(super) struct Encoder {
    pub(super) file: SerializedFileWriter<PartWriter>,
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
    pub(super) fn new(
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
    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
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
    pub(super) fn bytes_written(&self) -> u64 {
        let in_progress: usize = self.in_progress.as_ref().map_or(0, |g| {
            g.writers
                .iter()
                .map(ArrowColumnWriter::get_estimated_total_bytes)
                .sum()
        });
        (self.file.bytes_written() as u64).saturating_add(in_progress as u64)
    }

    /// Writes the last row group and the footer.
    pub(super) fn finish(&mut self) -> Result<ParquetMetaData, ParquetError> {
        self.flush()?;
        self.file.finish()
    }
}
