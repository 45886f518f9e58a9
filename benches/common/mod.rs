//! Pieces shared by the report benches (`checkpoint_report`,
//! `recovery_report`): statistics, /proc readings, the machine, the
//! deterministic workload.
#![allow(dead_code)] // each bench uses its own subset

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use walhouse::per_core_wal::CoreWalWriter;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// WAL cores; the puts alternate between them.
pub const CORES: usize = 2;
/// Runs of every configuration.
pub const RUNS: usize = 3;
/// In the mixed workload, per 1000 entries: this many overwrite a random
/// earlier key ...
pub const OVERWRITE_PER_MILLE: u64 = 100;
/// ... and this many delete one (the rest put a new key).
pub const DELETE_PER_MILLE: u64 = 20;
// ---------------------------------------------------------------- helpers

#[expect(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^52; the figures are printed rounded"
)]
pub fn float(n: u64) -> f64 {
    n as f64
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median, then the runs, with `decimals` decimals.
pub fn plain(values: &[f64], decimals: usize) -> String {
    let runs: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("{:.decimals$} [{}]", median(values), runs.join(", "))
}

/// The disk's raw fdatasync rate: appends 4 KiB and fdatasyncs in a loop
/// for `measure_for` in `root`; returns syncs/s.
pub fn raw_fdatasync_rate(root: &Path, measure_for: Duration) -> Result<f64> {
    let path = root.join("raw-fdatasync");
    let mut file = File::create(&path)?;
    let block = [0xa5u8; 4096];
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < measure_for {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = float(n) / start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path)?;
    Ok(rate)
}

pub fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        bytes += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(bytes)
}

/// (field value in KiB) of a `/proc/self/status` line such as `VmHWM:`.
pub fn status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("{field} not in /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("no value in {line:?}"))?;
    Ok(kib.parse()?)
}

/// User plus system CPU time of this process, all threads (dead ones
/// included), in clock ticks: fields 14 and 15 of `/proc/self/stat`.
pub fn cpu_ticks() -> Result<u64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').ok_or("no ')' in /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

/// What the report says about the machine.
pub struct Machine {
    /// Output of `nproc`.
    pub nproc: u64,
    /// Clock ticks per second of `/proc/self/stat` (`getconf CLK_TCK`).
    pub clock_ticks: u64,
}

impl Machine {
    pub fn probe() -> Result<Self> {
        let command = |name: &str, arg: Option<&str>| -> Result<u64> {
            let mut cmd = Command::new(name);
            cmd.args(arg);
            let out = cmd.output()?;
            Ok(String::from_utf8(out.stdout)?.trim().parse()?)
        };
        Ok(Self {
            nproc: command("nproc", None)?,
            clock_ticks: command("getconf", Some("CLK_TCK")).unwrap_or(100),
        })
    }
}

// ---------------------------------------------------------------- workload

/// xorshift64 (13, 7, 17): the same sequence for the same seed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Key number `i`: splitmix64's finalizer of `i` (a bijection, so the keys
/// arrive unsorted), then `i`.
pub fn key(i: u64) -> [u8; KEY_LEN] {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&z.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Mostly new keys; [`OVERWRITE_PER_MILLE`] overwrites and
    /// [`DELETE_PER_MILLE`] deletes of random earlier keys.
    Mixed,
    /// Puts of new keys only.
    DistinctPuts,
}

/// Generates entries and keeps the count of live keys, to check the
/// snapshot against.
pub struct Workload {
    pub mix: Mix,
    pub rng: XorShift,
    pub value: [u8; VALUE_LEN],
    pub next_key: u64,
    /// One bit per key number: live or not.
    pub live: Vec<u64>,
    pub live_keys: u64,
    pub puts: u64,
    pub deletes: u64,
}

impl Workload {
    pub fn new(mix: Mix) -> Self {
        Self {
            mix,
            rng: XorShift(0x2545_f491_4f6c_dd1d),
            value: [0; VALUE_LEN],
            next_key: 0,
            live: Vec::new(),
            live_keys: 0,
            puts: 0,
            deletes: 0,
        }
    }

    pub fn set_live(&mut self, k: u64, live: bool) {
        let word = usize::try_from(k / 64).expect("key numbers stay far below usize::MAX");
        if word >= self.live.len() {
            self.live.resize(word + 1, 0);
        }
        let bit = 1u64 << (k % 64);
        let was = self.live[word] & bit != 0;
        if live && !was {
            self.live[word] |= bit;
            self.live_keys += 1;
        } else if !live && was {
            self.live[word] &= !bit;
            self.live_keys -= 1;
        }
    }

    pub fn append(&mut self, writer: &mut CoreWalWriter) -> Result<()> {
        let roll = if self.mix == Mix::Mixed && self.next_key > 0 {
            self.rng.next() % 1000
        } else {
            1000
        };
        if roll < DELETE_PER_MILLE {
            let k = self.rng.next() % self.next_key;
            writer.append_delete(&key(k))?;
            self.set_live(k, false);
            self.deletes += 1;
            return Ok(());
        }
        let k = if roll < DELETE_PER_MILLE + OVERWRITE_PER_MILLE {
            self.rng.next() % self.next_key
        } else {
            self.next_key += 1;
            self.next_key - 1
        };
        self.rng.fill(&mut self.value);
        writer.append_put(&key(k), &self.value)?;
        self.set_live(k, true);
        self.puts += 1;
        Ok(())
    }
}
