//! Appending a put or a delete makes no heap allocation once the writer's
//! buffer has grown: proven with a counting global allocator.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use walhouse::per_core_wal::{PerCoreWalConfig, PerCoreWalManager};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only counts and forwards to System"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn appends_do_not_allocate() {
    let tmp = tempfile::tempdir().unwrap();
    let config = PerCoreWalConfig::new(tmp.path(), 1).with_segment_bytes(1 << 30);
    let mut m = PerCoreWalManager::new(config).unwrap();
    let w = m.writer(0);
    let key = [7u8; 16];
    let value = [9u8; 100];
    // Warm up: the buffer reaches its size and is handed to the file once.
    for _ in 0..5_000 {
        w.append_put(&key, &value).unwrap();
    }
    let appends = 100_000u64;
    COUNTING.store(true, Ordering::SeqCst);
    for i in 0..appends {
        if i % 10 == 0 {
            w.append_delete(&key).unwrap();
        } else {
            w.append_put(&key, &value).unwrap();
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    println!(
        "appends: {appends} (buffer handed to the file {} times); heap allocations: {allocations}",
        appends * 137 / (256 << 10)
    );
    assert_eq!(allocations, 0);
    w.sync().unwrap();
}
