//! The clock seam: where writers get their timestamps. Tests inject a clock
//! that steps back to prove per-core order survives it.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;

use super::entry::PerCoreWalEntry;

/// A source of wall-clock time in nanoseconds since the Unix epoch. Writers
/// make the values strictly increasing per core themselves.
pub trait WalClock: Send + Sync + Debug {
    /// The current time in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system's wall clock, read through the CPU's time-stamp counter.
///
/// Reading `SystemTime` is a large part of an append's cost; the counter
/// (via `quanta`) is a few times cheaper. The counter's time is anchored to
/// `SystemTime` and re-anchored every 100 ms, so it follows the wall clock
/// (including NTP steps) within that period. Where the counter is unusable,
/// `quanta` falls back to the operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// How often the counter is re-anchored to the wall clock.
const REANCHOR_NS: u64 = 100_000_000;

#[derive(Debug)]
struct AnchoredCounter {
    clock: quanta::Clock,
    base_raw: u64,
    /// Wall-clock nanoseconds minus counter nanoseconds at the last anchor.
    offset_ns: AtomicI64,
    /// Counter nanoseconds at the last anchor.
    anchored_at: AtomicU64,
}

impl AnchoredCounter {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let base_raw = clock.raw();
        let counter = Self {
            clock,
            base_raw,
            offset_ns: AtomicI64::new(0),
            anchored_at: AtomicU64::new(0),
        };
        counter.anchor(counter.counter_ns());
        counter
    }

    fn counter_ns(&self) -> u64 {
        self.clock.delta_as_nanos(self.base_raw, self.clock.raw())
    }

    fn anchor(&self, counter: u64) {
        let wall = PerCoreWalEntry::now_ns();
        let counter_i = i64::try_from(counter).unwrap_or(i64::MAX);
        self.offset_ns
            .store(wall.saturating_sub(counter_i), Ordering::Relaxed);
        self.anchored_at.store(counter, Ordering::Relaxed);
    }

    fn now_ns(&self) -> i64 {
        let counter = self.counter_ns();
        if counter.saturating_sub(self.anchored_at.load(Ordering::Relaxed)) > REANCHOR_NS {
            self.anchor(counter);
        }
        i64::try_from(counter)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ns.load(Ordering::Relaxed))
    }
}

impl WalClock for SystemClock {
    fn now_ns(&self) -> i64 {
        static COUNTER: OnceLock<AnchoredCounter> = OnceLock::new();
        COUNTER.get_or_init(AnchoredCounter::new).now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_follows_the_wall_clock() {
        for _ in 0..3 {
            let before = PerCoreWalEntry::now_ns();
            let ours = SystemClock.now_ns();
            let after = PerCoreWalEntry::now_ns();
            // Within a millisecond of the wall clock read around it.
            assert!(
                ours >= before - 1_000_000 && ours <= after + 1_000_000,
                "{before} {ours} {after}"
            );
            std::thread::sleep(std::time::Duration::from_millis(120));
        }
    }
}
