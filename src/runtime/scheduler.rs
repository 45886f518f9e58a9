//! Checkpoints of a running ingester: on demand ([`super::Ingester::checkpoint`])
//! and on the schedule of [`super::IngestSettings`] (interval, WAL bytes),
//! with backoff after a failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::core::Work;
use super::metrics::Counters;
use super::{Durable, IngestError, Shared};
use crate::checkpoint::CheckpointOutcome;

pub(super) fn record_checkpoint(c: &Counters, o: &CheckpointOutcome, started: Instant) {
    c.checkpoints.fetch_add(1, Ordering::Relaxed);
    c.checkpoint_wal_bytes
        .fetch_add(o.manifest.stats.wal_bytes, Ordering::Relaxed);
    c.checkpoint_object_bytes
        .fetch_add(o.bytes_written, Ordering::Relaxed);
    c.checkpoint_duration.record(started.elapsed());
}

pub(super) async fn run_checkpoint(shared: &Shared) -> Result<CheckpointOutcome, IngestError> {
    let mut manager = shared.manager.lock().await;
    let started = Instant::now();
    let result = async {
        let next = shared.checkpointer.advance_epoch(&mut manager).await?;
        let mut acks = Vec::new();
        for core in 0..shared.handle.cores() {
            acks.push(shared.handle.send(core, Work::Seal { epoch: next }).await?);
        }
        Durable { acks, next: 0 }.await?;
        Ok::<_, IngestError>(
            shared
                .checkpointer
                .checkpoint_sealed(&manager, next - 1)
                .await?,
        )
    }
    .await;
    match &result {
        Ok(o) => {
            record_checkpoint(&shared.counters, o, started);
            if let Some(live) = &shared.live {
                live.committed(o.manifest.checkpoint, o.manifest.epochs.last);
            }
            tracing::info!(
                checkpoint = o.manifest.checkpoint,
                epochs = ?(o.manifest.epochs.first, o.manifest.epochs.last),
                entries = o.manifest.stats.entries,
                bytes = o.bytes_written,
                secs = o.duration.as_secs_f64(),
                "checkpoint committed"
            );
        }
        Err(e) => {
            shared
                .counters
                .checkpoint_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "checkpoint failed; the WAL is kept and the next one retries");
        }
    }
    result
}

pub(super) async fn schedule(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    wal_bytes: u64,
) {
    let tick = Duration::from_millis(100).min(if interval.is_zero() {
        Duration::from_millis(100)
    } else {
        interval
    });
    let mut last = Instant::now();
    let mut entries_at_last = 0;
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        if Instant::now() < retry_at {
            continue;
        }
        let entries = shared.counters.entries.load(Ordering::Relaxed);
        let timer_due =
            !interval.is_zero() && last.elapsed() >= interval && entries != entries_at_last;
        let size_due = wal_bytes > 0
            && shared
                .manager
                .try_lock()
                .is_ok_and(|m| m.total_size() >= wal_bytes);
        if !(timer_due || size_due) {
            continue;
        }
        let run = run_checkpoint(&shared);
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => r,
            _ = stop.changed() => {
                // Let the running checkpoint finish: stopping half way is
                // safe, but finishing is cheaper than redoing it.
                (&mut run).await
            }
        };
        last = Instant::now();
        if result.is_ok() {
            entries_at_last = entries;
            backoff = Duration::ZERO;
        } else {
            backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            retry_at = Instant::now() + backoff;
        }
        if *stop.borrow() {
            return;
        }
    }
}
