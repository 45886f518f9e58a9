//! `versus`: walhouse's per-core WAL beside laminar-storage 0.18.12's (the
//! seed), on identical workloads, in one run, alternating A B A B; with the
//! machine's limits measured in the same run. See README.md.
//!
//! ```text
//! versus all | SECTION...   (limits append durable merge recovery bytes checkpoint ingest lookup)
//! ```
//!
//! Children (re-executions of this binary, one per measured merge, recovery
//! or checkpoint, so each peak RSS is that workload's alone):
//!
//! ```text
//! versus child merge walhouse|walhouse-vec|seed DIR
//! versus child recover walhouse|seed DIR SCRATCH
//! versus child checkpoint WAL_DIR STORE_DIR SCRATCH
//! ```
//!
//! For a profiler: `versus prepare walhouse|seed DIR ENTRIES` writes the
//! 2-core WAL of the merge and recovery workloads into DIR.

#[path = "../../../benches/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;
mod engines;
mod limits;
mod walhouse_only;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{dir_bytes, float, fresh_dir, key, median, Result, XorShift, VALUE_LEN};
use engines::{ChildRun, Engine, Wal};
use limits::CpuLimits;

/// WAL cores of the merge and recovery workloads.
const CORES: usize = 2;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["child", "merge", mode, dir] => {
            engines::merge_child(mode, Path::new(dir), CORES)?.print();
            return Ok(());
        }
        ["child", "recover", mode, dir, scratch] => {
            engines::recover_child(mode, Path::new(dir), Path::new(scratch), CORES)?.print();
            return Ok(());
        }
        ["child", "checkpoint", wal, store, scratch] => {
            walhouse_only::checkpoint_child(Path::new(wal), Path::new(store), Path::new(scratch))?
                .print();
            return Ok(());
        }
        ["prepare", engine, dir, entries] => {
            let engine = Engine::parse(engine)?;
            let entries: u64 = entries.parse()?;
            with_wal!(engine, build(Path::new(dir), &Values::new(), entries))?;
            println!(
                "{entries} puts on {CORES} cores in {dir}: {} bytes",
                dir_bytes(Path::new(dir))?
            );
            return Ok(());
        }
        _ => {}
    }
    let Some(&what) = args.first() else {
        return Err(usage());
    };
    const KNOWN: [&str; 9] = [
        "limits",
        "append",
        "durable",
        "merge",
        "recovery",
        "bytes",
        "checkpoint",
        "ingest",
        "lookup",
    ];
    let sections: Vec<&str> = if what == "all" {
        vec![
            "limits",
            "append",
            "durable",
            "merge",
            "recovery",
            "checkpoint",
            "ingest",
            "lookup",
        ]
    } else if args.iter().all(|a| KNOWN.contains(a)) {
        args.clone()
    } else {
        return Err(usage());
    };
    let what = sections.join(" ");
    let what = what.as_str();
    let scale: u64 = std::env::var("VERSUS_SCALE")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);

    let base = std::env::var_os("VERSUS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/versus-tmp"),
        PathBuf::from,
    );
    fs::create_dir_all(&base)?;
    let root = tempfile::Builder::new().prefix("run-").tempdir_in(&base)?;
    let mut ctx = Ctx {
        root: root.path().to_path_buf(),
        scale,
        values: Values::new(),
        cpu: None,
        wals: BTreeMap::new(),
        summary: Vec::new(),
    };
    header(&ctx, what)?;
    for section in sections {
        match section {
            "limits" => limits_section(&mut ctx)?,
            "append" => append_section(&mut ctx)?,
            "durable" => durable_section(&mut ctx)?,
            "merge" => merge_section(&mut ctx)?,
            "recovery" => recovery_section(&mut ctx)?,
            "bytes" => bytes_section(&mut ctx)?,
            "checkpoint" => walhouse_only::checkpoint_section(&mut ctx)?,
            "ingest" => walhouse_only::ingest_section(&mut ctx)?,
            "lookup" => walhouse_only::lookup_section(&mut ctx)?,
            _ => unreachable!(),
        }
    }
    print_summary(&ctx);
    drop(root);
    let _ = fs::remove_dir(&base);
    Ok(())
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: versus all | SECTION... (limits append durable merge recovery bytes checkpoint ingest lookup) \
     (VERSUS_SCALE=N divides entry counts by N; VERSUS_DIR picks the working directory)"
        .into()
}

// ---------------------------------------------------------------- context

/// A WAL written for the merge and recovery workloads, kept for the run.
pub struct BuiltWal {
    pub dir: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
}

/// One line of the final summary.
pub struct Row {
    pub figure: String,
    pub walhouse: String,
    pub seed: String,
    pub ratio: String,
    pub target: String,
    pub limit: String,
}

pub struct Ctx {
    pub root: PathBuf,
    pub scale: u64,
    pub values: Values,
    pub cpu: Option<CpuLimits>,
    pub wals: BTreeMap<(&'static str, u64), BuiltWal>,
    pub summary: Vec<Row>,
}

impl Ctx {
    /// The CPU limits, measured once per run (on first use).
    pub fn cpu(&mut self) -> Result<CpuLimits> {
        if let Some(c) = self.cpu {
            return Ok(c);
        }
        let c = CpuLimits::measure(&self.root)?;
        self.cpu = Some(c);
        Ok(c)
    }

    pub fn n(&self, entries: u64) -> u64 {
        (entries / self.scale).max(1)
    }
}

/// 64 pseudo-random 100-byte values (xorshift64); put `i` uses value `i % 64`.
pub struct Values(Vec<[u8; VALUE_LEN]>);

impl Values {
    fn new() -> Self {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        Self(
            (0..64)
                .map(|_| {
                    let mut v = [0u8; VALUE_LEN];
                    rng.fill(&mut v);
                    v
                })
                .collect(),
        )
    }

    #[inline]
    pub fn get(&self, i: u64) -> &[u8] {
        &self.0[(i % 64) as usize]
    }
}

fn header(ctx: &Ctx, what: &str) -> Result<()> {
    let sh = |cmd: &str| -> String {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    println!(
        "versus {what}: walhouse::per_core_wal vs laminar-storage 0.18.12 per_core_wal (the seed)"
    );
    println!(
        "date {} | walhouse {} | {} | nproc {} | {} | load {}",
        sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
        sh(&format!(
            "git -C {} log -1 --format='%h %s' | cut -c1-60",
            env!("CARGO_MANIFEST_DIR")
        )),
        sh("lscpu | sed -n 's/^Model name: *//p'"),
        sh("nproc"),
        sh("free -g | awk '/Mem:/ {print $2 \" GiB RAM\"}'"),
        sh("cut -d' ' -f1-3 /proc/loadavg"),
    );
    println!(
        "16-byte keys, 100-byte values; default config of both; working dir {}",
        ctx.root.display()
    );
    if ctx.scale > 1 {
        println!(
            "VERSUS_SCALE={}: entry counts divided; figures mean nothing",
            ctx.scale
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// Median and the individual values.
pub fn med(values: &[f64], decimals: usize) -> String {
    common::plain(values, decimals)
}

fn fsync_probe(ctx: &Ctx) -> Result<f64> {
    limits::fdatasync_rate(&ctx.root, Duration::from_millis(400))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------- limits

fn limits_section(ctx: &mut Ctx) -> Result<()> {
    println!();
    println!("== limits of this machine (same run)");
    let cpu = ctx.cpu()?;
    cpu.print();
    let seq = limits::sequential_sync_write(&ctx.root)?;
    println!(
        "  sequential write 64 MiB + fdatasync   {:>8.0} MB/s",
        seq / 1e6
    );
    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(limits::fdatasync_rate(
            &ctx.root,
            Duration::from_millis(500),
        )?);
    }
    println!(
        "  write 4 KiB + fdatasync               {} /s (3 probes of 0.5 s)",
        med(&rates, 0)
    );
    Ok(())
}

// ---------------------------------------------------------------- append

/// `per_core` puts on each of `cores` writers, each on its own thread,
/// started together, a fresh WAL every `chunk` puts; only the append loops
/// are timed; a chunk lasts as long as its slowest thread. Returns the time
/// and the WAL bytes of one chunk (after a final sync, not timed).
fn buffered<W: Wal>(
    root: &Path,
    values: &Arc<Values>,
    cores: usize,
    per_core: u64,
    chunk: u64,
) -> Result<(Duration, u64)> {
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    let mut bytes = 0;
    while done < per_core {
        let n = (per_core - done).min(chunk);
        let dir = fresh_dir(root, "buffered")?;
        let (keep, writers) = W::open(&dir, cores)?;
        let start = Arc::new(Barrier::new(cores));
        let mut threads = Vec::new();
        for (core, mut writer) in writers.into_iter().enumerate() {
            let start = Arc::clone(&start);
            let values = Arc::clone(values);
            let first = core as u64 * per_core + done;
            threads.push(thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                for i in first..first + n {
                    writer
                        .put(&key(i), values.get(i))
                        .map_err(|e| e.to_string())?;
                }
                let took = t.elapsed();
                writer.sync().map_err(|e| e.to_string())?;
                Ok::<_, String>((took, writer))
            }));
        }
        let mut slowest = Duration::ZERO;
        let mut writers = Vec::new();
        for t in threads {
            let (took, w) = t.join().map_err(|_| "writer thread panicked")??;
            slowest = slowest.max(took);
            writers.push(w);
        }
        elapsed += slowest;
        drop(writers);
        drop(keep);
        bytes = dir_bytes(&dir)?;
        fs::remove_dir_all(&dir)?;
        done += n;
    }
    Ok((elapsed, bytes))
}

fn append_section(ctx: &mut Ctx) -> Result<()> {
    let cpu = ctx.cpu()?;
    let values = Arc::new(Values::new());
    let per_core = ctx.n(2_000_000);
    let chunk = ctx.n(400_000);
    let long = ctx.n(5_000_000);
    const ROUNDS: usize = 5;
    println!();
    println!(
        "== buffered append_put, no sync in the timed loop; {} k puts per core per round, \
         a fresh WAL every {} k (no segment rotation); {ROUNDS} rounds, A B A B",
        per_core / 1000,
        chunk / 1000
    );
    println!(
        "   limit per core: crc32c of every byte + write() into the page cache = {:.2} GB/s",
        cpu.append_bytes_per_s() / 1e9
    );
    for (cores, label) in [(1usize, "1 core"), (2, "2 cores, each on its own thread")] {
        let mut wh = Vec::new();
        let mut sd = Vec::new();
        let mut ratios = Vec::new();
        let mut frac = Vec::new();
        for round in 0..ROUNDS {
            let mut r = [0.0; 2];
            let mut bytes = [0u64; 2];
            for (i, engine) in Engine::BOTH.into_iter().enumerate() {
                let (t, b) =
                    with_wal!(engine, buffered(&ctx.root, &values, cores, per_core, chunk))?;
                r[i] = float(per_core * cores as u64) / t.as_secs_f64();
                bytes[i] = b;
            }
            let per_entry_wh = float(bytes[0]) / float(chunk * cores as u64);
            let f = r[0] / cores as f64 * per_entry_wh / cpu.append_bytes_per_s();
            println!(
                "   {label:<32} round {round}: walhouse {:>6.2} M/s  seed {:>6.2} M/s  ratio {:>5.2}  walhouse at {:>4.0}% of limit",
                r[0] / 1e6,
                r[1] / 1e6,
                r[0] / r[1],
                f * 100.0
            );
            wh.push(r[0] / 1e6);
            sd.push(r[1] / 1e6);
            ratios.push(r[0] / r[1]);
            frac.push(f * 100.0);
        }
        println!(
            "   {label:<32} median: walhouse {} M/s | seed {} M/s | ratio {}",
            med(&wh, 2),
            med(&sd, 2),
            med(&ratios, 2)
        );
        ctx.summary.push(Row {
            figure: format!("buffered append, {label} (M puts/s, total)"),
            walhouse: format!("{:.2}", median(&wh)),
            seed: format!("{:.2}", median(&sd)),
            ratio: format!("{:.2}x", median(&ratios)),
            target: format!(">= 2.5x: {}", met(median(&ratios) >= 2.5)),
            limit: format!("{:.0}% per core", median(&frac)),
        });
    }

    // One WAL of `long` puts on 1 core: walhouse rotates 64 MiB segments
    // (and fdatasyncs each sealed one); the seed writes one file.
    let mut wh = Vec::new();
    let mut sd = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let mut r = [0.0; 2];
        for (i, engine) in Engine::BOTH.into_iter().enumerate() {
            let (t, _) = with_wal!(engine, buffered(&ctx.root, &values, 1, long, long))?;
            r[i] = float(long) / t.as_secs_f64();
        }
        wh.push(r[0] / 1e6);
        sd.push(r[1] / 1e6);
        ratios.push(r[0] / r[1]);
    }
    println!(
        "   1 core, {} M puts in one WAL (walhouse rotates and fdatasyncs each sealed 64 MiB segment): \
         walhouse {} M/s | seed {} M/s | ratio {}",
        long / 1_000_000,
        med(&wh, 2),
        med(&sd, 2),
        med(&ratios, 2)
    );
    ctx.summary.push(Row {
        figure: format!(
            "buffered append, 1 core, {} M puts in one WAL (M/s)",
            float(long) / 1e6
        ),
        walhouse: format!("{:.2}", median(&wh)),
        seed: format!("{:.2}", median(&sd)),
        ratio: format!("{:.2}x", median(&ratios)),
        target: "(information)".into(),
        limit: String::new(),
    });
    Ok(())
}

// ---------------------------------------------------------------- durable

/// Puts with a sync after every `every`, for `for_how_long` (whole groups),
/// 1 core; returns (entries, elapsed, WAL bytes).
fn durable_run<W: Wal>(
    root: &Path,
    values: &Values,
    every: u64,
    for_how_long: Duration,
) -> Result<(u64, Duration, u64)> {
    let dir = fresh_dir(root, "durable")?;
    let (keep, mut writers) = W::open(&dir, 1)?;
    let writer = &mut writers[0];
    let mut i = 0u64;
    let start = Instant::now();
    while start.elapsed() < for_how_long {
        for _ in 0..every {
            writer.put(&key(i), values.get(i))?;
            i += 1;
        }
        writer.sync()?;
    }
    let elapsed = start.elapsed();
    drop(writers);
    drop(keep);
    let bytes = dir_bytes(&dir)?;
    fs::remove_dir_all(&dir)?;
    Ok((i, elapsed, bytes))
}

fn durable_section(ctx: &mut Ctx) -> Result<()> {
    const ROUNDS: usize = 3;
    let run_for = Duration::from_millis(800);
    println!();
    println!(
        "== durable: append_put then sync() every N puts, 1 core, {} ms per run; per round: \
         fdatasync probe (4 KiB + fdatasync, 0.4 s), walhouse, seed, probe again",
        run_for.as_millis()
    );
    println!("   limit of a round: min(fsync rate x N, sequential write+fdatasync bandwidth / bytes per put)");
    let seq = limits::sequential_sync_write(&ctx.root)?;
    println!(
        "   sequential write 64 MiB + fdatasync: {:.0} MB/s",
        seq / 1e6
    );
    let values = Values::new();
    for every in [1u64, 10, 100, 1000] {
        let mut ratios = Vec::new();
        let mut wh = Vec::new();
        let mut sd = Vec::new();
        let mut fsyncs = Vec::new();
        let mut frac = Vec::new();
        for round in 0..ROUNDS {
            let before = fsync_probe(ctx)?;
            let mut r = [0.0; 2];
            let mut per_entry = 0.0;
            for (i, engine) in Engine::BOTH.into_iter().enumerate() {
                let (n, t, bytes) =
                    with_wal!(engine, durable_run(&ctx.root, &values, every, run_for))?;
                r[i] = float(n) / t.as_secs_f64();
                if i == 0 {
                    per_entry = float(bytes) / float(n);
                }
            }
            let after = fsync_probe(ctx)?;
            let probe = (before + after) / 2.0;
            let limit = (probe * float(every)).min(seq / per_entry);
            println!(
                "   every {every:<5} round {round}: fsync/s {before:>6.0} -> {after:>6.0}   walhouse {:>10.0}/s  seed {:>10.0}/s  ratio {:>5.2}  walhouse at {:>4.0}% of limit",
                r[0],
                r[1],
                r[0] / r[1],
                r[0] / limit * 100.0
            );
            ratios.push(r[0] / r[1]);
            wh.push(r[0]);
            sd.push(r[1]);
            fsyncs.push(probe);
            frac.push(r[0] / limit * 100.0);
        }
        let rounds: Vec<String> = ratios
            .iter()
            .zip(&fsyncs)
            .map(|(r, f)| format!("{r:.2}x @ {f:.0} fsync/s"))
            .collect();
        println!(
            "   every {every:<5} median: walhouse {} | seed {} puts/s | ratio {}",
            med(&wh, 0),
            med(&sd, 0),
            med(&ratios, 2)
        );
        ctx.summary.push(Row {
            figure: format!("durable, sync every {every} (puts/s)"),
            walhouse: format!("{:.0}", median(&wh)),
            seed: format!("{:.0}", median(&sd)),
            ratio: format!("{:.2}x [{}]", median(&ratios), rounds.join("; ")),
            target: "(none)".into(),
            limit: format!("{:.0}%", median(&frac)),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------- merge / recovery

/// `entries` puts of distinct keys alternating between the 2 cores (so the
/// cores' timestamps interleave), written by one thread, then synced.
fn build<W: Wal>(dir: &Path, values: &Values, entries: u64) -> Result<()> {
    let (keep, mut writers) = W::open(dir, CORES)?;
    for i in 0..entries {
        writers[(i % CORES as u64) as usize].put(&key(i), values.get(i))?;
    }
    for w in &mut writers {
        w.sync()?;
    }
    drop(writers);
    drop(keep);
    Ok(())
}

/// The 2-core WAL of `entries` puts for `engine`, written on first use.
fn wal(ctx: &mut Ctx, engine: Engine, entries: u64) -> Result<&BuiltWal> {
    let k = (engine.name(), entries);
    if !ctx.wals.contains_key(&k) {
        let dir = ctx.root.join(format!("wal-{}-{entries}", engine.name()));
        let start = Instant::now();
        with_wal!(engine, build(&dir, &ctx.values, entries))?;
        let seconds = start.elapsed().as_secs_f64();
        let bytes = dir_bytes(&dir)?;
        ctx.wals.insert(
            k,
            BuiltWal {
                dir,
                bytes,
                seconds,
            },
        );
    }
    Ok(&ctx.wals[&k])
}

pub fn run_child_pub(args: &[&str]) -> Result<ChildRun> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "child {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    ChildRun::parse(&String::from_utf8(out.stdout)?)
}

fn mib(kib: u64) -> f64 {
    float(kib) / 1024.0
}

fn merge_section(ctx: &mut Ctx) -> Result<()> {
    let cpu = ctx.cpu()?;
    for (entries, rounds) in [(ctx.n(1_000_000), 3usize), (ctx.n(10_000_000), 2)] {
        let mut sizes = [0u64; 2];
        let mut dirs = Vec::new();
        for (i, engine) in Engine::BOTH.into_iter().enumerate() {
            let w = wal(ctx, engine, entries)?;
            sizes[i] = w.bytes;
            dirs.push(w.dir.display().to_string());
        }
        println!();
        println!(
            "== merge of {} M puts written by 2 cores: each run a child process; walhouse {:.0} MB, seed {:.0} MB of WAL; {rounds} rounds, A B A B",
            float(entries) / 1e6,
            float(sizes[0]) / 1e6,
            float(sizes[1]) / 1e6
        );
        println!(
            "   walhouse = merge_stream + next_ref; seed = merge_segments (a sorted Vec); read limit {:.2} GB/s",
            cpu.read_bytes_per_s() / 1e9
        );
        let mut rate = [Vec::new(), Vec::new()];
        let mut peak = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        let mut mem_ratios = Vec::new();
        let mut frac = Vec::new();
        for round in 0..rounds {
            let mut runs = Vec::new();
            for (i, engine) in Engine::BOTH.into_iter().enumerate() {
                let run = run_child_pub(&["child", "merge", engine.name(), &dirs[i]])?;
                if run.entries != entries || run.check != entries * (16 + VALUE_LEN as u64) {
                    return Err(format!(
                        "{} merge returned {} entries / {} payload bytes, expected {entries}",
                        engine.name(),
                        run.entries,
                        run.check
                    )
                    .into());
                }
                runs.push(run);
            }
            let r: Vec<f64> = runs.iter().map(|x| float(entries) / x.seconds).collect();
            let wh_mbs = float(sizes[0]) / runs[0].seconds;
            println!(
                "   round {round}: walhouse {:>6.2} M/s ({:>5.0} MB/s, peak RSS {:>7.1} MiB)  seed {:>6.2} M/s (peak RSS {:>7.1} MiB)  ratio {:>5.2}  memory {:>6.1}x smaller  walhouse at {:>3.0}% of read limit",
                r[0] / 1e6,
                wh_mbs / 1e6,
                mib(runs[0].hwm_kib),
                r[1] / 1e6,
                mib(runs[1].hwm_kib),
                r[0] / r[1],
                float(runs[1].hwm_kib) / float(runs[0].hwm_kib),
                wh_mbs / cpu.read_bytes_per_s() * 100.0
            );
            for i in 0..2 {
                rate[i].push(r[i] / 1e6);
                peak[i].push(mib(runs[i].hwm_kib));
            }
            ratios.push(r[0] / r[1]);
            mem_ratios.push(float(runs[1].hwm_kib) / float(runs[0].hwm_kib));
            frac.push(wh_mbs / cpu.read_bytes_per_s() * 100.0);
        }
        // For information: walhouse's Vec API on the same WAL (one run).
        let vec_run = run_child_pub(&["child", "merge", "walhouse-vec", &dirs[0]])?;
        println!(
            "   (walhouse merge_segments, its Vec API kept for the seed's callers: {:.2} M/s, peak RSS {:.1} MiB)",
            float(entries) / vec_run.seconds / 1e6,
            mib(vec_run.hwm_kib)
        );
        let m = float(entries) / 1e6;
        ctx.summary.push(Row {
            figure: format!("merge {m} M over 2 cores (M entries/s)"),
            walhouse: format!("{:.2}", median(&rate[0])),
            seed: format!("{:.2}", median(&rate[1])),
            ratio: format!("{:.2}x", median(&ratios)),
            target: format!(">= 3x: {}", met(median(&ratios) >= 3.0)),
            limit: format!("{:.0}% of read", median(&frac)),
        });
        ctx.summary.push(Row {
            figure: format!("merge {m} M: peak RSS (MiB)"),
            walhouse: format!("{:.1}", median(&peak[0])),
            seed: format!("{:.1}", median(&peak[1])),
            ratio: format!("{:.1}x smaller", median(&mem_ratios)),
            target: format!(">= 10x smaller: {}", met(median(&mem_ratios) >= 10.0)),
            limit: String::new(),
        });
        bytes_row(ctx, entries, sizes);
    }
    Ok(())
}

fn bytes_row(ctx: &mut Ctx, entries: u64, sizes: [u64; 2]) {
    let figure = format!("bytes on disk per put, {} M puts", float(entries) / 1e6);
    if ctx.summary.iter().any(|r| r.figure == figure) {
        return;
    }
    let per = [
        float(sizes[0]) / float(entries),
        float(sizes[1]) / float(entries),
    ];
    println!(
        "   bytes on disk per put ({} M puts, 2 cores, files' lengths): walhouse {:.2}  seed {:.2}  ratio {:.3}",
        float(entries) / 1e6,
        per[0],
        per[1],
        per[0] / per[1]
    );
    ctx.summary.push(Row {
        figure,
        walhouse: format!("{:.2}", per[0]),
        seed: format!("{:.2}", per[1]),
        ratio: format!("{:.3}x", per[0] / per[1]),
        target: format!("<= 0.8x: {}", met(per[0] / per[1] <= 0.8)),
        limit: String::new(),
    });
}

fn bytes_section(ctx: &mut Ctx) -> Result<()> {
    println!();
    println!("== bytes on disk");
    let entries = ctx.n(1_000_000);
    let mut sizes = [0u64; 2];
    for (i, engine) in Engine::BOTH.into_iter().enumerate() {
        sizes[i] = wal(ctx, engine, entries)?.bytes;
    }
    bytes_row(ctx, entries, sizes);
    Ok(())
}

fn recovery_section(ctx: &mut Ctx) -> Result<()> {
    let cpu = ctx.cpu()?;
    for (entries, rounds) in [(ctx.n(1_000_000), 3usize), (ctx.n(10_000_000), 2)] {
        let mut sizes = [0u64; 2];
        let mut dirs = Vec::new();
        for (i, engine) in Engine::BOTH.into_iter().enumerate() {
            let w = wal(ctx, engine, entries)?;
            sizes[i] = w.bytes;
            dirs.push(w.dir.display().to_string());
        }
        let scratch = ctx.root.join("seed-checkpoints");
        let scratch = scratch.display().to_string();
        println!();
        println!(
            "== recovery of {} M puts of distinct keys, 2 cores, WAL only (no checkpoint); each run a child process; {rounds} rounds, A B A B",
            float(entries) / 1e6
        );
        println!("   walhouse = PerCoreRecoveryManager::recover (repair, merge, fold into the final state: StateMap)");
        println!("   seed = PerCoreRecoveryManager::recover (read all, sort, copy every put into state_changes: Vec)");
        let mut secs = [Vec::new(), Vec::new()];
        let mut peak = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        let mut mem_ratios = Vec::new();
        let mut frac = Vec::new();
        for round in 0..rounds {
            let mut runs = Vec::new();
            for (i, engine) in Engine::BOTH.into_iter().enumerate() {
                let run = run_child_pub(&["child", "recover", engine.name(), &dirs[i], &scratch])?;
                if run.entries != entries || run.check != entries {
                    return Err(format!(
                        "{} recovery replayed {} entries into {} keys/changes, expected {entries}",
                        engine.name(),
                        run.entries,
                        run.check
                    )
                    .into());
                }
                runs.push(run);
            }
            let wh_mbs = float(sizes[0]) / runs[0].seconds;
            println!(
                "   round {round}: walhouse {:>7.3} s (peak RSS {:>7.1} MiB)  seed {:>7.3} s (peak RSS {:>7.1} MiB)  speedup {:>5.2}x  memory ratio seed/walhouse {:>5.2}  walhouse at {:>3.0}% of read limit",
                runs[0].seconds,
                mib(runs[0].hwm_kib),
                runs[1].seconds,
                mib(runs[1].hwm_kib),
                runs[1].seconds / runs[0].seconds,
                float(runs[1].hwm_kib) / float(runs[0].hwm_kib),
                wh_mbs / cpu.read_bytes_per_s() * 100.0
            );
            for i in 0..2 {
                secs[i].push(runs[i].seconds);
                peak[i].push(mib(runs[i].hwm_kib));
            }
            ratios.push(runs[1].seconds / runs[0].seconds);
            mem_ratios.push(float(runs[1].hwm_kib) / float(runs[0].hwm_kib));
            frac.push(wh_mbs / cpu.read_bytes_per_s() * 100.0);
        }
        let m = float(entries) / 1e6;
        ctx.summary.push(Row {
            figure: format!("recovery {m} M, WAL only (seconds)"),
            walhouse: format!("{:.3}", median(&secs[0])),
            seed: format!("{:.3}", median(&secs[1])),
            ratio: format!("{:.2}x faster", median(&ratios)),
            target: format!(">= 4x: {}", met(median(&ratios) >= 4.0)),
            limit: format!("{:.0}% of read", median(&frac)),
        });
        ctx.summary.push(Row {
            figure: format!("recovery {m} M: peak RSS (MiB)"),
            walhouse: format!("{:.1}", median(&peak[0])),
            seed: format!("{:.1}", median(&peak[1])),
            ratio: format!("{:.2}x smaller", median(&mem_ratios)),
            target: "(none)".into(),
            limit: String::new(),
        });
        bytes_row(ctx, entries, sizes);
    }
    Ok(())
}

// ---------------------------------------------------------------- summary

fn print_summary(ctx: &Ctx) {
    if ctx.summary.is_empty() {
        return;
    }
    println!();
    println!("== summary (medians; ratio = walhouse / seed, as a speed-up for times, as 'x smaller' for memory)");
    println!("| figure | walhouse | seed | walhouse/seed | target | walhouse vs limit |");
    println!("|---|---|---|---|---|---|");
    for r in &ctx.summary {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure, r.walhouse, r.seed, r.ratio, r.target, r.limit
        );
    }
}
