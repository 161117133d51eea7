//! The three libc calls xtask needs, declared directly so that xtask depends on nothing but
//! anyhow and clap (std already links libc on Linux).

use std::sync::atomic::{AtomicBool, Ordering};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
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
