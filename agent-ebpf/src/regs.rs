//! Syscall numbers and `pt_regs` layout of the target architecture. `pt_regs` is the stable
//! ptrace ABI, and the saved argument registers are unchanged at `sys_exit` (only the return
//! register is written), so the exit hook reads the arguments there and needs no per-thread stash.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated};

use crate::record::Dir;

/// `recv*` flag: look at the data without consuming it (nothing moved, nothing to count).
pub const MSG_PEEK: u64 = 2;

#[cfg(not(bpf_target_arch = "aarch64"))]
mod arch {
    /// di, si, dx, r10, r8, r9.
    pub const ARG_OFF: [usize; 6] = [112, 104, 96, 56, 72, 64];
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const SENDMSG: i64 = 46;
    pub const RECVMSG: i64 = 47;
    pub const ACCEPT4: i64 = 288;
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    /// orig_x0 (x0 holds the return value at exit), x1..x5.
    pub const ARG_OFF: [usize; 6] = [272, 8, 16, 24, 32, 40];
    pub const READ: i64 = 63;
    pub const WRITE: i64 = 64;
    pub const CLOSE: i64 = 57;
    pub const READV: i64 = 65;
    pub const WRITEV: i64 = 66;
    pub const ACCEPT: i64 = 202;
    pub const SENDTO: i64 = 206;
    pub const RECVFROM: i64 = 207;
    pub const SENDMSG: i64 = 211;
    pub const RECVMSG: i64 = 212;
    pub const ACCEPT4: i64 = 242;
}

pub use arch::*;

/// Syscall argument `n` (0..6) from the saved user registers.
#[inline(always)]
pub fn arg(regs: *const u8, n: usize) -> Result<u64, i64> {
    let off = ARG_OFF[n];
    // SAFETY: reads kernel memory through the helper, which tolerates faults.
    unsafe { bpf_probe_read_kernel(regs.add(off) as *const u64) }.map_err(|e| e as i64)
}

/// The syscall number and its first three arguments, at `sys_exit`.
pub struct Syscall {
    pub nr: i64,
    pub a0: u64,
    pub a1: u64,
    pub a2: u64,
}

/// Copy `N` words at `regs + off` (one helper call).
#[inline(always)]
fn words<const N: usize>(regs: *const u8, off: usize) -> Result<[u64; N], i64> {
    let mut w = MaybeUninit::<[u64; N]>::uninit();
    // SAFETY: the helper writes all N words or fails (and then zeroes them).
    let rc = unsafe {
        generated::bpf_probe_read_kernel(w.as_mut_ptr() as *mut c_void, (N * 8) as u32, regs.add(off) as *const c_void)
    };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: initialised by the helper.
    Ok(unsafe { w.assume_init() })
}

/// x86_64: dx, si, di and orig_ax are adjacent (offsets 96..128), so one read gets them all.
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
pub fn syscall(regs: *const u8) -> Result<Syscall, i64> {
    let w = words::<4>(regs, 96)?;
    Ok(Syscall { nr: w[3] as i64, a0: w[2], a1: w[1], a2: w[0] })
}

/// Socket mode: the same from the task's `pt_regs` as `bpf_task_pt_regs` returns it, a BTF
/// pointer the verifier types as `struct pt_regs`: plain loads it checks against the kernel's
/// BTF (each one a fault-tolerant `PROBE_MEM` load), no helper call. (Unused by the syscall
/// mode's object, whose raw tracepoint hands an untyped pointer.)
#[allow(dead_code)]
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
pub fn syscall_btf(regs: *const u8) -> Syscall {
    // SAFETY: `regs` is the helper's non-null BTF pointer to `struct pt_regs`; the verifier
    // checks each offset (dx, si, di, orig_ax) against the kernel's type and the JIT makes the
    // loads fault-tolerant.
    unsafe {
        let w = |off: usize| core::ptr::read_volatile(regs.add(off) as *const u64);
        Syscall { nr: w(120) as i64, a0: w(112), a1: w(104), a2: w(96) }
    }
}

/// aarch64: as [`syscall`] (a helper read; not measured there).
#[allow(dead_code)]
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn syscall_btf(regs: *const u8) -> Syscall {
    syscall(regs).unwrap_or(Syscall { nr: -1, a0: 0, a1: 0, a2: 0 })
}

/// aarch64: orig_x0 and syscallno (s32) at 272..284, x1 and x2 at 8..24.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn syscall(regs: *const u8) -> Result<Syscall, i64> {
    let hi = words::<2>(regs, 272)?;
    let nr = (hi[1] & 0xffff_ffff) as u32 as i32 as i64;
    if !matches!(nr, READ | WRITE | READV | WRITEV | SENDTO | RECVFROM | SENDMSG | RECVMSG) {
        // Not a data syscall: its other arguments are not needed (a second helper call saved).
        return Ok(Syscall { nr, a0: hi[0], a1: 0, a2: 0 });
    }
    let lo = words::<2>(regs, 8)?;
    Ok(Syscall { nr, a0: hi[0], a1: lo[0], a2: lo[1] })
}

/// The direction of a read or write syscall whose buffers the probe can follow (None for any
/// other syscall: io_uring_enter, sendfile, splice, recvmmsg/sendmmsg, ...).
#[inline(always)]
pub fn data_dir(nr: i64) -> Option<Dir> {
    match nr {
        READ | READV | RECVFROM | RECVMSG => Some(Dir::Rx),
        WRITE | WRITEV | SENDTO | SENDMSG => Some(Dir::Tx),
        _ => None,
    }
}

/// The buffers of a data syscall (see [`data_dir`]): (flat buffer, iovec array, iovec count);
/// None for a `MSG_PEEK` receive, which moves nothing. `peek_known`: the caller already knows
/// the receive is no `MSG_PEEK` (the socket mode's hook gets the flags), so `recvfrom`'s fourth
/// argument is not read.
#[inline(always)]
pub fn buffers(r: *const u8, sc: &Syscall, peek_known: bool) -> Result<Option<(u64, u64, u64)>, i64> {
    Ok(Some(match sc.nr {
        READ | WRITE | SENDTO => (sc.a1, 0, 0),
        RECVFROM => {
            if !peek_known && arg(r, 3)? & MSG_PEEK != 0 {
                return Ok(None);
            }
            (sc.a1, 0, 0)
        }
        READV | WRITEV => (0, sc.a1, sc.a2),
        _ => {
            // recvmsg/sendmsg. struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            if !peek_known && sc.nr == RECVMSG && sc.a2 & MSG_PEEK != 0 {
                return Ok(None);
            }
            // SAFETY: user pointers read through the helper.
            let iov: u64 = unsafe { bpf_probe_read_user((sc.a1 + 16) as *const u64) }.map_err(|e| e as i64)?;
            let cnt: u64 = unsafe { bpf_probe_read_user((sc.a1 + 24) as *const u64) }.map_err(|e| e as i64)?;
            (0, iov, cnt)
        }
    }))
}
