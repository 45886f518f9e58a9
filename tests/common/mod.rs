//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

pub mod simfs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use walhouse::per_core_wal::{
    PerCoreWalConfig, PerCoreWalEntry, PerCoreWalManager, WalClock, WalOperation,
};

/// A clock the test drives: each call returns the current value, then moves
/// it by `step` (which may be negative: a clock stepping back).
#[derive(Debug)]
pub struct StepClock {
    pub now: AtomicI64,
    pub step: AtomicI64,
}

impl StepClock {
    pub fn new(start: i64, step: i64) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(start),
            step: AtomicI64::new(step),
        })
    }
}

impl WalClock for StepClock {
    fn now_ns(&self) -> i64 {
        let step = self.step.load(Ordering::Relaxed);
        self.now.fetch_add(step, Ordering::Relaxed)
    }
}

/// Segment files of a WAL directory, sorted by name.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Segment files of one core, oldest first.
pub fn core_segments(dir: &Path, core: usize) -> Vec<PathBuf> {
    let prefix = format!("wal-{core}-");
    segment_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&prefix)
        })
        .collect()
}

/// The (key, value) of puts and (key) of deletes, in order.
pub fn ops(entries: &[PerCoreWalEntry]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    entries
        .iter()
        .filter_map(|e| match &e.operation {
            WalOperation::Put { key, value } => Some((key.clone(), Some(value.clone()))),
            WalOperation::Delete { key } => Some((key.clone(), None)),
            _ => None,
        })
        .collect()
}

/// A key and a value of a given size for entry `i`.
pub fn kv(i: u64, value_len: usize) -> (Vec<u8>, Vec<u8>) {
    let key = format!("key-{i:08}").into_bytes();
    let value = (0..value_len).map(|j| (i as usize + j) as u8).collect();
    (key, value)
}

/// A manager on `dir` with `cores` cores and small segments.
pub fn small_manager(dir: &Path, cores: usize, segment_bytes: u64) -> PerCoreWalManager {
    PerCoreWalManager::new(PerCoreWalConfig::new(dir, cores).with_segment_bytes(segment_bytes))
        .unwrap()
}

/// Runs `cmd` with `input` on its standard input and waits for it; its
/// standard output and error are captured.
pub fn output_with_input(mut cmd: std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// What a command printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
