//! Word-by-word copies and zeroing of map values. A plain struct assignment or `Default` makes
//! LLVM emit a call to `memmove`/`memset`, which the BPF target turns into a byte loop of about
//! eight instructions per byte (a 32-byte `FrameState` round trip cost ~500 instructions per
//! syscall). Volatile 8-byte accesses are neither merged back into such a call nor reordered, and
//! the loops below are unrolled (their trip count is a constant).
use core::{
    mem::{align_of, size_of},
    ptr::{read_volatile, write_volatile},
};

use wsguard_common::frame::{FrameHot, FrameState};

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

/// Load a direction's framing state into the walk: the hot 16 bytes, and the partial header
/// only when one is pending (else the walk's stale `hdr` is never read: the parser only reads
/// it while `hdr_len > 0`). Keeps the connection's cold line untouched on the common path.
#[inline(always)]
pub fn frame_in(fs: &mut FrameState, hot: &FrameHot, hdr: &[u64; 2]) {
    let d = fs as *mut FrameState as *mut u64;
    let s = hot as *const FrameHot as *const u64;
    // SAFETY: FrameState is FrameHot (2 words) followed by its 16-byte header (2 words), 8-byte
    // aligned (layout test in wsguard-common's conn.rs).
    unsafe {
        write_volatile(d, read_volatile(s));
        write_volatile(d.add(1), read_volatile(s.add(1)));
        if hot.hdr_len != 0 {
            write_volatile(d.add(2), hdr[0]);
            write_volatile(d.add(3), hdr[1]);
        }
    }
}

/// Store the walk's framing state back (the inverse of [`frame_in`]).
#[inline(always)]
pub fn frame_out(hot: &mut FrameHot, hdr: &mut [u64; 2], fs: &FrameState) {
    let s = fs as *const FrameState as *const u64;
    let d = hot as *mut FrameHot as *mut u64;
    // SAFETY: as in frame_in.
    unsafe {
        write_volatile(d, read_volatile(s));
        write_volatile(d.add(1), read_volatile(s.add(1)));
        if fs.hdr_len != 0 {
            hdr[0] = read_volatile(s.add(2));
            hdr[1] = read_volatile(s.add(3));
        }
    }
}
