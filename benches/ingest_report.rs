//! Durable ingest through the [`Ingester`]: concurrent producers, group
//! commit, acknowledgements after fdatasync.
//!
//! Run with `cargo bench --bench ingest_report`. Every put has a 16-byte key
//! and a 100-byte value. For 1 and 2 cores and two producer shapes (batches
//! of 64 puts, and single puts), producers run in a closed loop (each awaits
//! its acknowledgement before sending again) for 3 s; the report gives
//! acknowledged entries/s, ack latency p50/p99 (per entry, from submission,
//! including any wait for channel space, to acknowledgement) and fsyncs/s,
//! beside the disk's raw fdatasync rate measured right before and after the
//! run (4 KiB write + fdatasync, 1 s). Each figure is the median of 3 runs.
//! The data directory is under `target/bench-tmp/` (`INGEST_REPORT_DIR`
//! picks another). No checkpoints run during the measurement.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fresh_dir, key, median, raw_fdatasync_rate, Machine, Result, RUNS};
use walhouse::runtime::{IngestSettings, Ingester, WriteOp};
use walhouse::store::Store;

const VALUE: [u8; 100] = [0x5a; 100];
const MEASURE_FOR: Duration = Duration::from_secs(3);

struct Run {
    entries_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    fsyncs_per_s: f64,
    raw_before: f64,
    raw_after: f64,
}

#[derive(Clone, Copy)]
enum Shape {
    /// `producers` tasks, each sending batches of `batch` puts.
    Batches { producers: usize, batch: usize },
    /// `producers` tasks, each sending one put at a time.
    Singles { producers: usize },
}

async fn run_once(root: &Path, cores: usize, shape: Shape) -> Result<Run> {
    let dir = fresh_dir(root, "ingest")?;
    fs::create_dir_all(&dir)?;
    let raw_before = raw_fdatasync_rate(root, Duration::from_secs(1))?;
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
    let before = ingester.metrics();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let h = ingester.handle();
        let stop = stop.clone();
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
                                    value: VALUE.to_vec(),
                                }
                            })
                            .collect();
                        h.put_batch(ops).await?;
                    }
                    Shape::Singles { .. } => {
                        i += 1;
                        h.put(key(i).to_vec(), VALUE.to_vec()).await?;
                    }
                }
            }
            Ok::<(), walhouse::runtime::IngestError>(())
        }));
    }
    tokio::time::sleep(MEASURE_FOR).await;
    let after = ingester.metrics();
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    ingester.shutdown(false).await?;
    let acks = after.ack_latency.since(&before.ack_latency);
    let run = Run {
        entries_per_s: common::float(after.entries - before.entries) / elapsed,
        p50_us: acks.quantile(0.5).as_secs_f64() * 1e6,
        p99_us: acks.quantile(0.99).as_secs_f64() * 1e6,
        fsyncs_per_s: common::float(after.fsyncs - before.fsyncs) / elapsed,
        raw_before,
        raw_after: raw_fdatasync_rate(root, Duration::from_secs(1))?,
    };
    fs::remove_dir_all(&dir)?;
    Ok(run)
}

fn main() -> Result<()> {
    let root: PathBuf = std::env::var_os("INGEST_REPORT_DIR")
        .map_or_else(|| PathBuf::from("target/bench-tmp"), PathBuf::from);
    fs::create_dir_all(&root)?;
    let machine = Machine::probe()?;
    println!(
        "walhouse ingest report: {} CPUs, 16 B keys + 100 B values, closed-loop producers, \
         {} s per run, medians of {RUNS} runs [runs]",
        machine.nproc,
        MEASURE_FOR.as_secs()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "{:<6} {:<26} {:>22} {:>10} {:>10} {:>10} {:>18}",
        "cores", "producers", "acked entries/s", "p50 µs", "p99 µs", "fsyncs/s", "raw fdatasync/s"
    );
    let shapes = [
        (
            "64 x batches of 64",
            Shape::Batches {
                producers: 64,
                batch: 64,
            },
        ),
        (
            "16 x batches of 256",
            Shape::Batches {
                producers: 16,
                batch: 256,
            },
        ),
        ("1024 x single puts", Shape::Singles { producers: 1024 }),
    ];
    for cores in [1, 2] {
        for (name, shape) in shapes {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(rt.block_on(run_once(&root, cores, shape))?);
            }
            let col = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
            let rates = col(|r| r.entries_per_s);
            let per_run: Vec<String> = rates.iter().map(|r| format!("{:.2}M", r / 1e6)).collect();
            let raw: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}/{:.0}", r.raw_before, r.raw_after))
                .collect();
            println!(
                "{cores:<6} {name:<26} {:>8.2} M [{}] {:>10.0} {:>10.0} {:>10.0}   [{}]",
                median(&rates) / 1e6,
                per_run.join(", "),
                median(&col(|r| r.p50_us)),
                median(&col(|r| r.p99_us)),
                median(&col(|r| r.fsyncs_per_s)),
                raw.join(", ")
            );
        }
    }
    println!("raw fdatasync/s: before/after each run");
    Ok(())
}
