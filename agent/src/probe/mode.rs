//! Which probe runs: `socket` (connection state in the socket's storage, hooks that fire only on
//! socket I/O) or `syscall` (raw `sys_enter`/`sys_exit`, state keyed by `(tgid, fd)`; the
//! fallback). `[probe] mode` (or `WSGUARD_PROBE_MODE`) asks for one or for `auto`; [`resolve`]
//! decides from what this kernel has ([`Features`]) and says why, for the log and `doctor`.
//! What the kernel's BTF cannot tell (socket storage from tracing programs, a `sock_ops` link on
//! the cgroup) is proven at load, like kunai's compat builder: under `auto` a socket mode that
//! does not load or attach falls back to the syscall mode, with the one-line reason logged and
//! in the snapshot (`probe.mode_reason`).

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Environment override of `[probe] mode`.
pub const ENV: &str = "WSGUARD_PROBE_MODE";

/// What the config asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    #[default]
    Auto,
    Socket,
    Syscall,
}

impl ModeChoice {
    pub fn parse(s: &str) -> Option<ModeChoice> {
        match s.trim() {
            "auto" => Some(ModeChoice::Auto),
            "socket" => Some(ModeChoice::Socket),
            "syscall" => Some(ModeChoice::Syscall),
            _ => None,
        }
    }

    /// The config's choice, or `WSGUARD_PROBE_MODE` when set (an invalid value is an error).
    pub fn with_env(self) -> anyhow::Result<ModeChoice> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => {
                ModeChoice::parse(&v).ok_or_else(|| anyhow::anyhow!("{ENV}={v:?}: expected auto, socket or syscall"))
            }
            _ => Ok(self),
        }
    }
}

/// The probe that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Socket,
    Syscall,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Socket => "socket",
            Mode::Syscall => "syscall",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the socket mode needs from the kernel, as found here.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// `/sys/kernel/btf/vmlinux` parses.
    pub btf: bool,
    /// BTF tracepoints `sock_recv_length`, `sock_send_length` (Linux 6.3), `tcp_destroy_sock`.
    pub sock_tracepoints: bool,
    /// The TCP socket iterator (`bpf_iter_tcp`, Linux 5.9).
    pub tcp_iter: bool,
    /// Socket storage maps (`BPF_MAP_TYPE_SK_STORAGE`, Linux 5.2; their use from tracing
    /// programs, Linux 5.11, is proven by loading: see `sock::check_load`).
    pub sk_storage: bool,
}

impl Features {
    /// Probe this kernel (reads BTF from sysfs; no privilege needed).
    pub fn detect() -> Features {
        let mut f = Features::default();
        if let Ok(btf) = aya::Btf::from_sys_fs() {
            f.btf = true;
            let typedef = |n: &str| btf.id_by_type_name_kind(n, aya_obj::btf::BtfKind::Typedef).is_ok();
            f.sock_tracepoints = ["btf_trace_sock_recv_length", "btf_trace_sock_send_length", "btf_trace_tcp_destroy_sock"]
                .iter()
                .all(|n| typedef(n));
            let func = |n: &str| btf.id_by_type_name_kind(n, aya_obj::btf::BtfKind::Func).is_ok();
            f.tcp_iter = func("bpf_iter_tcp");
            f.sk_storage = func("bpf_sk_storage_map_alloc");
        }
        f
    }

    /// Why the socket mode cannot load here (None: it can, as far as can be told before loading).
    pub fn socket_missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.btf {
            missing.push("kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)");
        } else {
            if !self.sock_tracepoints {
                missing.push("BTF tracepoints sock:sock_recv_length/sock_send_length (Linux >= 6.3)");
            }
            if !self.tcp_iter {
                missing.push("the TCP socket iterator (Linux >= 5.9)");
            }
            if !self.sk_storage {
                missing.push("socket storage maps (BPF_MAP_TYPE_SK_STORAGE, Linux >= 5.11 for tracing programs)");
            }
        }
        (!missing.is_empty()).then(|| missing.join(", "))
    }
}

/// `(major, minor, patch)` of a kernel release.
type Release = (u32, u32, u32);

/// Kernel lines whose TCP socket iterator (`iter/tcp`, which the socket mode reads every
/// interval) takes a reference on a request socket whose count is still 0 (CVE-2026-74714,
/// "bpf: tcp: Fix use-after-free in bpf_iter_tcp_established_batch()"): a read racing an
/// incoming connection can leave that socket one reference short, then freed while reachable
/// (seen here on 6.18.44: `refcount_t: addition on 0` in the iterator, then `underflow` in the
/// server's `accept`). `(from, fixed)`: releases `from <= r < fixed` are affected.
const TCP_ITER_UAF: [(Release, Release); 5] = [
    ((5, 15, 0), (6, 1, 183)),
    ((6, 2, 0), (6, 6, 152)),
    ((6, 7, 0), (6, 12, 104)),
    ((6, 13, 0), (6, 18, 45)),
    ((6, 19, 0), (7, 1, 9)),
];

/// `major.minor.patch` of a `uname -r` release ("6.18.44-fc-v1300" → (6, 18, 44)).
fn release_numbers(release: &str) -> Option<Release> {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().ok());
    let (major, minor) = (it.next()??, it.next()??);
    // "6.18" or "6.18-rc3" has no patch level: patch 0.
    let patch =
        if release.split('.').nth(2).is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit())) { it.next()?? } else { 0 };
    Some((major, minor, patch))
}

/// If kernel `release` has the TCP iterator use-after-free, the first fixed release of its
/// line ("6.18.45"). By version number: a distribution kernel that carries the fix under an
/// older number is reported too (and a build without it under a newer one is not).
pub fn tcp_iter_uaf(release: &str) -> Option<String> {
    let v = release_numbers(release)?;
    TCP_ITER_UAF.iter().find(|(from, fixed)| *from <= v && v < *fixed).map(|(_, (a, b, c))| format!("{a}.{b}.{c}"))
}

/// One sentence for the log and `doctor` when the socket mode would read an affected iterator.
pub fn tcp_iter_uaf_warning(release: &str) -> Option<String> {
    tcp_iter_uaf(release).map(|fixed| {
        format!(
            "kernel {release} has CVE-2026-74714 (fixed in {fixed}): the socket mode's TCP iterator, read every interval, \
             can race an incoming connection into a use-after-free of its request socket; upgrade the kernel, or set \
             probe.mode = \"syscall\" (docs/kernel-support.md)"
        )
    })
}

/// This kernel's release (`uname -r`), empty if unknown.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The first cgroup v2 mount in /proc/self/mounts.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The mode to run for `choice` on a kernel with `features`, and why (one sentence).
pub fn resolve(choice: ModeChoice, features: &Features) -> Result<(Mode, String), String> {
    match (choice, features.socket_missing()) {
        (ModeChoice::Syscall, _) => Ok((Mode::Syscall, "probe.mode = \"syscall\"".into())),
        (ModeChoice::Socket, None) => Ok((Mode::Socket, "probe.mode = \"socket\"".into())),
        (ModeChoice::Socket, Some(why)) => {
            Err(format!("probe.mode = \"socket\" cannot run on this kernel: it lacks {why}; use \"auto\" or \"syscall\""))
        }
        (ModeChoice::Auto, Some(why)) => Ok((Mode::Syscall, format!("auto: the socket mode needs {why}"))),
        (ModeChoice::Auto, None) => Ok((
            Mode::Socket,
            "auto: the kernel has BTF, tp_btf sock_recv_length/sock_send_length, socket storage and the TCP iterator".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Features {
        Features { btf: true, sock_tracepoints: true, tcp_iter: true, sk_storage: true }
    }

    #[test]
    fn tcp_iter_uaf_by_release() {
        for (release, fixed) in [
            ("6.18.44-fc-v1300", Some("6.18.45")),
            ("6.18.45", None),
            ("6.18", Some("6.18.45")),
            ("6.1.182-amd64", Some("6.1.183")),
            ("6.1.183", None),
            ("5.15.0-91-generic", Some("6.1.183")),
            ("5.10.200", None),
            ("6.6.151", Some("6.6.152")),
            ("6.12.103+deb13-amd64", Some("6.12.104")),
            ("6.12.104", None),
            ("7.1.8", Some("7.1.9")),
            ("7.1.9", None),
            ("7.2.0-rc1", None),
            ("6.19-rc4", Some("7.1.9")),
            ("garbage", None),
            ("", None),
        ] {
            assert_eq!(tcp_iter_uaf(release).as_deref(), fixed, "{release}");
        }
        assert!(tcp_iter_uaf_warning("6.18.44").unwrap().contains("CVE-2026-74714"));
        assert!(tcp_iter_uaf_warning("6.18.45").is_none());
    }

    #[test]
    fn explicit_modes_and_auto() {
        assert_eq!(resolve(ModeChoice::Syscall, &Features::default()).unwrap().0, Mode::Syscall);
        assert_eq!(resolve(ModeChoice::Socket, &full()).unwrap().0, Mode::Socket);
        let err = resolve(ModeChoice::Socket, &Features::default()).unwrap_err();
        assert!(err.contains("BTF"), "{err}");
        let (m, why) = resolve(ModeChoice::Auto, &Features { sock_tracepoints: false, ..full() }).unwrap();
        assert_eq!(m, Mode::Syscall);
        assert!(why.contains("6.3"), "{why}");
        assert_eq!(resolve(ModeChoice::Auto, &full()).unwrap().0, Mode::Socket);
    }

    #[test]
    fn parse_choice() {
        assert_eq!(ModeChoice::parse("socket"), Some(ModeChoice::Socket));
        assert_eq!(ModeChoice::parse(" syscall "), Some(ModeChoice::Syscall));
        assert_eq!(ModeChoice::parse("auto"), Some(ModeChoice::Auto));
        assert_eq!(ModeChoice::parse("kprobe"), None);
    }
}
