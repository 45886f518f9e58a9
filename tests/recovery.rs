//! Recovery from the newest checkpoint plus the WAL tail: the state equals a
//! model of everything acknowledged, with or without a local WAL, twice in a
//! row; a damaged newest checkpoint is an error naming the object, never a
//! fallback to an older one.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

mod common;

use std::collections::{BTreeMap, HashMap};

use object_store::ObjectStoreExt;
use walhouse::checkpoint::{
    manifest_path, recover, CheckpointError, CheckpointSettings, Checkpointer,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Appends ops `from..to` (2 cores; a key lives on one core) and a commit;
/// applies them to `model`.
fn ingest(m: &mut PerCoreWalManager, model: &mut Model, from: u64, to: u64) {
    for i in from..to {
        let key = format!("k{:04}", i % 300).into_bytes();
        let w = m.writer((i % 300 % 2) as usize);
        if i % 7 == 6 {
            w.append_delete(&key).unwrap();
            model.remove(&key);
        } else {
            let value = format!("v{i}").into_bytes();
            w.append_put(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    let offsets: HashMap<String, u64> = [("src".to_owned(), to)].into();
    m.writer(1).append_commit(offsets, Some(to as i64)).unwrap();
    m.sync_all().unwrap();
}

fn settings(snapshot_every: u64) -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows: 100,
        snapshot_every,
        ..CheckpointSettings::default()
    }
}

#[tokio::test]
async fn checkpoint_plus_wal_tail_equals_everything_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let cp = Checkpointer::new(store.clone(), settings(3)).unwrap();
    let mut model = Model::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 0, 1000);
    cp.checkpoint(&mut m).await.unwrap();
    cp.finish_state().await.unwrap(); // the state table's version 1: a snapshot
    ingest(&mut m, &mut model, 1000, 1600);
    let second = cp.checkpoint(&mut m).await.unwrap().manifest; // delta only
    cp.finish_state().await.unwrap(); // version 2: changes + deletion vectors
    assert_eq!(second.state.snapshot_checkpoint, 1);
    assert!(!second.state.deltas.is_empty());
    ingest(&mut m, &mut model, 1600, 1900); // the WAL tail
    let next_before = m.next_sequences();
    drop(m);

    let r = recover(&store, &wal).await.unwrap();
    println!(
        "recovered checkpoint {:?} + {} WAL entries ({} skipped as covered), {} keys, {} objects verified",
        r.checkpoint,
        r.state.entries_replayed,
        r.state.entries_skipped,
        r.state.state.len(),
        r.objects_verified
    );
    assert_eq!(r.checkpoint, Some(2));
    assert!(r.wal_present);
    assert_eq!(r.state.state, model);
    assert_eq!(r.state.source_offsets.get("src"), Some(&1900));
    assert_eq!(r.state.watermark, Some(1900));
    assert_eq!(r.state.next_sequences, next_before);
    // 300 ops and a commit after checkpoint 2, plus the 2 barriers its seal wrote.
    assert_eq!(r.state.entries_replayed, 300 + 1 + 2);

    // Idempotent, and a reopened WAL continues above every sequence.
    let again = recover(&store, &wal).await.unwrap();
    assert_eq!(again, r);
    let mut m = PerCoreWalManager::open(wal).unwrap();
    assert_eq!(m.next_sequences(), next_before);
    m.writer(0).append_put(b"after", b"x").unwrap();
}

#[tokio::test]
async fn a_new_machine_without_the_wal_recovers_the_checkpoint_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let cp = Checkpointer::new(store.clone(), settings(8)).unwrap();
    let mut model = Model::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 0, 500);
    let manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
    drop(m);
    std::fs::remove_dir_all(&wal.base_dir).unwrap();

    let r = recover(&store, &wal).await.unwrap();
    assert!(!r.wal_present);
    assert_eq!(r.state.state, model);
    let expected_next: Vec<u64> = manifest
        .cores
        .iter()
        .map(|c| c.last_sequence.map_or(0, |s| s + 1))
        .collect();
    assert_eq!(r.state.next_sequences, expected_next);

    // A manager resumed there never reuses a sequence the checkpoint holds.
    let mut m = PerCoreWalManager::builder(wal.clone())
        .resume_at(r.state.next_sequences.clone(), r.state.final_epoch + 1)
        .create()
        .unwrap();
    assert_eq!(m.next_sequences(), expected_next);
    m.writer(0).append_put(b"new", b"1").unwrap();
    m.sync_all().unwrap();
    drop(m);
    model.insert(b"new".to_vec(), b"1".to_vec());
    let r = recover(&store, &wal).await.unwrap();
    assert!(r.wal_present);
    assert_eq!(r.state.state, model);
}

#[tokio::test]
async fn a_damaged_newest_checkpoint_is_an_error_naming_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let table = tmp.path().join("table");
    let store = Store::local(&table).unwrap();
    let cp = Checkpointer::new(store.clone(), settings(1)).unwrap();
    let mut model = Model::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 0, 300);
    cp.checkpoint(&mut m).await.unwrap();
    ingest(&mut m, &mut model, 300, 400);
    let newest = cp.checkpoint(&mut m).await.unwrap().manifest;
    cp.finish_state().await.unwrap();
    drop(m);
    let mut detected = 0;

    // A referenced object (of the state table's newest version, a full
    // snapshot) cut short: named, no fallback to checkpoint 1.
    let state = cp.state_version(newest.checkpoint).await.unwrap().unwrap();
    assert_eq!(state.snapshot_checkpoint, newest.checkpoint);
    let victim_path = state.snapshot[0].path.clone();
    let victim = table.join(&victim_path);
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &original[..original.len() - 10]).unwrap();
    let err = recover(&store, &wal).await.unwrap_err();
    println!("truncated snapshot: {err}");
    assert!(
        matches!(err, CheckpointError::CorruptObject { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&victim_path));
    detected += 1;

    // A flipped bit (same size): caught by the checksum before decoding.
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 1;
    std::fs::write(&victim, &flipped).unwrap();
    let err = recover(&store, &wal).await.unwrap_err();
    assert!(err.to_string().contains("crc32c"), "{err}");
    detected += 1;

    // Missing object.
    std::fs::remove_file(&victim).unwrap();
    let err = recover(&store, &wal).await.unwrap_err();
    println!("missing snapshot: {err}");
    assert!(err.to_string().contains(&victim_path), "{err}");
    detected += 1;
    std::fs::write(&victim, &original).unwrap();
    assert_eq!(recover(&store, &wal).await.unwrap().state.state, model);

    // Unreadable manifest JSON.
    let manifest = store.path(&manifest_path(newest.checkpoint));
    store
        .object_store()
        .put(&manifest, b"{ not json".to_vec().into())
        .await
        .unwrap();
    let err = recover(&store, &wal).await.unwrap_err();
    println!("bad manifest: {err}");
    assert!(
        err.to_string().contains(&manifest_path(newest.checkpoint)),
        "{err}"
    );
    detected += 1;
    println!(
        "damaged newest checkpoints: 4 injected, {detected} detected, 0 fallbacks to an older one"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_crash_between_the_manifest_and_the_wal_removal_replays_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::memory();
    let cp = Checkpointer::new(store.clone(), settings(8)).unwrap();
    let mut model = Model::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 0, 700);
    // The WAL as it was before the checkpoint removed its segments: what a
    // crash right after the manifest commit leaves on disk.
    let saved = tmp.path().join("saved-wal");
    copy_dir(&wal.base_dir, &saved);
    let manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
    drop(m);
    std::fs::remove_dir_all(&wal.base_dir).unwrap();
    std::fs::rename(&saved, &wal.base_dir).unwrap();

    let r = recover(&store, &wal).await.unwrap();
    println!(
        "WAL entries covered by checkpoint {} and skipped: {}; replayed: {}",
        manifest.checkpoint, r.state.entries_skipped, r.state.entries_replayed
    );
    assert_eq!(r.state.entries_skipped as u64, manifest.stats.entries);
    assert_eq!(r.state.entries_replayed, 0);
    assert_eq!(r.state.state, model);
    // The next checkpoint removes the leftover covered segments first.
    let mut m = PerCoreWalManager::open(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 700, 800);
    let next = cp.checkpoint(&mut m).await.unwrap().manifest;
    // The reopened WAL was at epoch 0 (the covered segments were still on
    // disk), so the new ops and commit are in epoch 0 too; the checkpoint
    // skips the covered ones by sequence and keeps these.
    assert_eq!(next.stats.entries, 100 + 1, "only the new ops and commit");
    drop(m);
    assert_eq!(recover(&store, &wal).await.unwrap().state.state, model);
}

#[tokio::test]
async fn wal_entries_missing_between_checkpoint_and_tail_are_a_gap_error() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::memory();
    let cp = Checkpointer::new(store.clone(), settings(8)).unwrap();
    let mut model = Model::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    ingest(&mut m, &mut model, 0, 300);
    cp.checkpoint(&mut m).await.unwrap();
    ingest(&mut m, &mut model, 300, 400);
    m.writer(0).rotate().unwrap();
    drop(m);
    // Lose core 0's segments after the checkpoint, keep its newest (empty).
    let mut segments = common::core_segments(&wal.base_dir, 0);
    segments.pop();
    for s in &segments {
        std::fs::remove_file(s).unwrap();
    }
    let err = recover(&store, &wal).await.unwrap_err();
    println!("lost WAL segments after a checkpoint: {err}");
    assert!(err.to_string().contains("gap in core 0"), "{err}");
}

/// Issue: `recover` panicked (index out of bounds in the key-range merge)
/// after a checkpoint of at least 131,072 keys when the WAL tail held no put
/// or delete, the normal state right after a checkpoint. The merge is cut in
/// `min(available_parallelism, keys / 65,536)` ranges: with 2 or more CPUs
/// and 140,000 keys, 2 ranges, whose split key came from the (empty) WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_right_after_a_big_checkpoint_with_an_empty_wal_tail() {
    use walhouse::runtime::{IngestSettings, Ingester, WriteOp};
    const KEYS: usize = 140_000;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let settings = IngestSettings {
        cores: 2,
        pin_threads: false,
        ..IngestSettings::default()
    };
    let ingester = Ingester::builder(tmp.path(), store.clone())
        .settings(settings.clone())
        .open()
        .await
        .unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
        let ops = chunk
            .iter()
            .map(|i| WriteOp::Put {
                key: format!("key-{i:07}").into_bytes(),
                value: format!("value {i}").into_bytes(),
            })
            .collect();
        ingester.put_batch(ops).await.unwrap();
    }
    let outcome = ingester.checkpoint().await.unwrap();
    assert_eq!(outcome.manifest.stats.puts, KEYS as u64);
    ingester.shutdown(false).await.unwrap();

    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), settings.cores)
        .with_segment_bytes(settings.segment_bytes);
    let r = recover(&store, &wal).await.unwrap();
    println!(
        "checkpoint {:?} of {KEYS} keys + a WAL tail of {} entries (no put or delete): \
         recovered {} keys on {} CPUs",
        r.checkpoint,
        r.state.entries_replayed,
        r.state.state.len(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    );
    assert_eq!(r.state.state.len(), KEYS);
    assert_eq!(
        r.state.state.get(b"key-0139999"),
        Some(&b"value 139999"[..])
    );
}
