//! The two WALs behind one small trait, so every workload is one piece of
//! code run on both.
//!
//! walhouse: `walhouse::per_core_wal`, default `PerCoreWalConfig` (64 MiB
//! segments, 256 KiB write buffer). Each thread owns the writer taken from the
//! manager with `take_writer`.
//!
//! seed: `laminar_storage::per_core_wal` 0.18.12. Its manager cannot hand a
//! writer to another thread, so each thread opens `CoreWalWriter::new(core,
//! path)` on the path the manager would use (`PerCoreWalConfig::segment_path`);
//! those are the same files `PerCoreWalManager::new` creates, with its 64 KiB
//! `BufWriter`.

use std::any::Any;
use std::fs;
use std::path::Path;

use laminar_storage::per_core_wal as seed;
use walhouse::per_core_wal as wh;

use crate::common::Result;

/// Which WAL a measurement runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Walhouse,
    Seed,
}

impl Engine {
    /// Measured in this order in every round (A then B).
    pub const BOTH: [Engine; 2] = [Engine::Walhouse, Engine::Seed];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Walhouse => "walhouse",
            Engine::Seed => "seed",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "walhouse" => Ok(Engine::Walhouse),
            "seed" => Ok(Engine::Seed),
            other => Err(format!("unknown engine {other:?} (walhouse or seed)").into()),
        }
    }
}

/// One core's writer, whichever the WAL.
pub trait Wal: Send + 'static {
    /// Opens a fresh WAL of `cores` cores in `dir` (which must not exist):
    /// one writer per core, and whatever must outlive the writers.
    fn open(dir: &Path, cores: usize) -> Result<(Box<dyn Any>, Vec<Self>)>
    where
        Self: Sized;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
}

impl Wal for wh::CoreWalWriter {
    fn open(dir: &Path, cores: usize) -> Result<(Box<dyn Any>, Vec<Self>)> {
        let mut manager = wh::PerCoreWalManager::new(wh::PerCoreWalConfig::new(dir, cores))?;
        let writers = (0..cores)
            .map(|c| manager.take_writer(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((Box::new(manager), writers))
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.append_put(key, value)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        wh::CoreWalWriter::sync(self)?;
        Ok(())
    }
}

impl Wal for seed::CoreWalWriter {
    fn open(dir: &Path, cores: usize) -> Result<(Box<dyn Any>, Vec<Self>)> {
        fs::create_dir_all(dir)?;
        let config = seed::PerCoreWalConfig::new(dir, cores);
        let writers = (0..cores)
            .map(|c| seed::CoreWalWriter::new(c, &config.segment_path(c)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((Box::new(()), writers))
    }

    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.append_put(key, value)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        seed::CoreWalWriter::sync(self)?;
        Ok(())
    }
}

/// Calls `$body` with `W` bound to the engine's writer type.
#[macro_export]
macro_rules! with_wal {
    ($engine:expr, $f:ident ( $($arg:expr),* )) => {
        match $engine {
            $crate::engines::Engine::Walhouse => {
                $f::<walhouse::per_core_wal::CoreWalWriter>($($arg),*)
            }
            $crate::engines::Engine::Seed => {
                $f::<laminar_storage::per_core_wal::CoreWalWriter>($($arg),*)
            }
        }
    };
}

// ---------------------------------------------------------------- children

/// What a child process measured, printed on one line for the parent.
pub struct ChildRun {
    pub entries: u64,
    pub seconds: f64,
    /// `VmRSS` right before the measured call.
    pub rss_before_kib: u64,
    /// `VmHWM` after the call (the peak was reset right before it).
    pub hwm_kib: u64,
    /// Live keys (walhouse recovery), state changes (seed recovery) or
    /// payload bytes (merge): checked by the parent.
    pub check: u64,
}

impl ChildRun {
    pub fn print(&self) {
        println!(
            "{} {} {} {} {}",
            self.entries, self.seconds, self.rss_before_kib, self.hwm_kib, self.check
        );
    }

    pub fn parse(text: &str) -> Result<Self> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [entries, seconds, before, hwm, check] = f.as_slice() else {
            return Err(format!("unexpected child output {text:?}").into());
        };
        Ok(Self {
            entries: entries.parse()?,
            seconds: seconds.parse()?,
            rss_before_kib: before.parse()?,
            hwm_kib: hwm.parse()?,
            check: check.parse()?,
        })
    }
}

/// Resets the peak RSS to the current RSS; returns the RSS before.
fn reset_peak() -> Result<u64> {
    let before = crate::common::status_kib("VmRSS:")?;
    fs::write("/proc/self/clear_refs", "5")?;
    Ok(before)
}

fn finish(entries: u64, start: std::time::Instant, before: u64, check: u64) -> Result<ChildRun> {
    let seconds = start.elapsed().as_secs_f64();
    let hwm_kib = crate::common::status_kib("VmHWM:")?;
    Ok(ChildRun {
        entries,
        seconds,
        rss_before_kib: before,
        hwm_kib,
        check,
    })
}

/// `child merge ENGINE DIR`: merges a 2-core WAL in (epoch, timestamp,
/// core, sequence) order and touches every key and value.
///
/// walhouse: `merge_stream` + `next_ref` (its streaming merge).
/// walhouse-vec: `merge_segments` (its `Vec` API, kept for the seed's callers).
/// seed: `merge_segments` (its only merge: a sorted `Vec`).
pub fn merge_child(mode: &str, dir: &Path, cores: usize) -> Result<ChildRun> {
    let mut payload = 0u64;
    match mode {
        "walhouse" => {
            let manager = wh::PerCoreWalManager::open(wh::PerCoreWalConfig::new(dir, cores))?;
            let before = reset_peak()?;
            let start = std::time::Instant::now();
            let mut stream = manager.merge_stream()?;
            let mut n = 0u64;
            while let Some(entry) = stream.next_ref() {
                if let wh::OpRef::Put { key, value } = entry?.operation {
                    payload += (key.len() + value.len()) as u64;
                }
                n += 1;
            }
            finish(n, start, before, payload)
        }
        "walhouse-vec" => {
            let manager = wh::PerCoreWalManager::open(wh::PerCoreWalConfig::new(dir, cores))?;
            let before = reset_peak()?;
            let start = std::time::Instant::now();
            let merged = manager.merge_segments()?;
            for e in &merged {
                if let wh::WalOperation::Put { key, value } = &e.operation {
                    payload += (key.len() + value.len()) as u64;
                }
            }
            let run = finish(merged.len() as u64, start, before, payload);
            std::hint::black_box(merged);
            run
        }
        "seed" => {
            // `new` opens the existing files for append without reading them
            // (`open` would scan every record first); the merge reads them.
            let manager = seed::PerCoreWalManager::new(seed::PerCoreWalConfig::new(dir, cores))?;
            let before = reset_peak()?;
            let start = std::time::Instant::now();
            let merged = manager.merge_segments()?;
            for e in &merged {
                if let seed::WalOperation::Put { key, value } = &e.operation {
                    payload += (key.len() + value.len()) as u64;
                }
            }
            let run = finish(merged.len() as u64, start, before, payload);
            std::hint::black_box(merged);
            run
        }
        other => Err(format!("unknown merge mode {other:?}").into()),
    }
}

/// `child recover ENGINE DIR`: recovery of a 2-core WAL, no checkpoint.
///
/// walhouse: `PerCoreRecoveryManager::new(config).recover()`: repairs torn
/// tails, replays every entry in merge order into the final state (a
/// `BTreeMap` of live keys). `check` = live keys.
///
/// seed: `PerCoreRecoveryManager::new(config, RecoveryConfig)::recover()`
/// with an empty checkpoint directory and a `wal_path` that does not exist:
/// reads every segment into a `Vec`, sorts it, and copies every put into
/// `state_changes` (a list of changes, not a folded state). `check` = state
/// changes. (The seed's `recover_per_core` would also open `wal-0.log` as its
/// single-file WAL and replay it a second time; this avoids that.)
pub fn recover_child(mode: &str, dir: &Path, scratch: &Path, cores: usize) -> Result<ChildRun> {
    match mode {
        "walhouse" => {
            let manager = wh::PerCoreRecoveryManager::new(wh::PerCoreWalConfig::new(dir, cores));
            let before = reset_peak()?;
            let start = std::time::Instant::now();
            let state = manager.recover()?;
            let run = finish(
                state.entries_replayed as u64,
                start,
                before,
                state.state.len() as u64,
            );
            std::hint::black_box(state);
            run
        }
        "seed" => {
            fs::create_dir_all(scratch)?;
            let recovery = laminar_storage::incremental::RecoveryConfig::new(
                scratch,
                &scratch.join("no-such-wal.log"),
            );
            let manager = seed::PerCoreRecoveryManager::new(
                seed::PerCoreWalConfig::new(dir, cores),
                recovery,
            );
            let before = reset_peak()?;
            let start = std::time::Instant::now();
            let state = manager.recover()?;
            let run = finish(
                state.entries_replayed as u64,
                start,
                before,
                state.state_changes.len() as u64,
            );
            std::hint::black_box(state);
            run
        }
        other => Err(format!("unknown recovery mode {other:?}").into()),
    }
}
