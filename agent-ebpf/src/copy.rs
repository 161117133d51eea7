//! Word-by-word copies and zeroing of map values. A plain struct assignment or `Default` makes
//! LLVM emit a call to `memmove`/`memset`, which the BPF target turns into a byte loop of about
//! eight instructions per byte (a 32-byte `FrameState` round trip cost ~500 instructions per
//! syscall). Volatile 8-byte accesses are neither merged back into such a call nor reordered, and
//! the loops below are unrolled (their trip count is a constant).
use core::{
    mem::{align_of, size_of},
    ptr::{read_volatile, write_volatile},
};

/// `*dst = *src` for a type that is a whole number of aligned 8-byte words.
#[inline(always)]
pub fn copy<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let (d, s) = (dst as *mut T as *mut u64, src as *const T as *const u64);
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: both point to valid, 8-aligned `T`s of size_of::<T>() / 8 words.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        i += 1;
    }
}

/// `*dst = all zero bits` (the `Default` of every type it is used on).
#[inline(always)]
pub fn zero<T: Copy>(dst: &mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let d = dst as *mut T as *mut u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: as above; all-zero is a valid value of the plain integer types used here.
        unsafe { write_volatile(d.add(i), 0) };
        i += 1;
    }
}
