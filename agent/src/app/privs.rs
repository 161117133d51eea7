//! Dropping capabilities once the probe is attached.
//!
//! The agent needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN only to load, attach and pin the probe
//! and to mount tracefs/bpffs. After that it reads the maps through file descriptors it already
//! holds, and keeps only what later work still uses (`KEEP`, plus what the configured
//! remediation actions use). A compromised agent then cannot
//! load eBPF programs or write kernel memory, and the bounding, inheritable and ambient sets are
//! emptied and `no_new_privs` is set, so commands it starts get no capability at all.
//!
//! Capabilities are a property of each *thread*, and by the time the probe is attached the tokio
//! runtime has started its workers. So, like glibc does for `setuid()`, every thread is sent a
//! real-time signal whose handler makes the same raw `prctl`/`capset` calls, and the result is
//! checked in `/proc/self/task/*/status` until every thread has the new sets. The `caps` crate
//! (well kept, typed capability names) is used for everything outside the handler; the handler
//! itself only makes raw system calls, which are async-signal-safe (`caps` allocates).

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use caps::{CapSet, Capability};

use crate::util::caps::ThreadCaps;

/// What the agent always keeps after the probe is attached, when it had it to begin with:
/// reading `/proc/PID/{fd,limits,...}` of other users' processes (SYS_PTRACE, DAC_READ_SEARCH).
/// Remediation actions add theirs (`RemediationConfig::capabilities`: NET_ADMIN for
/// SOCK_DESTROY, KILL, SYS_RESOURCE for prlimit, SETUID/SETGID for exec as another user) only
/// when one is configured to act.
pub const KEEP: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// The capabilities that make `bpf()` privileged (`bpf_capable()` in the kernel).
const BPF_CAPS: [Capability; 2] = [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN];

/// The outcome, for the start-up log and the tests.
#[derive(Debug)]
pub struct Dropped {
    /// Permitted = effective set of every thread now.
    pub kept: Vec<Capability>,
    /// The bounding set was emptied (needs CAP_SETPCAP; without it the bounding set stays as
    /// it was and `no_new_privs` alone keeps children from gaining more than `kept`).
    pub bounding_cleared: bool,
    /// This kernel refuses map reads through an open fd without CAP_BPF/CAP_SYS_ADMIN (kernels
    /// before 6.5 with `kernel.unprivileged_bpf_disabled` set), so one of them was kept.
    pub bpf_kept: Option<Capability>,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.kept.iter().map(|c| c.to_string()).collect();
        write!(f, "capabilities dropped on every thread; kept [{}]", names.join(", "))?;
        if let Some(c) = self.bpf_kept {
            write!(f, " ({c} kept: this kernel refuses map reads without it)")?;
        }
        if !self.bounding_cleared {
            write!(f, "; bounding set left as is (no CAP_SETPCAP), no_new_privs set")?;
        }
        Ok(())
    }
}

/// Drop to `KEEP` plus `extra` on every thread. `map_check` must read the probe's maps the way
/// the agent does later; it decides whether this kernel needs CAP_BPF for that, and must still
/// work after.
pub fn drop_after_attach(extra: &[Capability], map_check: impl Fn() -> anyhow::Result<()>) -> anyhow::Result<Dropped> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading the permitted capabilities")?;
    let bpf_kept = if BPF_CAPS.iter().any(|c| permitted.contains(c)) && !works_without_bpf_caps(&map_check)? {
        BPF_CAPS.iter().copied().find(|c| permitted.contains(c))
    } else {
        None
    };
    let keep: HashSet<Capability> =
        KEEP.iter().chain(extra).chain(bpf_kept.iter()).copied().filter(|c| permitted.contains(c)).collect();
    let clear_bounding = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    let target = Target { keep: mask(&keep), clear_bounding };
    on_every_thread(target)?;
    map_check().context("reading the probe's maps after dropping capabilities")?;
    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Dropped { kept, bounding_cleared: clear_bounding, bpf_kept })
}

/// Whether `map_check` succeeds on this thread with CAP_BPF and CAP_SYS_ADMIN out of the
/// effective set (they stay permitted, and are raised again afterwards).
fn works_without_bpf_caps(map_check: &impl Fn() -> anyhow::Result<()>) -> anyhow::Result<bool> {
    let effective = caps::read(None, CapSet::Effective)?;
    let lowered: HashSet<Capability> = effective.iter().copied().filter(|c| !BPF_CAPS.contains(c)).collect();
    caps::set(None, CapSet::Effective, &lowered)?;
    let ok = map_check().is_ok();
    caps::set(None, CapSet::Effective, &effective).context("restoring the effective capabilities")?;
    Ok(ok)
}

fn mask(set: &HashSet<Capability>) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

/// The sets every thread must end up with.
#[derive(Clone, Copy, Debug)]
struct Target {
    keep: u64,
    clear_bounding: bool,
}

// Read by the signal handler; written only before the signals are sent.
static TARGET_KEEP: AtomicU64 = AtomicU64::new(0);
static TARGET_CLEAR_BOUNDING: AtomicBool = AtomicBool::new(false);
static LAST_CAP: AtomicU32 = AtomicU32::new(0);
static HANDLER_ERRNO: AtomicI32 = AtomicI32::new(0);

/// How long all threads get to apply the new sets.
const DEADLINE: Duration = Duration::from_secs(5);
/// A thread that has not applied the sets is signalled again after this long.
const RESIGNAL: Duration = Duration::from_millis(200);

fn on_every_thread(target: Target) -> anyhow::Result<()> {
    let last_cap =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    TARGET_KEEP.store(target.keep, Ordering::SeqCst);
    TARGET_CLEAR_BOUNDING.store(target.clear_bounding, Ordering::SeqCst);
    LAST_CAP.store(last_cap, Ordering::SeqCst);
    HANDLER_ERRNO.store(0, Ordering::SeqCst);

    let sig = libc::SIGRTMIN() + 5;
    // SAFETY: installs a handler that only makes raw syscalls and touches atomics; the previous
    // action is restored below.
    let old = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &act, &mut old) != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
        old
    };
    let result = broadcast(target, sig);
    // SAFETY: restores the action saved above.
    unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    result
}

/// Signal every thread that does not have the target sets yet (applying them directly on this
/// one) until all have them. Threads started meanwhile inherit the sets of their creator, or
/// are seen on the next pass.
fn broadcast(target: Target, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let start = Instant::now();
    let mut signalled: HashMap<i32, Instant> = HashMap::new();
    loop {
        let errno = HANDLER_ERRNO.load(Ordering::SeqCst);
        if errno != 0 {
            bail!("dropping capabilities on a thread failed: {}", describe(errno));
        }
        let mut pending = Vec::new();
        for tid in tasks()? {
            match thread_state(tid) {
                Some(s) if matches(&s, target) => {}
                None => {} // exited
                Some(_) => pending.push(tid),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("threads {pending:?} did not drop their capabilities within {DEADLINE:?}");
        }
        for tid in pending {
            if tid == me {
                let code = apply();
                if code != 0 {
                    bail!("dropping capabilities: {}", describe(code));
                }
            } else if signalled.get(&tid).is_none_or(|t| t.elapsed() > RESIGNAL) {
                signalled.insert(tid, Instant::now());
                // SAFETY: tgkill on a thread of our own process; ESRCH (it exited) is fine.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn tasks() -> anyhow::Result<Vec<i32>> {
    let dir = std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")?;
    Ok(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Whether a thread's sets are what the drop asked for.
fn matches(caps: &ThreadCaps, t: Target) -> bool {
    caps.effective == t.keep
        && caps.permitted == t.keep
        && caps.inheritable == 0
        && caps.ambient == 0
        && caps.no_new_privs
        && (!t.clear_bounding || caps.bounding == 0)
}

fn thread_state(tid: i32) -> Option<ThreadCaps> {
    ThreadCaps::parse(&std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?)
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored so the interrupted code never sees ours.
    let saved = unsafe { *libc::__errno_location() };
    let errno = apply();
    if errno != 0 {
        HANDLER_ERRNO.store(errno, Ordering::SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The steps of `apply`, for error messages.
const STEPS: [&str; 4] = [
    "prctl(PR_CAPBSET_DROP)",
    "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
    "prctl(PR_SET_NO_NEW_PRIVS)",
    "capset (a seccomp filter such as systemd's ~@privileged must allow it)",
];

/// Describe a code returned by `apply`.
fn describe(code: i32) -> String {
    let step = STEPS.get((code >> 16) as usize).copied().unwrap_or("?");
    format!("{step}: {}", std::io::Error::from_raw_os_error(code & 0xffff))
}

/// Apply the target to the calling thread: empty the bounding set (if allowed), clear the
/// ambient set, set `no_new_privs`, then permitted = effective = keep and inheritable = 0, in
/// this order because dropping from the bounding set needs CAP_SETPCAP, which `keep` lacks.
/// Only raw system calls and atomics: this runs in a signal handler. Returns 0, or the failed
/// step (`STEPS`, times 65536) plus its errno.
fn apply() -> i32 {
    let keep = TARGET_KEEP.load(Ordering::SeqCst);
    let errno = || unsafe { *libc::__errno_location() };
    let fail = |step: i32| (step << 16) | errno();
    // SAFETY: plain prctl/capset calls with valid arguments on the calling thread.
    unsafe {
        if TARGET_CLEAR_BOUNDING.load(Ordering::SeqCst) {
            for cap in 0..=LAST_CAP.load(Ordering::SeqCst) as libc::c_ulong {
                if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) == 1 && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                {
                    return fail(0);
                }
            }
        }
        // EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear.
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno() != libc::EINVAL {
            return fail(1);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(2);
        }
        let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [
            CapData { effective: keep as u32, permitted: keep as u32, inheritable: 0 },
            CapData { effective: (keep >> 32) as u32, permitted: (keep >> 32) as u32, inheritable: 0 },
        ];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
            return fail(3);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_matches_target() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000000000c0\nCapEff:\t00000000000000c0\n\
                 CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";
        let t = ThreadCaps::parse(s).unwrap();
        assert!(matches(&t, Target { keep: 0xc0, clear_bounding: false }));
        assert!(!matches(&t, Target { keep: 0xc0, clear_bounding: true }));
    }

    #[test]
    fn keep_excludes_what_loads_programs() {
        let keep: HashSet<Capability> = KEEP.into_iter().collect();
        for c in [
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_SETPCAP,
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_KILL,
        ] {
            assert!(!keep.contains(&c), "{c} must be dropped");
        }
    }
}

/// Refuse a config file that someone other than root could change, when running as root: the
/// config names commands, URLs and files the agent uses with root's rights. Checks the opened
/// file (so it is the file that is then read) and the directory it is in (which decides who
/// can replace it). The error says what is wrong and how to fix it.
pub fn check_config_file(path: &std::path::Path, file: &std::fs::File) -> Result<(), String> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    let shown = path.display();
    insecure(meta.uid(), meta.mode(), false).map_or(Ok(()), |why| {
        Err(format!(
            "{why}; the agent runs as root, so only root may change its config. Fix: `chown root {shown} && chmod 600 {shown}`"
        ))
    })?;
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve: {e}"))?;
    let Some(dir) = real.parent() else { return Ok(()) };
    let dmeta = std::fs::metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    insecure(dmeta.uid(), dmeta.mode(), true).map_or(Ok(()), |why| {
        let d = dir.display();
        Err(format!("its directory {d}: {why}, so another user could replace the file. Fix: `chown root {d} && chmod go-w {d}`"))
    })
}

/// Why a file or directory with this owner and mode is not root's alone (None if it is).
fn insecure(uid: u32, mode: u32, is_dir: bool) -> Option<String> {
    if uid != 0 {
        return Some(format!("owned by uid {uid}, not root"));
    }
    // A sticky directory (like /tmp) lets nobody but the owner replace root's file.
    if mode & 0o022 != 0 && !(is_dir && mode & 0o1000 != 0) {
        return Some(format!("writable by group or others (mode {:04o})", mode & 0o7777));
    }
    None
}

#[cfg(test)]
mod config_file_tests {
    use super::insecure;

    #[test]
    fn owner_and_mode() {
        assert_eq!(insecure(0, 0o100600, false), None);
        assert_eq!(insecure(0, 0o100644, false), None);
        assert!(insecure(0, 0o100664, false).unwrap().contains("mode 0664"));
        assert!(insecure(0, 0o100646, false).unwrap().contains("writable by group or others"));
        assert!(insecure(1000, 0o100600, false).unwrap().contains("uid 1000"));
        assert_eq!(insecure(0, 0o40755, true), None);
        assert!(insecure(0, 0o40777, true).is_some());
        assert_eq!(insecure(0, 0o41777, true), None, "sticky, like /tmp");
        assert!(insecure(0, 0o41777, false).is_some(), "sticky means nothing on a file");
    }
}
