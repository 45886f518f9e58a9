//! The WAL loses no acknowledged entry under simulated power loss.
//!
//! A fixed workload (2 cores, 4 KiB segments, puts, overwrites and deletes,
//! a sync every few entries, an epoch advance with barriers and removal of
//! the covered segments midway) runs on [`SimFs`]. For every crash point (the
//! n-th file-system operation and everything after it fail) and every
//! [`CrashMode`], the disk loses power, the WAL is recovered twice (with a
//! second power loss in between) and reopened, and the test checks:
//!
//! - (a) every acknowledged entry (one a later `sync` returned `Ok` for) is
//!   recovered with its key and value;
//! - (b) each core's recovered entries are a prefix of what it appended
//!   (only the segments the removal covered may be missing from its front);
//! - (c) recovery is idempotent, across a second power loss too;
//! - (d) after reopening, new entries get sequence numbers above everything
//!   recovered, and once acknowledged survive a further power loss.
//!
//! For every 4th crash point the restart after it (recover, reopen) is
//! crashed too, at each of its operations, and then checked the same way. The
//! sweep runs again on a disk that may also keep a prefix of the unsynced
//! directory operations (a journaling file system committing them on its
//! own), which leaves new segments with no durable header.
//!
//! The negative control runs the same harness on a disk whose `sync_data`
//! does nothing: it must find acknowledged entries lost. A hole inside the
//! unsynced tail (pages written back out of order before a failed
//! fdatasync) is refused on purpose, naming the file and offset, with
//! nothing truncated: the reader cannot tell it from damage to synced bytes
//! (`schemas/wal-format.md`, 3.2).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::simfs::{CrashMode, DirOps, OpKind, SimFs, XorShift};
use common::StepClock;
use walhouse::per_core_wal::{
    PerCoreRecoveredState, PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalEntry,
    PerCoreWalError, PerCoreWalManager, WalFile, WalFileSystem, WalOperation, HEADER_LEN,
    RECORD_HEADER_LEN,
};

const CORES: usize = 2;
const KEYS: u64 = 240;
const STEPS: usize = 700;

fn wal_dir() -> PathBuf {
    PathBuf::from("/sim/wal")
}

fn config() -> PerCoreWalConfig {
    let mut config = PerCoreWalConfig::new(&wal_dir(), CORES).with_segment_bytes(4096);
    // Small enough that a batch is sometimes handed to the file in several
    // appends before its sync.
    config.write_buffer_bytes = 512;
    config
}

fn manager(fs: &SimFs, start_ns: i64) -> walhouse::per_core_wal::PerCoreWalManagerBuilder {
    PerCoreWalManager::builder(config())
        .file_system(fs.shared())
        .clock(StepClock::new(start_ns, 1_000))
}

/// One step of the workload.
#[derive(Debug, Clone)]
enum Step {
    Put {
        core: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        core: usize,
        key: Vec<u8>,
    },
    Sync(usize),
    SyncAll,
    /// `advance_epoch`, `set_epoch_all`, `write_epoch_barrier_all`.
    AdvanceEpoch,
    /// `remove_segments_up_to_epoch(epoch)` (a checkpoint covers them).
    RemoveCovered(u64),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put { core, key, value } => write!(
                f,
                "put {} ({} bytes) on core {core}",
                String::from_utf8_lossy(key),
                value.len()
            ),
            Self::Delete { core, key } => {
                write!(f, "delete {} on core {core}", String::from_utf8_lossy(key))
            }
            Self::Sync(core) => write!(f, "sync core {core}"),
            Self::SyncAll => write!(f, "sync_all"),
            Self::AdvanceEpoch => write!(f, "epoch advance"),
            Self::RemoveCovered(epoch) => write!(f, "remove segments up to epoch {epoch}"),
        }
    }
}

/// The fixed workload: keys are routed to a fixed core (`key % CORES`).
fn workload() -> Vec<Step> {
    let mut rng = XorShift::new(0x5EED_0001);
    let mut steps = Vec::new();
    for i in 0..STEPS {
        if i == STEPS / 2 {
            steps.push(Step::AdvanceEpoch);
            steps.push(Step::SyncAll);
            steps.push(Step::RemoveCovered(0));
        }
        let k = rng.below(KEYS);
        let core = (k % CORES as u64) as usize;
        let key = format!("key-{k:04}").into_bytes();
        if rng.chance(1, 6) {
            steps.push(Step::Delete { core, key });
        } else {
            let len = rng.range(4, 160);
            let value = (0..len).map(|_| rng.next_u64() as u8).collect();
            steps.push(Step::Put { core, key, value });
        }
        if rng.chance(1, 4) {
            steps.push(Step::Sync(core));
        }
        if i % 37 == 36 {
            steps.push(Step::SyncAll);
        }
    }
    steps.push(Step::SyncAll);
    steps
}

/// What the workload did before it stopped.
#[derive(Debug, Clone)]
struct Run {
    /// `create()` returned `Ok`.
    created: bool,
    /// Per core, every entry it appended, indexed by sequence: (epoch, op).
    appended: Vec<Vec<(u64, WalOperation)>>,
    /// Per core, how many of its first entries are acknowledged.
    acked: Vec<u64>,
    /// Per core, the sequence of its epoch barrier (first entry of epoch 1).
    barrier_seq: Vec<Option<u64>>,
    /// `remove_segments_up_to_epoch` was called.
    removal_started: bool,
    /// The error the workload stopped at.
    stopped_by: Option<String>,
}

impl Run {
    fn acked_total(&self) -> u64 {
        self.acked.iter().sum()
    }
}

/// Records the entries a call appended on each core (its sequence moved).
fn reconcile(m: &mut PerCoreWalManager, run: &mut Run, core: usize, op: &WalOperation, epoch: u64) {
    let now = m.writer(core).sequence();
    let before = run.appended[core].len() as u64;
    assert!(
        now <= before + 1,
        "core {core}: one append moved the sequence from {before} to {now}"
    );
    if now == before + 1 {
        run.appended[core].push((epoch, op.clone()));
    }
}

/// Appends one put or delete on `core` and records it.
fn append(
    m: &mut PerCoreWalManager,
    run: &mut Run,
    core: usize,
    op: &WalOperation,
) -> Result<(), PerCoreWalError> {
    let w = m.writer(core);
    assert_eq!(
        w.sequence(),
        run.appended[core].len() as u64,
        "harness and WAL disagree"
    );
    let epoch = w.epoch();
    let result = match op {
        WalOperation::Put { key, value } => w.append_put(key, value),
        WalOperation::Delete { key } => w.append_delete(key),
        other => unreachable!("{other:?}"),
    };
    reconcile(m, run, core, op, epoch);
    result.map(|_| ())
}

fn apply(m: &mut PerCoreWalManager, run: &mut Run, step: &Step) -> Result<(), PerCoreWalError> {
    match step {
        Step::Put { core, key, value } => append(
            m,
            run,
            *core,
            &WalOperation::Put {
                key: key.clone(),
                value: value.clone(),
            },
        ),
        Step::Delete { core, key } => {
            append(m, run, *core, &WalOperation::Delete { key: key.clone() })
        }
        Step::Sync(core) => {
            m.writer(*core).sync()?;
            run.acked[*core] = run.appended[*core].len() as u64;
            Ok(())
        }
        Step::SyncAll => {
            m.sync_all()?;
            for core in 0..CORES {
                run.acked[core] = run.appended[core].len() as u64;
            }
            Ok(())
        }
        Step::AdvanceEpoch => {
            let epoch = m.advance_epoch();
            m.set_epoch_all(epoch);
            for core in 0..CORES {
                run.barrier_seq[core] = Some(m.writer(core).sequence());
            }
            let result = m.write_epoch_barrier_all();
            for core in 0..CORES {
                reconcile(m, run, core, &WalOperation::EpochBarrier { epoch }, epoch);
            }
            result
        }
        Step::RemoveCovered(epoch) => {
            run.removal_started = true;
            m.remove_segments_up_to_epoch(*epoch).map(|_| ())
        }
    }
}

/// Runs the workload on `fs` until it ends or a call fails. With `lie`,
/// `sync_data` stops making anything durable once the WAL is created.
fn run_workload(fs: &SimFs, steps: &[Step], lie: bool) -> Run {
    let mut run = Run {
        created: false,
        appended: vec![Vec::new(); CORES],
        acked: vec![0; CORES],
        barrier_seq: vec![None; CORES],
        removal_started: false,
        stopped_by: None,
    };
    let mut m = match manager(fs, 1_000_000).create() {
        Ok(m) => m,
        Err(e) => {
            run.stopped_by = Some(format!("create: {e}"));
            return run;
        }
    };
    run.created = true;
    fs.set_sync_data_noop(lie);
    for step in steps {
        if let Err(e) = apply(&mut m, &mut run, step) {
            run.stopped_by = Some(format!("{step}: {e}"));
            break;
        }
    }
    run
}

/// What one crash point showed.
#[derive(Debug, Default)]
struct Verdict {
    /// Acknowledged entries not recovered (or recovered with other contents).
    lost: u64,
    /// Cores whose recovered entries are not a prefix of what they appended.
    non_prefix: u64,
    /// Recovery or reopening failed.
    failed: bool,
    /// The WAL had not been created at the crash (no acknowledged entry can
    /// exist): `open` said `SegmentNotFound`, or the directory was missing.
    not_created: bool,
    /// Idempotency, state or sequence-reuse violations.
    other: u64,
    /// Bytes of torn or garbage tails recovery truncated.
    torn_bytes: u64,
    /// Entries recovered beyond the acknowledged ones (unsynced, survived).
    beyond_acked: u64,
    /// Segment files the crash left without a complete header.
    headerless: u64,
    /// What went wrong, in words.
    problems: Vec<String>,
}

/// The recovered state without what legitimately differs between runs.
fn normalized(r: &PerCoreRecoveredState) -> PerCoreRecoveredState {
    let mut r = r.clone();
    r.truncated_bytes = Vec::new();
    // What the first recovery repaired, the second finds repaired.
    r.repairs = Vec::new();
    r
}

/// Per core, its entries in order.
fn by_core(entries: &[PerCoreWalEntry]) -> Vec<Vec<&PerCoreWalEntry>> {
    let mut out = vec![Vec::new(); CORES];
    for e in entries {
        out[usize::from(e.core_id)].push(e);
    }
    out
}

/// What a process does when it starts after a crash: recover, then reopen
/// (or create, if the crash came before the WAL existed). A crash point may
/// interrupt it anywhere.
fn restart(fs: &SimFs, run: &Run) -> Result<PerCoreWalManager, PerCoreWalError> {
    PerCoreRecoveryManager::with_file_system(config(), fs.shared()).recover()?;
    match manager(fs, 2_000_000_000).open() {
        Err(PerCoreWalError::SegmentNotFound { .. }) if !run.created => {
            manager(fs, 2_000_000_000).create()
        }
        other => other,
    }
}

fn show(x: Option<u64>) -> String {
    x.map_or_else(|| "?".to_owned(), |x| x.to_string())
}

/// Crashes `fs` (the workload stopped), recovers, reopens and checks (a)-(d).
fn crash_and_check(fs: &SimFs, run: &Run, mode: CrashMode) -> Verdict {
    let mut v = Verdict::default();
    fs.crash(mode);
    v.headerless = fs
        .files()
        .iter()
        .filter(|(path, len, _)| path.parent() == Some(&wal_dir()) && *len < HEADER_LEN)
        .count() as u64;
    let recovery = PerCoreRecoveryManager::with_file_system(config(), fs.shared());
    let fail = |mut v: Verdict, what: String| {
        v.failed = true;
        v.lost = run.acked_total();
        v.problems.push(what);
        v
    };

    let rec1 = match recovery.recover() {
        Ok(r) => r,
        // Nothing was created: the directory itself is missing.
        Err(e) if !run.created && matches!(e, PerCoreWalError::Io { .. }) => {
            v.not_created = true;
            return v;
        }
        Err(e) => return fail(v, format!("recover: {e}")),
    };
    v.torn_bytes = rec1.truncated_bytes.iter().sum();
    // (c) idempotent: again, then after a second power loss.
    match recovery.recover() {
        Ok(rec2) => {
            if normalized(&rec2) != normalized(&rec1) || rec2.truncated_bytes.iter().any(|&b| b > 0)
            {
                v.other += 1;
                v.problems
                    .push(format!("second recovery differs: {rec1:?} vs {rec2:?}"));
            }
        }
        Err(e) => return fail(v, format!("second recover: {e}")),
    }
    fs.crash(mode);
    match recovery.recover() {
        Ok(rec3) if normalized(&rec3) == normalized(&rec1) => {}
        Ok(rec3) => {
            v.other += 1;
            v.problems.push(format!(
                "recovery after a second power loss differs: {rec1:?} vs {rec3:?}"
            ));
        }
        Err(e) => return fail(v, format!("recover after a second power loss: {e}")),
    }

    let mut m = match manager(fs, 2_000_000_000).open() {
        Ok(m) => m,
        Err(PerCoreWalError::SegmentNotFound { .. }) if !run.created => {
            v.not_created = true;
            match manager(fs, 2_000_000_000).create() {
                Ok(m) => m,
                Err(e) => return fail(v, format!("create after SegmentNotFound: {e}")),
            }
        }
        Err(e) => return fail(v, format!("open: {e}")),
    };
    if v.not_created && run.acked_total() > 0 {
        v.other += 1;
        v.problems
            .push("acknowledged entries before the WAL was created".into());
    }
    let entries = match m.merge_segments() {
        Ok(entries) => entries,
        Err(e) => return fail(v, format!("merge after reopen: {e}")),
    };
    if entries.len() != rec1.entries_replayed {
        v.other += 1;
        v.problems.push(format!(
            "recover replayed {} entries, the reopened WAL holds {}",
            rec1.entries_replayed,
            entries.len()
        ));
    }

    // (a) and (b), per core; and the state a replay of them gives.
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (core, got) in by_core(&entries).into_iter().enumerate() {
        let hi = rec1.next_sequences[core];
        let lo = hi.checked_sub(got.len() as u64);
        let covered = if run.removal_started {
            run.barrier_seq[core].unwrap_or(0)
        } else {
            0
        };
        // The removal of the covered segments (epoch 0: sequences below
        // `covered`) may have taken effect for all or some of them.
        let mut prefix = lo.is_some_and(|lo| lo == 0 || (run.removal_started && lo <= covered));
        let mut ok = vec![false; run.appended[core].len()];
        for (i, e) in got.iter().enumerate() {
            let seq = lo.unwrap_or(0) + i as u64;
            let expected = run.appended[core].get(seq as usize);
            if e.sequence != seq || expected != Some(&(e.epoch, e.operation.clone())) {
                prefix = false;
            } else {
                ok[seq as usize] = true;
            }
            match &e.operation {
                WalOperation::Put { key, value } => {
                    model.insert(key.clone(), value.clone());
                }
                WalOperation::Delete { key } => {
                    model.remove(key);
                }
                _ => {}
            }
        }
        if !prefix {
            v.non_prefix += 1;
            v.problems.push(format!(
                "core {core}: recovered sequences {}..{hi} are not a prefix of the {} appended \
                 (covered below {covered})",
                show(lo),
                run.appended[core].len()
            ));
        }
        // Entries below the log's start are missing because the removal
        // took effect (checked above to stay within the covered epoch).
        let excused = lo.filter(|&lo| prefix && lo <= covered).unwrap_or(0);
        let lost = (excused..run.acked[core])
            .filter(|&s| !ok[s as usize])
            .count() as u64;
        if lost > 0 {
            v.problems.push(format!(
                "core {core}: {lost} of {} acknowledged entries lost (recovered {}..{hi})",
                run.acked[core],
                show(lo)
            ));
        }
        v.lost += lost;
        v.beyond_acked += ok
            .iter()
            .skip(run.acked[core] as usize)
            .filter(|&&x| x)
            .count() as u64;
    }
    if model != rec1.state {
        v.other += 1;
        v.problems.push(format!(
            "recovered state ({} keys) is not the replay of the recovered entries ({} keys)",
            rec1.state.len(),
            model.len()
        ));
    }

    // (d) new entries continue above everything recovered.
    let mut new_seqs = Vec::new();
    for core in 0..CORES {
        let w = m.writer(core);
        let seq = w.sequence();
        if seq < rec1.next_sequences[core] {
            v.other += 1;
            v.problems.push(format!(
                "core {core}: reopened at sequence {seq}, below the recovered {}",
                rec1.next_sequences[core]
            ));
        }
        let key = format!("after-crash-{core}").into_bytes();
        if let Err(e) = w.append_put(&key, b"new") {
            return fail(v, format!("append after reopen: {e}"));
        }
        new_seqs.push(seq);
        model.insert(key, b"new".to_vec());
    }
    if let Err(e) = m.sync_all() {
        return fail(v, format!("sync after reopen: {e}"));
    }
    drop(m);
    // Another power loss: the new entries were acknowledged, and the repair
    // done at restart must have been durable too.
    fs.crash(mode);
    match recovery.recover() {
        Ok(rec4) => {
            let want: Vec<u64> = new_seqs.iter().map(|s| s + 1).collect();
            if rec4.next_sequences != want || rec4.state != model {
                v.other += 1;
                v.problems.push(format!(
                    "after reopen and new appends: next sequences {:?} (want {want:?}), state \
                     matches: {}",
                    rec4.next_sequences,
                    rec4.state == model
                ));
            }
        }
        Err(e) => return fail(v, format!("recover after new appends: {e}")),
    }
    v
}

/// Figures of a sweep, per crash mode.
#[derive(Debug, Default)]
struct Tally {
    points: u64,
    acked_at_crash: u64,
    lost: u64,
    non_prefix: u64,
    failed: u64,
    not_created: u64,
    problems: u64,
    torn_tails: u64,
    beyond_acked: u64,
    headerless: u64,
    first_problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, at: &str, run: &Run, v: &Verdict) {
        self.points += 1;
        self.acked_at_crash += run.acked_total();
        self.lost += v.lost;
        self.non_prefix += v.non_prefix;
        self.failed += u64::from(v.failed);
        self.not_created += u64::from(v.not_created);
        self.problems += u64::from(v.other > 0);
        self.torn_tails += u64::from(v.torn_bytes > 0);
        self.beyond_acked += v.beyond_acked;
        self.headerless += u64::from(v.headerless > 0);
        if !v.problems.is_empty() && self.first_problems.len() < 5 {
            self.first_problems.push(format!(
                "crash at {at} (workload stopped by {:?}): {}",
                run.stopped_by,
                v.problems.join("; ")
            ));
        }
    }

    fn line(&self, mode: CrashMode) -> String {
        let mut s = format!(
            "{mode:?}: {} crash points ({} before the WAL existed: SegmentNotFound or no \
             directory); {} acknowledged entries at the crashes, {} lost; {} cores not a \
             prefix; {} recoveries failed (their acknowledged entries count as lost); {} with \
             other problems; {} torn tails truncated; {} left a segment without a complete \
             header; {} unacknowledged entries survived",
            self.points,
            self.not_created,
            self.acked_at_crash,
            self.lost,
            self.non_prefix,
            self.failed,
            self.problems,
            self.torn_tails,
            self.headerless,
            self.beyond_acked
        );
        for p in &self.first_problems {
            let _ = write!(s, "\n    {p}");
        }
        s
    }
}

/// Figures of one crash mode: crashes in the workload, and crashes in the
/// restart after such a crash.
#[derive(Debug, Default)]
struct ModeTally {
    workload: Tally,
    restart: Tally,
}

/// Runs the workload crashing at each of `points`, in each of `modes`. For
/// the points where `nested(n)` holds, also crashes the restart after that
/// crash at each of its operations, then checks the restart after that.
fn sweep(
    steps: &[Step],
    points: &[u64],
    modes: &[CrashMode],
    lie: bool,
    dir_ops: DirOps,
    nested: impl Fn(u64) -> bool,
) -> Vec<(CrashMode, ModeTally)> {
    modes
        .iter()
        .map(|&mode| {
            let mut tally = ModeTally::default();
            for &n in points {
                let fs = SimFs::new(n.wrapping_mul(0x9E37_79B9) ^ mode as u64);
                fs.set_crash_at(Some(n));
                fs.set_dir_ops(dir_ops);
                let run = run_workload(&fs, steps, lie);
                assert!(fs.failing(), "crash point {n} was never reached");
                fs.crash(mode);
                fs.set_sync_data_noop(false);
                tally.workload.add(
                    &format!("op {n}"),
                    &run,
                    &crash_and_check(&fs.fork(), &run, mode),
                );
                if !nested(n) {
                    continue;
                }
                for m in 1.. {
                    let again = fs.fork();
                    again.set_crash_at(Some(again.ops() + m));
                    let _ = restart(&again, &run);
                    if !again.failing() {
                        break; // the restart has fewer than m operations
                    }
                    tally.restart.add(
                        &format!("op {n}, then restart op {m}"),
                        &run,
                        &crash_and_check(&again, &run, mode),
                    );
                }
            }
            (mode, tally)
        })
        .collect()
}

/// Operations of the workload without a crash (and a check that it ran whole).
fn baseline(steps: &[Step]) -> (u64, Run, SimFs) {
    let fs = SimFs::new(1);
    let run = run_workload(&fs, steps, false);
    assert!(run.stopped_by.is_none(), "{:?}", run.stopped_by);
    (fs.ops(), run, fs)
}

/// Operations `create()` does on a fresh disk: crash points up to this one
/// come before the WAL exists.
fn create_ops() -> u64 {
    let fs = SimFs::new(1);
    manager(&fs, 0).create().unwrap();
    fs.ops()
}

#[test]
fn no_acknowledged_entry_is_lost_at_any_crash_point() {
    let started = Instant::now();
    let steps = workload();
    let (total, run, fs) = baseline(&steps);
    let segments = fs.files().len();
    println!(
        "workload: {} steps on {CORES} cores, {} entries appended, {} acknowledged, {total} \
         file-system operations {:?}, {segments} segment files at the end",
        steps.len(),
        run.appended.iter().map(Vec::len).sum::<usize>(),
        run.acked_total(),
        fs.op_counts()
    );
    assert!(
        total >= 300,
        "the workload should do hundreds of operations"
    );
    assert!(
        fs.op_counts()[&OpKind::Create] >= 6 * CORES as u64,
        "segments should rotate"
    );
    // The whole workload, with no crash, recovers everything.
    let v = crash_and_check(&fs, &run, CrashMode::DropUnsynced);
    assert!(v.problems.is_empty() && v.lost == 0, "{:?}", v.problems);

    // Every crash point; the restart after it crashed too at every 4th one.
    // Then again with a file system that may also keep unsynced directory
    // operations (a prefix of them), the restart crashed at every 8th point.
    let points: Vec<u64> = (1..=total).collect();
    let synced_only = sweep(
        &steps,
        &points,
        &CrashMode::ALL,
        false,
        DirOps::SyncedOnly,
        |n| n % 4 == 0,
    );
    let prefix_survives = sweep(
        &steps,
        &points,
        &CrashMode::ALL,
        false,
        DirOps::PrefixSurvives,
        |n| n % 8 == 0,
    );
    let mut bad = Vec::new();
    let mut sums = [0u64; 5];
    for (title, results) in [
        (
            "directory entries survive only through sync_dir; crash at every operation \
             1..={total} (no sampling) in each mode, and at every operation of the restart \
             after the crash at every 4th of them:",
            &synced_only,
        ),
        (
            "a random prefix of the unsynced directory operations survives too; crash at \
             every operation 1..={total}, and at every operation of the restart after every \
             8th:",
            &prefix_survives,
        ),
    ] {
        println!("{}", title.replace("{total}", &total.to_string()));
        for (mode, t) in results {
            for (what, tally) in [("workload", &t.workload), ("restart", &t.restart)] {
                let line = tally.line(*mode);
                println!("  {what:>8} {line}");
                if tally.lost > 0 || tally.non_prefix > 0 || tally.failed > 0 || tally.problems > 0
                {
                    bad.push(format!("{what} {line}"));
                }
                for (sum, x) in sums.iter_mut().zip([
                    tally.points,
                    tally.lost,
                    tally.non_prefix,
                    tally.failed,
                    tally.not_created,
                ]) {
                    *sum += x;
                }
            }
        }
    }
    println!(
        "total: {} crash points; acknowledged entries lost: {}; cores not a prefix: {}; \
         recoveries failed: {}; crash points before the WAL existed: {}; {:.1} s",
        sums[0],
        sums[1],
        sums[2],
        sums[3],
        sums[4],
        started.elapsed().as_secs_f64()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Only crashes inside `create()` come before the WAL exists.
    let before = create_ops();
    for (mode, t) in &synced_only {
        assert_eq!(t.workload.not_created, before, "{mode:?}");
    }
    for (mode, t) in synced_only.iter().chain(&prefix_survives) {
        // The sweep is not vacuous: crashes hit acknowledged entries, and
        // the modes that leave unsynced bytes made recovery repair tails.
        assert!(
            t.workload.acked_at_crash > 0 && t.restart.points > 0,
            "{mode:?}"
        );
        if *mode != CrashMode::DropUnsynced {
            assert!(t.workload.torn_tails > 0, "{mode:?} never left a torn tail");
        }
    }
}

#[test]
fn negative_control_a_disk_that_ignores_fsync_loses_acknowledged_entries() {
    let steps = workload();
    let (total, _, _) = baseline(&steps);
    // Every 5th crash point is plenty to show the loss.
    let points: Vec<u64> = (1..=total).step_by(5).collect();
    let results = sweep(
        &steps,
        &points,
        &[CrashMode::DropUnsynced],
        true,
        DirOps::SyncedOnly,
        |_| false,
    );
    let (mode, tally) = &results[0];
    let tally = &tally.workload;
    println!(
        "negative control: sync_data a no-op that reports success once the WAL is created \
         (crash points 1, 6, 11, ... of {total}):"
    );
    println!("  {}", tally.line(*mode));
    println!(
        "acknowledged entries lost: {} (must be > 0, else the harness cannot see a loss)",
        tally.lost
    );
    assert!(
        tally.lost > 0,
        "the harness did not detect a disk that ignores fsync"
    );
}

// Crashes the sweep's crash model (a prefix of the unsynced bytes survives)
// cannot produce on its own, built by hand from the bytes a crash leaves.

/// A 1-core WAL on `fs` with 64 KiB segments: one acknowledged put, then
/// `batch` appended and handed to the file, and the power lost during the
/// `fdatasync` that would have acknowledged them. Returns the segment's path,
/// its bytes as written (cache) and where the unsynced batch starts.
fn unsynced_batch(fs: &SimFs, batch: &[(Vec<u8>, Vec<u8>)]) -> (PathBuf, Vec<u8>, usize) {
    let config = PerCoreWalConfig::new(&wal_dir(), 1).with_segment_bytes(64 << 10);
    let mut m = PerCoreWalManager::builder(config)
        .file_system(fs.shared())
        .clock(StepClock::new(1_000_000, 1_000))
        .create()
        .unwrap();
    let w = m.writer(0);
    w.append_put(b"acked", b"must survive").unwrap();
    w.sync().unwrap();
    let path = w.path().to_path_buf();
    let synced = fs.read(&path).unwrap().len();
    for (k, v) in batch {
        w.append_put(k, v).unwrap();
    }
    fs.set_crash_at(Some(fs.ops() + 2)); // the append succeeds, the fdatasync dies
    assert!(w.sync().is_err());
    drop(m);
    let written = fs.read(&path).unwrap();
    (path, written, synced)
}

/// Recovers a 1-core WAL on `fs`; the acknowledged put must be there.
fn recover_one_core(fs: &SimFs) -> Result<PerCoreRecoveredState, PerCoreWalError> {
    let config = PerCoreWalConfig::new(&wal_dir(), 1).with_segment_bytes(64 << 10);
    let state = PerCoreRecoveryManager::with_file_system(config, fs.shared()).recover()?;
    assert_eq!(state.state.get(b"acked"), Some(&b"must survive"[..]));
    Ok(state)
}

/// The bytes of the record with sequence `seq` in a fresh 1-core WAL whose
/// clock is far ahead: a valid record, as an application might store one
/// (a replica keeping another node's log, a backup) as a value.
fn foreign_record(seq: u64) -> Vec<u8> {
    let fs = SimFs::new(99);
    let config = PerCoreWalConfig::new(Path::new("/other"), 1);
    let mut m = PerCoreWalManager::builder(config)
        .file_system(fs.shared())
        .clock(StepClock::new(1 << 60, 1))
        .create()
        .unwrap();
    for i in 0..=seq {
        m.writer(0)
            .append_put(format!("k{i}").as_bytes(), b"v")
            .unwrap();
    }
    m.writer(0).sync().unwrap();
    let bytes = fs.read(m.writer(0).path()).unwrap();
    let mut at = HEADER_LEN;
    for _ in 0..seq {
        at +=
            RECORD_HEADER_LEN + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    bytes[at..at + RECORD_HEADER_LEN + len].to_vec()
}

#[test]
fn a_torn_record_whose_value_embeds_a_record_is_still_a_torn_tail() {
    // The unsynced put's value carries a valid record (sequence 5, a later
    // timestamp). A crash keeps a prefix of the unsynced bytes that ends
    // after the embedded record but before the end of the put: what
    // `CrashMode::RandomPrefix` leaves for some seeds.
    let embedded = foreign_record(5);
    let mut value = vec![b'x'; 40];
    value.extend_from_slice(&embedded);
    value.extend_from_slice(&[b'y'; 40]);
    let fs = SimFs::new(1);
    let (path, written, synced) = unsynced_batch(&fs, &[(b"carrier".to_vec(), value)]);
    let embedded_end = written
        .windows(embedded.len())
        .position(|w| w == embedded)
        .unwrap()
        + embedded.len();
    assert!(embedded_end < written.len() && synced < embedded_end);
    fs.crash(CrashMode::DropUnsynced);
    fs.overwrite(&path, written[..embedded_end + 10].to_vec());
    // Nothing but the unsynced put is damaged, so this is a torn tail: the
    // acknowledged entry must be recovered and the tail truncated. (The
    // embedded record's sequence is outside what could follow the torn
    // bytes, so the reader does not take it for a record of this log.)
    let state = recover_one_core(&fs).unwrap();
    assert_eq!(state.entries_replayed, 1);
}

#[test]
fn a_hole_in_the_unsynced_tail_is_refused_naming_the_file_and_offset() {
    // One batch of 12 puts of ~900 bytes spans three pages; the power fails
    // during its fdatasync after the kernel wrote the first and the third
    // page but not the second, which reads as zeros (an unwritten extent).
    let batch: Vec<_> = (0..12u8)
        .map(|i| (format!("big{i}").into_bytes(), vec![b'a' + i; 900]))
        .collect();
    let fs = SimFs::new(2);
    let (path, written, synced) = unsynced_batch(&fs, &batch);
    let page = 4096;
    assert!(synced < page && written.len() > 2 * page + 1000);
    fs.crash(CrashMode::DropUnsynced);
    let mut left = written.clone();
    left[page..2 * page].fill(0);
    fs.overwrite(&path, left.clone());
    // The record the hole starts in, and the whole records before it (the
    // acknowledged one included).
    let (mut hole_record, mut whole) = (HEADER_LEN, 0);
    loop {
        let len = u32::from_le_bytes(written[hole_record..hole_record + 4].try_into().unwrap());
        let end = hole_record + RECORD_HEADER_LEN + len as usize;
        if end > page {
            break;
        }
        hole_record = end;
        whole += 1;
    }

    // The reader cannot tell this hole (after it, records that were never
    // acknowledged) from damage to synced bytes (after it, acknowledged
    // records): nothing on disk records how far an fdatasync got. Truncating
    // would silently drop acknowledged entries in the second case, so
    // recovery refuses, names the file and the offset, and changes nothing
    // (schemas/wal-format.md, 3.2).
    let err = recover_one_core(&fs).unwrap_err();
    let message = err.to_string();
    println!("hole at {page}..{}: {message}", 2 * page);
    match &err {
        PerCoreWalError::ChecksumMismatch {
            path: p, position, ..
        }
        | PerCoreWalError::Corrupted {
            path: p, position, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*position, hole_record as u64);
        }
        other => panic!("expected corruption at {hole_record}, got {other:?}"),
    }
    assert!(message.contains(&path.display().to_string()));
    assert!(message.contains(&hole_record.to_string()));
    assert_eq!(fs.read(&path).unwrap(), left, "nothing was truncated");
    // Opening the WAL for writing refuses too.
    let config = PerCoreWalConfig::new(&wal_dir(), 1).with_segment_bytes(64 << 10);
    assert!(PerCoreWalManager::builder(config)
        .file_system(fs.shared())
        .open()
        .is_err());

    // The operator's remedy, once they judge the records after the offset
    // expendable: truncate the segment there. The acknowledged put and the
    // whole records before the hole are recovered.
    fs.overwrite(&path, left[..hole_record].to_vec());
    let state = recover_one_core(&fs).unwrap();
    println!(
        "after truncating at {hole_record}: {} entries recovered (the acknowledged one and \
         {} unacknowledged whole records before the hole)",
        state.entries_replayed,
        whole - 1
    );
    assert_eq!(state.entries_replayed, whole);
}

// The simulated disk itself: each rule of the crash model, checked directly.

fn file(fs: &SimFs, name: &str) -> (PathBuf, Box<dyn WalFile>) {
    let dir = Path::new("/t");
    fs.create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let f = fs.create_new(&path).unwrap();
    (path, f)
}

#[test]
fn simfs_keeps_synced_bytes_and_drops_unsynced_ones() {
    let fs = SimFs::new(7);
    let (path, mut f) = file(&fs, "a");
    fs.sync_dir(Path::new("/t")).unwrap();
    f.append(b"durable").unwrap();
    f.sync_data().unwrap();
    f.append(b"-lost").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"durable-lost");
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(fs.read(&path).unwrap(), b"durable");
    // The old handle belongs to the dead process.
    assert!(f.append(b"x").is_err());
}

#[test]
fn simfs_random_prefix_and_garbage_keep_the_durable_part() {
    let mut prefixes = std::collections::BTreeSet::new();
    let mut garbage_lens = std::collections::BTreeSet::new();
    for seed in 0..200 {
        for mode in [CrashMode::RandomPrefix, CrashMode::GarbageTail] {
            let fs = SimFs::new(seed);
            let (path, mut f) = file(&fs, "a");
            fs.sync_dir(Path::new("/t")).unwrap();
            f.append(b"head").unwrap();
            f.sync_data().unwrap();
            f.append(b"0123456789").unwrap();
            fs.crash(mode);
            let data = fs.read(&path).unwrap();
            assert!(data.starts_with(b"head"), "{mode:?}: {data:?}");
            if mode == CrashMode::RandomPrefix {
                assert!(b"head0123456789".starts_with(&data));
                prefixes.insert(data.len());
            } else {
                garbage_lens.insert(data.len());
            }
        }
    }
    assert_eq!(
        prefixes.len(),
        11,
        "every prefix length occurs: {prefixes:?}"
    );
    // 4 durable bytes plus 1 to 10 of garbage: never longer than written.
    assert_eq!(
        garbage_lens,
        (5..=14).collect(),
        "every garbage length occurs"
    );
}

#[test]
fn simfs_directory_entries_need_sync_dir() {
    let fs = SimFs::new(3);
    let dir = Path::new("/t");
    let (kept, mut f) = file(&fs, "kept");
    f.append(b"k").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(dir).unwrap();
    let (vanishes, mut g) = file(&fs, "vanishes");
    g.append(b"v").unwrap();
    g.sync_data().unwrap(); // data synced, directory entry not
    fs.remove_file(&kept).unwrap(); // removal not synced
    assert_eq!(fs.list_dir(dir).unwrap(), vec!["vanishes".to_owned()]);
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(fs.list_dir(dir).unwrap(), vec!["kept".to_owned()]);
    assert_eq!(fs.read(&kept).unwrap(), b"k");
    assert!(fs.read(&vanishes).is_none());
    // A synced removal stays removed.
    fs.remove_file(&kept).unwrap();
    fs.sync_dir(dir).unwrap();
    fs.crash(CrashMode::RandomPrefix);
    assert!(fs.list_dir(dir).unwrap().is_empty());
}

#[test]
fn simfs_truncation_is_unsynced_until_sync_data() {
    let fs = SimFs::new(5);
    let (path, mut f) = file(&fs, "a");
    fs.sync_dir(Path::new("/t")).unwrap();
    f.append(b"0123456789").unwrap();
    f.sync_data().unwrap();
    f.set_len(4).unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(fs.read(&path).unwrap(), b"0123456789");
    let mut f = fs.open_write(&path).unwrap();
    f.set_len(4).unwrap();
    f.sync_data().unwrap();
    fs.crash(CrashMode::GarbageTail);
    assert_eq!(fs.read(&path).unwrap(), b"0123");
}

#[test]
fn simfs_crash_point_fails_that_operation_and_every_later_call() {
    let fs = SimFs::new(9);
    fs.set_crash_at(Some(4));
    let (path, mut f) = file(&fs, "a"); // ops 1 (mkdir) and 2 (create)
    f.append(b"x").unwrap(); // op 3
    assert!(f.sync_data().is_err()); // op 4: the crash point
    assert!(fs.failing());
    assert!(f.append(b"y").is_err());
    assert!(fs.list_dir(Path::new("/t")).is_err()); // reads fail too
    assert_eq!(fs.ops(), 4);
    fs.crash(CrashMode::DropUnsynced);
    // The creation was never made durable.
    assert!(fs.read(&path).is_none());
    assert!(fs.list_dir(Path::new("/t")).unwrap().is_empty());
}

#[test]
fn simfs_sync_data_noop_reports_success_but_keeps_nothing() {
    let fs = SimFs::new(11);
    let (path, mut f) = file(&fs, "a");
    fs.sync_dir(Path::new("/t")).unwrap();
    fs.set_sync_data_noop(true);
    f.append(b"acked?").unwrap();
    f.sync_data().unwrap();
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(fs.read(&path).unwrap(), b"");
    let _: Arc<dyn WalFileSystem> = fs.shared();
}
