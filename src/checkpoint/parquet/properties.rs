//! The writer's settings: their checks at the start of every file, and the
//! Parquet writer properties (compression, statistics, bloom filter,
//! dictionaries and encodings per column) every data file is written with.

use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::CheckpointSettings;

pub(super) fn check_settings(settings: &CheckpointSettings) -> Result<(), CheckpointError> {
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
    if settings.page_bytes == 0 {
        return Err(CheckpointError::InvalidSetting {
            field: "page_bytes",
            reason: "must be at least 1".into(),
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
pub(super) const DELTA_COLUMNS: [&str; 3] = ["sequence", "ts", "timestamp_ns"];

/// The writer checks a page's size after every this many rows of a
/// fixed-width column (its default is 1,024; binary columns are checked
/// as their values come).
const PAGE_CHECK_ROWS: usize = 256;

/// The writer properties of every data file; the columns named in
/// `uncompressed` are stored without compression.
pub(super) fn writer_properties(
    settings: &CheckpointSettings,
    uncompressed: &[&str],
) -> Result<WriterProperties, ParquetError> {
    // Dictionaries only where values repeat (op, epoch, core, state's
    // last_epoch): for near-unique columns (keys, values, sequences,
    // timestamps) the writer would build a dictionary only to abandon it:
    // costly work that saves nothing.
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(settings.zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows))
        .set_data_page_size_limit(settings.page_bytes)
        .set_write_batch_size(PAGE_CHECK_ROWS)
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
