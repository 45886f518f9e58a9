//! Prints recovery figures for this machine as plain numbers: how fast a
//! WAL tail is replayed, with and without a checkpoint under it, and the
//! peak memory of the process while it recovers.
//!
//! Run with `cargo bench --bench recovery_report`. Every put has a 16-byte
//! key and a 100-byte value of pseudo-random bytes (xorshift64). Keys are 8
//! bytes of a bijective 64-bit mix of the key's index followed by the index
//! (big-endian), so they are distinct and arrive in no particular order. The
//! WAL has 2 cores and the entries alternate between them. A tail is 88 %
//! puts of new keys, 10 % overwrites and 2 % deletes of random earlier keys
//! (mostly distinct keys). Each figure is the median of the runs (the runs
//! follow in brackets).
//!
//! What is measured:
//!
//! - WAL only: a tail of 1 M and of 10 M entries, no checkpoint;
//!   `PerCoreRecoveryManager::new(config).recover()`;
//! - checkpoint only: 1 M puts of distinct keys, `Checkpointer::checkpoint`
//!   to a `Store::local` table (default settings), then
//!   `walhouse::checkpoint::recover` with no WAL (the load of the checkpoint
//!   on its own);
//! - checkpoint + tail: the same checkpoint, then a tail of 1 M and of 10 M
//!   entries (continuing the key numbers, so overwrites and deletes also hit
//!   keys of the checkpoint); `walhouse::checkpoint::recover(&store, &config)`
//!   in a tokio runtime.
//!
//! The WAL and the table are written once per configuration, and every run
//! recovers the same files (recovery does not change a WAL without a torn
//! tail). Everything lives under `target/bench-tmp/` (the disk of the
//! sources; `RECOVERY_REPORT_DIR` picks another directory) and is read while
//! in the page cache. It is removed at the end.
//!
//! Each recovery runs in a child process of this binary (`recovery_report
//! recover-child WAL_DIR STORE_DIR`, `-` for no store): it builds a tokio
//! runtime if it needs one, resets its peak RSS (`/proc/self/clear_refs`),
//! recovers, checks nothing but prints its figures, with `VmHWM` as the peak.
//! The parent checks the number of live keys and of replayed entries.
//!
//! A configuration whose first run takes longer than
//! [`ONE_RUN_ABOVE_SECONDS`] is run once. `RECOVERY_REPORT_SMALL=1` divides
//! every entry count by 100 (a smoke test; its figures mean nothing).
//!
//! To profile one recovery (the binary is `target/release/deps/recovery_report-*`):
//!
//! ```text
//! recovery_report prepare DIR/wal - 1000000            # WAL only
//! recovery_report prepare DIR/wal DIR/table 1000000    # checkpoint + tail
//! perf record -g -- recovery_report recover-child DIR/wal -
//! ```

mod common;

use common::{
    cpu_ticks, dir_bytes, float, fresh_dir, median, plain, status_kib, Machine, Mix, Result,
    Workload, CORES, RUNS,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use walhouse::checkpoint::{CheckpointSettings, Checkpointer};
use walhouse::per_core_wal::{PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

/// ... unless its first run takes longer than this (seconds of recovery).
const ONE_RUN_ABOVE_SECONDS: f64 = 30.0;
/// Keys of the checkpoint under the tail.
const CHECKPOINT_KEYS: u64 = 1_000_000;
/// The issue's target for WAL replay.
const TARGET_ENTRIES_PER_S: f64 = 10e6;
/// The seed's figures, quoted by the issue (1 M entries).
const SEED_MS: f64 = 426.0;
const SEED_MIB: f64 = 430.0;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, wal, store] if cmd == "recover-child" => {
            return recover_child(Path::new(wal), store_arg(store));
        }
        [cmd, wal, store, entries] if cmd == "prepare" => {
            let prepared = prepare(
                Path::new(wal),
                store_arg(store),
                CHECKPOINT_KEYS,
                entries.parse()?,
            )?;
            println!(
                "{} tail entries, {} live keys, WAL {:.1} MB",
                prepared.tail_entries,
                prepared.live_keys,
                float(prepared.wal_bytes) / 1e6
            );
            return Ok(());
        }
        _ => {}
    }
    let base = std::env::var_os("RECOVERY_REPORT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"),
        PathBuf::from,
    );
    fs::create_dir_all(&base)?;
    let root = tempfile::Builder::new()
        .prefix("recovery-report-")
        .tempdir_in(&base)?;
    let scale = if std::env::var_os("RECOVERY_REPORT_SMALL").is_some() {
        100
    } else {
        1
    };
    let machine = Machine::probe()?;
    println!(
        "walhouse recovery report: 16-byte keys, 100-byte xorshift64 values, {CORES} WAL cores, \
         local store, median of {RUNS} runs"
    );
    println!(
        "nproc = {}; working directory {}",
        machine.nproc,
        root.path().display()
    );
    if scale > 1 {
        println!("RECOVERY_REPORT_SMALL: entry counts divided by {scale}; figures mean nothing");
    }

    let checkpoint_keys = CHECKPOINT_KEYS / scale;
    let mut rows = Vec::new();
    for tail in [1_000_000 / scale, 10_000_000 / scale] {
        rows.push(configuration(
            root.path(),
            &machine,
            Config::WalOnly,
            checkpoint_keys,
            tail,
        )?);
    }
    rows.push(configuration(
        root.path(),
        &machine,
        Config::CheckpointOnly,
        checkpoint_keys,
        0,
    )?);
    for tail in [1_000_000 / scale, 10_000_000 / scale] {
        rows.push(configuration(
            root.path(),
            &machine,
            Config::CheckpointAndTail,
            checkpoint_keys,
            tail,
        )?);
    }
    summary(&rows);

    drop(root);
    // Only removes the base directory if nothing else is in it.
    let _ = fs::remove_dir(&base);
    Ok(())
}

fn store_arg(arg: &str) -> Option<&Path> {
    (arg != "-").then(|| Path::new(arg))
}

/// Appends `entries` entries of `workload`, alternating between the cores.
fn append(manager: &mut PerCoreWalManager, workload: &mut Workload, entries: u64) -> Result<()> {
    for i in 0..entries {
        let core = usize::from(i % 2 == 1);
        workload.append(manager.writer(core))?;
    }
    manager.sync_all()?;
    Ok(())
}

/// What `prepare` wrote.
struct Prepared {
    tail_entries: u64,
    live_keys: u64,
    wal_bytes: u64,
    seconds: Duration,
}

/// Writes a fresh WAL in `wal`. With `store`: first `checkpoint_keys` puts of
/// distinct keys and a checkpoint of them to a fresh table in `store`
/// (default settings). Then a tail of `tail` mixed entries that continues
/// the key numbers.
fn prepare(wal: &Path, store: Option<&Path>, checkpoint_keys: u64, tail: u64) -> Result<Prepared> {
    let start = Instant::now();
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(wal, CORES))?;
    let mut workload = Workload::new(Mix::DistinctPuts);
    if let Some(store) = store {
        append(&mut manager, &mut workload, checkpoint_keys)?;
        let checkpointer = Checkpointer::new(Store::local(store)?, CheckpointSettings::default())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let outcome = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
        let built = runtime.block_on(checkpointer.finish_state())?;
        if outcome.manifest.stats.puts != checkpoint_keys || built.keys != Some(checkpoint_keys) {
            return Err(format!(
                "checkpoint holds {} puts and a state of {:?} keys, expected {checkpoint_keys}",
                outcome.manifest.stats.puts, built.keys
            )
            .into());
        }
    }
    workload.mix = Mix::Mixed;
    append(&mut manager, &mut workload, tail)?;
    drop(manager);
    Ok(Prepared {
        tail_entries: tail,
        live_keys: workload.live_keys,
        wal_bytes: dir_bytes(wal)?,
        seconds: start.elapsed(),
    })
}

// ---------------------------------------------------------------- child

/// Recovers the WAL in `wal` (with `store`: the newest checkpoint of the
/// table in `store` first, through `walhouse::checkpoint::recover`) and
/// prints its figures as `name=value` pairs on one line.
fn recover_child(wal: &Path, store: Option<&Path>) -> Result<()> {
    let config = PerCoreWalConfig::new(wal, CORES);
    let runtime = match store {
        Some(_) => Some(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
        ),
        None => None,
    };
    let store = store.map(Store::local).transpose()?;
    let rss_before_kib = status_kib("VmRSS:")?;
    let ticks_before = cpu_ticks()?;
    fs::write("/proc/self/clear_refs", "5")?;
    let start = Instant::now();
    let (state, checkpoint) = match (&runtime, &store) {
        (Some(runtime), Some(store)) => {
            let recovered = runtime.block_on(walhouse::checkpoint::recover(store, &config))?;
            (recovered.state, recovered.checkpoint)
        }
        _ => (PerCoreRecoveryManager::new(config).recover()?, None),
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ticks = cpu_ticks()? - ticks_before;
    let hwm_kib = status_kib("VmHWM:")?;
    // With the state still held: the process's own memory and the mapped
    // WAL pages (page cache the state's keys and values are read from;
    // untouched mapped pages are not counted).
    let anon_kib = status_kib("RssAnon:")?;
    // tmpfs pages (a WAL under /dev/shm) count as shared memory.
    let file_kib = status_kib("RssFile:")? + status_kib("RssShmem:")?;
    println!(
        "seconds={seconds} cpu_ticks={cpu_ticks} rss_before_kib={rss_before_kib} \
         hwm_kib={hwm_kib} anon_kib={anon_kib} file_kib={file_kib} replayed={} skipped={} \
         keys={} checkpoint={}",
        state.entries_replayed,
        state.entries_skipped,
        state.state.len(),
        checkpoint.map_or(0, |c| c + 1),
    );
    // Freeing millions of keys is not part of recovery; the process ends.
    std::mem::forget(state);
    Ok(())
}

/// One recovery measured in a child process.
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    rss_before_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    replayed: u64,
}

impl Run {
    fn entries_per_s(&self) -> f64 {
        float(self.replayed) / self.seconds
    }

    fn peak_mib(&self) -> f64 {
        float(self.hwm_kib) / 1024.0
    }

    fn describe(&self) -> String {
        format!(
            "{:.3} s, {:.1} CPU s, peak RSS {:.1} MiB; after, with the state held: {:.1} MiB \
             anonymous + {:.1} MiB of mapped files",
            self.seconds,
            self.cpu_seconds,
            self.peak_mib(),
            float(self.anon_kib) / 1024.0,
            float(self.file_kib) / 1024.0
        )
    }

    fn peak_above_before_mib(&self) -> f64 {
        float(self.hwm_kib.saturating_sub(self.rss_before_kib)) / 1024.0
    }
}

/// Runs `recover-child` and checks the state it rebuilt.
fn run_child(
    machine: &Machine,
    wal: &Path,
    store: Option<&Path>,
    expect_keys: u64,
    expect_replayed: u64,
) -> Result<Run> {
    let out = Command::new(std::env::current_exe()?)
        .arg("recover-child")
        .arg(wal)
        .arg(store.map_or_else(|| PathBuf::from("-"), Path::to_path_buf))
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "recovery child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: BTreeMap<&str, &str> = text
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let field = |name: &str| -> Result<&str> {
        Ok(fields
            .get(name)
            .ok_or_else(|| format!("no {name} in the child's output {text:?}"))?)
    };
    let number = |name: &str| -> Result<u64> { Ok(field(name)?.parse()?) };
    let run = Run {
        seconds: field("seconds")?.parse()?,
        cpu_seconds: float(number("cpu_ticks")?) / float(machine.clock_ticks),
        rss_before_kib: number("rss_before_kib")?,
        hwm_kib: number("hwm_kib")?,
        anon_kib: number("anon_kib")?,
        file_kib: number("file_kib")?,
        replayed: number("replayed")?,
    };
    let keys = number("keys")?;
    // A checkpoint leaves a few marker entries (epoch barriers) in the WAL
    // after the entries it covers; they are replayed too.
    if keys != expect_keys || !(expect_replayed..=expect_replayed + 16).contains(&run.replayed) {
        return Err(format!(
            "recovered {keys} keys after replaying {} entries; expected {expect_keys} and \
             {expect_replayed} (+ at most 16 markers)",
            run.replayed
        )
        .into());
    }
    if store.is_some() && number("checkpoint")? == 0 {
        return Err("recovery found no checkpoint".into());
    }
    Ok(run)
}

// ---------------------------------------------------------------- reports

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    WalOnly,
    CheckpointOnly,
    CheckpointAndTail,
}

/// The figures of one configuration.
struct Row {
    config: Config,
    label: String,
    tail: u64,
    live_keys: u64,
    runs: Vec<Run>,
}

impl Row {
    fn median(&self, f: fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
}

/// Prepares the files of `config` once, then recovers them in fresh child
/// processes.
fn configuration(
    root: &Path,
    machine: &Machine,
    config: Config,
    checkpoint_keys: u64,
    tail: u64,
) -> Result<Row> {
    let label = match config {
        Config::WalOnly => format!("WAL only, tail of {} M entries", float(tail) / 1e6),
        Config::CheckpointOnly => format!(
            "checkpoint of {} M keys, no WAL",
            float(checkpoint_keys) / 1e6
        ),
        Config::CheckpointAndTail => format!(
            "checkpoint of {} M keys + tail of {} M entries",
            float(checkpoint_keys) / 1e6,
            float(tail) / 1e6
        ),
    };
    println!();
    println!("== {label}");
    let wal = fresh_dir(root, "wal")?;
    let store = fresh_dir(root, "table")?;
    let store = (config != Config::WalOnly).then_some(store.as_path());
    let prepared = prepare(&wal, store, checkpoint_keys, tail)?;
    println!(
        "  prepared in {:.1} s: WAL {:.1} MB on disk, {} live keys",
        prepared.seconds.as_secs_f64(),
        float(prepared.wal_bytes) / 1e6,
        prepared.live_keys
    );
    // Checkpoint only: a WAL directory that does not exist (a new machine).
    let child_wal = if config == Config::CheckpointOnly {
        root.join("no-wal")
    } else {
        wal.clone()
    };
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let one = run_child(
            machine,
            &child_wal,
            store,
            prepared.live_keys,
            prepared.tail_entries,
        )?;
        println!("  run {}: {}", run + 1, one.describe());
        let long = one.seconds > ONE_RUN_ABOVE_SECONDS;
        runs.push(one);
        if run == 0 && long {
            println!("  first run above {ONE_RUN_ABOVE_SECONDS} s: this configuration runs once");
            break;
        }
    }
    let of = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    println!(
        "    seconds                      {}",
        plain(&of(|r| r.seconds), 3)
    );
    if tail > 0 {
        println!(
            "    entries replayed/s (M)       {}   (whole recovery)",
            plain(&of(|r| r.entries_per_s() / 1e6), 3)
        );
    }
    println!(
        "    CPU s / wall s               {}",
        plain(&of(|r| r.cpu_seconds / r.seconds), 2)
    );
    println!(
        "    peak RSS MiB                 {}",
        plain(&of(Run::peak_mib), 1)
    );
    println!(
        "    peak - RSS before, MiB       {}",
        plain(&of(Run::peak_above_before_mib), 1)
    );
    if prepared.live_keys > 0 {
        println!(
            "    peak RSS bytes per live key  {}",
            plain(
                &of(|r| float(r.hwm_kib) * 1024.0)
                    .iter()
                    .map(|b| b / float(prepared.live_keys))
                    .collect::<Vec<_>>(),
                0
            )
        );
    }
    fs::remove_dir_all(&wal)?;
    if let Some(store) = store {
        fs::remove_dir_all(store)?;
    }
    Ok(Row {
        config,
        label,
        tail,
        live_keys: prepared.live_keys,
        runs,
    })
}

fn summary(rows: &[Row]) {
    println!();
    println!("== targets");
    let checkpoint_load = rows
        .iter()
        .find(|r| r.config == Config::CheckpointOnly)
        .map(|r| r.median(|run| run.seconds));
    for row in rows.iter().filter(|r| r.tail > 0) {
        let rate = row.median(Run::entries_per_s);
        println!(
            "  {}: {:.2} M entries/s over the whole recovery ({} run(s)); target >= {:.0} M/s: {}",
            row.label,
            rate / 1e6,
            row.runs.len(),
            TARGET_ENTRIES_PER_S / 1e6,
            if rate >= TARGET_ENTRIES_PER_S {
                "met"
            } else {
                "MISSED"
            }
        );
        if row.config == Config::CheckpointAndTail {
            if let Some(load) = checkpoint_load {
                let replay = row.median(|run| run.seconds) - load;
                println!(
                    "    minus the median checkpoint-only load ({load:.3} s): tail replay about \
                     {:.2} M entries/s",
                    float(row.tail) / replay / 1e6
                );
            }
        }
        println!(
            "    CPU s / wall s {:.2} (2.00 would be both cores busy the whole time)",
            row.median(|run| run.cpu_seconds / run.seconds)
        );
    }
    let wal_only: Vec<&Row> = rows
        .iter()
        .filter(|r| r.config == Config::WalOnly)
        .collect();
    if let Some(first) = wal_only.first() {
        println!(
            "  {}: {:.0} ms and {:.1} MiB peak; the seed (issue): {SEED_MS} ms, {SEED_MIB} MiB",
            first.label,
            first.median(|run| run.seconds) * 1e3,
            first.median(Run::peak_mib)
        );
    }
    if let [small, large] = wal_only.as_slice() {
        // The state is the result, so memory grows with the live keys; what
        // can be bounded is the memory per key and per replayed entry.
        for row in [small, large] {
            println!(
                "  memory, {}: peak {:.1} MiB = {:.0} B per replayed entry ({:.0} B per live \
                 key); held after recovery: {:.1} MiB anonymous + {:.1} MiB of the WAL \
                 mapped; the seed: {SEED_MIB} MiB for 1 M entries",
                row.label,
                row.median(Run::peak_mib),
                row.median(Run::peak_mib) * 1_048_576.0 / float(row.tail),
                row.median(Run::peak_mib) * 1_048_576.0 / float(row.live_keys),
                row.median(|r| float(r.anon_kib) / 1024.0),
                row.median(|r| float(r.file_kib) / 1024.0),
            );
        }
    }
}
