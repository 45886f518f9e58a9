//! Damage to the WAL that can be detected is never a silently shorter
//! state: a core's oldest segment deleted when no checkpoint covers it is an
//! error naming the core, the file and the sequences; every byte range a
//! repair removes is reported (file, range, reason) by checkpoint recovery
//! and by `PerCoreWalManager::open` alike.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use walhouse::checkpoint::{recover, CheckpointError, CheckpointSettings, Checkpointer};
use walhouse::per_core_wal::{
    ErrorKind, PerCoreRecoveredState, PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalError,
    PerCoreWalManager, Repair,
};
use walhouse::store::Store;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// 2 cores, segments of 4 KiB: several sealed segments per core.
fn write(dir: &Path, model: &mut Model, from: u64, to: u64) -> PerCoreWalConfig {
    let config = PerCoreWalConfig::new(dir, 2).with_segment_bytes(4096);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    for i in from..to {
        let (k, v) = common::kv(i, 60);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
        model.insert(k, v);
    }
    m.sync_all().unwrap();
    config
}

fn file_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[tokio::test]
async fn the_oldest_segment_deleted_without_a_checkpoint_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let wal = write(tmp.path(), &mut model, 0, 600);
    let store = Store::memory();
    // Intact: everything comes back.
    let r = recover(&store, &wal).await.unwrap();
    assert_eq!(r.state.state, model);

    let segments = common::core_segments(tmp.path(), 1);
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();
    let err = recover(&store, &wal).await.unwrap_err();
    println!("oldest segment of core 1 deleted, no checkpoint: {err}");
    let CheckpointError::Wal(wal_err) = &err else {
        panic!("expected a WAL error, got {err}");
    };
    assert_eq!(wal_err.kind(), ErrorKind::Corrupt);
    let PerCoreWalError::MissingSegments {
        path,
        core_id,
        expected,
        found,
        covered,
    } = wal_err
    else {
        panic!("expected MissingSegments, got {wal_err}");
    };
    assert_eq!((*core_id, *expected, *covered), (1, 0, None));
    assert_eq!(path, &segments[1], "names the oldest remaining segment");
    assert!(*found > 0);
    let text = err.to_string();
    for part in [
        "core 1",
        file_name(&segments[1]),
        &format!("starts at sequence {found}"),
        "no checkpoint covers this core",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }

    // The seed's WAL-only recovery cannot know what a checkpoint removed,
    // but told what is covered it refuses too.
    let seed = PerCoreRecoveryManager::new(wal.clone());
    assert!(seed.recover().is_ok());
    let err = seed
        .recover_onto(PerCoreRecoveredState::default(), &[Some(5), Some(5)])
        .unwrap_err();
    assert!(
        matches!(err, PerCoreWalError::MissingSegments { core_id: 1, .. }),
        "{err}"
    );
    println!(
        "entries {expected}..{found} of core 1 would have been lost; refused by checkpoint \
         recovery and by recover_onto with coverage"
    );
}

#[tokio::test]
async fn segments_a_checkpoint_covers_may_be_gone_and_a_core_that_never_wrote_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let wal_dir = tmp.path().join("wal");
    let wal = PerCoreWalConfig::new(&wal_dir, 3).with_segment_bytes(4096);
    let store = Store::memory();
    let cp = Checkpointer::new(store.clone(), CheckpointSettings::default()).unwrap();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    // Core 2 never writes.
    for i in 0..600_u64 {
        let (k, v) = common::kv(i, 60);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
        model.insert(k, v);
    }
    m.sync_all().unwrap();
    cp.checkpoint(&mut m).await.unwrap(); // removes the covered segments
    for i in 600..700_u64 {
        let (k, v) = common::kv(i, 60);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
        model.insert(k, v);
    }
    m.sync_all().unwrap();
    drop(m);
    let oldest = common::core_segments(&wal_dir, 0);
    assert_ne!(
        file_name(&oldest[0]),
        "wal-0-0000000000.log",
        "covered ones removed"
    );
    let r = recover(&store, &wal).await.unwrap();
    assert_eq!(r.state.state, model);
    assert!(r.state.repairs.is_empty(), "{:?}", r.state.repairs);
    println!(
        "the checkpoint removed core 0's segments before {}: recovered {} keys, no error",
        file_name(&oldest[0]),
        r.state.state.len()
    );
}

/// Cuts `path` to `len` bytes.
fn cut(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn assert_removed_whole(repairs: &[Repair], victim: &Path, len: u64) {
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    let r = &repairs[0];
    assert_eq!(
        (r.core_id, r.path.file_name(), r.from, r.to),
        (0, victim.file_name(), 0, len),
        "{r}"
    );
    assert!(r.reason.contains("header"), "{r}");
    assert!(r.to_string().contains(file_name(victim)), "{r}");
}

#[tokio::test]
async fn a_newest_segment_with_an_incomplete_header_is_removed_and_reported_by_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut model = Model::new();
    let wal = write(&dir, &mut model, 0, 300);
    {
        // A crash while creating core 0's next segment: its header is cut
        // at 10 bytes.
        let mut m = PerCoreWalManager::open(wal.clone()).unwrap();
        m.writer(0).rotate().unwrap();
    }
    let victim = common::core_segments(&dir, 0).pop().unwrap();
    cut(&victim, 10);
    let for_open = tmp.path().join("wal-copy");
    copy_dir(&dir, &for_open);

    // Checkpoint recovery (what `walhouse recover` runs).
    let r = recover(&Store::memory(), &wal).await.unwrap();
    println!("recover: {:?}", r.state.repairs);
    assert_eq!(r.state.state, model);
    assert_removed_whole(&r.state.repairs, &victim, 10);
    assert!(!victim.exists());

    // The seed's path: open repairs the same way and says so.
    let m = PerCoreWalManager::open(PerCoreWalConfig::new(&for_open, 2).with_segment_bytes(4096))
        .unwrap();
    let report = &m.open_reports()[0];
    println!("open: {:?}", report.repairs);
    assert!(report.removed_empty_segment);
    assert_removed_whole(&report.repairs, &victim, 10);
    assert!(m.open_reports()[1].repairs.is_empty());
    drop(m);
    let after = recover(
        &Store::memory(),
        &PerCoreWalConfig::new(&for_open, 2).with_segment_bytes(4096),
    )
    .await
    .unwrap();
    assert_eq!(after.state.state, model);
    println!(
        "a 10-byte header of {}: removed [0, 10) and reported by recover and by open; \
         {} keys kept",
        file_name(&victim),
        model.len()
    );
}

#[tokio::test]
async fn a_torn_tail_cut_is_reported_with_its_range() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let wal = write(tmp.path(), &mut model, 0, 100);
    let newest = common::core_segments(tmp.path(), 1).pop().unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    // Garbage after the last record: half a record header.
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&newest, &bytes).unwrap();
    let r = recover(&Store::memory(), &wal).await.unwrap();
    assert_eq!(r.state.state, model);
    let repair = &r.state.repairs[..];
    assert_eq!(repair.len(), 1, "{repair:?}");
    assert_eq!(
        (
            repair[0].core_id,
            &repair[0].path,
            repair[0].from,
            repair[0].to
        ),
        (1, &newest, len, len + 3)
    );
    assert_eq!(r.state.truncated_bytes, vec![0, 3]);
    println!("torn tail reported: {}", repair[0]);
}

/// Before: `recover` removed a core's only segment (number 0) whose header
/// was incomplete and went on, while `PerCoreWalManager::open` failed with
/// "no WAL segment found for core 1". Both now remove it and report it.
#[tokio::test]
async fn a_cores_only_segment_with_an_incomplete_header_is_treated_alike_by_open_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let config = PerCoreWalConfig::new(&dir, 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    m.writer(0).append_put(b"k", b"v").unwrap();
    m.sync_all().unwrap();
    drop(m);
    // Core 1 never wrote: its only segment, 0, is cut inside its header.
    let victim = common::core_segments(&dir, 1).pop().unwrap();
    let header_len = std::fs::metadata(&victim).unwrap().len();
    cut(&victim, 10);
    let for_open = tmp.path().join("wal-copy");
    copy_dir(&dir, &for_open);

    let r = recover(&Store::memory(), &config).await.unwrap();
    assert_eq!(r.state.state.len(), 1);
    assert_eq!(r.state.repairs.len(), 1, "{:?}", r.state.repairs);
    assert_eq!((r.state.repairs[0].core_id, r.state.repairs[0].to), (1, 10));

    let mut m = PerCoreWalManager::open(PerCoreWalConfig::new(&for_open, 2)).unwrap();
    let report = &m.open_reports()[1];
    assert_eq!(
        report.repairs,
        r.state
            .repairs
            .iter()
            .map(|x| Repair {
                path: for_open.join(x.path.file_name().unwrap()),
                ..x.clone()
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(report.next_sequence, 0);
    m.writer(1).append_put(b"k1", b"v1").unwrap();
    m.sync_all().unwrap();
    println!(
        "core 1's only segment cut from {header_len} to 10 bytes: removed and reported by \
         recover and by open (which reopens the core at sequence 0)"
    );
}

/// The ingester opens the WAL knowing the newest checkpoint (here: none),
/// so it refuses a log whose oldest segment is gone, as recovery does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingester_refuses_to_open_a_log_missing_its_oldest_segment() {
    use walhouse::runtime::{IngestSettings, Ingester, WriteOp};
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let settings = IngestSettings {
        cores: 2,
        pin_threads: false,
        segment_bytes: 4096,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        ..IngestSettings::default()
    };
    let open = || {
        Ingester::builder(tmp.path(), store.clone())
            .settings(settings.clone())
            .open()
    };
    let ingester = open().await.unwrap();
    let ops = (0..400_u64)
        .map(|i| {
            let (key, value) = common::kv(i, 60);
            WriteOp::Put { key, value }
        })
        .collect();
    ingester.put_batch(ops).await.unwrap();
    ingester.shutdown(false).await.unwrap();
    let wal = tmp.path().join("wal");
    let segments = common::core_segments(&wal, 0);
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();
    let err = open().await.unwrap_err().to_string();
    println!("ingester open without core 0's oldest segment: {err}");
    assert!(err.contains("gap in core 0"), "{err}");
    assert!(err.contains(file_name(&segments[1])), "{err}");
}
