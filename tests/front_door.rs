//! The front door, `walhouse::Walhouse`: what it answers (get and scan over
//! the newest checkpoint plus everything acknowledged since) equals a model
//! through writes, checkpoints, background state builds, shutdowns and
//! reopens; the data directory is locked; the memory it holds for lookups
//! empties at each checkpoint.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use walhouse::runtime::{IngestSettings, WriteOp};
use walhouse::store::Store;
use walhouse::{ErrorKind, Shutdown, Walhouse};

mod common;

fn settings() -> IngestSettings {
    common::manual_settings(2)
}

async fn open(dir: &std::path::Path) -> Walhouse {
    let store = Store::local(&dir.join("table")).unwrap();
    Walhouse::builder(dir.join("data"), store)
        .settings(settings())
        .open()
        .await
        .unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("k{:05}", i % 400).into_bytes()
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Checks every key of the model's key space and three scans.
async fn check(db: &Walhouse, model: &Model, when: &str) -> usize {
    let mut checked = 0;
    for i in 0..420 {
        let k = key(i);
        assert_eq!(
            db.get(&k).await.unwrap(),
            model.get(&k).cloned(),
            "{when}: key {i}"
        );
        checked += 1;
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    assert_eq!(db.scan(..).await.unwrap(), all, "{when}: full scan");
    let prefix: Vec<(Vec<u8>, Vec<u8>)> = model
        .iter()
        .filter(|(k, _)| k.starts_with(b"k001"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        db.scan_prefix(b"k001").await.unwrap(),
        prefix,
        "{when}: prefix scan"
    );
    let (lo, hi) = (key(50), key(75));
    let ranged: Vec<(Vec<u8>, Vec<u8>)> = model
        .range(lo.clone()..hi.clone())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(db.scan(lo..hi).await.unwrap(), ranged, "{when}: range scan");
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_scan_equal_the_model_through_writes_checkpoints_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut db = open(tmp.path()).await;
    assert_eq!(db.opened().checkpoint, None);
    let mut lookups = 0;
    let mut i = 0_u64;
    for round in 0..6 {
        // Odd rounds write in batches of 10 (`write`), even ones one by one.
        let mut batch = Vec::new();
        for _ in 0..300 {
            let k = key(i * 7 + round);
            let op = if i % 5 == 4 {
                model.remove(&k);
                WriteOp::Delete { key: k }
            } else {
                let v = format!("v{i}-r{round}").into_bytes();
                model.insert(k.clone(), v.clone());
                WriteOp::Put { key: k, value: v }
            };
            if round % 2 == 1 {
                batch.push(op);
                if batch.len() == 10 {
                    db.write(std::mem::take(&mut batch)).await.unwrap();
                }
            } else {
                match op {
                    WriteOp::Put { key, value } => db.put(key, value).await.unwrap(),
                    WriteOp::Delete { key } => db.delete(key).await.unwrap(),
                }
            }
            i += 1;
        }
        assert!(batch.is_empty());
        lookups += check(
            &db,
            &model,
            &format!("round {round}, before its checkpoint"),
        )
        .await;
        assert!(db.live_bytes() > 0);
        let outcome = db.checkpoint().await.unwrap();
        assert_eq!(
            db.live_bytes(),
            0,
            "the checkpoint took its writes out of memory"
        );
        lookups += check(
            &db,
            &model,
            &format!(
                "round {round}, right after checkpoint {}",
                outcome.manifest.checkpoint
            ),
        )
        .await;
        db.checkpointer().finish_state().await.unwrap();
        lookups += check(&db, &model, &format!("round {round}, state table built")).await;
        match round {
            // Stop without a checkpoint after more writes: the next open
            // checkpoints the WAL's tail.
            2 => {
                for j in 0..50 {
                    let k = key(j * 3);
                    db.delete(k.clone()).await.unwrap();
                    model.remove(&k);
                }
                db.shutdown(Shutdown::Sync).await.unwrap();
                db = open(tmp.path()).await;
                let opened = db.opened().clone();
                println!("reopened after Shutdown::Sync: {opened:?}");
                assert!(opened.checkpoint.is_some(), "{opened:?}");
                assert_eq!(
                    opened.tail_entries, 50,
                    "the deletes after the last checkpoint"
                );
                lookups += check(&db, &model, "reopened after Shutdown::Sync").await;
            }
            4 => {
                db.shutdown(Shutdown::Checkpoint).await.unwrap();
                db = open(tmp.path()).await;
                let opened = db.opened().clone();
                println!("reopened after Shutdown::Checkpoint: {opened:?}");
                assert_eq!(
                    opened.tail_entries, 0,
                    "the final checkpoint took everything"
                );
                lookups += check(&db, &model, "reopened after Shutdown::Checkpoint").await;
            }
            _ => {}
        }
    }
    println!(
        "{lookups} lookups and {} scans matched the model ({} live keys at the end)",
        // Each check looks up 420 keys and runs 3 scans.
        lookups / 420 * 3,
        model.len()
    );
    db.shutdown(Shutdown::Checkpoint).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_many_producers_are_seen_and_the_directory_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).await;
    let mut tasks = Vec::new();
    for p in 0..4_u64 {
        let handle = db.handle();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_u64 {
                let k = format!("p{p}-{i:03}").into_bytes();
                handle.put(k, i.to_be_bytes().to_vec()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for p in 0..4_u64 {
        let rows = db.scan_prefix(format!("p{p}-").as_bytes()).await.unwrap();
        assert_eq!(rows.len(), 100, "producer {p}");
        assert_eq!(rows[42].1, 42_u64.to_be_bytes().to_vec());
    }
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let second = Walhouse::builder(tmp.path().join("data"), store)
        .settings(settings())
        .open()
        .await
        .unwrap_err();
    println!("second open: {second}");
    assert_eq!(second.kind(), ErrorKind::Conflict, "{second}");
    let report = db.shutdown(Shutdown::Checkpoint).await.unwrap();
    assert_eq!(
        report.final_checkpoint.map(|o| o.manifest.stats.puts),
        Some(400)
    );
}

/// Checkpoints run back to back on another task while one writer reads its
/// own writes: every get right after a put, and every scan, sees them,
/// whichever checkpoint is committing or has just taken them out of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_acknowledged_write_while_checkpoints_run() {
    let tmp = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(open(tmp.path()).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpoints = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.checkpoint().await.unwrap();
                n += 1;
            }
            n
        })
    };
    let mut model = Model::new();
    let mut scans = 0;
    for i in 0..1500_u64 {
        let k = key(i * 13);
        if i % 6 == 5 {
            db.delete(k.clone()).await.unwrap();
            model.remove(&k);
            assert_eq!(db.get(&k).await.unwrap(), None, "write {i}: deleted");
        } else {
            let v = format!("v{i}").into_bytes();
            db.put(k.clone(), v.clone()).await.unwrap();
            model.insert(k.clone(), v.clone());
            assert_eq!(db.get(&k).await.unwrap(), Some(v), "write {i}: put");
        }
        // Writes a little older, which a checkpoint may have taken out of
        // memory since.
        for back in [3, 11, 29] {
            if let Some(j) = i.checked_sub(back) {
                let k = key(j * 13);
                let got = db.get(&k).await.unwrap();
                if got != model.get(&k).cloned() {
                    // What a failure needs to be told apart: a read that
                    // raced a checkpoint (a second read differs) or a
                    // checkpoint without the write (a fresh reader of the
                    // store agrees with the first).
                    let again = db.get(&k).await.unwrap();
                    let fresh = walhouse::checkpoint::CheckpointReader::open(
                        Store::local(&tmp.path().join("table")).unwrap(),
                        walhouse::checkpoint::LookupSettings::default(),
                    );
                    let newest = fresh
                        .newest()
                        .await
                        .unwrap()
                        .map(|m| (m.checkpoint, m.epochs));
                    panic!(
                        "key of write {j} after write {i}: read {got:?}, expected {:?}; read again \
                         {again:?}; a fresh reader of checkpoint {newest:?} reads {:?}",
                        model.get(&k),
                        fresh.get(&k).await.unwrap()
                    );
                }
            }
        }
        if i % 100 == 99 {
            let all: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
            assert_eq!(db.scan(..).await.unwrap(), all, "scan after write {i}");
            scans += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = checkpoints.await.unwrap();
    println!("1500 writes read back (and 3 older ones after each) and {scans} scans matched while {n} checkpoints committed");
    assert!(n >= 2, "checkpoints ran during the writes: {n}");
    let db = std::sync::Arc::try_unwrap(db).unwrap();
    db.shutdown(Shutdown::Checkpoint).await.unwrap();
}
