//! A segment cut at every byte offset reads back exactly the records wholly
//! before the cut, and recovery truncates the torn tail (and only it).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::many_single_char_names
)]

mod common;

use std::path::Path;

use walhouse::per_core_wal::{
    PerCoreRecoveryManager, PerCoreWalConfig, PerCoreWalManager, PerCoreWalReader, WalReadResult,
    HEADER_LEN,
};

/// Writes one segment with records of varied sizes; returns its bytes and the
/// end offset of every record.
fn one_segment(dir: &Path) -> (Vec<u8>, Vec<u64>) {
    let mut m = PerCoreWalManager::new(PerCoreWalConfig::new(dir, 1)).unwrap();
    let w = m.writer(0);
    let mut ends = Vec::new();
    for i in 0..40u64 {
        let (k, v) = common::kv(i, (i as usize * 7) % 90);
        match i % 5 {
            0 => w.append_delete(&k).unwrap(),
            1 => w.append_checkpoint(i).unwrap(),
            _ => w.append_put(&k, &v).unwrap(),
        };
        ends.push(w.position());
    }
    w.sync().unwrap();
    let path = w.path().to_path_buf();
    drop(m);
    (std::fs::read(path).unwrap(), ends)
}

#[test]
fn truncation_at_every_offset_keeps_exactly_the_whole_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, ends) = one_segment(&tmp.path().join("src"));
    let full: Vec<_> = {
        let p = tmp.path().join("full.log");
        std::fs::write(&p, &bytes).unwrap();
        PerCoreWalReader::open(0, &p).unwrap().read_all().unwrap()
    };
    assert_eq!(full.len(), ends.len());

    let cut_path = tmp.path().join("cut.log");
    let (mut header_errors, mut torn, mut clean) = (0, 0, 0);
    for cut in 0..=bytes.len() {
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let opened = PerCoreWalReader::open(0, &cut_path);
        if cut < HEADER_LEN {
            let err = opened.unwrap_err().to_string();
            assert!(err.contains("cut.log"), "error names the file: {err}");
            header_errors += 1;
            continue;
        }
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
        let valid_end = if whole == 0 {
            HEADER_LEN as u64
        } else {
            ends[whole - 1]
        };

        let mut reader = opened.unwrap();
        let mut got = Vec::new();
        let last = loop {
            match reader.read_next().unwrap() {
                WalReadResult::Entry(e) => got.push(e),
                other => break other,
            }
        };
        assert_eq!(got, full[..whole], "cut at {cut}");
        match last {
            WalReadResult::Eof => {
                assert_eq!(valid_end, cut as u64, "clean end only at a record boundary");
                clean += 1;
            }
            WalReadResult::TornWrite { position, .. } => {
                assert_eq!(
                    position, valid_end,
                    "torn tail starts after the last whole record"
                );
                torn += 1;
            }
            other => panic!("cut at {cut}: unexpected {other:?}"),
        }
        let mut again = PerCoreWalReader::open(0, &cut_path).unwrap();
        assert_eq!(again.find_valid_end().unwrap(), valid_end, "cut at {cut}");
    }
    println!(
        "cuts tried: {}; header too short: {header_errors}; clean ends: {clean}; torn tails: {torn}; \
         records lost beyond the cut: 0",
        bytes.len() + 1
    );
    assert_eq!(clean, ends.len() + 1);
}

#[test]
fn recovery_truncates_a_torn_tail_at_every_offset_and_keeps_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, ends) = one_segment(&tmp.path().join("src"));
    let wal = tmp.path().join("wal");
    let mut checked = 0;
    // Every offset inside the records (the header is synced before any
    // record, so a torn header is a different case, tested elsewhere).
    for cut in HEADER_LEN..=bytes.len() {
        let _ = std::fs::remove_dir_all(&wal);
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("wal-0-0000000000.log"), &bytes[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
        let valid_end = if whole == 0 {
            HEADER_LEN as u64
        } else {
            ends[whole - 1]
        };

        let recovery = PerCoreRecoveryManager::new(PerCoreWalConfig::new(&wal, 1));
        let state = recovery.recover().unwrap();
        assert_eq!(state.wal_positions, vec![valid_end], "cut at {cut}");
        assert_eq!(state.truncated_bytes, vec![cut as u64 - valid_end]);
        assert_eq!(state.entries_replayed, whole, "cut at {cut}");
        assert_eq!(state.next_sequences, vec![whole as u64]);
        let len = std::fs::metadata(wal.join("wal-0-0000000000.log"))
            .unwrap()
            .len();
        assert_eq!(len, valid_end, "the torn tail is truncated on disk");
        // Idempotent: a second recovery finds nothing to repair, same state.
        let again = recovery.recover().unwrap();
        assert_eq!(again.truncated_bytes, vec![0]);
        assert_eq!(again.state, state.state);
        checked += 1;
    }
    println!("torn-tail recoveries checked: {checked}, entries lost before the cut: 0");
}

#[test]
fn zero_filled_tail_reads_as_end_of_log_and_open_truncates_it() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let (bytes, ends) = one_segment(&tmp.path().join("src"));
    std::fs::create_dir_all(&wal).unwrap();
    let seg = wal.join("wal-0-0000000000.log");
    let mut padded = bytes.clone();
    padded.extend(std::iter::repeat_n(0u8, 1 << 20)); // a preallocated tail
    std::fs::write(&seg, &padded).unwrap();

    let mut reader = PerCoreWalReader::open(0, &seg).unwrap();
    assert_eq!(
        reader.by_ref().count(),
        ends.len(),
        "iteration ends at the zeros, no error"
    );
    let mut reader = PerCoreWalReader::open(0, &seg).unwrap();
    assert_eq!(reader.find_valid_end().unwrap(), bytes.len() as u64);

    let mut m = PerCoreWalManager::open(PerCoreWalConfig::new(&wal, 1)).unwrap();
    assert_eq!(m.open_reports()[0].truncated_bytes, 1 << 20);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64);
    assert_eq!(
        m.writer(0).sequence(),
        ends.len() as u64,
        "sequences continue"
    );
    assert_eq!(m.merge_segments().unwrap().len(), ends.len());
}
