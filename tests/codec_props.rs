//! Property tests of the WAL codec (format v1).
//!
//! - **Round trip**: any sequence of operations (puts and deletes of
//!   arbitrary bytes up to a few KiB, checkpoints, commits of arbitrary
//!   sources, offsets and watermarks, epoch barriers, epoch advances, syncs)
//!   on two cores, appended through `CoreWalWriter` with a clock that jumps
//!   around and steps back, reads back equal to what was appended: through
//!   `merge_segments`, through `PerCoreWalReader` segment by segment, and
//!   through `PerCoreRecoveryManager::recover`. Sequence numbers are
//!   consecutive per core, timestamps strictly increasing, and an append is
//!   refused exactly when its payload exceeds `max_record_bytes`.
//! - **Arbitrary bytes never panic and never over-allocate**: segment files
//!   made of arbitrary bytes, of a valid header followed by arbitrary bytes or
//!   by frames with valid checksums around arbitrary payloads, and of a valid
//!   segment with arbitrary edits, are read with every `PerCoreWalReader`
//!   entry point and with `PerCoreRecoveryManager::segment_stats` and
//!   `recover`. Nothing panics, the readers agree with each other, and a
//!   counting global allocator proves that no single allocation made while
//!   reading exceeds `max_record_bytes + 1 MiB`.
//!
//! Both tests print what they proved (cases, outcomes, largest allocation);
//! run with `--nocapture` to see it.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use walhouse::per_core_wal::{
    PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalEntry, PerCoreWalError, PerCoreWalManager,
    PerCoreWalReader, SegmentHeader, StdFileSystem, WalClock, WalFileSystem, WalOperation,
    WalReadResult, HEADER_LEN,
};

// ---------------------------------------------------------------------------
// Counting allocator: the largest single allocation made by this thread while
// counting is on.
// ---------------------------------------------------------------------------

struct CountingAlloc;

static COUNTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static CASE_LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Largest allocation on this thread while counting: per thread, so
    /// tests running in parallel cannot mix their figures.
    static THREAD_LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = THREAD_LARGEST.try_with(|c| c.set(c.get().max(size)));
        COUNTED.fetch_add(1, Ordering::Relaxed);
        let _ = CASE_LARGEST.try_with(|c| c.set(c.get().max(size)));
    }
}

#[expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one forwards every call \
              unchanged to System and only records sizes, to prove the reader's \
              allocation bound"
)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Counts this thread's allocations while alive; returns the largest on drop
/// through [`Counting::finish`].
struct Counting;

impl Counting {
    fn start() -> Self {
        CASE_LARGEST.with(|c| c.set(0));
        COUNTING.with(|c| c.set(true));
        Self
    }

    /// Stops counting; the largest single allocation since `start`.
    fn finish(self) -> usize {
        drop(self);
        CASE_LARGEST.with(Cell::get)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        COUNTING.with(|c| c.set(false));
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Small limits, so that lengths near and past them are easy to generate.
const MAX_RECORD_BYTES: u32 = 4096;
const READ_BUFFER_BYTES: usize = 4096;
/// The bound the brief and `PerCoreWalReader`'s docs promise for one allocation.
const ALLOCATION_BOUND: usize = MAX_RECORD_BYTES as usize + (1 << 20);

fn config(dir: &Path, cores: usize) -> PerCoreWalConfig {
    let mut config = PerCoreWalConfig::new(dir, cores)
        .with_segment_bytes(4096)
        .with_max_record_bytes(MAX_RECORD_BYTES);
    config.read_buffer_bytes = READ_BUFFER_BYTES;
    config.write_buffer_bytes = 1024;
    config
}

fn std_fs() -> Arc<dyn WalFileSystem> {
    Arc::new(StdFileSystem)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(u8::try_from(v & 0x7f).unwrap() | 0x80);
        v >>= 7;
    }
    buf.push(u8::try_from(v).unwrap());
}

/// Segment files of `dir` as (core, segment, path), by core then segment.
fn segments(dir: &Path) -> Vec<(usize, u64, std::path::PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_owned();
            let middle = name.strip_prefix("wal-")?.strip_suffix(".log")?;
            let (core, segment) = middle.split_once('-')?;
            Some((core.parse().ok()?, segment.parse().ok()?, path))
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// (a) Round trip
// ---------------------------------------------------------------------------

/// A clock that returns the values it was given in turn, cycling: it jumps
/// forward, repeats and steps back.
#[derive(Debug)]
struct ScriptedClock {
    values: Vec<i64>,
    next: AtomicUsize,
}

impl WalClock for ScriptedClock {
    fn now_ns(&self) -> i64 {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.values[i % self.values.len()]
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        core: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        core: usize,
        key: Vec<u8>,
    },
    Checkpoint {
        core: usize,
        id: u64,
    },
    Commit {
        core: usize,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    },
    Barrier {
        core: usize,
    },
    AdvanceEpoch,
    Sync {
        core: usize,
    },
}

fn bytes_up_to(small: usize, large: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..=small),
        1 => vec(any::<u8>(), 0..=large),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let core = 0..2usize;
    prop_oneof![
        6 => (core.clone(), bytes_up_to(16, 1024), bytes_up_to(64, 4096))
            .prop_map(|(core, key, value)| Op::Put { core, key, value }),
        2 => (core.clone(), bytes_up_to(16, 3072))
            .prop_map(|(core, key)| Op::Delete { core, key }),
        // Ids and offsets above i64::MAX are refused by the writer (no
        // checkpoint could store them): tests/checkpointable.rs.
        1 => (core.clone(), 0..=i64::MAX as u64).prop_map(|(core, id)| Op::Checkpoint { core, id }),
        2 => (
            core.clone(),
            hash_map(any::<String>(), 0..=i64::MAX as u64, 0..5),
            any::<Option<i64>>(),
        )
            .prop_map(|(core, offsets, watermark)| Op::Commit {
                core,
                offsets,
                watermark,
            }),
        1 => core.clone().prop_map(|core| Op::Barrier { core }),
        1 => Just(Op::AdvanceEpoch),
        1 => core.prop_map(|core| Op::Sync { core }),
    ]
}

/// Clock values: anywhere in +-2^62 (far from `i64::MAX`, see
/// `clock_at_i64_max_keeps_the_log_readable`), in any order.
fn clock_strategy() -> impl Strategy<Value = Vec<i64>> {
    vec(-(1i64 << 62)..(1i64 << 62), 1..8)
}

/// The payload length the format gives an operation (`schemas/wal-format.md`).
fn payload_len(sequence: u64, op: &Op) -> usize {
    let head = 1 + varint_len(sequence) + 8;
    match op {
        Op::Put { key, value, .. } => head + varint_len(key.len() as u64) + key.len() + value.len(),
        Op::Delete { key, .. } => head + key.len(),
        _ => 0, // always far below the limit in this test
    }
}

#[derive(Debug, Default)]
struct RoundTripFigures {
    cases: u64,
    entries: u64,
    refused_too_large: u64,
    segments: u64,
    largest_payload: usize,
}

/// Per core, (epoch, operation) of every accepted append.
type Model = [Vec<(u64, WalOperation)>; 2];

/// Applies `ops`, checking that an append is refused exactly when its payload
/// is too large; returns what was accepted.
fn append_all(
    m: &mut PerCoreWalManager,
    ops: &[Op],
    figures: &mut RoundTripFigures,
) -> Result<Model, TestCaseError> {
    let mut model: Model = [Vec::new(), Vec::new()];
    let mut epoch = 0u64;
    for op in ops {
        let (core, result, expected) = match op {
            Op::Put { core, key, value } => (
                *core,
                m.writer(*core).append_put(key, value),
                WalOperation::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            Op::Delete { core, key } => (
                *core,
                m.writer(*core).append_delete(key),
                WalOperation::Delete { key: key.clone() },
            ),
            Op::Checkpoint { core, id } => (
                *core,
                m.writer(*core).append_checkpoint(*id),
                WalOperation::Checkpoint { id: *id },
            ),
            Op::Commit {
                core,
                offsets,
                watermark,
            } => (
                *core,
                m.writer(*core).append_commit(offsets.clone(), *watermark),
                WalOperation::Commit {
                    offsets: offsets.clone(),
                    watermark: *watermark,
                },
            ),
            Op::Barrier { core } => (
                *core,
                m.writer(*core).append_epoch_barrier(),
                WalOperation::EpochBarrier { epoch },
            ),
            Op::AdvanceEpoch => {
                epoch = m.advance_epoch();
                m.set_epoch_all(epoch);
                continue;
            }
            Op::Sync { core } => {
                m.writer(*core).sync().unwrap();
                continue;
            }
        };
        let len = payload_len(model[core].len() as u64, op);
        match result {
            Ok(_) => {
                prop_assert!(len <= MAX_RECORD_BYTES as usize, "accepted {len} bytes");
                figures.largest_payload = figures.largest_payload.max(len);
                model[core].push((epoch, expected));
            }
            Err(PerCoreWalError::RecordTooLarge { size, .. }) => {
                prop_assert_eq!(size, len, "refused size");
                prop_assert!(len > MAX_RECORD_BYTES as usize);
                figures.refused_too_large += 1;
            }
            Err(e) => return Err(TestCaseError::fail(format!("append failed: {e}"))),
        }
    }
    Ok(model)
}

/// `merge_segments` gives merge order and, per core, exactly the model, with
/// consecutive sequences and strictly increasing timestamps within the
/// clock's range. Returns the entries per core.
fn check_merged(
    merged: &[PerCoreWalEntry],
    model: &Model,
    (clock_min, clock_max): (i64, i64),
) -> Result<[Vec<PerCoreWalEntry>; 2], TestCaseError> {
    prop_assert_eq!(merged.len(), model[0].len() + model[1].len());
    for w in merged.windows(2) {
        prop_assert!(w[0].order_key() < w[1].order_key(), "merge order");
    }
    let mut per_core: [Vec<PerCoreWalEntry>; 2] = [Vec::new(), Vec::new()];
    for e in merged {
        per_core[usize::from(e.core_id)].push(e.clone());
    }
    for (core, (got, want)) in per_core.iter().zip(model).enumerate() {
        prop_assert_eq!(got.len(), want.len());
        let mut last_ts = i64::MIN;
        for (i, (e, (epoch, op))) in got.iter().zip(want).enumerate() {
            prop_assert_eq!(
                e.sequence,
                i as u64,
                "sequence of core {} entry {}",
                core,
                i
            );
            prop_assert_eq!(e.epoch, *epoch);
            prop_assert_eq!(&e.operation, op);
            prop_assert!(e.timestamp_ns > last_ts, "timestamps strictly increase");
            prop_assert!(e.timestamp_ns >= clock_min);
            prop_assert!(e.timestamp_ns <= clock_max + i64::try_from(i).unwrap());
            last_ts = e.timestamp_ns;
        }
    }
    Ok(per_core)
}

/// `PerCoreWalReader`, segment by segment, gives the same entries.
fn check_segment_readers(
    dir: &Path,
    config: &PerCoreWalConfig,
    per_core: &[Vec<PerCoreWalEntry>; 2],
    figures: &mut RoundTripFigures,
) -> Result<(), TestCaseError> {
    let fs = std_fs();
    let mut read: [Vec<PerCoreWalEntry>; 2] = [Vec::new(), Vec::new()];
    for (core, segment, path) in segments(dir) {
        figures.segments += 1;
        let mut reader = PerCoreWalReader::open_with(&fs, config, core, &path).unwrap();
        prop_assert_eq!(reader.segment_number(), segment);
        prop_assert_eq!(reader.first_sequence(), read[core].len() as u64);
        loop {
            match reader.read_next().unwrap() {
                WalReadResult::Entry(e) => read[core].push(e),
                WalReadResult::Eof => break,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        }
        prop_assert_eq!(reader.position(), reader.file_len());
        let mut again = PerCoreWalReader::open_with(&fs, config, core, &path).unwrap();
        prop_assert_eq!(again.find_valid_end().unwrap(), reader.file_len());
    }
    prop_assert_eq!(&read, per_core);
    Ok(())
}

/// Recovery replays the merged entries into the state they describe.
fn check_recovery(
    config: PerCoreWalConfig,
    merged: &[PerCoreWalEntry],
    model: &Model,
) -> Result<(), TestCaseError> {
    let recovered = PerCoreRecoveryManager::new(config).recover().unwrap();
    let mut want_state = BTreeMap::new();
    let mut want_offsets = HashMap::new();
    let mut want_watermark = None;
    for e in merged {
        match &e.operation {
            WalOperation::Put { key, value } => {
                want_state.insert(key.clone(), value.clone());
            }
            WalOperation::Delete { key } => {
                want_state.remove(key);
            }
            WalOperation::Commit { offsets, watermark } => {
                want_offsets.extend(offsets.iter().map(|(s, o)| (s.clone(), *o)));
                if watermark.is_some() {
                    want_watermark = *watermark;
                }
            }
            _ => {}
        }
    }
    prop_assert_eq!(recovered.entries_replayed, merged.len());
    prop_assert_eq!(recovered.state, want_state);
    prop_assert_eq!(recovered.source_offsets, want_offsets);
    prop_assert_eq!(recovered.watermark, want_watermark);
    prop_assert_eq!(
        recovered.next_sequences,
        vec![model[0].len() as u64, model[1].len() as u64]
    );
    prop_assert_eq!(recovered.truncated_bytes, vec![0, 0]);
    Ok(())
}

fn round_trip(
    ops: &[Op],
    clock_values: Vec<i64>,
    figures: &mut RoundTripFigures,
) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 2);
    let clock_range = (
        *clock_values.iter().min().unwrap(),
        *clock_values.iter().max().unwrap(),
    );
    let clock = Arc::new(ScriptedClock {
        values: clock_values,
        next: AtomicUsize::new(0),
    });
    let mut m = PerCoreWalManager::builder(config.clone())
        .clock(clock)
        .create()
        .unwrap();
    let model = append_all(&mut m, ops, figures)?;
    m.sync_all().unwrap();

    let merged = m.merge_segments().unwrap();
    let per_core = check_merged(&merged, &model, clock_range)?;
    check_segment_readers(tmp.path(), &config, &per_core, figures)?;
    check_recovery(config, &merged, &model)?;

    figures.cases += 1;
    figures.entries += merged.len() as u64;
    Ok(())
}

#[test]
fn appended_operations_read_back_unchanged() {
    let mut runner = TestRunner::new(ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::with_cases(160)
    });
    let figures = RefCell::new(RoundTripFigures::default());
    runner
        .run(
            &(vec(op_strategy(), 1..40), clock_strategy()),
            |(ops, clock)| round_trip(&ops, clock, &mut figures.borrow_mut()),
        )
        .unwrap();
    let figures = figures.into_inner();
    println!(
        "round trip: {} cases passed, {} entries read back through merge_segments, \
         PerCoreWalReader and recover ({} segments), {} oversized appends refused, \
         largest payload {} bytes",
        figures.cases,
        figures.entries,
        figures.segments,
        figures.refused_too_large,
        figures.largest_payload
    );
}

// ---------------------------------------------------------------------------
// (b) Arbitrary bytes
// ---------------------------------------------------------------------------

/// A real segment: a header and one record of every kind.
fn base_segment() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        #[derive(Debug)]
        struct Fixed;
        impl WalClock for Fixed {
            fn now_ns(&self) -> i64 {
                1_700_000_000_000_000_000
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut m = PerCoreWalManager::builder(config(tmp.path(), 1))
            .clock(Arc::new(Fixed))
            .create()
            .unwrap();
        let w = m.writer(0);
        w.append_put(b"key", b"value").unwrap();
        w.append_delete(b"gone").unwrap();
        w.append_checkpoint(300).unwrap();
        let offsets = [
            ("a".to_owned(), 1),
            ("source/2".to_owned(), i64::MAX as u64),
        ];
        w.append_commit(offsets.into_iter().collect(), Some(-5))
            .unwrap();
        w.append_commit(HashMap::new(), None).unwrap();
        w.append_epoch_barrier().unwrap();
        w.append_put(b"bigger", &[7u8; 300]).unwrap();
        m.sync_all().unwrap();
        std::fs::read(tmp.path().join("wal-0-0000000000.log")).unwrap()
    })
}

fn crc_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Clone)]
enum Frame {
    /// A frame whose checksum is right around a generated payload: reaches
    /// the payload decoder.
    Checked {
        tag: u8,
        /// `None`: the sequence the reader expects next.
        sequence: Option<u64>,
        ts_step: i64,
        body: Vec<u8>,
    },
    /// A frame with any length and checksum.
    Bogus {
        len: u32,
        crc: u32,
        payload: Vec<u8>,
    },
    Zeros(usize),
    Raw(Vec<u8>),
}

/// Commit bodies that are nearly right: flags, watermark, count and pairs
/// with small lengths, so the decoder gets past its first checks.
fn commit_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        any::<i64>(),
        prop_oneof![0..4u64, any::<u64>()],
        vec((vec(any::<u8>(), 0..6), any::<u64>(), any::<bool>()), 0..4),
    )
        .prop_map(|(flags, watermark, count, pairs)| {
            let mut b = vec![flags];
            if flags == 1 {
                b.extend_from_slice(&watermark.to_le_bytes());
            }
            put_varint(&mut b, count);
            for (source, offset, bad_len) in pairs {
                put_varint(&mut b, source.len() as u64 + u64::from(bad_len) * 3);
                b.extend_from_slice(&source);
                put_varint(&mut b, offset);
            }
            b
        })
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    let body = prop_oneof![
        vec(any::<u8>(), 0..48),
        commit_body(),
        any::<u64>().prop_map(|v| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        }),
    ];
    let len = prop_oneof![
        Just(0u32),
        1..64u32,
        Just(MAX_RECORD_BYTES),
        Just(MAX_RECORD_BYTES + 1),
        Just(u32::MAX),
        any::<u32>(),
    ];
    prop_oneof![
        6 => (
            prop_oneof![1..=5u8, any::<u8>()],
            prop_oneof![3 => Just(None), 1 => any::<u64>().prop_map(Some)],
            prop_oneof![1..1000i64, any::<i64>()],
            body,
        )
            .prop_map(|(tag, sequence, ts_step, body)| Frame::Checked {
                tag,
                sequence,
                ts_step,
                body,
            }),
        2 => (len, any::<u32>(), vec(any::<u8>(), 0..64))
            .prop_map(|(len, crc, payload)| Frame::Bogus { len, crc, payload }),
        1 => (0..600usize).prop_map(Frame::Zeros),
        1 => vec(any::<u8>(), 0..24).prop_map(Frame::Raw),
    ]
}

fn encode_frames(header: &SegmentHeader, frames: &[Frame]) -> Vec<u8> {
    let mut out = header.encode().to_vec();
    let mut sequence = header.first_sequence;
    let mut ts = header.timestamp_floor;
    for frame in frames {
        match frame {
            Frame::Checked {
                tag,
                sequence: seq,
                ts_step,
                body,
            } => {
                let mut payload = vec![*tag];
                put_varint(&mut payload, seq.unwrap_or(sequence));
                ts = ts.wrapping_add(*ts_step);
                payload.extend_from_slice(&ts.to_le_bytes());
                payload.extend_from_slice(body);
                out.extend_from_slice(&crc_frame(&payload));
                sequence = sequence.wrapping_add(1);
            }
            Frame::Bogus { len, crc, payload } => {
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Zeros(n) => out.resize(out.len() + n, 0),
            Frame::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Overwrite(Index, Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
    FlipBit(Index, u8),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1..32usize).prop_map(|(i, n)| Edit::Remove(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Edit::FlipBit(i, bit)),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match edit {
            Edit::Overwrite(at, b) => {
                let at = at.index(bytes.len());
                let end = (at + b.len()).min(bytes.len());
                bytes[at..end].copy_from_slice(&b[..end - at]);
            }
            Edit::Insert(at, b) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Remove(at, n) => {
                let at = at.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Truncate(at) => bytes.truncate(at.index(bytes.len())),
            Edit::FlipBit(at, bit) => {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
        }
    }
    bytes
}

fn header_strategy() -> impl Strategy<Value = SegmentHeader> {
    (
        prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
        any::<u64>(),
        prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        prop_oneof![Just(i64::MIN), Just(i64::MAX - 1), any::<i64>()],
    )
        .prop_map(
            |(core_id, segment, epoch, first_sequence, timestamp_floor)| SegmentHeader {
                core_id,
                segment,
                epoch,
                first_sequence,
                timestamp_floor,
            },
        )
}

#[derive(Debug, Clone)]
enum SegmentBytes {
    /// Any bytes at all (almost never a valid header).
    Arbitrary(Vec<u8>),
    /// A real segment's header, then arbitrary bytes.
    HeaderThen(Vec<u8>),
    /// A real segment's header, then generated frames.
    HeaderThenFrames(Vec<Frame>),
    /// A header with arbitrary fields and a valid checksum, then frames.
    AnyHeaderThenFrames(SegmentHeader, Vec<Frame>),
    /// A real segment with arbitrary edits.
    Edited(Vec<Edit>),
}

impl SegmentBytes {
    fn kind(&self) -> usize {
        match self {
            Self::Arbitrary(_) => 0,
            Self::HeaderThen(_) => 1,
            Self::HeaderThenFrames(_) => 2,
            Self::AnyHeaderThenFrames(..) => 3,
            Self::Edited(_) => 4,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let base = base_segment();
        match self {
            Self::Arbitrary(b) => b.clone(),
            Self::HeaderThen(b) => [&base[..HEADER_LEN], &b[..]].concat(),
            Self::HeaderThenFrames(frames) => {
                encode_frames(&SegmentHeader::decode(base).unwrap(), frames)
            }
            Self::AnyHeaderThenFrames(header, frames) => encode_frames(header, frames),
            Self::Edited(edits) => apply_edits(base.to_vec(), edits),
        }
    }
}

fn segment_bytes_strategy() -> impl Strategy<Value = SegmentBytes> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..1024).prop_map(SegmentBytes::Arbitrary),
        2 => vec(any::<u8>(), 0..8192).prop_map(SegmentBytes::HeaderThen),
        4 => vec(frame_strategy(), 0..24).prop_map(SegmentBytes::HeaderThenFrames),
        2 => (header_strategy(), vec(frame_strategy(), 0..12))
            .prop_map(|(h, f)| SegmentBytes::AnyHeaderThenFrames(h, f)),
        4 => vec(edit_strategy(), 1..4).prop_map(SegmentBytes::Edited),
    ]
}

/// What reading one file gave, for the figures.
#[derive(Debug, Default)]
struct FuzzFigures {
    cases: u64,
    per_kind: [u64; 5],
    header_rejected: u64,
    entries_read: u64,
    clean_eof: u64,
    torn: u64,
    corrupt: u64,
    recovered: u64,
}

/// Reads `path` every way there is; checks the readers agree; returns the
/// largest single allocation made while reading.
fn read_every_way(
    dir: &Path,
    path: &Path,
    file_len: u64,
    figures: &mut FuzzFigures,
) -> Result<usize, TestCaseError> {
    let fs = std_fs();
    let config = config(dir, 1);
    let counting = Counting::start();

    // read_next until the end or a problem.
    let mut entries = Vec::new();
    let end = match PerCoreWalReader::open_with(&fs, &config, 0, path) {
        Err(_) => {
            figures.header_rejected += 1;
            None
        }
        Ok(mut reader) => loop {
            prop_assert!(
                entries.len() as u64 <= file_len / 18,
                "more records than bytes allow"
            );
            match reader.read_next() {
                Ok(WalReadResult::Entry(e)) => entries.push(e),
                Ok(WalReadResult::Eof) => {
                    figures.clean_eof += 1;
                    break Some(reader.position());
                }
                Ok(WalReadResult::TornWrite { position, .. }) => {
                    figures.torn += 1;
                    prop_assert!(position >= HEADER_LEN as u64 && position <= file_len);
                    break Some(position);
                }
                Ok(
                    WalReadResult::ChecksumMismatch { position, .. }
                    | WalReadResult::Corrupted { position, .. },
                ) => {
                    figures.corrupt += 1;
                    prop_assert!(position <= file_len);
                    break None;
                }
                Err(_) => {
                    figures.corrupt += 1;
                    break None;
                }
            }
        },
    };
    figures.entries_read += entries.len() as u64;

    // read_all, find_valid_end and iteration agree with read_next.
    let open = || PerCoreWalReader::open_with(&fs, &config, 0, path);
    if let Ok(mut reader) = open() {
        let all = reader.read_all();
        let valid_end = open().unwrap().find_valid_end();
        let iterated: Vec<_> = open().unwrap().take(entries.len() + 2).collect();
        if let Some(end) = end {
            prop_assert_eq!(all.as_ref().ok(), Some(&entries));
            prop_assert_eq!(valid_end.as_ref().ok(), Some(&end));
        } else {
            prop_assert!(all.is_err());
            prop_assert!(valid_end.is_err());
        }
        let iterated_ok: Vec<PerCoreWalEntry> = iterated
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        prop_assert_eq!(&iterated_ok, &entries);
        prop_assert!(iterated.len() <= entries.len() + 1);
    }

    // Recovery: statistics (read only), then recover (which may truncate).
    let recovery = PerCoreRecoveryManager::with_file_system(config, Arc::clone(&fs));
    let per_segment = recovery.segment_stats();
    if let (Ok(per_segment), Some(end)) = (&per_segment, end) {
        prop_assert_eq!(per_segment.len(), 1);
        prop_assert_eq!(per_segment[0].valid_end, end);
        prop_assert_eq!(per_segment[0].entry_count, entries.len());
    }
    let recovered = recovery.recover();
    if let (Ok(_), Some(_)) = (&per_segment, end) {
        // The only segment is the newest: a torn tail is repaired, and the
        // strict replay then reads exactly what the reader read.
        let recovered = recovered.map_err(|e| TestCaseError::fail(format!("recover: {e}")))?;
        prop_assert_eq!(recovered.entries_replayed, entries.len());
        figures.recovered += 1;
    }
    Ok(counting.finish())
}

#[test]
fn arbitrary_segment_bytes_never_panic_nor_over_allocate() {
    let mut runner = TestRunner::new(ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::with_cases(5000)
    });
    let figures = RefCell::new(FuzzFigures::default());
    let _ = base_segment();
    runner
        .run(&segment_bytes_strategy(), |input| {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("wal-0-0000000000.log");
            let bytes = input.bytes();
            std::fs::write(&path, &bytes).unwrap();
            let mut figures = figures.borrow_mut();
            let largest = read_every_way(tmp.path(), &path, bytes.len() as u64, &mut figures)?;
            prop_assert!(
                largest <= ALLOCATION_BOUND,
                "a single allocation of {} bytes while reading (bound {})",
                largest,
                ALLOCATION_BOUND
            );
            figures.cases += 1;
            figures.per_kind[input.kind()] += 1;
            Ok(())
        })
        .unwrap();
    let figures = figures.into_inner();
    let largest = THREAD_LARGEST.with(Cell::get);
    println!(
        "arbitrary bytes: {} files read with read_next, read_all, find_valid_end, iteration, \
         segment_stats and recover without a panic (by kind: arbitrary {}, header+bytes {}, \
         header+frames {}, any header+frames {}, edited segment {})",
        figures.cases,
        figures.per_kind[0],
        figures.per_kind[1],
        figures.per_kind[2],
        figures.per_kind[3],
        figures.per_kind[4],
    );
    println!(
        "  outcomes: header rejected {}, clean end {}, torn tail {}, corruption {}, \
         {} entries read, {} recovered consistently",
        figures.header_rejected,
        figures.clean_eof,
        figures.torn,
        figures.corrupt,
        figures.entries_read,
        figures.recovered
    );
    println!(
        "  allocations while reading: {}, largest single allocation {} bytes \
         (bound max_record_bytes {} + 1 MiB = {})",
        COUNTED.load(Ordering::Relaxed),
        largest,
        MAX_RECORD_BYTES,
        ALLOCATION_BOUND
    );
    assert!(largest <= ALLOCATION_BOUND);
}

// ---------------------------------------------------------------------------
// Bugs found in src/ (fail today; see the report)
// ---------------------------------------------------------------------------

/// `SegmentCursor::fill` (`src/per_core_wal/segment.rs`) grows its buffer with
/// `Vec::resize`, which doubles the capacity: after a record just under
/// `max_record_bytes`, a record of `max_record_bytes` makes the buffer almost
/// twice that, past the documented "read buffer plus one record".
#[test]
fn reading_large_records_stays_within_one_record_plus_the_read_buffer() {
    const MAX: u32 = 4 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = PerCoreWalConfig::new(tmp.path(), 1).with_max_record_bytes(MAX);
    config.read_buffer_bytes = 4096;
    let mut m = PerCoreWalManager::new(config.clone()).unwrap();
    let overhead = 1 + 1 + 8 + 1 + 1; // tag, sequence, timestamp, key length, key
    let near = vec![1u8; (MAX as usize) * 15 / 16];
    let full = vec![2u8; MAX as usize - overhead];
    m.writer(0).append_put(b"a", &near).unwrap();
    m.writer(0).append_put(b"b", &full).unwrap();
    m.sync_all().unwrap();
    let path = m.segment_path(0);
    drop(m);

    let counting = Counting::start();
    let mut reader = PerCoreWalReader::open_with(&std_fs(), &config, 0, &path).unwrap();
    let n = reader.read_all().unwrap().len();
    let largest = counting.finish();
    assert_eq!(n, 2);
    let bound = MAX as usize + 8 + config.read_buffer_bytes;
    assert!(
        largest <= bound,
        "largest single allocation {largest} bytes, bound {bound} \
         (max_record_bytes + frame + read buffer)"
    );
}

/// `next_timestamp` (`src/per_core_wal/writer.rs`) saturates at `i64::MAX`:
/// once a core's last timestamp is `i64::MAX`, the next entry gets the same
/// timestamp, which the reader rejects as "timestamp does not increase". The
/// writer acknowledges entries that make the log unreadable.
#[test]
fn clock_at_i64_max_keeps_the_log_readable() {
    #[derive(Debug)]
    struct EndOfTime;
    impl WalClock for EndOfTime {
        fn now_ns(&self) -> i64 {
            i64::MAX
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut m = PerCoreWalManager::builder(PerCoreWalConfig::new(tmp.path(), 1))
        .clock(Arc::new(EndOfTime))
        .create()
        .unwrap();
    let first = m.writer(0).append_put(b"a", b"1");
    let second = m.writer(0).append_put(b"b", b"2");
    m.sync_all().unwrap();
    let accepted = usize::from(first.is_ok()) + usize::from(second.is_ok());
    match m.merge_segments() {
        Ok(entries) => assert_eq!(entries.len(), accepted),
        Err(e) => panic!("{accepted} appends acknowledged, then the log reads as: {e}"),
    }
}
