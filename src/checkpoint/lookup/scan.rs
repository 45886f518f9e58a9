//! Range scans of a checkpoint: the state version's rows in a range (its
//! deletion vectors applied) and the changelog after it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use arrow_array::Array;
use futures::TryStreamExt;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use roaring::RoaringTreemap;

use super::select::{in_range, overlaps};
use super::{CheckpointReader, FileId, Rows};
use crate::checkpoint::changelog_rows::{binary_column, Change, ChangelogRows};
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::manifest::{DataFile, Manifest};
use crate::checkpoint::parquet::read_error;

impl CheckpointReader {
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
        let column = self.key_column(file, &metadata)?;
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
}
