//! The `walhouse` command line: a thin layer over the library.
#![expect(
    clippy::cast_precision_loss,
    reason = "rates and sizes printed for people"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use walhouse::demo::{self, DemoOptions};
use walhouse::per_core_wal::{PerCoreRecoveryManager, PerCoreWalConfig};

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

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Demo {
            data_dir,
            records,
            cores,
            sync_every,
        } => {
            let cores = cores.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let tmp;
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
            println!(
                "epoch 0:  {} entries sealed, {} segment files removed after the merge",
                r.sealed_entries, r.removed_segments
            );
            if !r.verified {
                return Err("recovered state does not match what was written".into());
            }
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
