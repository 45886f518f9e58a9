//! The checkpoint protocol against a real S3-compatible server (moto in CI,
//! MinIO or LocalStack by hand): probe, checkpoint, list, recover, verify,
//! GC; a data file over 10 MiB goes through multipart; two checkpointers
//! racing for one manifest number; an aborted multipart upload leaves no
//! object.
//!
//! Runs when `WALHOUSE_S3_TEST_URL=s3://bucket/prefix` is set (with
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, credentials and `AWS_REGION`), as
//! `.ci/s3-tests` does; otherwise each test prints
//! `SKIPPED: WALHOUSE_S3_TEST_URL not set` and passes. Each test works under
//! its own fresh prefix. `.ci/s3-tests` checks afterwards that the bucket
//! holds no unfinished multipart upload.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use walhouse::checkpoint::{
    list_manifests, load_manifest, recover, CheckpointError, CheckpointSettings, Checkpointer,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::{ProbeMode, Store, StoreError};

/// A fresh prefix under `WALHOUSE_S3_TEST_URL` for one test, or `None` (and
/// the skip message) when the variable is not set.
fn s3_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("WALHOUSE_S3_TEST_URL") else {
        println!("SKIPPED: WALHOUSE_S3_TEST_URL not set");
        return None;
    };
    let base = base.trim_end_matches('/');
    Some(format!("{base}/{test}-{}", uuid::Uuid::new_v4().simple()))
}

/// Counts what goes through the store and injects faults: multipart
/// uploads started, parts, completions and aborts; part number
/// `fail_part` (1-based, over the store's life) fails; manifest PUTs wait
/// at `manifest_barrier` so racing writers reach the commit together.
#[derive(Debug)]
struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<Counts>,
    fail_part: Option<usize>,
    manifest_barrier: Option<Arc<tokio::sync::Barrier>>,
}

#[derive(Debug, Default)]
struct Counts {
    multipart_started: AtomicUsize,
    parts: AtomicUsize,
    completed: AtomicUsize,
    aborted: AtomicUsize,
    multipart_paths: Mutex<Vec<String>>,
}

impl Instrumented {
    fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
            fail_part: None,
            manifest_barrier: None,
        }
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented")
    }
}

#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<Counts>,
    fail_part: Option<usize>,
}

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.counts.parts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_part == Some(n) {
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "Instrumented",
                    source: format!("injected failure of part {n}").into(),
                })
            });
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.counts.completed.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.counts.aborted.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.as_ref().contains("changelog/_delta_log/") {
            if let Some(barrier) = &self.manifest_barrier {
                // A guard, not a timing assertion: a writer that never comes
                // must not hang the test.
                let _ = tokio::time::timeout(Duration::from_secs(60), barrier.wait()).await;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counts.multipart_started.fetch_add(1, Ordering::SeqCst);
        self.counts
            .multipart_paths
            .lock()
            .unwrap()
            .push(location.to_string());
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountedUpload {
            inner,
            counts: Arc::clone(&self.counts),
            fail_part: self.fail_part,
        }))
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

/// The S3 store at `url`, wrapped by `wrap`, with the same name and root.
fn wrapped(url: &str, wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Instrumented) -> Store {
    let s3 = Store::from_url(url).unwrap();
    let root = s3.root().to_string();
    let inner = wrap(Arc::clone(s3.object_store()));
    Store::with_object_store(s3.name(), Arc::new(inner), &root)
}

fn settings() -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows: 256,
        snapshot_every: 8,
        gc_grace_secs: 0,
        gc_grace_check: walhouse::checkpoint::GraceCheck::Off,
        ..CheckpointSettings::default()
    }
}

/// Puts, overwrites and deletes on 2 cores, applied to `model` too.
fn append_mix(
    m: &mut PerCoreWalManager,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    from: u64,
    to: u64,
) {
    for i in from..to {
        let core = (i % 2) as usize;
        let key = format!("k{:05}", i % 700).into_bytes();
        if i % 13 == 12 {
            m.writer(core).append_delete(&key).unwrap();
            model.remove(&key);
        } else {
            let value = format!("v{i}").into_bytes();
            m.writer(core).append_put(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    m.sync_all().unwrap();
}

/// Every object under the store's root, as paths relative to it.
async fn objects(store: &Store) -> Vec<String> {
    let root = store.root().clone();
    let mut out: Vec<String> = store
        .object_store()
        .list(Some(&root))
        .map_ok(|m| store.relative(&m.location).unwrap_or_default().to_owned())
        .try_collect()
        .await
        .unwrap();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_list_recover_verify_and_gc_on_s3() {
    let Some(url) = s3_url("cycle") else { return };
    let store = Store::from_url(&url).unwrap();
    let probe = store.probe_with(ProbeMode::Check).await.unwrap();
    assert!(objects(&store).await.is_empty(), "the probe cleans up");

    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    let mut model = BTreeMap::new();
    append_mix(&mut m, &mut model, 0, 3000);
    let first = cp.checkpoint(&mut m).await.unwrap();
    // The state table's version 1 (a snapshot), built after the commit.
    cp.finish_state().await.unwrap();
    append_mix(&mut m, &mut model, 3000, 4000);
    let second = cp.checkpoint(&mut m).await.unwrap();
    cp.finish_state().await.unwrap();
    let state_2 = cp.state_version(2).await.unwrap().unwrap();
    assert_eq!(second.manifest.checkpoint, 2);
    assert_eq!(second.manifest.state.snapshot_checkpoint, 1);
    let model_at_2 = model.clone();

    let listed: Vec<u64> = cp
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|m| m.checkpoint)
        .collect();
    assert_eq!(listed, vec![1, 2]);
    assert_eq!(list_manifests(&store).await.unwrap(), vec![1, 2]);
    for n in [1, 2] {
        let report = cp.verify(Some(n)).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    // A WAL tail after the second checkpoint, then a restart.
    append_mix(&mut m, &mut model, 4000, 4100);
    drop(m);
    let recovered = recover(&store, &config).await.unwrap();
    assert_eq!(recovered.checkpoint, Some(2));
    assert_eq!(recovered.state.state, model);

    // A new machine: no local WAL, the state is checkpoint 2's.
    let empty = tempfile::tempdir().unwrap();
    let fresh = recover(&store, &PerCoreWalConfig::new(&empty.path().join("wal"), 2))
        .await
        .unwrap();
    assert!(!fresh.wal_present);
    assert_eq!(fresh.state.state, model_at_2);

    // GC: keep one checkpoint; an orphan (an upload no manifest names) goes too.
    let orphan = store.path("changelog/epoch=99/part-orphan.parquet");
    store
        .object_store()
        .put(&orphan, PutPayload::from_static(b"orphan"))
        .await
        .unwrap();
    let before = objects(&store).await;
    let keep_one = Checkpointer::new(
        store.clone(),
        CheckpointSettings {
            retain_checkpoints: 1,
            ..settings()
        },
    )
    .unwrap();
    let gc = keep_one.gc().await.unwrap();
    assert_eq!(gc.retained, vec![2]);
    assert_eq!(gc.versions_expired, vec![1]);
    assert!(gc
        .objects_removed
        .contains(&"changelog/epoch=99/part-orphan.parquet".to_owned()));
    let after = objects(&store).await;
    let mut referenced: Vec<String> = second
        .manifest
        .referenced_files()
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    // The changelog table is append-only: checkpoint 1's changelog stays;
    // so do both tables' log entries.
    referenced.extend(first.manifest.changelog.iter().map(|f| f.path.clone()));
    // The state table's retained version 2 (checkpoint 1's snapshot with
    // deletion vectors, and checkpoint 2's changes).
    referenced.extend(
        state_2
            .referenced_files()
            .into_iter()
            .map(|f| f.path.clone()),
    );
    for table in ["changelog", "state"] {
        for version in 0..=2 {
            referenced.push(format!("{table}/_delta_log/{version:020}.json"));
        }
    }
    referenced.sort();
    referenced.dedup();
    assert_eq!(
        after, referenced,
        "exactly what version 2 and the changelog need is left"
    );
    assert!(keep_one.verify(None).await.unwrap().is_ok());
    let again = recover(&store, &PerCoreWalConfig::new(&empty.path().join("wal"), 2))
        .await
        .unwrap();
    assert_eq!(again.state.state, fresh.state.state);
    println!(
        "s3 cycle on {}: probe {:?}; checkpoints {listed:?} ({} + {} entries), verified; \
         recovered {} keys (= model) from checkpoint 2 + WAL tail; GC: {} objects before, \
         expired version {:?}, removed {} objects (1 orphan), {} left = exactly checkpoint 2's",
        store.name(),
        probe.mode,
        first.manifest.stats.entries,
        second.manifest.stats.entries,
        recovered.state.state.len(),
        before.len(),
        gc.versions_expired,
        gc.objects_removed.len(),
        after.len()
    );
}

/// A splitmix64 stream: incompressible bytes without a dependency.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

const PART: usize = 5 << 20;

/// 12 MiB of incompressible values on one core.
fn append_big(m: &mut PerCoreWalManager) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..3072u64 {
        let key = format!("big{i:05}").into_bytes();
        let value = noise(i, 4096);
        m.writer(0).append_put(&key, &value).unwrap();
        model.insert(key, value);
    }
    m.sync_all().unwrap();
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_over_10_mib_goes_through_multipart() {
    let Some(url) = s3_url("multipart") else {
        return;
    };
    let mut counts = None;
    let store = wrapped(&url, |inner| {
        let w = Instrumented::new(inner);
        counts = Some(Arc::clone(&w.counts));
        w
    });
    let counts = counts.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(&tmp.path().join("wal"), 1);
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let model = append_big(&mut m);
    let cp = Checkpointer::new(
        store.clone(),
        CheckpointSettings {
            upload_part_bytes: PART,
            row_group_rows: 512,
            ..settings()
        },
    )
    .unwrap();
    let out = cp.checkpoint(&mut m).await.unwrap();
    // The state table's version 1 (a snapshot), built after the commit,
    // uploads too: its files are counted with the changelog's.
    cp.finish_state().await.unwrap();
    let state = cp.state_version(1).await.unwrap().unwrap();
    let mut files = out.manifest.referenced_files();
    files.extend(state.referenced_files());
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    let big: Vec<_> = files
        .iter()
        .copied()
        .filter(|f| f.size > 10 << 20)
        .cloned()
        .collect();
    assert!(
        !big.is_empty(),
        "a data file over 10 MiB: {:?}",
        out.manifest
    );
    let multipart_files: Vec<_> = files
        .iter()
        .copied()
        .filter(|f| f.size as usize > PART)
        .cloned()
        .collect();
    let expected_parts: usize = multipart_files
        .iter()
        .map(|f| (f.size as usize).div_ceil(PART))
        .sum();
    assert_eq!(
        counts.multipart_started.load(Ordering::SeqCst),
        multipart_files.len(),
        "one multipart upload per file over one part"
    );
    assert_eq!(counts.parts.load(Ordering::SeqCst), expected_parts);
    assert_eq!(
        counts.completed.load(Ordering::SeqCst),
        multipart_files.len()
    );
    assert_eq!(counts.aborted.load(Ordering::SeqCst), 0);
    // The server's own word: a multipart object's ETag ends in -<parts>.
    let mut etags = Vec::new();
    for f in &multipart_files {
        let head = store
            .object_store()
            .head(&store.path(&f.path))
            .await
            .unwrap();
        assert_eq!(head.size, f.size);
        if let Some(etag) = head.e_tag {
            let parts = (f.size as usize).div_ceil(PART);
            assert!(
                etag.trim_matches('"').ends_with(&format!("-{parts}")),
                "{}: ETag {etag} of a {parts}-part upload",
                f.path
            );
            etags.push(etag);
        }
    }
    assert!(cp.verify(None).await.unwrap().is_ok());
    drop(m);
    let recovered = recover(&store, &config).await.unwrap();
    assert_eq!(recovered.state.state, model);
    println!(
        "multipart on {}: {} files over one 5 MiB part (largest {:.1} MiB), {} multipart uploads, \
         {} parts (= sum of ceil(size / 5 MiB)), server ETags {etags:?}; verified and recovered \
         {} keys of 4 KiB",
        store.name(),
        multipart_files.len(),
        big.iter().map(|f| f.size).max().unwrap_or(0) as f64 / f64::from(1 << 20),
        counts.multipart_started.load(Ordering::SeqCst),
        counts.parts.load(Ordering::SeqCst),
        recovered.state.state.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_multipart_upload_leaves_nothing() {
    let Some(url) = s3_url("abort") else { return };
    let mut counts = None;
    let store = wrapped(&url, |inner| {
        let mut w = Instrumented::new(inner);
        w.fail_part = Some(2);
        counts = Some(Arc::clone(&w.counts));
        w
    });
    let counts = counts.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 1)).unwrap();
    append_big(&mut m);
    let cp = Checkpointer::new(
        store.clone(),
        CheckpointSettings {
            upload_part_bytes: PART,
            ..settings()
        },
    )
    .unwrap();
    let err = cp.checkpoint(&mut m).await.unwrap_err();
    println!("failed checkpoint: {err}");
    assert!(matches!(err, CheckpointError::Store { .. }), "{err}");
    assert!(
        err.to_string().contains("injected failure of part 2"),
        "{err}"
    );
    // The first checkpoint uploads the changelog and, beside it, the state
    // snapshot: every upload it started is aborted (or, if it had finished,
    // its object deleted), and nothing is left.
    let paths = counts.multipart_paths.lock().unwrap().clone();
    let aborted = counts.aborted.load(Ordering::SeqCst);
    let completed = counts.completed.load(Ordering::SeqCst);
    assert!(!paths.is_empty(), "a multipart upload was started");
    assert!(aborted >= 1, "the failed upload was aborted");
    assert_eq!(
        aborted + completed,
        paths.len(),
        "every upload ended: {paths:?}"
    );
    for path in &paths {
        let head = store.object_store().head(&Path::from(path.as_str())).await;
        assert!(
            matches!(head, Err(object_store::Error::NotFound { .. })),
            "no object at {path}: {head:?}"
        );
    }
    assert!(list_manifests(&store).await.unwrap().is_empty());
    let left = objects(&store).await;
    assert!(
        left.iter()
            .all(|p| paths.iter().all(|m| !p.ends_with(m.as_str()))),
        "{left:?}"
    );
    println!(
        "failed checkpoint: {} multipart uploads started ({paths:?}), {} parts sent (part 2 \
         failed), {aborted} aborted, {completed} completed then deleted, no object, no \
         manifest, {} objects under the prefix; .ci/s3-tests lists the bucket's multipart \
         uploads afterwards",
        paths.len(),
        counts.parts.load(Ordering::SeqCst),
        left.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkpointers_racing_for_one_manifest_number_one_wins() {
    const ROUNDS: usize = 4;
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let Some(url) = s3_url(&format!("race{round}")) else {
            return;
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let stores: Vec<Store> = (0..2)
            .map(|_| {
                wrapped(&url, |inner| {
                    let mut w = Instrumented::new(inner);
                    w.manifest_barrier = Some(Arc::clone(&barrier));
                    w
                })
            })
            .collect();
        let tmp = tempfile::tempdir().unwrap();
        let mut wals: Vec<PerCoreWalManager> = (0..2)
            .map(|w| {
                PerCoreWalManager::new(PerCoreWalConfig::new(
                    &tmp.path().join(format!("wal{w}")),
                    1,
                ))
                .unwrap()
            })
            .collect();
        for (w, m) in wals.iter_mut().enumerate() {
            for i in 0..200 {
                m.writer(0)
                    .append_put(format!("w{w}-k{i}").as_bytes(), b"v")
                    .unwrap();
            }
            m.sync_all().unwrap();
        }
        let cps: Vec<Checkpointer> = stores
            .iter()
            .map(|s| Checkpointer::new(s.clone(), settings()).unwrap())
            .collect();
        let (a, b) = wals.split_at_mut(1);
        let (ra, rb) = tokio::join!(cps[0].checkpoint(&mut a[0]), cps[1].checkpoint(&mut b[0]));
        let results = [ra, rb];
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one winner: {results:?}");
        let (winner, loser) = (winners[0], 1 - winners[0]);
        wins[winner] += 1;
        let err = results[loser].as_ref().unwrap_err();
        assert!(
            matches!(err, CheckpointError::ManifestConflict { checkpoint: 1, .. }),
            "{err}"
        );
        if round == 0 {
            println!("losing writer: {err}");
        }
        let committed = load_manifest(&stores[0], 1).await.unwrap();
        assert_eq!(
            &committed,
            &results[winner].as_ref().unwrap().manifest,
            "the store holds the winner's manifest"
        );
        assert_eq!(list_manifests(&stores[0]).await.unwrap(), vec![1]);
        assert_eq!(
            wals[loser].merge_segments().unwrap().len(),
            200 + 1,
            "the loser keeps its WAL (200 puts and a barrier)"
        );
        // The loser's uploaded files are orphans: GC removes them (once the
        // winner's state build, after its commit, is done).
        cps[winner].finish_state().await.unwrap();
        let gc = cps[winner].gc().await.unwrap();
        assert!(!gc.objects_removed.is_empty());
        assert!(cps[winner].verify(None).await.unwrap().is_ok());
    }
    println!(
        "{ROUNDS} races for manifest 1 with both create-only PUTs sent together: \
         exactly one winner each time (writer A {} times, writer B {} times), \
         the loser stopped with ManifestConflict, its orphans collected by GC",
        wins[0], wins[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_refuses_s3_with_conditional_puts_disabled() {
    let Some(url) = s3_url("probe") else { return };
    // The same server, but object_store told not to send If-None-Match
    // (`AWS_CONDITIONAL_PUT=disabled`): create-only PUTs are not available.
    let s3 = Store::from_url(&url).unwrap();
    let disabled = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url.as_str())
        .with_conditional_put(object_store::aws::S3ConditionalPut::Disabled)
        .build()
        .unwrap();
    let store = Store::with_object_store(s3.name(), Arc::new(disabled), s3.root().as_ref());
    let err = store.probe_with(ProbeMode::Check).await.unwrap_err();
    println!("refused: {err}");
    assert!(
        matches!(err, StoreError::CreateOnlyUnsupported { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("does not support create-only PUTs"), "{msg}");
    assert!(msg.contains("_probe/"), "{msg}");
    // The override is advised only for a store that ignores create-only PUTs.
    assert!(!msg.contains("WALHOUSE_UNSAFE_SKIP_STORE_PROBE"), "{msg}");
    assert!(objects(&store).await.is_empty(), "nothing left behind");
    let ok = s3.probe_with(ProbeMode::Check).await.unwrap();
    println!(
        "probe on {}: refused with conditional puts disabled, accepted with them ({:?})",
        s3.name(),
        ok.object
    );
}
