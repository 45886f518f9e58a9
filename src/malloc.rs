//! Process-wide glibc malloc parameters for checkpoint work: opt-in, set
//! once from `main` (the `walhouse` binary and the checkpoint bench do).
//!
//! The Parquet encoder allocates a buffer of up to a page (1 MiB) per page
//! and column, and the pages of a row group (up to a few MiB a column), and
//! frees them when the row group is written. glibc's defaults hand such
//! blocks back to the kernel (`munmap`, or trimming the heap top) and take
//! fresh zeroed pages for the next ones, so the encoder thread, which is
//! the checkpoint's critical path, spends its time in page faults.
//! [`tune_malloc`] keeps blocks below [`MMAP_THRESHOLD_BYTES`] in malloc's
//! heaps and lets up to [`TRIM_THRESHOLD_BYTES`] of free memory stay at a
//! heap's top, so the next row group reuses them: faster checkpoints for a
//! little more resident memory (the measurement is in the history of
//! BENCHMARKS.md, `bench/history/`).
//!
//! These are glibc's `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` (see
//! `mallopt(3)`); other allocators and C libraries are left alone.

/// Allocations of at least this many bytes get their own mapping (glibc's
/// default starts at 128 KiB and adapts up to 32 MiB).
pub const MMAP_THRESHOLD_BYTES: usize = 8 << 20;

/// Free memory at the top of a heap beyond this many bytes goes back to the
/// kernel (glibc's default: twice the adaptive mmap threshold).
pub const TRIM_THRESHOLD_BYTES: usize = 64 << 20;

/// What [`tune_malloc`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocTuning {
    /// Both thresholds are set.
    Applied,
    /// `GLIBC_TUNABLES` already sets malloc parameters: the user's choice
    /// stands and nothing was changed.
    UserTunables,
    /// Not glibc, or glibc refused a value: malloc keeps its defaults (a
    /// refused second value leaves the first one set).
    Unsupported,
}

/// Sets glibc malloc's mmap and trim thresholds for checkpoint work
/// ([`MMAP_THRESHOLD_BYTES`], [`TRIM_THRESHOLD_BYTES`]), unless the
/// `GLIBC_TUNABLES` environment variable already sets any `glibc.malloc.`
/// parameter.
///
/// Process-wide and meant for `main`, before work starts; calling it later
/// or twice is harmless. A library never calls it on its own.
#[must_use = "says whether the parameters were set"]
pub fn tune_malloc() -> MallocTuning {
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if user_sets_malloc(tunables.as_deref()) {
        return MallocTuning::UserTunables;
    }
    if set_thresholds() {
        MallocTuning::Applied
    } else {
        MallocTuning::Unsupported
    }
}

/// Whether a `GLIBC_TUNABLES` value sets a malloc parameter.
fn user_sets_malloc(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| {
        t.split(':')
            .any(|item| item.trim_start().starts_with("glibc.malloc."))
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    let (Ok(mmap), Ok(trim)) = (
        libc::c_int::try_from(MMAP_THRESHOLD_BYTES),
        libc::c_int::try_from(TRIM_THRESHOLD_BYTES),
    ) else {
        return false;
    };
    #[expect(
        unsafe_code,
        reason = "mallopt is a C function: it only sets allocator parameters, under the \
                  allocator's own lock, and may be called from any thread at any time"
    )]
    // SAFETY: see the reason above; both values are within glibc's ranges
    // (the mmap threshold at most 32 MiB on 64-bit, the trim threshold any).
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    applied
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_tunables_for_malloc_are_kept() {
        assert!(!user_sets_malloc(None));
        assert!(!user_sets_malloc(Some("")));
        assert!(!user_sets_malloc(Some("glibc.pthread.rseq=0")));
        assert!(user_sets_malloc(Some("glibc.malloc.trim_threshold=1")));
        assert!(user_sets_malloc(Some(
            "glibc.pthread.rseq=0:glibc.malloc.mmap_threshold=4096"
        )));
    }
}
