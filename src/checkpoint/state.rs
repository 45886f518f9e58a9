//! State snapshots: the latest value of every live key, as Parquet files of
//! the `state` table sorted by key (bytewise).
//!
//! A snapshot is built from the previous snapshot (the base, already sorted)
//! and the changelog files written since (the deltas, in commit order): the
//! last `put` or `delete` of a key wins, a `delete` removes the key, and
//! `last_epoch` is the `wal_epoch` of the winning `put`.
//!
//! ## Memory
//!
//! The deltas are not loaded whole: they go through an external merge sort
//! whose memory is bounded by `CheckpointSettings::sort_memory_bytes`, not by
//! the number of keys.
//!
//! 1. Delta rows stream in to one blocking worker through a bounded channel:
//!    the older changelog files as Parquet batches read on the async side,
//!    then the changelog of the checkpoint being written as the very batches
//!    its merge builds ([`build_snapshot_fed`]: those files are never read
//!    back). Each `put`/`delete` becomes an operation (key, order, value or
//!    none, epoch) in the sort's arena; `order` grows through the deltas, so
//!    a larger order is a newer operation.
//! 2. The budget holds two buffers. When the one being filled would pass its
//!    half, a background thread sorts it by (key, newest first), reduces it
//!    to the newest operation per key (deletes kept: they hide older values)
//!    and spills it as a sorted run to a local temporary file (see
//!    [`external_sort`] for the format), while the other buffer fills.
//! 3. If more runs exist than can be merged at once within the budget, they
//!    are merged in passes into fewer, longer runs.
//! 4. The remaining runs and the sorted last buffer (kept in memory when it
//!    fits beside the runs' read buffers) are merged k-way with the base
//!    snapshot stream: for each key
//!    the newest operation wins, deletes are dropped, and the rows go out in
//!    `RecordBatch`es of the state schema to Parquet files rolled at
//!    `max_file_bytes`.
//!
//! The sort holds at most `sort_memory_bytes` (buffer plus I/O buffers, as
//! accounted by [`external_sort`]); the Parquet writer's row-group buffer and
//! a few batches in flight come on top of it.
//!
//! Objects: `state/checkpoint=<N>/part-<n, 4 digits>-<uuid>.parquet`. No
//! object is referenced until a manifest lists it; on failure, the files this
//! build finished are deleted (best effort; garbage collection removes any
//! that remain).

use std::cmp::Ordering;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder};
use arrow_array::{Array, ArrayRef, BinaryArray, Int64Array, RecordBatch};
use arrow_schema::SchemaRef;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

mod external_sort;

use self::external_sort::{ExternalSorter, SortConfig, SortStats};
use super::changelog_rows::{binary_column, int64_column, Change, ChangelogRows};
use super::error::CheckpointError;
use super::manifest::DataFile;
use super::parquet::{open_parquet_stream, read_error, ChangelogBatch, ParquetSink};
use super::schema::state_schema;
use super::CheckpointSettings;
use crate::store::Store;

/// Batches in flight between the async side and the blocking worker, each way.
const CHANNEL_BATCHES: usize = 2;

/// An output batch is cut at `row_group_rows` rows or past this many bytes of
/// keys and values, whichever comes first (the Parquet writer regroups rows
/// into row groups anyway; this only bounds a batch in flight).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// What [`build_snapshot`] wrote.
#[derive(Debug)]
pub(crate) struct SnapshotSummary {
    /// The snapshot's files, in key order (file i's keys all precede file
    /// i+1's). Empty when no key is live.
    pub(crate) files: Vec<DataFile>,
    /// Live keys (rows over all files).
    pub(crate) keys: u64,
    /// Figures of the external sort (runs spilled, memory high-water mark).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "logged by the build, read by its tests")
    )]
    pub(crate) sort: SortStats,
    /// Every key the deltas put or deleted, in key order, when asked for
    /// ([`Build::Changes`]).
    pub(crate) touched: Option<TouchedKeys>,
}

/// What a state build writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// The full state: base and deltas merged.
    Snapshot,
    /// Only what the deltas changed (the base is empty): their live puts as
    /// files, and every key they touched in [`SnapshotSummary::touched`].
    Changes,
}

/// Keys in increasing order, spilled to an unnamed temporary file as they
/// come (a `u32` little-endian length, then the key), so that the keys a
/// checkpoint touched cost no memory however many they are: each older
/// state file is marked in one sequential pass over them.
#[derive(Debug)]
pub(crate) struct TouchedKeys {
    /// The file, being written (`None` once finished).
    writer: Option<BufWriter<std::fs::File>>,
    /// The file, finished (`None` before).
    file: Option<std::fs::File>,
    /// Where it lives, for errors.
    dir: std::path::PathBuf,
    /// Keys pushed.
    len: usize,
}

impl TouchedKeys {
    /// A new, empty file in `spill_dir` (the system's temporary directory
    /// when `None`).
    pub(crate) fn create(spill_dir: Option<&std::path::Path>) -> Result<Self, CheckpointError> {
        let dir = spill_dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let file = tempfile::tempfile_in(&dir).map_err(|source| CheckpointError::Io {
            op: "create the file of touched keys",
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            writer: Some(BufWriter::with_capacity(64 << 10, file)),
            file: None,
            dir,
            len: 0,
        })
    }

    /// An empty set that needs no file.
    pub(crate) fn empty() -> Self {
        Self {
            writer: None,
            file: None,
            dir: std::path::PathBuf::new(),
            len: 0,
        }
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            op,
            path: self.dir.clone(),
            source,
        }
    }

    /// Appends `key`, which must follow every key pushed before.
    pub(crate) fn push(&mut self, key: &[u8]) -> Result<(), CheckpointError> {
        let Some(w) = self.writer.as_mut() else {
            return Err(CheckpointError::Task(
                "touched keys pushed after finish".into(),
            ));
        };
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes();
        let written = w.write_all(&len).and_then(|()| w.write_all(key));
        written.map_err(|e| self.io("write touched keys", e))?;
        self.len += 1;
        Ok(())
    }

    /// Flushes the file: every key pushed can now be read.
    pub(crate) fn finish(&mut self) -> Result<(), CheckpointError> {
        if let Some(w) = self.writer.take() {
            let file = w
                .into_inner()
                .map_err(|e| self.io("write touched keys", e.into_error()))?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A reader from the first key (of a finished file).
    pub(crate) fn reader(&self) -> Result<TouchedReader, CheckpointError> {
        let mut reader = TouchedReader {
            input: None,
            key: Vec::new(),
            at_end: true,
            dir: self.dir.clone(),
        };
        if let Some(file) = &self.file {
            let mut file = file
                .try_clone()
                .map_err(|e| self.io("read touched keys", e))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| self.io("read touched keys", e))?;
            reader.input = Some(BufReader::with_capacity(64 << 10, file));
            reader.at_end = false;
            reader.advance()?;
        }
        Ok(reader)
    }
}

/// Reads [`TouchedKeys`] in order.
#[derive(Debug)]
pub(crate) struct TouchedReader {
    input: Option<BufReader<std::fs::File>>,
    key: Vec<u8>,
    at_end: bool,
    dir: std::path::PathBuf,
}

impl TouchedReader {
    /// The current key, `None` past the last.
    pub(crate) fn current(&self) -> Option<&[u8]> {
        (!self.at_end).then_some(self.key.as_slice())
    }

    /// Moves to the next key.
    pub(crate) fn advance(&mut self) -> Result<(), CheckpointError> {
        let Some(input) = self.input.as_mut() else {
            self.at_end = true;
            return Ok(());
        };
        let mut len = [0_u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.at_end = true;
                return Ok(());
            }
            Err(source) => {
                return Err(CheckpointError::Io {
                    op: "read touched keys",
                    path: self.dir.clone(),
                    source,
                })
            }
        }
        self.key.resize(u32::from_le_bytes(len) as usize, 0);
        input
            .read_exact(&mut self.key)
            .map_err(|source| CheckpointError::Io {
                op: "read touched keys",
                path: self.dir.clone(),
                source,
            })
    }
}

/// Builds the full snapshot of checkpoint `checkpoint` from the previous
/// snapshot `base` (files sorted by key, in key order: file i's keys all
/// precede file i+1's) and the changelog files `deltas` (in commit order;
/// each file's rows are in merge order).
///
/// Writes `state/checkpoint=<checkpoint>/part-<n, 4 digits>-<uuid>.parquet`,
/// rolled at `settings.max_file_bytes`, rows sorted by key (bytewise). On
/// return the files are uploaded (as durable as the store's PUT) but not
/// committed: nothing references them until a manifest lists them.
///
/// Memory is bounded by `settings.sort_memory_bytes` (spilling sorted runs
/// to local temporary files), not by the number of keys.
///
/// # Errors
///
/// A base file that is not sorted by key or has nulls, or a delta row that
/// breaks the changelog schema, is [`CheckpointError::CorruptObject`]; local
/// temporary files fail with [`CheckpointError::Io`]; reading and writing
/// objects fail with the store's and Parquet's errors. On error the files
/// this call finished are deleted (best effort).
pub(crate) async fn build_snapshot(
    store: &Store,
    checkpoint: u64,
    base: &[DataFile],
    deltas: &[DataFile],
    settings: &CheckpointSettings,
) -> Result<SnapshotSummary, CheckpointError> {
    build_snapshot_fed(
        store,
        checkpoint,
        base,
        deltas,
        None,
        settings,
        Build::Snapshot,
    )
    .await
}

/// [`build_snapshot`] where the newest delta is not a file but the batches
/// of the changelog being written in the same checkpoint (see
/// [`write_changelog_tee`](super::parquet::write_changelog_tee)): its rows
/// are sorted as the merge produces them, and the files just written are
/// never read back. `current`'s rows are newer than every row of `deltas`.
/// A `current` that closes before [`ChangelogBatch::Done`] fails the
/// snapshot (the changelog failed; its error is the one to report).
pub(crate) async fn build_snapshot_fed(
    store: &Store,
    checkpoint: u64,
    base: &[DataFile],
    deltas: &[DataFile],
    current: Option<mpsc::Receiver<ChangelogBatch>>,
    settings: &CheckpointSettings,
    build: Build,
) -> Result<SnapshotSummary, CheckpointError> {
    let schema = state_schema();
    let mut delta_paths: Vec<String> = deltas.iter().map(|f| f.path.clone()).collect();
    if current.is_some() {
        delta_paths.push(format!("changelog of checkpoint {checkpoint} (in memory)"));
    }
    let context = WorkerContext {
        store_name: store.name().to_owned(),
        delta_paths,
        base_paths: base.iter().map(|f| f.path.clone()).collect(),
        schema: Arc::clone(&schema),
        sort: SortConfig {
            spill_dir: settings.spill_dir.clone(),
            ..SortConfig::for_budget(settings.sort_memory_bytes)
        },
        batch_rows: settings.row_group_rows.max(1),
        build,
    };
    let (input_tx, input_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (output_tx, output_rx) = mpsc::channel(CHANNEL_BATCHES);
    let worker = tokio::task::spawn_blocking(move || run_worker(input_rx, &output_tx, &context));

    let mut writer = SnapshotWriter {
        store,
        settings,
        checkpoint,
        schema,
        finished: Vec::new(),
        current: None,
        next_part: 0,
    };
    let feeding = feed(store, base, deltas, current, input_tx);
    let writing = async {
        let mut output = output_rx;
        while let Some(batch) = output.recv().await {
            writer.write(&batch).await?;
        }
        Ok::<(), CheckpointError>(())
    };
    let (fed, written) = tokio::join!(feeding, writing);
    let worker_result = worker.await.map_err(|e| {
        CheckpointError::Task(format!("snapshot worker of checkpoint {checkpoint}: {e}"))
    });

    // The first real cause wins: a failed read or write makes the worker
    // stop with a consequential error.
    let outcome = match (fed, written, worker_result) {
        (Err(e), _, _) | (Ok(()), Err(e), _) | (Ok(()), Ok(()), Err(e) | Ok(Err(e))) => Err(e),
        (Ok(()), Ok(()), Ok(Ok(outcome))) => Ok(outcome),
    };
    match outcome {
        Ok(outcome) => {
            let files = writer.finish().await?;
            tracing::debug!(
                checkpoint,
                files = files.len(),
                keys = outcome.keys,
                ops = outcome.sort.ops,
                runs_spilled = outcome.sort.runs_spilled,
                merge_passes = outcome.sort.merge_passes,
                max_buffered_bytes = outcome.sort.max_buffered_bytes,
                "state snapshot built"
            );
            Ok(SnapshotSummary {
                files,
                keys: outcome.keys,
                sort: outcome.sort,
                touched: outcome.touched,
            })
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// A message from the async reader to the blocking worker, in this order:
/// every delta batch, `DeltasDone`, every base batch, `BaseDone`. A channel
/// that closes before `BaseDone` means the reader failed.
enum Input {
    /// A batch of changelog rows from delta file `file`.
    Delta {
        /// Index into the deltas.
        file: usize,
        /// The rows.
        batch: RecordBatch,
    },
    /// Every delta batch was sent.
    DeltasDone,
    /// A batch of state rows from base file `file`.
    Base {
        /// Index into the base files.
        file: usize,
        /// The rows.
        batch: RecordBatch,
    },
    /// Every base batch was sent.
    BaseDone,
}

/// Reads the deltas, then the base, and sends their batches to the worker.
/// Returns `Ok` early if the worker stopped (its own result says why).
async fn feed(
    store: &Store,
    base: &[DataFile],
    deltas: &[DataFile],
    current: Option<mpsc::Receiver<ChangelogBatch>>,
    input: mpsc::Sender<Input>,
) -> Result<(), CheckpointError> {
    for (file, data_file) in deltas.iter().enumerate() {
        let mut stream = open_parquet_stream(store, data_file).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|source| read_error(store, &data_file.path, source))?;
            if input.send(Input::Delta { file, batch }).await.is_err() {
                return Ok(());
            }
        }
    }
    if let Some(mut current) = current {
        let file = deltas.len();
        loop {
            match current.recv().await {
                Some(ChangelogBatch::Batch(batch)) => {
                    if input.send(Input::Delta { file, batch }).await.is_err() {
                        return Ok(());
                    }
                }
                Some(ChangelogBatch::Done) => break,
                None => {
                    return Err(CheckpointError::Task(
                        "the changelog being written stopped before its end".into(),
                    ))
                }
            }
        }
    }
    if input.send(Input::DeltasDone).await.is_err() {
        return Ok(());
    }
    for (file, data_file) in base.iter().enumerate() {
        let mut stream = open_parquet_stream(store, data_file).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|source| read_error(store, &data_file.path, source))?;
            if input.send(Input::Base { file, batch }).await.is_err() {
                return Ok(());
            }
        }
    }
    // A send error here also means the worker stopped: its result tells.
    let _ = input.send(Input::BaseDone).await;
    Ok(())
}

/// The Parquet files of one snapshot being written, rolled at
/// `max_file_bytes`.
struct SnapshotWriter<'a> {
    /// Where the files go.
    store: &'a Store,
    /// Row-group size, file size, upload settings.
    settings: &'a CheckpointSettings,
    /// The checkpoint the snapshot belongs to.
    checkpoint: u64,
    /// The state schema.
    schema: SchemaRef,
    /// Files finished (uploaded), in key order.
    finished: Vec<DataFile>,
    /// The file being written, if any.
    current: Option<ParquetSink>,
    /// Number of the next file.
    next_part: u32,
}

impl SnapshotWriter<'_> {
    /// Writes `batch` (rows following every row written before), starting a
    /// file if none is open and finishing it past `max_file_bytes`.
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), CheckpointError> {
        let mut sink = if let Some(sink) = self.current.take() {
            sink
        } else {
            let relative = format!(
                "state/checkpoint={}/part-{:04}-{}.parquet",
                self.checkpoint,
                self.next_part,
                uuid::Uuid::new_v4().simple()
            );
            self.next_part += 1;
            ParquetSink::create(
                self.store,
                relative,
                Arc::clone(&self.schema),
                self.settings,
            )
            .await?
        };
        if let Err(e) = sink.write(batch).await {
            self.current = Some(sink);
            return Err(e);
        }
        if sink.bytes_written() >= self.settings.max_file_bytes {
            self.finished.push(sink.finish().await?);
        } else {
            self.current = Some(sink);
        }
        Ok(())
    }

    /// Finishes the open file and returns every file, in key order.
    async fn finish(mut self) -> Result<Vec<DataFile>, CheckpointError> {
        if let Some(sink) = self.current.take() {
            match sink.finish().await {
                Ok(file) => self.finished.push(file),
                Err(e) => {
                    self.abort().await;
                    return Err(e);
                }
            }
        }
        Ok(self.finished)
    }

    /// Abandons the snapshot: aborts the open upload and deletes the files
    /// already finished (best effort; nothing references them).
    async fn abort(mut self) {
        if let Some(sink) = self.current.take() {
            sink.abort().await;
        }
        for file in &self.finished {
            if let Err(e) = self
                .store
                .object_store()
                .delete(&self.store.path(&file.path))
                .await
            {
                tracing::warn!(
                    store = self.store.name(),
                    path = file.path,
                    error = %e,
                    "cannot delete an unreferenced snapshot file; garbage collection will"
                );
            }
        }
    }
}

/// What the blocking worker needs: owned, so it can run on its own thread.
struct WorkerContext {
    /// The store's name, for errors.
    store_name: String,
    /// Paths of the delta files, for errors.
    delta_paths: Vec<String>,
    /// Paths of the base files, for errors.
    base_paths: Vec<String>,
    /// The state schema of the output batches.
    schema: SchemaRef,
    /// Memory budget and I/O buffers of the sort.
    sort: SortConfig,
    /// Rows per output batch.
    batch_rows: usize,
    /// What to build.
    build: Build,
}

impl WorkerContext {
    /// A corruption error about `path`.
    fn corrupt(&self, path: Option<&String>, reason: String) -> CheckpointError {
        CheckpointError::CorruptObject {
            store: self.store_name.clone(),
            path: path.cloned().unwrap_or_default(),
            reason,
        }
    }
}

/// What the worker produced besides the batches.
struct WorkerOutcome {
    /// Rows sent.
    keys: u64,
    /// Figures of the sort.
    sort: SortStats,
    /// The keys touched, for [`Build::Changes`].
    touched: Option<TouchedKeys>,
}

/// The error of a worker whose reader or writer went away: the other side's
/// error is the cause.
fn stopped(what: &str) -> CheckpointError {
    CheckpointError::Task(format!("snapshot worker stopped: {what}"))
}

/// The blocking worker: sorts the deltas, merges them with the base and
/// sends state batches to `output`.
fn run_worker(
    mut input: mpsc::Receiver<Input>,
    output: &mpsc::Sender<RecordBatch>,
    context: &WorkerContext,
) -> Result<WorkerOutcome, CheckpointError> {
    let mut sorter = ExternalSorter::new(context.sort.clone());
    let mut order = 0_u64;
    let mut position = FilePosition::default();
    loop {
        match input.blocking_recv() {
            Some(Input::Delta { file, batch }) => {
                let first_row = position.next_batch(file, batch.num_rows());
                push_delta_batch(&mut sorter, &batch, &mut order, context, file, first_row)?;
            }
            Some(Input::DeltasDone) => break,
            Some(Input::Base { .. } | Input::BaseDone) => {
                return Err(CheckpointError::Task("snapshot input out of order".into()));
            }
            None => return Err(stopped("delta input ended early")),
        }
    }
    let mut newest = sorter.finish()?;
    let mut base = BaseCursor::default();
    let mut builder = StateBatchBuilder::new(context);
    let mut keys = 0_u64;
    let mut touched = match context.build {
        Build::Changes => Some(TouchedKeys::create(context.sort.spill_dir.as_deref())?),
        Build::Snapshot => None,
    };
    loop {
        base.fill(&mut input, context)?;
        let step = match (newest.current(), base.current()) {
            (None, None) => break,
            (Some(_), None) => Step::Delta,
            (None, Some(_)) => Step::Base,
            (Some(op), Some(row)) => match op.key.cmp(row.key) {
                Ordering::Less => Step::Delta,
                Ordering::Equal => Step::Both,
                Ordering::Greater => Step::Base,
            },
        };
        if matches!(step, Step::Delta | Step::Both) {
            if let Some(op) = newest.current() {
                if let Some(t) = touched.as_mut() {
                    t.push(op.key)?;
                }
                if let Some(value) = op.value {
                    builder.append(op.key, value, op.epoch);
                    keys += 1;
                }
            }
            newest.advance()?;
        }
        if matches!(step, Step::Base) {
            if let Some(row) = base.current() {
                builder.append(row.key, row.value, row.epoch);
                keys += 1;
            }
        }
        if matches!(step, Step::Base | Step::Both) {
            base.advance();
        }
        if builder.is_full() {
            send(output, builder.finish()?)?;
        }
    }
    if builder.rows > 0 {
        send(output, builder.finish()?)?;
    }
    if let Some(t) = touched.as_mut() {
        t.finish()?;
    }
    Ok(WorkerOutcome {
        keys,
        sort: newest.stats(),
        touched,
    })
}

/// Row numbers within files, for errors: batches of one file come in order.
#[derive(Default)]
struct FilePosition {
    /// The file of the previous batch.
    file: Option<usize>,
    /// Rows of that file before the next batch.
    rows: u64,
}

impl FilePosition {
    /// The row number (in its file) of the first row of a batch of `rows`
    /// rows from `file`.
    fn next_batch(&mut self, file: usize, rows: usize) -> u64 {
        if self.file != Some(file) {
            self.file = Some(file);
            self.rows = 0;
        }
        let first = self.rows;
        self.rows += rows as u64;
        first
    }
}

/// Which side of the final merge supplies the next key.
enum Step {
    /// The delta's key is smaller: the delta operation decides it.
    Delta,
    /// Both have the key: the delta operation is newer and decides it.
    Both,
    /// The base's key is smaller: the base row is kept.
    Base,
}

/// Sends a batch to the writer.
fn send(output: &mpsc::Sender<RecordBatch>, batch: RecordBatch) -> Result<(), CheckpointError> {
    output
        .blocking_send(batch)
        .map_err(|_| stopped("the writer stopped"))
}

/// Feeds the `put` and `delete` rows of a changelog batch to the sorter;
/// `order` counts every row seen, so later rows get larger orders.
fn push_delta_batch(
    sorter: &mut ExternalSorter,
    batch: &RecordBatch,
    order: &mut u64,
    context: &WorkerContext,
    file: usize,
    first_row: u64,
) -> Result<(), CheckpointError> {
    let path = context.delta_paths.get(file);
    let corrupt = |reason: String| context.corrupt(path, reason);
    let rows = ChangelogRows::of(batch).map_err(corrupt)?;
    let epochs = int64_column(batch, "wal_epoch").map_err(corrupt)?;
    for row in 0..batch.num_rows() {
        *order += 1;
        let at = first_row + row as u64;
        let change = rows.change(row, at).map_err(corrupt)?;
        if change == Change::Marker {
            continue;
        }
        if epochs.is_null(row) {
            return Err(corrupt(format!("row {at} of the file: null wal_epoch")));
        }
        let epoch = epochs.value(row);
        match change {
            Change::Put(key, value) => sorter.push_put(key, value, *order, epoch)?,
            Change::Delete(key) => sorter.push_delete(key, *order, epoch)?,
            Change::Marker => {}
        }
    }
    Ok(())
}

/// One batch of the base snapshot, validated (no nulls, keys increasing).
struct BaseRows {
    /// Keys.
    keys: BinaryArray,
    /// Values.
    values: BinaryArray,
    /// Epochs of the values.
    epochs: Int64Array,
    /// The next row.
    row: usize,
}

/// A row of the base snapshot.
struct BaseRow<'a> {
    /// The key.
    key: &'a [u8],
    /// Its value.
    value: &'a [u8],
    /// Epoch of the value.
    epoch: i64,
}

/// Reads the base snapshot row by row from the worker's input, checking
/// that keys strictly increase across batches and files.
#[derive(Default)]
struct BaseCursor {
    /// The batch being read.
    rows: Option<BaseRows>,
    /// `BaseDone` was received.
    done: bool,
    /// Last key of the previous batch.
    last_key: Option<Vec<u8>>,
    /// Where the batch being read starts, for errors.
    position: FilePosition,
}

impl BaseCursor {
    /// Makes a row current if the base has one left.
    fn fill(
        &mut self,
        input: &mut mpsc::Receiver<Input>,
        context: &WorkerContext,
    ) -> Result<(), CheckpointError> {
        while !self.done && self.rows.as_ref().is_none_or(|r| r.row >= r.keys.len()) {
            match input.blocking_recv() {
                Some(Input::Base { file, batch }) => {
                    if batch.num_rows() > 0 {
                        let first_row = self.position.next_batch(file, batch.num_rows());
                        let rows = self.validate(&batch, context, file, first_row)?;
                        self.rows = Some(rows);
                    }
                }
                Some(Input::BaseDone) => {
                    self.done = true;
                    self.rows = None;
                }
                Some(Input::Delta { .. } | Input::DeltasDone) => {
                    return Err(CheckpointError::Task("snapshot input out of order".into()));
                }
                None => return Err(stopped("base input ended early")),
            }
        }
        Ok(())
    }

    /// Checks a base batch: state columns, no nulls, keys strictly
    /// increasing (within it and after the previous batch).
    fn validate(
        &mut self,
        batch: &RecordBatch,
        context: &WorkerContext,
        file: usize,
        first_row: u64,
    ) -> Result<BaseRows, CheckpointError> {
        let corrupt = |reason: String| context.corrupt(context.base_paths.get(file), reason);
        let keys = binary_column(batch, "key").map_err(corrupt)?.clone();
        let values = binary_column(batch, "value").map_err(corrupt)?.clone();
        let epochs = int64_column(batch, "last_epoch").map_err(corrupt)?.clone();
        if keys.null_count() + values.null_count() + epochs.null_count() > 0 {
            return Err(corrupt(
                "null key, value or last_epoch in a state snapshot".into(),
            ));
        }
        let mut previous = self.last_key.as_deref();
        for row in 0..keys.len() {
            let key = keys.value(row);
            if previous.is_some_and(|p| p >= key) {
                return Err(corrupt(format!(
                    "state snapshot not sorted by key: row {} of the file does not follow the row before it",
                    first_row + row as u64
                )));
            }
            previous = Some(key);
        }
        self.last_key = previous.map(<[u8]>::to_vec);
        Ok(BaseRows {
            keys,
            values,
            epochs,
            row: 0,
        })
    }

    /// The current row, if [`BaseCursor::fill`] found one.
    fn current(&self) -> Option<BaseRow<'_>> {
        let rows = self.rows.as_ref()?;
        (rows.row < rows.keys.len()).then(|| BaseRow {
            key: rows.keys.value(rows.row),
            value: rows.values.value(rows.row),
            epoch: rows.epochs.value(rows.row),
        })
    }

    /// Moves past the current row.
    fn advance(&mut self) {
        if let Some(rows) = self.rows.as_mut() {
            rows.row += 1;
        }
    }
}

/// Builds `RecordBatch`es of the state schema.
struct StateBatchBuilder {
    /// The state schema.
    schema: SchemaRef,
    /// Keys.
    keys: BinaryBuilder,
    /// Values.
    values: BinaryBuilder,
    /// Epochs.
    epochs: Int64Builder,
    /// Rows appended since the last batch.
    rows: usize,
    /// Key and value bytes appended since the last batch.
    bytes: usize,
    /// Rows per batch.
    max_rows: usize,
}

impl StateBatchBuilder {
    /// An empty builder.
    fn new(context: &WorkerContext) -> Self {
        Self {
            schema: Arc::clone(&context.schema),
            keys: BinaryBuilder::new(),
            values: BinaryBuilder::new(),
            epochs: Int64Builder::new(),
            rows: 0,
            bytes: 0,
            max_rows: context.batch_rows,
        }
    }

    /// Appends a row.
    fn append(&mut self, key: &[u8], value: &[u8], epoch: i64) {
        self.keys.append_value(key);
        self.values.append_value(value);
        self.epochs.append_value(epoch);
        self.rows += 1;
        self.bytes += key.len() + value.len();
    }

    /// Whether a batch should be cut now.
    fn is_full(&self) -> bool {
        self.rows >= self.max_rows || self.bytes >= MAX_BATCH_BYTES
    }

    /// The rows appended so far, as a batch; the builder starts over.
    /// The next batch's builders start with this one's capacities (no
    /// growth by reallocation batch after batch).
    fn finish(&mut self) -> Result<RecordBatch, CheckpointError> {
        let rows = self.rows;
        let key_bytes = self.keys.values_slice().len();
        let value_bytes = self.values.values_slice().len();
        let keys: ArrayRef = Arc::new(self.keys.finish());
        let values: ArrayRef = Arc::new(self.values.finish());
        let epochs: ArrayRef = Arc::new(self.epochs.finish());
        self.keys = BinaryBuilder::with_capacity(rows, key_bytes);
        self.values = BinaryBuilder::with_capacity(rows, value_bytes);
        self.epochs = Int64Builder::with_capacity(rows);
        self.rows = 0;
        self.bytes = 0;
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| match field.name().as_str() {
                "key" => Ok(Arc::clone(&keys)),
                "value" => Ok(Arc::clone(&values)),
                "last_epoch" => Ok(Arc::clone(&epochs)),
                other => Err(CheckpointError::Task(format!(
                    "unexpected state schema column {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|source| {
            CheckpointError::Arrow {
                context: "building a state snapshot batch".into(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::{new_null_array, Int32Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, TimeUnit};

    use super::*;
    use crate::checkpoint::schema::changelog_schema;

    /// One changelog row: (epoch, op, key, value).
    type Row = (i64, &'static str, Option<Vec<u8>>, Option<Vec<u8>>);

    /// Live keys: key -> (value, `last_epoch`).
    type Model = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

    /// Deterministic pseudo-random numbers (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    fn changelog_batch(rows: &[Row]) -> RecordBatch {
        let schema = changelog_schema();
        let n = rows.len();
        let seq: Vec<i64> = (0..i64::try_from(n).unwrap()).collect();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    "wal_epoch" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    "core" => Arc::new(Int32Array::from(vec![0; n])),
                    "sequence" | "timestamp_ns" => Arc::new(Int64Array::from(seq.clone())),
                    "ts" => {
                        let DataType::Timestamp(TimeUnit::Microsecond, tz) = field.data_type()
                        else {
                            panic!("ts is {:?}", field.data_type());
                        };
                        Arc::new(
                            TimestampMicrosecondArray::from(seq.clone())
                                .with_timezone_opt(tz.clone()),
                        )
                    }
                    "op" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                    "key" => Arc::new(rows.iter().map(|r| r.2.as_deref()).collect::<BinaryArray>()),
                    "value" => {
                        Arc::new(rows.iter().map(|r| r.3.as_deref()).collect::<BinaryArray>())
                    }
                    _ => new_null_array(field.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    async fn write_file(
        store: &Store,
        path: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
        settings: &CheckpointSettings,
    ) -> DataFile {
        let mut sink = ParquetSink::create(store, path.to_owned(), schema, settings)
            .await
            .unwrap();
        for batch in batches {
            sink.write(batch).await.unwrap();
        }
        sink.finish().await.unwrap()
    }

    /// Writes `rows` as a changelog file (in batches of 1000 rows) and
    /// applies them to `model`.
    async fn write_delta(
        store: &Store,
        name: &str,
        rows: &[Row],
        model: &mut Model,
        settings: &CheckpointSettings,
    ) -> DataFile {
        let batches: Vec<RecordBatch> = rows.chunks(1000).map(changelog_batch).collect();
        for (epoch, op, key, value) in rows {
            match *op {
                "put" => {
                    model.insert(key.clone().unwrap(), (value.clone().unwrap(), *epoch));
                }
                "delete" => {
                    model.remove(key.as_deref().unwrap());
                }
                _ => {}
            }
        }
        let path = format!("changelog/epoch=0/part-{name}.parquet");
        write_file(store, &path, changelog_schema(), &batches, settings).await
    }

    /// Random puts and deletes over `key_space` keys, with commit and
    /// barrier rows in between.
    fn random_rows(rng: &mut Rng, n: usize, key_space: u64, epoch: i64) -> Vec<Row> {
        (0..n)
            .map(|i| {
                let key = Some(format!("key-{:05}", rng.below(key_space)).into_bytes());
                match rng.below(10) {
                    0..=5 => {
                        let len = usize::try_from(rng.below(64)).unwrap();
                        let value = format!("{epoch}-{i}-").into_bytes().repeat(len / 8 + 1);
                        (epoch, "put", key, Some(value))
                    }
                    6..=8 => (epoch, "delete", key, None),
                    _ if i % 2 == 0 => (epoch, "commit", None, None),
                    _ => (epoch, "epoch_barrier", None, None),
                }
            })
            .collect()
    }

    async fn read_snapshot(store: &Store, files: &[DataFile]) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let mut rows = Vec::new();
        for file in files {
            let mut stream = open_parquet_stream(store, file).await.unwrap();
            let mut in_file = 0_u64;
            while let Some(batch) = stream.next().await {
                let batch = batch.unwrap();
                assert_eq!(batch.schema().fields(), state_schema().fields());
                let keys = binary_column(&batch, "key").unwrap();
                let values = binary_column(&batch, "value").unwrap();
                let epochs = int64_column(&batch, "last_epoch").unwrap();
                for i in 0..batch.num_rows() {
                    rows.push((
                        keys.value(i).to_vec(),
                        values.value(i).to_vec(),
                        epochs.value(i),
                    ));
                }
                in_file += batch.num_rows() as u64;
            }
            assert_eq!(in_file, file.rows, "{}", file.path);
        }
        rows
    }

    fn assert_snapshot(rows: &[(Vec<u8>, Vec<u8>, i64)], model: &Model) {
        for pair in rows.windows(2) {
            assert!(pair[0].0 < pair[1].0, "sorted by key, one row per key");
        }
        let expected: Vec<(Vec<u8>, Vec<u8>, i64)> = model
            .iter()
            .map(|(k, (v, e))| (k.clone(), v.clone(), *e))
            .collect();
        assert_eq!(rows.len(), expected.len());
        assert!(
            rows == expected.as_slice(),
            "snapshot differs from the model"
        );
    }

    fn small_settings() -> CheckpointSettings {
        CheckpointSettings {
            row_group_rows: 200,
            max_file_bytes: 8 << 10,
            upload_part_bytes: 64 << 10,
            sort_memory_bytes: 16 << 10,
            ..CheckpointSettings::default()
        }
    }

    fn check_names(files: &[DataFile], checkpoint: u64) {
        for (n, file) in files.iter().enumerate() {
            let prefix = format!("state/checkpoint={checkpoint}/part-{n:04}-");
            let unique = file
                .path
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".parquet"))
                .unwrap_or_else(|| panic!("{} does not start with {prefix}", file.path));
            assert_eq!(unique.len(), 32, "{}", file.path);
            assert!(
                unique.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                file.path
            );
        }
    }

    #[tokio::test]
    async fn snapshots_follow_the_model_across_two_checkpoints() {
        let store = Store::memory();
        let settings = small_settings();
        let mut rng = Rng(2024);
        let mut model = Model::new();

        // Checkpoint 1: three delta files over an empty base.
        let mut deltas = Vec::new();
        for (i, epoch) in [1_i64, 2, 3].into_iter().enumerate() {
            let rows = random_rows(&mut rng, 4_000, 3_000, epoch);
            deltas.push(write_delta(&store, &format!("a{i}"), &rows, &mut model, &settings).await);
        }
        let first = build_snapshot(&store, 1, &[], &deltas, &settings)
            .await
            .unwrap();
        let rows = read_snapshot(&store, &first.files).await;
        println!(
            "snapshot 1: {} keys in {} files, sort {:?}",
            first.keys,
            first.files.len(),
            first.sort
        );
        assert_snapshot(&rows, &model);
        assert_eq!(first.keys, model.len() as u64);
        assert!(first.files.len() > 1, "rolled at max_file_bytes");
        assert!(first.sort.runs_spilled > 1, "{:?}", first.sort);
        assert!(first.sort.max_buffered_bytes <= settings.sort_memory_bytes);
        check_names(&first.files, 1);

        // Checkpoint 2: base plus overwrites, deletes of base keys, new keys.
        let base_keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        let mut rows: Vec<Row> = Vec::new();
        for (i, key) in base_keys.iter().enumerate() {
            match i % 3 {
                0 => rows.push((4, "delete", Some(key.clone()), None)),
                1 => rows.push((
                    4,
                    "put",
                    Some(key.clone()),
                    Some(format!("new-{i}").into_bytes()),
                )),
                _ => {}
            }
        }
        for i in 0..2_000 {
            rows.push((
                5,
                "put",
                Some(format!("new-key-{i:05}").into_bytes()),
                Some(b"fresh".to_vec()),
            ));
        }
        // Delete then re-put in a later file; put then delete in the same file.
        rows.push((5, "put", Some(b"flip".to_vec()), Some(b"1".to_vec())));
        rows.push((5, "delete", Some(b"flip".to_vec()), None));
        let second_delta = write_delta(&store, "b0", &rows, &mut model, &settings).await;
        let rows = vec![
            (6, "put", Some(b"flip".to_vec()), Some(b"2".to_vec())),
            (6, "checkpoint", None, None),
            (6, "put", Some(base_keys[2].clone()), Some(b"last".to_vec())),
        ];
        let third_delta = write_delta(&store, "b1", &rows, &mut model, &settings).await;
        let second = build_snapshot(
            &store,
            2,
            &first.files,
            &[second_delta, third_delta],
            &settings,
        )
        .await
        .unwrap();
        let rows = read_snapshot(&store, &second.files).await;
        println!(
            "snapshot 2: {} keys in {} files, sort {:?}",
            second.keys,
            second.files.len(),
            second.sort
        );
        assert_snapshot(&rows, &model);
        assert_eq!(second.keys, model.len() as u64);
        assert_eq!(model[&b"flip"[..]], (b"2".to_vec(), 6));
        assert_eq!(model[&base_keys[2]], (b"last".to_vec(), 6));
        check_names(&second.files, 2);
    }

    #[tokio::test]
    async fn nothing_live_writes_no_file() {
        let store = Store::memory();
        let settings = small_settings();
        let empty = build_snapshot(&store, 1, &[], &[], &settings)
            .await
            .unwrap();
        assert_eq!((empty.files.len(), empty.keys), (0, 0));

        let mut model = Model::new();
        let rows = vec![
            (1, "put", Some(b"a".to_vec()), Some(b"1".to_vec())),
            (1, "delete", Some(b"a".to_vec()), None),
            (1, "delete", Some(b"never".to_vec()), None),
        ];
        let delta = write_delta(&store, "d", &rows, &mut model, &settings).await;
        let summary = build_snapshot(&store, 2, &[], &[delta], &settings)
            .await
            .unwrap();
        assert_eq!((summary.files.len(), summary.keys), (0, 0));
    }

    #[tokio::test]
    async fn an_unsorted_base_is_corrupt() {
        let store = Store::memory();
        let settings = small_settings();
        let batch = RecordBatch::try_new(
            state_schema(),
            vec![
                Arc::new(BinaryArray::from_iter_values([b"b", b"a"])),
                Arc::new(BinaryArray::from_iter_values([b"1", b"2"])),
                Arc::new(Int64Array::from(vec![1, 1])),
            ],
        )
        .unwrap();
        let base = write_file(
            &store,
            "state/checkpoint=1/bad.parquet",
            state_schema(),
            &[batch],
            &settings,
        )
        .await;
        let err = build_snapshot(&store, 2, &[base], &[], &settings)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::CorruptObject { path, reason, .. }
                if path == "state/checkpoint=1/bad.parquet" && reason.contains("row 1 ")),
            "{err}"
        );
        // Nothing of the failed snapshot is left behind.
        let left: Vec<_> = store
            .object_store()
            .list(Some(&store.path("state/checkpoint=2")))
            .collect()
            .await;
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_put_without_value_is_corrupt() {
        let store = Store::memory();
        let settings = small_settings();
        let batch = changelog_batch(&[(1, "put", Some(b"k".to_vec()), None)]);
        let delta = write_file(
            &store,
            "changelog/epoch=1/x.parquet",
            changelog_schema(),
            &[batch],
            &settings,
        )
        .await;
        let err = build_snapshot(&store, 1, &[], &[delta], &settings)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::CorruptObject { reason, .. } if reason.contains("put without a value")),
            "{err}"
        );
    }
}
