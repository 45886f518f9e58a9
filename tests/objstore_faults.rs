//! Checkpoints against an object store that fails: 503s, timeouts, added
//! latency, ambiguous successes (the PUT happened, the call says timeout),
//! and a checkpoint process killed after every store call in turn. Proves:
//! no manifest references a missing or partial object, no acknowledged entry
//! is lost, nothing is committed twice.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use walhouse::checkpoint::{
    list_manifests, load_manifest, recover, CheckpointSettings, Checkpointer,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

/// What the faulty store does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Fails before doing anything (503 Slow Down).
    Unavailable,
    /// Does the operation, then reports a timeout (an ambiguous success).
    AmbiguousSuccess,
}

#[derive(Debug)]
struct Faults {
    rng: u64,
    /// Per mille of calls failing before doing anything.
    unavailable: u64,
    /// Per mille of calls that succeed but report a timeout.
    ambiguous: u64,
    /// From this call number on, every call fails (the process was killed).
    kill_after: Option<u64>,
    calls: u64,
    injected: BTreeMap<&'static str, u64>,
}

impl Faults {
    fn next(&mut self, op: &'static str) -> Result<Fault, object_store::Error> {
        self.calls += 1;
        if self.kill_after.is_some_and(|k| self.calls > k) {
            *self.injected.entry("killed").or_default() += 1;
            return Err(err(op, "process killed"));
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let roll = self.rng % 1000;
        if roll < self.unavailable {
            *self.injected.entry("503").or_default() += 1;
            return Ok(Fault::Unavailable);
        }
        if roll < self.unavailable + self.ambiguous {
            *self.injected.entry("ambiguous").or_default() += 1;
            return Ok(Fault::AmbiguousSuccess);
        }
        Ok(Fault::None)
    }
}

fn err(op: &str, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected {what} during {op}").into(),
    }
}

/// An in-memory store whose every trait method can fail.
#[derive(Debug)]
struct FaultStore {
    inner: Arc<InMemory>,
    faults: Mutex<Faults>,
    latency_us: AtomicU64,
    /// PUTs under this prefix succeed and then report a timeout.
    ambiguous_prefix: Mutex<Option<String>>,
    /// This many LISTs return their first object, then fail mid-way (a
    /// response body cut off by a reset connection).
    list_breaks: AtomicU64,
    /// This many PUTs fail with a reset connection before doing anything.
    put_breaks: AtomicU64,
}

/// What `object_store` returns for a connection reset while a body streams.
fn reset(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("injected connection reset during {op}"),
        )),
    }
}

/// Takes one from `counter` if it is above 0.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore")
    }
}

impl FaultStore {
    fn new(inner: Arc<InMemory>, seed: u64, unavailable: u64, ambiguous: u64) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults {
                rng: seed | 1,
                unavailable,
                ambiguous,
                kill_after: None,
                calls: 0,
                injected: BTreeMap::new(),
            }),
            latency_us: AtomicU64::new(200),
            ambiguous_prefix: Mutex::new(None),
            list_breaks: AtomicU64::new(0),
            put_breaks: AtomicU64::new(0),
        }
    }

    async fn enter(&self, op: &'static str) -> Result<Fault, object_store::Error> {
        let fault = self.faults.lock().unwrap().next(op)?;
        let latency = self.latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if fault == Fault::Unavailable {
            return Err(err(op, "503 Slow Down"));
        }
        Ok(fault)
    }

    fn after<T>(
        fault: Fault,
        op: &'static str,
        result: object_store::Result<T>,
    ) -> object_store::Result<T> {
        match (fault, result) {
            (Fault::AmbiguousSuccess, Ok(_)) => Err(err(op, "timeout after success")),
            (_, r) => r,
        }
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if take_one(&self.put_breaks) {
            return Err(reset("put"));
        }
        let mut f = self.enter("put").await?;
        if let Some(prefix) = self.ambiguous_prefix.lock().unwrap().as_deref() {
            if location.as_ref().contains(prefix) {
                f = Fault::AmbiguousSuccess;
            }
        }
        Self::after(f, "put", self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Ambiguity on creating an upload would leak it; only fail before.
        let _ = self.enter("put_multipart").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let _ = self.enter("get").await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let _ = self.enter("get_ranges").await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let fault = self.faults.lock().unwrap().next("delete");
        match fault {
            Ok(Fault::None | Fault::AmbiguousSuccess) => self.inner.delete_stream(locations),
            Ok(Fault::Unavailable) => {
                futures::stream::once(async { Err(err("delete", "503 Slow Down")) }).boxed()
            }
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if take_one(&self.list_breaks) {
            return self
                .inner
                .list(prefix)
                .take(1)
                .chain(futures::stream::once(async { Err(reset("list")) }))
                .boxed();
        }
        match self.faults.lock().unwrap().next("list") {
            Ok(Fault::None | Fault::AmbiguousSuccess) => self.inner.list(prefix),
            Ok(Fault::Unavailable) => {
                futures::stream::once(async { Err(err("list", "503 Slow Down")) }).boxed()
            }
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let _ = self.enter("list_with_delimiter").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let f = self.enter("copy").await?;
        Self::after(f, "copy", self.inner.copy_opts(from, to, options).await)
    }
}

fn settings() -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows: 50,
        // Small files: a checkpoint uploads several, so a kill can fall
        // between data files.
        max_file_bytes: 1024,
        snapshot_every: 2,
        gc_grace_secs: 0,
        gc_grace_check: walhouse::checkpoint::GraceCheck::Off,
        ..CheckpointSettings::default()
    }
}

/// Checks the invariants over every committed manifest; returns the number of
/// committed checkpoints.
async fn check_manifests(inner: &Arc<InMemory>) -> usize {
    let store = Store::with_object_store("inner://", inner.clone(), "");
    let numbers = list_manifests(&store).await.unwrap();
    let mut last_epoch: Option<u64> = None;
    let mut last_seq: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, &n) in numbers.iter().enumerate() {
        assert_eq!(n, i as u64 + 1, "manifests are numbered without gaps");
        let m = load_manifest(&store, n).await.unwrap();
        // Every referenced object exists whole.
        for f in m.referenced_files() {
            let got = inner.head(&Path::from(f.path.as_str())).await;
            let meta =
                got.unwrap_or_else(|e| panic!("manifest {n} references missing {}: {e}", f.path));
            assert_eq!(meta.size, f.size, "manifest {n}: {} is partial", f.path);
        }
        // No double commit: epochs continue, coverage only grows.
        if let Some(prev) = last_epoch {
            assert_eq!(
                m.epochs.first,
                prev + 1,
                "manifest {n} overlaps or skips epochs"
            );
        }
        last_epoch = Some(m.epochs.last);
        for c in &m.cores {
            if let Some(s) = c.last_sequence {
                let before = last_seq.insert(c.core, s);
                assert!(
                    before.is_none_or(|b| b <= s),
                    "manifest {n} covers less of core {}",
                    c.core
                );
            }
        }
        // The state table's version of it, if built, references only
        // whole objects too.
        let cp = Checkpointer::new(store.clone(), settings()).unwrap();
        if let Some(v) = cp.state_version(n).await.unwrap() {
            for f in v.referenced_files() {
                let meta = inner
                    .head(&Path::from(f.path.as_str()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("state version {n} references missing {}: {e}", f.path)
                    });
                assert_eq!(
                    meta.size, f.size,
                    "state version {n}: {} is partial",
                    f.path
                );
            }
        }
    }
    numbers.len()
}

#[tokio::test]
async fn random_store_faults_never_commit_a_broken_or_duplicate_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let inner = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultStore::new(inner.clone(), 0x5eed, 25, 15));
    let store = Store::with_object_store("faulty://", faulty.clone(), "");
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut m = PerCoreWalManager::new(wal.clone()).unwrap();
    let (mut attempted, mut committed, mut failed) = (0, 0, 0);
    for round in 0..40u64 {
        for i in 0..50u64 {
            let n = round * 50 + i;
            let key = format!("k{:03}", n % 120).into_bytes();
            let value = format!("v{n}").into_bytes();
            m.writer((n % 120 % 2) as usize)
                .append_put(&key, &value)
                .unwrap();
            model.insert(key, value);
        }
        m.sync_all().unwrap(); // acknowledged from here on
        attempted += 1;
        match cp.checkpoint(&mut m).await {
            Ok(_) => committed += 1,
            Err(e) => {
                failed += 1;
                assert!(
                    e.to_string().contains("faulty://"),
                    "errors name the store: {e}"
                );
            }
        }
    }
    drop(m);
    let manifests = check_manifests(&inner).await;
    // The state builds under faults: the failed ones were redone by the
    // next checkpoint's; a healthy view finishes what the last left.
    let healthy = Store::with_object_store("inner://", inner.clone(), "");
    let finished = Checkpointer::new(healthy.clone(), settings())
        .unwrap()
        .finish_state()
        .await
        .unwrap();
    // A manifest PUT that succeeded but reported a timeout, when reading it
    // back failed too, is reported as a failure: the next checkpoint skips
    // what it covers (no double commit), so the only effect is one more
    // manifest than `Ok`s.
    assert!(
        manifests >= committed && manifests <= attempted,
        "{manifests} manifests, {committed} Ok"
    );
    // Recover with a healthy view of the same objects.
    let recovered = recover(&healthy, &wal).await.unwrap();
    let lost = model
        .iter()
        .filter(|(k, v)| recovered.state.state.get(k) != Some(*v))
        .count();
    let injected = faulty.faults.lock().unwrap().injected.clone();
    println!(
        "checkpoints attempted {attempted}, committed {committed}, failed cleanly {failed} \
         (of which committed after all, an ambiguous manifest PUT: {}); faults injected {injected:?}; \
         manifests referencing a missing or partial object: 0; acknowledged keys lost: {lost}; \
         double commits: 0; state versions left for the healthy build: {}",
        manifests - committed,
        finished.versions.len()
    );
    assert_eq!(lost, 0);
    assert!(
        committed > 0 && failed > 0,
        "the fault rate must produce both outcomes"
    );
}

#[tokio::test]
async fn a_checkpoint_killed_after_every_store_call_loses_nothing() {
    // How many store calls a clean checkpoint makes (the first one writes a
    // snapshot, the second only a delta: both shapes get killed).
    let mut kill_points = 0u64;
    // (committed with its state version before the kill, not committed,
    // committed without its state version)
    let mut outcomes = (0u64, 0u64, 0u64);
    let mut lost_total = 0;
    for round in 0..2u64 {
        let calls = {
            let tmp = tempfile::tempdir().unwrap();
            let (inner, faulty, mut m, _) = setup(&tmp, round).await;
            let cp = Checkpointer::new(
                Store::with_object_store("faulty://", faulty.clone(), ""),
                settings(),
            )
            .unwrap();
            let before = faulty.faults.lock().unwrap().calls;
            cp.checkpoint(&mut m).await.unwrap();
            // The state table's version, built after the commit: killed
            // too (a crash between the two tables' entries).
            cp.finish_state().await.unwrap();
            drop(inner);
            let after = faulty.faults.lock().unwrap().calls;
            after - before
        };
        for kill in 0..=calls {
            kill_points += 1;
            let tmp = tempfile::tempdir().unwrap();
            let (inner, faulty, mut m, model) = setup(&tmp, round).await;
            let wal = m.config().clone();
            let cp = Checkpointer::new(
                Store::with_object_store("faulty://", faulty.clone(), ""),
                settings(),
            )
            .unwrap();
            {
                let mut f = faulty.faults.lock().unwrap();
                f.kill_after = Some(f.calls + kill);
            }
            let result = match cp.checkpoint(&mut m).await {
                Ok(_) => cp.finish_state().await.map(|_| ()),
                Err(e) => Err(e),
            };
            let committed = check_manifests(&inner).await > usize::from(round == 1);
            drop(m); // the process dies here
            check_manifests(&inner).await;
            // Restart: recover on a healthy store, then checkpoint again.
            let healthy = Store::with_object_store("inner://", inner.clone(), "");
            let r = recover(&healthy, &wal).await.unwrap();
            let lost = model
                .iter()
                .filter(|(k, v)| r.state.state.get(k) != Some(*v))
                .count();
            lost_total += lost;
            let mut m = PerCoreWalManager::builder(wal.clone())
                .resume_at(r.state.next_sequences.clone(), r.state.final_epoch)
                .open()
                .unwrap();
            let cp = Checkpointer::new(healthy.clone(), settings()).unwrap();
            cp.checkpoint(&mut m).await.unwrap();
            // The next checkpoint's build completes every state version
            // the kill left out: the state table alone is the model.
            cp.finish_state().await.unwrap();
            drop(m);
            check_manifests(&inner).await;
            let r = recover(&healthy, &wal).await.unwrap();
            lost_total += model
                .iter()
                .filter(|(k, v)| r.state.state.get(k) != Some(*v))
                .count();
            assert_eq!(r.state.state.len(), model.len());
            if result.is_ok() {
                outcomes.0 += 1;
            } else if committed {
                outcomes.2 += 1;
            } else {
                outcomes.1 += 1;
            }
        }
    }
    println!(
        "kill points tried: {kill_points} (checkpoint and its state version committed before \
         the kill: {}, checkpoint not committed: {}, checkpoint committed but not its state \
         version: {}); acknowledged keys lost: {lost_total}",
        outcomes.0, outcomes.1, outcomes.2
    );
    assert_eq!(lost_total, 0);
    assert!(outcomes.0 > 0 && outcomes.1 > 0 && outcomes.2 > 0);
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Setup = (Arc<InMemory>, Arc<FaultStore>, PerCoreWalManager, Model);

/// A WAL with acknowledged entries and, in round 1, one committed checkpoint
/// already (so the checkpoint under test writes a delta, not a snapshot).
async fn setup(tmp: &tempfile::TempDir, round: u64) -> Setup {
    let inner = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultStore::new(inner.clone(), 7, 0, 0));
    faulty.latency_us.store(0, Ordering::Relaxed);
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(&tmp.path().join("wal"), 2)).unwrap();
    let mut model = Model::new();
    let mut write = |m: &mut PerCoreWalManager, from: u64, to: u64| {
        for n in from..to {
            let key = format!("k{:03}", n % 90).into_bytes();
            let value = format!("v{n}").into_bytes();
            m.writer((n % 90 % 2) as usize)
                .append_put(&key, &value)
                .unwrap();
            model.insert(key, value);
        }
        m.sync_all().unwrap();
    };
    write(&mut m, 0, 200);
    if round == 1 {
        let cp = Checkpointer::new(
            Store::with_object_store("faulty://", faulty.clone(), ""),
            settings(),
        )
        .unwrap();
        cp.checkpoint(&mut m).await.unwrap();
        cp.finish_state().await.unwrap();
        write(&mut m, 200, 300);
    }
    (inner, faulty, m, model)
}

#[tokio::test]
async fn an_ambiguous_manifest_put_is_resolved_by_reading_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (inner, faulty, mut m, model) = setup(&tmp, 0).await;
    // Every log entry of both tables (version 0 and the commit of each).
    *faulty.ambiguous_prefix.lock().unwrap() = Some("/_delta_log/".into());
    let cp = Checkpointer::new(
        Store::with_object_store("faulty://", faulty.clone(), ""),
        settings(),
    )
    .unwrap();
    // The PUT lands, the call reports a timeout, the read-back finds our
    // bytes: the checkpoint is committed, once; so is the state table's
    // entry of the same version.
    let out = cp.checkpoint(&mut m).await.unwrap();
    assert_eq!(out.manifest.checkpoint, 1);
    assert_eq!(check_manifests(&inner).await, 1);
    let built = cp.finish_state().await.unwrap();
    assert_eq!(built.versions, [1]);
    for entry in [
        "changelog/_delta_log/00000000000000000000.json",
        "state/_delta_log/00000000000000000000.json",
        "state/_delta_log/00000000000000000001.json",
    ] {
        assert!(inner.head(&Path::from(entry)).await.is_ok(), "{entry}");
    }
    let wal = m.config().clone();
    drop(m);
    let r = recover(&Store::with_object_store("inner://", inner, ""), &wal)
        .await
        .unwrap();
    assert_eq!(r.state.state, model);
    println!(
        "ambiguous PUTs of 4 Delta log entries (both tables' versions 0 and 1): resolved as \
         written by reading them back; double commits: 0"
    );
}

/// A healthy fault store (no random faults, no latency) with one committed
/// checkpoint of `model`, and the WAL it covers.
async fn one_checkpoint(
    tmp: &tempfile::TempDir,
) -> (Arc<FaultStore>, Store, PerCoreWalConfig, Model) {
    let (inner, faulty, mut m, model) = setup(tmp, 0).await;
    let store = Store::with_object_store("faulty://", faulty.clone(), "");
    let cp = Checkpointer::new(store.clone(), settings()).unwrap();
    cp.checkpoint(&mut m).await.unwrap();
    cp.finish_state().await.unwrap();
    let wal = m.config().clone();
    drop((m, inner));
    (faulty, store, wal, model)
}

#[tokio::test]
async fn a_list_cut_off_mid_body_is_retried_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (faulty, store, wal, model) = one_checkpoint(&tmp).await;
    // Three LISTs in a row break after their first object, then they work.
    faulty.list_breaks.store(3, Ordering::Relaxed);
    let r = recover(&store, &wal).await.unwrap();
    assert_eq!(r.checkpoint, Some(1));
    assert_eq!(r.state.state, model);
    assert_eq!(faulty.list_breaks.load(Ordering::Relaxed), 0);
    faulty.list_breaks.store(2, Ordering::Relaxed);
    let latest = walhouse::checkpoint::latest_manifest(&store).await.unwrap();
    assert_eq!(latest.map(|m| m.checkpoint), Some(1));
    println!(
        "5 LIST bodies cut off mid-way: recover and latest_manifest retried and succeeded; \
         {} keys recovered",
        r.state.state.len()
    );
}

#[tokio::test]
async fn a_list_that_always_fails_names_the_operation_and_the_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let (faulty, store, wal, _) = one_checkpoint(&tmp).await;
    faulty.list_breaks.store(u64::MAX, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let err = recover(&store, &wal).await.unwrap_err();
    let text = err.to_string();
    println!("after {:?}: {text}", started.elapsed());
    assert!(
        matches!(
            err,
            walhouse::checkpoint::CheckpointError::StoreRetried {
                op: "list",
                attempts: walhouse::store::RETRY_ATTEMPTS,
                ..
            }
        ),
        "{err:?}"
    );
    for part in [
        "list of changelog/_delta_log/",
        "faulty://",
        "after 5 attempts",
        "connection reset",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert_eq!(
        u64::MAX - faulty.list_breaks.load(Ordering::Relaxed),
        u64::from(walhouse::store::RETRY_ATTEMPTS)
    );
}

#[tokio::test]
async fn the_probe_retries_a_network_error_and_never_suggests_the_unsafe_override_for_one() {
    use walhouse::store::{ProbeMode, StoreError, SKIP_PROBE_ENV};
    let inner = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultStore::new(inner.clone(), 3, 0, 0));
    faulty.latency_us.store(0, Ordering::Relaxed);
    let store = Store::with_object_store("faulty://", faulty.clone(), "");
    // One reset connection: retried, the probe passes and leaves nothing.
    faulty.put_breaks.store(1, Ordering::Relaxed);
    let report = store.probe_with(ProbeMode::Check).await.unwrap();
    assert!(report.object.unwrap().starts_with("_probe/"));
    let left: Vec<_> = inner.list(None).collect().await;
    assert!(left.is_empty(), "{left:?}");

    // The network stays down: an error naming the operation and the
    // attempts, and not the unsafe override (it is no cure for that).
    faulty.put_breaks.store(u64::MAX, Ordering::Relaxed);
    let err = store.probe_with(ProbeMode::Check).await.unwrap_err();
    let text = err.to_string();
    println!("probe, network down: {text}");
    assert!(
        matches!(
            err,
            StoreError::Probe {
                op: "first create-only put",
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!text.contains(SKIP_PROBE_ENV), "{text}");
    assert!(text.contains("5 attempt"), "{text}");
    println!("probe: 1 transient error retried and passed; a lasting one refused without the unsafe advice");
}
