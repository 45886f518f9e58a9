//! Prints the per-core WAL's figures for this machine as plain numbers,
//! with what criterion cannot measure: peak memory during a merge, and the
//! disk's raw fdatasync rate next to every durable figure.
//!
//! Run with `cargo bench --bench wal_report`. Every put has a 16-byte key and
//! a 100-byte value. Each figure is the median of 3 runs (the runs follow in
//! brackets). The WAL is written under `target/bench-tmp/` (the disk of the
//! sources; `WAL_REPORT_DIR` picks another directory), removed at the end.
//! Reads hit a warm page cache: every WAL is read right after it was written.
//!
//! Each merge runs in a child process of this binary (`wal_report
//! merge-child DIR MODE`), so its peak RSS is not hidden by memory an earlier
//! run freed but kept.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use walhouse::per_core_wal::{CoreWalWriter, OpRef, PerCoreWalConfig, PerCoreWalManager};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const VALUE: [u8; VALUE_LEN] = [0x5a; VALUE_LEN];
const RUNS: usize = 3;

/// Entries one manager takes in the buffered runs before a fresh one: 400 k
/// puts of 137 bytes fit in one 64 MiB segment, so the figure holds no
/// rotation (rotation is measured on its own).
const CHUNK_ENTRIES: u64 = 400_000;
const BUFFERED_ENTRIES: u64 = 2_000_000;
const ROTATING_ENTRIES: u64 = 5_000_000;
const MEASURE_FOR: Duration = Duration::from_secs(1);
const TORN_BYTES: usize = 4096;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, dir, mode] = args.as_slice() {
        if cmd == "merge-child" {
            return merge_child(Path::new(dir), mode);
        }
    }
    let base = std::env::var_os("WAL_REPORT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"),
        PathBuf::from,
    );
    fs::create_dir_all(&base)?;
    let root = tempfile::Builder::new()
        .prefix("wal-report-")
        .tempdir_in(&base)?;
    println!("walhouse per-core WAL report: 16-byte keys, 100-byte values, median of {RUNS} runs");
    println!("WAL directory: {}", root.path().display());

    buffered(root.path())?;
    durable(root.path())?;
    let mut per_entry = Vec::new();
    for entries in [1_000_000, 10_000_000] {
        per_entry.push((entries, merge(root.path(), entries)?));
    }
    reopen(root.path())?;
    disk_bytes(root.path(), &per_entry)?;

    drop(root);
    // Only removes the base directory if nothing else is in it.
    let _ = fs::remove_dir(&base);
    Ok(())
}

// ---------------------------------------------------------------- helpers

#[expect(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^52; the figures are printed rounded"
)]
fn float(n: u64) -> f64 {
    n as f64
}

fn per_second(n: u64, d: Duration) -> f64 {
    float(n) / d.as_secs_f64()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "12.34 M" style: the median, then the runs.
fn millions(values: &[f64]) -> String {
    let runs: Vec<String> = values.iter().map(|v| format!("{:.2}", v / 1e6)).collect();
    format!("{:>7.2} M  [{}]", median(values) / 1e6, runs.join(", "))
}

fn plain(values: &[f64], decimals: usize) -> String {
    let runs: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("{:>9.decimals$}  [{}]", median(values), runs.join(", "))
}

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

fn dir_bytes(dir: &Path) -> Result<(u64, usize)> {
    let mut bytes = 0;
    let mut files = 0;
    for entry in fs::read_dir(dir)? {
        bytes += entry?.metadata()?.len();
        files += 1;
    }
    Ok((bytes, files))
}

/// (field value in KiB) of a `/proc/self/status` line such as `VmHWM:`.
fn status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("{field} not in /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("no value in {line:?}"))?;
    Ok(kib.parse()?)
}

fn append_puts(writer: &mut CoreWalWriter, first: u64, n: u64) -> Result<Duration> {
    let start = Instant::now();
    for i in first..first + n {
        writer.append_put(&key(i), &VALUE)?;
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------- buffered

fn buffered(root: &Path) -> Result<()> {
    println!();
    println!("== buffered append_put (no sync in the timed loop), entries/s");
    let mut one = Vec::new();
    let mut two = Vec::new();
    let mut rotating = Vec::new();
    let mut segments = 0;
    for _ in 0..RUNS {
        one.push(per_second(BUFFERED_ENTRIES, buffered_one_core(root)?));
        two.push(per_second(2 * BUFFERED_ENTRIES, buffered_two_cores(root)?));
        let (elapsed, segs) = buffered_rotating(root)?;
        rotating.push(per_second(ROTATING_ENTRIES, elapsed));
        segments = segs;
    }
    let per_core: Vec<f64> = two.iter().map(|r| r / 2.0).collect();
    println!("1 core                        {}", millions(&one));
    println!("2 cores, total                {}", millions(&two));
    println!("2 cores, per core             {}", millions(&per_core));
    println!(
        "1 core, 5 M puts in one WAL   {}   ({segments} segments: each rotation fdatasyncs the sealed 64 MiB segment)",
        millions(&rotating)
    );
    Ok(())
}

/// [`BUFFERED_ENTRIES`] puts, a fresh WAL every [`CHUNK_ENTRIES`]; only the
/// append loops are timed.
fn buffered_one_core(root: &Path) -> Result<Duration> {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < BUFFERED_ENTRIES {
        let n = (BUFFERED_ENTRIES - done).min(CHUNK_ENTRIES);
        let dir = fresh_dir(root, "buffered-1")?;
        let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 1))?;
        elapsed += append_puts(manager.writer(0), done, n)?;
        drop(manager);
        fs::remove_dir_all(&dir)?;
        done += n;
    }
    Ok(elapsed)
}

/// [`BUFFERED_ENTRIES`] puts on each of 2 cores, each writer on its own
/// thread, started together; a chunk lasts as long as its slower thread.
fn buffered_two_cores(root: &Path) -> Result<Duration> {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < BUFFERED_ENTRIES {
        let n = (BUFFERED_ENTRIES - done).min(CHUNK_ENTRIES);
        let dir = fresh_dir(root, "buffered-2")?;
        let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 2))?;
        let start = Arc::new(Barrier::new(2));
        let mut threads = Vec::new();
        for core in 0..2 {
            let mut writer = manager.take_writer(core)?;
            let start = Arc::clone(&start);
            threads.push(thread::spawn(move || {
                start.wait();
                append_puts(&mut writer, done, n).map_err(|e| e.to_string())
            }));
        }
        let mut slowest = Duration::ZERO;
        for t in threads {
            let took = t.join().map_err(|_| "writer thread panicked")??;
            slowest = slowest.max(took);
        }
        elapsed += slowest;
        drop(manager);
        fs::remove_dir_all(&dir)?;
        done += n;
    }
    Ok(elapsed)
}

/// [`ROTATING_ENTRIES`] puts into one WAL, so the writer rotates segments.
fn buffered_rotating(root: &Path) -> Result<(Duration, usize)> {
    let dir = fresh_dir(root, "rotating")?;
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 1))?;
    let elapsed = append_puts(manager.writer(0), 0, ROTATING_ENTRIES)?;
    drop(manager);
    let (_, segments) = dir_bytes(&dir)?;
    fs::remove_dir_all(&dir)?;
    Ok((elapsed, segments))
}

// ---------------------------------------------------------------- durable

fn durable(root: &Path) -> Result<()> {
    println!();
    println!("== durable: append_put then sync() every N puts, 1 core, ~1 s per run");
    println!("   raw = write 4 KiB + fdatasync on the same disk, measured right before each run");
    println!(
        "{:<14} {:>28} {:>30} {:>30}",
        "sync every", "entries/s", "syncs/s", "raw fdatasync/s"
    );
    for every in [1u64, 10, 100, 1000] {
        let mut raw = Vec::new();
        let mut rate = Vec::new();
        let mut syncs = Vec::new();
        for _ in 0..RUNS {
            raw.push(common::raw_fdatasync_rate(root, MEASURE_FOR)?);
            let (entries, elapsed) = durable_run(root, every)?;
            rate.push(per_second(entries, elapsed));
            syncs.push(per_second(entries / every, elapsed));
        }
        println!(
            "{every:<14} {:>28} {:>30} {:>30}",
            plain(&rate, 0),
            plain(&syncs, 0),
            plain(&raw, 0)
        );
    }
    Ok(())
}

/// Puts with a sync after every `every`, for [`MEASURE_FOR`] (whole groups).
fn durable_run(root: &Path, every: u64) -> Result<(u64, Duration)> {
    let dir = fresh_dir(root, "durable")?;
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 1))?;
    let writer = manager.writer(0);
    let mut i = 0u64;
    let start = Instant::now();
    while start.elapsed() < MEASURE_FOR {
        for _ in 0..every {
            writer.append_put(&key(i), &VALUE)?;
            i += 1;
        }
        writer.sync()?;
    }
    let elapsed = start.elapsed();
    drop(manager);
    fs::remove_dir_all(&dir)?;
    Ok((i, elapsed))
}

// ---------------------------------------------------------------- merge

/// Writes `entries` puts alternating between 2 cores (so the cores'
/// timestamps interleave), syncs, closes.
fn build_wal(config: &PerCoreWalConfig, entries: u64) -> Result<()> {
    let mut manager = PerCoreWalManager::new(config.clone())?;
    for i in 0..entries {
        let core = usize::from(i % 2 == 1);
        manager.writer(core).append_put(&key(i), &VALUE)?;
    }
    manager.sync_all()?;
    Ok(())
}

/// One merge measured in a child process.
struct MergeRun {
    entries: u64,
    seconds: f64,
    rss_before_kib: u64,
    hwm_kib: u64,
}

/// Merges the WAL and prints the figures for the parent on one line.
fn merge_child(dir: &Path, mode: &str) -> Result<()> {
    let manager = PerCoreWalManager::open(PerCoreWalConfig::new(dir, 2))?;
    let rss_before_kib = status_kib("VmRSS:")?;
    fs::write("/proc/self/clear_refs", "5")?;
    let start = Instant::now();
    let entries = match mode {
        "stream" => {
            let mut stream = manager.merge_stream()?;
            let mut n = 0u64;
            let mut payload = 0usize;
            while let Some(entry) = stream.next_ref() {
                if let OpRef::Put { key, value } = entry?.operation {
                    payload += key.len() + value.len();
                }
                n += 1;
            }
            std::hint::black_box(payload);
            n
        }
        "vec" => {
            let merged = manager.merge_segments()?;
            let n = merged.len() as u64;
            // Measure before the entries are freed.
            let seconds = start.elapsed().as_secs_f64();
            let hwm_kib = status_kib("VmHWM:")?;
            println!("{n} {seconds} {rss_before_kib} {hwm_kib}");
            return Ok(());
        }
        other => return Err(format!("unknown merge mode {other:?}").into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let hwm_kib = status_kib("VmHWM:")?;
    println!("{entries} {seconds} {rss_before_kib} {hwm_kib}");
    Ok(())
}

fn run_merge_child(dir: &Path, mode: &str) -> Result<MergeRun> {
    let out = Command::new(std::env::current_exe()?)
        .arg("merge-child")
        .arg(dir)
        .arg(mode)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "merge child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [entries, seconds, before, hwm] = fields.as_slice() else {
        return Err(format!("unexpected merge child output {text:?}").into());
    };
    Ok(MergeRun {
        entries: entries.parse()?,
        seconds: seconds.parse()?,
        rss_before_kib: before.parse()?,
        hwm_kib: hwm.parse()?,
    })
}

/// Builds a 2-core WAL of `entries` puts and merges it; returns its bytes
/// on disk per entry.
fn merge(root: &Path, entries: u64) -> Result<f64> {
    let dir = fresh_dir(root, "merge")?;
    let start = Instant::now();
    build_wal(&PerCoreWalConfig::new(&dir, 2), entries)?;
    let built = start.elapsed();
    let (bytes, files) = dir_bytes(&dir)?;
    println!();
    println!(
        "== merge of {} M puts written by 2 cores ({:.1} MB in {files} files, written in {:.1} s)",
        entries / 1_000_000,
        float(bytes) / 1e6,
        built.as_secs_f64()
    );
    println!(
        "{:<34} {:>26} {:>26} {:>26} {:>26}",
        "", "entries/s", "MB/s (on disk)", "peak RSS MiB", "peak - RSS before, MiB"
    );
    for (mode, label) in [
        ("stream", "merge_stream + next_ref"),
        ("vec", "merge_segments (Vec of entries)"),
    ] {
        let mut rate = Vec::new();
        let mut mbs = Vec::new();
        let mut peak = Vec::new();
        let mut delta = Vec::new();
        for _ in 0..RUNS {
            let run = run_merge_child(&dir, mode)?;
            if run.entries != entries {
                return Err(format!("merge returned {} of {entries} entries", run.entries).into());
            }
            rate.push(float(run.entries) / run.seconds);
            mbs.push(float(bytes) / 1e6 / run.seconds);
            peak.push(float(run.hwm_kib) / 1024.0);
            delta.push(float(run.hwm_kib.saturating_sub(run.rss_before_kib)) / 1024.0);
        }
        println!(
            "{label:<34} {:>26} {:>26} {:>26} {:>26}",
            millions(&rate),
            plain(&mbs, 0),
            plain(&peak, 1),
            plain(&delta, 1)
        );
        if mode == "vec" {
            println!(
                "{:<34} {:.0} bytes of memory per entry (peak - RSS before)",
                "",
                median(&delta) * 1024.0 * 1024.0 / float(entries)
            );
        }
    }
    fs::remove_dir_all(&dir)?;
    Ok(float(bytes) / float(entries))
}

// ---------------------------------------------------------------- reopen

fn append_garbage(path: &Path) -> Result<()> {
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
    fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(&garbage)?;
    Ok(())
}

/// Times `open`, then removes the segments it started so every open finds
/// the same log. Returns (seconds, bytes truncated from core 0).
fn timed_open(config: &PerCoreWalConfig, torn: Option<&Path>) -> Result<(f64, u64)> {
    if let Some(path) = torn {
        append_garbage(path)?;
    }
    let start = Instant::now();
    let manager = PerCoreWalManager::open(config.clone())?;
    let seconds = start.elapsed().as_secs_f64();
    let truncated = manager.open_reports()[0].truncated_bytes;
    let started: Vec<PathBuf> = (0..config.num_cores)
        .map(|c| manager.segment_path(c))
        .collect();
    drop(manager);
    for path in started {
        fs::remove_file(path)?;
    }
    Ok((seconds, truncated))
}

fn reopen(root: &Path) -> Result<()> {
    let dir = fresh_dir(root, "reopen")?;
    let config = PerCoreWalConfig::new(&dir, 2);
    build_wal(&config, 1_000_000)?;
    // Open scans only each core's newest segment; with 1 GiB segments that
    // segment holds all of the core's entries: the most an open reads.
    let whole_dir = fresh_dir(root, "reopen-whole")?;
    let whole = PerCoreWalConfig::new(&whole_dir, 2).with_segment_bytes(1 << 30);
    build_wal(&whole, 1_000_000)?;
    let mut segment = 0;
    while config.segment_file_path(0, segment + 1).exists() {
        segment += 1;
    }
    let newest = config.segment_file_path(0, segment);
    let newest_len = fs::metadata(&newest)?.len();
    let (bytes, files) = dir_bytes(&dir)?;
    println!();
    println!(
        "== PerCoreWalManager::open of 1 M puts over 2 cores ({:.1} MB in {files} segments; \
         open reads only each core's newest segment, core 0's is {:.1} MB)",
        float(bytes) / 1e6,
        float(newest_len) / 1e6
    );
    let mut clean = Vec::new();
    let mut torn = Vec::new();
    let mut scan_all = Vec::new();
    for _ in 0..RUNS {
        clean.push(timed_open(&config, None)?.0 * 1e3);
        scan_all.push(timed_open(&whole, None)?.0 * 1e3);
        let (seconds, truncated) = timed_open(&config, Some(&newest))?;
        if truncated != TORN_BYTES as u64 {
            return Err(format!("open truncated {truncated} bytes, expected {TORN_BYTES}").into());
        }
        torn.push(seconds * 1e3);
    }
    println!("clean, ms                      {}", plain(&clean, 2));
    println!(
        "torn tail ({TORN_BYTES} garbage bytes on core 0), ms {}",
        plain(&torn, 2)
    );
    println!(
        "clean, 1 GiB segments (open scans all 1 M puts, {:.1} MB), ms {}",
        float(dir_bytes(&whole_dir)?.0) / 1e6,
        plain(&scan_all, 2)
    );
    fs::remove_dir_all(&dir)?;
    fs::remove_dir_all(&whole_dir)?;
    Ok(())
}

// ---------------------------------------------------------------- disk

fn disk_bytes(root: &Path, merged: &[(u64, f64)]) -> Result<()> {
    let dir = fresh_dir(root, "disk")?;
    let entries = 1_000_000u64;
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&dir, 1))?;
    let writer = manager.writer(0);
    let mut record = 0;
    for i in 0..entries {
        let offset = writer.append_put(&key(i), &VALUE)?;
        if i + 1 == entries {
            record = writer.position() - offset;
        }
    }
    writer.sync()?;
    drop(manager);
    let (bytes, files) = dir_bytes(&dir)?;
    println!();
    println!("== bytes on disk per put (16-byte key, 100-byte value), deterministic: one run");
    println!(
        "1 core, 1 M puts: {:.2} bytes/entry ({bytes} bytes in {files} segment files, \
         headers included); the last record is {record} bytes",
        float(bytes) / float(entries)
    );
    for (n, per_entry) in merged {
        println!(
            "2 cores, {} M puts (merge WAL): {per_entry:.2} bytes/entry",
            n / 1_000_000
        );
    }
    fs::remove_dir_all(&dir)?;
    Ok(())
}
