//! `walhouse::malloc::tune_malloc` on glibc: blocks below the new mmap
//! threshold come from malloc's heaps instead of mappings of their own.
//!
//! Alone in its test binary, so no other test moves glibc's thresholds
//! first. The untuned step is the control: it shows that the measurement
//! (`mallinfo2().hblkhd`, bytes in blocks mapped on their own) sees a block
//! that glibc maps by default.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use walhouse::malloc::{tune_malloc, MallocTuning, MMAP_THRESHOLD_BYTES};

/// Bytes in blocks that glibc mapped on their own, right now.
fn mapped_bytes() -> usize {
    #[expect(
        unsafe_code,
        reason = "mallinfo2 is a C function that only reads the allocator's counters"
    )]
    // SAFETY: see the reason above (glibc 2.33 or later).
    let info = unsafe { libc::mallinfo2() };
    info.hblkhd
}

/// Growth of [`mapped_bytes`] while a block of `bytes` (touched) is alive.
fn mapped_growth(bytes: usize) -> usize {
    let before = mapped_bytes();
    let block = vec![1_u8; bytes];
    let during = mapped_bytes();
    std::hint::black_box(&block);
    during.saturating_sub(before)
}

#[test]
fn blocks_below_the_threshold_come_from_the_heap_after_tuning() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        assert_eq!(tune_malloc(), MallocTuning::UserTunables);
        println!("GLIBC_TUNABLES sets malloc parameters here: tune_malloc kept them");
        return;
    }
    let small = 1 << 20;
    let below = MMAP_THRESHOLD_BYTES - (1 << 20);
    let above = MMAP_THRESHOLD_BYTES + (4 << 20);

    // Control: glibc's default threshold starts at 128 KiB. Freeing the
    // mapped block raises glibc's adaptive threshold to its size only, so
    // without tune_malloc a `below`-byte block would still be mapped.
    let untuned = mapped_growth(small);
    assert!(
        untuned >= small,
        "untuned, a {small}-byte block should be mapped on its own; mapped bytes grew by {untuned}"
    );

    assert_eq!(tune_malloc(), MallocTuning::Applied);
    let tuned_below = mapped_growth(below);
    let tuned_above = mapped_growth(above);
    println!(
        "untuned: a {small}-byte block mapped on its own (+{untuned} mapped bytes); \
         after tune_malloc: a {below}-byte block from the heap (+{tuned_below}), \
         a {above}-byte block still mapped (+{tuned_above})"
    );
    assert_eq!(
        tuned_below, 0,
        "after tune_malloc the block should come from a heap"
    );
    assert!(
        tuned_above >= above,
        "blocks above the threshold are still mapped"
    );
}
