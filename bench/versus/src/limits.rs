//! What this machine can do at best, measured in the same run as the WALs.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{float, Result};

/// A WAL record of a 16-byte key and a 100-byte value is about this long.
pub const RECORD_BYTES: usize = 137;

/// The CPU and page-cache limits (the disk ones are probed per round).
#[derive(Clone, Copy, Debug)]
pub struct CpuLimits {
    /// `copy_from_slice` of 64 MiB buffers, bytes/s.
    pub memcpy: f64,
    /// crc32c over 137-byte records one by one (as a WAL checksums them), bytes/s.
    pub crc_records: f64,
    /// crc32c over 1 MiB buffers, bytes/s.
    pub crc_large: f64,
    /// `write` of 256 KiB chunks into a fresh file, no sync (the page cache), bytes/s.
    pub page_cache_write: f64,
}

impl CpuLimits {
    /// Best a buffered append can do per byte: checksum every byte once and
    /// copy it into the page cache once (the two costs add up).
    pub fn append_bytes_per_s(&self) -> f64 {
        1.0 / (1.0 / self.crc_records + 1.0 / self.page_cache_write)
    }

    /// Best a read of a WAL in the page cache can do per byte: copy it out
    /// once and checksum it once.
    pub fn read_bytes_per_s(&self) -> f64 {
        1.0 / (1.0 / self.crc_large + 1.0 / self.memcpy)
    }

    pub fn measure(dir: &Path) -> Result<Self> {
        Ok(Self {
            memcpy: memcpy(),
            crc_records: crc_records(),
            crc_large: crc_large(),
            page_cache_write: page_cache_write(dir)?,
        })
    }

    pub fn print(&self) {
        println!(
            "  memcpy                                {:>8.2} GB/s",
            self.memcpy / 1e9
        );
        println!(
            "  crc32c, 137-byte records              {:>8.2} GB/s",
            self.crc_records / 1e9
        );
        println!(
            "  crc32c, 1 MiB buffers                 {:>8.2} GB/s",
            self.crc_large / 1e9
        );
        println!(
            "  write() to the page cache, 256 KiB    {:>8.2} GB/s",
            self.page_cache_write / 1e9
        );
        println!(
            "  => append limit (crc + page cache)    {:>8.2} GB/s = {:.1} M records/s of {RECORD_BYTES} B",
            self.append_bytes_per_s() / 1e9,
            self.append_bytes_per_s() / float(RECORD_BYTES as u64) / 1e6
        );
        println!(
            "  => read limit (memcpy + crc)          {:>8.2} GB/s = {:.1} M records/s of {RECORD_BYTES} B",
            self.read_bytes_per_s() / 1e9,
            self.read_bytes_per_s() / float(RECORD_BYTES as u64) / 1e6
        );
    }
}

/// Repeats `f` (which handles `bytes` bytes) for at least `at_least`; bytes/s.
fn rate(bytes: usize, at_least: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < at_least {
        f();
        n += 1;
    }
    float(n) * float(bytes as u64) / start.elapsed().as_secs_f64()
}

fn memcpy() -> f64 {
    let len = 64 << 20;
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    rate(len, Duration::from_millis(300), || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    })
}

fn crc_records() -> f64 {
    let len = 1 << 20;
    let buf: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let records = len / RECORD_BYTES;
    rate(records * RECORD_BYTES, Duration::from_millis(300), || {
        let mut acc = 0u32;
        for r in buf.chunks_exact(RECORD_BYTES) {
            acc ^= crc32c::crc32c(std::hint::black_box(r));
        }
        std::hint::black_box(acc);
    })
}

fn crc_large() -> f64 {
    let len = 1 << 20;
    let buf: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    rate(len, Duration::from_millis(300), || {
        std::hint::black_box(crc32c::crc32c(std::hint::black_box(&buf)));
    })
}

fn page_cache_write(dir: &Path) -> Result<f64> {
    let chunk = vec![0xa5u8; 256 << 10];
    let total = 256usize << 20;
    let path = dir.join("limit-page-cache");
    let mut best = 0.0f64;
    for _ in 0..3 {
        let mut f = File::create(&path)?;
        let start = Instant::now();
        for _ in 0..total / chunk.len() {
            f.write_all(&chunk)?;
        }
        let r = float(total as u64) / start.elapsed().as_secs_f64();
        best = best.max(r);
        drop(f);
        fs::remove_file(&path)?;
    }
    Ok(best)
}

/// Appends 4 KiB and fdatasyncs, for `for_how_long`; returns fdatasyncs/s.
pub fn fdatasync_rate(dir: &Path, for_how_long: Duration) -> Result<f64> {
    let path = dir.join("limit-fdatasync");
    let mut file = File::create(&path)?;
    let block = [0xa5u8; 4096];
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < for_how_long {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let r = float(n) / start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(&path)?;
    Ok(r)
}

/// Writes 64 MiB in 256 KiB chunks and fdatasyncs once, 2 times; bytes/s
/// (the better run).
pub fn sequential_sync_write(dir: &Path) -> Result<f64> {
    let chunk = vec![0x3cu8; 256 << 10];
    let total = 64usize << 20;
    let path = dir.join("limit-seq-sync");
    let mut best = 0.0f64;
    for _ in 0..2 {
        let mut f = File::create(&path)?;
        let start = Instant::now();
        for _ in 0..total / chunk.len() {
            f.write_all(&chunk)?;
        }
        f.sync_data()?;
        best = best.max(float(total as u64) / start.elapsed().as_secs_f64());
        drop(f);
        fs::remove_file(&path)?;
    }
    Ok(best)
}
