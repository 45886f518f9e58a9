//! Figures the seed has no API for: checkpoint to Parquet, group-commit
//! ingest, point lookups on a checkpoint.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use walhouse::checkpoint::{CheckpointReader, CheckpointSettings, Checkpointer, LookupSettings};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::runtime::{IngestSettings, Ingester, WriteOp};
use walhouse::store::Store;

use crate::common::{dir_bytes, float, fresh_dir, key, median, Mix, Result, Workload};
use crate::engines::ChildRun;
use crate::{med, run_child_pub as run_child, Ctx, Row};

const CORES: usize = 2;

/// `child checkpoint WAL STORE SCRATCH`: one `Checkpointer::checkpoint` of
/// the WAL to a local table (default settings, the sort's spill files in
/// SCRATCH). `check` = the WAL bytes the checkpoint read.
pub fn checkpoint_child(wal: &Path, store: &Path, scratch: &Path) -> Result<ChildRun> {
    let settings = CheckpointSettings {
        spill_dir: Some(scratch.to_path_buf()),
        ..CheckpointSettings::default()
    };
    let mut manager = PerCoreWalManager::open(PerCoreWalConfig::new(wal, CORES))?;
    let checkpointer = Checkpointer::new(Store::local(store)?, settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let before = crate::common::status_kib("VmRSS:")?;
    fs::write("/proc/self/clear_refs", "5")?;
    let start = Instant::now();
    let outcome = runtime.block_on(checkpointer.checkpoint(&mut manager))?;
    let seconds = start.elapsed().as_secs_f64();
    let hwm_kib = crate::common::status_kib("VmHWM:")?;
    Ok(ChildRun {
        entries: outcome.manifest.stats.entries,
        seconds,
        rss_before_kib: before,
        hwm_kib,
        check: outcome.manifest.stats.wal_bytes,
    })
}

pub fn checkpoint_section(ctx: &mut Ctx) -> Result<()> {
    let cpu = ctx.cpu()?;
    const ROUNDS: usize = 3;
    let entries = ctx.n(1_000_000);
    println!();
    println!(
        "== walhouse only: checkpoint to Parquet on a local store (Checkpointer::checkpoint, default settings), \
         first checkpoint of a fresh WAL of {} M entries (88% new keys, 10% overwrites, 2% deletes), 2 cores; \
         each run a child process; {ROUNDS} runs",
        float(entries) / 1e6
    );
    let mut mbs = Vec::new();
    let mut eps = Vec::new();
    let mut peak = Vec::new();
    let mut frac = Vec::new();
    for round in 0..ROUNDS {
        let wal = fresh_dir(&ctx.root, "ckpt-wal")?;
        let store = fresh_dir(&ctx.root, "ckpt-store")?;
        let scratch = fresh_dir(&ctx.root, "ckpt-spill")?;
        fs::create_dir_all(&store)?;
        fs::create_dir_all(&scratch)?;
        let mut workload = Workload::new(Mix::Mixed);
        let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&wal, CORES))?;
        for i in 0..entries {
            workload.append(manager.writer(usize::from(i % 2 == 1)))?;
        }
        manager.sync_all()?;
        drop(manager);
        let wal_bytes = dir_bytes(&wal)?;
        let run = run_child(&[
            "child",
            "checkpoint",
            &wal.display().to_string(),
            &store.display().to_string(),
            &scratch.display().to_string(),
        ])?;
        let table = dir_bytes(&store)?;
        let r = float(run.check) / run.seconds;
        println!(
            "   run {round}: {} entries, WAL {:.1} MB (checkpoint read {:.1} MB) in {:.3} s = {:.0} MB/s of WAL, \
             {:.2} M entries/s; peak RSS {:.1} MiB; table {:.1} MB; walhouse at {:.0}% of read limit",
            run.entries,
            float(wal_bytes) / 1e6,
            float(run.check) / 1e6,
            run.seconds,
            r / 1e6,
            float(run.entries) / run.seconds / 1e6,
            float(run.hwm_kib) / 1024.0,
            float(table) / 1e6,
            r / cpu.read_bytes_per_s() * 100.0
        );
        mbs.push(r / 1e6);
        eps.push(float(run.entries) / run.seconds / 1e6);
        peak.push(float(run.hwm_kib) / 1024.0);
        frac.push(r / cpu.read_bytes_per_s() * 100.0);
        fs::remove_dir_all(&wal)?;
        fs::remove_dir_all(&store)?;
        fs::remove_dir_all(&scratch)?;
    }
    println!(
        "   median: {} MB/s of WAL, {} M entries/s, peak RSS {} MiB",
        med(&mbs, 0),
        med(&eps, 2),
        med(&peak, 1)
    );
    ctx.summary.push(Row {
        figure: format!(
            "checkpoint to Parquet, {} M entries (MB/s of WAL; peak RSS)",
            float(entries) / 1e6
        ),
        walhouse: format!("{:.0} MB/s; {:.1} MiB", median(&mbs), median(&peak)),
        seed: "(no such API)".into(),
        ratio: String::new(),
        target: "(walhouse only)".into(),
        limit: format!("{:.0}% of read", median(&frac)),
    });
    Ok(())
}

/// A run counts as in the disk's fast period when its fdatasync probes
/// average at least this (the fast periods give ~7000-8000/s, the slow ones
/// ~300/s; anything between is a transition).
const FAST_DISK: f64 = 5000.0;

/// Producer shapes of the ingest figure.
#[derive(Clone, Copy)]
enum Shape {
    /// `producers` tasks, each sending batches of `batch` puts.
    Batches { producers: usize, batch: usize },
    /// `producers` tasks, each sending one put at a time.
    Singles { producers: usize },
}

struct IngestRun {
    entries_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    fsyncs_per_s: f64,
    probe: f64,
}

/// One closed-loop run: `shape`'s producers each await their ack before
/// sending again, for `measure_for`; the figures are the Ingester's own
/// metrics (ack latency per entry from submission to acknowledgement).
async fn ingest_run(
    root: &Path,
    cores: usize,
    shape: Shape,
    measure_for: Duration,
) -> Result<IngestRun> {
    let dir = fresh_dir(root, "ingest")?;
    fs::create_dir_all(&dir)?;
    let before_probe = crate::limits::fdatasync_rate(root, Duration::from_millis(400))?;
    let settings = IngestSettings {
        cores,
        pin_threads: true,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        ..IngestSettings::default()
    };
    let ingester = Ingester::builder(&dir, Store::memory())
        .settings(settings)
        .open()
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let producers = match shape {
        Shape::Batches { producers, .. } | Shape::Singles { producers } => producers,
    };
    let values = Arc::new(crate::Values::new());
    let before = ingester.metrics();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let h = ingester.handle();
        let stop = Arc::clone(&stop);
        let values = Arc::clone(&values);
        tasks.push(tokio::spawn(async move {
            let mut i = (p as u64) << 40;
            while !stop.load(Ordering::Relaxed) {
                match shape {
                    Shape::Batches { batch, .. } => {
                        let ops = (0..batch)
                            .map(|_| {
                                i += 1;
                                WriteOp::Put {
                                    key: key(i).to_vec(),
                                    value: values.get(i).to_vec(),
                                }
                            })
                            .collect();
                        h.put_batch(ops).await?;
                    }
                    Shape::Singles { .. } => {
                        i += 1;
                        h.put(key(i).to_vec(), values.get(i).to_vec()).await?;
                    }
                }
            }
            Ok::<(), walhouse::runtime::IngestError>(())
        }));
    }
    tokio::time::sleep(measure_for).await;
    let after = ingester.metrics();
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    ingester.shutdown(false).await?;
    let acks = after.ack_latency.since(&before.ack_latency);
    let after_probe = crate::limits::fdatasync_rate(root, Duration::from_millis(400))?;
    fs::remove_dir_all(&dir)?;
    Ok(IngestRun {
        entries_per_s: float(after.entries - before.entries) / elapsed,
        p50_us: acks.quantile(0.5).as_secs_f64() * 1e6,
        p99_us: acks.quantile(0.99).as_secs_f64() * 1e6,
        fsyncs_per_s: float(after.fsyncs - before.fsyncs) / elapsed,
        probe: (before_probe + after_probe) / 2.0,
    })
}

/// Group-commit ingest through `walhouse::runtime::Ingester` (issue 5):
/// concurrent producers, acknowledgements after fdatasync.
pub fn ingest_section(ctx: &mut Ctx) -> Result<()> {
    const RUNS: usize = 3;
    let cpu = ctx.cpu()?;
    let measure_for = Duration::from_millis(if ctx.scale > 1 { 300 } else { 2000 });
    println!();
    println!(
        "== walhouse only: group-commit ingest (Ingester, default settings, no checkpoints), closed-loop producers, \
         {} ms per run, {RUNS} runs; fdatasync probe (0.4 s) before and after each run",
        measure_for.as_millis()
    );
    println!(
        "   limit per core: the append limit ({:.1} M records/s); target >= 1 M acked entries/s per core at p99 <= 2 ms \
         in the disk's fast periods (probe >= {FAST_DISK:.0} fsync/s)",
        cpu.append_bytes_per_s() / float(crate::limits::RECORD_BYTES as u64) / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Closed loop: the entries in flight (producers x batch) over the
    // throughput is the mean latency, so the shapes trace the load/latency
    // curve: 2048 and 4096 entries in flight, and 1024 single puts.
    let shapes = [
        (
            "32 producers x batches of 64",
            Shape::Batches {
                producers: 32,
                batch: 64,
            },
        ),
        (
            "64 producers x batches of 64",
            Shape::Batches {
                producers: 64,
                batch: 64,
            },
        ),
        (
            "1024 producers x single puts",
            Shape::Singles { producers: 1024 },
        ),
    ];
    for cores in [1usize, 2] {
        for (name, shape) in shapes {
            let mut per_core = Vec::new();
            let mut p99 = Vec::new();
            let mut frac = Vec::new();
            let mut fast_ok = Vec::new();
            for run in 0..RUNS {
                let r = rt.block_on(ingest_run(&ctx.root, cores, shape, measure_for))?;
                let pc = r.entries_per_s / float(cores as u64);
                let f = pc * float(crate::limits::RECORD_BYTES as u64) / cpu.append_bytes_per_s();
                println!(
                    "   {cores} core(s), {name:<30} run {run}: {:>6.2} M acked/s ({:.2} M per core), p50 {:>6.0} us, p99 {:>6.0} us, \
                     {:>6.0} fsyncs/s; probe {:>5.0} fsync/s; {:>3.0}% of append limit",
                    r.entries_per_s / 1e6,
                    pc / 1e6,
                    r.p50_us,
                    r.p99_us,
                    r.fsyncs_per_s,
                    r.probe,
                    f * 100.0
                );
                if r.probe >= FAST_DISK {
                    fast_ok.push(pc >= 1e6 && r.p99_us <= 2000.0);
                }
                per_core.push(pc / 1e6);
                p99.push(r.p99_us);
                frac.push(f * 100.0);
            }
            let verdict = if fast_ok.is_empty() {
                "no fast-disk run".to_owned()
            } else {
                format!(
                    "{} of {} fast-disk runs meet it",
                    fast_ok.iter().filter(|ok| **ok).count(),
                    fast_ok.len()
                )
            };
            ctx.summary.push(Row {
                figure: format!(
                    "group-commit ingest, {cores} core(s), {name} (M acked/s per core; p99 us)"
                ),
                walhouse: format!("{:.2}; p99 {:.0} us", median(&per_core), median(&p99)),
                seed: "(no such API)".into(),
                ratio: String::new(),
                target: format!(">= 1 M/s per core, p99 <= 2 ms: {verdict}"),
                limit: format!("{:.0}% of append", median(&frac)),
            });
        }
    }
    Ok(())
}

/// Point lookups through `CheckpointReader::get` on a checkpoint of
/// 1 M distinct keys (local store, default settings): cold (a fresh reader,
/// empty cache, per lookup), footers cached with new random keys, and cached
/// (the same 1000 keys again, 5 times). A tenth of the keys asked were never
/// written; every answer's presence is checked.
pub fn lookup_section(ctx: &mut Ctx) -> Result<()> {
    const COLD: usize = 200;
    const WARM: usize = 2_000;
    const CACHED_KEYS: usize = 1_000;
    const CACHED_ROUNDS: usize = 5;
    let keys = ctx.n(1_000_000);
    println!();
    println!(
        "== walhouse only: point lookup (CheckpointReader::get, default LookupSettings) on a checkpoint of {} M distinct keys, local store",
        float(keys) / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let wal = fresh_dir(&ctx.root, "lookup-wal")?;
    let table = fresh_dir(&ctx.root, "lookup-table")?;
    fs::create_dir_all(&table)?;
    let store = Store::local(&table)?;
    let mut manager = PerCoreWalManager::new(PerCoreWalConfig::new(&wal, CORES))?;
    let mut workload = Workload::new(Mix::DistinctPuts);
    for i in 0..keys {
        workload.append(manager.writer(usize::from(i % 2 == 1)))?;
    }
    manager.sync_all()?;
    let checkpointer = Checkpointer::new(store.clone(), CheckpointSettings::default())?;
    rt.block_on(checkpointer.checkpoint(&mut manager))?;
    drop(manager);
    let written = workload.next_key;
    let mut rng = crate::common::XorShift(0x1234_5678_9abc_def1);
    let mut pick = move || {
        let n = rng.next() % (written + written / 9);
        (n, key(n))
    };
    let check = |n: u64, got: bool| -> Result<()> {
        if (n < written) == got {
            Ok(())
        } else {
            Err(format!(
                "lookup of key number {n}: found {got}, written {}",
                n < written
            )
            .into())
        }
    };
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let mut cold = Vec::new();
    for _ in 0..COLD {
        let reader = CheckpointReader::open(store.clone(), LookupSettings::default());
        let (n, k) = pick();
        let t = Instant::now();
        let got = rt.block_on(reader.get(&k))?;
        cold.push(t.elapsed().as_secs_f64() * 1e6);
        check(n, got.is_some())?;
    }
    let reader = CheckpointReader::open(store.clone(), LookupSettings::default());
    rt.block_on(reader.get(&key(0)))?;
    let mut warm = Vec::new();
    let mut looked = Vec::new();
    for i in 0..WARM {
        let (n, k) = pick();
        let t = Instant::now();
        let got = rt.block_on(reader.get(&k))?;
        warm.push(t.elapsed().as_secs_f64() * 1e6);
        check(n, got.is_some())?;
        if i < CACHED_KEYS {
            looked.push((n, k));
        }
    }
    let mut cached = Vec::new();
    for _ in 0..CACHED_ROUNDS {
        for (n, k) in &looked {
            let t = Instant::now();
            let got = rt.block_on(reader.get(k))?;
            cached.push(t.elapsed().as_secs_f64() * 1e6);
            check(*n, got.is_some())?;
        }
    }
    let mut rows = Vec::new();
    for (name, v) in [
        ("cold (fresh reader per lookup)", &mut cold),
        ("footers cached, new random keys", &mut warm),
        ("cached (the same 1000 keys again)", &mut cached),
    ] {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!(
            "   {name:<36} {} lookups: p50 {p50:>8.0} us, p99 {p99:>8.0} us",
            v.len()
        );
        rows.push(format!("{name}: p50 {p50:.0} us, p99 {p99:.0} us"));
    }
    fs::remove_dir_all(&wal)?;
    fs::remove_dir_all(&table)?;
    ctx.summary.push(Row {
        figure: format!(
            "point lookup on a checkpoint of {} M keys",
            float(keys) / 1e6
        ),
        walhouse: rows.join("; "),
        seed: "(no such API)".into(),
        ratio: String::new(),
        target: "(walhouse only)".into(),
        limit: String::new(),
    });
    Ok(())
}
