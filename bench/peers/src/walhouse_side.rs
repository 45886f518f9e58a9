//! walhouse through its front door: `Walhouse::builder(..).settings(..)
//! .open()`, `write`, `put` (through `handle()`), `checkpoint`, `get`,
//! `shutdown`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use walhouse::runtime::{IngestSettings, WriteOp};
use walhouse::store::Store;
use walhouse::Walhouse;

use crate::workload::{Latencies, Workload};
use crate::Result;

/// The settings of every walhouse run: `cores` core threads, unpinned
/// (the peers' threads are not pinned either), no checkpoint on a timer or
/// on WAL size (a section checkpoints when it means to), the rest default
/// (group commit without delay: requests arriving during an fdatasync form
/// the next group).
pub fn settings(cores: usize) -> IngestSettings {
    IngestSettings {
        cores,
        pin_threads: false,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        ..IngestSettings::default()
    }
}

/// Opens (or reopens) the walhouse of `dir`: WAL in `dir/data`, the
/// tables in the local store `dir/table`.
pub async fn open(dir: &Path, cores: usize) -> Result<Walhouse> {
    let store = Store::local(&dir.join("table"))?;
    Ok(Walhouse::builder(dir.join("data"), store)
        .settings(settings(cores))
        .open()
        .await?)
}

fn ops(work: &Workload, from: usize, n: usize) -> Vec<WriteOp> {
    (from..from + n)
        .map(|i| WriteOp::Put {
            key: work.key(i).to_vec(),
            value: work.value(i).to_vec(),
        })
        .collect()
}

/// Writes rows `0..rows` in durable batches of `batch`.
pub async fn load(db: &Walhouse, work: &Workload, rows: usize, batch: usize) -> Result<()> {
    let mut at = 0;
    while at < rows {
        let n = batch.min(rows - at);
        db.write(ops(work, at, n)).await?;
        at += n;
    }
    Ok(())
}

/// Closed-loop producers for `run_for`: `producers` tasks, each sending a
/// batch of `batch` puts (`write`, or `put` when `batch` is 1) and waiting
/// for its acknowledgement before the next. Producer `p` writes keys from
/// `p * stride` on. Returns (acks, seconds, per-request latencies).
pub async fn ingest(
    db: &Walhouse,
    work: &Arc<Workload>,
    producers: usize,
    batch: usize,
    run_for: Duration,
) -> Result<(u64, f64, Latencies)> {
    let stride = work.len() / producers;
    let start = Instant::now();
    let deadline = start + run_for;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let handle = db.handle();
        let work = Arc::clone(work);
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut at = p * stride;
            let mut acks = 0u64;
            while Instant::now() < deadline {
                if batch == 1 {
                    let (key, value) = (work.key(at).to_vec(), work.value(at).to_vec());
                    let t = Instant::now();
                    handle.put(key, value).await?;
                    lat.record(t);
                } else {
                    let ops = ops(&work, at, batch);
                    let t = Instant::now();
                    handle.put_batch(ops).await?;
                    lat.record(t);
                }
                at += batch;
                acks += batch as u64;
            }
            Ok::<_, walhouse::runtime::IngestError>((acks, lat))
        }));
    }
    let mut acks = 0;
    let mut lat = Latencies::default();
    for task in tasks {
        let (a, l) = task.await??;
        acks += a;
        lat.extend(l);
    }
    Ok((acks, start.elapsed().as_secs_f64(), lat))
}
