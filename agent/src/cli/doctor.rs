//! `wsguard doctor`: can this host run the probe? One line per check, with a fix hint.
//!
//! Self-contained (std, anyhow, serde, serde_json, libc, `util::caps`). The system is read once into
//! [`Facts`]; [`evaluate`] turns facts into [`Check`]s without touching the system, so the
//! verdicts are unit-tested with made-up hosts.

use serde::Serialize;

use crate::util::caps::{has_cap, parse_cap_eff, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RESOURCE};
use crate::util::pidns::{self, PidView};
use std::fmt::Write as _;
use std::path::Path;

/// Minimum kernel for the probe: `bpf_loop` (5.17) bounds the frame walk.
const MIN_KERNEL: (u32, u32) = (5, 17);
/// BPF ring buffer.
const RINGBUF_KERNEL: (u32, u32) = (5, 8);
/// From 5.11 BPF memory is charged to the memory cgroup and RLIMIT_MEMLOCK no longer matters.
const MEMCG_KERNEL: (u32, u32) = (5, 11);
/// CAP_BPF and CAP_PERFMON exist from 5.8 on; before that only CAP_SYS_ADMIN works.
const CAP_BPF_KERNEL: (u32, u32) = (5, 8);

const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const BPFFS_DIR: &str = "/sys/fs/bpf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Informational: never affects the verdict.
    Info,
    /// Works, but something is degraded or needs attention.
    Warn,
    /// The probe cannot run until this is fixed.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Info => "INFO",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it; empty when nothing needs doing.
    pub fix: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status, detail: detail.into(), fix: fix.into() }
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
    ok: bool,
}

/// Everything doctor looks at, read from the running system by [`Facts::gather`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `uname -r`.
    pub kernel_release: String,
    pub btf_vmlinux: bool,
    /// Contents of /proc/self/mounts.
    pub mounts: String,
    /// Contents of /proc/filesystems.
    pub filesystems: String,
    /// Per tracepoint `category/name`: whether `events/category/name` exists under the mounted
    /// tracefs (None when tracefs is not mounted).
    pub tracepoints: Vec<(&'static str, Option<bool>)>,
    pub euid: u32,
    /// CapEff from /proc/self/status.
    pub cap_eff: Option<u64>,
    /// Contents of /sys/kernel/security/lockdown (None: no lockdown LSM).
    pub lockdown: Option<String>,
    pub unprivileged_bpf_disabled: Option<String>,
    pub bpf_stats_enabled: Option<String>,
    /// RLIMIT_MEMLOCK (soft, hard); `u64::MAX` is unlimited.
    pub memlock: Option<(u64, u64)>,
    /// This process's PID namespace and `/proc` (the probe reports host pids).
    pub pid_view: PidView,
}

/// Tracepoints the probe attaches to. `true`: required.
const TRACEPOINTS: [(&str, bool); 2] = [("raw_syscalls/sys_enter", true), ("raw_syscalls/sys_exit", true)];

impl Facts {
    pub fn gather() -> Facts {
        let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let tracefs = tracefs_mount(&mounts);
        let tracepoints = TRACEPOINTS
            .iter()
            .map(|(tp, _)| (*tp, tracefs.as_ref().map(|dir| Path::new(dir).join("events").join(tp).is_dir())))
            .collect();
        let cap_eff = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_cap_eff(&s));
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes into the struct we pass.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } == 0;
        // rlim_t is u32 on some 32-bit targets; RLIM_INFINITY maps to u64::MAX either way.
        #[allow(clippy::unnecessary_cast)]
        let widen = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                v as u64
            }
        };
        let memlock = ok.then(|| (widen(rl.rlim_cur), widen(rl.rlim_max)));
        Facts {
            kernel_release: read("/proc/sys/kernel/osrelease").unwrap_or_else(uname_release),
            btf_vmlinux: Path::new("/sys/kernel/btf/vmlinux").exists(),
            filesystems: std::fs::read_to_string("/proc/filesystems").unwrap_or_default(),
            mounts,
            tracepoints,
            // SAFETY: geteuid cannot fail.
            euid: unsafe { libc::geteuid() },
            cap_eff,
            lockdown: read("/sys/kernel/security/lockdown"),
            unprivileged_bpf_disabled: read("/proc/sys/kernel/unprivileged_bpf_disabled"),
            bpf_stats_enabled: read("/proc/sys/kernel/bpf_stats_enabled"),
            memlock,
            pid_view: PidView::read(),
        }
    }
}

fn uname_release() -> String {
    // SAFETY: uname fills a zeroed struct; release is NUL-terminated on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// `"6.18.0-1-amd64"` → `(6, 18, 0)`. Missing minor/patch count as 0; junk after the
/// digits of a component (`"5.15.0rc3"`) is ignored.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let base = release.trim().split(['-', '+', ' ', '_']).next()?;
    let mut parts = base.split('.').map(|p| {
        let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The active mode of /sys/kernel/security/lockdown: `"none [integrity] confidentiality"` →
/// `"integrity"`.
pub fn parse_lockdown(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    Some(&text[start + 1..end])
}

/// Mount point of the first mount of `fstype` among `candidates` (or anywhere if none given).
fn mount_of<'a>(mounts: &'a str, fstype: &str, candidates: &[&str]) -> Option<&'a str> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype && (candidates.is_empty() || candidates.contains(&dir))).then_some(dir)
    })
}

fn tracefs_mount(mounts: &str) -> Option<String> {
    // Prefer the canonical place; debugfs auto-mounts tracefs at debug/tracing.
    TRACEFS_DIRS.iter().find_map(|d| mount_of(mounts, "tracefs", &[d])).map(str::to_string)
}

fn fs_supported(filesystems: &str, fs: &str) -> bool {
    filesystems.lines().any(|l| l.split_whitespace().last() == Some(fs))
}

fn at_least(v: (u32, u32, u32), min: (u32, u32)) -> bool {
    (v.0, v.1) >= min
}

fn fmt_bytes(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else if v >= 1 << 20 {
        format!("{} MiB", v >> 20)
    } else {
        format!("{} KiB", v >> 10)
    }
}

/// Turn facts into verdicts. Pure: no system access.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let version = parse_kernel_version(&f.kernel_release);

    // Kernel version.
    out.push(match version {
        None => check(
            "kernel",
            Status::Warn,
            format!("cannot parse kernel release {:?}", f.kernel_release),
            "need Linux >= 5.17 (bpf_loop); check `uname -r`",
        ),
        Some(v) if at_least(v, MIN_KERNEL) => {
            check("kernel", Status::Ok, format!("{} (>= 5.17: bpf_loop, ring buffer)", f.kernel_release), "")
        }
        Some(v) => {
            let missing =
                if at_least(v, RINGBUF_KERNEL) { "bpf_loop (5.17)" } else { "bpf_loop (5.17) and the BPF ring buffer (5.8)" };
            check("kernel", Status::Fail, format!("{} lacks {missing}", f.kernel_release), "upgrade to Linux 5.17 or newer")
        }
    });

    // BTF (informational).
    out.push(if f.btf_vmlinux {
        check("btf", Status::Ok, "/sys/kernel/btf/vmlinux present (tp_btf hooks available)", "")
    } else {
        check(
            "btf",
            Status::Info,
            "/sys/kernel/btf/vmlinux missing: not needed (raw tracepoints read pt_regs, no CO-RE), \
             tp_btf hooks unavailable",
            "optional: a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    });

    // tracefs.
    let tracefs = tracefs_mount(&f.mounts);
    out.push(match (&tracefs, fs_supported(&f.filesystems, "tracefs")) {
        (Some(dir), _) => check("tracefs", Status::Ok, format!("mounted at {dir}"), ""),
        (None, true) => check(
            "tracefs",
            Status::Warn,
            "not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing; `wsguard run` mounts it \
             at /sys/kernel/tracing itself (needs CAP_SYS_ADMIN)",
            "by hand: mount -t tracefs tracefs /sys/kernel/tracing",
        ),
        (None, false) => check(
            "tracefs",
            Status::Fail,
            "the kernel does not support tracefs (not in /proc/filesystems)",
            "a kernel built with CONFIG_TRACING/CONFIG_FTRACE",
        ),
    });

    // Tracepoints.
    for (tp, present) in &f.tracepoints {
        let required = TRACEPOINTS.iter().any(|(t, r)| t == tp && *r);
        let name = match *tp {
            "raw_syscalls/sys_enter" => "tracepoint sys_enter",
            "raw_syscalls/sys_exit" => "tracepoint sys_exit",
            _ => "tracepoint",
        };
        out.push(match present {
            Some(true) => check(name, Status::Ok, format!("{tp} present"), ""),
            Some(false) if required => check(
                name,
                Status::Fail,
                format!("{tp} missing under tracefs events/"),
                "a kernel with CONFIG_FTRACE_SYSCALLS=y (syscall tracepoints)",
            ),
            Some(false) => check(
                name,
                Status::Warn,
                format!("{tp} missing: TCP state changes will not be seen"),
                "a kernel >= 4.16 with networking tracepoints",
            ),
            None => check(
                name,
                Status::Warn,
                format!("{tp}: cannot check, tracefs is not mounted"),
                "mount tracefs (see above) and run `wsguard doctor` again",
            ),
        });
    }

    // bpffs.
    out.push(if mount_of(&f.mounts, "bpf", &[BPFFS_DIR]).is_some() {
        check("bpffs", Status::Ok, format!("mounted at {BPFFS_DIR} (maps and links can be pinned)"), "")
    } else {
        check(
            "bpffs",
            Status::Warn,
            format!(
                "not mounted at {BPFFS_DIR}; `wsguard run` mounts it itself (needs CAP_SYS_ADMIN); \
                 without it counting restarts from zero with the agent"
            ),
            format!("by hand: mount -t bpf bpf {BPFFS_DIR}"),
        )
    });

    // Privileges.
    out.push(privileges(f, version));

    // PID namespace: `wsguard run` refuses any other than the host's (util/pidns.rs).
    out.push(match f.pid_view.problem() {
        None => check("pid namespace", Status::Ok, "the host's (the probe's pids are the ones /proc shows)", ""),
        Some(problem) => check("pid namespace", Status::Fail, problem, pidns::FIX),
    });

    // Lockdown.
    out.push(match f.lockdown.as_deref().map(|t| parse_lockdown(t).unwrap_or(t)) {
        None => check("lockdown", Status::Ok, "no lockdown LSM", ""),
        Some("none") => check("lockdown", Status::Ok, "none", ""),
        Some("integrity") => check("lockdown", Status::Ok, "integrity (BPF programs may load and read memory)", ""),
        Some("confidentiality") => check(
            "lockdown",
            Status::Fail,
            "confidentiality: the kernel refuses BPF reads of kernel memory \
             (bpf_probe_read_kernel), which the probe needs for syscall arguments in pt_regs",
            "boot with lockdown=integrity (or none), or disable Secure Boot's lockdown \
             (e.g. `mokutil --disable-validation`)",
        ),
        Some(other) => check("lockdown", Status::Warn, format!("unknown mode {other:?}"), ""),
    });

    // kernel.unprivileged_bpf_disabled (informational: the agent runs privileged).
    out.push(match f.unprivileged_bpf_disabled.as_deref() {
        Some(v) => {
            let meaning = match v {
                "0" => "unprivileged BPF allowed",
                "1" => "unprivileged BPF disabled (permanently until reboot)",
                "2" => "unprivileged BPF disabled (admin may re-enable)",
                _ => "unknown value",
            };
            check(
                "kernel.unprivileged_bpf_disabled",
                Status::Info,
                format!("{v}: {meaning}; irrelevant to wsguard, which runs privileged"),
                "",
            )
        }
        None => check("kernel.unprivileged_bpf_disabled", Status::Info, "not available", ""),
    });

    // kernel.bpf_stats_enabled (informational: per-program run time).
    out.push(match f.bpf_stats_enabled.as_deref() {
        Some("1") => check(
            "kernel.bpf_stats_enabled",
            Status::Info,
            "1: per-program run time and count are recorded (small overhead per probe run)",
            "turn off when not measuring: sysctl -w kernel.bpf_stats_enabled=0",
        ),
        Some(v) => check(
            "kernel.bpf_stats_enabled",
            Status::Info,
            format!("{v}: probe cost is not measured"),
            "to measure the probe's cost: sysctl -w kernel.bpf_stats_enabled=1",
        ),
        None => check("kernel.bpf_stats_enabled", Status::Info, "not available", ""),
    });

    // RLIMIT_MEMLOCK.
    out.push(memlock(f, version));

    out
}

fn privileges(f: &Facts, version: Option<(u32, u32, u32)>) -> Check {
    let Some(caps) = f.cap_eff else {
        return if f.euid == 0 {
            check("privileges", Status::Ok, "root (CapEff unreadable)", "")
        } else {
            check("privileges", Status::Fail, format!("uid {} and CapEff unreadable", f.euid), "run as root")
        };
    };
    let admin = has_cap(caps, CAP_SYS_ADMIN);
    let bpf = has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON);
    let new_caps_ok = version.is_none_or(|v| at_least(v, CAP_BPF_KERNEL));
    let who = if f.euid == 0 { "root".to_string() } else { format!("uid {}", f.euid) };
    // (missing capability, what it costs) beyond the ones the probe cannot do without.
    let mut extras: Vec<(&str, &str)> = Vec::new();
    if !admin {
        extras.push(("CAP_SYS_ADMIN", "cannot mount tracefs/bpffs itself"));
    }
    if !has_cap(caps, CAP_SYS_RESOURCE) && !version.is_some_and(|v| at_least(v, MEMCG_KERNEL)) {
        extras.push(("CAP_SYS_RESOURCE", "cannot raise RLIMIT_MEMLOCK for BPF maps (kernel < 5.11)"));
    }
    if !has_cap(caps, CAP_SYS_PTRACE) && f.euid != 0 {
        extras.push(("CAP_SYS_PTRACE", "fd and memory details of other users' processes are hidden"));
    }
    let mut detail = format!("{who}, CapEff={caps:016x}");
    let (status, fix) = if admin || (bpf && new_caps_ok) {
        let base = if admin { "CAP_SYS_ADMIN" } else { "CAP_BPF+CAP_PERFMON" };
        let _ = write!(detail, " ({base})");
        if extras.is_empty() {
            (Status::Ok, String::new())
        } else {
            let names: Vec<&str> = extras.iter().map(|(c, _)| *c).collect();
            (Status::Warn, format!("also grant {}", names.join(", ")))
        }
    } else if bpf {
        let _ = write!(detail, " (CAP_BPF+CAP_PERFMON, but this kernel predates them)");
        (Status::Fail, "run as root (kernels before 5.8 need CAP_SYS_ADMIN)".to_string())
    } else {
        let _ = write!(detail, " (missing CAP_BPF/CAP_PERFMON and CAP_SYS_ADMIN)");
        (
            Status::Fail,
            "run as root, or grant capabilities: setcap cap_bpf,cap_perfmon,cap_sys_resource,\
             cap_sys_admin+ep wsguard (systemd: AmbientCapabilities=)"
                .to_string(),
        )
    };
    for (cap, cost) in &extras {
        let _ = write!(detail, "; no {cap}: {cost}");
    }
    check("privileges", status, detail, fix)
}

fn memlock(f: &Facts, version: Option<(u32, u32, u32)>) -> Check {
    let Some((soft, hard)) = f.memlock else {
        return check("RLIMIT_MEMLOCK", Status::Info, "unreadable", "");
    };
    let memcg = version.is_some_and(|v| at_least(v, MEMCG_KERNEL));
    let limits = format!("soft {}, hard {}", fmt_bytes(soft), fmt_bytes(hard));
    let unlimited = soft == u64::MAX;
    if memcg {
        check(
            "RLIMIT_MEMLOCK",
            Status::Info,
            format!("{limits}; irrelevant: kernels >= 5.11 charge BPF memory to the memory cgroup"),
            "",
        )
    } else if unlimited || soft >= 64 << 20 {
        check("RLIMIT_MEMLOCK", Status::Ok, limits, "")
    } else {
        check(
            "RLIMIT_MEMLOCK",
            Status::Warn,
            format!("{limits}; kernels before 5.11 count BPF maps against it"),
            "ulimit -l unlimited (systemd: LimitMEMLOCK=infinity)",
        )
    }
}

/// Render the checks as aligned text lines.
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in checks {
        let _ = write!(s, "{:<4}  {:<width$}  {}", c.status.label(), c.name, c.detail);
        if !c.fix.is_empty() && c.status != Status::Ok {
            let _ = write!(s, "  -> fix: {}", c.fix);
        }
        s.push('\n');
    }
    s
}

/// True when no check failed.
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Which probe mode `auto` (or `WSGUARD_PROBE_MODE`) would run here and why, and whether the
/// socket mode's kernel features are present (the config file is not read: `[probe] mode`
/// overrides what is said here).
fn probe_mode(f: &crate::probe::mode::Features) -> Vec<Check> {
    use crate::probe::mode::{resolve, ModeChoice};
    let mut out = vec![match f.socket_missing() {
        None => check(
            "socket mode",
            Status::Ok,
            "kernel BTF, tp_btf sock_recv_length/sock_send_length, tcp_destroy_sock, socket storage and the TCP iterator are present",
            "",
        ),
        Some(why) => check(
            "socket mode",
            Status::Info,
            format!("not available: needs {why}"),
            "the syscall mode (fallback) runs instead; see docs/kernel-support.md",
        ),
    }];
    // What BTF cannot tell (socket storage from tracing programs, each program passing the
    // verifier) is proven by loading the socket mode, attaching nothing: needs root.
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let loads = match (f.socket_missing(), root) {
        (Some(_), _) => None,
        (None, false) => {
            out.push(check(
                "socket mode loads",
                Status::Info,
                "not checked (needs root: loads the programs, attaches nothing)",
                "",
            ));
            None
        }
        (None, true) => Some(crate::probe::check_socket_mode()),
    };
    if let Some(r) = &loads {
        out.push(match r {
            Ok(()) => check("socket mode loads", Status::Ok, "maps created and every program verified (nothing attached)", ""),
            Err(e) => check(
                "socket mode loads",
                Status::Info,
                format!("no: {e:#}"),
                "`auto` runs the syscall mode (fallback) instead; see docs/kernel-support.md",
            ),
        });
    }
    let choice = ModeChoice::Auto.with_env().map_err(|e| e.to_string());
    let auto = matches!(choice, Ok(ModeChoice::Auto));
    out.push(match choice.and_then(|c| resolve(c, f)) {
        Ok((crate::probe::Mode::Socket, _)) if auto && matches!(loads, Some(Err(_))) => {
            check("probe mode", Status::Ok, "syscall would run (auto: the socket mode does not load here)", "")
        }
        Ok((mode, why)) => check("probe mode", Status::Ok, format!("{mode} would run ({why})"), ""),
        Err(e) => check("probe mode", Status::Fail, e, "set probe.mode / WSGUARD_PROBE_MODE to auto or syscall"),
    });
    if let Some(w) = crate::probe::mode::tcp_iter_uaf_warning(&crate::probe::mode::kernel_release()) {
        out.push(check("kernel iterator bug", Status::Warn, w, "upgrade the kernel, or run the syscall mode"));
    }
    out.push(tls_coverage());
    out
}

/// Which OpenSSL copies the socket mode would hook for TLS plaintext (`[probe.tls]` defaults:
/// the config file is not read, so `probe.tls.paths` are not listed).
fn tls_coverage() -> Check {
    let cfg = crate::probe::tls::TlsConfig::default();
    let found = crate::probe::tls::candidates(&cfg);
    if found.is_empty() {
        return check(
            "tls",
            Status::Info,
            "no OpenSSL found (no libssl.so.3, no running process maps a libssl, no node): wss:// servers are recognised as TLS but not read",
            "name OpenSSL copies in probe.tls.paths; see docs/kernel-support.md#tls-wss",
        );
    }
    let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
    check("tls", Status::Ok, format!("socket mode reads wss:// plaintext from OpenSSL in {}", list.join(", ")), "")
}

/// Check this host, print the result (text, or one JSON object with `json`), and return
/// whether everything required is in place.
pub fn run(json: bool) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut checks = evaluate(&Facts::gather());
    checks.extend(probe_mode(&crate::probe::mode::Features::detect()));
    let ok = all_ok(&checks);
    let out = if json {
        serde_json::to_string_pretty(&Report { checks: &checks, ok })? + "\n"
    } else {
        let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
        let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
        let verdict = if ok {
            format!("\nwsguard doctor: ready ({warns} warning(s))\n")
        } else {
            format!("\nwsguard doctor: NOT ready: {fails} failed check(s), {warns} warning(s)\n")
        };
        render_text(&checks) + &verdict
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        // `wsguard doctor | head` is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CAPS: u64 = 0x000001ffffffffff;

    /// The README's `wsguard doctor` sample shows checks this doctor prints, and all of them.
    #[test]
    fn readme_sample_names_the_checks_the_doctor_prints() {
        let readme = include_str!("../../../README.md");
        let sample = readme.split("$ wsguard doctor\n").nth(1).and_then(|s| s.split("\n\n").next()).expect("doctor sample");
        let printed = render_text(&[evaluate(&Facts::gather()), probe_mode(&crate::probe::mode::Features::detect())].concat());
        let names = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.get(6..))
                .map(|l| l.split("  ").next().unwrap_or_default().trim().to_owned())
                // Printed only on a kernel with CVE-2026-74714 (the README's sample host has it).
                .filter(|n| n != "kernel iterator bug")
                .collect()
        };
        assert_eq!(names(sample), names(&printed), "README sample:\n{sample}\nthe doctor here:\n{printed}");
    }

    fn healthy() -> Facts {
        Facts {
            kernel_release: "6.18.0-1-amd64".into(),
            btf_vmlinux: true,
            mounts: "sysfs /sys sysfs rw 0 0\n\
                     tracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n\
                     bpf /sys/fs/bpf bpf rw,nosuid 0 0\n"
                .into(),
            filesystems: "nodev\tsysfs\nnodev\ttracefs\nnodev\tbpf\n".into(),
            tracepoints: TRACEPOINTS.iter().map(|(t, _)| (*t, Some(true))).collect(),
            euid: 0,
            cap_eff: Some(ALL_CAPS),
            lockdown: Some("[none] integrity confidentiality".into()),
            unprivileged_bpf_disabled: Some("2".into()),
            bpf_stats_enabled: Some("0".into()),
            memlock: Some((8 << 20, 8 << 20)),
            pid_view: PidView { ns_inode: Some(pidns::HOST_PID_NS_INODE), proc_self: Some(7), pid: 7 },
        }
    }

    fn status_of(checks: &[Check], name: &str) -> Status {
        checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}")).status
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.0-1-amd64"), Some((6, 18, 0)));
        assert_eq!(parse_kernel_version("5.15.0-105-generic\n"), Some((5, 15, 0)));
        assert_eq!(parse_kernel_version("5.17"), Some((5, 17, 0)));
        assert_eq!(parse_kernel_version("6.1.0rc3+"), Some((6, 1, 0)));
        assert_eq!(parse_kernel_version("4.19.282_1"), Some((4, 19, 282)));
        assert_eq!(parse_kernel_version("6"), Some((6, 0, 0)));
        assert_eq!(parse_kernel_version(""), None);
        assert_eq!(parse_kernel_version("linux"), None);
    }

    #[test]
    fn lockdown_modes() {
        assert_eq!(parse_lockdown("none [integrity] confidentiality"), Some("integrity"));
        assert_eq!(parse_lockdown("[none] integrity confidentiality"), Some("none"));
        assert_eq!(parse_lockdown("garbage"), None);
        let mut f = healthy();
        f.lockdown = Some("none integrity [confidentiality]".into());
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "lockdown"), Status::Fail);
        assert!(!all_ok(&checks));
        f.lockdown = Some("none [integrity] confidentiality".into());
        assert_eq!(status_of(&evaluate(&f), "lockdown"), Status::Ok);
    }

    #[test]
    fn healthy_host_is_ok() {
        let checks = evaluate(&healthy());
        assert!(all_ok(&checks), "{}", render_text(&checks));
        assert!(checks.iter().all(|c| c.status != Status::Warn), "{}", render_text(&checks));
    }

    #[test]
    fn old_kernel_fails() {
        let mut f = healthy();
        f.kernel_release = "5.15.0-105-generic".into();
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "kernel"), Status::Fail);
        f.kernel_release = "4.19.0".into();
        let checks = evaluate(&f);
        let k = checks.iter().find(|c| c.name == "kernel").unwrap();
        assert!(k.detail.contains("ring buffer"), "{}", k.detail);
        // Before 5.11 a small memlock limit matters.
        assert_eq!(status_of(&checks, "RLIMIT_MEMLOCK"), Status::Warn);
    }

    #[test]
    fn unmounted_tracefs_and_bpffs_warn() {
        let mut f = healthy();
        f.mounts = "sysfs /sys sysfs rw 0 0\n".into();
        f.tracepoints = TRACEPOINTS.iter().map(|(t, _)| (*t, None)).collect();
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "tracefs"), Status::Warn);
        assert_eq!(status_of(&checks, "bpffs"), Status::Warn);
        assert_eq!(status_of(&checks, "tracepoint sys_enter"), Status::Warn);
        assert!(all_ok(&checks));
        // tracefs under debugfs counts.
        f.mounts = "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n".into();
        assert_eq!(tracefs_mount(&f.mounts).as_deref(), Some("/sys/kernel/debug/tracing"));
    }

    #[test]
    fn missing_syscall_tracepoint_fails() {
        let mut f = healthy();
        f.tracepoints[0].1 = Some(false);
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "tracepoint sys_enter"), Status::Fail);
        assert!(!all_ok(&checks));
    }

    #[test]
    fn capabilities() {
        let mut f = healthy();
        f.euid = 1000;
        f.cap_eff = Some(0);
        assert_eq!(status_of(&evaluate(&f), "privileges"), Status::Fail);
        f.cap_eff = Some((1 << CAP_BPF) | (1 << CAP_PERFMON));
        assert_eq!(status_of(&evaluate(&f), "privileges"), Status::Warn);
        f.cap_eff =
            Some((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_RESOURCE) | (1 << CAP_SYS_PTRACE));
        assert_eq!(status_of(&evaluate(&f), "privileges"), Status::Ok);
        // CAP_BPF means nothing before 5.8.
        f.kernel_release = "5.4.0".into();
        f.cap_eff = Some((1 << CAP_BPF) | (1 << CAP_PERFMON));
        assert_eq!(status_of(&evaluate(&f), "privileges"), Status::Fail);
    }

    /// In a container's own PID namespace the probe's host pids are not /proc's: `run` refuses.
    #[test]
    fn a_child_pid_namespace_fails() {
        let mut f = healthy();
        f.pid_view = PidView { ns_inode: Some(4026532175), proc_self: Some(1), pid: 1 };
        let checks = evaluate(&f);
        assert_eq!(status_of(&checks, "pid namespace"), Status::Fail);
        assert!(!all_ok(&checks));
        let text = render_text(&checks);
        assert!(text.contains("not the host's (4026531836)") && text.contains("hostPID: true"), "{text}");
    }

    #[test]
    fn json_shape() {
        let checks = evaluate(&healthy());
        let v = serde_json::to_value(Report { checks: &checks, ok: all_ok(&checks) }).unwrap();
        assert_eq!(v["ok"], true);
        let first = &v["checks"][0];
        for key in ["name", "status", "detail", "fix"] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert_eq!(first["status"], "ok");
    }
}
