//! Merging the cores' sorted runs onto the base state (a checkpoint's, or
//! empty): the last step of WAL recovery, which picks per key the newest
//! operation, checks the log's coverage and yields the [`StateMap`].

use std::collections::HashMap;

use bytes::Bytes;

use super::run::{row_order, same_key, Row, Run, DELETED};
use super::{PerCoreRecoveredState, WalReplay};
use crate::arena::KeyHead;
use crate::per_core_wal::entry::OrderKey;
use crate::per_core_wal::error::PerCoreWalError;
use crate::per_core_wal::state_map::{Slot, StateMap};

impl WalReplay {
    /// Merges the replay onto `base` (every WAL entry is newer than it).
    pub(crate) fn onto(
        self,
        mut base: PerCoreRecoveredState,
    ) -> Result<PerCoreRecoveredState, PerCoreWalError> {
        let Self {
            base_dir,
            cores,
            covered,
            mut repaired,
            done,
        } = self;
        let base_state = std::mem::take(&mut base.state);
        let mut out = PerCoreRecoveredState {
            wal_positions: repaired.iter().map(|r| r.valid_end).collect(),
            truncated_bytes: repaired.iter().map(|r| r.truncated).collect(),
            next_sequences: repaired.iter().map(|r| r.next_sequence).collect(),
            final_epoch: repaired
                .iter()
                .map(|r| r.epoch)
                .max()
                .unwrap_or(0)
                .max(base.final_epoch),
            repairs: repaired
                .iter_mut()
                .flat_map(|r| std::mem::take(&mut r.repairs))
                .collect(),
            ..base
        };
        let mut first_seen: Vec<Option<u64>> = vec![None; cores];
        let mut offsets: HashMap<String, (OrderKey, u64)> = HashMap::new();
        let mut watermark: Option<(OrderKey, i64)> = None;
        let mut runs = Vec::with_capacity(done.len());
        for p in done {
            out.entries_replayed += p.replayed;
            out.entries_skipped += p.skipped;
            out.records_replayed += p.records_replayed;
            out.records_skipped += p.records_skipped;
            out.final_epoch = out.final_epoch.max(p.max_epoch);
            for (core, first) in p.first_seen {
                first_seen[core] = first;
            }
            for (source, (order, offset)) in p.offsets {
                match offsets.get(&source) {
                    Some((o, _)) if *o > order => {}
                    _ => {
                        offsets.insert(source, (order, offset));
                    }
                }
            }
            if let Some((order, w)) = p.watermark {
                if watermark.is_none_or(|(o, _)| o < order) {
                    watermark = Some((order, w));
                }
            }
            runs.extend(p.runs);
        }
        for (source, (_, offset)) in offsets {
            out.source_offsets.insert(source, offset);
        }
        if let Some((_, w)) = watermark {
            out.watermark = Some(w);
        }
        for (core, first) in first_seen.into_iter().enumerate() {
            let Some(last_covered) = covered.get(core).copied().flatten() else {
                continue;
            };
            let first = first.unwrap_or(out.next_sequences[core]);
            if first > last_covered + 1 {
                return Err(PerCoreWalError::SequenceGap {
                    path: base_dir.clone(),
                    core_id: core,
                    expected: last_covered + 1,
                    actual: first,
                });
            }
        }
        out.state = merge_runs(base_state, runs);
        Ok(out)
    }
}

/// Merges the base state (a checkpoint's, older than every WAL entry) with
/// the cores' sorted runs: per key the operation with the greatest merge
/// position wins, and deleted keys are dropped.
///
/// The key space is cut into ranges at quantiles of the largest source
/// (the base or a run), and
/// the ranges are merged on `available_parallelism` threads. A merge only
/// picks slots (offsets into the base's and the runs' arenas): no key or
/// value is copied, and the arenas become the result's. Then a WAL segment
/// whose live bytes are under half of it is copied down to them
/// ([`compact`]), so overwrites do not keep whole segments alive.
fn merge_runs(base: StateMap, runs: Vec<Run>) -> StateMap {
    const MIN_ROWS_PER_RANGE: usize = 1 << 16;
    let total = runs.iter().map(|r| r.rows.len()).sum::<usize>() + base.len();
    let ranges = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(total / MIN_ROWS_PER_RANGE)
        .max(1);
    merge_runs_in(base, runs, ranges)
}

/// One run's rows of a key range, the run, and the number in the result of
/// its first arena.
type RunPiece<'a> = (&'a [Row], &'a Run, usize);

/// [`merge_runs`] over at most `ranges` key ranges (one thread each).
fn merge_runs_in(base: StateMap, runs: Vec<Run>, ranges: usize) -> StateMap {
    let (mut arenas, base_slots) = base.into_parts();
    let first_run_arena = arenas.len();
    let mut run_arena = Vec::with_capacity(runs.len());
    let mut next = first_run_arena;
    for run in &runs {
        run_arena.push(next);
        next += run.arenas.len();
    }
    // Split keys: quantiles of the largest source (the base or a run),
    // strictly increasing. `ranges` may come from the total of all sources,
    // so every run can be empty (a WAL tail of barriers and commits only,
    // right after a checkpoint) while the base is large: an empty source
    // gives no split key, never an index.
    let largest_run = runs.iter().max_by_key(|r| r.rows.len());
    let run_rows = largest_run.map_or(0, |r| r.rows.len());
    let quantiles: Vec<&[u8]> = match largest_run {
        Some(run) if run_rows >= base_slots.len() => {
            quantile_keys(run_rows, ranges, |i| run.rows[i].key(&run.arenas))
        }
        _ => quantile_keys(base_slots.len(), ranges, |i| base_slots[i].key(&arenas)),
    };
    let mut splits: Vec<&[u8]> = Vec::new();
    for key in quantiles {
        if splits.last().is_none_or(|last| *last < key) {
            splits.push(key);
        }
    }
    // Range r holds the keys in [splits[r - 1], splits[r]).
    let base_cuts = cut(&splits, base_slots.len(), |i| base_slots[i].key(&arenas));
    let run_cuts: Vec<Vec<std::ops::Range<usize>>> = runs
        .iter()
        .map(|run| cut(&splits, run.rows.len(), |i| run.rows[i].key(&run.arenas)))
        .collect();
    let jobs: Vec<(&[Slot], Vec<RunPiece<'_>>)> = (0..=splits.len())
        .map(|r| {
            let pieces = runs
                .iter()
                .zip(&run_cuts)
                .zip(&run_arena)
                .map(|((run, cuts), &first)| (&run.rows[cuts[r].clone()], run, first))
                .collect();
            (&base_slots[base_cuts[r].clone()], pieces)
        })
        .collect();
    let merged: Vec<Vec<Slot>> = if jobs.len() == 1 {
        jobs.into_iter()
            .map(|(b, p): (&[Slot], Vec<RunPiece<'_>>)| merge_range(&arenas, b, &p))
            .collect()
    } else {
        let arenas = &arenas;
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(b, p): (&[Slot], Vec<RunPiece<'_>>)| {
                    scope.spawn(move || merge_range(arenas, b, &p))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let total: usize = merged.iter().map(Vec::len).sum();
    let mut merged = merged.into_iter();
    let mut slots = merged.next().unwrap_or_default();
    slots.reserve_exact(total - slots.len());
    for piece in merged {
        slots.extend_from_slice(&piece);
    }
    drop(base_slots);
    for run in runs {
        drop(run.rows);
        arenas.extend(run.arenas);
    }
    compact(&mut arenas, &mut slots, first_run_arena);
    StateMap::from_parts(arenas, slots)
}

/// The keys at the `ranges - 1` inner quantiles of `len` sorted keys (none
/// for an empty source: nothing is indexed).
fn quantile_keys<'a>(
    len: usize,
    ranges: usize,
    key_at: impl Fn(usize) -> &'a [u8],
) -> Vec<&'a [u8]> {
    if len == 0 {
        return Vec::new();
    }
    // i < ranges, so i * len / ranges < len.
    (1..ranges).map(|i| key_at(i * len / ranges)).collect()
}

/// Copies the live keys and values of every arena from `from` on (WAL
/// segments) whose live bytes are under half of it into one new arena, and
/// drops those arenas: a segment of mostly overwritten or deleted keys does
/// not stay in memory for a few live ones.
fn compact(arenas: &mut Vec<Bytes>, slots: &mut [Slot], from: usize) {
    let mut live = vec![0_u64; arenas.len()];
    for s in slots.iter() {
        live[s.arena()] += u64::from(s.key_len) + u64::from(s.value_len);
    }
    let sparse: Vec<bool> = arenas
        .iter()
        .zip(&live)
        .enumerate()
        .map(|(i, (arena, &live))| i >= from && !arena.is_empty() && live * 2 < arena.len() as u64)
        .collect();
    if !sparse.contains(&true) {
        return;
    }
    let size: u64 = live
        .iter()
        .zip(&sparse)
        .filter(|(_, &s)| s)
        .map(|(l, _)| l)
        .sum();
    let mut arena = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let id = arenas.len();
    for s in slots.iter_mut().filter(|s| sparse[s.arena()]) {
        let key_at = arena.len() as u64;
        arena.extend_from_slice(s.key(arenas));
        arena.extend_from_slice(s.value(arenas));
        *s = Slot::new(id, key_at, s.key_len, s.value_len);
    }
    for (a, sparse) in arenas.iter_mut().zip(sparse) {
        if sparse {
            *a = Bytes::new();
        }
    }
    arenas.push(Bytes::from(arena));
}

/// The ranges of `0..len` holding the keys in `[splits[r - 1], splits[r])`,
/// for keys sorted by `key_at`.
fn cut<'a>(
    splits: &[&[u8]],
    len: usize,
    key_at: impl Fn(usize) -> &'a [u8],
) -> Vec<std::ops::Range<usize>> {
    let mut bounds = vec![0];
    let mut from = 0;
    for split in splits {
        let (mut lo, mut hi) = (from, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key_at(mid) < *split {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        bounds.push(lo);
        from = lo;
    }
    bounds.push(len);
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Merges one key range: `base` (slots into `base_arenas`, older than every
/// row) and the cores' sorted rows in that range.
fn merge_range(base_arenas: &[Bytes], base: &[Slot], runs: &[RunPiece<'_>]) -> Vec<Slot> {
    let capacity = runs.iter().map(|r| r.0.len()).max().unwrap_or(0) + base.len();
    let mut merged: Vec<Slot> = Vec::with_capacity(capacity);
    let mut at = vec![0_usize; runs.len()];
    let mut b = 0;
    loop {
        // The run whose head has the smallest key.
        let mut smallest: Option<usize> = None;
        for (i, &(rows, run, _)) in runs.iter().enumerate() {
            let Some(head) = rows.get(at[i]) else {
                continue;
            };
            let better = smallest.is_none_or(|s| {
                let (srows, srun, _) = runs[s];
                row_order(head, &run.arenas, &srows[at[s]], &srun.arenas).is_lt()
            });
            if better {
                smallest = Some(i);
            }
        }
        let Some(s) = smallest else {
            merged.extend_from_slice(&base[b..]);
            break;
        };
        let mut winner = (runs[s].0[at[s]], s);
        at[s] += 1;
        for (i, &(rows, run, _)) in runs.iter().enumerate() {
            if let Some(head) = rows.get(at[i]) {
                let wrun = runs[winner.1].1;
                if same_key(head, &run.arenas, &winner.0, &wrun.arenas) {
                    if run.order(head) > wrun.order(&winner.0) {
                        winner = (*head, i);
                    }
                    at[i] += 1;
                }
            }
        }
        let (row, (_, run, first)) = (winner.0, runs[winner.1]);
        // Base keys before the winner's come first; an equal one is replaced.
        // The base's keys are read in order; the winner's bytes (at a random
        // place of a segment) only when the first 16 bytes do not decide.
        while let Some(slot) = base.get(b) {
            let base_key = slot.key(base_arenas);
            let order = KeyHead::of(base_key)
                .order(slot.key_len, row.head, row.key_len)
                .unwrap_or_else(|| base_key.cmp(row.key(&run.arenas)));
            match order {
                std::cmp::Ordering::Less => {
                    merged.push(*slot);
                    b += 1;
                }
                std::cmp::Ordering::Equal => {
                    b += 1;
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        if row.value_len != DELETED {
            merged.push(Slot::new(
                first + row.pos.arena(),
                row.pos.at(),
                row.key_len,
                row.value_len,
            ));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::per_core_wal::recovery::run::{CoreOps, FOLD_ROWS};

    /// (key, value or `None` for a delete, epoch, timestamp).
    type TestOp = (Vec<u8>, Option<Vec<u8>>, u64, i64);

    /// A core's run from its operations in order, all in one arena.
    fn run_of(core: u16, ops: &[TestOp], fold_at: usize) -> Run {
        let mut arena = Vec::new();
        let mut at = Vec::new();
        for (k, v, _, _) in ops {
            at.push(arena.len() as u64);
            arena.extend_from_slice(k);
            arena.extend_from_slice(v.as_deref().unwrap_or_default());
        }
        let mut c = CoreOps::new(fold_at);
        c.arenas.push(Bytes::from(arena));
        for ((k, v, epoch, ts), at) in ops.iter().zip(at) {
            let len = v
                .as_ref()
                .map_or(DELETED, |v| u32::try_from(v.len()).unwrap());
            c.push(k, at, len, *epoch, *ts).unwrap();
        }
        c.into_run(core)
    }

    #[test]
    fn merging_in_key_ranges_equals_merging_in_one_and_the_model() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut tried = 0;
        let mut compacted = 0;
        for (ranges, keys) in [(2_usize, 1000_u64), (3, 1000), (4, 40), (7, 1000)] {
            // Keys that share their first 8 bytes and keys that do not.
            let key = |next: &mut dyn FnMut() -> u64| {
                let n = next() % keys;
                if n.is_multiple_of(2) {
                    format!("k{n:04}").into_bytes()
                } else {
                    format!("customer:{n:06}").into_bytes()
                }
            };
            let mut base = BTreeMap::new();
            for _ in 0..300 {
                base.insert(key(&mut next), b"base".to_vec());
            }
            let mut all = Vec::new();
            let mut runs = Vec::new();
            for core in 0..3_u16 {
                let mut ops = Vec::new();
                let (mut epoch, mut ts) = (0, 0);
                for s in 0..400_u64 {
                    let k = key(&mut next);
                    let v =
                        (!next().is_multiple_of(5)).then(|| format!("v{core}.{s}").into_bytes());
                    epoch += u64::from(next().is_multiple_of(50));
                    ts += 1 + i64::try_from(next() % 3).unwrap();
                    all.push(((epoch, ts, core), k.clone(), v.clone()));
                    ops.push((k, v, epoch, ts));
                }
                runs.push(ops);
            }
            all.sort_by_key(|a| a.0);
            let mut model = base.clone();
            for (_, k, v) in all {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let make = |fold_at| {
                let runs: Vec<Run> = runs
                    .iter()
                    .enumerate()
                    .map(|(core, ops)| run_of(u16::try_from(core).unwrap(), ops, fold_at))
                    .collect();
                (StateMap::from(base.clone()), runs)
            };
            let (base1, runs1) = make(FOLD_ROWS);
            let (base2, runs2) = make(FOLD_ROWS);
            // Folded every 16 rows (doubling while folds keep over half).
            let (base3, runs3) = make(16);
            if keys == 40 {
                // 400 operations on 40 keys never held more than 2 x 40 + 16.
                for run in &runs3 {
                    assert!(run.rows.capacity() <= 128, "{}", run.rows.capacity());
                }
            }
            let one = merge_runs_in(base1, runs1, 1);
            let split = merge_runs_in(base2, runs2, ranges);
            let folded = merge_runs_in(base3, runs3, ranges);
            assert!(!one.is_empty());
            assert_eq!(one, model, "one range, {keys} keys");
            assert_eq!(split, model, "{ranges} ranges, {keys} keys");
            assert_eq!(folded, model, "folded, {ranges} ranges, {keys} keys");
            // 40 keys overwritten 1200 times: the runs' arenas are sparse.
            let (arenas, _) = split.into_parts();
            compacted += usize::from(arenas.iter().filter(|a| a.is_empty()).count() == 3);
            tried += 1;
        }
        assert_eq!(compacted, 1, "only the 40-key case leaves sparse arenas");
        println!(
            "{tried} range counts merged equal to one range and to the model; \
             {compacted} case compacted its sparse arenas"
        );
    }

    /// Every run can be empty (a WAL tail of barriers only, right after a
    /// checkpoint) while `ranges` comes from the base's size: the split keys
    /// must then come from the base, never from index 0 of an empty run.
    #[test]
    fn empty_runs_over_a_big_base_split_on_the_base() {
        let base: BTreeMap<Vec<u8>, Vec<u8>> = (0..5000_u32)
            .map(|i| (format!("k{i:05}").into_bytes(), b"base".to_vec()))
            .collect();
        let mut merged = 0;
        for ranges in [1_usize, 2, 3, 8] {
            let empty = vec![run_of(0, &[], FOLD_ROWS), run_of(1, &[], FOLD_ROWS)];
            let got = merge_runs_in(StateMap::from(base.clone()), empty, ranges);
            assert_eq!(got, base, "{ranges} ranges, empty runs");
            // A run smaller than the base: the base still gives the splits.
            let small = vec![
                run_of(
                    0,
                    &[
                        (b"k00007".to_vec(), None, 0, 1),
                        (b"k02500".to_vec(), Some(b"new".to_vec()), 0, 2),
                        (b"zzz".to_vec(), Some(b"last".to_vec()), 0, 3),
                    ],
                    FOLD_ROWS,
                ),
                run_of(1, &[], FOLD_ROWS),
            ];
            let mut model = base.clone();
            model.remove(&b"k00007"[..]);
            model.insert(b"k02500".to_vec(), b"new".to_vec());
            model.insert(b"zzz".to_vec(), b"last".to_vec());
            let got = merge_runs_in(StateMap::from(base.clone()), small, ranges);
            assert_eq!(got, model, "{ranges} ranges, a small run");
            // Nothing at all.
            let none = merge_runs_in(StateMap::default(), vec![run_of(0, &[], FOLD_ROWS)], ranges);
            assert!(none.is_empty());
            merged += 3;
        }
        println!("{merged} merges of empty or small runs over a 5000-key base in 1 to 8 ranges");
    }
}
