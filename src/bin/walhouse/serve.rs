//! `walhouse ingest`, `recover` and `checkpoint`: the commands that open a
//! data directory.
//!
//! A running `ingest` holds `<data-dir>/LOCK` and listens on
//! `<data-dir>/control.sock`; `checkpoint` asks it there (one line,
//! `checkpoint`, answered by one line, `ok ...` or `error ...`), or runs the
//! checkpoint itself when no ingest holds the lock.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::ndjson::ingest_ndjson;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use walhouse::checkpoint::{recover as recover_state, CheckpointOutcome, StateBuilt};
use walhouse::per_core_wal::PerCoreWalConfig;
use walhouse::runtime::{check_table_owner, lock_data_dir, IngestError, IngestSettings, Ownership};
use walhouse::{Reads, Shutdown, Walhouse};

use crate::config::Place;
use crate::term::spinner;
use crate::{human, CliResult};

/// `checkpoint 1: epochs 0 to 1, 2 records (2 puts, 0 deletes), ...`:
/// records are puts and deletes (commits and epoch barriers are WAL
/// entries of the changelog too, but no user's records).
fn describe(o: &CheckpointOutcome) -> String {
    let m = &o.manifest;
    format!(
        "checkpoint {}: {}, {} ({}, {}), {}, {} written, {} removed, committed in {}",
        m.checkpoint,
        human::epochs(m.epochs.first, m.epochs.last),
        human::counted(m.stats.puts + m.stats.deletes, "record", "records"),
        human::counted(m.stats.puts, "put", "puts"),
        human::counted(m.stats.deletes, "delete", "deletes"),
        human::counted(
            m.changelog.len() as u64,
            "changelog file",
            "changelog files"
        ),
        human::bytes(o.bytes_written),
        human::counted(o.removed_segments as u64, "WAL segment", "WAL segments"),
        human::duration(o.duration)
    )
}

fn describe_state(s: &StateBuilt) -> Option<String> {
    let last = s.versions.last()?;
    Some(format!(
        "state table: version {last} built after the commit ({}; {} written{}) in {}",
        human::counted(s.keys.unwrap_or(0), "key", "keys"),
        human::bytes(s.bytes_written),
        if s.compacted.contains(last) {
            "; a full rewrite"
        } else {
            ""
        },
        human::duration(s.duration)
    ))
}

fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

async fn serve_control(listener: tokio::net::UnixListener, ingester: Arc<Walhouse>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let ingester = ingester.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "checkpoint" => match ingester.checkpoint().await {
                    Ok(o) => format!("ok {}\n", describe(&o)),
                    Err(e) => format!("error {e}\n"),
                },
                other => format!("error unknown request {other:?}\n"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
        });
    }
}

pub(crate) async fn ingest(
    place: &Place,
    settings: IngestSettings,
    input: Option<PathBuf>,
    final_checkpoint: bool,
    ownership: Ownership,
) -> CliResult {
    let input: Box<dyn BufRead + Send> = match &input {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| format!("opening input {}: {e}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    // This process only writes: nothing is held in memory for lookups.
    let ingester = Walhouse::builder(&place.data_dir, place.store.clone())
        .settings(settings)
        .ownership(ownership)
        .reads(Reads::Checkpointed)
        .open()
        .await?;
    let ingester = Arc::new(ingester);
    let sock = socket_path(&place.data_dir);
    // We hold the lock: a socket file left by a killed process is stale.
    let _ = std::fs::remove_file(&sock);
    let control = match tokio::net::UnixListener::bind(&sock) {
        Ok(listener) => Some(tokio::spawn(serve_control(listener, ingester.clone()))),
        Err(e) => {
            tracing::warn!(socket = %sock.display(), error = %e, "no control socket: `walhouse checkpoint` cannot reach this process");
            None
        }
    };
    let started = Instant::now();
    let handle = ingester.handle();
    let stdout = std::io::stdout();
    let result = {
        let run = ingest_ndjson(&handle, input, stdout.lock());
        tokio::pin!(run);
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = &mut run => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = sigterm.recv() => None,
        }
    };
    if let Some(task) = control {
        task.abort();
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&sock);
    let ingester = Arc::try_unwrap(ingester).map_err(|_| "a control request is still running")?;
    let report = ingester
        .shutdown(if final_checkpoint {
            Shutdown::Checkpoint
        } else {
            Shutdown::Sync
        })
        .await;
    let took = started.elapsed();
    let outcome = match result {
        None => {
            eprintln!("walhouse ingest: stopped by a signal; every acknowledged line is durable");
            Ok(())
        }
        Some(Ok(summary)) => {
            eprintln!(
                "walhouse ingest: {} durable in {}: {} ({}, {}) and {}",
                human::counted(summary.lines, "line", "lines"),
                human::duration(took),
                human::counted(summary.puts + summary.deletes, "record", "records"),
                human::counted(summary.puts, "put", "puts"),
                human::counted(summary.deletes, "delete", "deletes"),
                human::counted(summary.commits, "commit", "commits"),
            );
            Ok(())
        }
        Some(Err(e)) => Err(e.into()),
    };
    let report = report?;
    let m = &report.metrics;
    eprintln!(
        "walhouse ingest: {} (records and commits) in {}; ack latency p50 {}, p99 {}; {} ({} failed)",
        human::counted(m.entries, "write", "writes"),
        human::counted(m.fsyncs, "fsync", "fsyncs"),
        human::duration(m.ack_latency.quantile(0.5)),
        human::duration(m.ack_latency.quantile(0.99)),
        human::counted(m.checkpoints, "checkpoint", "checkpoints"),
        human::count(m.checkpoint_failures)
    );
    if let Some(o) = &report.final_checkpoint {
        eprintln!("walhouse ingest: final {}", describe(o));
    }
    if let Some(line) = describe_state(&report.state) {
        eprintln!("walhouse ingest: {line}");
    }
    outcome
}

pub(crate) async fn recover(place: &Place, dump: bool) -> CliResult {
    // Recovery repairs torn tails: never while an ingest writes.
    let _lock = lock_data_dir(&place.data_dir)?;
    check_table_owner(&place.store, &place.data_dir, place.record.as_ref()).await?;
    let cores = place.cores_found().max(1);
    let started = Instant::now();
    let bar = spinner("recovering");
    let r = recover_state(
        &place.store,
        &PerCoreWalConfig::new(&place.wal_dir(), cores),
    )
    .await;
    bar.finish_and_clear();
    let r = r?;
    let took = started.elapsed();
    let s = &r.state;
    // Records are the puts and deletes replayed: the WAL's epoch barriers
    // and the commits are not counted as records.
    let records = human::counted(s.records_replayed as u64, "record", "records");
    let mut summary = match r.checkpoint {
        Some(c) => format!(
            "recovered {} from checkpoint {c} and {records} of the WAL after it",
            human::counted(s.state.len() as u64, "key", "keys")
        ),
        None => format!(
            "recovered {} from {records} of the WAL (no checkpoint yet)",
            human::counted(s.state.len() as u64, "key", "keys")
        ),
    };
    if s.records_skipped > 0 {
        let _ = write!(
            summary,
            " (skipped {} the checkpoint holds)",
            human::counted(s.records_skipped as u64, "record", "records")
        );
    }
    let _ = writeln!(summary, " in {}", human::duration(took));
    let _ = writeln!(
        summary,
        "epoch {}; next sequence by core: {}; torn tails cut: {}; {} verified",
        s.final_epoch,
        by_core(&s.next_sequences, u64::to_string),
        cut_tails(&s.truncated_bytes),
        human::counted(
            r.objects_verified as u64,
            "checkpoint object",
            "checkpoint objects"
        ),
    );
    let _ = writeln!(
        summary,
        "source offsets: {}; {}",
        human::offsets(&s.source_offsets),
        s.watermark
            .map_or_else(|| "no watermark".to_owned(), |w| format!("watermark {w}"))
    );
    if s.repairs.is_empty() {
        summary.push_str("WAL repairs: none\n");
    }
    for p in &s.repairs {
        let _ = writeln!(
            summary,
            "WAL repair: core {}: removed {} (offsets {} to {}) of {}: {}",
            p.core_id,
            human::bytes(p.to - p.from),
            p.from,
            p.to,
            p.path.display(),
            p.reason
        );
    }
    if !r.wal_present {
        summary.push_str("no local WAL: the state is exactly what the object store holds\n");
    }
    if dump {
        eprint!("{summary}");
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for (k, v) in &s.state {
            let mut line = serde_json::Map::new();
            for (name, bytes) in [("key", k), ("value", v)] {
                match std::str::from_utf8(bytes) {
                    Ok(text) => line.insert(name.to_owned(), text.into()),
                    Err(_) => line.insert(format!("{name}_hex"), hex(bytes).into()),
                };
            }
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    } else {
        print!("{summary}");
    }
    Ok(())
}

/// `0=4, 1=3`: one value per core, by core number (zero values included).
fn by_core(values: &[u64], show: impl Fn(&u64) -> String) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values
        .iter()
        .enumerate()
        .map(|(core, v)| format!("{core}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `core 1: 17 bytes`: the cores whose torn tail was cut, or `none`.
fn cut_tails(truncated: &[u64]) -> String {
    let cut: Vec<String> = truncated
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b > 0)
        .map(|(core, &b)| format!("core {core}: {}", human::bytes(b)))
        .collect();
    if cut.is_empty() {
        "none".to_owned()
    } else {
        cut.join(", ")
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) async fn checkpoint(place: &Place, settings: IngestSettings) -> CliResult {
    if held_by_a_running_walhouse(&place.data_dir)? {
        return ask_running(&place.data_dir).await;
    }
    let db = open_for_one_command(place, settings, Reads::Checkpointed).await?;
    let bar = spinner("checkpointing");
    let outcome = db.checkpoint().await;
    bar.finish_and_clear();
    let report = db.shutdown(Shutdown::Sync).await?;
    println!("{}", describe(&outcome?));
    if let Some(line) = describe_state(&report.state) {
        println!("{line}");
    }
    Ok(())
}

/// What `walhouse get` found.
pub(crate) struct Found {
    /// `None`: absent or deleted.
    pub value: Option<Vec<u8>>,
    /// The checkpoint read (`None`: none yet).
    pub checkpoint: Option<u64>,
    /// Puts and deletes of the WAL after the checkpoint that were read too
    /// (`None`: the WAL was not read).
    pub wal_records: Option<u64>,
}

/// `walhouse get` on a data directory: the newest checkpoint plus the WAL
/// after it, read by opening the directory (its lock taken, its WAL's tail
/// loaded; nothing is written to the store). `None` when a running
/// `walhouse` holds the directory: the caller answers from the newest
/// checkpoint alone and this says so.
pub(crate) async fn get_live(
    place: &Place,
    settings: IngestSettings,
    key: &[u8],
) -> Result<Option<Found>, Box<dyn std::error::Error + Send + Sync>> {
    if held_by_a_running_walhouse(&place.data_dir)? {
        eprintln!(
            "note: a running walhouse holds {}; reading the newest checkpoint only \
             (writes after it are not seen)",
            place.data_dir.display()
        );
        return Ok(None);
    }
    let db = open_for_one_command(place, settings, Reads::Live).await?;
    let value = db.get(key).await;
    let opened = db.opened().clone();
    db.shutdown(Shutdown::Sync).await?;
    Ok(Some(Found {
        value: value?,
        checkpoint: opened.checkpoint,
        wal_records: Some(opened.tail_entries),
    }))
}

/// Whether another process holds the data directory's lock (a running
/// `walhouse ingest`).
fn held_by_a_running_walhouse(data_dir: &Path) -> Result<bool, IngestError> {
    match lock_data_dir(data_dir) {
        Ok(lock) => {
            drop(lock);
            Ok(false)
        }
        Err(IngestError::Locked { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Opens the data directory for one command: core threads not pinned, no
/// checkpoint schedule.
async fn open_for_one_command(
    place: &Place,
    mut settings: IngestSettings,
    reads: Reads,
) -> Result<Walhouse, walhouse::Error> {
    settings.pin_threads = false;
    settings.checkpoint_interval_ms = 0;
    settings.checkpoint_wal_bytes = 0;
    Walhouse::builder(&place.data_dir, place.store.clone())
        .settings(settings)
        .reads(reads)
        .open()
        .await
}

async fn ask_running(data_dir: &Path) -> CliResult {
    let sock = socket_path(data_dir);
    let stream = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
        format!(
            "{} is held by a running walhouse, but its control socket {} does not answer: {e}",
            data_dir.display(),
            sock.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"checkpoint\n").await?;
    let mut line = String::new();
    tokio::io::BufReader::new(read).read_line(&mut line).await?;
    match line.trim_end().split_once(' ') {
        Some(("ok", rest)) => {
            println!("{rest} (by the running ingest)");
            Ok(())
        }
        Some(("error", rest)) => {
            Err(format!("the running ingest failed to checkpoint: {rest}").into())
        }
        _ => Err(format!("unexpected answer from {}: {line:?}", sock.display()).into()),
    }
}
