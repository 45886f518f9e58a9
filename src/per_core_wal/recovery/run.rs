//! One core's sorted run: the rows replay records for its puts and deletes
//! (positions in the mapped segments, no copies), their key order, and the
//! fold to the latest operation per key. Replay builds runs; the merge
//! reads them.

use bytes::Bytes;

use crate::per_core_wal::error::PerCoreWalError;
use crate::per_core_wal::state_map::{bytes, AT_BITS};

/// A put or delete one core's replay read. `prefix` and `prefix2` (the
/// key's first 16 bytes, see [`head_of`]) order and tell apart most keys
/// without reading them. The key is at `at` ([`AT_BITS`] of offset under
/// the number of the core's segment, its arena); the value follows the key
/// and runs to the end of the record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) prefix: u64,
    pub(super) prefix2: u64,
    /// Strictly increases within a core: it orders one core's operations.
    timestamp_ns: i64,
    at: u64,
    pub(super) key_len: u32,
    /// [`DELETED`] for a delete.
    pub(super) value_len: u32,
}

/// `value_len` of a deleted key (records are shorter than 4 GiB).
pub(super) const DELETED: u32 = u32::MAX;

impl Row {
    pub(super) fn arena(&self) -> usize {
        usize::try_from(self.at >> AT_BITS).expect("arena numbers fit")
    }

    pub(super) fn key_at(&self) -> u64 {
        self.at & ((1 << AT_BITS) - 1)
    }

    pub(super) fn key<'a>(&self, arenas: &'a [Bytes]) -> &'a [u8] {
        bytes(&arenas[self.arena()], self.key_at(), self.key_len)
    }
}

/// A key's first 16 bytes as two big-endian numbers, zero-padded: their
/// order is the keys' byte order wherever they differ.
pub(super) fn head_of(key: &[u8]) -> (u64, u64) {
    let mut bytes = [0_u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    let (a, b) = bytes.split_at(8);
    (
        u64::from_be_bytes(a.try_into().expect("8 bytes")),
        u64::from_be_bytes(b.try_into().expect("8 bytes")),
    )
}

/// The order of two keys from their [`head_of`] and lengths, when these
/// decide it: different heads, or equal heads of keys of at most 16 bytes
/// (then the shorter key is a prefix of the longer). `None`: compare the
/// bytes.
pub(super) fn head_order(a: (u64, u64, u32), b: (u64, u64, u32)) -> Option<std::cmp::Ordering> {
    match (a.0, a.1).cmp(&(b.0, b.1)) {
        std::cmp::Ordering::Equal if a.2 <= 16 && b.2 <= 16 => Some(a.2.cmp(&b.2)),
        std::cmp::Ordering::Equal => None,
        order => Some(order),
    }
}

/// Key order of two rows, each with its arenas.
pub(super) fn row_order(
    a: &Row,
    a_arenas: &[Bytes],
    b: &Row,
    b_arenas: &[Bytes],
) -> std::cmp::Ordering {
    head_order(
        (a.prefix, a.prefix2, a.key_len),
        (b.prefix, b.prefix2, b.key_len),
    )
    .unwrap_or_else(|| a.key(a_arenas).cmp(b.key(b_arenas)))
}

pub(super) fn same_key(a: &Row, a_arenas: &[Bytes], b: &Row, b_arenas: &[Bytes]) -> bool {
    row_order(a, a_arenas, b, b_arenas).is_eq()
}

/// Rows one core's replay holds before it folds them to the latest
/// operation per key (40 bytes each: 320 MiB). A fold that keeps more than
/// half of them doubles the threshold, so distinct keys are sorted at most
/// a few extra times and many overwrites of few keys stay small.
pub(super) const FOLD_ROWS: usize = 8 << 20;

/// One core's replay: its puts and deletes in the order read (folded to the
/// latest per key, in key order, each time there are `fold_at` of them).
#[derive(Debug)]
pub(super) struct CoreOps {
    pub(super) rows: Vec<Row>,
    fold_at: usize,
    /// The core's segments read so far (each whole: mapped, on the real
    /// file system).
    pub(super) arenas: Vec<Bytes>,
    /// (first timestamp, epoch) at each change of epoch.
    epochs: Vec<(i64, u64)>,
}

impl CoreOps {
    pub(super) fn new(fold_at: usize) -> Self {
        Self {
            rows: Vec::new(),
            fold_at,
            arenas: Vec::new(),
            epochs: Vec::new(),
        }
    }

    /// Records a put (`value_len`) or delete ([`DELETED`]) of `key`, which
    /// lies at `key_at` of the newest arena.
    pub(super) fn push(
        &mut self,
        key: &[u8],
        key_at: u64,
        value_len: u32,
        epoch: u64,
        timestamp_ns: i64,
    ) -> Result<(), PerCoreWalError> {
        let failed = |what: &str| PerCoreWalError::RecoveryFailed(what.to_owned());
        let key_len = u32::try_from(key.len()).map_err(|_| failed("a key of 4 GiB or more"))?;
        let arena = self
            .arenas
            .len()
            .checked_sub(1)
            .ok_or_else(|| failed("an operation read before its segment"))?;
        if key_at >> AT_BITS != 0 || (arena as u64) >> (64 - AT_BITS) != 0 {
            return Err(failed(
                "a segment of 1 TiB or more, or more than 16 M segments of one core",
            ));
        }
        if self.epochs.last().is_none_or(|e| e.1 != epoch) {
            self.epochs.push((timestamp_ns, epoch));
        }
        let (prefix, prefix2) = head_of(key);
        self.rows.push(Row {
            prefix,
            prefix2,
            timestamp_ns,
            at: ((arena as u64) << AT_BITS) | key_at,
            key_len,
            value_len,
        });
        if self.rows.len() >= self.fold_at {
            latest_per_key(&mut self.rows, &self.arenas);
            self.fold_at = self.fold_at.max(self.rows.len() * 2);
        }
        Ok(())
    }

    /// The latest operation per key, sorted by key: the rows are sorted by
    /// (key, timestamp) and of each key the last is kept (a core's
    /// operations come in merge order, timestamps strictly increasing).
    pub(super) fn into_run(self, core: u16) -> Run {
        let Self {
            mut rows,
            arenas,
            epochs,
            ..
        } = self;
        latest_per_key(&mut rows, &arenas);
        Run {
            core,
            rows,
            arenas,
            epochs,
        }
    }
}

/// Sorts one core's rows by (key, timestamp) and keeps the last of each key
/// (a core's operations come in merge order, timestamps strictly
/// increasing).
fn latest_per_key(rows: &mut Vec<Row>, arenas: &[Bytes]) {
    rows.sort_unstable_by(|a, b| {
        row_order(a, arenas, b, arenas).then(a.timestamp_ns.cmp(&b.timestamp_ns))
    });
    let mut kept = 0;
    for i in 0..rows.len() {
        let last_of_key = rows
            .get(i + 1)
            .is_none_or(|next| !same_key(&rows[i], arenas, next, arenas));
        if last_of_key {
            rows[kept] = rows[i];
            kept += 1;
        }
    }
    rows.truncate(kept);
}

/// One core's latest operation per key, sorted by key, and the arenas
/// holding their bytes.
#[derive(Debug, Default)]
pub(super) struct Run {
    core: u16,
    pub(super) rows: Vec<Row>,
    pub(super) arenas: Vec<Bytes>,
    /// (first timestamp, epoch) at each change of epoch.
    epochs: Vec<(i64, u64)>,
}

impl Run {
    /// Merge order of a row of this run against one of another core:
    /// (epoch, timestamp, core) decides as [`OrderKey`] does, since within a
    /// core timestamps strictly increase.
    pub(super) fn order(&self, row: &Row) -> (u64, i64, u16) {
        let at = self.epochs.partition_point(|e| e.0 <= row.timestamp_ns);
        let epoch = at.checked_sub(1).map_or(0, |i| self.epochs[i].1);
        (epoch, row.timestamp_ns, self.core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_order_agrees_with_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"abcdefghijklmno",
            b"abcdefghijklmno\0",
            b"abcdefghijklmnop",
            b"abcdefghijklmnop\0",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnoq",
            b"abcdefghijklmnoq\0\0",
            b"b",
        ];
        let arena = [Bytes::from(keys.concat())];
        let mut rows = Vec::new();
        let mut at = 0_u64;
        for k in &keys {
            let len = u32::try_from(k.len()).unwrap();
            let (prefix, prefix2) = head_of(k);
            rows.push(Row {
                prefix,
                prefix2,
                timestamp_ns: 0,
                at,
                key_len: len,
                value_len: DELETED,
            });
            at += u64::from(len);
        }
        for (a, ra) in keys.iter().zip(&rows) {
            for (b, rb) in keys.iter().zip(&rows) {
                assert_eq!(
                    row_order(ra, &arena, rb, &arena),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
                assert_eq!(same_key(ra, &arena, rb, &arena), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
