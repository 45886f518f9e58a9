//! delta-rs (deltalake-core 1.1, arrow/parquet 59, object_store 0.13, as
//! walhouse) as a peer of the `export` section: the same rows, from memory,
//! straight into a new Delta table with `RecordBatchWriter` and
//! `flush_and_commit` (one Parquet file, one commit), at the Parquet
//! settings of every peer's export (`sections::export_properties`).
//!
//! delta-rs writes through object_store 0.13's `LocalFileSystem`, which
//! does not fsync; walhouse's local store fsyncs each object and its
//! directories. So the timed export ends, after the commit, with a
//! `sync_all` of every file and directory of the table (the Parquet file,
//! the commit JSON, `_delta_log/`, the table directory and its parent):
//! the same fsyncs, after the fact instead of before each publish.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use deltalake_core::ensure_table_uri;
use deltalake_core::kernel::{DataType, PrimitiveType, StructField};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};

use crate::sections::{dir_bytes, export_properties, EXPORT_BATCH_ROWS};
use crate::workload::Workload;
use crate::Result;

/// Creates the table `dir/table` (key binary, value binary, not timed),
/// then writes rows `0..rows` into it and commits, fsyncs the table's
/// files and directories: (seconds of the write, commit and fsyncs, bytes
/// of the table directory).
pub async fn export(dir: &Path, work: &Workload, rows: usize) -> Result<(f64, u64)> {
    let path = dir.join("table");
    std::fs::create_dir_all(&path)?;
    let url = ensure_table_uri(path.to_str().ok_or("table path is not UTF-8")?)?;
    let mut table = CreateBuilder::new()
        .with_location(url.as_str())
        .with_table_name("export")
        .with_columns([
            StructField::new("key", DataType::Primitive(PrimitiveType::Binary), false),
            StructField::new("value", DataType::Primitive(PrimitiveType::Binary), false),
        ])
        .await?;
    sync_tree(&path)?;

    let t = Instant::now();
    let mut writer =
        RecordBatchWriter::for_table(&table)?.with_writer_properties(export_properties()?);
    let schema = writer.arrow_schema();
    let mut at = 0;
    while at < rows {
        let n = EXPORT_BATCH_ROWS.min(rows - at);
        let mut keys = BinaryBuilder::new();
        let mut values = BinaryBuilder::new();
        for i in at..at + n {
            keys.append_value(work.key(i));
            values.append_value(work.value(i));
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(keys.finish()), Arc::new(values.finish())];
        writer
            .write(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            .await?;
        at += n;
    }
    writer.flush_and_commit(&mut table).await?;
    sync_tree(&path)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((secs, dir_bytes(&path)?))
}

/// `sync_all` of every file and directory under `dir`, of `dir` and of its
/// parent (which holds `dir`'s entry).
fn sync_tree(dir: &Path) -> Result<()> {
    sync_below(dir)?;
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// `sync_all` of every file and directory under `dir`, then of `dir`.
fn sync_below(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_below(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}
