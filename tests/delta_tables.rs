//! The two Delta tables as a reader that knows only the Delta protocol sees
//! them: the log replayed from JSON, the Parquet files read, deletion vectors
//! decoded by this file's own reader (Z85, the file's size/CRC framing, the
//! little-endian magic and the portable 64-bit roaring layout of
//! PROTOCOL.md), never by walhouse's code. Every version of the `state`
//! table must equal a model of the state at that checkpoint; the
//! `changelog` table must hold every operation once; the `txn` actions must
//! give each source's last offset. Then the second table's entry: missing
//! after a crash, it is written again, byte for byte, by recovery and by the
//! next checkpoint. And tables that are not walhouse's are refused.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::too_many_lines
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, BinaryArray, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use roaring::RoaringTreemap;
use serde_json::Value;
use walhouse::checkpoint::{recover, CheckpointError, CheckpointSettings, Checkpointer};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Z85 (`ZeroMQ`'s base 85), as `PROTOCOL.md`'s deletion vectors use it.
fn z85_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] =
        b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(5) {
        let mut n: u64 = 0;
        for &c in chunk {
            n = n * 85 + ALPHABET.iter().position(|&a| a == c).unwrap() as u64;
        }
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out
}

/// The rows a deletion vector descriptor marks deleted, read from the table
/// folder `dir` (storage type `u`: `<prefix>/deletion_vector_<uuid>.bin`).
fn read_dv(dir: &Path, dv: &Value) -> RoaringTreemap {
    assert_eq!(dv["storageType"], "u", "{dv}");
    let path = dv["pathOrInlineDv"].as_str().unwrap();
    let (prefix, encoded) = path.split_at(path.len() - 20);
    let uuid = uuid::Uuid::from_slice(&z85_decode(encoded)).unwrap();
    let file = std::fs::read(dir.join(prefix).join(format!("deletion_vector_{uuid}.bin"))).unwrap();
    assert_eq!(file[0], 1, "DV file format version");
    let offset = dv["offset"].as_u64().unwrap_or(1) as usize;
    let size = u32::from_be_bytes(file[offset..offset + 4].try_into().unwrap()) as usize;
    assert_eq!(size as u64, dv["sizeInBytes"].as_u64().unwrap());
    let data = &file[offset + 4..offset + 4 + size];
    let crc = u32::from_be_bytes(
        file[offset + 4 + size..offset + 8 + size]
            .try_into()
            .unwrap(),
    );
    assert_eq!(crc, crc32fast::hash(data), "CRC-32 of the vector");
    assert_eq!(
        u32::from_le_bytes(data[..4].try_into().unwrap()),
        1_681_511_377,
        "little-endian magic"
    );
    let rows = RoaringTreemap::deserialize_from(&data[4..]).unwrap();
    assert_eq!(rows.len(), dv["cardinality"].as_u64().unwrap());
    rows
}

/// The actions of `table`'s log entries 0..=`version`, in order.
fn actions(root: &Path, table: &str, version: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for v in 0..=version {
        let text =
            std::fs::read_to_string(root.join(table).join(format!("_delta_log/{v:020}.json")))
                .unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

/// The files of `table` at `version` (path -> its add action), the Delta
/// way: an add replaces the file with the same path, a remove takes it out.
/// The log is replayed from version 0, or, once it was cleaned up (no
/// version 0), from the newest log checkpoint at or before `version`.
fn live_files(root: &Path, table: &str, version: u64) -> BTreeMap<String, Value> {
    let log = root.join(table).join("_delta_log");
    let (mut files, from) = if log.join(format!("{:020}.json", 0)).exists() {
        (BTreeMap::new(), 0)
    } else {
        let base = (0..=version)
            .rev()
            .find(|v| log.join(format!("{v:020}.checkpoint.parquet")).exists())
            .expect("a cleaned-up log starts at a log checkpoint");
        (checkpoint_adds(root, table, base), base + 1)
    };
    for v in from..=version {
        let text = std::fs::read_to_string(log.join(format!("{v:020}.json"))).unwrap();
        for action in text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
        {
            if let Some(add) = action.get("add") {
                files.insert(add["path"].as_str().unwrap().to_owned(), add.clone());
            } else if let Some(remove) = action.get("remove") {
                let gone = files.remove(remove["path"].as_str().unwrap()).unwrap();
                let dv = |a: &Value| {
                    a.get("deletionVector")
                        .filter(|d| !d.is_null())
                        .map(|d| (d["pathOrInlineDv"].clone(), d["offset"].as_i64()))
                };
                assert_eq!(
                    dv(&gone),
                    dv(remove),
                    "a remove names the deletion vector its file was added with"
                );
            }
        }
    }
    files
}

/// The `state` table at `version`: every row no deletion vector marks.
fn state_at(root: &Path, version: u64, stats: &mut DvStats) -> Model {
    let dir = root.join("state");
    let mut rows = Model::new();
    for (path, add) in live_files(root, "state", version) {
        let deleted = add
            .get("deletionVector")
            .map(|dv| read_dv(&dir, dv))
            .unwrap_or_default();
        stats.vectors += u64::from(!deleted.is_empty());
        stats.rows_deleted += deleted.len();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(dir.join(&path)).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut row = 0_u64;
        for batch in reader {
            let batch = batch.unwrap();
            let keys = binary(&batch, "key");
            let values = binary(&batch, "value");
            for r in 0..batch.num_rows() {
                if !deleted.contains(row) {
                    let old = rows.insert(keys.value(r).to_vec(), values.value(r).to_vec());
                    assert!(
                        old.is_none(),
                        "a key is live in two rows at version {version}"
                    );
                }
                row += 1;
            }
        }
        let stats_json: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        assert_eq!(stats_json["numRecords"].as_u64(), Some(row), "{path}");
    }
    rows
}

/// The `add` actions of `table`'s Delta log checkpoint at `version` (path
/// -> the action as JSON, as the log writes it).
fn checkpoint_adds(root: &Path, table: &str, version: u64) -> BTreeMap<String, Value> {
    let file = root
        .join(table)
        .join(format!("_delta_log/{version:020}.checkpoint.parquet"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut adds = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let rows = arrow_json_rows(&batch);
        for row in rows {
            if let Some(add) = row.get("add").filter(|a| !a.is_null()) {
                adds.insert(add["path"].as_str().unwrap().to_owned(), add.clone());
            }
        }
    }
    adds
}

/// A batch's rows as JSON objects, nested structs and maps included, in
/// the shape the Delta log's JSON has (a map as an object).
fn arrow_json_rows(batch: &arrow_array::RecordBatch) -> Vec<serde_json::Map<String, Value>> {
    use arrow_array::cast::AsArray;
    fn value(array: &dyn Array, row: usize) -> Value {
        if array.is_null(row) {
            return Value::Null;
        }
        match array.data_type() {
            arrow_schema::DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
            arrow_schema::DataType::Int64 => Value::from(
                array
                    .as_primitive::<arrow_array::types::Int64Type>()
                    .value(row),
            ),
            arrow_schema::DataType::Int32 => Value::from(
                array
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .value(row),
            ),
            arrow_schema::DataType::Boolean => Value::from(array.as_boolean().value(row)),
            arrow_schema::DataType::Struct(fields) => {
                let s = array.as_struct();
                let mut out = serde_json::Map::new();
                for (i, f) in fields.iter().enumerate() {
                    let v = value(s.column(i).as_ref(), row);
                    if !v.is_null() {
                        out.insert(f.name().clone(), v);
                    }
                }
                Value::Object(out)
            }
            arrow_schema::DataType::Map(_, _) => {
                let m = array.as_map();
                let entries = m.value(row);
                let (keys, values) = (entries.column(0), entries.column(1));
                let mut out = serde_json::Map::new();
                for i in 0..entries.len() {
                    out.insert(
                        keys.as_string::<i32>().value(i).to_owned(),
                        value(values.as_ref(), i),
                    );
                }
                Value::Object(out)
            }
            arrow_schema::DataType::List(_) => {
                let items = array.as_list::<i32>().value(row);
                Value::Array((0..items.len()).map(|i| value(items.as_ref(), i)).collect())
            }
            other => panic!("unexpected type {other}"),
        }
    }
    (0..batch.num_rows())
        .map(|row| {
            let mut out = serde_json::Map::new();
            for (i, f) in batch.schema().fields().iter().enumerate() {
                out.insert(f.name().clone(), value(batch.column(i).as_ref(), row));
            }
            out
        })
        .collect()
}

fn binary<'a>(batch: &'a arrow_array::RecordBatch, name: &str) -> &'a BinaryArray {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref()
        .unwrap()
}

#[derive(Default)]
struct DvStats {
    vectors: u64,
    rows_deleted: u64,
}

/// A splitmix64 step: a seeded stream without a dependency.
fn next(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `puts` puts of round `round` over 150 keys (key `(i * stride + round) %
/// 150`), on two cores, synced.
fn put_round(m: &mut PerCoreWalManager, model: &mut Model, round: u64, puts: u64, stride: u64) {
    for i in 0..puts {
        let key = format!("k{:03}", (i * stride + round) % 150).into_bytes();
        let value = format!("r{round}-{i}").into_bytes();
        m.writer((i % 2) as usize).append_put(&key, &value).unwrap();
        model.insert(key, value);
    }
    m.sync_all().unwrap();
}

fn settings() -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows: 64,
        snapshot_every: 4,
        log_checkpoint_interval: 5,
        gc_grace_secs: 0,
        gc_grace_check: walhouse::checkpoint::GraceCheck::Off,
        ..CheckpointSettings::default()
    }
}

#[tokio::test]
async fn every_version_of_the_state_table_is_the_model_at_that_checkpoint() {
    const CHECKPOINTS: u64 = 12;
    const KEYS: u64 = 400;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("table");
    let store = Store::local(&root).unwrap();
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let mut rng = 20_261_207_u64;
    let mut model = Model::new();
    let mut models = vec![Model::new()];
    let (mut puts, mut deletes) = (0_u64, 0_u64);
    for round in 1..=CHECKPOINTS {
        for _ in 0..(50 + next(&mut rng) % 300) {
            let id = next(&mut rng) % KEYS;
            let key = format!("key-{id:05}").into_bytes();
            // A key lives on one core, so its operations keep their order.
            let core = (id % 2) as usize;
            if next(&mut rng).is_multiple_of(4) {
                m.writer(core).append_delete(&key).unwrap();
                model.remove(&key);
                deletes += 1;
            } else {
                let value = format!("v{round}-{}", next(&mut rng)).into_bytes();
                m.writer(core).append_put(&key, &value).unwrap();
                model.insert(key, value);
                puts += 1;
            }
        }
        m.writer(0)
            .append_commit(
                std::collections::HashMap::from([("kafka-0".to_owned(), round * 100)]),
                Some(round as i64),
            )
            .unwrap();
        m.sync_all().unwrap();
        // Back to back: each checkpoint waits for the state table's build
        // of the one before, after its own commit.
        let out = cp.checkpoint(&mut m).await.unwrap();
        assert_eq!(out.manifest.checkpoint, round);
        models.push(model.clone());
    }
    cp.finish_state().await.unwrap();

    let mut dv = DvStats::default();
    for (version, expected) in models.iter().enumerate().skip(1) {
        let got = state_at(&root, version as u64, &mut dv);
        assert_eq!(&got, expected, "state table at version {version}");
    }
    assert!(
        dv.vectors > 0,
        "some versions carry deletion vectors (snapshot every 4 checkpoints)"
    );

    // The changelog: every put and delete once, over all versions.
    let files = live_files(&root, "changelog", CHECKPOINTS);
    let (mut got_puts, mut got_deletes) = (0_u64, 0_u64);
    for (path, add) in &files {
        assert!(add.get("deletionVector").is_none());
        let epoch = add["partitionValues"]["epoch"].as_str().unwrap();
        assert!(path.starts_with(&format!("epoch={epoch}/")), "{path}");
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            File::open(root.join("changelog").join(path)).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ops: &StringArray = batch
                .column_by_name("op")
                .unwrap()
                .as_any()
                .downcast_ref()
                .unwrap();
            for r in 0..ops.len() {
                match ops.value(r) {
                    "put" => got_puts += 1,
                    "delete" => got_deletes += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!((got_puts, got_deletes), (puts, deletes));
    assert!(
        actions(&root, "changelog", CHECKPOINTS)
            .iter()
            .all(|a| a.get("remove").is_none()),
        "the changelog is append-only"
    );

    // txn: the last offset of each source, in both tables.
    for table in ["changelog", "state"] {
        let mut last = BTreeMap::new();
        for action in actions(&root, table, CHECKPOINTS) {
            if let Some(txn) = action.get("txn") {
                last.insert(
                    txn["appId"].as_str().unwrap().to_owned(),
                    txn["version"].as_i64().unwrap(),
                );
            }
        }
        assert_eq!(
            last,
            BTreeMap::from([("kafka-0".to_owned(), (CHECKPOINTS * 100) as i64)]),
            "{table}"
        );
    }

    // Delta log checkpoints at versions 5 and 10: each holds exactly the
    // files the log replay gives, and `_last_checkpoint` names the newest.
    for table in ["changelog", "state"] {
        for version in [5, 10] {
            assert_eq!(
                checkpoint_adds(&root, table, version),
                live_files(&root, table, version),
                "{table} checkpoint {version}"
            );
        }
        let hint: Value = serde_json::from_slice(
            &std::fs::read(root.join(table).join("_delta_log/_last_checkpoint")).unwrap(),
        )
        .unwrap();
        assert_eq!(hint["version"], 10, "{table}: {hint}");
    }

    // Recovery from the store alone reads the same state.
    let fresh = recover(&store, &PerCoreWalConfig::new(&tmp.path().join("none"), 2))
        .await
        .unwrap();
    assert_eq!(fresh.state.state, model);
    println!(
        "delta tables: {CHECKPOINTS} versions of the state table read through the log alone, \
         each = the model at its checkpoint ({} keys at the end); {} deletion vectors \
         decoded over all versions, {} rows marked deleted; changelog {puts} puts + \
         {deletes} deletes in {} files; txn kafka-0 = {}; Delta log checkpoints at 5 and 10 \
         of both tables = the log replay, _last_checkpoint = 10",
        model.len(),
        dv.vectors,
        dv.rows_deleted,
        files.len(),
        CHECKPOINTS * 100
    );
}

#[tokio::test]
async fn a_state_version_lost_in_a_crash_is_recovered_from_the_changelog_and_built_again() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("table");
    let store = Store::local(&root).unwrap();
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    let config = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let mut model = Model::new();
    for round in 0..3_u64 {
        put_round(&mut m, &mut model, round, 100, 7);
        cp.checkpoint(&mut m).await.unwrap();
    }
    cp.finish_state().await.unwrap();
    let entry = |v: u64| root.join(format!("state/_delta_log/{v:020}.json"));
    let written = std::fs::read(entry(3)).unwrap();
    assert!(
        String::from_utf8_lossy(&written).contains("deletionVector"),
        "checkpoint 3 marks rows of older files"
    );

    // A crash after the changelog's commit, before the state table's
    // entry: recovery reads version 2 plus checkpoint 3's changelog.
    std::fs::remove_file(entry(3)).unwrap();
    drop(m);
    let model_3 = model.clone();
    let recovered = recover(&store, &config).await.unwrap();
    assert_eq!(recovered.state.state, model);
    assert!(!entry(3).exists(), "recovery only reads");

    // The next checkpoint's build writes version 3 again (new files, the
    // same rows), then its own.
    let mut m = PerCoreWalManager::open(config).unwrap();
    m.writer(0).append_put(b"k000", b"last").unwrap();
    m.sync_all().unwrap();
    model.insert(b"k000".to_vec(), b"last".to_vec());
    let out = cp.checkpoint(&mut m).await.unwrap();
    assert_eq!(out.manifest.checkpoint, 4);
    let built = cp.finish_state().await.unwrap();
    assert_eq!(built.versions, [3, 4]);
    let mut dv = DvStats::default();
    assert_eq!(state_at(&root, 3, &mut dv), model_3);
    assert_eq!(state_at(&root, 4, &mut dv), model);
    let fresh = recover(&store, &PerCoreWalConfig::new(&tmp.path().join("none"), 2))
        .await
        .unwrap();
    assert_eq!(fresh.state.state, model);
    println!(
        "state entry 3 ({} bytes) removed: recovery = version 2 + changelog 3 = the model; \
         checkpoint 4's build wrote versions 3 and 4, each = the model at its checkpoint",
        written.len()
    );
}

#[tokio::test]
async fn gc_keeps_the_newest_state_version_while_the_state_table_lags() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("table");
    let store = Store::local(&root).unwrap();
    let keep_one = CheckpointSettings {
        retain_checkpoints: 1,
        ..settings()
    };
    let cp = Checkpointer::new(store.clone(), keep_one.clone()).unwrap();
    let config = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let mut model = Model::new();
    for round in 0..3_u64 {
        put_round(&mut m, &mut model, round, 120, 11);
        cp.checkpoint(&mut m).await.unwrap();
        cp.finish_state().await.unwrap();
    }
    // A crash after checkpoint 3's commit, before its state entry: version
    // 2 is the newest, and only checkpoint 3 is retained.
    let entry3 = root.join("state/_delta_log/00000000000000000003.json");
    std::fs::remove_file(&entry3).unwrap();
    drop(m);
    let gc = cp.gc().await.unwrap();
    assert_eq!(gc.retained, [3]);
    let v2 = cp.state_version(2).await.unwrap().unwrap();
    for file in v2.referenced_files() {
        assert!(
            root.join(&file.path).exists(),
            "{} of the newest state version was collected",
            file.path
        );
    }
    let recovered = recover(&store, &config).await.unwrap();
    assert_eq!(recovered.state.state, model);
    let built = Checkpointer::new(store.clone(), keep_one)
        .unwrap()
        .finish_state()
        .await
        .unwrap();
    assert_eq!(built.versions, [3]);
    let mut dv = DvStats::default();
    assert_eq!(state_at(&root, 3, &mut dv), model);
    println!(
        "state table one version behind, retention 1: gc removed {} objects and kept the {} \
         files of version 2; recovery and the build of version 3 from it = the model ({} keys)",
        gc.objects_removed.len(),
        v2.referenced_files().len(),
        model.len()
    );
}

#[tokio::test]
async fn table_roots_that_are_not_walhouse_delta_tables_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The layout before Delta Lake.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(old.join("manifests")).unwrap();
    std::fs::write(old.join("manifests/00000000000000000001.json"), b"{}").unwrap();
    let cp = Checkpointer::new(Store::local(&old).unwrap(), settings()).unwrap();
    let err = cp.latest().await.unwrap_err();
    println!("old layout: {err}");
    assert!(
        matches!(err, CheckpointError::OldLayout { manifests: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("old layout"), "{err}");

    // Another program's Delta table at `changelog/`.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(foreign.join("changelog/_delta_log")).unwrap();
    std::fs::write(
        foreign.join("changelog/_delta_log/00000000000000000000.json"),
        b"{\"protocol\":{\"minReaderVersion\":1,\"minWriterVersion\":2}}\n",
    )
    .unwrap();
    let cp = Checkpointer::new(Store::local(&foreign).unwrap(), settings()).unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 1)).unwrap();
    m.writer(0).append_put(b"k", b"v").unwrap();
    m.sync_all().unwrap();
    let err = cp.checkpoint(&mut m).await.unwrap_err();
    println!("foreign table: {err}");
    assert!(
        matches!(err, CheckpointError::CorruptObject { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("00000000000000000000.json"),
        "{err}"
    );
    let kept: BTreeSet<_> = std::fs::read_dir(foreign.join("changelog/_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(kept.len(), 1, "nothing committed: {kept:?}");
    assert_eq!(
        common::ops(&m.merge_segments().unwrap()),
        vec![(b"k".to_vec(), Some(b"v".to_vec()))],
        "the WAL is kept"
    );
}

/// The `metaData` action a reader ends with after replaying `table`'s log
/// up to `version`.
fn latest_metadata(root: &Path, table: &str, version: u64) -> Value {
    actions(root, table, version)
        .into_iter()
        .filter_map(|a| a.get("metaData").cloned())
        .next_back()
        .unwrap()
}

#[tokio::test]
async fn the_owner_is_a_table_property_set_again_after_a_take_over() {
    use walhouse::checkpoint::{TableOwner, OWNER_PROPERTY};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("table");
    let store = Store::local(&root).unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let write = |m: &mut PerCoreWalManager, round: u32| {
        for i in 0..50_u32 {
            m.writer((i % 2) as usize)
                .append_put(format!("k{i}").as_bytes(), format!("r{round}").as_bytes())
                .unwrap();
        }
        m.sync_all().unwrap();
    };
    TableOwner::new("owner-a", tmp.path())
        .claim(&store)
        .await
        .unwrap();
    let a = Checkpointer::new(store.clone(), settings())
        .unwrap()
        .with_owner("owner-a");
    for round in 0..2 {
        write(&mut m, round);
        a.checkpoint(&mut m).await.unwrap();
    }
    a.finish_state().await.unwrap();
    let created = latest_metadata(&root, "changelog", 0);
    for table in ["changelog", "state"] {
        let meta = latest_metadata(&root, table, 2);
        assert_eq!(meta["configuration"][OWNER_PROPERTY], "owner-a", "{table}");
        let entry2 = actions(&root, table, 2).len() - actions(&root, table, 1).len();
        assert!(entry2 > 0);
        assert!(
            !actions(&root, table, 2)[actions(&root, table, 1).len()..]
                .iter()
                .any(|a| a.get("metaData").is_some()),
            "{table}: no metaData while the owner stays"
        );
    }

    // A new data directory takes the table over: its first checkpoint sets
    // the property anew in both tables, keeping the table's identity.
    TableOwner::new("owner-b", tmp.path())
        .take_over(&store)
        .await
        .unwrap();
    let b = Checkpointer::new(store.clone(), settings())
        .unwrap()
        .with_owner("owner-b");
    write(&mut m, 2);
    b.checkpoint(&mut m).await.unwrap();
    b.finish_state().await.unwrap();
    for table in ["changelog", "state"] {
        let meta = latest_metadata(&root, table, 3);
        assert_eq!(meta["configuration"][OWNER_PROPERTY], "owner-b", "{table}");
        assert_eq!(
            meta["id"],
            latest_metadata(&root, table, 0)["id"],
            "{table}"
        );
        assert_eq!(
            meta["schemaString"],
            latest_metadata(&root, table, 0)["schemaString"]
        );
    }
    assert_eq!(created["configuration"][OWNER_PROPERTY], "owner-a");
    // The old owner's writer commits nothing more.
    write(&mut m, 3);
    assert!(matches!(
        a.checkpoint(&mut m).await.unwrap_err(),
        CheckpointError::NotOwner { .. }
    ));
    println!(
        "owner property: owner-a at creation of both tables, owner-b from version 3 (the take-over's \
         first checkpoint), table ids unchanged"
    );
}

#[tokio::test]
async fn the_log_is_cleaned_up_behind_a_log_checkpoint_and_readers_start_from_it() {
    use walhouse::checkpoint::{list_manifests, TableOwner, OWNER_PROPERTY};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("table");
    let store = Store::local(&root).unwrap();
    let keep = CheckpointSettings {
        retain_checkpoints: 3,
        ..settings()
    };
    let cp = Checkpointer::new(store.clone(), keep.clone()).unwrap();
    let config = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let mut model = Model::new();
    for round in 0..13_u64 {
        put_round(&mut m, &mut model, round, 60, 7);
        cp.checkpoint(&mut m).await.unwrap();
        cp.finish_state().await.unwrap();
    }
    let changelog_before = live_files(&root, "changelog", 13);
    let log = |table: &str, name: String| root.join(table).join("_delta_log").join(name);
    // Retained: 11 to 13; the newest log checkpoint at or before 11 is 10.
    let gc = cp.gc().await.unwrap();
    assert_eq!(gc.retained, [11, 12, 13]);
    let json = |v: u64| format!("{v:020}.json");
    for table in ["changelog", "state"] {
        for v in 0..10 {
            assert!(!log(table, json(v)).exists(), "{table} version {v} stayed");
        }
        assert!(!log(table, format!("{:020}.checkpoint.parquet", 5)).exists());
        for v in 10..=13 {
            assert!(
                log(table, json(v)).exists(),
                "{table} version {v} was removed"
            );
        }
        assert!(log(table, format!("{:020}.checkpoint.parquet", 10)).exists());
    }
    // 10 entries and 1 log checkpoint per table, and the snapshot at 5.
    assert_eq!(
        gc.log_objects_removed.len(),
        2 * (10 + 1 + 1),
        "{:?}",
        gc.log_objects_removed
    );
    assert_eq!(list_manifests(&store).await.unwrap(), [10, 11, 12, 13]);

    // A Delta reader starts from log checkpoint 10: the same changelog
    // files (all still there) and the state of the model.
    let changelog_after = live_files(&root, "changelog", 13);
    assert_eq!(
        changelog_after.keys().collect::<Vec<_>>(),
        changelog_before.keys().collect::<Vec<_>>()
    );
    for path in changelog_after.keys() {
        assert!(
            root.join("changelog").join(path).exists(),
            "{path} was collected"
        );
    }
    let mut dv = DvStats::default();
    assert_eq!(state_at(&root, 13, &mut dv), model);
    assert_eq!(recover(&store, &config).await.unwrap().state.state, model);

    // Writing goes on: the next log checkpoint (15) starts from the
    // snapshot at 10, and a new owner's metadata comes from it too.
    TableOwner::new("owner-b", tmp.path())
        .claim(&store)
        .await
        .unwrap();
    let b = Checkpointer::new(store.clone(), keep)
        .unwrap()
        .with_owner("owner-b");
    for round in 13..15_u64 {
        put_round(&mut m, &mut model, round, 60, 7);
        b.checkpoint(&mut m).await.unwrap();
        b.finish_state().await.unwrap();
    }
    let at_15 = checkpoint_adds(&root, "changelog", 15);
    assert_eq!(
        at_15.keys().collect::<Vec<_>>(),
        live_files(&root, "changelog", 15)
            .keys()
            .collect::<Vec<_>>()
    );
    assert_eq!(state_at(&root, 15, &mut dv), model);
    assert_eq!(recover(&store, &config).await.unwrap().state.state, model);
    for table in ["changelog", "state"] {
        let text = std::fs::read_to_string(log(table, json(14))).unwrap();
        let meta = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find_map(|a| a.get("metaData").cloned())
            .unwrap_or_else(|| panic!("{table}: no metaData in the take-over's version 14"));
        assert_eq!(meta["configuration"][OWNER_PROPERTY], "owner-b", "{table}");
        assert_eq!(meta["configuration"]["walhouse.table"], table);
    }
    // A gc after the cleanup finds the changelog files of the versions
    // whose entries are gone in the snapshot at 10: it keeps them all.
    let again = b.gc().await.unwrap();
    for path in live_files(&root, "changelog", 15).keys() {
        assert!(
            root.join("changelog").join(path).exists(),
            "{path} was collected"
        );
    }
    assert_eq!(state_at(&root, 15, &mut dv), model);
    println!(
        "13 checkpoints, log checkpoints every 5, 3 retained: gc removed {} log objects (versions \
         0 to 9, log checkpoint 5 and its snapshot, of both tables); a Delta reader from log \
         checkpoint 10 sees the {} changelog files and the state of the model ({} keys, {} \
         deletion vectors); checkpoints 14 and 15 (log checkpoint 15 built from the snapshot at \
         10, a new owner's metadata from it) and recovery equal the model; a second gc removed \
         {} log objects",
        gc.log_objects_removed.len(),
        changelog_after.len(),
        model.len(),
        dv.vectors,
        again.log_objects_removed.len()
    );
}
