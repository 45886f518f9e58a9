//! The `walhouse` command line: a thin layer over the library.
//!
//! Settings come from flags, then `WALHOUSE_*` variables, then a TOML file
//! (`--config`, or `WALHOUSE_CONFIG`), then the defaults.
#![expect(
    clippy::cast_precision_loss,
    reason = "rates and sizes printed for people"
)]

mod config;
mod demo;
mod demo_cmd;
mod human;
mod ndjson;
mod serve;
mod term;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use walhouse::checkpoint::{
    changelog_schema, load_manifest, manifest_json_schema, state_schema, state_version_json_schema,
    CheckpointReader, CheckpointSettings, GraceCheck, LookupSettings,
};
use walhouse::checkpoint::{list_manifests, Checkpointer, TableOwner};
use walhouse::per_core_wal::{
    PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalReader, StdFileSystem, WalFileSystem,
    WalOperation, WalReadResult,
};
use walhouse::runtime::{wal_cores, Ownership};
use walhouse::store::Store;

use crate::config::Access;

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// walhouse: per-core write-ahead logs shipped as epoch-merged Parquet
/// checkpoints to object storage.
///
/// Settings come from flags, then `WALHOUSE_*` environment variables, then
/// the TOML file given by --config, then the defaults. Credentials for
/// s3://, gs:// and az:// stores come from the environment (AWS_*,
/// GOOGLE_*, AZURE_*) and are never printed.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML settings file: top-level `data_dir` and `store`, and an
    /// `[ingest]` table with any field of the ingest settings (see
    /// README.md). Flags and WALHOUSE_* variables override it.
    #[arg(long, global = true, env = "WALHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the WAL and the tables are.
#[derive(Debug, Clone, Args)]
pub(crate) struct Location {
    /// Data directory: `wal/` holds the write-ahead log, `table/` the tables
    /// unless --store says otherwise.
    #[arg(long, env = "WALHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Object store of the tables: a directory, `file:///dir`, `memory://`,
    /// `s3://bucket/prefix` (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` for MinIO or
    /// LocalStack), `gs://bucket/prefix` or `az://container/prefix`.
    /// Default: `<data-dir>/table`.
    #[arg(long, env = "WALHOUSE_STORE")]
    pub store: Option<String>,
}

/// Ingest settings given as flags (each overrides the config file).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct Tuning {
    /// Core threads, one WAL per core [default: the machine's CPUs].
    #[arg(long, env = "WALHOUSE_CORES")]
    pub cores: Option<usize>,
    /// Do not pin core threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Requests each core's channel holds before producers wait [default: 4096].
    #[arg(long)]
    pub channel_capacity: Option<usize>,
    /// Most entries per group commit (one fdatasync) [default: 65536].
    #[arg(long)]
    pub group_commit_entries: Option<usize>,
    /// Most key+value bytes per group commit [default: 8388608].
    #[arg(long)]
    pub group_commit_bytes: Option<usize>,
    /// Microseconds a core waits for more writes before syncing [default: 0].
    #[arg(long)]
    pub group_commit_delay_us: Option<u64>,
    /// Checkpoint every N ms when something new was written; 0: never on a
    /// timer [default: 60000].
    #[arg(long, env = "WALHOUSE_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Checkpoint when the WAL holds N bytes; 0: never on size [default: 268435456].
    #[arg(long)]
    pub checkpoint_wal_bytes: Option<u64>,
    /// Checkpoints kept by retention [default: 3].
    #[arg(long)]
    pub retain_checkpoints: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job on the embedded default (a local folder store): write
    /// synthetic records on every core, restart (recovery from the WAL),
    /// checkpoint, overwrite and checkpoint again, restart from the
    /// checkpoint plus a WAL tail, verify every key each time, and print a
    /// summary with the commands to query the tables.
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
        /// Records per durable batch of each producer (one group commit).
        #[arg(long, default_value_t = 1000)]
        sync_every: u64,
        /// Object store URL for the tables: a directory, `file:///dir`,
        /// `s3://bucket/prefix`, `gs://…`, `az://…` or `memory://`
        /// (default: the directory `<data-dir>/table`).
        #[arg(long, env = "WALHOUSE_STORE")]
        store: Option<String>,
    },
    /// Read newline-delimited JSON and write it durably.
    ///
    /// One JSON object a line:
    ///
    ///   {"key": "k", "value": "v"}      sets the key k to the value v
    ///   {"key": "k", "value": null}     deletes the key k
    ///   {"commit": {"kafka-0": 42}, "watermark": 1700000000}
    ///                                   records source offsets (and an
    ///                                   optional watermark) once every
    ///                                   earlier line is durable
    ///
    /// Keys and values are JSON strings, stored as their UTF-8 bytes. Bytes
    /// that are not UTF-8 go in `key_hex` / `value_hex` instead, two hex
    /// digits a byte (upper or lower case):
    ///
    ///   {"key_hex": "ff00", "value_hex": "c328"}
    ///
    /// A line has one of `key` and `key_hex`, and one of `value` and
    /// `value_hex` (only `value` may be null). `walhouse recover --dump`
    /// prints this format, so its output ingests back unchanged.
    ///
    /// Prints `ack N` on stdout each time every line up to N is durable. A
    /// malformed line is reported on stderr with its number; every earlier
    /// line is made durable and acknowledged, and the exit code is non-zero.
    /// At the end of input (or on SIGINT/SIGTERM) it syncs and exits. While
    /// it runs, `walhouse checkpoint` asks it for a checkpoint.
    #[command(verbatim_doc_comment)]
    #[expect(
        clippy::doc_markdown,
        reason = "the help shows JSON lines as they are typed, without backticks"
    )]
    Ingest {
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        tuning: Tuning,
        /// Input file (default: standard input).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Checkpoint what is new before exiting.
        #[arg(long)]
        final_checkpoint: bool,
        /// Take the table over from the data directory that owns it. Only
        /// when that directory is gone for good (a lost machine): it would
        /// fail its next checkpoint.
        #[arg(long)]
        take_over: bool,
    },
    /// Recover the state from the newest checkpoint plus the local WAL tail
    /// (repairing torn tails) and print a summary.
    Recover {
        #[command(flatten)]
        location: Location,
        /// Print the recovered state on stdout as newline-delimited JSON
        /// `{"key": ..., "value": ...}` sorted by key (the summary then goes
        /// to stderr): the format `walhouse ingest` reads, so a dump ingests
        /// back unchanged. Keys or values that are not UTF-8 are printed as
        /// `key_hex` / `value_hex` (two lowercase hex digits a byte).
        #[arg(long)]
        dump: bool,
    },
    /// Checkpoint everything the WAL holds now: asks a running `walhouse
    /// ingest` on the same data directory, or runs the checkpoint itself
    /// when none runs.
    Checkpoint {
        #[command(flatten)]
        location: Location,
    },
    /// Point lookup of one key: with a data directory, in the newest
    /// checkpoint plus the WAL written after it (the latest state; while a
    /// running `walhouse ingest` holds the directory, in the newest
    /// checkpoint alone, with a note); with `--checkpoint N` or only
    /// `--store`, in that checkpoint. Reads only the row groups whose
    /// statistics, bloom filter or page index can hold the key. Prints the
    /// value (exit 0), or says the key is not found (exit 1).
    Get {
        #[command(flatten)]
        location: Location,
        /// The key (UTF-8).
        key: String,
        /// Checkpoint number (default: the newest).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// List the committed checkpoints of a table.
    Checkpoints {
        #[command(flatten)]
        location: Location,
    },
    /// Check that every file of a checkpoint exists with its recorded size
    /// and crc32c (reads every byte). Exits non-zero on any problem.
    Verify {
        #[command(flatten)]
        location: Location,
        /// Checkpoint number (default: the newest).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// Retention and garbage collection: keep the newest N checkpoints,
    /// remove unreferenced objects older than the grace period.
    Gc {
        #[command(flatten)]
        location: Location,
        /// Checkpoints to keep.
        #[arg(long, default_value_t = 3)]
        retain: usize,
        /// Seconds an unreferenced object must be old before removal (at
        /// least 3600 unless --force).
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
        /// Take a grace below 3600 s. Objects of a running checkpoint are
        /// still kept (its in-flight marker protects them).
        #[arg(long)]
        force: bool,
    },
    /// Print a schema: `manifest` or `state-version` (JSON Schema of the
    /// `commitInfo.walhouse` of each table's log entries), `changelog` or
    /// `state` (Arrow).
    Schema {
        /// Which schema.
        #[arg(value_parser = ["manifest", "state-version", "changelog", "state"])]
        name: String,
    },
    /// Per core and segment: epoch, first sequence, records (puts and
    /// deletes), commits, epoch barriers, bytes, valid end, torn tail. Reads
    /// only; changes nothing.
    Inspect {
        /// The WAL directory (`<data-dir>/wal`).
        dir: PathBuf,
        /// Number of cores the WAL was written with (default: found from the
        /// segment names).
        #[arg(long)]
        cores: Option<usize>,
    },
}

fn main() -> ExitCode {
    term::init_logs();
    // Page buffers of the Parquet encoder reused instead of faulted in anew.
    let malloc = walhouse::malloc::tune_malloc();
    tracing::debug!(?malloc, "malloc thresholds");
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walhouse: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[expect(clippy::too_many_lines, reason = "one arm per command")]
fn run(cli: Cli) -> CliResult {
    let file = config::FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Demo {
            data_dir,
            records,
            cores,
            sync_every,
            store,
        } => demo_cmd::run(
            data_dir.or(file.data_dir),
            records,
            cores,
            sync_every,
            store.or(file.store),
        ),
        Command::Ingest {
            location,
            tuning,
            input,
            final_checkpoint,
            take_over,
        } => {
            let place = file.place(&location, Access::Write)?;
            let settings = file.ingest_settings(&tuning, place.cores_found())?;
            let ownership = if take_over {
                Ownership::TakeOver
            } else {
                Ownership::Claim
            };
            runtime()?.block_on(serve::ingest(
                &place,
                settings,
                input,
                final_checkpoint,
                ownership,
            ))
        }
        Command::Recover { location, dump } => {
            let place = file.place(&location, Access::Read)?;
            runtime()?.block_on(serve::recover(&place, dump))
        }
        Command::Checkpoint { location } => {
            let place = file.place(&location, Access::Write)?;
            let settings = file.ingest_settings(&Tuning::default(), place.cores_found())?;
            runtime()?.block_on(serve::checkpoint(&place, settings))
        }
        Command::Get {
            location,
            key,
            checkpoint,
        } => {
            let rt = runtime()?;
            let has_wal = location
                .data_dir
                .as_deref()
                .or(file.data_dir.as_deref())
                .is_some_and(walhouse::runtime::datadir::exists);
            if checkpoint.is_none() && has_wal {
                let place = file.place(&location, Access::Read)?;
                let settings = file.ingest_settings(&Tuning::default(), place.cores_found())?;
                if let Some(found) =
                    rt.block_on(serve::get_live(&place, settings, key.as_bytes()))?
                {
                    return print_found(&key, found);
                }
            }
            let cp = file.checkpointer(&location, CheckpointSettings::default())?;
            let store = cp.store().clone();
            let reader = CheckpointReader::open(store.clone(), LookupSettings::default());
            rt.block_on(existing_table(&cp))?;
            let (number, value) = rt.block_on(async {
                let manifest = match checkpoint {
                    Some(n) => Arc::new(load_manifest(&store, committed(&store, n).await?).await?),
                    None => reader.newest().await?.ok_or_else(|| {
                        format!("key {key:?} not found: the table has no checkpoint yet")
                    })?,
                };
                let value = reader.get_in(&manifest, key.as_bytes()).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((manifest.checkpoint, value))
            })?;
            let st = reader.stats();
            eprintln!(
                "row groups: {} searched, {} pruned by statistics, {} by bloom filter, {} by page index, {} read",
                human::count(st.row_groups_total),
                human::count(st.row_groups_pruned_by_stats),
                human::count(st.row_groups_pruned_by_bloom),
                human::count(st.row_groups_pruned_by_pages),
                human::count(st.row_groups_read)
            );
            print_found(
                &key,
                serve::Found {
                    value,
                    checkpoint: Some(number),
                    wal_records: None,
                },
            )
        }
        Command::Checkpoints { location } => {
            let cp = file.checkpointer(&location, CheckpointSettings::default())?;
            let rt = runtime()?;
            rt.block_on(existing_table(&cp))?;
            let manifests = rt.block_on(cp.checkpoints())?;
            println!(
                "checkpoint  epochs          records  changelog files  base snapshot          created at"
            );
            for m in manifests {
                let epochs = if m.epochs.first == m.epochs.last {
                    m.epochs.first.to_string()
                } else {
                    format!("{} to {}", m.epochs.first, m.epochs.last)
                };
                let snapshot = if m.state.snapshot_checkpoint == 0 {
                    "none".to_owned()
                } else {
                    format!(
                        "checkpoint {}, {}",
                        m.state.snapshot_checkpoint,
                        human::counted(m.state.snapshot.len() as u64, "file", "files")
                    )
                };
                println!(
                    "{:>10}  {epochs:<12} {:>10}  {:>15}  {snapshot:<21}  {}",
                    m.checkpoint,
                    human::count(m.stats.puts + m.stats.deletes),
                    m.changelog.len(),
                    m.created_at
                );
            }
            Ok(())
        }
        Command::Verify {
            location,
            checkpoint,
        } => {
            let cp = file.checkpointer(&location, CheckpointSettings::default())?;
            let rt = runtime()?;
            rt.block_on(existing_table(&cp))?;
            let number = if let Some(n) = checkpoint {
                rt.block_on(committed(cp.store(), n))?
            } else {
                let Some(&n) = rt.block_on(list_manifests(cp.store()))?.last() else {
                    println!("nothing to verify: the table has no checkpoint yet");
                    return Ok(());
                };
                n
            };
            let report = rt.block_on(cp.verify(Some(number)))?;
            println!(
                "checkpoint {}: {}, {} checked ({}), {}",
                report.checkpoint,
                human::counted(report.files as u64, "file", "files"),
                human::bytes(report.bytes),
                if report.state_version {
                    "its changelog and the state table's version"
                } else {
                    "its changelog; the state table's version of it is not built yet"
                },
                match report.problems.len() {
                    0 => "no problems".to_owned(),
                    n => human::counted(n as u64, "problem", "problems"),
                }
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
            location,
            retain,
            grace_secs,
            force,
        } => {
            let settings = CheckpointSettings {
                retain_checkpoints: retain,
                gc_grace_secs: grace_secs,
                gc_grace_check: if force {
                    GraceCheck::Off
                } else {
                    GraceCheck::Enforce
                },
                ..CheckpointSettings::default()
            };
            let checkpointer = file.checkpointer(&location, settings)?;
            let rt = runtime()?;
            rt.block_on(existing_table(&checkpointer))?;
            rt.block_on(checkpointer.store().probe())?;
            let report = rt.block_on(checkpointer.gc())?;
            println!(
                "kept checkpoints {} readable; expired {} (their state files go); removed {}, {} of the Delta logs behind a log checkpoint and {} of interrupted uploads; kept {} still in their grace period and {} of a running checkpoint",
                human::numbers(&report.retained),
                human::numbers(&report.versions_expired),
                human::counted(report.objects_removed.len() as u64, "object", "objects"),
                human::counted(report.log_objects_removed.len() as u64, "log object", "log objects"),
                human::counted(report.staging_files_removed.len() as u64, "staging file", "staging files"),
                human::counted(report.objects_in_grace as u64, "unreferenced object", "unreferenced objects"),
                human::count(report.objects_in_flight as u64)
            );
            Ok(())
        }
        Command::Schema { name } => {
            let text = match name.as_str() {
                "manifest" => serde_json::to_string_pretty(&manifest_json_schema())?,
                "state-version" => serde_json::to_string_pretty(&state_version_json_schema())?,
                "changelog" => serde_json::to_string_pretty(changelog_schema().as_ref())?,
                _ => serde_json::to_string_pretty(state_schema().as_ref())?,
            };
            println!("{text}");
            Ok(())
        }
        Command::Inspect { dir, cores } => {
            let cores = match cores {
                Some(c) => c,
                None => wal_cores(&dir)?.max(1),
            };
            let config = PerCoreWalConfig::new(&dir, cores);
            let recovery = PerCoreRecoveryManager::new(config.clone());
            // Sizes and positions are exact bytes: they are what errors and
            // repairs name.
            println!(
                "core segment    epoch   first_seq   records  commits  barriers      bytes  valid_end  tail"
            );
            for s in recovery.segment_stats()? {
                let ops = count_ops(&config, s.core_id, &s.path)?;
                println!(
                    "{:>4} {:>7} {:>8} {:>11} {:>9} {:>8} {:>9} {:>10} {:>10}  {}",
                    s.core_id,
                    s.segment,
                    s.min_epoch,
                    s.first_sequence,
                    ops.records,
                    ops.commits,
                    ops.barriers,
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

/// The entries of one segment by kind.
#[derive(Debug, Default)]
struct OpCounts {
    /// Puts and deletes: what users wrote.
    records: u64,
    /// Source offsets (and watermarks).
    commits: u64,
    /// Epoch barriers and checkpoint markers: the WAL's own entries.
    barriers: u64,
}

/// Reads the valid records of one segment (up to a torn tail) and counts
/// them by kind.
fn count_ops(
    config: &PerCoreWalConfig,
    core: usize,
    path: &Path,
) -> Result<OpCounts, Box<dyn std::error::Error + Send + Sync>> {
    let fs: Arc<dyn WalFileSystem> = Arc::new(StdFileSystem);
    let mut reader = PerCoreWalReader::open_with(&fs, config, core, path)?;
    let mut counts = OpCounts::default();
    while let WalReadResult::Entry(entry) = reader.read_next()? {
        match entry.operation {
            WalOperation::Put { .. } | WalOperation::Delete { .. } => counts.records += 1,
            WalOperation::Commit { .. } => counts.commits += 1,
            WalOperation::Checkpoint { .. } | WalOperation::EpochBarrier { .. } => {
                counts.barriers += 1;
            }
        }
    }
    Ok(counts)
}

/// Prints a lookup's value (exit 0) or says where the key was looked for
/// (exit 1).
fn print_found(key: &str, found: serve::Found) -> CliResult {
    if let Some(v) = found.value {
        println!("{}", String::from_utf8_lossy(&v));
        return Ok(());
    }
    let records = |n| human::counted(n, "record", "records");
    Err(match (found.checkpoint, found.wal_records) {
        (Some(c), Some(n)) => format!(
            "key {key:?} not found in checkpoint {c} nor in the {} of the WAL after it",
            records(n)
        ),
        (None, Some(n)) => format!(
            "key {key:?} not found in the {} of the WAL (no checkpoint yet)",
            records(n)
        ),
        (Some(c), None) => format!("key {key:?} not found at checkpoint {c}"),
        (None, None) => format!("key {key:?} not found: the table has no checkpoint yet"),
    }
    .into())
}

/// `checkpoint` if the table holds it, else an error that lists the
/// checkpoints it holds.
async fn committed(
    store: &Store,
    checkpoint: u64,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let numbers = list_manifests(store).await?;
    if numbers.contains(&checkpoint) {
        return Ok(checkpoint);
    }
    let has = match numbers.as_slice() {
        [] => "the table has no checkpoint yet".to_owned(),
        [one] => format!("the table has checkpoint {one}"),
        _ => format!("the table has checkpoints {}", human::numbers(&numbers)),
    };
    Err(format!("no checkpoint {checkpoint}; {has}").into())
}

/// Refuses a store that holds no table (no manifest and no owner object):
/// the commands that read a table say so instead of reporting on nothing.
async fn existing_table(cp: &Checkpointer) -> CliResult {
    if !list_manifests(cp.store()).await?.is_empty()
        || TableOwner::read(cp.store()).await?.is_some()
    {
        return Ok(());
    }
    Err(format!(
        "no table at {}: no checkpoint manifest and no owner object",
        cp.store().name()
    )
    .into())
}
