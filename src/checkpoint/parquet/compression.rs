//! Adaptive compression: no zstd on columns whose bytes do not shrink
//! ([`CompressionMode::Adaptive`]). Each row group decides, from a sample of
//! its first batch, which top-level binary columns to store uncompressed.

use std::sync::Arc;

use arrow_array::{BinaryArray, LargeBinaryArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;

use super::writer_properties;
use crate::checkpoint::{CheckpointSettings, CompressionMode};

/// Bytes of a column compressed to decide whether it compresses.
const SAMPLE_BYTES: usize = 64 << 10;

/// A column is stored uncompressed when zstd saves less than
/// `1 / MIN_SAVING_DIVISOR` of its sample.
const MIN_SAVING_DIVISOR: usize = 8;

/// Whether zstd at `level` saves at least `1 / MIN_SAVING_DIVISOR` of
/// `sample` (an empty sample counts as compressible: nothing to decide on).
fn compresses(sample: &[u8], level: i32) -> bool {
    if sample.is_empty() {
        return true;
    }
    // A failure to compress the sample (never expected) keeps zstd on.
    zstd::bulk::compress(sample, level).map_or(true, |compressed| {
        compressed.len() <= sample.len() - sample.len() / MIN_SAVING_DIVISOR
    })
}

/// The first [`SAMPLE_BYTES`] of the values of a binary column (empty for
/// any other type).
fn binary_sample(column: &dyn arrow_array::Array) -> &[u8] {
    let values: &[u8] = if let Some(a) = column.as_any().downcast_ref::<BinaryArray>() {
        a.values().as_slice()
    } else if let Some(a) = column.as_any().downcast_ref::<LargeBinaryArray>() {
        a.values().as_slice()
    } else {
        &[]
    };
    &values[..values.len().min(SAMPLE_BYTES)]
}

/// The column-writer factories of one file, one per set of uncompressed
/// columns, made when a row group first needs that set.
///
/// Each row group decides afresh, from its first batch, which of the
/// candidate columns (top-level binary columns) to leave uncompressed; the
/// factory of that choice makes its column writers. The codec is recorded
/// per column chunk, so a file may mix them.
pub(super) struct Factories {
    settings: CheckpointSettings,
    schema: SchemaRef,
    /// (field index, column name) of the candidate columns; empty when
    /// compression is not adaptive.
    candidates: Vec<(usize, String)>,
    /// Factory per bit mask over `candidates` (bit set: uncompressed).
    made: Vec<(u32, ArrowRowGroupWriterFactory)>,
}

impl Factories {
    pub(super) fn new(
        settings: &CheckpointSettings,
        schema: SchemaRef,
        default: ArrowRowGroupWriterFactory,
    ) -> Self {
        let candidates = match settings.compression {
            CompressionMode::Adaptive => schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f.data_type(), DataType::Binary | DataType::LargeBinary))
                .map(|(i, f)| (i, f.name().clone()))
                .take(31)
                .collect(),
            CompressionMode::Always => Vec::new(),
        };
        Self {
            settings: settings.clone(),
            schema,
            candidates,
            made: vec![(0, default)],
        }
    }

    /// The column writers of row group `index`, whose first rows are `first`.
    pub(super) fn column_writers(
        &mut self,
        index: usize,
        first: &RecordBatch,
    ) -> Result<Vec<ArrowColumnWriter>, ParquetError> {
        let mut mask = 0_u32;
        for (bit, (field, _)) in self.candidates.iter().enumerate() {
            if !compresses(
                binary_sample(first.column(*field)),
                self.settings.zstd_level,
            ) {
                mask |= 1 << bit;
            }
        }
        if let Some((_, factory)) = self.made.iter().find(|(m, _)| *m == mask) {
            return factory.create_column_writers(index);
        }
        let uncompressed: Vec<&str> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, (_, name))| name.as_str())
            .collect();
        let properties = writer_properties(&self.settings, &uncompressed)?;
        // The factory takes the Parquet schema and the properties from a
        // file writer; this one writes to nowhere and is dropped.
        let writer =
            ArrowWriter::try_new(std::io::sink(), Arc::clone(&self.schema), Some(properties))?;
        let (_, factory) = writer.into_serialized_writer()?;
        let writers = factory.create_column_writers(index);
        self.made.push((mask, factory));
        writers
    }
}
