//! Figures the seed has no API for: checkpoint to Parquet, group-commit
//! ingest, point lookups on a checkpoint.

use std::fs;
use std::path::Path;
use std::time::Instant;

use walhouse::checkpoint::{CheckpointSettings, Checkpointer};
use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};
use walhouse::store::Store;

use crate::common::{dir_bytes, float, fresh_dir, median, Mix, Result, Workload};
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

// TODO(issue 5): group-commit ingest through the `Ingester` once it is in main.
pub fn ingest_section(ctx: &mut Ctx) {
    println!();
    println!("== walhouse only: group-commit ingest with concurrent producers");
    println!("   not measured: API not available (issue 5's Ingester is not in this branch)");
    ctx.summary.push(Row {
        figure: "group-commit ingest (acks/s, p50/p99)".into(),
        walhouse: "not measured: API not available".into(),
        seed: "(no such API)".into(),
        ratio: String::new(),
        target: ">= 1 M acks/s per core, p99 <= 2 ms".into(),
        limit: String::new(),
    });
}

// TODO: point lookup latency once `get(key)` (src/checkpoint/lookup.rs) is in main.
pub fn lookup_section(ctx: &mut Ctx) {
    println!();
    println!("== walhouse only: point lookup on a checkpoint (cold, cached)");
    println!("   not measured: API not available (get(key) in src/checkpoint/lookup.rs is not in this branch)");
    ctx.summary.push(Row {
        figure: "point lookup latency, cold / cached".into(),
        walhouse: "not measured: API not available".into(),
        seed: "(no such API)".into(),
        ratio: String::new(),
        target: "(walhouse only)".into(),
        limit: String::new(),
    });
}
