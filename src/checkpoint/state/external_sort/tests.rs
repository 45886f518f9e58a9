//! Unit tests of the external sort through the sorter's face: a model of
//! the newest operation per key against in-memory sorts, spills, merge
//! passes and failures.

use std::collections::BTreeMap;

use super::*;

/// An owned operation, for the tests' inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    order: u64,
    epoch: i64,
}

impl Op {
    fn put(key: &[u8], value: &[u8], order: u64, epoch: i64) -> Self {
        Self {
            key: key.to_vec(),
            value: Some(value.to_vec()),
            order,
            epoch,
        }
    }

    fn delete(key: &[u8], order: u64, epoch: i64) -> Self {
        Self {
            key: key.to_vec(),
            value: None,
            order,
            epoch,
        }
    }

    fn key(&self) -> &[u8] {
        &self.key
    }

    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    fn epoch(&self) -> i64 {
        self.epoch
    }
}

impl ExternalSorter {
    fn push_op(&mut self, op: &Op) -> Result<(), CheckpointError> {
        match op.value() {
            Some(v) => self.push_put(op.key(), v, op.order, op.epoch),
            None => self.push_delete(op.key(), op.order, op.epoch),
        }
    }
}

impl SortedOps {
    /// The current operation, owned, then advance.
    fn next_op(&mut self) -> Result<Option<Op>, CheckpointError> {
        let Some(view) = self.current() else {
            return Ok(None);
        };
        let op = Op {
            key: view.key.to_vec(),
            value: view.value.map(<[u8]>::to_vec),
            order: view.order,
            epoch: view.epoch,
        };
        self.advance()?;
        Ok(Some(op))
    }
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The newest op per key, as (key, Some((value, epoch)) or None).
type Model = BTreeMap<Vec<u8>, Option<(Vec<u8>, i64)>>;

fn model_of(ops: &[Op]) -> Model {
    let mut model = Model::new();
    for op in ops {
        model.insert(
            op.key().to_vec(),
            op.value().map(|v| (v.to_vec(), op.epoch())),
        );
    }
    model
}

fn sort_all(config: SortConfig, ops: &[Op]) -> (Vec<Op>, SortStats) {
    let mut sorter = ExternalSorter::new(config);
    for op in ops {
        sorter.push_op(op).unwrap();
    }
    let mut newest = sorter.finish().unwrap();
    let mut out = Vec::new();
    while let Some(op) = newest.next_op().unwrap() {
        out.push(op);
    }
    (out, newest.stats())
}

fn assert_matches_model(out: &[Op], ops: &[Op]) {
    let model = model_of(ops);
    assert_eq!(out.len(), model.len(), "one operation per key");
    for pair in out.windows(2) {
        assert!(pair[0].key() < pair[1].key(), "strictly sorted by key");
    }
    for (op, (key, expected)) in out.iter().zip(&model) {
        assert_eq!(op.key(), key.as_slice());
        assert_eq!(op.value().map(|v| (v.to_vec(), op.epoch())), *expected);
    }
}

fn random_ops(rng: &mut Rng, n: u64, key_space: u64) -> Vec<Op> {
    (1..=n)
        .map(|order| {
            let key = format!("key-{:06}", rng.below(key_space)).into_bytes();
            let epoch = i64::try_from(order / 100).unwrap();
            if rng.below(4) == 0 {
                Op::delete(&key, order, epoch)
            } else {
                let len = usize::try_from(rng.below(40)).unwrap();
                let value = vec![u8::try_from(order % 251).unwrap(); len];
                Op::put(&key, &value, order, epoch)
            }
        })
        .collect()
}

#[test]
fn config_splits_the_budget() {
    let c = SortConfig::for_budget(64 << 10);
    assert_eq!((c.io_buffer_bytes, c.fan_in), (4 << 10, 15));
    let c = SortConfig::for_budget(64 << 20);
    assert_eq!((c.io_buffer_bytes, c.fan_in), (64 << 10, 64));
    let c = SortConfig::for_budget(4 << 10);
    assert_eq!((c.io_buffer_bytes, c.fan_in), (1 << 10, 3));
    let c = SortConfig::for_budget(0);
    assert_eq!(c.fan_in, 2);
    assert_eq!(c.buffer_limit(), 0);
}

#[test]
fn empty_input_gives_nothing() {
    let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &[]);
    assert!(out.is_empty());
    assert_eq!(stats, SortStats::default());
}

#[test]
fn in_memory_overwrites_and_deletes() {
    let ops = vec![
        Op::put(b"b", b"1", 1, 0),
        Op::put(b"a", b"1", 2, 0),
        Op::put(b"b", b"2", 3, 1),
        Op::delete(b"a", 4, 1),
        Op::delete(b"c", 5, 1),
        Op::put(b"c", b"3", 6, 2),
        Op::put(b"", b"empty key", 7, 2),
        Op::put(b"d", b"", 8, 3),
    ];
    let (out, stats) = sort_all(SortConfig::for_budget(1 << 20), &ops);
    assert_eq!(stats.runs_spilled, 0);
    assert_matches_model(&out, &ops);
    let keys: Vec<&[u8]> = out.iter().map(Op::key).collect();
    assert_eq!(keys, [&b""[..], b"a", b"b", b"c", b"d"]);
    assert_eq!(out[1].value(), None, "a is deleted");
    assert_eq!((out[2].value(), out[2].epoch()), (Some(&b"2"[..]), 1));
}

#[test]
fn tiny_budget_many_runs_random_ops() {
    let mut rng = Rng(7);
    let ops = random_ops(&mut rng, 20_000, 3_000);
    let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &ops);
    println!("tiny budget: {stats:?}");
    assert!(stats.runs_spilled > 100, "{stats:?}");
    assert!(stats.merge_passes > 1, "{stats:?}");
    assert!(stats.max_buffered_bytes <= 4 << 10, "{stats:?}");
    assert_matches_model(&out, &ops);
}

#[test]
fn last_buffer_is_merged_from_memory_with_the_runs() {
    // A few spills (fewer runs than the fan-in), then a partly filled
    // buffer whose operations overwrite and delete keys of the runs.
    let mut rng = Rng(11);
    let ops = random_ops(&mut rng, 2_500, 800);
    let mut sorter = ExternalSorter::new(SortConfig::for_budget(64 << 10));
    for op in &ops {
        sorter.push_op(op).unwrap();
        assert!(sorter.accounted() <= 64 << 10);
    }
    let spills = sorter.next_run;
    assert!(
        !sorter.entries.is_empty(),
        "the last buffer holds operations"
    );
    let mut newest = sorter.finish().unwrap();
    let mut out = Vec::new();
    while let Some(op) = newest.next_op().unwrap() {
        out.push(op);
    }
    let stats = newest.stats();
    println!("last buffer from memory: {spills} spills, {stats:?}");
    assert!((2..=8).contains(&spills), "{stats:?}");
    assert_eq!(
        stats.runs_spilled, spills,
        "the last buffer was not written"
    );
    assert_eq!(stats.merge_passes, 0);
    assert_matches_model(&out, &ops);
}

#[test]
fn a_failed_background_spill_is_an_error_naming_the_run() {
    // The run directory vanishes after the first spill: the next run
    // cannot be created by its background thread, and the sort says so.
    let mut rng = Rng(5);
    let ops = random_ops(&mut rng, 4_000, 4_000);
    let mut sorter = ExternalSorter::new(SortConfig::for_budget(64 << 10));
    let mut pushed = 0;
    while sorter.next_run == 0 {
        sorter.push_op(&ops[pushed]).unwrap();
        pushed += 1;
    }
    let dir = sorter.dir.as_ref().unwrap().path().to_path_buf();
    sorter.wait_for_spill().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = ops[pushed..]
        .iter()
        .try_for_each(|op| sorter.push_op(op))
        .and_then(|()| sorter.finish().map(drop))
        .unwrap_err();
    println!("spill into a removed directory: {err}");
    let CheckpointError::Io { op, path, .. } = &err else {
        panic!("not an I/O error: {err:?}");
    };
    assert_eq!(*op, "create sort run");
    assert!(
        path.starts_with(&dir) && path.to_string_lossy().contains("run-"),
        "{err}"
    );
}

#[test]
fn equal_keys_in_different_runs() {
    // Every 50 ops, the same keys come back: each run holds every key
    // of the small set, so the merge must pick the newest run's.
    let mut ops = Vec::new();
    let mut order = 0;
    for round in 0..40_i64 {
        for k in 0..50 {
            order += 1;
            let key = format!("k{k:02}").into_bytes();
            let op = match (round + k) % 5 {
                0 => Op::delete(&key, order, round),
                _ => Op::put(&key, format!("v{round}").as_bytes(), order, round),
            };
            ops.push(op);
        }
    }
    let config = SortConfig {
        budget: 4 << 10,
        io_buffer_bytes: 512,
        fan_in: 4,
        spill_dir: None,
    };
    let (out, stats) = sort_all(config, &ops);
    println!("equal keys: {stats:?}");
    assert!(stats.runs_spilled >= 10, "{stats:?}");
    assert!(stats.merge_passes >= 1, "{stats:?}");
    assert_matches_model(&out, &ops);
    // Last round is 39: keys with (39 + k) % 5 == 0 are deleted.
    assert_eq!(out.iter().filter(|o| o.value().is_none()).count(), 10);
}

#[test]
fn operation_larger_than_the_budget_is_taken_alone() {
    let big = vec![7_u8; 10_000];
    let ops = vec![
        Op::put(b"a", b"small", 1, 0),
        Op::put(b"b", &big, 2, 0),
        Op::put(b"c", b"small", 3, 0),
        Op::put(b"b", &big[..5_000], 4, 1),
    ];
    let (out, stats) = sort_all(SortConfig::for_budget(4 << 10), &ops);
    assert!(stats.runs_spilled >= 2, "{stats:?}");
    assert_matches_model(&out, &ops);
}

/// The bounded-memory proof: 200k distinct keys through 64 KiB.
#[test]
fn memory_stays_within_the_budget() {
    const BUDGET: usize = 64 << 10;
    const KEYS: u64 = 200_000;
    let mut rng = Rng(42);
    let mut sorter = ExternalSorter::new(SortConfig::for_budget(BUDGET));
    // Keys pushed in a scrambled order (a permutation of 0..KEYS).
    for i in 0..KEYS {
        let k = (i * 7_919) % KEYS;
        let value = rng.next().to_le_bytes();
        sorter
            .push_op(&Op::put(format!("{k:08}").as_bytes(), &value, i + 1, 1))
            .unwrap();
        assert!(sorter.accounted() <= BUDGET);
    }
    let mut newest = sorter.finish().unwrap();
    let mut count = 0_u64;
    let mut previous: Option<Vec<u8>> = None;
    while let Some(op) = newest.next_op().unwrap() {
        assert!(previous.as_deref() < Some(op.key()));
        previous = Some(op.key().to_vec());
        count += 1;
    }
    let stats = newest.stats();
    println!(
        "bounded memory: {KEYS} keys, budget {BUDGET} B: {} runs spilled, {} merge passes \
         ({} runs merged), {} bytes spilled, max buffered {} B",
        stats.runs_spilled,
        stats.merge_passes,
        stats.runs_merged,
        stats.spilled_bytes,
        stats.max_buffered_bytes
    );
    assert_eq!(count, KEYS);
    assert!(stats.runs_spilled > 1);
    assert!(stats.max_buffered_bytes <= BUDGET);
    assert!(stats.max_buffered_bytes > BUDGET / 2, "the budget is used");
}

#[test]
fn run_files_round_trip_and_are_removed() {
    let ops = vec![
        Op::delete(b"a", 9, -1),
        Op::put(b"b", b"value", 10, i64::MAX),
    ];
    let mut sorter = ExternalSorter::new(SortConfig::for_budget(1 << 20));
    for op in &ops {
        sorter.push_op(op).unwrap();
    }
    sorter.spill().unwrap();
    let dir = sorter.dir.as_ref().unwrap().path().to_path_buf();
    let mut newest = sorter.finish().unwrap();
    assert_eq!(newest.next_op().unwrap().as_ref(), Some(&ops[0]));
    assert_eq!(newest.next_op().unwrap().as_ref(), Some(&ops[1]));
    assert_eq!(newest.next_op().unwrap(), None);
    assert_eq!(newest.stats().runs_spilled, 1);
    drop(newest);
    assert!(!dir.exists(), "the run directory goes with the sort");
}
