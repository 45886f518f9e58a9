//! A committed manifest never survives a power loss as an empty file.
//!
//! `commit_manifest` on a local store, then a power loss before
//! `Store::make_durable` runs (the checkpoint's process dies right after the
//! create-only PUT returns). Recovery lists the newest manifest and refuses
//! one it cannot parse, so the manifest must be absent or whole.
//!
//! The power loss needs a file system that drops unsynced data: `LazyFS`
//! (`tests/powerloss/README.md`). With `WALHOUSE_LAZYFS_DIR` (a directory in
//! the mount), `WALHOUSE_LAZYFS_FIFO` and `WALHOUSE_LAZYFS_DONE_FIFO` (its
//! faults and completion FIFOs; nobody else may read the latter meanwhile) the
//! test writes `lazyfs::clear-cache` after the PUT and reads the manifest
//! back. Without them it only checks the PUT on a temporary directory and
//! says that the power loss was skipped. Before the fix (`object_store`'s
//! PUT linked its staging file into place with no fsync) `LazyFS` left a
//! 0-byte manifest: "invalid manifest JSON: EOF while parsing".
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use walhouse::checkpoint::{
    commit_manifest, latest_manifest, CheckpointError, CheckpointSettings, Checkpointer,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

/// A manifest as a real checkpoint writes it (on an in-memory store).
async fn some_manifest() -> walhouse::checkpoint::Manifest {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    for i in 0..100_u32 {
        m.writer((i % 2) as usize)
            .append_put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    m.sync_all().unwrap();
    let store = Store::memory();
    let cp = Checkpointer::new(store, CheckpointSettings::default()).unwrap();
    cp.checkpoint(&mut m).await.unwrap().manifest
}

/// `lazyfs::clear-cache`: every byte not fsynced is gone.
fn power_loss(fifo: &str, done: &str) {
    let answers = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(done)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .unwrap()
        .write_all(b"lazyfs::clear-cache\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(answers).read_line(&mut line).unwrap();
    assert!(line.starts_with("finished::clear-cache"), "{line}");
}

#[tokio::test]
async fn a_manifest_is_absent_or_whole_after_a_power_loss_right_after_its_put() {
    let manifest = some_manifest().await;
    let lazyfs = std::env::var("WALHOUSE_LAZYFS_DIR").ok().zip(
        std::env::var("WALHOUSE_LAZYFS_FIFO")
            .ok()
            .zip(std::env::var("WALHOUSE_LAZYFS_DONE_FIFO").ok()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = lazyfs.as_ref().map_or_else(
        || tmp.path().join("table"),
        |(d, _)| PathBuf::from(d).join(format!("table-{}", std::process::id())),
    );
    let store = Store::local(&dir).unwrap();
    commit_manifest(&store, &manifest).await.unwrap();
    // A second create-only PUT of another body is a conflict.
    let mut other = manifest.clone();
    other.stats.entries += 1;
    assert!(matches!(
        commit_manifest(&store, &other).await,
        Err(CheckpointError::ManifestConflict { .. })
    ));
    let staging: Vec<_> = std::fs::read_dir(dir.join("changelog").join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains('#'))
        .collect();
    assert!(staging.is_empty(), "staging files left: {staging:?}");
    let Some((_, (fifo, done))) = lazyfs else {
        println!(
            "power loss skipped: set WALHOUSE_LAZYFS_DIR, WALHOUSE_LAZYFS_FIFO and \
             WALHOUSE_LAZYFS_DONE_FIFO (tests/powerloss/README.md)"
        );
        assert_eq!(latest_manifest(&store).await.unwrap(), Some(manifest));
        return;
    };
    power_loss(&fifo, &done);
    let after = latest_manifest(&store).await;
    let len = std::fs::metadata(
        dir.join("changelog")
            .join("_delta_log")
            .join(format!("{:020}.json", manifest.checkpoint)),
    )
    .map(|m| m.len());
    println!("after the power loss: manifest file {len:?}, newest manifest read: {after:?}");
    match after {
        Ok(None) => {}
        Ok(Some(m)) => assert_eq!(m, manifest),
        Err(e) => panic!("the manifest PUT left a manifest recovery refuses: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
