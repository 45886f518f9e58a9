//! Counters and latency histograms of a running ingester.
//!
//! Recording is a few relaxed atomic adds: core threads record fsync and
//! acknowledgement latencies without locks. A [`LatencyHistogram`] keeps 8
//! linear sub-buckets per power of two of nanoseconds (relative error under
//! 12.5 %), from 1 ns to about 584 years.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A lock-free log-linear histogram of durations in nanoseconds.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return usize::try_from(ns).unwrap_or(0);
    }
    let top = ns.ilog2(); // >= SUB_BITS
    let shift = top - SUB_BITS;
    let sub = usize::try_from((ns >> shift) & (SUB as u64 - 1)).unwrap_or(0);
    (shift as usize + 1) * SUB + sub
}

/// The largest value a bucket holds (a quantile reports this upper bound).
fn bucket_upper(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = u32::try_from(index / SUB - 1).unwrap_or(63);
    let sub = (index % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one duration in nanoseconds.
    pub fn record_ns(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Records `n` events of the same duration (one per acknowledged entry).
    pub fn record_n(&self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.buckets[bucket_of(ns)].fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            max_ns: self.max_ns.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: Vec<u64>,
    /// Events recorded.
    pub count: u64,
    /// Sum of all durations, in nanoseconds.
    pub sum_ns: u64,
    /// Largest duration recorded, in nanoseconds.
    pub max_ns: u64,
}

impl HistogramSnapshot {
    /// The duration below which a share `q` (0.0..=1.0) of events fell (an
    /// upper bound within 12.5 %); zero when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank among at most u64::MAX events, rounded up"
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bucket_upper(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    /// Mean duration; zero when empty.
    #[must_use]
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.sum_ns / self.count)
    }

    /// The events recorded since `earlier` (a snapshot of the same histogram).
    #[must_use]
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n - earlier.buckets.get(i).copied().unwrap_or(0).min(*n))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            max_ns: self.max_ns,
        }
    }
}

/// Live counters, shared by the core threads and the checkpoint scheduler.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub errors: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub checkpoint_wal_bytes: AtomicU64,
    pub checkpoint_object_bytes: AtomicU64,
    pub fsync_latency: LatencyHistogram,
    pub ack_latency: LatencyHistogram,
    pub checkpoint_duration: LatencyHistogram,
}

/// What an ingester has done since it opened ([`crate::runtime::Ingester::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestMetrics {
    /// Entries acknowledged durable (puts, deletes, commits).
    pub entries: u64,
    /// Key and value bytes of those entries.
    pub bytes: u64,
    /// fdatasync calls (one per group commit per core).
    pub fsyncs: u64,
    /// Requests that failed (poisoned core, oversized record, ...).
    pub errors: u64,
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// Checkpoints that failed (the WAL is kept; the next one retries).
    pub checkpoint_failures: u64,
    /// WAL bytes the committed checkpoints covered.
    pub checkpoint_wal_bytes: u64,
    /// Bytes of Parquet the committed checkpoints wrote.
    pub checkpoint_object_bytes: u64,
    /// fdatasync latency.
    pub fsync_latency: HistogramSnapshot,
    /// From a request's submission to its acknowledgement, per entry.
    pub ack_latency: HistogramSnapshot,
    /// Duration of committed checkpoints.
    pub checkpoint_duration: HistogramSnapshot,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> IngestMetrics {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestMetrics {
            entries: l(&self.entries),
            bytes: l(&self.bytes),
            fsyncs: l(&self.fsyncs),
            errors: l(&self.errors),
            checkpoints: l(&self.checkpoints),
            checkpoint_failures: l(&self.checkpoint_failures),
            checkpoint_wal_bytes: l(&self.checkpoint_wal_bytes),
            checkpoint_object_bytes: l(&self.checkpoint_object_bytes),
            fsync_latency: self.fsync_latency.snapshot(),
            ack_latency: self.ack_latency.snapshot(),
            checkpoint_duration: self.checkpoint_duration.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for ns in (0..10_000u64).chain([1 << 20, 1 << 40, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last, "bucket of {ns} went back");
            assert!(bucket_upper(b) >= ns, "bucket {b} upper below {ns}");
            last = b;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let h = LatencyHistogram::default();
        for ns in 1..=1000u64 {
            h.record_ns(ns * 1000);
        }
        let s = h.snapshot();
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (1.0, 1_000_000.0)] {
            #[expect(clippy::cast_precision_loss, reason = "test figures")]
            let got = s.quantile(q).as_nanos() as f64;
            assert!(got >= want && got <= want * 1.125, "q{q}: {got} vs {want}");
        }
        assert_eq!(s.count, 1000);
        assert_eq!(s.mean(), Duration::from_nanos(500_500));
        assert_eq!(h.snapshot().since(&s).count, 0);
    }
}
