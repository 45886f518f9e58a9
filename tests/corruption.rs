//! Corruption is detected and reported with the file and offset: random bit
//! flips in sealed segments, flips in the middle of the newest segment, and
//! gaps between segments.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::many_single_char_names
)]

mod common;

use std::path::{Path, PathBuf};

use rand_like::Rng;
use walhouse::per_core_wal::{
    ErrorKind, PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalError, PerCoreWalManager,
};

/// A tiny deterministic generator (xorshift), so the test needs no extra crate.
mod rand_like {
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}

/// A WAL of 2 cores with several sealed segments each; returns the sealed
/// segment files and, per core, the newest one.
fn build_wal(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut m = common::small_manager(dir, 2, 4096);
    for i in 0..300u64 {
        let core = (i % 2) as usize;
        let (k, v) = common::kv(i, 40 + (i as usize % 60));
        let w = m.writer(core);
        if i % 7 == 0 {
            w.append_delete(&k).unwrap();
        } else {
            w.append_put(&k, &v).unwrap();
        }
        if i % 50 == 49 {
            let e = m.advance_epoch();
            m.set_epoch_all(e);
            m.write_epoch_barrier_all().unwrap();
        }
    }
    m.sync_all().unwrap();
    drop(m);
    let mut sealed = Vec::new();
    let mut newest = Vec::new();
    for core in 0..2 {
        let mut segs = common::core_segments(dir, core);
        newest.push(segs.pop().unwrap());
        sealed.extend(segs);
    }
    (sealed, newest)
}

fn recover(dir: &Path) -> Result<usize, PerCoreWalError> {
    PerCoreRecoveryManager::new(PerCoreWalConfig::new(dir, 2))
        .recover()
        .map(|s| s.entries_replayed)
}

#[test]
fn every_single_bit_flip_in_a_sealed_segment_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let (sealed, _) = build_wal(tmp.path());
    let clean = recover(tmp.path()).unwrap();
    assert!(sealed.len() >= 10, "the workload must seal many segments");
    let originals: Vec<Vec<u8>> = sealed.iter().map(|p| std::fs::read(p).unwrap()).collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let injected = 10_000;
    let (mut detected, mut named_file) = (0, 0);
    for _ in 0..injected {
        let which = rng.below(sealed.len() as u64) as usize;
        let bytes = &originals[which];
        let bit = rng.below(bytes.len() as u64 * 8);
        let mut flipped = bytes.clone();
        flipped[(bit / 8) as usize] ^= 1 << (bit % 8);
        std::fs::write(&sealed[which], &flipped).unwrap();
        match recover(tmp.path()) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                detected += 1;
                let name = sealed[which].file_name().unwrap().to_str().unwrap();
                if e.to_string().contains(name) {
                    named_file += 1;
                }
            }
            Ok(n) => panic!(
                "flip of bit {bit} in {} went unnoticed ({n} entries)",
                sealed[which].display()
            ),
        }
        std::fs::write(&sealed[which], bytes).unwrap();
    }
    println!(
        "bit flips injected in {} sealed segments: {injected}; detected: {detected}; \
         errors naming the file: {named_file}",
        sealed.len()
    );
    assert_eq!(detected, injected);
    assert_eq!(named_file, injected);
    assert_eq!(
        recover(tmp.path()).unwrap(),
        clean,
        "restored WAL recovers fully"
    );
}

#[test]
fn a_flip_before_the_last_record_of_the_newest_segment_is_not_taken_for_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = build_wal(tmp.path());
    // Reopen (the writer starts a new segment) and append a few records.
    let mut m = PerCoreWalManager::open(PerCoreWalConfig::new(tmp.path(), 2)).unwrap();
    for i in 0..12u64 {
        let (k, v) = common::kv(1000 + i, 30);
        m.writer(0).append_put(&k, &v).unwrap();
    }
    m.sync_all().unwrap();
    let path = &m.segment_path(0);
    drop(m);
    let original = std::fs::read(path).unwrap();
    let clean = recover(tmp.path()).unwrap();
    // Offsets of the records of the newest segment, from a reader.
    let mut reader = walhouse::per_core_wal::PerCoreWalReader::open(0, path).unwrap();
    let mut ends = vec![reader.position()];
    while let walhouse::per_core_wal::WalReadResult::Entry(_) = reader.read_next().unwrap() {
        ends.push(reader.position());
    }
    assert!(
        ends.len() >= 4,
        "need a few records, got {}",
        ends.len() - 1
    );
    // Flip every bit of every record but the last one.
    let (from, to) = (ends[0], ends[ends.len() - 2]);
    let mut detected = 0;
    let mut tried = 0;
    for bit in (from * 8)..(to * 8) {
        let mut flipped = original.clone();
        flipped[(bit / 8) as usize] ^= 1 << (bit % 8);
        std::fs::write(path, &flipped).unwrap();
        tried += 1;
        match recover(tmp.path()) {
            Err(e) => {
                assert!(e.to_string().contains("offset"), "{e}");
                detected += 1;
            }
            Ok(n) => panic!("flip of bit {bit} silently dropped {} entries", clean - n),
        }
        std::fs::write(path, &original).unwrap();
    }
    println!("flips before the newest segment's last record: {tried}; detected: {detected}");
    assert_eq!(detected, tried);
    assert_eq!(recover(tmp.path()).unwrap(), clean);
}

#[test]
fn a_missing_middle_segment_is_a_gap_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _) = build_wal(tmp.path());
    let segs = common::core_segments(tmp.path(), 1);
    let victim = &segs[segs.len() / 2];
    std::fs::remove_file(victim).unwrap();
    let err = recover(tmp.path()).unwrap_err();
    println!("missing segment: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("missing"), "{err}");
    // Opening for writing refuses too: nothing would silently skip it.
    let err = PerCoreWalManager::open(PerCoreWalConfig::new(tmp.path(), 2)).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn records_lost_at_the_end_of_a_sealed_segment_are_a_sequence_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = build_wal(tmp.path());
    let segs = common::core_segments(tmp.path(), 0);
    let victim = &segs[1];
    // Cut the sealed segment after its first record: a clean record
    // boundary, so only the sequence numbering can tell.
    let mut reader = walhouse::per_core_wal::PerCoreWalReader::open(0, victim).unwrap();
    reader.read_next().unwrap();
    let cut = reader.position();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    file.set_len(cut).unwrap();
    let err = recover(tmp.path()).unwrap_err();
    println!("cut sealed segment: {err}");
    assert!(
        matches!(err, PerCoreWalError::SequenceGap { core_id: 0, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(segs[2].file_name().unwrap().to_str().unwrap()));
}

#[test]
fn segments_of_a_core_beyond_the_configuration_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = build_wal(tmp.path());
    let err = PerCoreWalManager::open(PerCoreWalConfig::new(tmp.path(), 1)).unwrap_err();
    println!("{err}");
    assert!(
        matches!(err, PerCoreWalError::UnexpectedCore { core_id: 1, .. }),
        "{err}"
    );
}
