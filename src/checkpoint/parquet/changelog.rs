//! The changelog writer: a WAL merge becomes `changelog/epoch=<E>/` Parquet
//! files. The merge (synchronous file I/O) runs on a blocking thread that
//! builds Arrow batches straight from borrowed entries; the async side
//! encodes and uploads them through [`ParquetSink`]s.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, NullBufferBuilder, OffsetBufferBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType, FieldRef, Fields, SchemaRef};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{check_settings, ParquetSink};
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::manifest::DataFile;
use crate::checkpoint::schema::changelog_schema;
use crate::checkpoint::CheckpointSettings;
use crate::per_core_wal::{EntryRef, MergeStream, OpRef};
use crate::store::Store;

/// The changelog's data pages: the Parquet writer's default size, 1 MiB
/// (`CheckpointSettings::page_bytes` is the state table's). The changelog
/// is scanned (recovery, the state build, readers) far more than searched
/// (a lookup reads it only until the state table's build catches up), and
/// small pages compress repeating values worse: a pool of 64 values of 100
/// bytes took 2.4 MB in pages of 64 KiB against 0.45 MB in pages of 1 MiB
/// (200,000 rows).
const CHANGELOG_PAGE_BYTES: usize = 1 << 20;

/// A changelog batch is cut when its keys, values and sources pass this many
/// bytes (besides `row_group_rows` rows and epoch boundaries). This bounds the
/// memory of the batches in flight (the Parquet writer regroups batches into
/// row groups of `row_group_rows`, so small batches cost nothing there) and
/// keeps Arrow's 32-bit offsets far from overflow. 1 MiB: a batch is held by
/// the encoder and the channels at once, and larger batches raise the
/// checkpoint's peak memory without making it faster.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Batches queued between the merge (blocking) and the encoder (async).
const CHANNEL_BATCHES: usize = 2;

/// The Arrow columns of the changelog, appended to entry by entry from
/// borrowed [`EntryRef`]s (no owned entry per row).
pub(super) struct ChangelogColumns {
    schema: SchemaRef,
    element: FieldRef,
    pair_fields: Fields,
    wal_epoch: Int64Builder,
    core: Int32Builder,
    sequence: Int64Builder,
    ts: TimestampMicrosecondBuilder,
    timestamp_ns: Int64Builder,
    op: StringBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    list_offsets: OffsetBufferBuilder<i32>,
    list_valid: NullBufferBuilder,
    sources: StringBuilder,
    offsets: Int64Builder,
    watermark: Int64Builder,
    checkpoint_id: Int64Builder,
    pub(super) rows: usize,
    bytes: usize,
    /// Rows, key bytes and value bytes of the largest batch so far.
    capacity: (usize, usize, usize),
}

fn out_of_range(entry: &EntryRef<'_>, what: &str, value: u64) -> CheckpointError {
    CheckpointError::Arrow {
        context: format!(
            "converting the entry of core {} sequence {} to the changelog schema",
            entry.core_id, entry.sequence
        ),
        source: ArrowError::InvalidArgumentError(format!(
            "{what} {value} does not fit a signed 64-bit column (max {})",
            i64::MAX
        )),
    }
}

fn signed(entry: &EntryRef<'_>, what: &str, value: u64) -> Result<i64, CheckpointError> {
    i64::try_from(value).map_err(|_| out_of_range(entry, what, value))
}

fn arrow_error(context: &str, source: ArrowError) -> CheckpointError {
    CheckpointError::Arrow {
        context: context.to_owned(),
        source,
    }
}

impl ChangelogColumns {
    pub(super) fn new(schema: SchemaRef) -> Result<Self, CheckpointError> {
        let field = schema
            .field_with_name("commit_offsets")
            .map_err(|e| arrow_error("reading the changelog schema", e))?;
        let DataType::List(element) = field.data_type() else {
            return Err(arrow_error(
                "reading the changelog schema",
                ArrowError::SchemaError("commit_offsets is not a list".into()),
            ));
        };
        let DataType::Struct(pair_fields) = element.data_type() else {
            return Err(arrow_error(
                "reading the changelog schema",
                ArrowError::SchemaError("commit_offsets is not a list of structs".into()),
            ));
        };
        Ok(Self {
            element: Arc::clone(element),
            pair_fields: pair_fields.clone(),
            schema,
            wal_epoch: Int64Builder::new(),
            core: Int32Builder::new(),
            sequence: Int64Builder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            timestamp_ns: Int64Builder::new(),
            op: StringBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            list_offsets: OffsetBufferBuilder::new(1024),
            list_valid: NullBufferBuilder::new(1024),
            sources: StringBuilder::new(),
            offsets: Int64Builder::new(),
            watermark: Int64Builder::new(),
            checkpoint_id: Int64Builder::new(),
            rows: 0,
            bytes: 0,
            capacity: (0, 0, 0),
        })
    }

    /// Variable-length bytes `entry` adds (keys, values, sources).
    fn bytes_of(entry: &EntryRef<'_>) -> usize {
        match entry.operation {
            OpRef::Put { key, value } => key.len() + value.len(),
            OpRef::Delete { key } => key.len(),
            OpRef::Commit { offsets, .. } => offsets.iter().map(|(s, _)| s.len() + 8).sum(),
            OpRef::Checkpoint { .. } | OpRef::EpochBarrier { .. } => 0,
        }
    }

    pub(super) fn append(&mut self, entry: &EntryRef<'_>) -> Result<(), CheckpointError> {
        // Convert first, so a refused entry leaves the columns untouched.
        let wal_epoch = signed(entry, "epoch", entry.epoch)?;
        let sequence = signed(entry, "sequence", entry.sequence)?;
        let mut commit = None;
        let mut checkpoint_id = None;
        let (op, key, value) = match entry.operation {
            OpRef::Put { key, value } => ("put", Some(key), Some(value)),
            OpRef::Delete { key } => ("delete", Some(key), None),
            OpRef::Commit { offsets, watermark } => {
                for (source, offset) in offsets {
                    signed(entry, &format!("offset of source {source:?}"), offset)?;
                }
                commit = Some((offsets, watermark));
                ("commit", None, None)
            }
            OpRef::Checkpoint { id } => {
                checkpoint_id = Some(signed(entry, "checkpoint id", id)?);
                ("checkpoint", None, None)
            }
            OpRef::EpochBarrier { .. } => ("epoch_barrier", None, None),
        };
        self.wal_epoch.append_value(wal_epoch);
        self.core.append_value(i32::from(entry.core_id));
        self.sequence.append_value(sequence);
        self.ts.append_value(entry.timestamp_ns.div_euclid(1000));
        self.timestamp_ns.append_value(entry.timestamp_ns);
        self.op.append_value(op);
        self.key.append_option(key);
        self.value.append_option(value);
        if let Some((offsets, watermark)) = commit {
            for (source, offset) in offsets {
                self.sources.append_value(source);
                // Checked above: every offset fits.
                self.offsets
                    .append_value(i64::try_from(offset).unwrap_or(i64::MAX));
            }
            self.list_offsets.push_length(offsets.len());
            self.list_valid.append_non_null();
            self.watermark.append_option(watermark);
        } else {
            self.list_offsets.push_length(0);
            self.list_valid.append_null();
            self.watermark.append_null();
        }
        self.checkpoint_id.append_option(checkpoint_id);
        self.rows += 1;
        self.bytes += Self::bytes_of(entry);
        Ok(())
    }

    /// The rows appended so far as one batch; the columns start empty again.
    ///
    /// The builders of the next batch start with the capacities this one
    /// needed, so they do not grow by reallocation, copying and page faults
    /// batch after batch.
    pub(super) fn finish(&mut self) -> Result<RecordBatch, CheckpointError> {
        let context = "building a changelog batch";
        // The largest batch so far: a short batch (an epoch's last) does
        // not shrink the next one's builders.
        let (rows, key_bytes, value_bytes) = (
            self.rows.max(self.capacity.0),
            self.key.values_slice().len().max(self.capacity.1),
            self.value.values_slice().len().max(self.capacity.2),
        );
        self.capacity = (rows, key_bytes, value_bytes);
        let pairs = StructArray::try_new(
            self.pair_fields.clone(),
            vec![
                Arc::new(self.sources.finish()) as ArrayRef,
                Arc::new(self.offsets.finish()),
            ],
            None,
        )
        .map_err(|e| arrow_error(context, e))?;
        let list_offsets = std::mem::replace(&mut self.list_offsets, OffsetBufferBuilder::new(0));
        let commit_offsets = ListArray::try_new(
            Arc::clone(&self.element),
            list_offsets.finish(),
            Arc::new(pairs),
            self.list_valid.finish(),
        )
        .map_err(|e| arrow_error(context, e))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.wal_epoch.finish()),
            Arc::new(self.core.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.timestamp_ns.finish()),
            Arc::new(self.op.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(commit_offsets),
            Arc::new(self.watermark.finish()),
            Arc::new(self.checkpoint_id.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        self.wal_epoch = Int64Builder::with_capacity(rows);
        self.core = Int32Builder::with_capacity(rows);
        self.sequence = Int64Builder::with_capacity(rows);
        self.ts = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        self.timestamp_ns = Int64Builder::with_capacity(rows);
        self.op = StringBuilder::with_capacity(rows, rows * 3);
        self.key = BinaryBuilder::with_capacity(rows, key_bytes);
        self.value = BinaryBuilder::with_capacity(rows, value_bytes);
        self.list_offsets = OffsetBufferBuilder::new(rows);
        self.list_valid = NullBufferBuilder::new(rows);
        self.watermark = Int64Builder::with_capacity(rows);
        self.checkpoint_id = Int64Builder::with_capacity(rows);
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| arrow_error(context, e))
    }
}

// ---------------------------------------------------------------------------
// write_changelog

/// What [`write_changelog`] wrote and what the entries it read say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChangelogSummary {
    /// The files written, in order (by epoch, then as they were rolled).
    pub(crate) files: Vec<DataFile>,
    /// Entries written (rows of all files).
    pub(crate) entries: u64,
    /// Puts among them.
    pub(crate) puts: u64,
    /// Deletes among them.
    pub(crate) deletes: u64,
    /// Bytes of WAL segments the merge read ([`MergeStream::bytes_read`] at
    /// the end).
    pub(crate) wal_bytes: u64,
    /// Per core (`num_cores` long): the highest sequence number written.
    pub(crate) last_sequence: Vec<Option<u64>>,
    /// Latest offset per source from `Commit` entries, in merge order.
    pub(crate) source_offsets: BTreeMap<String, u64>,
    /// Latest watermark from `Commit` entries that carry one.
    pub(crate) watermark: Option<i64>,
    /// Lowest and highest epoch of the entries (`None`: no entries).
    pub(crate) epochs: Option<(u64, u64)>,
}

impl ChangelogSummary {
    fn new(num_cores: usize) -> Self {
        Self {
            last_sequence: vec![None; num_cores],
            ..Self::default()
        }
    }

    fn record(&mut self, entry: &EntryRef<'_>) -> Result<(), CheckpointError> {
        let num_cores = self.last_sequence.len();
        let Some(last) = self.last_sequence.get_mut(usize::from(entry.core_id)) else {
            return Err(CheckpointError::InvalidSetting {
                field: "num_cores",
                reason: format!(
                    "the WAL holds entries of core {} but num_cores is {num_cores}",
                    entry.core_id
                ),
            });
        };
        *last = Some(last.map_or(entry.sequence, |s| s.max(entry.sequence)));
        self.entries += 1;
        match entry.operation {
            OpRef::Put { .. } => self.puts += 1,
            OpRef::Delete { .. } => self.deletes += 1,
            OpRef::Commit { offsets, watermark } => {
                for (source, offset) in offsets {
                    if let Some(slot) = self.source_offsets.get_mut(source) {
                        *slot = offset;
                    } else {
                        self.source_offsets.insert(source.to_owned(), offset);
                    }
                }
                if watermark.is_some() {
                    self.watermark = watermark;
                }
            }
            OpRef::Checkpoint { .. } | OpRef::EpochBarrier { .. } => {}
        }
        self.epochs = Some(match self.epochs {
            None => (entry.epoch, entry.epoch),
            Some((lo, hi)) => (lo.min(entry.epoch), hi.max(entry.epoch)),
        });
        Ok(())
    }
}

/// A batch of the changelog, all of one epoch.
struct EpochBatch {
    epoch: u64,
    batch: RecordBatch,
}

/// A copy of the changelog's batches for another consumer (the state
/// snapshot built in the same checkpoint), in merge order. `Done` follows
/// the last batch only when the merge read every entry; a channel that
/// closes without it means the changelog failed.
#[derive(Debug)]
pub(crate) enum ChangelogBatch {
    /// The next batch of changelog rows (the same rows the file holds).
    Batch(RecordBatch),
    /// The merge is complete: every batch was sent.
    Done,
}

/// Sends a batch to `tee`, if any.
fn send_tee(
    tee: Option<&mpsc::Sender<ChangelogBatch>>,
    message: ChangelogBatch,
) -> Result<(), CheckpointError> {
    match tee {
        Some(tee) => tee
            .blocking_send(message)
            .map_err(|_| CheckpointError::Task("the snapshot builder stopped".into())),
        None => Ok(()),
    }
}

/// The error of a merge stopped because the writer side went away (its own
/// error is the one returned).
fn stopped() -> CheckpointError {
    CheckpointError::Task("the changelog writer stopped".into())
}

/// Sends the rows `columns` holds (all of `epoch`) as one batch, to the
/// writer and the tee.
fn send_batch(
    columns: &mut ChangelogColumns,
    epoch: u64,
    tx: &mpsc::Sender<EpochBatch>,
    tee: Option<&mpsc::Sender<ChangelogBatch>>,
) -> Result<(), CheckpointError> {
    let batch = columns.finish()?;
    send_tee(tee, ChangelogBatch::Batch(batch.clone()))?;
    tx.blocking_send(EpochBatch { epoch, batch })
        .map_err(|_| stopped())
}

/// The blocking half: reads the merge, builds batches of at most `rows` rows
/// (and [`MAX_BATCH_BYTES`]) that never span two epochs, and sends them.
/// Stops as soon as the channel is closed.
fn merge_into_batches(
    mut stream: MergeStream,
    num_cores: usize,
    rows: usize,
    tx: &mpsc::Sender<EpochBatch>,
    tee: Option<&mpsc::Sender<ChangelogBatch>>,
) -> Result<ChangelogSummary, CheckpointError> {
    let mut summary = ChangelogSummary::new(num_cores);
    let mut columns = ChangelogColumns::new(changelog_schema())?;
    let mut batch_epoch = 0;
    while let Some(next) = stream.next_ref() {
        let entry = next?;
        if columns.rows > 0
            && (entry.epoch != batch_epoch
                || columns.rows >= rows
                || columns.bytes + ChangelogColumns::bytes_of(&entry) > MAX_BATCH_BYTES)
        {
            send_batch(&mut columns, batch_epoch, tx, tee)?;
        }
        summary.record(&entry)?;
        columns.append(&entry)?;
        batch_epoch = entry.epoch;
    }
    if columns.rows > 0 {
        send_batch(&mut columns, batch_epoch, tx, tee)?;
    }
    send_tee(tee, ChangelogBatch::Done)?;
    summary.wal_bytes = stream.bytes_read();
    Ok(summary)
}

/// Path of changelog file `n` of `checkpoint` in `epoch`.
fn changelog_path(epoch: u64, checkpoint: u64, n: u32) -> String {
    format!(
        "changelog/epoch={epoch}/part-{checkpoint:020}-{n:04}-{}.parquet",
        uuid::Uuid::new_v4().simple()
    )
}

/// fsyncs of the files already closed (local store only), started as each
/// file closes so the disk writes it back while the next one is encoded,
/// instead of all at once after the last. The checkpoint still makes every
/// file durable before its manifest; these make that step short.
struct EarlySyncs {
    store: Store,
    tasks: JoinSet<(String, std::io::Result<()>)>,
}

impl EarlySyncs {
    fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts the fsync of `file` (nothing for a remote store).
    fn start(&mut self, file: &DataFile) {
        if self.store.local_dir().is_none() {
            return;
        }
        let (store, path) = (self.store.clone(), file.path.clone());
        self.tasks.spawn(async move {
            let result = store.make_durable(std::slice::from_ref(&path)).await;
            (path, result)
        });
    }

    /// Waits for every fsync started; the first failure names its file.
    async fn finish(mut self) -> Result<(), CheckpointError> {
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((path, Err(source))) => {
                    return Err(CheckpointError::Io {
                        op: "fsync changelog file",
                        path: self
                            .store
                            .local_dir()
                            .map_or_else(|| path.clone().into(), |dir| dir.join(&path)),
                        source,
                    })
                }
                Err(e) => return Err(CheckpointError::Task(format!("changelog fsync: {e}"))),
            }
        }
        Ok(())
    }
}

/// The async half: writes the batches, a new file per epoch and whenever the
/// current one passes `max_file_bytes`. On error the open file is aborted.
async fn write_batches(
    store: &Store,
    checkpoint: u64,
    rx: &mut mpsc::Receiver<EpochBatch>,
    settings: &CheckpointSettings,
    files: &mut Vec<DataFile>,
    open: &mut Option<(u64, ParquetSink)>,
    syncs: &mut EarlySyncs,
) -> Result<(), CheckpointError> {
    let mut n: u32 = 0;
    while let Some(EpochBatch { epoch, batch }) = rx.recv().await {
        let roll = match open.as_ref() {
            Some((e, sink)) => *e != epoch || sink.bytes_written() >= settings.max_file_bytes,
            None => true,
        };
        if roll {
            if let Some((_, sink)) = open.take() {
                let file = sink.finish().await?;
                syncs.start(&file);
                files.push(file);
            }
            let relative = changelog_path(epoch, checkpoint, n);
            n += 1;
            let changelog_settings = CheckpointSettings {
                page_bytes: CHANGELOG_PAGE_BYTES,
                ..settings.clone()
            };
            let sink =
                ParquetSink::create(store, relative, changelog_schema(), &changelog_settings)
                    .await?;
            *open = Some((epoch, sink));
        }
        if let Some((_, sink)) = open.as_mut() {
            sink.write(&batch).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
/// Writes every entry of `stream` to `changelog/epoch=<E>/part-<checkpoint,
/// 20 digits>-<n, 4 digits>-<uuid>.parquet` files, one or more per epoch, in
/// merge order.
///
/// The merge (synchronous file I/O) runs on a blocking thread and hands
/// batches of at most `row_group_rows` rows to the encoder through a channel
/// of [`CHANNEL_BATCHES`], so memory stays bounded. A new file starts on each
/// new epoch and when the current one passes `max_file_bytes`.
///
/// On `Ok`, every file listed exists on the store (not yet fsynced on a
/// local store: see [`Store::make_durable`]). On error (merge, encoding or
/// store), the open upload is aborted and the merge stopped; files finished
/// before remain as orphans for GC, and no manifest may reference them.
#[cfg(test)]
pub(crate) async fn write_changelog(
    store: &Store,
    checkpoint: u64,
    stream: MergeStream,
    num_cores: usize,
    settings: &CheckpointSettings,
) -> Result<ChangelogSummary, CheckpointError> {
    write_changelog_tee(store, checkpoint, stream, num_cores, settings, None).await
}

/// [`write_changelog`], also sending every batch to `tee` (then
/// [`ChangelogBatch::Done`] once the merge is complete), so that a state
/// snapshot can sort the rows while they are encoded instead of reading the
/// files back. A `tee` that stops receiving fails the changelog.
pub(crate) async fn write_changelog_tee(
    store: &Store,
    checkpoint: u64,
    stream: MergeStream,
    num_cores: usize,
    settings: &CheckpointSettings,
    tee: Option<mpsc::Sender<ChangelogBatch>>,
) -> Result<ChangelogSummary, CheckpointError> {
    check_settings(settings)?;
    let rows = settings.row_group_rows;
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let merge = tokio::task::spawn_blocking(move || {
        merge_into_batches(stream, num_cores, rows, &tx, tee.as_ref())
    });
    let mut files = Vec::new();
    let mut open = None;
    let mut syncs = EarlySyncs::new(store);
    let written = write_batches(
        store, checkpoint, &mut rx, settings, &mut files, &mut open, &mut syncs,
    )
    .await;
    // Closing the channel stops the merge at its next batch.
    drop(rx);
    let merged = merge
        .await
        .map_err(|e| CheckpointError::Task(format!("changelog merge task: {e}")))
        .and_then(|r| r);
    let result = match (written, merged) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(summary)) => Ok(summary),
    };
    match result {
        Ok(mut summary) => {
            if let Some((_, sink)) = open.take() {
                files.push(sink.finish().await?);
            }
            syncs.finish().await?;
            summary.files = files;
            Ok(summary)
        }
        Err(e) => {
            if let Some((_, sink)) = open.take() {
                sink.abort().await;
            }
            Err(e)
        }
    }
}
