//! Atomic read-modify-write on map values. `core::sync::atomic` offers no RMW on the BPF target,
//! so this uses the intrinsics (lowered to BPF_ATOMIC instructions); results are never used.
use core::intrinsics::{atomic_or, atomic_xadd, AtomicOrdering};

/// `*p += v`, atomically; skipped for 0.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    if v != 0 {
        // SAFETY: callers pass pointers into map values, valid while the program runs.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
    }
}

/// `*p |= v`, atomically.
#[inline(always)]
pub fn or(p: *mut u64, v: u64) {
    // SAFETY: as above.
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
