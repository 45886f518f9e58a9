//! Garbage collection beside a running checkpoint: gc with a zero grace
//! runs while a checkpoint has uploaded its files and not yet committed its
//! manifest. The committed checkpoint must still have every file, and
//! recovery must return every acknowledged key. A grace under the safe
//! minimum is refused unless forced.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::{oneshot, Mutex};
use walhouse::checkpoint::{
    recover, CheckpointSettings, Checkpointer, GraceCheck, MIN_GC_GRACE_SECS,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

/// Holds the first create-only PUT of a manifest until released, and says
/// when it got there.
struct PauseStore {
    inner: Arc<LocalFileSystem>,
    reached: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl fmt::Debug for PauseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PauseStore")
    }
}

impl fmt::Display for PauseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PauseStore")
    }
}

#[async_trait]
impl ObjectStore for PauseStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().starts_with("changelog/_delta_log/")
            && matches!(opts.mode, PutMode::Create)
        {
            if let Some(tx) = self.reached.lock().await.take() {
                let _ = tx.send(());
                let rx = self.release.lock().await.take().unwrap();
                let _ = rx.await;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
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

fn zero_grace(retain: usize) -> CheckpointSettings {
    CheckpointSettings {
        retain_checkpoints: retain,
        gc_grace_secs: 0,
        gc_grace_check: GraceCheck::Off,
        snapshot_every: 2,
        ..CheckpointSettings::default()
    }
}

fn put_keys(
    wal: &mut PerCoreWalManager,
    from: u32,
    to: u32,
    expected: &mut BTreeMap<String, String>,
) {
    for i in from..to {
        let (k, v) = (format!("key-{i:06}"), format!("value-{i}"));
        wal.writer(i as usize % 2)
            .append_put(k.as_bytes(), v.as_bytes())
            .unwrap();
        expected.insert(k, v);
    }
    wal.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_with_zero_grace_during_a_checkpoint_removes_nothing_it_will_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("table");
    std::fs::create_dir_all(&table).unwrap();
    let local = Arc::new(LocalFileSystem::new_with_prefix(&table).unwrap());
    let (reached_tx, reached_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let paused = Arc::new(PauseStore {
        inner: local.clone(),
        reached: Mutex::new(None),
        release: Mutex::new(Some(release_rx)),
    });
    let writer_store = Store::with_object_store("pause://table", paused.clone(), "");
    let gc_store = Store::with_object_store("file://table", local, "");
    let writer = Checkpointer::new(writer_store, zero_grace(1)).unwrap();
    let collector = Checkpointer::new(gc_store.clone(), zero_grace(1)).unwrap();

    let wal_config = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let mut wal = PerCoreWalManager::new(wal_config.clone()).unwrap();
    let mut expected = BTreeMap::new();
    put_keys(&mut wal, 0, 2000, &mut expected);
    writer.checkpoint(&mut wal).await.unwrap();
    put_keys(&mut wal, 2000, 4000, &mut expected);

    // Checkpoint 2 stops just before its manifest; gc runs meanwhile.
    *paused.reached.lock().await = Some(reached_tx);
    let gc_report = {
        let running = writer.checkpoint(&mut wal);
        tokio::pin!(running);
        let report = tokio::select! {
            r = &mut running => panic!("the checkpoint finished before its manifest: {r:?}"),
            _ = reached_rx => collector.gc().await.unwrap(),
        };
        release_tx.send(()).unwrap();
        running.await.unwrap();
        report
    };
    // The state table's build of checkpoint 2 runs after its commit, with
    // its own marker: done before the gc below, which must keep nothing.
    writer.finish_state().await.unwrap();
    let verify = collector.verify(None).await.unwrap();
    println!(
        "gc during checkpoint 2: removed {} objects, kept {} of the running checkpoint; \
         verify of checkpoint {}: {} files, {} problems",
        gc_report.objects_removed.len(),
        gc_report.objects_in_flight,
        verify.checkpoint,
        verify.files,
        verify.problems.len()
    );
    assert_eq!(verify.checkpoint, 2);
    assert!(
        verify.is_ok(),
        "checkpoint 2 lost files to gc: {:?}",
        verify.problems
    );
    assert!(
        gc_report.objects_in_flight > 0,
        "gc saw none of the running checkpoint's files"
    );
    drop(wal);
    let recovered = recover(&gc_store, &wal_config).await.unwrap();
    let got: BTreeMap<String, String> = recovered
        .state
        .state
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "keys lost");
    assert_eq!(got, expected);

    // With the checkpoint finished, its marker is gone: a later gc keeps
    // nothing for it.
    let again = collector.gc().await.unwrap();
    assert_eq!(again.objects_in_flight, 0, "{again:?}");
    assert!(collector.verify(None).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_grace_below_the_minimum_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::local(tmp.path()).unwrap();
    let short = CheckpointSettings {
        gc_grace_secs: 60,
        ..CheckpointSettings::default()
    };
    let err = Checkpointer::new(store.clone(), short.clone())
        .unwrap()
        .gc()
        .await
        .unwrap_err()
        .to_string();
    println!("refused: {err}");
    assert!(err.contains("gc_grace_secs"), "{err}");
    assert!(err.contains(&MIN_GC_GRACE_SECS.to_string()), "{err}");
    let forced = CheckpointSettings {
        gc_grace_check: GraceCheck::Off,
        ..short
    };
    Checkpointer::new(store, forced)
        .unwrap()
        .gc()
        .await
        .unwrap();
}
