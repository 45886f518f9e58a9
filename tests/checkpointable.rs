//! Whatever is acknowledged can be checkpointed: the largest record, an
//! empty key, a long source name and an offset of `i64::MAX` go through a
//! checkpoint and recovery; an offset above `i64::MAX` is refused before
//! it is written (the library's handle and the seed's writer alike), and
//! the core stays usable.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use walhouse::checkpoint::recover;
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::runtime::{IngestError, IngestSettings, Ingester};
use walhouse::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_inputs_checkpoint_and_unstorable_offsets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("table")).unwrap();
    let settings = IngestSettings {
        cores: 2,
        pin_threads: false,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        ..IngestSettings::default()
    };
    let ingester = Ingester::builder(dir.path(), store.clone())
        .settings(settings)
        .open()
        .await
        .unwrap();
    let max = ingester.max_write_bytes();
    let big_value = vec![b'v'; max - 3];
    ingester.put("big", big_value.clone()).await.unwrap();
    ingester.put("", "empty key").await.unwrap();
    let too_big = ingester.put("k", vec![0u8; max]).await.unwrap_err();
    assert!(matches!(too_big, IngestError::Rejected { .. }), "{too_big}");

    let long_source = "s".repeat(10_000);
    let mut offsets = HashMap::new();
    offsets.insert(long_source.clone(), i64::MAX as u64);
    ingester.commit(offsets, Some(i64::MIN)).await.unwrap();
    let mut bad = HashMap::new();
    bad.insert("s".to_owned(), (i64::MAX as u64) + 1);
    let refused = ingester.commit(bad, None).await.unwrap_err();
    let msg = refused.to_string();
    assert!(matches!(refused, IngestError::Rejected { .. }), "{msg}");
    assert!(msg.contains("9223372036854775808"), "{msg}");
    // The core is not poisoned: writes go on.
    ingester.put("after", "ok").await.unwrap();

    let outcome = ingester.checkpoint().await.unwrap();
    assert_eq!(outcome.manifest.stats.entries, 4);
    ingester.shutdown(false).await.unwrap();

    let r = recover(&store, &PerCoreWalConfig::new(&dir.path().join("wal"), 2))
        .await
        .unwrap();
    let state = &r.state.state;
    assert_eq!(state.len(), 3);
    assert_eq!(state.get(b"big").map(<[u8]>::len), Some(max - 3));
    assert_eq!(state.get(b""), Some(b"empty key".as_slice()));
    assert_eq!(
        r.state.source_offsets.get(&long_source),
        Some(&(i64::MAX as u64))
    );
    println!(
        "a {} byte value, an empty key, a 10,000-character source at offset i64::MAX: \
         checkpointed and recovered; offset 2^63 refused ({msg}) and the core went on",
        max - 3
    );
}

#[test]
fn the_seed_writer_refuses_an_unstorable_offset_without_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = PerCoreWalManager::new(PerCoreWalConfig::new(dir.path(), 1)).unwrap();
    let mut bad = HashMap::new();
    bad.insert("s".to_owned(), u64::MAX);
    let err = wal.writer(0).append_commit(bad, None).unwrap_err();
    assert!(err.to_string().contains("18446744073709551615"), "{err}");
    assert!(wal.writer(0).append_checkpoint(u64::MAX).is_err());
    assert!(!wal.writer(0).is_poisoned());
    wal.writer(0).append_put(b"k", b"v").unwrap();
    wal.sync_all().unwrap();
    println!("seed writer: offset u64::MAX and checkpoint id u64::MAX refused ({err}); the writer went on");
}
