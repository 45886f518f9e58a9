//! Prints point-lookup latency on a checkpoint of 1 M keys as plain numbers:
//! cold (an empty cache), with the footers cached but new keys, and fully
//! cached (a few keys looked up before, whose pages fit the cache).
//!
//! Run with `cargo bench --bench lookup_report`. The table: 1 M puts of
//! distinct 16-byte keys with 100-byte xorshift64 values (the workload of
//! `recovery_report`), checkpointed with default settings to a
//! `Store::local` table (checkpoint 1: a snapshot of 8 row groups), then
//! 100 k mixed entries (88 % new keys, 10 % overwrites, 2 % deletes)
//! checkpointed again (checkpoint 2: one changelog delta, searched first).
//! Lookups use `CheckpointReader` with default `LookupSettings` (64 MiB
//! cache, LIST at most once a second) on a 2-worker tokio runtime; each
//! lookup is timed on its own through `block_on`. The keys are random key
//! numbers, a tenth of them never written; every answer's presence is
//! checked against the workload's record of live keys.
//!
//! The files sit under `target/bench-tmp/` (`LOOKUP_REPORT_DIR` picks
//! another directory) and are read from a warm page cache: "cold" means the
//! reader's cache is empty, not the disk's. `LOOKUP_REPORT_SMALL=1` divides
//! the key count by 100 (a smoke test); `LOOKUP_REPORT_PAGE_BYTES=N` writes
//! the table with `CheckpointSettings::page_bytes` = N.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{float, key, Mix, Result, Workload, XorShift, CORES};
use walhouse::checkpoint::{
    CheckpointReader, CheckpointSettings, Checkpointer, LookupSettings, LookupStats,
};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

const KEYS: u64 = 1_000_000;
const DELTA_ENTRIES: u64 = 100_000;
const COLD_LOOKUPS: usize = 200;
const WARM_LOOKUPS: usize = 2_000;
/// Keys of the cached case: few enough that their pages fit the 64 MiB
/// cache.
const CACHED_KEYS: usize = 20;
const CACHED_ROUNDS: usize = 50;

fn main() -> Result<()> {
    let base = std::env::var_os("LOOKUP_REPORT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&base)?;
    let root = tempfile::Builder::new()
        .prefix("lookup-report-")
        .tempdir_in(&base)?;
    let scale = if std::env::var_os("LOOKUP_REPORT_SMALL").is_some() {
        100
    } else {
        1
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let (store, workload) = build_table(root.path(), scale, &runtime)?;

    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let written = workload.next_key;
    let mut pick = || {
        let n = rng.next() % (written + written / 9);
        (n, key(n))
    };
    let check = |n: u64, got: bool| -> Result<()> {
        let live = n < written && {
            let word = usize::try_from(n / 64).unwrap_or(usize::MAX);
            workload
                .live
                .get(word)
                .is_some_and(|w| w & (1 << (n % 64)) != 0)
        };
        if live == got {
            Ok(())
        } else {
            Err(format!("key number {n}: live {live}, lookup found {got}").into())
        }
    };

    // Cold: a fresh reader (empty cache) per lookup.
    let mut cold = Vec::new();
    let mut cold_stats = LookupStats::default();
    for _ in 0..COLD_LOOKUPS {
        let reader = CheckpointReader::open(store.clone(), LookupSettings::default());
        let (n, k) = pick();
        let t = Instant::now();
        let got = runtime.block_on(reader.get(&k))?;
        cold.push(t.elapsed().as_secs_f64() * 1e6);
        check(n, got.is_some())?;
        add(&mut cold_stats, &reader.stats());
    }
    report(
        "cold (empty cache: LIST, manifest, footers, blooms, pages)",
        &mut cold,
        &cold_stats,
        COLD_LOOKUPS,
    );

    // Footers and blooms cached, new random keys.
    let reader = CheckpointReader::open(store.clone(), LookupSettings::default());
    runtime.block_on(reader.get(&key(0)))?;
    let before = reader.stats();
    let mut warm = Vec::new();
    let mut looked = Vec::new();
    for i in 0..WARM_LOOKUPS {
        let (n, k) = pick();
        let t = Instant::now();
        let got = runtime.block_on(reader.get(&k))?;
        warm.push(t.elapsed().as_secs_f64() * 1e6);
        check(n, got.is_some())?;
        if i >= WARM_LOOKUPS - CACHED_KEYS {
            looked.push((n, k));
        }
    }
    let warm_stats = diff(&reader.stats(), &before);
    report(
        "footers cached, new random keys",
        &mut warm,
        &warm_stats,
        WARM_LOOKUPS,
    );

    // Keys looked up before: everything from the cache.
    let before = reader.stats();
    let mut cached = Vec::new();
    for _ in 0..CACHED_ROUNDS {
        for (n, k) in &looked {
            let t = Instant::now();
            let got = runtime.block_on(reader.get(k))?;
            cached.push(t.elapsed().as_secs_f64() * 1e6);
            check(*n, got.is_some())?;
        }
    }
    let cached_stats = diff(&reader.stats(), &before);
    report(
        "cached (the same 20 keys again, 50 times)",
        &mut cached,
        &cached_stats,
        CACHED_KEYS * CACHED_ROUNDS,
    );
    let held = float(runtime.block_on(reader.cached_bytes())) / f64::from(1 << 20);
    println!("cache holds {held:.1} MiB of the 64 MiB budget");
    drop(root);
    let _ = std::fs::remove_dir(&base);
    Ok(())
}

/// Writes checkpoint 1 (the snapshot) and checkpoint 2 (a delta) under `dir`.
fn build_table(
    dir: &Path,
    scale: u64,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Store, Workload)> {
    let start = Instant::now();
    let store = Store::local(&dir.join("table"))?;
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir.join("wal"), CORES))?;
    let mut settings = CheckpointSettings::default();
    if let Some(bytes) = std::env::var_os("LOOKUP_REPORT_PAGE_BYTES") {
        settings.page_bytes = bytes.to_str().unwrap_or("").parse()?;
    }
    let checkpointer = Checkpointer::new(store.clone(), settings)?;
    let mut workload = Workload::new(Mix::DistinctPuts);
    append(&mut manager, &mut workload, KEYS / scale)?;
    let first = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
    workload.mix = Mix::Mixed;
    append(&mut manager, &mut workload, DELTA_ENTRIES / scale)?;
    let second = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
    drop(manager);
    let manifest = second.manifest;
    println!(
        "walhouse lookup report: checkpoint 1 snapshot of {} keys ({} MB), checkpoint 2 delta of \
         {} entries ({} MB); {} live keys; written in {:.1} s",
        KEYS / scale,
        first.bytes_written / 1_000_000,
        DELTA_ENTRIES / scale,
        second.bytes_written / 1_000_000,
        workload.live_keys,
        start.elapsed().as_secs_f64()
    );
    println!(
        "snapshot files {}, delta files {}",
        manifest.state.snapshot.len(),
        manifest.state.deltas.len()
    );

    Ok((store, workload))
}

fn append(manager: &mut PerCoreWalManager, workload: &mut Workload, entries: u64) -> Result<()> {
    for i in 0..entries {
        workload.append(manager.writer(usize::from(i % 2 == 1)))?;
    }
    manager.sync_all()?;
    Ok(())
}

fn add(total: &mut LookupStats, s: &LookupStats) {
    total.lists += s.lists;
    total.row_groups_total += s.row_groups_total;
    total.row_groups_read += s.row_groups_read;
    total.row_groups_pruned_by_bloom += s.row_groups_pruned_by_bloom;
    total.row_groups_pruned_by_stats += s.row_groups_pruned_by_stats;
    total.bytes_fetched += s.bytes_fetched;
    total.ranges_fetched += s.ranges_fetched;
    total.range_hits += s.range_hits;
    total.pages_decoded += s.pages_decoded;
    total.page_hits += s.page_hits;
}

fn diff(after: &LookupStats, before: &LookupStats) -> LookupStats {
    LookupStats {
        lists: after.lists - before.lists,
        row_groups_total: after.row_groups_total - before.row_groups_total,
        row_groups_read: after.row_groups_read - before.row_groups_read,
        row_groups_pruned_by_bloom: after.row_groups_pruned_by_bloom
            - before.row_groups_pruned_by_bloom,
        row_groups_pruned_by_stats: after.row_groups_pruned_by_stats
            - before.row_groups_pruned_by_stats,
        bytes_fetched: after.bytes_fetched - before.bytes_fetched,
        ranges_fetched: after.ranges_fetched - before.ranges_fetched,
        range_hits: after.range_hits - before.range_hits,
        pages_decoded: after.pages_decoded - before.pages_decoded,
        page_hits: after.page_hits - before.page_hits,
        ..LookupStats::default()
    }
}

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "sample counts are small; percentiles are indexes into them"
)]
fn report(name: &str, micros: &mut [f64], s: &LookupStats, lookups: usize) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize];
    let per = |x: u64| x as f64 / lookups as f64;
    println!(
        "{name}: {lookups} lookups, p50 {:.0} us, p99 {:.0} us, max {:.0} us; per lookup: \
         {:.2} row groups read of {:.1} (stats pruned {:.1}, bloom pruned {:.2}), {:.0} bytes \
         fetched, {:.2} ranges fetched, {:.2} ranges from cache, {:.2} pages decoded, {:.2} \
         from cache, {:.3} LISTs",
        at(0.5),
        at(0.99),
        micros.last().copied().unwrap_or(0.0),
        per(s.row_groups_read),
        per(s.row_groups_total),
        per(s.row_groups_pruned_by_stats),
        per(s.row_groups_pruned_by_bloom),
        per(s.bytes_fetched),
        per(s.ranges_fetched),
        per(s.range_hits),
        per(s.pages_decoded),
        per(s.page_hits),
        per(s.lists),
    );
}
