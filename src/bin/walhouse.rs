//! The `walhouse` command line: a thin layer over the library.
#![expect(
    clippy::cast_precision_loss,
    reason = "rates and sizes printed for people"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walhouse::checkpoint::{
    changelog_schema, manifest_json_schema, state_schema, CheckpointSettings, Checkpointer,
};
use walhouse::demo::{self, DemoOptions};
use walhouse::per_core_wal::{PerCoreRecoveryManager, PerCoreWalConfig};
use walhouse::store::Store;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn checkpointer(
    url: &str,
    settings: CheckpointSettings,
) -> Result<Checkpointer, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Checkpointer::new(Store::from_url(url)?, settings)?)
}

/// walhouse: per-core write-ahead logs shipped as epoch-merged checkpoints.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write synthetic records on every core, rotate, merge, restart,
    /// recover, verify, and print a summary.
    Demo {
        /// Data directory (default: a temporary directory, removed at the end).
        #[arg(long, env = "WALHOUSE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Records to write across all cores.
        #[arg(long, default_value_t = 1_000_000, env = "WALHOUSE_RECORDS")]
        records: u64,
        /// Cores (writer threads); default: the machine's.
        #[arg(long, env = "WALHOUSE_CORES")]
        cores: Option<usize>,
        /// Entries per fdatasync of each writer.
        #[arg(long, default_value_t = 1000)]
        sync_every: u64,
        /// Object store URL for the tables: a directory, `file:///dir`,
        /// `s3://bucket/prefix`, `gs://…`, `az://…` or `memory://`
        /// (default: the directory `<data-dir>/table`).
        #[arg(long, env = "WALHOUSE_STORE")]
        store: Option<String>,
    },
    /// List the committed checkpoints of a table.
    Checkpoints {
        /// Object store URL of the table (or a local directory).
        #[arg(long, env = "WALHOUSE_STORE")]
        store: String,
    },
    /// Check that every file of a checkpoint exists with its recorded size
    /// and crc32c (reads every byte). Exits non-zero on any problem.
    Verify {
        /// Object store URL of the table (or a local directory).
        #[arg(long, env = "WALHOUSE_STORE")]
        store: String,
        /// Checkpoint number (default: the newest).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// Retention and garbage collection: keep the newest N checkpoints,
    /// remove unreferenced objects older than the grace period.
    Gc {
        /// Object store URL of the table (or a local directory).
        #[arg(long, env = "WALHOUSE_STORE")]
        store: String,
        /// Checkpoints to keep.
        #[arg(long, default_value_t = 3)]
        retain: usize,
        /// Seconds an unreferenced object must be old before removal.
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
    },
    /// Print a schema: `manifest` (JSON Schema), `changelog` or `state` (Arrow).
    Schema {
        /// Which schema.
        #[arg(value_parser = ["manifest", "changelog", "state"])]
        name: String,
    },
    /// Per core and segment: entries, bytes, epoch, valid end, torn tail.
    /// Reads only; changes nothing.
    Inspect {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
        /// Number of cores the WAL was written with.
        #[arg(long, default_value_t = 1)]
        cores: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALHOUSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walhouse: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Demo {
            data_dir,
            records,
            cores,
            sync_every,
            store,
        } => {
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
            let r = demo::run(&DemoOptions {
                data_dir,
                records,
                cores,
                sync_every,
                store,
            })?;
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
                "checkpoint {}: epochs {}..={}, {} entries, {} changelog + {} snapshot files \
                 ({} keys), {:.1} MiB of Parquet in {:.2} s = {:.0} MB/s of WAL; \
                 {} WAL segments removed",
                m.checkpoint,
                m.epochs.first,
                m.epochs.last,
                m.stats.entries,
                m.changelog.len(),
                m.state.snapshot.len(),
                m.stats.snapshot_keys.unwrap_or(0),
                r.checkpoint_bytes as f64 / f64::from(1 << 20),
                r.checkpoint.as_secs_f64(),
                m.stats.wal_bytes as f64 / 1e6 / r.checkpoint.as_secs_f64(),
                r.removed_segments
            );
            println!(
                "restart:  recovered checkpoint {} + {} WAL tail entries ({} records after the checkpoint) in {:.3} s, state {}",
                m.checkpoint,
                r.full_recovery_replayed,
                r.tail,
                r.full_recovery.as_secs_f64(),
                if r.verified { "verified" } else { "MISMATCH" }
            );
            println!("tables:   {}", r.table);
            if let Some(dir) = r.table.strip_prefix("file://") {
                if temporary {
                    println!(
                        "query them (this temporary directory is removed on exit: \
                         run with --data-dir DIR to keep the tables):"
                    );
                } else {
                    println!("query them:");
                }
                println!(
                    "  duckdb -c \"SELECT epoch, op, count(*) FROM read_parquet('{dir}/changelog/*/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY ALL\""
                );
                println!(
                    "  datafusion-cli -c \"CREATE EXTERNAL TABLE changelog STORED AS PARQUET LOCATION '{dir}/changelog/'; SELECT epoch, op, count(*) FROM changelog GROUP BY epoch, op ORDER BY epoch, op;\""
                );
                println!(
                    "  spark-sql -e \"SELECT epoch, op, count(*) FROM parquet.\\`{dir}/changelog\\` GROUP BY epoch, op ORDER BY epoch, op\""
                );
            }
            if !r.verified {
                return Err("recovered state does not match what was written".into());
            }
            Ok(())
        }
        Command::Checkpoints { store } => {
            let cp = checkpointer(&store, CheckpointSettings::default())?;
            let manifests = runtime()?.block_on(cp.checkpoints())?;
            println!("checkpoint  epochs          entries  changelog  snapshot(of)  created_at");
            for m in manifests {
                println!(
                    "{:>10}  {:>6}..={:<6} {:>9} {:>10} {:>9}({})  {}",
                    m.checkpoint,
                    m.epochs.first,
                    m.epochs.last,
                    m.stats.entries,
                    m.changelog.len(),
                    m.state.snapshot.len(),
                    m.state.snapshot_checkpoint,
                    m.created_at
                );
            }
            Ok(())
        }
        Command::Verify { store, checkpoint } => {
            let cp = checkpointer(&store, CheckpointSettings::default())?;
            let report = runtime()?.block_on(cp.verify(checkpoint))?;
            println!(
                "checkpoint {}: {} files, {} bytes checked, {} problems",
                report.checkpoint,
                report.files,
                report.bytes,
                report.problems.len()
            );
            for p in &report.problems {
                println!("  {p}");
            }
            if report.is_ok() {
                Ok(())
            } else {
                Err(format!("checkpoint {} failed verification", report.checkpoint).into())
            }
        }
        Command::Gc {
            store,
            retain,
            grace_secs,
        } => {
            let settings = CheckpointSettings {
                retain_checkpoints: retain,
                gc_grace_secs: grace_secs,
                ..CheckpointSettings::default()
            };
            let report = runtime()?.block_on(checkpointer(&store, settings)?.gc())?;
            println!(
                "kept checkpoints {:?}; removed manifests {:?}; removed {} objects; {} unreferenced objects still in their grace period",
                report.retained,
                report.manifests_removed,
                report.objects_removed.len(),
                report.objects_in_grace
            );
            Ok(())
        }
        Command::Schema { name } => {
            let text = match name.as_str() {
                "manifest" => serde_json::to_string_pretty(&manifest_json_schema())?,
                "changelog" => serde_json::to_string_pretty(changelog_schema().as_ref())?,
                _ => serde_json::to_string_pretty(state_schema().as_ref())?,
            };
            println!("{text}");
            Ok(())
        }
        Command::Inspect { dir, cores } => {
            let recovery = PerCoreRecoveryManager::new(PerCoreWalConfig::new(&dir, cores));
            println!("core segment    epoch   first_seq  entries      bytes  valid_end  tail");
            for s in recovery.segment_stats()? {
                println!(
                    "{:>4} {:>7} {:>8} {:>11} {:>8} {:>10} {:>10}  {}",
                    s.core_id,
                    s.segment,
                    s.min_epoch,
                    s.first_sequence,
                    s.entry_count,
                    s.file_size,
                    s.valid_end,
                    if s.tail_bytes == 0 {
                        "-".to_owned()
                    } else {
                        format!("{} bytes: {}", s.tail_bytes, s.tail_reason)
                    }
                );
            }
            Ok(())
        }
    }
}
