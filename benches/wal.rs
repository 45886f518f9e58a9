//! Criterion benches of the per-core WAL: buffered and durable appends, the
//! streaming merge, and reopening (with and without a torn tail).
//!
//! Run with `cargo bench --bench wal` (one group: `cargo bench --bench wal --
//! merge`). Every put has a 16-byte key and a 100-byte value; the WAL lives in
//! a temporary directory under the system temp dir. Criterion cannot measure
//! memory: `benches/wal_report.rs` prints the same figures with peak RSS.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use walhouse::per_core_wal::{CoreWalWriter, OpRef, PerCoreWalConfig, PerCoreWalManager};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const VALUE: [u8; VALUE_LEN] = [0x5a; VALUE_LEN];

/// Entries one manager takes before a bench moves to a fresh one. 400 k puts
/// of 137 bytes fit in one default 64 MiB segment, so no segment rotation
/// (which fdatasyncs the sealed segment) lands inside a timed append loop,
/// and no file grows without bound. `wal_report` measures rotation apart.
const CHUNK_ENTRIES: u64 = 400_000;

/// Entries in the WAL the merge and reopen benches read, split over 2 cores.
const WAL_ENTRIES: u64 = 1_000_000;

/// Bytes of garbage appended to core 0's newest segment for the torn-tail open.
const TORN_BYTES: usize = 4096;

/// When the appends of a bench become durable.
#[derive(Debug, Clone, Copy)]
enum Durability {
    /// `append_put` only: handed to the OS every 256 KiB, never synced.
    Buffered,
    /// `sync()` after every this many puts.
    SyncEvery(u64),
}

/// A distinct 16-byte key per entry: the index, big endian, then zeros.
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("walhouse-bench-")
        .tempdir()
        .expect("create a temporary directory")
}

fn new_manager(dir: &Path, cores: usize) -> PerCoreWalManager {
    PerCoreWalManager::new(PerCoreWalConfig::new(dir, cores)).expect("create the WAL")
}

/// Appends `n` puts (keys from `first`) and syncs as `durability` says;
/// returns the time the loop took.
fn timed_appends(
    writer: &mut CoreWalWriter,
    first: u64,
    n: u64,
    durability: Durability,
) -> Duration {
    let start = Instant::now();
    for i in first..first + n {
        writer.append_put(&key(i), &VALUE).expect("append_put");
        if let Durability::SyncEvery(every) = durability {
            if (i + 1) % every == 0 {
                writer.sync().expect("sync");
            }
        }
    }
    start.elapsed()
}

/// `total` puts on one core, a fresh WAL every [`CHUNK_ENTRIES`]; only the
/// append loops are timed.
fn one_core(total: u64, durability: Durability) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < total {
        let n = (total - done).min(CHUNK_ENTRIES);
        let dir = temp_dir();
        let mut manager = new_manager(dir.path(), 1);
        elapsed += timed_appends(manager.writer(0), done, n, durability);
        done += n;
    }
    elapsed
}

/// `per_core` puts on each of 2 cores, each writer on its own thread,
/// started together; a chunk takes as long as its slower thread.
fn two_cores(per_core: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < per_core {
        let n = (per_core - done).min(CHUNK_ENTRIES);
        let dir = temp_dir();
        let mut manager = new_manager(dir.path(), 2);
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|core| {
                let mut writer = manager.take_writer(core).expect("take_writer");
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    timed_appends(&mut writer, done, n, Durability::Buffered)
                })
            })
            .collect();
        elapsed += threads
            .into_iter()
            .map(|t| t.join().expect("writer thread"))
            .max()
            .unwrap_or_default();
        done += n;
    }
    elapsed
}

fn buffered_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffered_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_core", |b| {
        b.iter_custom(|iters| one_core(iters, Durability::Buffered));
    });
    // One iteration is one put on each core.
    group.throughput(Throughput::Elements(2));
    group.bench_function("2_cores", |b| b.iter_custom(two_cores));
    group.finish();
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);
    for every in [1u64, 10, 100, 1000] {
        // One iteration is `every` puts and one sync.
        group.throughput(Throughput::Elements(every));
        group.bench_with_input(
            BenchmarkId::new("sync_every", every),
            &every,
            |b, &every| {
                b.iter_custom(|iters| one_core(iters * every, Durability::SyncEvery(every)));
            },
        );
    }
    group.finish();
}

/// Writes `entries` puts alternating between 2 cores (so the cores'
/// timestamps interleave and the merge has to pick), synced, and closes it.
fn build_wal(config: &PerCoreWalConfig, entries: u64) {
    let mut manager = PerCoreWalManager::new(config.clone()).expect("create the WAL");
    for i in 0..entries {
        let core = usize::from(i % 2 == 1);
        manager
            .writer(core)
            .append_put(&key(i), &VALUE)
            .expect("append_put");
    }
    manager.sync_all().expect("sync_all");
}

fn merge(c: &mut Criterion) {
    let dir = temp_dir();
    let config = PerCoreWalConfig::new(dir.path(), 2);
    build_wal(&config, WAL_ENTRIES);
    let manager = PerCoreWalManager::open(config).expect("open");

    let mut group = c.benchmark_group("merge_1M_entries_2_cores");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WAL_ENTRIES));
    group.bench_function("merge_stream_next_ref", |b| {
        b.iter(|| {
            let mut stream = manager.merge_stream().expect("merge_stream");
            let mut entries = 0u64;
            let mut bytes = 0usize;
            while let Some(entry) = stream.next_ref() {
                if let OpRef::Put { key, value } = entry.expect("merged entry").operation {
                    bytes += key.len() + value.len();
                }
                entries += 1;
            }
            assert_eq!(entries, WAL_ENTRIES, "the merge saw every entry");
            black_box(bytes)
        });
    });
    group.bench_function("merge_segments", |b| {
        b.iter_with_large_drop(|| {
            let merged = manager.merge_segments().expect("merge_segments");
            assert_eq!(
                merged.len() as u64,
                WAL_ENTRIES,
                "the merge saw every entry"
            );
            merged
        });
    });
    group.finish();
}

/// The newest segment of core 0 in `dir`.
fn newest_segment_of_core_0(config: &PerCoreWalConfig) -> PathBuf {
    let mut newest = config.segment_file_path(0, 0);
    let mut segment = 1;
    while config.segment_file_path(0, segment).exists() {
        newest = config.segment_file_path(0, segment);
        segment += 1;
    }
    newest
}

fn append_garbage(path: &Path) {
    // xorshift: the same bytes every run, and no valid record among them.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<u8> = (0..TORN_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&garbage))
        .expect("append garbage to the newest segment");
}

/// Times `PerCoreWalManager::open`; afterwards removes the segments the open
/// started, so every open finds the same log.
fn timed_open(config: &PerCoreWalConfig, torn: Option<&Path>) -> Duration {
    if let Some(path) = torn {
        append_garbage(path);
    }
    let start = Instant::now();
    let manager = PerCoreWalManager::open(config.clone()).expect("open");
    let elapsed = start.elapsed();
    let expected = if torn.is_some() { TORN_BYTES as u64 } else { 0 };
    assert_eq!(
        manager.open_reports()[0].truncated_bytes,
        expected,
        "open repaired the tail"
    );
    let started: Vec<PathBuf> = (0..config.num_cores)
        .map(|c| manager.segment_path(c))
        .collect();
    drop(manager);
    for path in started {
        fs::remove_file(&path).expect("remove the segment the open started");
    }
    elapsed
}

fn reopen(c: &mut Criterion) {
    let dir = temp_dir();
    let config = PerCoreWalConfig::new(dir.path(), 2);
    build_wal(&config, WAL_ENTRIES);
    let newest = newest_segment_of_core_0(&config);
    // Open scans only each core's newest segment; with 1 GiB segments that
    // segment holds all of the core's entries: the most an open reads.
    let whole_dir = temp_dir();
    let whole = PerCoreWalConfig::new(whole_dir.path(), 2).with_segment_bytes(1 << 30);
    build_wal(&whole, WAL_ENTRIES);

    let mut group = c.benchmark_group("open_1M_entries_2_cores");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(WAL_ENTRIES));
    group.bench_function("clean", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_open(&config, None)).sum());
    });
    group.bench_function("torn_tail", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_open(&config, Some(&newest))).sum());
    });
    group.bench_function("clean_one_segment_per_core", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_open(&whole, None)).sum());
    });
    group.finish();
}

// What `criterion_group!` / `criterion_main!` expand to, written out: the
// macros generate a public function without docs, which `missing_docs` flags.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    buffered_append(&mut criterion);
    durable_append(&mut criterion);
    merge(&mut criterion);
    reopen(&mut criterion);
    criterion.final_summary();
}
