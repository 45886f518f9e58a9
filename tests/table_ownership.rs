//! One table, one owner: a data directory whose table was taken over while
//! it ran commits nothing more, keeps its WAL, and its acknowledged writes
//! stay recoverable from its own directory.
#![allow(clippy::unwrap_used)]

use walhouse::checkpoint::{CheckpointError, TableOwner};
use walhouse::runtime::datadir::DataDirRecord;
use walhouse::runtime::{IngestError, IngestSettings, Ingester, Ownership};
use walhouse::store::Store;

mod common;

fn settings() -> IngestSettings {
    common::manual_settings(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_table_was_taken_over_commits_nothing_and_keeps_its_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    let old = Ingester::builder(&a, store.clone())
        .settings(settings())
        .open()
        .await
        .unwrap();
    let record = DataDirRecord::read(&a).unwrap().unwrap();
    assert_eq!(record.store, store.name());
    assert_eq!(record.cores, 2);
    let owner = TableOwner::read(&store).await.unwrap().unwrap();
    assert_eq!(owner.owner_id, record.id, "the first opener owns the table");
    old.put("k1", "v1").await.unwrap();
    old.checkpoint().await.unwrap();
    old.put("k2", "v2").await.unwrap();

    // A replacement takes the table over while the old owner still runs.
    let new = Ingester::builder(&b, store.clone())
        .settings(settings())
        .ownership(Ownership::TakeOver)
        .open()
        .await
        .unwrap();
    let err = old.checkpoint().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, IngestError::Checkpoint(e) if matches!(**e, CheckpointError::NotOwner { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&b.display().to_string()),
        "names the new owner: {msg}"
    );
    let latest = new.checkpointer().latest().await.unwrap().unwrap();
    assert_eq!(
        latest.checkpoint, 1,
        "the old owner committed after the take-over"
    );
    old.shutdown(false).await.unwrap();
    new.shutdown(false).await.unwrap();

    // The old directory's acknowledged write is still in its WAL.
    let wal_files = std::fs::read_dir(a.join("wal")).unwrap().count();
    assert!(wal_files > 0, "the old owner's WAL was removed");
    let r = walhouse::checkpoint::recover(
        &store,
        &walhouse::per_core_wal::PerCoreWalConfig::new(&a.join("wal"), 2),
    )
    .await
    .unwrap();
    assert_eq!(r.state.state.get(b"k2"), Some(b"v2".as_slice()));
    // Reopening the old directory is refused, naming the owner.
    let refused = Ingester::builder(&a, store.clone())
        .settings(settings())
        .open()
        .await
        .unwrap_err();
    assert!(matches!(refused, IngestError::NotOwner { .. }), "{refused}");
    println!("after a take-over the old owner's checkpoint failed ({msg}); its acked write k2 is in its WAL; reopening it is refused");
}
