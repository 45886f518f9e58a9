//! One core's sorted run: the rows replay records for its puts and deletes
//! (positions in the mapped segments, no copies), their key order, and the
//! fold to the latest operation per key. Replay builds runs; the merge
//! reads them.

use bytes::Bytes;

use crate::arena::{KeyHead, Pos};
use crate::per_core_wal::error::PerCoreWalError;

/// A put or delete one core's replay read. `head` (the key's first 16
/// bytes) orders and tells apart most keys without reading them. The key
/// is at `pos` (in the core's segment that is its arena); the value
/// follows the key and runs to the end of the record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) head: KeyHead,
    /// Strictly increases within a core: it orders one core's operations.
    timestamp_ns: i64,
    pub(super) pos: Pos,
    pub(super) key_len: u32,
    /// [`DELETED`] for a delete.
    pub(super) value_len: u32,
}

/// `value_len` of a deleted key (records are shorter than 4 GiB).
pub(super) const DELETED: u32 = u32::MAX;

impl Row {
    pub(super) fn key<'a>(&self, arenas: &'a [Bytes]) -> &'a [u8] {
        self.pos.bytes(arenas, self.key_len)
    }
}

/// Key order of two rows, each with its arenas.
pub(super) fn row_order(
    a: &Row,
    a_arenas: &[Bytes],
    b: &Row,
    b_arenas: &[Bytes],
) -> std::cmp::Ordering {
    a.head
        .order(a.key_len, b.head, b.key_len)
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
        let pos = Pos::new(arena, key_at).ok_or_else(|| {
            failed("a segment of 1 TiB or more, or more than 16 M segments of one core")
        })?;
        if self.epochs.last().is_none_or(|e| e.1 != epoch) {
            self.epochs.push((timestamp_ns, epoch));
        }
        self.rows.push(Row {
            head: KeyHead::of(key),
            timestamp_ns,
            pos,
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
    fn rows_order_and_match_keys_as_their_bytes_do() {
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
            rows.push(Row {
                head: KeyHead::of(k),
                timestamp_ns: 0,
                pos: Pos::new(0, at).unwrap(),
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
