//! Point lookups on the newest checkpoint: values match a model (present,
//! overwritten, deleted, absent keys); only the row groups that can hold the
//! key are read (a counting store maps every fetched byte range to the row
//! group it belongs to); a repeated lookup is served from the cache without
//! any store call; a replaced object or a new checkpoint is never answered
//! from stale cache entries.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use walhouse::checkpoint::{
    commit_manifest, CheckpointReader, CheckpointSettings, Checkpointer, DataFile, LookupSettings,
    Manifest, StateFile,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A store that records every call and the byte ranges it reads.
#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<String>,
    /// (path, range) of every data read.
    reads: Vec<(String, Range<u64>)>,
}

#[derive(Debug)]
struct CountingStore {
    inner: Arc<InMemory>,
    log: Mutex<Recorded>,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore")
    }
}

impl CountingStore {
    fn new(inner: Arc<InMemory>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            log: Mutex::new(Recorded::default()),
        })
    }

    fn call(&self, op: &str, path: &Path) {
        self.log.lock().unwrap().calls.push(format!("{op} {path}"));
    }

    fn take(&self) -> Recorded {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.call("put", location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.call("put_multipart", location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            self.call("head", location);
        } else {
            self.call("get", location);
            let range = match &options.range {
                Some(GetRange::Bounded(r)) => r.clone(),
                Some(GetRange::Offset(o)) => *o..u64::MAX,
                Some(GetRange::Suffix(_)) | None => 0..u64::MAX,
            };
            self.log
                .lock()
                .unwrap()
                .reads
                .push((location.to_string(), range));
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.call("get_ranges", location);
        {
            let mut log = self.log.lock().unwrap();
            for r in ranges {
                log.reads.push((location.to_string(), r.clone()));
            }
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.log.lock().unwrap().calls.push("delete".into());
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.log.lock().unwrap().calls.push("list".into());
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.log.lock().unwrap().calls.push("list".into());
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.call("copy", to);
        self.inner.copy_opts(from, to, options).await
    }
}

fn settings(snapshot_every: u64, row_group_rows: usize) -> CheckpointSettings {
    CheckpointSettings {
        row_group_rows,
        snapshot_every,
        ..CheckpointSettings::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// Appends ops `from..to` over `keys` keys (a key lives on one of 2 cores),
/// every 7th a delete; applies them to `model`; syncs.
fn ingest(m: &mut PerCoreWalManager, model: &mut Model, from: u64, to: u64, keys: u64) {
    for i in from..to {
        let k = key(i % keys);
        let w = m.writer((i % keys % 2) as usize);
        if i % 7 == 6 {
            w.append_delete(&k).unwrap();
            model.remove(&k);
        } else {
            let value = format!("v{i}").into_bytes();
            w.append_put(&k, &value).unwrap();
            model.insert(k, value);
        }
    }
    m.sync_all().unwrap();
}

/// Puts keys `from..to` once each.
fn put_range(m: &mut PerCoreWalManager, model: &mut Model, from: u64, to: u64) {
    for i in from..to {
        let k = key(i);
        let value = format!("value of {i}").into_bytes();
        m.writer((i % 2) as usize).append_put(&k, &value).unwrap();
        model.insert(k, value);
    }
    m.sync_all().unwrap();
}

fn reader(store: &Store, relist_after_ms: u64) -> CheckpointReader {
    CheckpointReader::open(
        store.clone(),
        LookupSettings {
            relist_after_ms,
            ..LookupSettings::default()
        },
    )
}

#[tokio::test]
async fn lookups_match_the_model_for_present_overwritten_deleted_and_absent_keys() {
    let stats = lookups_match_the_model(settings(3, 50)).await;
    assert_eq!(stats.max_pages, 1, "row groups of 50 rows: one page each");
}

/// The same with row groups of several pages (`page_bytes` = 1: a page
/// every 256 rows), so that a key is found in one page of `key` among
/// several and its value in one page of `value` among several.
#[tokio::test]
async fn lookups_in_row_groups_of_many_pages_match_the_model() {
    let stats = lookups_match_the_model(CheckpointSettings {
        page_bytes: 1,
        ..settings(3, 1000)
    })
    .await;
    assert!(stats.max_pages >= 3, "{stats:?}");
    assert!(stats.lookup.pages_decoded > 0 && stats.lookup.page_hits > 0);
}

#[derive(Debug)]
struct ModelRun {
    lookup: walhouse::checkpoint::LookupStats,
    /// The most pages of `value` in a row group of a state file.
    max_pages: usize,
}

/// Rounds of puts and deletes over 600 keys, each checkpointed with
/// `settings`; every key (and 100 never written) is looked up after each
/// checkpoint, before and after its state version is built, against a
/// model.
async fn lookups_match_the_model(settings: CheckpointSettings) -> ModelRun {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let cp = Checkpointer::new(store.clone(), settings).unwrap();
    let mut m = PerCoreWalManager::new(wal).unwrap();
    let r = reader(&store, 0);
    assert_eq!(r.get(&key(1)).await.unwrap(), None, "no checkpoint yet");

    let mut model = Model::new();
    let mut writes: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut deleted = BTreeSet::new();
    let rounds = [(0, 900), (900, 1500), (1500, 1800), (1800, 2300)];
    for (round, (from, to)) in rounds.into_iter().enumerate() {
        ingest(&mut m, &mut model, from, to, 600);
        for i in from..to {
            if i % 7 == 6 {
                deleted.insert(key(i % 600));
            } else {
                *writes.entry(key(i % 600)).or_default() += 1;
            }
        }
        let manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
        // Looked up while the state table's version is being built (the
        // previous version plus this changelog, or this version), then once
        // it is built (its files with their deletion vectors alone).
        for built in [false, true] {
            if built {
                cp.finish_state().await.unwrap();
            }
            let (mut present, mut overwritten, mut gone, mut absent) = (0, 0, 0, 0);
            for i in 0..700 {
                let k = key(i);
                let got = r.get(&k).await.unwrap();
                assert_eq!(
                    got.as_ref(),
                    model.get(&k),
                    "key {i} after round {round} (state built: {built})"
                );
                match (&got, writes.get(&k).copied().unwrap_or(0)) {
                    (None, 0) => absent += 1,
                    (None, _) => gone += 1,
                    (Some(_), 1) => present += 1,
                    (Some(_), _) => overwritten += 1,
                }
            }
            println!(
                "checkpoint {} (state built: {built}): {present} written once, \
                 {overwritten} overwritten, {gone} deleted, {absent} never written; all match the model",
                manifest.checkpoint,
            );
            assert!(gone > 0 && absent > 0 && (present + overwritten) > 0);
        }
        let version = cp
            .state_version(manifest.checkpoint)
            .await
            .unwrap()
            .unwrap();
        let marked: u64 = version.table.iter().map(StateFile::deleted_rows).sum();
        println!(
            "  state version {}: {} files, {marked} rows marked by deletion vectors",
            version.checkpoint,
            version.table.len()
        );
    }
    let stats = r.stats();
    println!("{stats:?}");
    assert!(stats.row_groups_pruned_by_stats + stats.row_groups_pruned_by_bloom > 0);
    assert!(!deleted.is_empty());
    // Deleted keys of the state versions with deletion vectors were found
    // in a file and refused by its vector.
    assert!(stats.vectors_loaded > 0, "{stats:?}");
    let version = cp
        .state_version(rounds.len() as u64)
        .await
        .unwrap()
        .unwrap();
    let mut max_pages = 0;
    for file in &version.table {
        let path = tmp.path().join("table").join(&file.file.path);
        let reader = parquet::file::serialized_reader::SerializedFileReader::new_with_options(
            std::fs::File::open(&path).unwrap(),
            parquet::file::serialized_reader::ReadOptionsBuilder::new()
                .with_page_index()
                .build(),
        )
        .unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&reader);
        for rg in meta.offset_index().unwrap() {
            // Columns: key, value, ...
            max_pages = max_pages.max(rg[1].page_locations().len());
        }
    }
    println!("the most pages of `value` in a state file's row group: {max_pages}");
    ModelRun {
        lookup: stats,
        max_pages,
    }
}

/// Per data file, the byte ranges of each row group's column chunks.
async fn row_group_ranges(inner: &InMemory, file: &DataFile) -> Vec<Vec<Range<u64>>> {
    let bytes = inner
        .get(&Path::from(file.path.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader = SerializedFileReader::new(bytes).unwrap();
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| {
            rg.columns()
                .iter()
                .map(|c| {
                    let (start, len) = c.byte_range();
                    start..start + len
                })
                .collect()
        })
        .collect()
}

/// The row groups whose column chunks the recorded reads touched, per file
/// (reads of the footer, which ends the file, not counted).
fn row_groups_read(
    reads: &[(String, Range<u64>)],
    files: &[(&DataFile, Vec<Vec<Range<u64>>>)],
) -> BTreeMap<String, BTreeSet<usize>> {
    let mut out = BTreeMap::new();
    for (path, r) in reads {
        let Some((file, groups)) = files.iter().find(|(f, _)| &f.path == path) else {
            continue;
        };
        if r.end >= file.size {
            // The footer read: a suffix of the file (64 KiB, so in these
            // small test files it spans the data too; parquet decodes only
            // the footer from it).
            continue;
        }
        for (i, chunks) in groups.iter().enumerate() {
            if chunks.iter().any(|c| c.start < r.end && r.start < c.end) {
                out.entry(file.path.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(i);
            }
        }
    }
    out
}

#[tokio::test]
async fn only_the_matching_row_groups_are_read_and_a_repeat_is_served_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let inner = Arc::new(InMemory::new());
    let counting = CountingStore::new(Arc::clone(&inner));
    let store = Store::with_object_store("counting", counting.clone(), "");
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let cp = Checkpointer::new(store.clone(), settings(100, 100)).unwrap();
    let mut m = PerCoreWalManager::new(wal).unwrap();
    let mut model = Model::new();
    put_range(&mut m, &mut model, 0, 2000); // checkpoint 1: the snapshot
    cp.checkpoint(&mut m).await.unwrap();
    cp.finish_state().await.unwrap(); // built after the commit
    put_range(&mut m, &mut model, 2000, 3000); // checkpoint 2: its changes
    let manifest: Manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
    cp.finish_state().await.unwrap();
    let version = cp
        .state_version(manifest.checkpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version.snapshot.len(), 1);
    assert_eq!(
        version.table.len(),
        2,
        "the snapshot and checkpoint 2's changes"
    );
    let snapshot = &version.snapshot[0];
    let delta = &version
        .table
        .iter()
        .find(|f| f.file.path != snapshot.path)
        .unwrap()
        .file;
    let files = vec![
        (snapshot, row_group_ranges(&inner, snapshot).await),
        (delta, row_group_ranges(&inner, delta).await),
    ];
    let total: usize = files.iter().map(|(_, g)| g.len()).sum();

    let r = CheckpointReader::open(
        store.clone(),
        LookupSettings {
            relist_after_ms: 3_600_000,
            ..LookupSettings::default()
        },
    );
    // (key, file expected to hold it)
    let cases = [
        (key(1234), Some(snapshot)),
        (key(5), Some(snapshot)),
        (key(2500), Some(delta)),
        (key(2999), Some(delta)),
        (key(9999), None),
        (b"k01234x".to_vec(), None),
    ];
    for (k, holder) in cases {
        counting.take();
        let got = r.get(&k).await.unwrap();
        assert_eq!(got.as_ref(), model.get(&k));
        let cold = counting.take();
        let read = row_groups_read(&cold.reads, &files);
        let groups: usize = read.values().map(BTreeSet::len).sum();
        println!(
            "{}: {} store calls, row groups read {groups} of {total} ({:?})",
            String::from_utf8_lossy(&k),
            cold.calls.len(),
            read.iter()
                .map(|(p, g)| (p.rsplit('/').next().unwrap().to_owned(), g.clone()))
                .collect::<Vec<_>>()
        );
        match holder {
            Some(file) => {
                assert_eq!(read.len(), 1, "one file read");
                assert!(read.contains_key(&file.path), "read the file holding it");
                assert_eq!(groups, 1, "exactly one row group read");
            }
            None => assert!(groups <= 1, "an absent key reads at most a false positive"),
        }

        // The same lookup again: no store call at all.
        let again = r.get(&k).await.unwrap();
        assert_eq!(again, got);
        let warm = counting.take();
        println!("  again: {} store calls", warm.calls.len());
        assert!(warm.calls.is_empty(), "{:?}", warm.calls);
    }
    let stats = r.stats();
    println!("{stats:?}");
    assert_eq!(stats.footers_loaded, 2, "each footer read once");
}

/// Writes one checkpoint holding `key(1) = value` to a fresh table at `store`.
async fn one_checkpoint(store: &Store, wal_dir: &std::path::Path, value: &[u8]) -> Manifest {
    let cp = Checkpointer::new(store.clone(), settings(1, 100)).unwrap();
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(wal_dir, 2)).unwrap();
    for i in 0..300 {
        let v = if i == 1 {
            value.to_vec()
        } else {
            b"x".to_vec()
        };
        m.writer((i % 2) as usize).append_put(&key(i), &v).unwrap();
    }
    m.sync_all().unwrap();
    let manifest = cp.checkpoint(&mut m).await.unwrap().manifest;
    cp.finish_state().await.unwrap();
    manifest
}

async fn wipe(inner: &InMemory) {
    let all: Vec<ObjectMeta> = futures::TryStreamExt::try_collect(inner.list(None))
        .await
        .unwrap();
    for meta in all {
        inner.delete(&meta.location).await.unwrap();
    }
}

#[tokio::test]
async fn a_new_checkpoint_or_a_replaced_object_is_never_answered_from_stale_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let inner = Arc::new(InMemory::new());
    let store = Store::with_object_store("mem", inner.clone(), "");
    let r = reader(&store, 0);

    // 1. A new checkpoint overwrites the key.
    let first = one_checkpoint(&store, &tmp.path().join("wal1"), b"old").await;
    assert_eq!(r.get(&key(1)).await.unwrap().unwrap(), b"old");
    let cp = Checkpointer::new(store.clone(), settings(8, 100)).unwrap();
    let mut m =
        PerCoreWalManager::open(PerCoreWalConfig::new(&tmp.path().join("wal1"), 2)).unwrap();
    m.writer(1).append_put(&key(1), b"newer").unwrap();
    m.sync_all().unwrap();
    cp.checkpoint(&mut m).await.unwrap();
    drop(m);
    assert_eq!(r.get(&key(1)).await.unwrap().unwrap(), b"newer");
    println!("new checkpoint: the overwrite is seen");

    // 2. The table root is wiped and written again: manifest 1 has the same
    //    name, different content.
    wipe(&inner).await;
    let again = one_checkpoint(&store, &tmp.path().join("wal2"), b"rewritten").await;
    assert_eq!(again.checkpoint, first.checkpoint);
    assert_eq!(r.get(&key(1)).await.unwrap().unwrap(), b"rewritten");
    println!("wiped table, same manifest name: the new content is seen");

    // 3. A data file is replaced in place (same path, other bytes) and a new
    //    manifest records the new size and crc32c.
    let other_inner = Arc::new(InMemory::new());
    let other = Store::with_object_store("other", other_inner.clone(), "");
    let b = one_checkpoint(&other, &tmp.path().join("wal3"), b"replaced in place").await;
    // The state table's version 1 of each: a snapshot, built after the commit.
    let snapshot_of = |store: &Store, n: u64| {
        let cp = Checkpointer::new(store.clone(), settings(1, 100)).unwrap();
        async move { cp.state_version(n).await.unwrap().unwrap().snapshot }
    };
    let b_snapshot = snapshot_of(&other, b.checkpoint).await;
    let b_file = &b_snapshot[0];
    let bytes = other_inner
        .get(&Path::from(b_file.path.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let a_path = snapshot_of(&store, again.checkpoint).await[0].path.clone();
    inner
        .put(&Path::from(a_path.as_str()), bytes.into())
        .await
        .unwrap();
    let mut replaced = again.clone();
    replaced.checkpoint = again.checkpoint + 1;
    replaced.changelog = Vec::new();
    replaced.state.deltas = Vec::new();
    replaced.state.snapshot_checkpoint = again.checkpoint;
    replaced.state.snapshot = vec![DataFile {
        path: a_path,
        ..b_file.clone()
    }];
    commit_manifest(&store, &replaced).await.unwrap();
    // The state table's version of that checkpoint: version 1's entry with
    // the file's new size and crc32c.
    let entry = |n: u64| Path::from(format!("state/_delta_log/{n:020}.json"));
    let old_entry = inner
        .get(&entry(again.checkpoint))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut lines = Vec::new();
    for line in std::str::from_utf8(&old_entry).unwrap().lines() {
        let mut action: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(info) = action.pointer_mut("/commitInfo/walhouse") {
            info["checkpoint"] = replaced.checkpoint.into();
            for file in ["/snapshot/0", "/table/0/file"] {
                let file = info.pointer_mut(file).unwrap();
                file["size"] = b_file.size.into();
                file["crc32c"] = b_file.crc32c.into();
            }
        }
        lines.push(action.to_string());
    }
    inner
        .put(
            &entry(replaced.checkpoint),
            (lines.join("\n") + "\n").into(),
        )
        .await
        .unwrap();
    assert_eq!(r.get(&key(1)).await.unwrap().unwrap(), b"replaced in place");
    println!("data file replaced in place, new manifest: the new bytes are read");
    println!("{:?}", r.stats());
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = PerCoreWalConfig::new(&tmp.path().join("wal"), 2);
    let store = Store::local(&tmp.path().join("table")).unwrap();
    let cp = Checkpointer::new(store.clone(), settings(100, 100)).unwrap();
    let mut m = PerCoreWalManager::new(wal).unwrap();
    let mut model = Model::new();
    put_range(&mut m, &mut model, 0, 3000);
    cp.checkpoint(&mut m).await.unwrap();
    let budget = 64 << 10;
    let r = CheckpointReader::open(
        store,
        LookupSettings {
            cache_bytes: budget,
            relist_after_ms: 3_600_000,
        },
    );
    for i in (0..3000).step_by(7) {
        assert_eq!(r.get(&key(i)).await.unwrap().as_ref(), model.get(&key(i)));
    }
    let held = r.cached_bytes().await;
    println!(
        "cache holds {held} bytes of a {budget}-byte budget; {:?}",
        r.stats()
    );
    assert!(held > 0 && held <= budget);
}
