//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

pub mod simfs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use walhouse::per_core_wal::{
    PerCoreWalConfig, PerCoreWalEntry, PerCoreWalManager, WalClock, WalOperation,
};
use walhouse::runtime::IngestSettings;

/// Ingest settings for tests: `cores` unpinned cores, and checkpoints only
/// when the test asks for one.
pub fn manual_settings(cores: usize) -> IngestSettings {
    IngestSettings {
        cores,
        pin_threads: false,
        checkpoint_interval_ms: 0,
        checkpoint_wal_bytes: 0,
        ..IngestSettings::default()
    }
}

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

/// What a person should never meet in the CLI's output: Rust `Debug`
/// (`Some(..)`, `None`, `0..=1`, tuple lists `[("kafka-0", 42)]`, durations
/// like `9.107331ms`) and colour codes in a pipe. Returns the text checked.
pub fn assert_for_people(what: &str, out: &std::process::Output) -> String {
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for debug in ["Some(", "None", "..=", "[(", "(\"", "\u{1b}["] {
        assert!(!said.contains(debug), "{what} printed {debug:?}:\n{said}");
    }
    // `Debug` of a Duration: digits, a point, digits, then the unit with
    // no space (`9.107331ms`, `1.5s`).
    let chars: Vec<char> = said.chars().collect();
    for (i, _) in chars.iter().enumerate().filter(|&(_, &c)| c == '.') {
        let digits = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let rest: String = chars[i + 1 + digits..].iter().take(3).collect();
        let unit = ["ms", "µs", "ns", "s"]
            .iter()
            .find(|u| rest.starts_with(*u))
            .map(|u| u.chars().count());
        let after = unit.and_then(|n| rest.chars().nth(n));
        let debug_duration = i > 0
            && chars[i - 1].is_ascii_digit()
            && digits > 0
            && unit.is_some()
            && after.is_none_or(|c| !c.is_alphanumeric());
        assert!(
            !debug_duration,
            "{what} printed a Debug duration near {:?}:\n{said}",
            chars[i.saturating_sub(12)..(i + 1 + digits + 2).min(chars.len())]
                .iter()
                .collect::<String>()
        );
    }
    said
}
