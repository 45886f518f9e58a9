//! The sections: each runs rounds of walhouse and the peers (rocksdb,
//! fjall, slatedb, in that order; deltalake in `export`), so the engines
//! alternate on the disk's slow and fast periods, with an fdatasync probe
//! right before every run.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::runtime::Runtime;
use walhouse::Shutdown;

use crate::peer::{Kind, Peer};
use crate::workload::{mb_per_s, Latencies, Workload};
use crate::{num, walhouse_side, Figure, Result, Scale};

/// Rows per durable batch when a section loads its table (not timed).
const LOAD_BATCH: usize = 10_000;
/// Single-put producers per core (walhouse tasks; peer threads).
const SINGLE_PRODUCERS_PER_CORE: usize = 64;
/// Rows per Parquet row group, walhouse's default (`row_group_rows`).
const ROW_GROUP_ROWS: usize = 65_536;

pub struct Ctx<'a> {
    pub rt: &'a Runtime,
    pub root: &'a Path,
    pub scale: Scale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Walhouse,
    Peer(Kind),
}

impl Engine {
    /// walhouse, then every key-value peer of this run.
    fn all() -> Vec<Engine> {
        let mut all = vec![Engine::Walhouse];
        all.extend(
            Kind::all()
                .into_iter()
                .filter(|k| k.is_kv())
                .map(Engine::Peer),
        );
        all
    }

    /// walhouse, then every peer of this run, export-only ones too.
    fn all_with_export_only() -> Vec<Engine> {
        let mut all = vec![Engine::Walhouse];
        all.extend(Kind::all().into_iter().map(Engine::Peer));
        all
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Walhouse => "walhouse",
            Engine::Peer(k) => k.name(),
        }
    }
}

struct Metric {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
}

fn metric(name: impl Into<String>, unit: &'static str, higher_is_better: bool) -> Metric {
    Metric {
        name: name.into(),
        unit,
        higher_is_better,
    }
}

/// Runs `run` for every engine of `engines` (walhouse first), `rounds`
/// times, each in a fresh directory after an fdatasync probe; adds one
/// figure per metric and peer.
fn compare(
    ctx: &Ctx,
    figures: &mut Vec<Figure>,
    label: &str,
    metrics: &[Metric],
    engines: &[Engine],
    mut run: impl FnMut(Engine, &Path) -> Result<Vec<f64>>,
) -> Result<()> {
    // engine -> (runs of each metric, fsync rate of each run)
    let mut runs: Vec<(Vec<Vec<f64>>, Vec<f64>)> = engines
        .iter()
        .map(|_| (vec![Vec::new(); metrics.len()], Vec::new()))
        .collect();
    for round in 0..ctx.scale.rounds {
        for (e, &engine) in engines.iter().enumerate() {
            let dir = ctx.root.join(format!("{}-{round}", engine.name()));
            let fsync = fdatasync_rate(ctx.root)?;
            let values = run(engine, &dir)?;
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            let shown: Vec<String> = metrics
                .iter()
                .zip(&values)
                .map(|(m, v)| format!("{} {}", num(*v), m.unit))
                .collect();
            println!(
                "{label} round {round} {:<8}  {}  (probe {fsync:.0} fdatasync/s)",
                engine.name(),
                shown.join(", ")
            );
            for (m, v) in values.into_iter().enumerate() {
                runs[e].0[m].push(v);
            }
            runs[e].1.push(fsync);
        }
    }
    for (e, &engine) in engines.iter().enumerate().skip(1) {
        let Engine::Peer(kind) = engine else { continue };
        for (m, metric) in metrics.iter().enumerate() {
            figures.push(Figure {
                name: format!("{label}: {}", metric.name),
                unit: metric.unit,
                peer: kind.name(),
                higher_is_better: metric.higher_is_better,
                walhouse: runs[0].0[m].clone(),
                value: runs[e].0[m].clone(),
                walhouse_fsync: runs[0].1.clone(),
                peer_fsync: runs[e].1.clone(),
            });
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ ingest

/// Closed-loop peer producers, as `walhouse_side::ingest`: one thread per
/// producer, each writing a synced batch and waiting for it.
fn peer_ingest(
    peer: &dyn Peer,
    work: &Workload,
    producers: usize,
    batch: usize,
    run_for: Duration,
) -> Result<(u64, f64, Latencies)> {
    let stride = work.len() / producers;
    let start = Instant::now();
    let deadline = start + run_for;
    let results: Vec<Result<(u64, Latencies)>> = thread::scope(|s| {
        let threads: Vec<_> = (0..producers)
            .map(|p| {
                s.spawn(move || {
                    let mut lat = Latencies::default();
                    let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(batch);
                    let mut at = p * stride;
                    let mut acks = 0u64;
                    while Instant::now() < deadline {
                        pairs.clear();
                        pairs.extend((at..at + batch).map(|i| (work.key(i), work.value(i))));
                        let t = Instant::now();
                        peer.write(&pairs)?;
                        lat.record(t);
                        at += batch;
                        acks += batch as u64;
                    }
                    Ok((acks, lat))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("producer panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut acks = 0;
    let mut lat = Latencies::default();
    for r in results {
        let (a, l) = r?;
        acks += a;
        lat.extend(l);
    }
    Ok((acks, secs, lat))
}

#[expect(clippy::cast_precision_loss, reason = "ack counts far below 2^52")]
fn ingest_figures(acks: u64, secs: f64, mut lat: Latencies) -> Vec<f64> {
    vec![acks as f64 / secs, lat.quantile(0.5), lat.quantile(0.99)]
}

pub fn ingest(ctx: &Ctx, figures: &mut Vec<Figure>) -> Result<()> {
    let keys = if ctx.scale.quick {
        2_000_000
    } else {
        8_000_000
    };
    let work = Arc::new(Workload::new(keys));
    let run_for = Duration::from_secs_f64(ctx.scale.ingest_secs);
    for cores in [1usize, 2] {
        for batch in [100usize, 1000, 1] {
            // Batched: one producer per core (walhouse core / peer writer
            // thread). Single puts: many producers, each one put in flight.
            let producers = if batch == 1 {
                SINGLE_PRODUCERS_PER_CORE * cores
            } else {
                cores
            };
            let label = if batch == 1 {
                format!("ingest {cores} core(s), single puts x{producers} producers")
            } else {
                format!("ingest {cores} core(s), batches of {batch} x{producers} producers")
            };
            let metrics = [
                metric("acks/s", "acks/s", true),
                metric("p50 ack latency", "µs", false),
                metric("p99 ack latency", "µs", false),
            ];
            compare(
                ctx,
                figures,
                &label,
                &metrics,
                &Engine::all(),
                |engine, dir| {
                    let (acks, secs, lat) = match engine {
                        Engine::Walhouse => ctx.rt.block_on(async {
                            let db = walhouse_side::open(dir, cores).await?;
                            let out = walhouse_side::ingest(&db, &work, producers, batch, run_for)
                                .await?;
                            db.shutdown(Shutdown::Sync).await?;
                            Ok::<_, crate::BoxError>(out)
                        })?,
                        Engine::Peer(kind) => {
                            let peer = kind.open(dir)?;
                            peer_ingest(peer.as_ref(), &work, producers, batch, run_for)?
                        }
                    };
                    Ok(ingest_figures(acks, secs, lat))
                },
            )?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ export

fn load_peer(peer: &dyn Peer, work: &Workload, rows: usize) -> Result<()> {
    let mut at = 0;
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(LOAD_BATCH);
    while at < rows {
        let n = LOAD_BATCH.min(rows - at);
        pairs.clear();
        pairs.extend((at..at + n).map(|i| (work.key(i), work.value(i))));
        peer.write(&pairs)?;
        at += n;
    }
    Ok(())
}

/// Rows per `RecordBatch` handed to a Parquet writer.
pub const EXPORT_BATCH_ROWS: usize = 8192;

/// The Parquet settings of every peer's export: zstd level 1, row groups
/// of walhouse's size, no dictionary (as walhouse for near-unique columns).
pub fn export_properties() -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// A peer's export: a full scan into one Parquet file (key binary, value
/// binary, [`export_properties`]), fsync'd with its directory as
/// walhouse's local store does. Returns (rows, bytes of the file).
fn peer_export(peer: &dyn Peer, path: &Path) -> Result<(u64, u64)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
    ]));
    let file = File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(export_properties()?))?;
    let mut keys = BinaryBuilder::new();
    let mut values = BinaryBuilder::new();
    let mut rows = 0u64;
    let mut pending = 0usize;
    let flush = |keys: &mut BinaryBuilder,
                 values: &mut BinaryBuilder,
                 writer: &mut ArrowWriter<File>|
     -> Result<()> {
        let columns: Vec<ArrayRef> = vec![Arc::new(keys.finish()), Arc::new(values.finish())];
        writer.write(&RecordBatch::try_new(Arc::clone(&schema), columns)?)?;
        Ok(())
    };
    peer.scan(&mut |k, v| {
        keys.append_value(k);
        values.append_value(v);
        rows += 1;
        pending += 1;
        if pending == EXPORT_BATCH_ROWS {
            pending = 0;
            flush(&mut keys, &mut values, &mut writer)?;
        }
        Ok(())
    })?;
    if pending > 0 {
        flush(&mut keys, &mut values, &mut writer)?;
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok((rows, fs::metadata(path)?.len()))
}

pub fn export(ctx: &Ctx, figures: &mut Vec<Figure>) -> Result<()> {
    let rows = usize::try_from(ctx.scale.rows)?;
    let work = Workload::new(ctx.scale.rows);
    let label = format!("export {rows} rows");
    let metrics = [
        metric(
            "MB/s to committed Parquet (walhouse: changelog)",
            "MB/s",
            true,
        ),
        metric(
            "MB/s to committed Parquet (walhouse: changelog + state)",
            "MB/s",
            true,
        ),
        metric("Parquet bytes written", "MB", false),
    ];
    let engines = Engine::all_with_export_only();
    compare(ctx, figures, &label, &metrics, &engines, |engine, dir| {
        match engine {
            Engine::Walhouse => ctx.rt.block_on(async {
                let db = walhouse_side::open(dir, 2).await?;
                walhouse_side::load(&db, &work, rows, LOAD_BATCH).await?;
                let t = Instant::now();
                db.checkpoint().await?;
                let changelog = t.elapsed().as_secs_f64();
                // Shutdown(Checkpoint) waits for the state table's build.
                db.shutdown(Shutdown::Checkpoint).await?;
                let both = t.elapsed().as_secs_f64();
                #[expect(clippy::cast_precision_loss, reason = "bytes far below 2^52")]
                let mb = dir_bytes(&dir.join("table"))? as f64 / 1e6;
                Ok(vec![
                    mb_per_s(ctx.scale.rows, changelog),
                    mb_per_s(ctx.scale.rows, both),
                    mb,
                ])
            }),
            #[cfg(feature = "deltalake")]
            Engine::Peer(Kind::Deltalake) => {
                // No store to load or scan: the rows go from memory straight
                // into a new Delta table (created before the clock starts).
                let (secs, bytes) = ctx.rt.block_on(crate::delta::export(dir, &work, rows))?;
                #[expect(clippy::cast_precision_loss, reason = "bytes far below 2^52")]
                let mb = bytes as f64 / 1e6;
                Ok(vec![
                    mb_per_s(ctx.scale.rows, secs),
                    mb_per_s(ctx.scale.rows, secs),
                    mb,
                ])
            }
            Engine::Peer(kind) => {
                let peer = kind.open(&dir.join("db"))?;
                load_peer(peer.as_ref(), &work, rows)?;
                let t = Instant::now();
                let (scanned, bytes) = peer_export(peer.as_ref(), &dir.join("export.parquet"))?;
                let secs = t.elapsed().as_secs_f64();
                if scanned != ctx.scale.rows {
                    return Err(format!("{} scanned {scanned} rows of {rows}", kind.name()).into());
                }
                #[expect(clippy::cast_precision_loss, reason = "bytes far below 2^52")]
                let mb = bytes as f64 / 1e6;
                Ok(vec![mb_per_s(scanned, secs), mb_per_s(scanned, secs), mb])
            }
        }
    })
}

// ------------------------------------------------------------------ reopen

/// `peers child-write ENGINE DIR ROWS`: writes rows `0..ROWS` durably,
/// prints `acked ROWS`, then goes on writing until it is killed.
pub fn child_write(engine: &str, dir: &Path, rows: usize) -> Result<()> {
    let work = Workload::new(rows as u64 * 2);
    let say = || -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "acked {rows}")?;
        out.flush()?;
        Ok(())
    };
    if engine == "walhouse" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(child_walhouse(dir, &work, rows, say))
    } else {
        let peer = Kind::parse(engine)?.open(dir)?;
        load_peer(peer.as_ref(), &work, rows)?;
        say()?;
        let mut at = rows;
        loop {
            let pairs: Vec<(&[u8], &[u8])> = (at..at + 1000)
                .map(|i| (work.key(i), work.value(i)))
                .collect();
            peer.write(&pairs)?;
            at += 1000;
        }
    }
}

async fn child_walhouse(
    dir: &Path,
    work: &Workload,
    rows: usize,
    say: impl Fn() -> Result<()>,
) -> Result<()> {
    let db = walhouse_side::open(dir, 2).await?;
    walhouse_side::load(&db, work, rows, LOAD_BATCH).await?;
    say()?;
    let mut at = rows;
    loop {
        let ops = (at..at + 1000)
            .map(|i| walhouse::runtime::WriteOp::Put {
                key: work.key(i).to_vec(),
                value: work.value(i).to_vec(),
            })
            .collect();
        db.write(ops).await?;
        at += 1000;
    }
}

/// Keys to look up: `n` pseudo-random rows of `0..rows`.
fn sample(rows: u64, n: usize) -> Vec<usize> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % rows).expect("rows fits usize")
        })
        .collect()
}

pub fn reopen(ctx: &Ctx, figures: &mut Vec<Figure>) -> Result<()> {
    let rows = ctx.scale.rows;
    let work = Workload::new(rows);
    let check = sample(rows, 1000);
    let exe = std::env::current_exe()?;
    let label = format!("reopen after SIGKILL, {rows} rows acked, no checkpoint");
    let metrics = [metric("reopen seconds", "s", false)];
    compare(
        ctx,
        figures,
        &label,
        &metrics,
        &Engine::all(),
        |engine, dir| {
            let db_dir = match engine {
                Engine::Walhouse => dir.to_path_buf(),
                Engine::Peer(_) => dir.join("db"),
            };
            fs::create_dir_all(dir)?;
            let mut child = Command::new(&exe)
                .arg("child-write")
                .arg(engine.name())
                .arg(&db_dir)
                .arg(rows.to_string())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().ok_or("no child stdout")?).read_line(&mut line)?;
            // Child::kill is SIGKILL on Unix: no destructor, no shutdown runs.
            child.kill()?;
            child.wait()?;
            if !line.starts_with("acked") {
                return Err(format!("child-write {}: {line:?}", engine.name()).into());
            }
            let (secs, missing) = match engine {
                Engine::Walhouse => ctx.rt.block_on(async {
                    let t = Instant::now();
                    let db = walhouse_side::open(&db_dir, 2).await?;
                    let secs = t.elapsed().as_secs_f64();
                    let mut missing = 0;
                    for &i in &check {
                        if db.get(work.key(i)).await?.is_none() {
                            missing += 1;
                        }
                    }
                    db.shutdown(Shutdown::Sync).await?;
                    Ok::<_, crate::BoxError>((secs, missing))
                })?,
                Engine::Peer(kind) => {
                    let t = Instant::now();
                    let peer = kind.open(&db_dir)?;
                    let secs = t.elapsed().as_secs_f64();
                    let mut missing = 0;
                    for &i in &check {
                        if peer.get(work.key(i))?.is_none() {
                            missing += 1;
                        }
                    }
                    (secs, missing)
                }
            };
            if missing > 0 {
                return Err(format!(
                    "{}: {missing} acked keys missing after reopen",
                    engine.name()
                )
                .into());
            }
            Ok(vec![secs])
        },
    )
}

// ------------------------------------------------------------------ lookup

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn pass_figures(n: usize, secs: f64, mut lat: Latencies) -> [f64; 3] {
    [n as f64 / secs, lat.quantile(0.5), lat.quantile(0.99)]
}

pub fn lookup(ctx: &Ctx, figures: &mut Vec<Figure>) -> Result<()> {
    let rows = usize::try_from(ctx.scale.rows)?;
    let work = Workload::new(ctx.scale.rows);
    let keys = sample(ctx.scale.rows, ctx.scale.lookups);
    let label = format!("lookup, {rows} keys, {} gets per pass", keys.len());
    let metrics = [
        metric("cold gets/s", "gets/s", true),
        metric("cold p50", "µs", false),
        metric("cold p99", "µs", false),
        metric("warm gets/s", "gets/s", true),
        metric("warm p50", "µs", false),
        metric("warm p99", "µs", false),
    ];
    compare(
        ctx,
        figures,
        &label,
        &metrics,
        &Engine::all(),
        |engine, dir| {
            let mut out = Vec::new();
            match engine {
                Engine::Walhouse => ctx.rt.block_on(async {
                    let db = walhouse_side::open(dir, 2).await?;
                    walhouse_side::load(&db, &work, rows, LOAD_BATCH).await?;
                    db.checkpoint().await?;
                    db.shutdown(Shutdown::Checkpoint).await?;
                    let db = walhouse_side::open(dir, 2).await?;
                    for _pass in 0..2 {
                        let mut lat = Latencies::default();
                        let t = Instant::now();
                        for &i in &keys {
                            let at = Instant::now();
                            if db.get(work.key(i)).await?.is_none() {
                                return Err(format!("walhouse lost key {i}").into());
                            }
                            lat.record(at);
                        }
                        out.extend(pass_figures(keys.len(), t.elapsed().as_secs_f64(), lat));
                    }
                    db.shutdown(Shutdown::Sync).await?;
                    Ok::<_, crate::BoxError>(())
                })?,
                Engine::Peer(kind) => {
                    let db_dir = dir.join("db");
                    {
                        let peer = kind.open(&db_dir)?;
                        load_peer(peer.as_ref(), &work, rows)?;
                        peer.flush()?;
                    }
                    let peer = kind.open(&db_dir)?;
                    for _pass in 0..2 {
                        let mut lat = Latencies::default();
                        let t = Instant::now();
                        for &i in &keys {
                            let at = Instant::now();
                            if peer.get(work.key(i))?.is_none() {
                                return Err(format!("{} lost key {i}", kind.name()).into());
                            }
                            lat.record(at);
                        }
                        out.extend(pass_figures(keys.len(), t.elapsed().as_secs_f64(), lat));
                    }
                }
            }
            Ok(out)
        },
    )?;
    Ok(())
}

/// The disk's raw fdatasync rate beside a run: 4 KiB appended and
/// fdatasync'd for 0.3 s (`benches/common`'s probe); syncs/s.
fn fdatasync_rate(dir: &Path) -> Result<f64> {
    crate::common::raw_fdatasync_rate(dir, Duration::from_millis(300))
        .map_err(|e| e.to_string().into())
}

/// Bytes of the files under `dir` (`benches/common`'s walk).
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    crate::common::dir_bytes(dir).map_err(|e| e.to_string().into())
}
