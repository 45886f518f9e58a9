//! `walhouse demo`: the main job on the embedded default store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::demo::{self, DemoOptions};

use crate::{human, term, CliResult};

pub(crate) fn run(
    data_dir: Option<PathBuf>,
    records: u64,
    cores: Option<usize>,
    sync_every: u64,
    store: Option<String>,
) -> CliResult {
    let cores = cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let tmp;
    let temporary = data_dir.is_none();
    let data_dir = if let Some(dir) = data_dir {
        dir
    } else {
        tmp = tempfile::Builder::new()
            .prefix("walhouse-demo-")
            .tempdir()?;
        tmp.path().to_path_buf()
    };
    println!(
        "walhouse demo: {} on {} in {}",
        human::counted(records, "record", "records"),
        human::counted(cores as u64, "core", "cores"),
        data_dir.display()
    );
    let r = with_progress(records, |progress| {
        demo::run(&DemoOptions {
            data_dir,
            records,
            cores,
            sync_every,
            store,
            progress: Some(progress),
        })
    })?;
    print_report(&r, temporary);
    if !r.verified {
        return Err("recovered state does not match what was written".into());
    }
    Ok(())
}

/// Prints what the demo did and the queries for its tables.
///
/// Records are the puts and deletes the demo wrote (the WAL also holds the
/// epoch barriers each core writes when it moves to a new epoch).
fn print_report(r: &demo::DemoReport, temporary: bool) {
    println!(
        "ingest:   {} in {} = {} durable ({})",
        human::counted(r.records, "record", "records"),
        human::duration(r.ingest),
        human::rate(r.records as f64, r.ingest, "records"),
        human::counted(r.syncs, "fdatasync", "fdatasyncs")
    );
    println!(
        "wal:      {}, {}, {:.1} bytes/record",
        human::counted(r.segments as u64, "segment file", "segment files"),
        human::bytes(r.wal_bytes),
        r.wal_bytes as f64 / r.records.max(1) as f64
    );
    println!(
        "restart:  {} read from the WAL (no checkpoint yet) in {}, {}, every one read back: {}",
        human::counted(r.replayed, "record", "records"),
        human::duration(r.recovery),
        human::counted(r.live_keys as u64, "live key", "live keys"),
        if r.verified { "verified" } else { "MISMATCH" }
    );
    print_checkpoints(r);
    println!(
        "tables:   {} (Delta Lake: changelog/ and state/; version N = checkpoint N)",
        r.table
    );
    print_queries(r, temporary);
}

/// The demo's two checkpoints and the restart after them.
fn print_checkpoints(r: &demo::DemoReport) {
    let barriers = |entries: u64, records: u64| match entries.saturating_sub(records) {
        0 => String::new(),
        n => format!(
            " (and {})",
            human::counted(n, "epoch barrier", "epoch barriers")
        ),
    };
    let m = &r.manifest;
    let records = m.stats.puts + m.stats.deletes;
    println!(
        "checkpoint {}: {}, {}{}, {}, {} of Parquet, \
                 committed in {} = {} of WAL; {} removed",
        m.checkpoint,
        human::epochs(m.epochs.first, m.epochs.last),
        human::counted(records, "record", "records"),
        barriers(m.stats.entries, records),
        human::counted(
            m.changelog.len() as u64,
            "changelog file",
            "changelog files"
        ),
        human::bytes(r.checkpoint_bytes),
        human::duration(r.checkpoint),
        human::rate(m.stats.wal_bytes as f64, r.checkpoint, "B"),
        human::counted(r.removed_segments as u64, "WAL segment", "WAL segments")
    );
    println!(
        "          state table version {}, built after the commit: a snapshot of {} in {}, {}, in {}",
        m.checkpoint,
        human::counted(r.state.keys.unwrap_or(0), "key", "keys"),
        human::counted(r.second_state.snapshot.len() as u64, "file", "files"),
        human::bytes(r.state.bytes_written),
        human::duration(r.state_build),
    );
    let s = &r.second;
    println!(
        "checkpoint {}: {} overwrites and deletes ({}); state table: {}, {} of older files marked deleted by deletion vectors",
        s.checkpoint,
        human::count(s.stats.puts + s.stats.deletes),
        human::counted(s.changelog.len() as u64, "changelog file", "changelog files"),
        human::counted(r.second_state.table.len() as u64, "file", "files"),
        human::counted(
            r.second_state
                .table
                .iter()
                .map(walhouse::checkpoint::StateFile::deleted_rows)
                .sum::<u64>(),
            "row",
            "rows"
        ),
    );
    println!(
        "restart:  checkpoint {} and the {} of the WAL tail after it read in {}, every key read back: {}",
        s.checkpoint,
        human::counted(r.full_recovery_replayed, "record", "records"),
        human::duration(r.full_recovery),
        if r.verified { "verified" } else { "MISMATCH" }
    );
}

/// Where the tables are and how to query them.
fn print_queries(r: &demo::DemoReport, temporary: bool) {
    if let Some(dir) = r.table.strip_prefix("file://") {
        if temporary {
            println!(
                "query them (this temporary directory is removed on exit: \
                 run with --data-dir DIR to keep the tables):"
            );
        } else {
            println!("query them:");
        }
        for line in queries(dir) {
            println!("  {line}");
        }
    }
}

/// The queries the demo prints for the tables under `dir`: the current
/// value of every key and the state at checkpoint 1, in DuckDB, Polars,
/// deltalake and Spark (tests/interop runs the DuckDB, Polars and deltalake
/// ones against the demo's tables).
pub(crate) fn queries(dir: &str) -> Vec<String> {
    let py = "python3 -c";
    vec![
        "# current value of every key, then the state at checkpoint 1 (Delta version 1):".into(),
        format!(
            "duckdb -c \"INSTALL delta; LOAD delta; SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes FROM delta_scan('{dir}/state')\""
        ),
        format!(
            "duckdb -c \"INSTALL delta; LOAD delta; ATTACH '{dir}/state' AS s1 (TYPE delta, VERSION 1); SELECT count(*) AS keys, sum(octet_length(value)) AS value_bytes FROM s1\""
        ),
        format!(
            "{py} \"import polars as pl; print(pl.read_delta('{dir}/state').height, pl.read_delta('{dir}/state', version=1).height)\""
        ),
        format!(
            "{py} \"from deltalake import DeltaTable, QueryBuilder; print(QueryBuilder().register('s', DeltaTable('{dir}/state', version=1)).execute('SELECT count(*) AS keys FROM s').read_all())\""
        ),
        format!(
            "spark-sql --packages io.delta:delta-spark_2.13:4.0.0 --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog -e \"SELECT count(*) FROM delta.\\`{dir}/state\\` VERSION AS OF 1\""
        ),
        "# every operation, by epoch (append-only changelog table):".into(),
        format!(
            "duckdb -c \"INSTALL delta; LOAD delta; SELECT epoch, op, count(*) FROM delta_scan('{dir}/changelog') GROUP BY ALL ORDER BY ALL\""
        ),
    ]
}

/// Runs `work` with a progress bar over `records` (drawn only on a terminal).
fn with_progress<T>(records: u64, work: impl FnOnce(Arc<AtomicU64>) -> T) -> T {
    let progress = Arc::new(AtomicU64::new(0));
    let bar = term::bars().add(indicatif::ProgressBar::new(records));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "ingest {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (bar, progress, done) = (bar.clone(), progress.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(progress.load(Ordering::Relaxed).min(records));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
    };
    let result = work(progress);
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    result
}
