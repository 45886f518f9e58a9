//! One core's thread: owns its [`CoreWalWriter`], appends what producers
//! send, and acknowledges after the group commit's fdatasync.
//!
//! The loop: block for one request, append it, then take whatever else is
//! already queued (up to the group's entry and byte limits, waiting at most
//! the group delay for more), fdatasync once, and acknowledge every request
//! of the group. While the fsync runs, new requests queue up and form the
//! next group, so the batch size follows the load by itself.
//!
//! A failed write or fsync poisons the writer (it is never retried: the
//! kernel may have dropped the pages it failed to write); every request of
//! the group and every later one fails with [`IngestError::Poisoned`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::live::Live;
use super::metrics::Counters;
use super::{IngestError, IngestSettings, WriteOp};
use crate::per_core_wal::{CoreWalWriter, PerCoreWalError, PerCoreWalManager};

pub(crate) type AckSender = oneshot::Sender<Result<(), IngestError>>;

/// What a producer or the coordinator asks of a core.
pub(crate) enum Work {
    /// Puts and deletes, appended in order.
    Write(Vec<WriteOp>),
    /// One put or delete (no vector for the common single-entry case).
    One(WriteOp),
    /// Source offsets and watermark of an exactly-once source.
    Commit {
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    },
    /// Nothing to append: acknowledged once everything before it is durable.
    Flush,
    /// Move to `epoch` and write an epoch barrier, which seals the previous
    /// epoch's segment.
    Seal { epoch: u64 },
    /// Sync, acknowledge, and stop the thread.
    Shutdown,
}

pub(crate) struct Request {
    pub work: Work,
    pub enqueued: Instant,
    pub ack: AckSender,
}

/// Group-commit limits of one core thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    pub entries: u64,
    pub bytes: u64,
    pub delay: Duration,
}

struct Pending {
    ack: AckSender,
    enqueued: Instant,
    entries: u64,
    bytes: u64,
    result: Result<(), IngestError>,
    /// For the live state: the epoch of the writes and the writes appended
    /// (all of them, or those before a refused one).
    written: Option<(u64, Vec<WriteOp>)>,
}

fn write_error(writer: &CoreWalWriter, e: &PerCoreWalError) -> IngestError {
    if writer.is_poisoned() {
        if let PerCoreWalError::Poisoned { core_id, cause } = e {
            return IngestError::Poisoned {
                core_id: *core_id,
                cause: cause.clone(),
            };
        }
        return IngestError::Poisoned {
            core_id: writer.core_id(),
            cause: e.to_string(),
        };
    }
    IngestError::Rejected {
        core_id: writer.core_id(),
        reason: e.to_string(),
    }
}

fn append_one(writer: &mut CoreWalWriter, op: &WriteOp) -> Result<u64, PerCoreWalError> {
    match op {
        WriteOp::Put { key, value } => {
            writer.append_put(key, value)?;
            Ok((key.len() + value.len()) as u64)
        }
        WriteOp::Delete { key } => {
            writer.append_delete(key)?;
            Ok(key.len() as u64)
        }
    }
}

/// Appends one request; returns what to acknowledge after the sync and
/// whether the thread must stop. With `keep`, the writes appended are kept
/// for the live state.
fn apply(writer: &mut CoreWalWriter, req: Request, keep: bool) -> (Pending, bool) {
    let mut entries = 0u64;
    let mut bytes = 0u64;
    let mut stop = false;
    let Request {
        work,
        enqueued,
        ack,
    } = req;
    let result = match &work {
        Work::One(op) => append_one(writer, op).map(|b| {
            entries = 1;
            bytes = b;
        }),
        Work::Write(ops) => ops.iter().try_for_each(|op| {
            bytes += append_one(writer, op)?;
            entries += 1;
            Ok(())
        }),
        Work::Commit { offsets, watermark } => writer
            .append_commit(offsets.clone(), *watermark)
            .map(|_| entries = 1),
        Work::Flush => Ok(()),
        Work::Seal { epoch } => {
            writer.set_epoch(*epoch);
            writer.append_epoch_barrier().map(|_| ())
        }
        Work::Shutdown => {
            stop = true;
            Ok(())
        }
    };
    // The epoch the writes went into, read after them: a checkpoint that
    // advances the epoch meanwhile moves the writer at its next append, so
    // an epoch read before could be one the write is not in (and that
    // checkpoint would drop it from the live state without holding it).
    // Within one request the epoch moves at most once: a later entry's is
    // the larger, which keeps an entry in memory for longer, never shorter.
    let epoch = writer.epoch();
    let written = match work {
        Work::One(op) if keep && entries == 1 => Some((epoch, vec![op])),
        Work::Write(mut ops) if keep && entries > 0 => {
            ops.truncate(usize::try_from(entries).unwrap_or(usize::MAX));
            Some((epoch, ops))
        }
        _ => None,
    };
    let result = result.map_err(|e| write_error(writer, &e));
    (
        Pending {
            ack,
            enqueued,
            entries,
            bytes,
            result,
            written,
        },
        stop,
    )
}

/// The core thread's body. Returns the writer when told to shut down (or
/// when every sender is gone), for a final checkpoint.
pub(crate) fn run(
    mut writer: CoreWalWriter,
    rx: &flume::Receiver<Request>,
    limits: GroupLimits,
    counters: &Arc<Counters>,
    live: Option<&Live>,
) -> CoreWalWriter {
    let keep = live.is_some();
    let mut group: Vec<Pending> = Vec::with_capacity(1024);
    loop {
        let Ok(first) = rx.recv() else {
            break;
        };
        let (p, mut stop) = apply(&mut writer, first, keep);
        let mut entries = p.entries;
        let mut bytes = p.bytes;
        group.push(p);
        let deadline = Instant::now() + limits.delay;
        while !stop && entries < limits.entries && bytes < limits.bytes {
            let next = match rx.try_recv() {
                Ok(r) => r,
                Err(flume::TryRecvError::Empty) if !limits.delay.is_zero() => {
                    match rx.recv_deadline(deadline) {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            let (p, s) = apply(&mut writer, next, keep);
            entries += p.entries;
            bytes += p.bytes;
            stop = s;
            group.push(p);
        }
        let sync = if writer.is_poisoned() {
            // A write of this group (or an earlier one) failed: nothing the
            // group appended is synced, so none of it is acknowledged,
            // including the requests appended before the failure.
            Err(group
                .iter()
                .find_map(|p| match &p.result {
                    Err(e @ IngestError::Poisoned { .. }) => Some(e.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| IngestError::Poisoned {
                    core_id: writer.core_id(),
                    cause: "an earlier write failed".to_owned(),
                }))
        } else {
            let t = Instant::now();
            let r = writer.sync();
            counters.fsync_latency.record(t.elapsed());
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            r.map_err(|e| write_error(&writer, &e))
        };
        let now = Instant::now();
        for mut p in group.drain(..) {
            // Durable: seen by lookups before it is acknowledged.
            if let (Ok(()), Some(live), Some((epoch, ops))) = (&sync, live, p.written.take()) {
                live.apply(writer.core_id(), epoch, ops);
            }
            let result = match (&sync, p.result) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), r) => r,
            };
            if result.is_ok() {
                counters.entries.fetch_add(p.entries, Ordering::Relaxed);
                counters.bytes.fetch_add(p.bytes, Ordering::Relaxed);
                let waited = now.saturating_duration_since(p.enqueued);
                counters.ack_latency.record_n(
                    u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
                    p.entries,
                );
            } else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            // The producer may have stopped waiting: nothing to do then.
            let _ = p.ack.send(result);
        }
        if stop {
            break;
        }
    }
    writer
}

pub(super) type CoreThreads = (
    Vec<flume::Sender<Request>>,
    Vec<std::thread::JoinHandle<CoreWalWriter>>,
);

/// Moves every core's writer to a thread of its own, pinned when asked.
pub(super) fn spawn_cores(
    s: &IngestSettings,
    manager: &mut PerCoreWalManager,
    counters: &Arc<Counters>,
    live: Option<&Arc<Live>>,
    wal_dir: &Path,
) -> Result<CoreThreads, IngestError> {
    let limits = GroupLimits {
        entries: s.group_commit_entries as u64,
        bytes: s.group_commit_bytes as u64,
        delay: Duration::from_micros(s.group_commit_delay_us),
    };
    let cpus = if s.pin_threads {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut senders = Vec::with_capacity(s.cores);
    let mut threads = Vec::with_capacity(s.cores);
    for core in 0..s.cores {
        let writer = manager.take_writer(core)?;
        let (tx, rx) = flume::bounded(s.channel_capacity);
        senders.push(tx);
        let cpu = if s.pin_threads {
            if cpus.is_empty() {
                pin_warning_once(core);
                None
            } else {
                Some(cpus[core % cpus.len()])
            }
        } else {
            None
        };
        let counters = counters.clone();
        let live = live.cloned();
        let thread = std::thread::Builder::new()
            .name(format!("walhouse-core-{core}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        pin_warning_once(core);
                    }
                }
                run(writer, &rx, limits, &counters, live.as_deref())
            })
            .map_err(|e| IngestError::Io {
                op: "spawn core thread",
                path: wal_dir.to_path_buf(),
                source: Arc::new(e),
            })?;
        threads.push(thread);
    }
    Ok((senders, threads))
}

fn pin_warning_once(core: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            core,
            "the OS refused to pin a core thread to its CPU; running unpinned"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use super::*;
    use crate::per_core_wal::{PerCoreWalConfig, PerCoreWalManager, WalClock};

    /// A clock that, the first time it is read (during the first append),
    /// asks the writer for epoch 7, as a checkpoint's `set_epoch_all` does
    /// from another thread.
    #[derive(Debug, Default)]
    struct AdvancesTheEpoch {
        shared: OnceLock<Arc<crate::per_core_wal::CoreShared>>,
        now: std::sync::atomic::AtomicI64,
    }

    impl WalClock for AdvancesTheEpoch {
        fn now_ns(&self) -> i64 {
            if let Some(shared) = self.shared.get() {
                shared.requested_epoch.fetch_max(7, Ordering::Relaxed);
            }
            self.now.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    #[test]
    fn writes_are_recorded_with_the_epoch_they_went_into() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(AdvancesTheEpoch::default());
        let mut manager = PerCoreWalManager::builder(PerCoreWalConfig::new(tmp.path(), 1))
            .clock(clock.clone())
            .create()
            .unwrap();
        let mut writer = manager.take_writer(0).unwrap();
        clock.shared.set(Arc::clone(writer.shared())).unwrap();
        let before = writer.epoch();
        let ops: Vec<WriteOp> = (0..2_u8)
            .map(|i| WriteOp::Put {
                key: vec![i],
                value: vec![i],
            })
            .collect();
        let (ack, _rx) = oneshot::channel();
        let request = Request {
            work: Work::Write(ops),
            enqueued: Instant::now(),
            ack,
        };
        let (pending, _) = apply(&mut writer, request, true);
        pending.result.unwrap();
        writer.sync().unwrap();
        // The first put went into the epoch before, the second into 7.
        let (recorded, _) = pending.written.unwrap();
        assert_eq!((before, recorded), (0, 7));
        manager.attach_writer(writer).unwrap();
        let epochs: Vec<u64> = manager
            .merge_segments()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.operation, crate::per_core_wal::WalOperation::Put { .. }))
            .map(|e| e.epoch)
            .collect();
        assert_eq!(epochs, [0, 7], "the batch spans the epoch change");
    }
}
