//! Tests of the Parquet sink, the changelog writer and the readers, on the
//! in-memory store, a local directory and a fault-injecting store.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::Array;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parquet::basic::{Compression, Encoding};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

use super::changelog::ChangelogColumns;
use super::encoder::PARALLEL_ENCODE_MIN_BYTES;
use super::properties::DELTA_COLUMNS;
use super::*;
use crate::checkpoint::{changelog_schema, state_schema, CompressionMode};
use crate::per_core_wal::{
    EntryRef, OpRef, PerCoreWalConfig, PerCoreWalEntry, PerCoreWalManager, WalOperation,
};

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

// ---------------------------------------------------------------------------
// WAL fixtures

/// A WAL of 2 cores over epochs 0 and 1 (sealed: the cores moved on to
/// epoch 2) with `puts` puts per epoch, a delete every 7th, a commit of two
/// sources with a watermark per epoch and a checkpoint marker. Returns the
/// manager and the entries of epochs 0..=1 in merge order.
fn build_wal(
    dir: &std::path::Path,
    puts: usize,
    value_len: usize,
) -> (PerCoreWalManager, Vec<PerCoreWalEntry>) {
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(dir, 2)).unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut value = vec![0_u8; value_len];
    for epoch in 0..2_u64 {
        for i in 0..puts {
            let core = i % 2;
            let key = format!("key-{:06}", i % (puts / 2 + 1));
            for b in &mut value {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng.to_le_bytes()[0];
            }
            manager
                .writer(core)
                .append_put(key.as_bytes(), &value)
                .unwrap();
            if i % 7 == 3 {
                manager.writer(core).append_delete(key.as_bytes()).unwrap();
            }
            if i == puts / 2 {
                let offsets = HashMap::from([
                    ("orders/0".to_owned(), 100 * (epoch + 1) + i as u64),
                    ("orders/1".to_owned(), 7 + epoch),
                ]);
                let watermark = 1_700_000_000_000 + i64::try_from(epoch).unwrap();
                manager
                    .writer(0)
                    .append_commit(offsets, Some(watermark))
                    .unwrap();
                manager.writer(1).append_checkpoint(40 + epoch).unwrap();
            }
        }
        manager.sync_all().unwrap();
        let next = manager.advance_epoch();
        manager.set_epoch_all(next);
        manager.write_epoch_barrier_all().unwrap();
        manager.sync_all().unwrap();
    }
    let expected = manager.merge_segments_up_to_epoch(1).unwrap();
    (manager, expected)
}

/// One changelog row, as the columns hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    wal_epoch: i64,
    core: i32,
    sequence: i64,
    ts: i64,
    timestamp_ns: i64,
    op: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    commit_offsets: Option<Vec<(String, i64)>>,
    watermark: Option<i64>,
    checkpoint_id: Option<i64>,
}

impl From<&PerCoreWalEntry> for Row {
    fn from(e: &PerCoreWalEntry) -> Self {
        let mut row = Row {
            wal_epoch: i64::try_from(e.epoch).unwrap(),
            core: i32::from(e.core_id),
            sequence: i64::try_from(e.sequence).unwrap(),
            ts: e.timestamp_ns.div_euclid(1000),
            timestamp_ns: e.timestamp_ns,
            op: String::new(),
            key: None,
            value: None,
            commit_offsets: None,
            watermark: None,
            checkpoint_id: None,
        };
        match &e.operation {
            WalOperation::Put { key, value } => {
                row.op = "put".into();
                row.key = Some(key.clone());
                row.value = Some(value.clone());
            }
            WalOperation::Delete { key } => {
                row.op = "delete".into();
                row.key = Some(key.clone());
            }
            WalOperation::Commit { offsets, watermark } => {
                row.op = "commit".into();
                let mut pairs: Vec<(String, i64)> = offsets
                    .iter()
                    .map(|(s, o)| (s.clone(), i64::try_from(*o).unwrap()))
                    .collect();
                pairs.sort();
                row.commit_offsets = Some(pairs);
                row.watermark = *watermark;
            }
            WalOperation::Checkpoint { id } => {
                row.op = "checkpoint".into();
                row.checkpoint_id = Some(i64::try_from(*id).unwrap());
            }
            WalOperation::EpochBarrier { .. } => row.op = "epoch_barrier".into(),
        }
        row
    }
}

fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let i64s = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let (epoch, seq, ts_ns, wm, ckpt) = (
        i64s("wal_epoch"),
        i64s("sequence"),
        i64s("timestamp_ns"),
        i64s("watermark"),
        i64s("checkpoint_id"),
    );
    let core = batch
        .column_by_name("core")
        .unwrap()
        .as_primitive::<Int32Type>();
    let ts = batch
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let op = batch.column_by_name("op").unwrap().as_string::<i32>();
    let key = batch.column_by_name("key").unwrap().as_binary::<i32>();
    let value = batch.column_by_name("value").unwrap().as_binary::<i32>();
    let offsets = batch
        .column_by_name("commit_offsets")
        .unwrap()
        .as_list::<i32>();
    let opt = |a: &arrow_array::Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| Row {
            wal_epoch: epoch.value(i),
            core: core.value(i),
            sequence: seq.value(i),
            ts: ts.value(i),
            timestamp_ns: ts_ns.value(i),
            op: op.value(i).to_owned(),
            key: key.is_valid(i).then(|| key.value(i).to_vec()),
            value: value.is_valid(i).then(|| value.value(i).to_vec()),
            commit_offsets: offsets.is_valid(i).then(|| {
                let pairs = offsets.value(i);
                let pairs = pairs.as_struct();
                let sources = pairs.column(0).as_string::<i32>();
                let offs = pairs.column(1).as_primitive::<Int64Type>();
                (0..pairs.len())
                    .map(|j| (sources.value(j).to_owned(), offs.value(j)))
                    .collect()
            }),
            watermark: opt(&wm, i),
            checkpoint_id: opt(&ckpt, i),
        })
        .collect()
}

/// Every row of `files`, in order, read through [`open_parquet_stream`].
async fn read_rows(store: &Store, files: &[DataFile]) -> Vec<Row> {
    let mut rows = Vec::new();
    for file in files {
        let stream = open_parquet_stream(store, file).await.unwrap();
        assert_eq!(stream.schema().fields(), changelog_schema().fields());
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(n as u64, file.rows, "{}", file.path);
        rows.extend(batches.iter().flat_map(rows_of));
    }
    rows
}

async fn object_bytes(store: &Store, relative: &str) -> Bytes {
    store
        .object_store()
        .get(&store.path(relative))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

async fn object_paths(store: &Store) -> Vec<String> {
    let mut paths: Vec<String> = store
        .object_store()
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    paths
}

fn settings(row_group_rows: usize) -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows,
        ..CheckpointSettings::default()
    }
}

// ---------------------------------------------------------------------------
// Round trips

/// Writes the fixture WAL's epochs 0..=1 as checkpoint 1 and checks every
/// row, the files, the summary and the Parquet metadata.
async fn round_trip(store: &Store) {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, expected) = build_wal(tmp.path(), 480, 24);
    assert!(expected.len() > 1000, "{} entries", expected.len());
    let stream = manager.merge_sealed(1).unwrap();
    let summary = write_changelog(store, 1, stream, 2, &settings(100))
        .await
        .unwrap();

    // Files: one per epoch here, named by epoch, checkpoint and number.
    assert_eq!(summary.files.len(), 2, "{:?}", summary.files);
    for (file, epoch) in summary.files.iter().zip(0..) {
        let prefix = format!("changelog/epoch={epoch}/part-00000000000000000001-{epoch:04}-");
        assert!(file.path.starts_with(&prefix), "{}", file.path);
        assert!(file.path.ends_with(".parquet"));
        assert_eq!(
            file_crc32c(store, &file.path).await.unwrap(),
            (file.size, file.crc32c),
            "{}",
            file.path
        );
    }
    let rows: u64 = summary.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, expected.len() as u64);

    // Summary.
    assert_eq!(summary.entries, expected.len() as u64);
    assert_eq!(
        summary.puts,
        expected.iter().filter(|e| e.is_put()).count() as u64
    );
    assert_eq!(
        summary.deletes,
        expected.iter().filter(|e| e.is_delete()).count() as u64
    );
    assert_eq!(summary.epochs, Some((0, 1)));
    assert!(summary.wal_bytes > 0);
    for core in 0..2_u16 {
        let last = expected
            .iter()
            .filter(|e| e.core_id == core)
            .map(|e| e.sequence)
            .max();
        assert_eq!(summary.last_sequence[usize::from(core)], last);
    }
    assert_eq!(
        summary.source_offsets,
        BTreeMap::from([
            ("orders/0".to_owned(), 200 + 240),
            ("orders/1".to_owned(), 8)
        ])
    );
    assert_eq!(summary.watermark, Some(1_700_000_000_001));

    // Every row, in merge order.
    let want: Vec<Row> = expected.iter().map(Row::from).collect();
    let got = read_rows(store, &summary.files).await;
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "row {i}");
    }
    for op in ["put", "delete", "commit", "checkpoint", "epoch_barrier"] {
        assert!(got.iter().any(|r| r.op == op), "no {op} row");
    }

    // Parquet metadata: zstd (not on the random values), page index, bloom
    // filter on key, row groups.
    for file in &summary.files {
        check_metadata(store, file, 100).await;
    }
}

async fn check_metadata(store: &Store, file: &DataFile, row_group_rows: i64) {
    let bytes = object_bytes(store, &file.path).await;
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&bytes)
        .unwrap();
    assert!(metadata.column_index().is_some(), "no column index");
    assert!(metadata.offset_index().is_some(), "no offset index");
    let schema = metadata.file_metadata().schema_descr();
    let key = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == "key")
        .unwrap();
    let groups = metadata.row_groups();
    assert!(groups.len() > 1, "{} row groups", groups.len());
    assert!(groups.iter().all(|g| g.num_rows() <= row_group_rows));
    assert_eq!(groups[0].num_rows(), row_group_rows);
    let mut delta_chunks = 0;
    for group in groups {
        for column in group.columns() {
            // The fixture's values are random bytes: adaptive compression
            // leaves them uncompressed; everything else is zstd.
            if column.column_path().string() == "value" {
                assert_eq!(column.compression(), Compression::UNCOMPRESSED);
            } else {
                assert!(
                    matches!(column.compression(), Compression::ZSTD(_)),
                    "{}: {:?}",
                    column.column_path(),
                    column.compression()
                );
            }
            // Sequences and timestamps are delta-encoded (no PLAIN pages).
            let path = column.column_path().string();
            if DELTA_COLUMNS.contains(&path.as_str()) {
                let encodings: Vec<Encoding> = column.encodings().collect();
                assert!(
                    encodings.contains(&Encoding::DELTA_BINARY_PACKED)
                        && !encodings.contains(&Encoding::PLAIN),
                    "{path}: {encodings:?}"
                );
                delta_chunks += 1;
            }
            assert!(column.column_index_offset().is_some());
            assert!(column.offset_index_offset().is_some());
        }
        assert!(group.column(key).bloom_filter_offset().is_some());
    }
    assert_eq!(delta_chunks, DELTA_COLUMNS.len() * groups.len());
    println!(
        "{}: {} row groups, {delta_chunks} DELTA_BINARY_PACKED column chunks",
        file.path,
        groups.len()
    );
    assert!(
        metadata
            .file_metadata()
            .key_value_metadata()
            .is_some_and(|kv| kv.iter().any(|kv| kv.key == "ARROW:schema")),
        "Arrow schema not embedded"
    );

    // The bloom filter answers for a key of the first row group.
    let options = ReadOptionsBuilder::new()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let reader = SerializedFileReader::new_with_options(bytes, options).unwrap();
    let group = reader.get_row_group(0).unwrap();
    let filter = group.get_column_bloom_filter(key).unwrap();
    let present = group
        .metadata()
        .column(key)
        .statistics()
        .and_then(|s| s.min_bytes_opt().map(<[u8]>::to_vec))
        .unwrap();
    assert!(filter.check(present.as_slice()));
}

#[tokio::test]
async fn changelog_round_trips_on_the_memory_store() {
    round_trip(&Store::memory()).await;
}

#[tokio::test]
async fn changelog_round_trips_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    round_trip(&store).await;
    // The files are plain files under the directory.
    let found: Vec<_> = std::fs::read_dir(dir.path().join("changelog/epoch=1"))
        .unwrap()
        .collect();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn files_roll_at_max_file_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, expected) = build_wal(tmp.path(), 480, 24);
    let store = Store::memory();
    let settings = CheckpointSettings {
        row_group_rows: 100,
        max_file_bytes: 2000,
        ..CheckpointSettings::default()
    };
    let summary = write_changelog(&store, 7, manager.merge_sealed(1).unwrap(), 2, &settings)
        .await
        .unwrap();
    assert!(summary.files.len() > 4, "{} files", summary.files.len());
    for (n, file) in summary.files.iter().enumerate() {
        assert!(
            file.path
                .contains(&format!("/part-00000000000000000007-{n:04}-")),
            "{}",
            file.path
        );
        assert_eq!(
            file_crc32c(&store, &file.path).await.unwrap(),
            (file.size, file.crc32c)
        );
    }
    let epochs: Vec<bool> = summary
        .files
        .iter()
        .map(|f| f.path.starts_with("changelog/epoch=0/"))
        .collect();
    assert!(
        epochs.windows(2).all(|w| w[0] >= w[1]),
        "epoch 0 files first"
    );
    assert!(epochs.contains(&true) && epochs.contains(&false));
    let want: Vec<Row> = expected.iter().map(Row::from).collect();
    assert_eq!(read_rows(&store, &summary.files).await, want);
    assert_eq!(object_paths(&store).await.len(), summary.files.len());
}

#[tokio::test]
async fn a_file_over_10_mib_goes_up_in_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, expected) = build_wal(tmp.path(), 100_000, 100);
    let faults = Arc::new(FaultyStore::default());
    let store = Store::with_object_store("memory://counted", faults.clone(), "");
    let settings = CheckpointSettings {
        row_group_rows: 16 * 1024,
        upload_part_bytes: 5 << 20,
        ..CheckpointSettings::default()
    };
    let summary = write_changelog(&store, 2, manager.merge_sealed(1).unwrap(), 2, &settings)
        .await
        .unwrap();
    assert_eq!(summary.files.len(), 2);
    assert_eq!(summary.entries, expected.len() as u64);
    for file in &summary.files {
        assert!(file.size > 10 << 20, "{} is {} bytes", file.path, file.size);
        assert_eq!(
            file_crc32c(&store, &file.path).await.unwrap(),
            (file.size, file.crc32c)
        );
    }
    let parts = faults.parts.load(Ordering::SeqCst);
    println!(
        "{} entries -> files of {:?} bytes in {parts} parts of 5 MiB",
        summary.entries,
        summary.files.iter().map(|f| f.size).collect::<Vec<_>>()
    );
    assert_eq!(faults.multipart_started.load(Ordering::SeqCst), 2);
    assert!(parts >= 6, "{parts} parts");
    assert_eq!(faults.puts.load(Ordering::SeqCst), 0, "no single PUT");
    // Spot-check the contents: first and last rows.
    let rows = read_rows(&store, &summary.files).await;
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows[0], Row::from(&expected[0]));
    assert_eq!(
        rows[rows.len() - 1],
        Row::from(&expected[expected.len() - 1])
    );
}

#[tokio::test]
async fn empty_merge_writes_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(tmp.path(), 2)).unwrap();
    let next = manager.advance_epoch();
    manager.set_epoch_all(next);
    manager.write_epoch_barrier_all().unwrap();
    manager.sync_all().unwrap();
    let store = Store::memory();
    let summary = write_changelog(
        &store,
        1,
        manager.merge_sealed(0).unwrap(),
        2,
        &settings(10),
    )
    .await
    .unwrap();
    assert_eq!(summary.files, vec![]);
    assert_eq!((summary.entries, summary.epochs), (0, None));
    assert_eq!(summary.last_sequence, vec![None, None]);
}

#[tokio::test]
async fn sink_reports_bytes_and_rejects_zero_settings() {
    let store = Store::memory();
    let bad = CheckpointSettings {
        row_group_rows: 0,
        ..CheckpointSettings::default()
    };
    let err = ParquetSink::create(&store, "x.parquet".into(), state_schema(), &bad)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CheckpointError::InvalidSetting {
            field: "row_group_rows",
            ..
        }
    ));

    let mut sink = ParquetSink::create(
        &store,
        "state/checkpoint=1/a.parquet".into(),
        state_schema(),
        &settings(2),
    )
    .await
    .unwrap();
    let batch = RecordBatch::try_new(
        state_schema(),
        vec![
            Arc::new(arrow_array::BinaryArray::from_iter_values([
                b"a", b"b", b"c",
            ])),
            Arc::new(arrow_array::BinaryArray::from_iter_values([
                b"1", b"2", b"3",
            ])),
            Arc::new(arrow_array::Int64Array::from(vec![0, 0, 1])),
        ],
    )
    .unwrap();
    sink.write(&batch).await.unwrap();
    assert!(sink.bytes_written() > 0);
    let file = sink.finish().await.unwrap();
    assert_eq!(file.rows, 3);
    assert_eq!(
        file_crc32c(&store, &file.path).await.unwrap(),
        (file.size, file.crc32c)
    );
    let batches: Vec<RecordBatch> = open_parquet_stream(&store, &file)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);

    // A wrong size in the manifest is corruption, named.
    let wrong = DataFile {
        size: file.size + 1,
        ..file.clone()
    };
    let err = open_parquet_stream(&store, &wrong).await.unwrap_err();
    assert!(
        matches!(&err, CheckpointError::CorruptObject { path, .. } if *path == file.path),
        "{err}"
    );

    // A batch of the wrong schema is an encoding error; nothing is left.
    let mut sink = ParquetSink::create(
        &store,
        "state/checkpoint=2/b.parquet".into(),
        changelog_schema(),
        &settings(2),
    )
    .await
    .unwrap();
    let err = sink.write(&batch).await.unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Parquet { path, .. } if path == "state/checkpoint=2/b.parquet"),
        "{err}"
    );
    assert!(
        sink.write(&batch).await.is_err(),
        "a failed sink refuses writes"
    );
    sink.abort().await;
    assert_eq!(object_paths(&store).await, vec![file.path.clone()]);
}

// ---------------------------------------------------------------------------
// Faults

/// An in-memory store that counts uploads and fails single PUTs after
/// `puts_ok` of them, multipart starts after `multipart_ok`, and parts after
/// `parts_ok` (`usize::MAX`: never).
#[derive(Debug)]
struct FaultyStore {
    inner: InMemory,
    puts_ok: usize,
    multipart_ok: usize,
    parts_ok: usize,
    puts: AtomicUsize,
    multipart_started: AtomicUsize,
    parts: Arc<AtomicUsize>,
    aborts: Arc<AtomicUsize>,
}

impl Default for FaultyStore {
    fn default() -> Self {
        Self {
            inner: InMemory::new(),
            puts_ok: usize::MAX,
            multipart_ok: usize::MAX,
            parts_ok: usize::MAX,
            puts: AtomicUsize::new(0),
            multipart_started: AtomicUsize::new(0),
            parts: Arc::new(AtomicUsize::new(0)),
            aborts: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

fn injected(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected {op} failure").into(),
    }
}

impl ObjectStore for FaultyStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            if self.puts.fetch_add(1, Ordering::SeqCst) >= self.puts_ok {
                return Err(injected("put"));
            }
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'c, Box<dyn MultipartUpload>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            if self.multipart_started.fetch_add(1, Ordering::SeqCst) >= self.multipart_ok {
                return Err(injected("multipart start"));
            }
            let inner = self.inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(FaultyUpload {
                inner,
                parts_ok: self.parts_ok,
                parts: Arc::clone(&self.parts),
                aborts: Arc::clone(&self.aborts),
            }) as Box<dyn MultipartUpload>)
        })
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> StoreFuture<'c, GetResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.get_opts(location, options)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> StoreFuture<'c, ListResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> StoreFuture<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy_opts(from, to, options)
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    parts_ok: usize,
    parts: Arc<AtomicUsize>,
    aborts: Arc<AtomicUsize>,
}

impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if self.parts.fetch_add(1, Ordering::SeqCst) >= self.parts_ok {
            return Box::pin(async { Err(injected("part")) });
        }
        self.inner.put_part(data)
    }

    fn complete<'a, 'b>(&'a mut self) -> StoreFuture<'b, PutResult>
    where
        'a: 'b,
        Self: 'b,
    {
        self.inner.complete()
    }

    fn abort<'a, 'b>(&'a mut self) -> StoreFuture<'b, ()>
    where
        'a: 'b,
        Self: 'b,
    {
        self.aborts.fetch_add(1, Ordering::SeqCst);
        self.inner.abort()
    }
}

#[tokio::test]
async fn a_failed_put_names_the_file_and_leaves_no_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, _) = build_wal(tmp.path(), 480, 24);
    let faults = Arc::new(FaultyStore {
        puts_ok: 2,
        ..FaultyStore::default()
    });
    let store = Store::with_object_store("memory://faulty", faults.clone(), "");
    let settings = CheckpointSettings {
        row_group_rows: 100,
        max_file_bytes: 2000,
        ..CheckpointSettings::default()
    };
    let err = write_changelog(&store, 3, manager.merge_sealed(1).unwrap(), 2, &settings)
        .await
        .unwrap_err();
    println!("injected put failure: {err}");
    let CheckpointError::Store {
        store: name,
        op,
        path,
        ..
    } = &err
    else {
        panic!("expected a store error, got {err}");
    };
    assert_eq!((name.as_str(), *op), ("memory://faulty", "put"));
    assert!(
        path.starts_with("changelog/epoch=0/part-00000000000000000003-0002-"),
        "{path}"
    );
    assert!(err.to_string().contains(path.as_str()));
    // The two finished files remain (orphans for GC); the failed one is absent.
    let objects = object_paths(&store).await;
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(!objects.contains(path));
    assert_eq!(
        faults.puts.load(Ordering::SeqCst),
        3,
        "the writer stopped at the failure"
    );
}

#[tokio::test]
async fn a_failed_part_aborts_the_multipart_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, _) = build_wal(tmp.path(), 3000, 100);
    let faults = Arc::new(FaultyStore {
        parts_ok: 2,
        ..FaultyStore::default()
    });
    let store = Store::with_object_store("memory://faulty", faults.clone(), "");
    let settings = CheckpointSettings {
        row_group_rows: 500,
        upload_part_bytes: 32 << 10,
        ..CheckpointSettings::default()
    };
    let err = write_changelog(&store, 4, manager.merge_sealed(1).unwrap(), 2, &settings)
        .await
        .unwrap_err();
    println!("injected part failure: {err}");
    let CheckpointError::Store { op, path, .. } = &err else {
        panic!("expected a store error, got {err}");
    };
    assert_eq!(*op, "upload part");
    assert!(
        path.starts_with("changelog/epoch=0/part-00000000000000000004-0000-"),
        "{path}"
    );
    let (parts, aborts) = (
        faults.parts.load(Ordering::SeqCst),
        faults.aborts.load(Ordering::SeqCst),
    );
    println!("parts attempted: {parts}, uploads aborted: {aborts}");
    assert_eq!(aborts, 1, "multipart upload aborted");
    assert_eq!(object_paths(&store).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_multipart_start_is_reported_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, _) = build_wal(tmp.path(), 3000, 100);
    let faults = Arc::new(FaultyStore {
        multipart_ok: 0,
        ..FaultyStore::default()
    });
    let store = Store::with_object_store("memory://faulty", faults, "");
    let settings = CheckpointSettings {
        row_group_rows: 500,
        upload_part_bytes: 32 << 10,
        ..CheckpointSettings::default()
    };
    let err = write_changelog(&store, 5, manager.merge_sealed(1).unwrap(), 2, &settings)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            CheckpointError::Store {
                op: "start multipart upload",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(object_paths(&store).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_merge_error_aborts_the_open_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (manager, _) = build_wal(tmp.path(), 480, 24);
    let store = Store::memory();
    // One core too few: the first entry of core 1 is refused by the merge side.
    let err = write_changelog(
        &store,
        6,
        manager.merge_sealed(1).unwrap(),
        1,
        &settings(10),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            CheckpointError::InvalidSetting {
                field: "num_cores",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(object_paths(&store).await, Vec::<String>::new());
}

#[test]
fn offsets_above_i64_max_are_an_error_not_a_wrap() {
    // The writer refuses such values (nothing unstorable is acknowledged);
    // a WAL written before that check may still hold one: the conversion
    // refuses it too, naming the value, instead of wrapping it.
    let entry = EntryRef {
        epoch: 0,
        sequence: 0,
        core_id: 0,
        timestamp_ns: 1,
        operation: OpRef::Checkpoint { id: u64::MAX },
    };
    let mut columns = ChangelogColumns::new(changelog_schema()).unwrap();
    let err = columns.append(&entry).unwrap_err();
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
    assert_eq!(columns.rows, 0);
}

#[test]
fn sinks_and_the_changelog_future_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let manager = PerCoreWalManager::new(PerCoreWalConfig::new(tmp.path(), 1)).unwrap();
    let store = Store::memory();
    let settings = CheckpointSettings::default();
    let stream = manager.merge_stream().unwrap();
    assert_send(&write_changelog(&store, 1, stream, 1, &settings));
    assert_send(&ParquetSink::create(
        &store,
        "x".into(),
        state_schema(),
        &settings,
    ));
    let file = DataFile {
        path: "x".into(),
        size: 0,
        crc32c: 0,
        rows: 0,
    };
    assert_send(&open_parquet_stream(&store, &file));
    assert_send(&file_crc32c(&store, "x"));
}

/// Batches large enough for the parallel column encoder, cut into row groups
/// in the middle of a batch, read back row by row; and a zstd level out of
/// range is refused by name.
#[tokio::test]
async fn parallel_encoding_keeps_every_row_and_row_group() {
    let store = Store::memory();
    let bad = CheckpointSettings {
        zstd_level: 0,
        ..CheckpointSettings::default()
    };
    let err = ParquetSink::create(&store, "x.parquet".into(), state_schema(), &bad)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::InvalidSetting {
                field: "zstd_level",
                ..
            }
        ),
        "{err}"
    );

    // 2 batches of 5,000 rows with 100-byte values (500 KB each, past
    // PARALLEL_ENCODE_MIN_BYTES) into row groups of 3,000 rows.
    let rows_per_batch = 5_000_u32;
    let keys: Vec<Vec<u8>> = (0..2 * rows_per_batch)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect();
    let values: Vec<Vec<u8>> = (0..2 * rows_per_batch)
        .map(|i| {
            (0..100_u32)
                .map(|j| u8::try_from((i.wrapping_mul(31) ^ j.wrapping_mul(7)) & 0xff).unwrap())
                .collect()
        })
        .collect();
    let settings = CheckpointSettings {
        row_group_rows: 3_000,
        zstd_level: 3,
        encode_threads: 2,
        ..CheckpointSettings::default()
    };
    let mut sink = ParquetSink::create(&store, "state/p.parquet".into(), state_schema(), &settings)
        .await
        .unwrap();
    for half in [0..5_000_usize, 5_000..10_000] {
        let batch = state_batch(&keys, &values, half);
        assert!(batch.get_array_memory_size() >= PARALLEL_ENCODE_MIN_BYTES);
        sink.write(&batch).await.unwrap();
    }
    let file = sink.finish().await.unwrap();
    assert_eq!(file.rows, 10_000);

    let bytes = store
        .object_store()
        .get(&store.path(&file.path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = SerializedFileReader::new(bytes).unwrap();
    let groups: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(parquet::file::metadata::RowGroupMetaData::num_rows)
        .collect();
    assert_eq!(groups, vec![3_000, 3_000, 3_000, 1_000]);

    let batches: Vec<RecordBatch> = open_parquet_stream(&store, &file)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut n = 0;
    for batch in &batches {
        let key = batch.column(0).as_binary::<i32>();
        let value = batch.column(1).as_binary::<i32>();
        let epoch = batch.column(2).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            assert_eq!(key.value(row), keys[n].as_slice(), "key of row {n}");
            assert_eq!(value.value(row), values[n].as_slice(), "value of row {n}");
            assert_eq!(
                epoch.value(row),
                i64::try_from(n).unwrap(),
                "epoch of row {n}"
            );
            n += 1;
        }
    }
    assert_eq!(n, 10_000);
    println!("parallel encoding: {n} rows in row groups {groups:?} read back equal");
}

/// A `state` batch of `rows` of `keys` and `values`, each row's epoch its
/// index.
fn state_batch(keys: &[Vec<u8>], values: &[Vec<u8>], rows: std::ops::Range<usize>) -> RecordBatch {
    RecordBatch::try_new(
        state_schema(),
        vec![
            Arc::new(arrow_array::BinaryArray::from_iter_values(
                &keys[rows.clone()],
            )),
            Arc::new(arrow_array::BinaryArray::from_iter_values(
                &values[rows.clone()],
            )),
            Arc::new(arrow_array::Int64Array::from_iter_values(
                rows.map(|i| i64::try_from(i).unwrap()),
            )),
        ],
    )
    .unwrap()
}

/// 4,000 values of 100 bytes: xorshift bytes for the first 2,000 (row group
/// 0 of the test below), a repeated pattern for the rest.
fn random_then_repeated_values() -> Vec<Vec<u8>> {
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    (0..4_000_u32)
        .map(|i| {
            (0..100_u8)
                .map(|j| {
                    if i < 2_000 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng.to_le_bytes()[0]
                    } else {
                        j % 10
                    }
                })
                .collect()
        })
        .collect()
}

/// Adaptive compression: a row group whose values are random bytes stores
/// `value` uncompressed, one whose values repeat keeps zstd, `key` keeps
/// zstd throughout, and every row reads back; with
/// [`CompressionMode::Always`] every column chunk is zstd.
#[tokio::test]
async fn incompressible_values_are_stored_uncompressed_per_row_group() {
    let store = Store::memory();
    let keys: Vec<Vec<u8>> = (0..4_000_u32)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect();
    let values = random_then_repeated_values();
    let batch = |rows: std::ops::Range<usize>| state_batch(&keys, &values, rows);
    let mut codecs = Vec::new();
    for mode in [CompressionMode::Adaptive, CompressionMode::Always] {
        let settings = CheckpointSettings {
            row_group_rows: 2_000,
            compression: mode,
            ..CheckpointSettings::default()
        };
        let relative = format!("state/{mode:?}.parquet");
        let mut sink = ParquetSink::create(&store, relative, state_schema(), &settings)
            .await
            .unwrap();
        for rows in [0..1_000, 1_000..2_000, 2_000..3_000, 3_000..4_000] {
            sink.write(&batch(rows)).await.unwrap();
        }
        let file = sink.finish().await.unwrap();
        let reader = SerializedFileReader::new(object_bytes(&store, &file.path).await).unwrap();
        // (row group, column) -> codec
        let codec: Vec<Vec<Compression>> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| {
                g.columns()
                    .iter()
                    .map(parquet::file::metadata::ColumnChunkMetaData::compression)
                    .collect()
            })
            .collect();
        let batches: Vec<RecordBatch> = open_parquet_stream(&store, &file)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut n = 0;
        for b in &batches {
            let (key, value) = (
                b.column(0).as_binary::<i32>(),
                b.column(1).as_binary::<i32>(),
            );
            for row in 0..b.num_rows() {
                assert_eq!(
                    key.value(row),
                    keys[n].as_slice(),
                    "{mode:?}: key of row {n}"
                );
                assert_eq!(
                    value.value(row),
                    values[n].as_slice(),
                    "{mode:?}: value of row {n}"
                );
                n += 1;
            }
        }
        assert_eq!(n, 4_000, "{mode:?}");
        codecs.push(codec);
    }
    let zstd = |c: &Compression| matches!(c, Compression::ZSTD(_));
    let adaptive = &codecs[0];
    assert_eq!(adaptive.len(), 2);
    assert!(
        zstd(&adaptive[0][0]) && zstd(&adaptive[0][2]),
        "{adaptive:?}"
    );
    assert_eq!(adaptive[0][1], Compression::UNCOMPRESSED, "{adaptive:?}");
    assert!(adaptive[1].iter().all(zstd), "{adaptive:?}");
    assert!(codecs[1].iter().flatten().all(zstd), "{:?}", codecs[1]);
    println!(
        "adaptive compression: value column {:?} then {:?}; 4,000 rows read back equal in both modes",
        adaptive[0][1], adaptive[1][1]
    );
}

/// Part buffers come back from a store that dropped them (the local store
/// writes each part and lets it go) and are filled again; the file still
/// holds every row, in order.
#[tokio::test]
async fn part_buffers_are_reused_and_the_file_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::local(tmp.path()).unwrap();
    let settings = CheckpointSettings {
        row_group_rows: 2_000,
        upload_part_bytes: 64 << 10,
        ..CheckpointSettings::default()
    };
    let mut rng = 0x2545_F491_4F6C_DD1D_u64;
    let mut sink = ParquetSink::create(&store, "state/r.parquet".into(), state_schema(), &settings)
        .await
        .unwrap();
    let mut values = Vec::new();
    for chunk in 0..10_i64 {
        let rows: Vec<Vec<u8>> = (0..1_000)
            .map(|_| {
                (0..100)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng.to_le_bytes()[0]
                    })
                    .collect()
            })
            .collect();
        let batch = RecordBatch::try_new(
            state_schema(),
            vec![
                Arc::new(arrow_array::BinaryArray::from_iter_values(
                    (0..1_000).map(|i| format!("k{:08}", chunk * 1_000 + i)),
                )),
                Arc::new(arrow_array::BinaryArray::from_iter_values(&rows)),
                Arc::new(arrow_array::Int64Array::from_iter_values(
                    (0..1_000).map(|i| chunk * 1_000 + i),
                )),
            ],
        )
        .unwrap();
        values.extend(rows);
        sink.write(&batch).await.unwrap();
    }
    let reused = sink.writer.as_mut().unwrap().file.inner_mut().reused;
    let file = sink.finish().await.unwrap();
    assert!(file.size > 10 * (64 << 10), "{} bytes", file.size);
    assert!(reused > 0, "no part buffer was reused");
    let batches: Vec<RecordBatch> = open_parquet_stream(&store, &file)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut n = 0;
    for batch in &batches {
        let value = batch.column(1).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            assert_eq!(value.value(row), values[n].as_slice(), "value of row {n}");
            n += 1;
        }
    }
    assert_eq!(n, 10_000);
    println!(
        "part buffers: {reused} parts of 64 KiB filled in recycled buffers; {n} rows read back equal ({} bytes)",
        file.size
    );
}
