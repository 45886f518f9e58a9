//! Keys, values and latencies, shared by every engine.

use std::time::Instant;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// Bytes of one row as the caller hands it over (key + value).
pub const ROW_BYTES: u64 = (KEY_LEN + VALUE_LEN) as u64;

/// Distinct keys made before any clock starts: 8 bytes of a bijective
/// 64-bit mix of the key number (so they arrive unsorted), then the number.
/// Values come from a pool of 64 pseudo-random (incompressible) values.
pub struct Workload {
    keys: Vec<[u8; KEY_LEN]>,
    values: Vec<[u8; VALUE_LEN]>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a bijection on u64.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Workload {
    pub fn new(keys: u64) -> Self {
        let keys = (0..keys)
            .map(|i| {
                let mut k = [0u8; KEY_LEN];
                k[..8].copy_from_slice(&mix(i).to_be_bytes());
                k[8..].copy_from_slice(&i.to_be_bytes());
                k
            })
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let values = (0..64)
            .map(|_| {
                let mut v = [0u8; VALUE_LEN];
                for chunk in v.chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                v
            })
            .collect();
        Self { keys, values }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Key `i` (modulo the pool: past the end, keys are overwritten).
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i % self.keys.len()]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i % self.values.len()]
    }
}

/// Latencies in microseconds.
#[derive(Debug, Default)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    pub fn record(&mut self, since: Instant) {
        self.0
            .push(u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX));
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a Vec far below 2^52"
        )]
        let at = ((self.0.len() - 1) as f64 * q).round() as usize;
        f64::from(self.0[at])
    }
}

/// Megabytes per second of `rows` rows in `secs`.
pub fn mb_per_s(rows: u64, secs: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    let bytes = (rows * ROW_BYTES) as f64;
    bytes / secs / 1e6
}
