//! The few libc calls xtask needs, declared directly so that xtask depends on nothing but
//! anyhow and clap (std already links libc on Linux).

use std::sync::atomic::{AtomicBool, Ordering};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// CPU time of the calling thread in ns (user + system, CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// True if the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

/// Send SIGTERM to a process (or, with a negative pid, a process group). Errors are ignored:
/// the target may already be gone.
pub fn terminate(pid: i32) {
    // SAFETY: plain syscall wrapper; an invalid pid only yields ESRCH.
    unsafe {
        kill(pid, SIGTERM);
    }
}

/// Route SIGINT and SIGTERM to a flag instead of killing xtask, so that it can stop its
/// children cleanly. Query with [`interrupted`].
pub fn catch_interrupts() {
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
