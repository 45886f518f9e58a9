//! Merge-on-read of the `state` table: a checkpoint that is not a full
//! snapshot adds its changes as new files (the live puts, sorted by key) and
//! marks, in a deletion vector per older file, every row whose key it put or
//! deleted. The live rows of all files are then the state, one row per key.
//!
//! Each state file is sorted by key, and so are the touched keys (spilled
//! to a temporary file by the sort): one pass over a file's `key` column and
//! the touched keys finds its rows to mark. Every deletion vector
//! this checkpoint writes goes into one file,
//! `state/dv-<N, 20 digits>/deletion_vector_<uuid>.bin` (the folder is the
//! descriptor's prefix); a file whose rows are all marked leaves the table
//! instead.

use std::collections::HashMap;

use arrow_array::{Array, BinaryArray};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use roaring::RoaringTreemap;

use super::dv::{read_dv, DeletionVectorDescriptor, DvFileWriter, DvLocation};
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::manifest::{DataFile, StateDv, StateFile};
use crate::checkpoint::parquet::{open_parquet_columns, read_error};
use crate::checkpoint::state::TouchedKeys;
use crate::store::Store;

/// What [`mark_replaced`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marked {
    /// The files of the table after the marking (without the new files of
    /// the checkpoint), in the order of `live`.
    pub(crate) table: Vec<StateFile>,
    /// The deletion-vector file written, if any.
    pub(crate) dv_file: Option<DataFile>,
    /// Rows newly marked deleted.
    pub(crate) rows_newly_deleted: u64,
    /// Files that left the table because every row of theirs is deleted.
    pub(crate) files_dropped: usize,
}

/// Marks, in the files `live` of the state table, every row whose key is in
/// `touched`, for checkpoint `checkpoint`. Uploads the new deletion vectors
/// (not yet durable on a local store: the caller fsyncs `dv_file` with the
/// checkpoint's other files).
pub(crate) async fn mark_replaced(
    store: &Store,
    checkpoint: u64,
    live: &[StateFile],
    touched: &TouchedKeys,
) -> Result<Marked, CheckpointError> {
    let mut marked = Marked {
        table: Vec::with_capacity(live.len()),
        dv_file: None,
        rows_newly_deleted: 0,
        files_dropped: 0,
    };
    if touched.len() == 0 {
        marked.table = live.to_vec();
        return Ok(marked);
    }
    let mut writer = DvFileWriter::new();
    let mut existing: HashMap<String, Bytes> = HashMap::new();
    // Files whose deletion vector changes: their index in `marked.table`
    // and where their new vector is in the file being written.
    let mut changed: Vec<(usize, DvLocation)> = Vec::new();
    for file in live {
        let hits = rows_with_keys(store, &file.file, touched).await?;
        if hits.is_empty() {
            marked.table.push(file.clone());
            continue;
        }
        let mut rows = match &file.deletion_vector {
            Some(dv) => read_existing(store, dv, &mut existing).await?,
            None => RoaringTreemap::new(),
        };
        let before = rows.len();
        rows |= hits;
        marked.rows_newly_deleted += rows.len() - before;
        if rows.len() >= file.file.rows {
            marked.files_dropped += 1;
            continue;
        }
        let location = writer
            .add(&rows)
            .map_err(|e| corrupt(store, &file.file.path, format!("deletion vector: {e}")))?;
        changed.push((marked.table.len(), location));
        marked.table.push(file.clone());
    }
    if changed.is_empty() {
        return Ok(marked);
    }
    let uuid = uuid::Uuid::new_v4();
    let prefix = dv_prefix(checkpoint);
    let relative = format!("state/{prefix}/{}", super::dv::dv_file_name(uuid));
    let bytes = Bytes::from(writer.finish());
    let dv_file = DataFile {
        path: relative.clone(),
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(&bytes),
        rows: 0,
    };
    let path = store.path(&relative);
    store
        .retrying("put", &relative, || {
            store.object_store().put(&path, bytes.clone().into())
        })
        .await
        .map_err(|e| CheckpointError::store(store, "put", relative.clone(), e))?;
    for (index, location) in changed {
        let descriptor = DeletionVectorDescriptor::on_disk_with_prefix(&prefix, uuid, &location)
            .map_err(|e| corrupt(store, &relative, format!("deletion vector: {e}")))?;
        marked.table[index].deletion_vector = Some(StateDv {
            descriptor,
            file: dv_file.clone(),
        });
    }
    marked.dv_file = Some(dv_file);
    Ok(marked)
}

/// Row numbers of `file` whose key is in `touched` (both sorted by key).
async fn rows_with_keys(
    store: &Store,
    file: &DataFile,
    touched: &TouchedKeys,
) -> Result<RoaringTreemap, CheckpointError> {
    let mut stream = open_parquet_columns(store, file, Some(&["key"])).await?;
    let mut hits = RoaringTreemap::new();
    let mut row = 0_u64;
    let mut next = touched.reader()?;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| read_error(store, &file.path, e))?
    {
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| corrupt(store, &file.path, "column `key` is not binary".into()))?;
        for r in 0..keys.len() {
            if keys.is_null(r) {
                return Err(corrupt(store, &file.path, format!("row {row}: null key")));
            }
            let key = keys.value(r);
            loop {
                match next.current() {
                    None => return Ok(hits),
                    Some(t) if t < key => next.advance()?,
                    Some(t) => {
                        if t == key {
                            hits.insert(row);
                            next.advance()?;
                        }
                        break;
                    }
                }
            }
            row += 1;
        }
    }
    Ok(hits)
}

/// The rows a state file's current deletion vector marks (its file read
/// once per call and kept in `files`).
pub(crate) async fn read_existing(
    store: &Store,
    dv: &StateDv,
    files: &mut HashMap<String, Bytes>,
) -> Result<RoaringTreemap, CheckpointError> {
    let bytes = if let Some(b) = files.get(&dv.file.path) {
        b.clone()
    } else {
        let got = store
            .get_all(&store.path(&dv.file.path))
            .await
            .map_err(|e| CheckpointError::store(store, "get", &dv.file.path, e))?;
        files.insert(dv.file.path.clone(), got.clone());
        got
    };
    read_dv(&bytes, dv.descriptor.offset, dv.descriptor.size_in_bytes)
        .map_err(|e| corrupt(store, &dv.file.path, format!("deletion vector: {e}")))
}

/// The folder (descriptor prefix) of the deletion vectors checkpoint
/// `checkpoint` writes, under `state/`.
pub(crate) fn dv_prefix(checkpoint: u64) -> String {
    format!("dv-{checkpoint:020}")
}

fn corrupt(store: &Store, path: &str, reason: String) -> CheckpointError {
    CheckpointError::CorruptObject {
        store: store.name().to_owned(),
        path: path.to_owned(),
        reason,
    }
}
