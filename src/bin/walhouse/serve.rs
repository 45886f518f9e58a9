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
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use walhouse::checkpoint::{recover as recover_state, CheckpointOutcome, StateBuilt};
use walhouse::per_core_wal::PerCoreWalConfig;
use walhouse::runtime::ndjson::ingest_ndjson;
use walhouse::runtime::{
    check_table_owner, lock_data_dir, IngestError, IngestSettings, Ingester, Ownership,
};

use crate::config::Place;
use crate::CliResult;

fn spinner(message: &str) -> indicatif::ProgressBar {
    // Drawn only on a terminal: quiet in pipes.
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn describe(o: &CheckpointOutcome) -> String {
    let m = &o.manifest;
    format!(
        "checkpoint {}: epochs {}..={}, {} entries, {} changelog files, {} bytes written, {} WAL segments removed, committed in {:.3} s",
        m.checkpoint,
        m.epochs.first,
        m.epochs.last,
        m.stats.entries,
        m.changelog.len(),
        o.bytes_written,
        o.removed_segments,
        o.duration.as_secs_f64()
    )
}

fn describe_state(s: &StateBuilt) -> Option<String> {
    let last = s.versions.last()?;
    Some(format!(
        "state table: version {last} built after the commit ({} keys; {} bytes written{}) in {:.3} s",
        s.keys.unwrap_or(0),
        s.bytes_written,
        if s.compacted.contains(last) {
            "; a full rewrite"
        } else {
            ""
        },
        s.duration.as_secs_f64()
    ))
}

fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

async fn serve_control(listener: tokio::net::UnixListener, ingester: Arc<Ingester>) {
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
    let ingester = Ingester::builder(&place.data_dir, place.store.clone())
        .settings(settings)
        .ownership(ownership)
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
    let report = ingester.shutdown(final_checkpoint).await;
    let secs = started.elapsed().as_secs_f64();
    let outcome = match result {
        None => {
            eprintln!("walhouse ingest: stopped by a signal; every acknowledged line is durable");
            Ok(())
        }
        Some(Ok(summary)) => {
            eprintln!(
                "walhouse ingest: {} lines ({} puts, {} deletes, {} commits) durable in {secs:.2} s",
                summary.lines, summary.puts, summary.deletes, summary.commits
            );
            Ok(())
        }
        Some(Err(e)) => Err(e.into()),
    };
    let report = report?;
    let m = &report.metrics;
    eprintln!(
        "walhouse ingest: {} entries, {} fsyncs, ack latency p50 {:?} p99 {:?}, {} checkpoints ({} failed)",
        m.entries,
        m.fsyncs,
        m.ack_latency.quantile(0.5),
        m.ack_latency.quantile(0.99),
        m.checkpoints,
        m.checkpoint_failures
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
    let secs = started.elapsed().as_secs_f64();
    let s = &r.state;
    let mut summary = format!(
        "recovered {} keys from {} + {} WAL entries ({} already in the checkpoint) in {secs:.3} s\n\
         epoch {}, next sequences {:?}, torn tail bytes cut {:?}, {} checkpoint objects verified\n",
        s.state.len(),
        r.checkpoint.map_or_else(|| "no checkpoint".to_owned(), |c| format!("checkpoint {c}")),
        s.entries_replayed,
        s.entries_skipped,
        s.final_epoch,
        s.next_sequences,
        s.truncated_bytes,
        r.objects_verified,
    );
    let mut offsets: Vec<_> = s.source_offsets.iter().collect();
    offsets.sort();
    let _ = writeln!(
        summary,
        "source offsets {offsets:?}, watermark {:?}",
        s.watermark
    );
    if s.repairs.is_empty() {
        summary.push_str("WAL repairs: none\n");
    }
    for repair in &s.repairs {
        let _ = writeln!(summary, "WAL repair: removed {repair}");
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

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) async fn checkpoint(place: &Place, mut settings: IngestSettings) -> CliResult {
    match lock_data_dir(&place.data_dir) {
        Ok(lock) => drop(lock),
        Err(IngestError::Locked { .. }) => return ask_running(&place.data_dir).await,
        Err(e) => return Err(e.into()),
    }
    settings.pin_threads = false;
    settings.checkpoint_interval_ms = 0;
    settings.checkpoint_wal_bytes = 0;
    let ingester = Ingester::builder(&place.data_dir, place.store.clone())
        .settings(settings)
        .open()
        .await?;
    let bar = spinner("checkpointing");
    let outcome = ingester.checkpoint().await;
    bar.finish_and_clear();
    let report = ingester.shutdown(false).await?;
    println!("{}", describe(&outcome?));
    if let Some(line) = describe_state(&report.state) {
        println!("{line}");
    }
    Ok(())
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
