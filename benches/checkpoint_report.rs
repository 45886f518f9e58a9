//! Prints checkpoint figures for this machine as plain numbers: throughput
//! of `Checkpointer::checkpoint` on a local store, and the peak memory of
//! the process while it runs.
//!
//! Run with `cargo bench --bench checkpoint_report`. Every put has a 16-byte
//! key and a 100-byte value of pseudo-random bytes (xorshift64, a new value
//! for every put), so zstd cannot shrink the values. Keys are 8 bytes of a
//! bijective 64-bit mix of the key's index followed by the index itself
//! (big-endian), so they are distinct and arrive in no particular order.
//! Each figure is the median of the runs (the runs follow in brackets).
//!
//! What is measured, each on a fresh WAL (2 cores) and a fresh table:
//!
//! - throughput, WAL of 1 M and of 10 M entries (88% puts of new keys, 10%
//!   overwrites and 2% deletes of random earlier keys): the first checkpoint
//!   (changelog and full state snapshot, default settings); then as many
//!   entries again and a second checkpoint with `snapshot_every` and
//!   `snapshot_delta_bytes` at `u64::MAX`, so it writes no snapshot: the
//!   changelog plus the state table's changes (the checkpoint's puts as a
//!   sorted file, deletion vectors over the older state files)
//!   (raising `snapshot_every` alone is not enough at 10 M: the 1.2 GB
//!   changelog passes the default 1 GiB `snapshot_delta_bytes`);
//! - state size: the first checkpoint of a WAL of 1 M and of 10 M puts of
//!   distinct keys, so the snapshot holds every key; then, onto that state,
//!   a checkpoint without a snapshot (changelog, changes and deletion
//!   vectors over the state's files) of 1 M mixed entries (its speed should not
//!   depend on the state's size) and a checkpoint of 1 M more that writes a
//!   snapshot (`snapshot_every` = 1: the periodic snapshot, which streams
//!   the previous one and merges the changelogs since).
//!
//! Everything lives under `target/bench-tmp/` (the disk of the sources;
//! `CHECKPOINT_REPORT_DIR` picks another directory): the WAL, the table (a
//! local store, `Store::local`) and the snapshot sort's spill files (the
//! child's `TMPDIR`). It is removed at the end. The WAL is read while in
//! the page cache: the checkpoint follows right after the WAL is written.
//!
//! Each checkpoint runs in a child process of this binary (`checkpoint_report
//! checkpoint-child WAL_DIR STORE_DIR MODE`): it opens the WAL with
//! `PerCoreWalManager::open`, builds a tokio runtime, resets its peak RSS
//! (`/proc/self/clear_refs`), runs `Checkpointer::checkpoint` and prints its
//! figures, with `VmHWM` as the peak, and its phases from the "checkpoint
//! committed" event (`write_us`: seal, merge, encode and upload; `fsync_us`:
//! the data files made durable; `commit_us`: the manifest written and made
//! durable; `remove_us`: the covered WAL segments removed).
//!
//! `CHECKPOINT_REPORT_ZSTD_LEVEL=N` runs the checkpoints with zstd level N
//! instead of the default 1; `CHECKPOINT_REPORT_ENCODE_THREADS=N` with N
//! column-encoder threads instead of the default 1 (0: one per CPU);
//! `CHECKPOINT_REPORT_COMPRESSION=always` with zstd on every column instead
//! of the default adaptive compression; `CHECKPOINT_REPORT_ROW_GROUP_ROWS=N`
//! with row groups of N rows; `CHECKPOINT_REPORT_SORT_MIB=N` with a snapshot
//! sort budget of N MiB.
//!
//! `CHECKPOINT_REPORT_SMALL=1` divides every entry count by 100 (a smoke
//! test of the program; its figures mean nothing).
//!
//! To profile one checkpoint (the binary is `target/release/deps/checkpoint_report-*`):
//!
//! ```text
//! checkpoint_report prepare-wal DIR 1000000 mixed      # or: distinct
//! perf record -g -- checkpoint_report checkpoint-child DIR TABLE_DIR first
//! ```

mod common;

use common::{
    cpu_ticks, dir_bytes, float, fresh_dir, median, plain, status_kib, Machine, Mix, Result,
    Workload, CORES, DELETE_PER_MILLE, OVERWRITE_PER_MILLE, RUNS,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use walhouse::checkpoint::{CheckpointSettings, Checkpointer, CompressionMode};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

/// The issue's targets.
const TARGET_WAL_MB_PER_S_PER_CORE: f64 = 300.0;
const TARGET_PEAK_MIB: f64 = 256.0;

fn main() -> Result<()> {
    // As the `walhouse` binary does (src/malloc.rs); `GLIBC_TUNABLES` with a
    // `glibc.malloc.` parameter keeps glibc's own settings instead.
    let malloc = walhouse::malloc::tune_malloc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, wal, store, mode] if cmd == "checkpoint-child" => {
            return checkpoint_child(Path::new(wal), Path::new(store), mode);
        }
        [cmd, wal, entries, mix] if cmd == "prepare-wal" => {
            return prepare_wal(Path::new(wal), entries.parse()?, mix);
        }
        _ => {}
    }
    let base = std::env::var_os("CHECKPOINT_REPORT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"),
        PathBuf::from,
    );
    fs::create_dir_all(&base)?;
    let root = tempfile::Builder::new()
        .prefix("checkpoint-report-")
        .tempdir_in(&base)?;
    let scale = if std::env::var_os("CHECKPOINT_REPORT_SMALL").is_some() {
        100
    } else {
        1
    };
    let machine = Machine::probe()?;
    println!(
        "walhouse checkpoint report: 16-byte keys, 100-byte xorshift64 values, {CORES} WAL cores, \
         local store, default CheckpointSettings, median of {RUNS} runs; malloc thresholds: \
         {malloc:?}"
    );
    println!(
        "nproc = {}; working directory {}",
        machine.nproc,
        root.path().display()
    );
    if scale > 1 {
        println!("CHECKPOINT_REPORT_SMALL: entry counts divided by {scale}; figures mean nothing");
    }

    let mut results = Vec::new();
    for entries in [1_000_000 / scale, 10_000_000 / scale] {
        results.push(throughput(root.path(), &machine, entries)?);
    }
    let mut states = Vec::new();
    for keys in [1_000_000 / scale, 10_000_000 / scale] {
        states.push(state(root.path(), &machine, keys, scale)?);
    }
    summary(&machine, &results, &states);

    drop(root);
    // Only removes the base directory if nothing else is in it.
    let _ = fs::remove_dir(&base);
    Ok(())
}

/// Appends `entries` entries of `workload` to the WAL in `dir` (created or
/// recovered), alternating between the cores, then syncs and closes it.
fn append_entries(dir: &Path, workload: &mut Workload, entries: u64) -> Result<Duration> {
    let start = Instant::now();
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(dir, CORES))?;
    for i in 0..entries {
        let core = usize::from(i % 2 == 1);
        workload.append(manager.writer(core))?;
    }
    manager.sync_all()?;
    drop(manager);
    Ok(start.elapsed())
}

/// `prepare-wal`: writes a WAL for a profiler to run `checkpoint-child` on.
fn prepare_wal(dir: &Path, entries: u64, mix: &str) -> Result<()> {
    let mix = match mix {
        "mixed" => Mix::Mixed,
        "distinct" => Mix::DistinctPuts,
        other => return Err(format!("unknown mix {other:?} (mixed or distinct)").into()),
    };
    let mut workload = Workload::new(mix);
    append_entries(dir, &mut workload, entries)?;
    println!(
        "{} puts, {} deletes, {} live keys, {:.1} MB in {}",
        workload.puts,
        workload.deletes,
        workload.live_keys,
        float(dir_bytes(dir)?) / 1e6,
        dir.display()
    );
    Ok(())
}

// ---------------------------------------------------------------- child

/// Captures the numeric fields of the snapshot's "state snapshot built"
/// debug event and of the "checkpoint committed" event (sort figures, and
/// how long the checkpoint took to write its files, fsync them, commit the
/// manifest and remove the WAL segments: figures the public API does not
/// return).
#[derive(Clone, Default)]
struct SortFigures(Arc<Mutex<BTreeMap<String, u64>>>);

#[derive(Default)]
struct EventFields {
    message: String,
    numbers: BTreeMap<String, u64>,
}

impl tracing::field::Visit for EventFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.numbers.insert(field.name().to_owned(), value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if let Ok(value) = u64::try_from(value) {
            self.numbers.insert(field.name().to_owned(), value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for SortFigures {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        if fields.message == "state snapshot built" || fields.message == "checkpoint committed" {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(fields.numbers);
        }
    }
}

/// `settings` with the `CHECKPOINT_REPORT_*` overrides applied.
fn with_overrides(settings: CheckpointSettings) -> Result<CheckpointSettings> {
    // `CHECKPOINT_REPORT_ZSTD_LEVEL` overrides the zstd level (default 1).
    let settings = match std::env::var("CHECKPOINT_REPORT_ZSTD_LEVEL") {
        Ok(level) => CheckpointSettings {
            zstd_level: level.parse()?,
            ..settings
        },
        Err(_) => settings,
    };
    // `CHECKPOINT_REPORT_ENCODE_THREADS` overrides the encoder threads
    // (default 1; 0: one per CPU).
    let settings = match std::env::var("CHECKPOINT_REPORT_ENCODE_THREADS") {
        Ok(n) => CheckpointSettings {
            encode_threads: n.parse()?,
            ..settings
        },
        Err(_) => settings,
    };
    // `CHECKPOINT_REPORT_COMPRESSION=always` compresses every column
    // (default: adaptive).
    let settings = match std::env::var("CHECKPOINT_REPORT_COMPRESSION").as_deref() {
        Ok("always") => CheckpointSettings {
            compression: CompressionMode::Always,
            ..settings
        },
        Ok("adaptive") | Err(_) => settings,
        Ok(other) => return Err(format!("unknown compression {other:?}").into()),
    };
    // `CHECKPOINT_REPORT_ROW_GROUP_ROWS` overrides `row_group_rows`.
    let settings = match std::env::var("CHECKPOINT_REPORT_ROW_GROUP_ROWS") {
        Ok(rows) => CheckpointSettings {
            row_group_rows: rows.parse()?,
            ..settings
        },
        Err(_) => settings,
    };
    // `CHECKPOINT_REPORT_SORT_MIB` overrides `sort_memory_bytes`.
    let settings = match std::env::var("CHECKPOINT_REPORT_SORT_MIB") {
        Ok(mib) => CheckpointSettings {
            sort_memory_bytes: mib.parse::<usize>()? << 20,
            ..settings
        },
        Err(_) => settings,
    };
    Ok(settings)
}

/// Runs one checkpoint of the WAL in `wal` to the table in `store` and
/// prints its figures as `name=value` pairs on one line.
///
/// `mode` "first": default settings (the first checkpoint of a table always
/// writes a snapshot). "changelog": `snapshot_every` and
/// `snapshot_delta_bytes` at their maximum, so no snapshot is due.
/// "snapshot": `snapshot_every` = 1, so a snapshot is always due.
fn checkpoint_child(wal: &Path, store: &Path, mode: &str) -> Result<()> {
    let settings = match mode {
        "first" => CheckpointSettings::default(),
        "changelog" => CheckpointSettings {
            snapshot_every: u64::MAX,
            snapshot_delta_bytes: u64::MAX,
            ..CheckpointSettings::default()
        },
        "snapshot" => CheckpointSettings {
            snapshot_every: 1,
            ..CheckpointSettings::default()
        },
        other => return Err(format!("unknown checkpoint mode {other:?}").into()),
    };
    let settings = with_overrides(settings)?;
    let figures = SortFigures::default();
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("walhouse::checkpoint::state", tracing::Level::DEBUG)
        .with_target("walhouse::checkpoint::commit", tracing::Level::INFO);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(figures.clone().with_filter(targets)),
    )?;

    let mut manager = PerCoreWalManager::open(PerCoreWalConfig::new(wal, CORES))?;
    let checkpointer = Checkpointer::new(Store::local(store)?, settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rss_before_kib = status_kib("VmRSS:")?;
    let ticks_before = cpu_ticks()?;
    fs::write("/proc/self/clear_refs", "5")?;
    let start = Instant::now();
    let outcome = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
    let seconds = start.elapsed().as_secs_f64();
    // The state table's version, built after the commit.
    let built = runtime.block_on(checkpointer.finish_state())?;
    let state_seconds = start.elapsed().as_secs_f64() - seconds;
    let cpu_ticks = cpu_ticks()? - ticks_before;
    let hwm_kib = status_kib("VmHWM:")?;

    let manifest = &outcome.manifest;
    let changelog_bytes: u64 = manifest.changelog.iter().map(|f| f.size).sum();
    let snapshot = built.compacted.contains(&manifest.checkpoint);
    let snapshot_bytes = built.bytes_written;
    let sort = figures.0.lock().unwrap_or_else(PoisonError::into_inner);
    let sort_figure = |name: &str| sort.get(name).copied().unwrap_or(0);
    println!(
        "entries={} puts={} deletes={} wal_bytes={} seconds={seconds} state_seconds={state_seconds} cpu_ticks={cpu_ticks} \
         changelog_bytes={changelog_bytes} snapshot_bytes={snapshot_bytes} \
         bytes_written={} snapshot={} snapshot_keys={} removed_segments={} \
         rss_before_kib={rss_before_kib} hwm_kib={hwm_kib} runs_spilled={} merge_passes={} \
         max_buffered_bytes={} write_us={} fsync_us={} commit_us={} remove_us={}",
        manifest.stats.entries,
        manifest.stats.puts,
        manifest.stats.deletes,
        manifest.stats.wal_bytes,
        outcome.bytes_written,
        u8::from(snapshot),
        if snapshot { built.keys.unwrap_or(0) } else { 0 },
        outcome.removed_segments,
        sort_figure("runs_spilled"),
        sort_figure("merge_passes"),
        sort_figure("max_buffered_bytes"),
        sort_figure("write_us"),
        sort_figure("fsync_us"),
        sort_figure("commit_us"),
        sort_figure("remove_us"),
    );
    Ok(())
}

/// One checkpoint measured in a child process.
struct Run {
    puts: u64,
    deletes: u64,
    wal_bytes: u64,
    /// Up to the commit (and the WAL's removal).
    seconds: f64,
    /// Then the state table's version, built after the commit.
    state_seconds: f64,
    cpu_seconds: f64,
    changelog_bytes: u64,
    snapshot_bytes: u64,
    snapshot: bool,
    snapshot_keys: u64,
    rss_before_kib: u64,
    hwm_kib: u64,
    runs_spilled: u64,
    max_buffered_bytes: u64,
}

impl Run {
    fn wal_mb_per_s(&self) -> f64 {
        float(self.wal_bytes) / 1e6 / self.seconds
    }

    fn wal_mb_per_s_with_state(&self) -> f64 {
        float(self.wal_bytes) / 1e6 / (self.seconds + self.state_seconds)
    }

    fn wal_mb_per_cpu_s(&self) -> f64 {
        float(self.wal_bytes) / 1e6 / self.cpu_seconds
    }

    fn entries_per_s(&self) -> f64 {
        float(self.puts + self.deletes) / self.seconds
    }

    fn peak_mib(&self) -> f64 {
        float(self.hwm_kib) / 1024.0
    }

    fn peak_above_before_mib(&self) -> f64 {
        float(self.hwm_kib.saturating_sub(self.rss_before_kib)) / 1024.0
    }

    fn written_mb(&self) -> f64 {
        float(self.changelog_bytes + self.snapshot_bytes) / 1e6
    }
}

fn run_child(machine: &Machine, root: &Path, wal: &Path, store: &Path, mode: &str) -> Result<Run> {
    let tmp = root.join("sort-tmp");
    fs::create_dir_all(&tmp)?;
    let out = Command::new(std::env::current_exe()?)
        .arg("checkpoint-child")
        .arg(wal)
        .arg(store)
        .arg(mode)
        .env("TMPDIR", &tmp)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "checkpoint child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: BTreeMap<&str, &str> = text
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let number = |name: &str| -> Result<u64> {
        Ok(fields
            .get(name)
            .ok_or_else(|| format!("no {name} in the child's output {text:?}"))?
            .parse()?)
    };
    let seconds: f64 = fields
        .get("seconds")
        .ok_or_else(|| format!("no seconds in the child's output {text:?}"))?
        .parse()?;
    Ok(Run {
        puts: number("puts")?,
        deletes: number("deletes")?,
        wal_bytes: number("wal_bytes")?,
        seconds,
        state_seconds: fields
            .get("state_seconds")
            .ok_or_else(|| format!("no state_seconds in the child's output {text:?}"))?
            .parse()?,
        cpu_seconds: float(number("cpu_ticks")?) / float(machine.clock_ticks),
        changelog_bytes: number("changelog_bytes")?,
        snapshot_bytes: number("snapshot_bytes")?,
        snapshot: number("snapshot")? == 1,
        snapshot_keys: number("snapshot_keys")?,
        rss_before_kib: number("rss_before_kib")?,
        hwm_kib: number("hwm_kib")?,
        runs_spilled: number("runs_spilled")?,
        max_buffered_bytes: number("max_buffered_bytes")?,
    })
}

/// Fails unless the checkpoint holds exactly the workload's entries and,
/// when it wrote a snapshot, exactly its live keys.
fn check(run: &Run, puts: u64, deletes: u64, snapshot: Option<u64>) -> Result<()> {
    if (run.puts, run.deletes) != (puts, deletes) {
        return Err(format!(
            "checkpoint holds {} puts and {} deletes, the WAL {puts} and {deletes}",
            run.puts, run.deletes
        )
        .into());
    }
    match snapshot {
        Some(keys) if !run.snapshot || run.snapshot_keys != keys => Err(format!(
            "expected a snapshot of {keys} keys, got snapshot={} of {} keys",
            run.snapshot, run.snapshot_keys
        )
        .into()),
        None if run.snapshot => Err("expected no snapshot, got one".into()),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- reports

/// Prints one row of figures over the runs.
fn print_runs(label: &str, runs: &[Run]) {
    let of = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    println!("  {label}");
    println!(
        "    seconds to the commit        {}",
        plain(&of(|r| r.seconds), 2)
    );
    println!(
        "    then state build, seconds    {}",
        plain(&of(|r| r.state_seconds), 2)
    );
    println!(
        "    WAL MB/s (wall) to commit    {}",
        plain(&of(Run::wal_mb_per_s), 1)
    );
    println!(
        "    WAL MB/s with the state      {}",
        plain(&of(Run::wal_mb_per_s_with_state), 1)
    );
    println!(
        "    WAL MB per CPU-second        {}   (CPU s: {})",
        plain(&of(Run::wal_mb_per_cpu_s), 1),
        plain(&of(|r| r.cpu_seconds), 2)
    );
    println!(
        "    entries/s (M)                {}",
        plain(&of(|r| r.entries_per_s() / 1e6), 3)
    );
    println!(
        "    Parquet MB written           {}   (changelog {}, snapshot {})",
        plain(&of(Run::written_mb), 1),
        plain(&of(|r| float(r.changelog_bytes) / 1e6), 1),
        plain(&of(|r| float(r.snapshot_bytes) / 1e6), 1)
    );
    println!(
        "    peak RSS MiB                 {}",
        plain(&of(Run::peak_mib), 1)
    );
    println!(
        "    peak - RSS before, MiB       {}",
        plain(&of(Run::peak_above_before_mib), 1)
    );
    if runs.iter().any(|r| r.snapshot) {
        println!(
            "    sort: runs spilled {}, buffer high-water MiB {}",
            plain(&of(|r| float(r.runs_spilled)), 0),
            plain(&of(|r| float(r.max_buffered_bytes) / 1_048_576.0), 1)
        );
    }
}

/// The figures of one WAL size.
struct Throughput {
    entries: u64,
    first: Vec<Run>,
    changelog: Vec<Run>,
}

/// Per run: a fresh WAL of `entries` mixed entries and a fresh table; the
/// first checkpoint (changelog and full snapshot); `entries` more entries;
/// a second checkpoint with no snapshot due (changelog, changes and
/// deletion vectors).
fn throughput(root: &Path, machine: &Machine, entries: u64) -> Result<Throughput> {
    println!();
    println!(
        "== checkpoint throughput, WAL of {} M entries written by {CORES} cores \
         ({}% new keys, {}% overwrites, {}% deletes of random earlier keys)",
        float(entries) / 1e6,
        (1000 - OVERWRITE_PER_MILLE - DELETE_PER_MILLE) / 10,
        OVERWRITE_PER_MILLE / 10,
        DELETE_PER_MILLE / 10,
    );
    let mut first = Vec::new();
    let mut changelog = Vec::new();
    for run in 0..RUNS {
        let wal = fresh_dir(root, "wal")?;
        let store = fresh_dir(root, "table")?;
        let mut workload = Workload::new(Mix::Mixed);
        let built = append_entries(&wal, &mut workload, entries)?;
        let wal_disk = dir_bytes(&wal)?;
        let one = run_child(machine, root, &wal, &store, "first")?;
        check(
            &one,
            workload.puts,
            workload.deletes,
            Some(workload.live_keys),
        )?;
        let (puts, deletes) = (workload.puts, workload.deletes);
        append_entries(&wal, &mut workload, entries)?;
        let two = run_child(machine, root, &wal, &store, "changelog")?;
        check(&two, workload.puts - puts, workload.deletes - deletes, None)?;
        println!(
            "  run {}: WAL {:.1} MB on disk (written in {:.1} s); first {:.2} s, {} live keys; \
             no snapshot {:.2} s",
            run + 1,
            float(wal_disk) / 1e6,
            built.as_secs_f64(),
            one.seconds,
            one.snapshot_keys,
            two.seconds
        );
        first.push(one);
        changelog.push(two);
        fs::remove_dir_all(&wal)?;
        fs::remove_dir_all(&store)?;
    }
    print_runs(
        "first checkpoint: changelog; then the state table's version 1, a full snapshot",
        &first,
    );
    print_runs(
        "second checkpoint: no snapshot (changelog + changes + deletion vectors; snapshot_every and snapshot_delta_bytes at u64::MAX)",
        &changelog,
    );
    let difference: Vec<f64> = first
        .iter()
        .zip(&changelog)
        .map(|(a, b)| a.seconds - b.seconds)
        .collect();
    println!(
        "  first minus no-snapshot, seconds (about the snapshot's extra share): {}",
        plain(&difference, 2)
    );
    Ok(Throughput {
        entries,
        first,
        changelog,
    })
}

/// The figures of one state size.
struct StateSize {
    keys: u64,
    /// The first checkpoint (its snapshot holds every key).
    runs: Vec<Run>,
    /// Then a checkpoint without a snapshot of [`LATER_ENTRIES`] onto that state.
    later: Vec<Run>,
    /// Then a snapshot checkpoint of [`LATER_ENTRIES`] more: the previous
    /// snapshot merged with the changelog since.
    periodic: Vec<Run>,
}

/// Entries of each checkpoint after the first in the state section.
const LATER_ENTRIES: u64 = 1_000_000;

/// Per run: a fresh WAL of `keys` puts of distinct keys and the first
/// checkpoint of a fresh table, whose snapshot holds every key; then
/// [`LATER_ENTRIES`] mixed entries and a checkpoint without a snapshot onto that
/// state; then as many again and a checkpoint that writes a snapshot
/// (`snapshot_every` = 1: the previous snapshot merged with both
/// changelogs since), the periodic snapshot of a table of that many keys.
fn state(root: &Path, machine: &Machine, keys: u64, scale: u64) -> Result<StateSize> {
    let later_entries = LATER_ENTRIES / scale;
    println!();
    println!(
        "== state of {} M keys: first checkpoint of a WAL of {} M puts of distinct keys, \
         then {} M mixed entries (no snapshot: changes + deletion vectors), then {} M more and a snapshot",
        float(keys) / 1e6,
        float(keys) / 1e6,
        float(later_entries) / 1e6,
        float(later_entries) / 1e6,
    );
    let mut runs = Vec::new();
    let mut later = Vec::new();
    let mut periodic = Vec::new();
    for _ in 0..RUNS {
        let wal = fresh_dir(root, "wal")?;
        let store = fresh_dir(root, "table")?;
        let mut workload = Workload::new(Mix::DistinctPuts);
        append_entries(&wal, &mut workload, keys)?;
        let run = run_child(machine, root, &wal, &store, "first")?;
        check(&run, keys, 0, Some(keys))?;
        runs.push(run);

        workload.mix = Mix::Mixed;
        let (puts, deletes) = (workload.puts, workload.deletes);
        append_entries(&wal, &mut workload, later_entries)?;
        let run = run_child(machine, root, &wal, &store, "changelog")?;
        check(&run, workload.puts - puts, workload.deletes - deletes, None)?;
        later.push(run);

        let (puts, deletes) = (workload.puts, workload.deletes);
        append_entries(&wal, &mut workload, later_entries)?;
        let run = run_child(machine, root, &wal, &store, "snapshot")?;
        check(
            &run,
            workload.puts - puts,
            workload.deletes - deletes,
            Some(workload.live_keys),
        )?;
        periodic.push(run);
        fs::remove_dir_all(&wal)?;
        fs::remove_dir_all(&store)?;
    }
    print_runs("first checkpoint: changelog + snapshot", &runs);
    print_runs(
        &format!(
            "then {} M mixed entries onto this state: no snapshot (changes + deletion vectors)",
            float(later_entries) / 1e6
        ),
        &later,
    );
    print_runs(
        &format!(
            "then {} M more with a snapshot (snapshot_every = 1): the previous snapshot \
             merged with both changelogs since; WAL figures count this checkpoint's WAL only",
            float(later_entries) / 1e6
        ),
        &periodic,
    );
    Ok(StateSize {
        keys,
        runs,
        later,
        periodic,
    })
}

fn summary(machine: &Machine, results: &[Throughput], states: &[StateSize]) {
    println!();
    println!("== targets");
    let per_core = |runs: &[Run]| {
        median(&runs.iter().map(Run::wal_mb_per_s).collect::<Vec<_>>()) / float(machine.nproc)
    };
    let per_core_with_state = |runs: &[Run]| {
        median(
            &runs
                .iter()
                .map(Run::wal_mb_per_s_with_state)
                .collect::<Vec<_>>(),
        ) / float(machine.nproc)
    };
    for t in results {
        for (label, runs) in [("first", &t.first), ("no snapshot", &t.changelog)] {
            let wall = per_core(runs);
            let with_state = per_core_with_state(runs);
            let cpu = median(&runs.iter().map(Run::wal_mb_per_cpu_s).collect::<Vec<_>>());
            println!(
                "  {} M entries, {label}: {wall:.1} MB/s of WAL per core to the commit (wall MB/s / nproc {}), \
                 {with_state:.1} with the state build after it, \
                 {cpu:.1} MB per CPU-second; target {TARGET_WAL_MB_PER_S_PER_CORE} per core to the commit: {}",
                float(t.entries) / 1e6,
                machine.nproc,
                if wall >= TARGET_WAL_MB_PER_S_PER_CORE {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
    for s in states {
        let wall = per_core(&s.later);
        let with_state = per_core_with_state(&s.later);
        println!(
            "  checkpoint onto a state of {} M keys: {wall:.1} MB/s of WAL per core to the commit, \
             {with_state:.1} with the state build (changes + deletion vectors) after it; \
             target {TARGET_WAL_MB_PER_S_PER_CORE} per core to the commit: {}",
            float(s.keys) / 1e6,
            if wall >= TARGET_WAL_MB_PER_S_PER_CORE {
                "met"
            } else {
                "MISSED"
            }
        );
        let seconds = median(&s.periodic.iter().map(|r| r.seconds).collect::<Vec<_>>());
        let compaction = median(
            &s.periodic
                .iter()
                .map(|r| r.state_seconds)
                .collect::<Vec<_>>(),
        );
        let keys_per_s = median(
            &s.periodic
                .iter()
                .map(|r| float(r.snapshot_keys) / r.state_seconds)
                .collect::<Vec<_>>(),
        );
        println!(
            "  compaction (a full rewrite after the commit) of a state of {} M keys: {compaction:.2} s, \
             {:.2} M keys/s (medians); the checkpoint before it committed in {seconds:.2} s",
            float(s.keys) / 1e6,
            keys_per_s / 1e6
        );
    }
    let all_peaks = results
        .iter()
        .flat_map(|t| t.first.iter().chain(&t.changelog))
        .chain(
            states
                .iter()
                .flat_map(|s| s.runs.iter().chain(&s.later).chain(&s.periodic)),
        )
        .map(Run::peak_mib);
    let highest = all_peaks.fold(0.0_f64, f64::max);
    println!(
        "  highest peak RSS of any checkpoint: {highest:.1} MiB; target < {TARGET_PEAK_MIB} MiB: {}",
        if highest < TARGET_PEAK_MIB {
            "met"
        } else {
            "MISSED"
        }
    );
    for s in states {
        let peak = median(&s.runs.iter().map(Run::peak_mib).collect::<Vec<_>>());
        println!(
            "  state of {} M keys: median peak RSS {peak:.1} MiB",
            float(s.keys) / 1e6
        );
    }
    if let [small, large] = states {
        let peak = |s: &StateSize| median(&s.runs.iter().map(Run::peak_mib).collect::<Vec<_>>());
        println!(
            "  peak RSS at {} M keys / at {} M keys: {:.2}",
            float(large.keys) / 1e6,
            float(small.keys) / 1e6,
            peak(large) / peak(small)
        );
    }
}
