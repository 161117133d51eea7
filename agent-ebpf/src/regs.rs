//! Syscall numbers and `pt_regs` layout of the target architecture. `pt_regs` is the stable
//! ptrace ABI, and the saved argument registers are unchanged at `sys_exit` (only the return
//! register is written), so the exit hook reads the arguments there and needs no per-thread stash.

use aya_ebpf::helpers::bpf_probe_read_kernel;

#[cfg(not(bpf_target_arch = "aarch64"))]
mod arch {
    /// di, si, dx, r10, r8, r9.
    pub const ARG_OFF: [usize; 6] = [112, 104, 96, 56, 72, 64];
    /// orig_ax.
    pub const NR_OFF: usize = 120;
    pub type Nr = i64;
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
    /// syscallno (s32).
    pub const NR_OFF: usize = 280;
    pub type Nr = i32;
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

/// The syscall number, at `sys_exit`.
#[inline(always)]
pub fn nr(regs: *const u8) -> Result<i64, i64> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(regs.add(NR_OFF) as *const Nr) }
        .map(|v| v as i64)
        .map_err(|e| e as i64)
}
