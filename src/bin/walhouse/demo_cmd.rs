//! `walhouse demo`: the main job on the embedded default store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use walhouse::demo::{self, DemoOptions};

use crate::CliResult;

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
        "walhouse demo: {records} records on {cores} cores in {}",
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
fn print_report(r: &demo::DemoReport, temporary: bool) {
    let secs = r.ingest.as_secs_f64();
    println!(
        "ingest:   {} records in {:.2} s = {:.0} records/s durable ({} fdatasyncs)",
        r.records,
        secs,
        r.records as f64 / secs,
        r.syncs
    );
    println!(
        "wal:      {} segment files, {:.1} MiB, {:.1} bytes/record",
        r.segments,
        r.wal_bytes as f64 / f64::from(1 << 20),
        r.wal_bytes as f64 / r.records.max(1) as f64
    );
    println!(
        "merge:    {} entries in order in {:.3} s = {:.0} entries/s",
        r.merged,
        r.merge.as_secs_f64(),
        r.merged as f64 / r.merge.as_secs_f64()
    );
    println!(
        "recovery: {} entries replayed in {:.3} s, {} live keys, state {}",
        r.replayed,
        r.recovery.as_secs_f64(),
        r.live_keys,
        if r.verified { "verified" } else { "MISMATCH" }
    );
    let m = &r.manifest;
    println!(
        "checkpoint {}: epochs {}..={}, {} entries, {} changelog files, {:.1} MiB of Parquet, \
                 committed in {:.2} s = {:.0} MB/s of WAL; {} WAL segments removed",
        m.checkpoint,
        m.epochs.first,
        m.epochs.last,
        m.stats.entries,
        m.changelog.len(),
        r.checkpoint_bytes as f64 / f64::from(1 << 20),
        r.checkpoint.as_secs_f64(),
        m.stats.wal_bytes as f64 / 1e6 / r.checkpoint.as_secs_f64(),
        r.removed_segments
    );
    println!(
        "          state table version {}, built after the commit: a snapshot of {} keys in {} \
                 files, {:.1} MiB, in {:.2} s",
        m.checkpoint,
        r.state.keys.unwrap_or(0),
        r.second_state.snapshot.len(),
        r.state.bytes_written as f64 / f64::from(1 << 20),
        r.state_build.as_secs_f64(),
    );
    let s = &r.second;
    println!(
        "checkpoint {}: {} overwrites and deletes ({} changelog files); state table: {} files, \
         {} rows of older files marked deleted by deletion vectors",
        s.checkpoint,
        s.stats.puts + s.stats.deletes,
        s.changelog.len(),
        r.second_state.table.len(),
        r.second_state
            .table
            .iter()
            .map(walhouse::checkpoint::StateFile::deleted_rows)
            .sum::<u64>(),
    );
    println!(
        "restart:  recovered checkpoint {} + {} WAL tail entries ({} records after it) in {:.3} s, state {}",
        s.checkpoint,
        r.full_recovery_replayed,
        r.tail,
        r.full_recovery.as_secs_f64(),
        if r.verified { "verified" } else { "MISMATCH" }
    );
    println!(
        "tables:   {} (Delta Lake: changelog/ and state/; version N = checkpoint N)",
        r.table
    );
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
    let bar = indicatif::ProgressBar::new(records);
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
