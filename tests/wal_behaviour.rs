//! Behaviour of the WAL through its public API: order, ownership, rotation,
//! removal of covered segments, the seed's methods made safe, poisoning.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::many_single_char_names
)]

mod common;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use walhouse::per_core_wal::{
    ErrorKind, PerCoreWalConfig, PerCoreWalEntry, PerCoreWalError, PerCoreWalManager,
    StdFileSystem, WalFile, WalFileSystem, WalOperation,
};

fn assert_merge_order(entries: &[PerCoreWalEntry], cores: usize) {
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].order_key() < w[1].order_key()),
        "merge output is strictly ordered"
    );
    for core in 0..cores {
        let seqs: Vec<u64> = entries
            .iter()
            .filter(|e| usize::from(e.core_id) == core)
            .map(|e| e.sequence)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "core {core}'s entries keep their order with no gap"
        );
    }
}

#[test]
fn two_writer_threads_on_two_cores_merge_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::small_manager(tmp.path(), 2, 64 * 1024);
    let per_core = 20_000u64;
    let handles: Vec<_> = (0..2)
        .map(|core| {
            let mut w = m.take_writer(core).unwrap();
            std::thread::spawn(move || {
                for i in 0..per_core {
                    let (k, v) = common::kv(i * 2 + core as u64, 100);
                    w.append_put(&k, &v).unwrap();
                    if i % 1000 == 999 {
                        w.sync().unwrap();
                    }
                }
                w.sync().unwrap();
                w
            })
        })
        .collect();
    // While they write, the manager can still see durable progress.
    let during = m.merge_stream().unwrap().count();
    for h in handles {
        m.attach_writer(h.join().unwrap()).unwrap();
    }
    let merged = m.merge_segments().unwrap();
    println!(
        "entries merged while writing: {during}; after: {}; segments: {}",
        merged.len(),
        common::segment_files(tmp.path()).len()
    );
    assert_eq!(merged.len() as u64, 2 * per_core);
    assert_merge_order(&merged, 2);
    let mut keys: Vec<_> = common::ops(&merged).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len() as u64, 2 * per_core, "every key is there once");
}

#[test]
fn a_clock_stepping_back_never_reorders_a_cores_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = common::StepClock::new(1_000_000, -1000); // runs backwards
    let config = PerCoreWalConfig::new(tmp.path(), 2);
    let mut m = PerCoreWalManager::builder(config.clone())
        .clock(clock.clone())
        .create()
        .unwrap();
    for i in 0..200u64 {
        let (k, v) = common::kv(i, 8);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
    }
    m.sync_all().unwrap();
    drop(m);
    // Reopen with a clock far behind what is on disk.
    clock.now.store(5, Ordering::Relaxed);
    let mut m = PerCoreWalManager::builder(config)
        .clock(clock)
        .open()
        .unwrap();
    for i in 200..300u64 {
        let (k, v) = common::kv(i, 8);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
    }
    m.sync_all().unwrap();
    let merged = m.merge_segments().unwrap();
    assert_eq!(merged.len(), 300);
    assert_merge_order(&merged, 2);
    for core in 0..2u16 {
        let keys: Vec<_> = merged
            .iter()
            .filter(|e| e.core_id == core)
            .map(|e| e.key().unwrap().to_vec())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "core {core} reads back in append order");
    }
}

#[test]
fn rotation_then_removal_of_covered_segments_keeps_every_newer_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::small_manager(tmp.path(), 2, 4096);
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new(); // (epoch, key)
    for round in 0..6u64 {
        for i in 0..120u64 {
            let (k, v) = common::kv(round * 1000 + i, 50);
            m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
            written.push((m.epoch(), k));
        }
        let next = m.advance_epoch();
        m.set_epoch_all(next);
        m.write_epoch_barrier_all().unwrap();
        m.sync_all().unwrap();
    }
    let segments_before = common::segment_files(tmp.path()).len();
    assert!(
        segments_before > 12,
        "size and epoch rotation made {segments_before} segments"
    );

    // A core still writing in epoch 3 blocks removal of epoch 3.
    assert!(matches!(
        m.remove_segments_up_to_epoch(6),
        Err(PerCoreWalError::EpochNotSealed { epoch: 6, .. })
    ));
    assert!(m.merge_sealed(6).is_err());

    // A detached writer keeps appending while epochs up to 2 are removed.
    let mut w1 = m.take_writer(1).unwrap();
    let sealed: Vec<_> = m
        .merge_sealed(2)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected_sealed = written.iter().filter(|(e, _)| *e <= 2).count();
    assert_eq!(common::ops(&sealed).len(), expected_sealed);
    // Dropping each segment's cached pages once read changes nothing read
    // (and the segments can be read again after).
    for _ in 0..2 {
        let dropped: Vec<_> = m
            .merge_sealed(2)
            .unwrap()
            .drop_cache_after_read()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(common::ops(&dropped), common::ops(&sealed));
    }
    let t = std::thread::spawn(move || {
        for i in 0..500u64 {
            let (k, v) = common::kv(90_000 + i, 50);
            w1.append_put(&k, &v).unwrap();
        }
        w1.sync().unwrap();
        w1
    });
    let removed = m.remove_segments_up_to_epoch(2).unwrap();
    m.attach_writer(t.join().unwrap()).unwrap();
    for i in 0..500u64 {
        written.push((m.epoch(), common::kv(90_000 + i, 50).0));
    }
    let after = m.merge_segments().unwrap();
    let keys: Vec<Vec<u8>> = common::ops(&after).into_iter().map(|(k, _)| k).collect();
    let expected: Vec<&Vec<u8>> = written
        .iter()
        .filter(|(e, _)| *e > 2)
        .map(|(_, k)| k)
        .collect();
    println!(
        "segments before: {segments_before}; removed up to epoch 2: {removed}; \
         entries of later epochs expected: {}; found: {}",
        expected.len(),
        keys.len()
    );
    assert!(removed > 0);
    assert_eq!(
        keys.len(),
        expected.len(),
        "every newer entry is still there"
    );
    for k in expected {
        assert!(keys.contains(k));
    }
    assert!(after.iter().all(|e| e.epoch > 2));
}

/// Covered segments leave the WAL directory by a rename into `.retired/`
/// and are deleted in the background: after the manager is dropped the
/// directory is empty, a file a crash left there is deleted at the next
/// open, and the directory never reads back as WAL.
#[test]
fn removed_segments_are_retired_and_deleted_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let retired = tmp.path().join(".retired");
    let mut m = common::small_manager(tmp.path(), 2, 4096);
    let mut later = 0_usize;
    for round in 0..4u64 {
        for i in 0..100u64 {
            let (k, v) = common::kv(round * 1000 + i, 50);
            m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
            later += usize::from(m.epoch() > 2);
        }
        let next = m.advance_epoch();
        m.set_epoch_all(next);
        m.write_epoch_barrier_all().unwrap();
        m.sync_all().unwrap();
    }
    let before = common::segment_files(tmp.path());
    let removed = m.remove_segments_up_to_epoch(2).unwrap();
    let after = common::segment_files(tmp.path());
    assert!(removed > 0);
    assert_eq!(after.len(), before.len() - removed);
    assert!(retired.is_dir(), "covered segments went to .retired");
    drop(m);
    let left: Vec<_> = std::fs::read_dir(&retired).unwrap().collect();
    println!(
        "{removed} of {} segments retired; {} left in .retired after the drop",
        before.len(),
        left.len()
    );
    assert!(
        left.is_empty(),
        "the drop waited for the deletions: {left:?}"
    );

    // A crash between the rename and the deletion leaves a file behind; it
    // looks like a segment by name but is not read, and the next open
    // deletes it.
    std::fs::write(retired.join("wal-0-1.log"), b"not a segment any more").unwrap();
    let m = PerCoreWalManager::open(PerCoreWalConfig::new(tmp.path(), 2).with_segment_bytes(4096))
        .unwrap();
    let entries = common::ops(&m.merge_segments().unwrap());
    assert_eq!(
        entries.len(),
        later,
        "every entry of epochs after 2 reads back"
    );
    drop(m);
    assert_eq!(std::fs::read_dir(&retired).unwrap().count(), 0);
}

#[test]
fn seed_reset_all_keeps_entries_appended_after_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::small_manager(tmp.path(), 2, 4096);
    for i in 0..100u64 {
        let (k, v) = common::kv(i, 60);
        m.writer((i % 2) as usize).append_put(&k, &v).unwrap();
    }
    m.sync_all().unwrap();
    let merged = m.merge_segments().unwrap();
    assert_eq!(merged.len(), 100);
    // Appended after the merge, before the seed's reset: the seed lost these.
    for i in 100..110u64 {
        let (k, v) = common::kv(i, 60);
        m.writer(0).append_put(&k, &v).unwrap();
    }
    m.sync_all().unwrap();
    let seq_before = m.writer(0).sequence();
    m.reset_all().unwrap();
    assert_eq!(
        m.writer(0).sequence(),
        seq_before,
        "sequences are not reset"
    );
    let left = m.merge_segments().unwrap();
    let keys: Vec<_> = common::ops(&left).into_iter().map(|(k, _)| k).collect();
    for i in 100..110u64 {
        assert!(
            keys.contains(&common::kv(i, 0).0),
            "entry {i} survived reset_all"
        );
    }
    // Core 1 had nothing appended after the merge: its log is empty now.
    assert!(left.iter().all(|e| e.core_id == 0));
    println!(
        "after reset_all: {} entries kept (10 appended after the merge)",
        left.len()
    );
    // A second reset with nothing new removes the rest.
    m.reset_all().unwrap();
    assert!(m.merge_segments().unwrap().is_empty());
}

#[test]
fn seed_truncate_all_never_drops_entries_after_the_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::small_manager(tmp.path(), 1, 1 << 20);
    for i in 0..10u64 {
        m.writer(0).append_put(&common::kv(i, 10).0, b"v").unwrap();
    }
    m.sync_all().unwrap();
    let positions = m.positions();
    for i in 10..15u64 {
        m.writer(0).append_put(&common::kv(i, 10).0, b"v").unwrap();
    }
    m.sync_all().unwrap();
    m.truncate_all(&positions).unwrap();
    assert_eq!(
        m.merge_segments().unwrap().len(),
        15,
        "active segment kept whole"
    );
    let end = m.positions();
    m.truncate_all(&end).unwrap();
    assert!(m.merge_segments().unwrap().is_empty());
    m.writer(0).append_put(b"after", b"x").unwrap();
    m.sync_all().unwrap();
    let left = m.merge_segments().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].sequence, 15,
        "sequence numbers continue after a reset"
    );
    assert!(
        m.truncate_all(&[u64::MAX]).is_err(),
        "a position past the end is refused"
    );
}

#[test]
fn reopen_continues_sequences_and_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(tmp.path(), 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    for i in 0..10u64 {
        m.writer((i % 2) as usize)
            .append_put(&common::kv(i, 4).0, b"v")
            .unwrap();
    }
    let e = m.advance_epoch();
    m.set_epoch_all(e + 4);
    m.writer(1).append_delete(b"key-00000001").unwrap();
    m.sync_all().unwrap();
    drop(m);
    let mut m = PerCoreWalManager::open(config).unwrap();
    assert_eq!(m.epoch(), 5);
    assert_eq!(
        m.writer(0).epoch(),
        5,
        "every core continues at the highest epoch"
    );
    assert_eq!(m.writer(0).sequence(), 5);
    assert_eq!(m.writer(1).sequence(), 6);
    m.writer(0).append_put(b"new", b"v").unwrap();
    m.sync_all().unwrap();
    let merged = m.merge_segments().unwrap();
    assert_eq!(merged.len(), 12);
    assert_merge_order(&merged, 2);
    assert_eq!(merged.last().unwrap().epoch, 5);
}

#[test]
fn open_requires_an_existing_wal_and_new_creates_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let err = PerCoreWalManager::open(PerCoreWalConfig::new(&dir, 2)).unwrap_err();
    assert!(
        matches!(err, PerCoreWalError::SegmentNotFound { .. }),
        "{err}"
    );
    let m = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 2)).unwrap();
    assert_eq!(m.segment_path(1), dir.join("wal-1-0000000000.log"));
    drop(m);
    // Growing from 2 to 3 cores: `new` adds the third log, `open` would not.
    assert!(PerCoreWalManager::open(PerCoreWalConfig::new(&dir, 3)).is_err());
    assert!(PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 3)).is_ok());
}

#[test]
fn bad_configuration_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(PerCoreWalConfig, &str)> = vec![
        (PerCoreWalConfig::new(tmp.path(), 0), "num_cores"),
        (
            PerCoreWalConfig::new(tmp.path(), 1).with_segment_pattern("wal.log"),
            "segment_pattern",
        ),
        (
            PerCoreWalConfig::new(tmp.path(), 1).with_segment_bytes(10),
            "segment_bytes",
        ),
        (
            PerCoreWalConfig::new(tmp.path(), 1).with_max_record_bytes(1),
            "max_record_bytes",
        ),
    ];
    for (config, field) in cases {
        let err = PerCoreWalManager::new(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn an_oversized_record_is_refused_and_the_writer_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(tmp.path(), 1).with_max_record_bytes(1024);
    let mut m = PerCoreWalManager::new(config).unwrap();
    let err = m.writer(0).append_put(b"k", &[0u8; 2000]).unwrap_err();
    assert!(matches!(err, PerCoreWalError::RecordTooLarge { size, max: 1024, .. } if size > 2000));
    m.writer(0).append_put(b"k", b"small").unwrap();
    m.sync_all().unwrap();
    let merged = m.merge_segments().unwrap();
    assert_eq!(merged.len(), 1);
    assert_eq!(
        merged[0].sequence, 0,
        "the refused record took no sequence number"
    );
}

#[test]
fn commit_and_checkpoint_entries_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(tmp.path(), 1)).unwrap();
    let offsets: HashMap<String, u64> = [
        ("topic-a/0".to_owned(), 42),
        ("topic-b/3".to_owned(), i64::MAX as u64),
    ]
    .into();
    m.writer(0)
        .append_commit(offsets.clone(), Some(-7))
        .unwrap();
    m.writer(0).append_commit(HashMap::new(), None).unwrap();
    m.writer(0).append_checkpoint(99).unwrap();
    m.sync_all().unwrap();
    let merged = m.merge_segments().unwrap();
    assert_eq!(
        merged
            .iter()
            .map(|e| e.operation.clone())
            .collect::<Vec<_>>(),
        vec![
            WalOperation::Commit {
                offsets,
                watermark: Some(-7)
            },
            WalOperation::Commit {
                offsets: HashMap::new(),
                watermark: None
            },
            WalOperation::Checkpoint { id: 99 },
        ]
    );
}

/// A file system whose fdatasync fails while `fail` is set.
#[derive(Debug, Default)]
struct FailingSync {
    fail: Arc<AtomicBool>,
}

#[derive(Debug)]
struct FailingFile {
    inner: Box<dyn WalFile>,
    fail: Arc<AtomicBool>,
}

impl WalFile for FailingFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected EIO"));
        }
        self.inner.sync_data()
    }
}

impl WalFileSystem for FailingSync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFileSystem.list_dir(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FailingFile {
            inner: StdFileSystem.create_new(path)?,
            fail: Arc::clone(&self.fail),
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        StdFileSystem.open_read(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        StdFileSystem.open_write(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFileSystem.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFileSystem.sync_dir(dir)
    }
}

#[test]
fn a_failed_fsync_poisons_the_writer_and_is_never_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(FailingSync::default());
    let config = PerCoreWalConfig::new(tmp.path(), 2);
    let mut m = PerCoreWalManager::builder(config.clone())
        .file_system(fs.clone())
        .create()
        .unwrap();
    m.writer(0).append_put(b"durable", b"1").unwrap();
    m.sync_all().unwrap();
    m.writer(0).append_put(b"lost?", b"2").unwrap();
    fs.fail.store(true, Ordering::Relaxed);
    let err = m.writer(0).sync().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    fs.fail.store(false, Ordering::Relaxed);
    // Even though the disk "works" again, the writer refuses: no retry.
    for err in [
        m.writer(0).sync().unwrap_err(),
        m.writer(0).append_put(b"more", b"3").unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Poisoned);
        assert!(err.to_string().contains("recovery is needed"), "{err}");
    }
    assert!(m.writer(0).is_poisoned());
    // Other cores are not affected.
    m.writer(1).append_put(b"other core", b"ok").unwrap();
    m.writer(1).sync().unwrap();
    drop(m);
    // Reopening recovers what is durable.
    let m = PerCoreWalManager::open(config).unwrap();
    let keys: Vec<_> = common::ops(&m.merge_segments().unwrap())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.contains(&b"durable".to_vec()));
    assert!(keys.contains(&b"other core".to_vec()));
}

#[test]
fn writers_are_send_and_errors_are_send_sync() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + std::error::Error>() {}
    send::<walhouse::per_core_wal::CoreWalWriter>();
    send::<PerCoreWalManager>();
    send_sync::<PerCoreWalError>();
}

#[test]
fn buffer_flushes_end_on_64_kib_boundaries_and_sync_writes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(tmp.path(), 1);
    let write_buffer = config.write_buffer_bytes as u64;
    let mut m = PerCoreWalManager::new(config).unwrap();
    let w = m.writer(0);
    let path = w.path().to_path_buf();
    let mut flushes_seen = 0u64;
    // The segment header is on disk from the start.
    let mut last_len = std::fs::metadata(&path).unwrap().len();
    let mut puts = 0u64;
    // Values of 1 to 300 bytes: records straddle the boundaries anywhere.
    while w.position() < 4 * write_buffer + 12_345 {
        let (k, v) = common::kv(puts, (puts * 37 % 300 + 1) as usize);
        w.append_put(&k, &v).unwrap();
        puts += 1;
        let on_disk = std::fs::metadata(&path).unwrap().len();
        if on_disk != last_len {
            flushes_seen += 1;
            last_len = on_disk;
            assert_eq!(on_disk % (64 << 10), 0, "a flush ended at {on_disk}");
            assert!(w.position() - on_disk < write_buffer + (64 << 10));
        }
    }
    assert!(flushes_seen >= 3, "only {flushes_seen} flushes");
    assert!(
        last_len < w.position(),
        "bytes after the boundary stay buffered"
    );
    w.sync().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), w.position());
    let merged = m.merge_segments().unwrap();
    assert_eq!(merged.len() as u64, puts);
    for (i, e) in merged.iter().enumerate() {
        let (k, v) = common::kv(i as u64, (i as u64 * 37 % 300 + 1) as usize);
        assert_eq!((e.key().unwrap(), e.value().unwrap()), (&k[..], &v[..]));
    }
    println!(
        "{puts} puts: {flushes_seen} size-triggered writes, each ending on a 64 KiB boundary; \
         the sync wrote the last {} bytes; all read back",
        m.positions()[0] - last_len
    );
}
