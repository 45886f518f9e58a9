//! Checkpoints end to end: Parquet read back row by row, incremental state,
//! the manifest as the only commit point (a failed checkpoint leaves none and
//! GC removes its orphans), conflicts between writers, verify, and SQL over
//! both tables with DataFusion.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::too_many_lines
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use walhouse::checkpoint::{
    list_manifests, CheckpointError, CheckpointSettings, Checkpointer, DataFile,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalEntry, PerCoreWalManager, WalOperation};
use walhouse::store::Store;

/// An in-memory store that can fail writes under a prefix, or let "another
/// writer" put a different object first.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: InMemory,
    fail_puts_under: Mutex<Option<String>>,
    competing_manifest: Mutex<Option<Vec<u8>>>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

impl FaultyStore {
    fn check(&self, location: &Path) -> object_store::Result<()> {
        if let Some(prefix) = self.fail_puts_under.lock().unwrap().as_ref() {
            if location.as_ref().starts_with(prefix.as_str()) {
                return Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: format!("injected failure writing {location}").into(),
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        // The commit point of checkpoint 1 (version 0 creates the table).
        if location.as_ref() == "changelog/_delta_log/00000000000000000001.json" {
            let competing = self.competing_manifest.lock().unwrap().take();
            if let Some(body) = competing {
                self.inner.put(location, PutPayload::from(body)).await?;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
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

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// (core, sequence, op, key, value) of a changelog row.
type Row = (i32, i64, String, Option<Vec<u8>>, Option<Vec<u8>>);

fn settings() -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows: 64,
        snapshot_every: 8,
        gc_grace_secs: 0,
        gc_grace_check: walhouse::checkpoint::GraceCheck::Off,
        ..CheckpointSettings::default()
    }
}

/// Every object the store lists, by full path.
async fn object_names(store: &Store) -> Vec<String> {
    store
        .object_store()
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// Appends a deterministic mix on 2 cores: puts, overwrites, deletes, a commit.
fn append_mix(m: &mut PerCoreWalManager, from: u64, to: u64) {
    for i in from..to {
        let core = (i % 2) as usize;
        let key = format!("k{:04}", i % 150).into_bytes();
        let w = m.writer(core);
        if i % 11 == 10 {
            w.append_delete(&key).unwrap();
        } else {
            w.append_put(&key, format!("v{i}").as_bytes()).unwrap();
        }
    }
    let offsets: HashMap<String, u64> =
        [("src-a".to_owned(), to), ("src-b".to_owned(), to * 2)].into();
    m.writer(0).append_commit(offsets, Some(to as i64)).unwrap();
    m.sync_all().unwrap();
}

/// The rows of changelog files, as (core, sequence, op, key, value), in file order.
async fn changelog_rows(store: &Store, files: &[DataFile]) -> Vec<Row> {
    let mut rows = Vec::new();
    for file in files {
        let bytes = store
            .object_store()
            .get(&store.path(&file.path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, file.size);
        assert_eq!(crc32c::crc32c(&bytes), file.crc32c);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            let col = |name: &str| batch.column_by_name(name).unwrap().clone();
            let core = col("core");
            let core = core.as_any().downcast_ref::<Int32Array>().unwrap();
            let seq = col("sequence");
            let seq = seq.as_any().downcast_ref::<Int64Array>().unwrap();
            let op = col("op");
            let op = op.as_any().downcast_ref::<StringArray>().unwrap();
            let key = col("key");
            let key = key.as_any().downcast_ref::<BinaryArray>().unwrap();
            let value = col("value");
            let value = value.as_any().downcast_ref::<BinaryArray>().unwrap();
            for r in 0..batch.num_rows() {
                rows.push((
                    core.value(r),
                    seq.value(r),
                    op.value(r).to_owned(),
                    (!key.is_null(r)).then(|| key.value(r).to_vec()),
                    (!value.is_null(r)).then(|| value.value(r).to_vec()),
                ));
            }
        }
    }
    rows
}

fn expected_rows(entries: &[PerCoreWalEntry]) -> Vec<Row> {
    entries
        .iter()
        .map(|e| {
            let (op, key, value) = match &e.operation {
                WalOperation::Put { key, value } => ("put", Some(key.clone()), Some(value.clone())),
                WalOperation::Delete { key } => ("delete", Some(key.clone()), None),
                WalOperation::Commit { .. } => ("commit", None, None),
                WalOperation::Checkpoint { .. } => ("checkpoint", None, None),
                WalOperation::EpochBarrier { .. } => ("epoch_barrier", None, None),
            };
            (
                i32::from(e.core_id),
                e.sequence as i64,
                op.to_owned(),
                key,
                value,
            )
        })
        .collect()
}

#[tokio::test]
async fn checkpoint_writes_every_row_in_order_and_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    append_mix(&mut m, 0, 700);
    let expected = m.merge_segments().unwrap();

    let out = cp.checkpoint(&mut m).await.unwrap();
    let manifest = &out.manifest;
    assert_eq!(manifest.checkpoint, 1);
    assert_eq!((manifest.epochs.first, manifest.epochs.last), (0, 0));
    assert_eq!(manifest.stats.entries, expected.len() as u64);
    let built = cp.finish_state().await.unwrap();
    assert_eq!(
        built.compacted,
        [1],
        "the state table's version 1 is a full snapshot"
    );
    assert!(
        out.removed_segments >= 2,
        "the covered WAL segments are gone"
    );
    assert!(m.merge_segments_up_to_epoch(0).unwrap().is_empty());
    assert!(manifest
        .changelog
        .iter()
        .all(|f| f.path.starts_with("changelog/epoch=0/")));
    assert_eq!(
        changelog_rows(&store, &manifest.changelog).await,
        expected_rows(&expected)
    );
    assert_eq!(manifest.source_offsets.get("src-a"), Some(&700));
    assert_eq!(manifest.watermark, Some(700));
    for core in &manifest.cores {
        let last = expected
            .iter()
            .filter(|e| u32::from(e.core_id) == core.core)
            .map(|e| e.sequence)
            .max();
        assert_eq!(core.last_sequence, last);
    }
    let report = cp.verify(None).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report.state_version,
        "verify checked the state table's version"
    );
    let state = cp.state_version(1).await.unwrap().unwrap();
    println!(
        "checkpoint 1: {} entries, {} changelog files, {} bytes, {:?}; state version 1: {} files ({} keys)",
        manifest.stats.entries,
        manifest.changelog.len(),
        out.bytes_written,
        out.duration,
        state.snapshot.len(),
        state.keys,
    );
}

#[tokio::test]
async fn second_checkpoint_references_the_first_snapshot_and_its_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let cp = Checkpointer::new(Store::memory(), settings()).unwrap();
    append_mix(&mut m, 0, 300);
    let first = cp.checkpoint(&mut m).await.unwrap().manifest;
    // The state table's version 1 (a snapshot) is built after the commit:
    // the next manifest's state is based on it once it is, else on
    // checkpoint 1's changelog.
    assert_eq!(first.state.snapshot_checkpoint, 0);
    assert_eq!(first.state.deltas, first.changelog);
    cp.finish_state().await.unwrap();
    let snapshot = cp.state_version(1).await.unwrap().unwrap().snapshot;
    assert!(!snapshot.is_empty());
    append_mix(&mut m, 300, 500);
    let second = cp.checkpoint(&mut m).await.unwrap().manifest;
    assert_eq!(second.checkpoint, 2);
    assert_eq!((second.epochs.first, second.epochs.last), (1, 1));
    assert_eq!(second.state.snapshot_checkpoint, 1);
    assert_eq!(second.state.snapshot, snapshot);
    assert_eq!(
        second.state.deltas, second.changelog,
        "the delta is the second changelog"
    );
    assert!(second
        .changelog
        .iter()
        .all(|f| f.path.starts_with("changelog/epoch=1/")));
    assert_eq!(second.source_offsets.get("src-b"), Some(&1000));
    assert!(cp.verify(Some(1)).await.unwrap().is_ok());
    assert!(cp.verify(Some(2)).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_checkpoint_that_fails_before_the_manifest_leaves_none_and_gc_removes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let faulty = Arc::new(FaultyStore::default());
    *faulty.fail_puts_under.lock().unwrap() = Some("changelog/_delta_log/".into());
    let store = Store::with_object_store("faulty://", faulty.clone(), "");
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    append_mix(&mut m, 0, 400);
    let before = m.merge_segments().unwrap();

    let err = cp.checkpoint(&mut m).await.unwrap_err();
    println!("failed checkpoint: {err}");
    assert!(matches!(err, CheckpointError::Store { .. }), "{err}");
    assert!(
        err.to_string().contains("changelog/_delta_log/"),
        "the error names the object: {err}"
    );
    assert!(
        list_manifests(&store).await.unwrap().is_empty(),
        "no manifest"
    );
    assert_eq!(
        common::ops(&m.merge_segments().unwrap()),
        common::ops(&before),
        "the WAL is intact"
    );
    let orphans: Vec<_> = faulty.inner.list(None).try_collect().await.unwrap();
    assert!(
        !orphans.is_empty(),
        "data files were uploaded before the failure"
    );

    let gc = cp.gc().await.unwrap();
    assert_eq!(gc.objects_removed.len(), orphans.len(), "{gc:?}");
    let left: Vec<_> = faulty.inner.list(None).try_collect().await.unwrap();
    assert!(left.is_empty(), "GC removed every orphan: {left:?}");

    // The store works again: the next checkpoint covers the same entries
    // (plus the barriers the failed attempt's seal wrote).
    *faulty.fail_puts_under.lock().unwrap() = None;
    let pending = m.merge_segments().unwrap();
    assert_eq!(pending.len(), before.len() + 2);
    let out = cp.checkpoint(&mut m).await.unwrap();
    assert_eq!(out.manifest.checkpoint, 1);
    assert_eq!(
        (out.manifest.epochs.first, out.manifest.epochs.last),
        (0, 1)
    );
    assert_eq!(out.manifest.stats.entries, pending.len() as u64);
    println!(
        "retry: checkpoint {} with {} entries; orphans removed by GC: {}",
        out.manifest.checkpoint,
        out.manifest.stats.entries,
        gc.objects_removed.len()
    );
}

#[tokio::test]
async fn a_manifest_conflict_stops_the_losing_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 1)).unwrap();
    let faulty = Arc::new(FaultyStore::default());
    *faulty.competing_manifest.lock().unwrap() = Some(b"{\"another\": \"writer\"}".to_vec());
    let cp = Checkpointer::new(
        Store::with_object_store("faulty://", faulty, ""),
        settings(),
    )
    .unwrap();
    m.writer(0).append_put(b"k", b"v").unwrap();
    m.sync_all().unwrap();
    let err = cp.checkpoint(&mut m).await.unwrap_err();
    println!("losing writer: {err}");
    assert!(
        matches!(err, CheckpointError::ManifestConflict { checkpoint: 1, .. }),
        "{err}"
    );
    assert_eq!(
        common::ops(&m.merge_segments().unwrap()).len(),
        1,
        "the loser keeps its WAL"
    );
}

#[tokio::test]
async fn verify_names_a_corrupted_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let table = tmp.path().join("table");
    let cp = Checkpointer::new(Store::local(&table).unwrap(), settings()).unwrap();
    append_mix(&mut m, 0, 50);
    let manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
    let victim = &manifest.changelog[0].path;
    let mut bytes = std::fs::read(table.join(victim)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(table.join(victim), bytes).unwrap();
    let report = cp.verify(None).await.unwrap();
    println!("verify: {:?}", report.problems);
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].contains(victim.as_str()));
}

#[tokio::test]
async fn datafusion_reads_both_tables_with_epoch_partitions() {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let table = tmp.path().join("table");
    let cp = Checkpointer::new(Store::local(&table).unwrap(), settings()).unwrap();
    append_mix(&mut m, 0, 300);
    cp.checkpoint(&mut m).await.unwrap();
    // The state table's version 1 (a snapshot) is built after the commit;
    // the next manifest's state is based on it once it is.
    cp.finish_state().await.unwrap();
    append_mix(&mut m, 300, 450);
    let last = cp.checkpoint(&mut m).await.unwrap().manifest;

    // The model: replay every put/delete in order.
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..450u64 {
        let key = format!("k{:04}", i % 150).into_bytes();
        if i % 11 == 10 {
            model.remove(&key);
        } else {
            model.insert(key, format!("v{i}").into_bytes());
        }
    }

    let ctx = SessionContext::new();
    let changelog = format!("{}/changelog/", table.display());
    ctx.register_parquet(
        "changelog",
        &changelog,
        ParquetReadOptions::default()
            .table_partition_cols(vec![("epoch".to_owned(), arrow_schema::DataType::Int64)]),
    )
    .await
    .unwrap();
    let df = ctx
        .sql(
            "SELECT epoch, count(*) AS n, sum(CASE WHEN op = 'put' THEN 1 ELSE 0 END) AS puts \
              FROM changelog GROUP BY epoch ORDER BY epoch",
        )
        .await
        .unwrap();
    let batches = df.collect().await.unwrap();
    let batch = &batches[0];
    let epochs = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let counts = batch
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(epochs.values(), &[0, 1]);
    assert_eq!(counts.value(0), 300 + 1, "300 ops and a commit in epoch 0");
    assert_eq!(
        counts.value(1),
        2 + 150 + 1,
        "2 barriers, 150 ops and a commit in epoch 1"
    );
    println!(
        "changelog by epoch: {:?} rows {:?}",
        epochs.values(),
        counts.values()
    );

    // The state table: the snapshot of checkpoint 1 plus the delta of
    // checkpoint 2, folded in SQL, equals the model.
    let snapshot_dir = format!(
        "{}/state/checkpoint={}/",
        table.display(),
        last.state.snapshot_checkpoint
    );
    ctx.register_parquet("snapshot", &snapshot_dir, ParquetReadOptions::default())
        .await
        .unwrap();
    let df = ctx
        .sql(
            "WITH delta AS ( \
               SELECT key, value, op, row_number() OVER (PARTITION BY key ORDER BY wal_epoch DESC, ts DESC, sequence DESC) AS rn \
               FROM changelog WHERE epoch = 1 AND key IS NOT NULL), \
             latest AS (SELECT key, value, op FROM delta WHERE rn = 1) \
             SELECT s.key, s.value FROM snapshot s LEFT JOIN latest l ON s.key = l.key WHERE l.key IS NULL \
             UNION ALL SELECT key, value FROM latest WHERE op = 'put' \
             ORDER BY key",
        )
        .await
        .unwrap();
    let mut state = BTreeMap::new();
    for batch in df.collect().await.unwrap() {
        // DataFusion reads Parquet binary columns as views: cast to plain.
        let binary = |i: usize| {
            datafusion::arrow::compute::cast(batch.column(i), &arrow_schema::DataType::Binary)
                .unwrap()
        };
        let (keys, values) = (binary(0), binary(1));
        let keys = keys.as_any().downcast_ref::<BinaryArray>().unwrap();
        let values = values.as_any().downcast_ref::<BinaryArray>().unwrap();
        for r in 0..batch.num_rows() {
            state.insert(keys.value(r).to_vec(), values.value(r).to_vec());
        }
    }
    println!(
        "state rows from SQL: {}, model keys: {}",
        state.len(),
        model.len()
    );
    assert_eq!(state, model);
}

#[tokio::test]
async fn retention_keeps_the_newest_checkpoints_and_everything_they_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let store = Store::memory();
    let keep_two = CheckpointSettings {
        snapshot_every: 3,
        retain_checkpoints: 2,
        ..settings()
    };
    let cp = Checkpointer::new(store.clone(), keep_two).unwrap();
    let mut manifests = Vec::new();
    let mut versions = Vec::new();
    for round in 0..5u64 {
        append_mix(&mut m, round * 100, round * 100 + 100);
        manifests.push(cp.checkpoint(&mut m).await.unwrap().manifest);
        cp.finish_state().await.unwrap();
        versions.push(cp.state_version(round + 1).await.unwrap().unwrap());
    }
    // Full rewrites of the state table at checkpoints 1 and 4; checkpoint
    // 5's manifest = snapshot 4 + its delta, its state version = snapshot 4
    // with deletion vectors + its changes.
    assert_eq!(versions[0].snapshot_checkpoint, 1);
    assert_eq!(versions[3].snapshot_checkpoint, 4);
    assert_eq!(versions[4].snapshot_checkpoint, 4);
    assert_eq!(manifests[4].state.snapshot_checkpoint, 4);
    let all_before: Vec<_> = store.object_store().list(None).try_collect().await.unwrap();

    let gc = cp.gc().await.unwrap();
    println!(
        "objects before GC: {}; kept checkpoints {:?}; removed manifests {:?}; removed objects: {}",
        all_before.len(),
        gc.retained,
        gc.versions_expired,
        gc.objects_removed.len()
    );
    assert_eq!(gc.retained, vec![4, 5]);
    assert_eq!(gc.versions_expired, vec![1, 2, 3]);
    let left = object_names(&store).await;
    for kept in &manifests[3..] {
        for file in kept.referenced_files() {
            assert!(
                left.contains(&file.path),
                "{} is referenced by a kept manifest",
                file.path
            );
        }
    }
    for kept in &versions[3..] {
        for file in kept.referenced_files() {
            assert!(
                left.contains(&file.path),
                "{} is referenced by a kept state version",
                file.path
            );
        }
    }
    // What only the removed versions used is gone: the changes and deletion
    // vectors of the state table's versions 2 and 3.
    let only_old: Vec<_> = versions[1..3]
        .iter()
        .flat_map(|v| v.referenced_files())
        .filter(|f| !f.path.starts_with("state/checkpoint=1/"))
        .collect();
    assert!(!only_old.is_empty());
    for file in only_old {
        assert!(
            gc.objects_removed.contains(&file.path),
            "{} should be collected",
            file.path
        );
    }
    assert!(cp.verify(Some(5)).await.unwrap().is_ok());
    assert!(cp.verify(Some(4)).await.unwrap().is_ok());
    // A second GC finds nothing more to do.
    let again = cp.gc().await.unwrap();
    assert!(again.objects_removed.is_empty(), "{again:?}");
}

#[tokio::test]
async fn snapshot_sort_spills_into_the_configured_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    for i in 0..5000u64 {
        m.writer((i % 2) as usize)
            .append_put(format!("key{i:06}").as_bytes(), &[b'v'; 100])
            .unwrap();
    }
    m.sync_all().unwrap();
    let missing = tmp.path().join("no-such-spill-dir");
    let tiny = CheckpointSettings {
        sort_memory_bytes: 64 << 10,
        spill_dir: Some(missing.clone()),
        ..settings()
    };
    // The checkpoint commits; the state table's build after it fails, and
    // says where.
    let failing = Checkpointer::new(Store::memory(), tiny).unwrap();
    failing.checkpoint(&mut m).await.unwrap();
    let err = failing.finish_state().await.unwrap_err();
    println!("spill into a missing directory: {err}");
    assert!(err.to_string().contains("no-such-spill-dir"), "{err}");
    std::fs::create_dir_all(&missing).unwrap();
    let ok = CheckpointSettings {
        sort_memory_bytes: 64 << 10,
        spill_dir: Some(missing.clone()),
        ..settings()
    };
    // The same store, the next checkpointer: it builds the missing version.
    let retry = Checkpointer::new(failing.store().clone(), ok).unwrap();
    let built = retry.finish_state().await.unwrap();
    assert_eq!(built.versions, [1]);
    assert_eq!(built.keys, Some(5000));
    assert_eq!(
        std::fs::read_dir(&missing).unwrap().count(),
        0,
        "runs are removed after use"
    );
}

/// A crash in the middle of a local multipart upload leaves its staging
/// file (`<object>#<digits>`), which listing the store never shows: GC
/// removes it once past the grace period, and nothing else.
#[tokio::test]
async fn gc_removes_staging_files_of_interrupted_local_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let table = tmp.path().join("table");
    let store = Store::local(&table).unwrap();
    append_mix(&mut m, 0, 200);
    let writer = Checkpointer::new(store.clone(), settings()).unwrap();
    let out = writer.checkpoint(&mut m).await.unwrap();
    // The state table's build runs after the commit: its uploads have
    // staging files too, which a gc with no grace would remove under it.
    writer.finish_state().await.unwrap();
    let staging = [
        "changelog/epoch=7/part-0000-crashed.parquet#1234567890",
        "state/checkpoint=9/part-0001-crashed.parquet#42",
    ];
    // Names GC must leave alone: not a staging file's, or a committed file.
    let not_staging = ["changelog/epoch=7/notes#draft", "changelog/epoch=7/#123"];
    for rel in staging.iter().chain(&not_staging) {
        let path = table.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"half an upload").unwrap();
    }
    let listed = object_names(&store).await;
    assert!(
        staging.iter().all(|s| !listed.contains(&(*s).to_owned())),
        "the store's listing does not show staging files: {listed:?}"
    );

    // Within the grace period: kept, and counted.
    let patient = Checkpointer::new(
        store.clone(),
        CheckpointSettings {
            gc_grace_secs: 3600,
            ..settings()
        },
    )
    .unwrap();
    let gc = patient.gc().await.unwrap();
    assert!(gc.staging_files_removed.is_empty(), "{gc:?}");
    assert!(gc.objects_in_grace >= staging.len(), "{gc:?}");
    assert!(table.join(staging[0]).exists());

    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    let gc = cp.gc().await.unwrap();
    println!(
        "staging files planted: {}; removed by GC: {:?}; other files left: {}",
        staging.len(),
        gc.staging_files_removed,
        not_staging.len()
    );
    let mut expected: Vec<String> = staging.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(gc.staging_files_removed, expected);
    for rel in staging {
        assert!(!table.join(rel).exists(), "{rel} removed");
    }
    for rel in not_staging {
        assert!(table.join(rel).exists(), "{rel} is no staging file");
    }
    for file in out.manifest.referenced_files() {
        assert!(table.join(&file.path).exists(), "{} kept", file.path);
    }
    assert!(cp.verify(None).await.unwrap().is_ok());
}
