//! The clock seam: where writers get their timestamps. Tests inject a clock
//! that steps back to prove per-core order survives it.

use std::fmt::Debug;

use super::entry::PerCoreWalEntry;

/// A source of wall-clock time in nanoseconds since the Unix epoch. Writers
/// make the values strictly increasing per core themselves.
pub trait WalClock: Send + Sync + Debug {
    /// The current time in nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WalClock for SystemClock {
    fn now_ns(&self) -> i64 {
        PerCoreWalEntry::now_ns()
    }
}
