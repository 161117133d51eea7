//! The socket mode's loader and reader: loads the `wsguard-sock` object, attaches `sock_ops` to
//! the cgroup v2 root, the BTF tracepoints and the TCP socket iterator, pins them like the
//! syscall mode's, and reads every followed connection through the iterator (one `read` loop of
//! fixed-size records, no per-entry map syscalls). See agent-ebpf/src/sock.rs for the kernel side.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use aya::{
    programs::{
        iter::IterLink,
        links::{FdLink, PinnedLink},
        BtfTracePoint, CgroupAttachMode, Iter, SockOps,
    },
    Btf, EbpfLoader,
};
use tracing::{info, warn};
use wsguard_common::{
    conn::{ConnKey, ConnState, SockRecord, FD_UNPARSED},
    names,
};

use super::config::ProbeConfig;
use super::{check_pinned_links, link_pin, load_object, maps, predating, prog_pin, Mode, Probe};

/// The socket mode's programs, in attach order (the iterator last: it only reads).
pub(super) const PROGRAMS: [&str; 6] =
    [names::PROG_SOCK_OPS, names::PROG_RECV, names::PROG_SEND, names::PROG_END, names::PROG_STATE, names::PROG_ITER];

const TRACEPOINTS: [(&str, &str); 4] = [
    (names::PROG_RECV, "sock_recv_length"),
    (names::PROG_SEND, "sock_send_length"),
    (names::PROG_END, "tcp_destroy_sock"),
    (names::PROG_STATE, "inet_sock_set_state"),
];

/// Maps the socket mode pins.
const PINNED_MAPS: [&str; 16] = [
    names::SK,
    names::PROCS,
    names::CLOSE_CODES,
    names::EVENTS,
    names::GLOBAL,
    names::KEY_CONFIG,
    names::HISTS,
    names::LAYOUT,
    names::INIT_CONN,
    names::ZERO_PROC,
    names::ZERO_HISTS,
    names::ITER_REC,
    names::TLS_THREAD,
    names::TLS_SSL,
    names::TLS_LINK,
    names::TLS_CONN,
];

/// Where a cgroup v2 hierarchy is mounted by the agent when the host has none.
const OWN_CGROUP2: &str = "/run/wsguard/cgroup2";

pub(super) fn start(cfg: &ProbeConfig, pin: &Path, resumed: bool, object: &[u8]) -> anyhow::Result<Probe> {
    let mut ebpf = load_object(cfg, pin, &PINNED_MAPS, None, object).context("loading the socket-mode eBPF object")?;
    let mut preexisting = None;
    if resumed {
        check_pinned_links(pin, PROGRAMS)?;
        info!("resumed the running socket-mode probe pinned at {}", pin.display());
        let tls = super::tls::attach(&mut ebpf, &cfg.tls, true);
        return Ok(Probe {
            ebpf,
            mode: Mode::Socket,
            reason: String::new(),
            resumed,
            pin_path: pin.to_path_buf(),
            preexisting,
            tls,
        });
    }
    maps::set_layout(&mut ebpf)?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    // Attach first, then list what predates the probe (`predating.rs`): every connection is
    // then either born with state or listed, never neither and never both.
    predating::set_window(&mut ebpf, true)?;
    attach(&mut ebpf, pin, &btf).inspect_err(|_| {
        // Nothing half-attached stays behind to be "resumed" by the next start.
        for prog in PROGRAMS {
            let _ = std::fs::remove_file(link_pin(pin, prog));
            let _ = std::fs::remove_file(prog_pin(pin, prog));
        }
    })?;
    preexisting = Some(predating::after_attach(&mut ebpf).unwrap_or_else(|e| {
        warn!("{e:#}: connections established before the probe are not followed and cannot be reported");
        Default::default()
    }));
    let tls = super::tls::attach(&mut ebpf, &cfg.tls, false);
    Ok(Probe { ebpf, mode: Mode::Socket, reason: String::new(), resumed, pin_path: pin.to_path_buf(), preexisting, tls })
}

/// Prove the socket mode loads on this kernel, attaching nothing and pinning nothing: its maps
/// are created (socket storage among them) and every program passes the verifier. An error is
/// one line naming what failed (`doctor` shows it), never the verifier's log.
pub(super) fn check_load(object: &[u8]) -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new().load(object).context("creating the socket mode's maps")?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    for (prog, tp) in TRACEPOINTS {
        let p: &mut BtfTracePoint = ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))?.try_into()?;
        p.load(tp, &btf).map_err(|e| load_error(prog, e))?;
    }
    let it: &mut Iter = ebpf.program_mut(names::PROG_ITER).context("program wsg_sock_iter missing")?.try_into()?;
    it.load("tcp", &btf).map_err(|e| load_error(names::PROG_ITER, e))?;
    let so: &mut SockOps = ebpf.program_mut(names::PROG_SOCK_OPS).context("program wsg_sock_ops missing")?.try_into()?;
    so.load().map_err(|e| load_error(names::PROG_SOCK_OPS, e))?;
    Ok(())
}

fn attach(ebpf: &mut aya::Ebpf, pin: &Path, btf: &Btf) -> anyhow::Result<()> {
    let attached = |ebpf: &mut aya::Ebpf, prog: &str| -> anyhow::Result<()> {
        let p = ebpf.program_mut(prog).with_context(|| format!("program {prog} missing from the object"))?;
        p.pin(prog_pin(pin, prog)).with_context(|| format!("pinning program {prog}"))?;
        Ok(())
    };
    // The BTF tracepoints first, then sock_ops: a connection born before the state hooks ran
    // would be given state nobody updates at its end.
    for (prog, tp) in TRACEPOINTS {
        let p: &mut BtfTracePoint = ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))?.try_into()?;
        p.load(tp, btf).map_err(|e| load_error(prog, e))?;
        let id = p.attach().with_context(|| format!("attaching {prog} to tp_btf/{tp}"))?;
        let link: FdLink = p.take_link(id)?.into();
        link.pin(link_pin(pin, prog)).with_context(|| format!("pinning the {prog} link"))?;
        attached(ebpf, prog)?;
    }
    let it: &mut Iter = ebpf.program_mut(names::PROG_ITER).context("program wsg_sock_iter missing")?.try_into()?;
    it.load("tcp", btf).map_err(|e| load_error(names::PROG_ITER, e))?;
    let id = it.attach().context("creating the TCP socket iterator")?;
    let link: FdLink = it.take_link(id)?.try_into().context("iterator link")?;
    link.pin(link_pin(pin, names::PROG_ITER)).context("pinning the iterator link")?;
    attached(ebpf, names::PROG_ITER)?;

    let cgroup = cgroup2_root()?;
    let dir = std::fs::File::open(&cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    let so: &mut SockOps = ebpf.program_mut(names::PROG_SOCK_OPS).context("program wsg_sock_ops missing")?.try_into()?;
    so.load().map_err(|e| load_error(names::PROG_SOCK_OPS, e))?;
    // A bpf_link on a cgroup is always one of many (link_create takes no attach flags).
    let id = so.attach(&dir, CgroupAttachMode::Single).with_context(|| format!("attaching sock_ops to {}", cgroup.display()))?;
    let link: FdLink = so.take_link(id)?.try_into().context("sock_ops link (needs Linux >= 5.7 for a bpf_link)")?;
    link.pin(link_pin(pin, names::PROG_SOCK_OPS)).context("pinning the sock_ops link")?;
    attached(ebpf, names::PROG_SOCK_OPS)?;
    info!(
        "probe attached (socket mode: sock_ops on {}, tp_btf sock_recv_length, sock_send_length, tcp_destroy_sock, inet_sock_set_state, iter/tcp), pinned at {}",
        cgroup.display(),
        pin.display()
    );
    Ok(())
}

/// A program that does not load: one line saying which and why, not the verifier's log.
fn load_error(prog: &str, e: aya::programs::ProgramError) -> anyhow::Error {
    let detail = match &e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            // The verifier's complaint: its last line before the statistics it ends with.
            let log = verifier_log.to_string();
            let stats = ["verification time", "stack depth", "processed "];
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                .unwrap_or("")
                .to_string();
            format!("{io_error}; verifier: {last}")
        }
        other => other.to_string(),
    };
    anyhow::anyhow!("the socket mode cannot load {prog} on this kernel ({detail}); set probe.mode = \"syscall\" (or \"auto\")")
}

/// The cgroup v2 root `sock_ops` attaches to: the host's mount, else one the agent mounts.
fn cgroup2_root() -> anyhow::Result<PathBuf> {
    if let Some(p) = super::mode::cgroup2_mount() {
        return Ok(p);
    }
    std::fs::create_dir_all(OWN_CGROUP2).with_context(|| format!("creating {OWN_CGROUP2}"))?;
    let (src, dir, fstype) = (c"cgroup2", std::ffi::CString::new(OWN_CGROUP2)?, c"cgroup2");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("no cgroup v2 hierarchy is mounted and mounting one at {OWN_CGROUP2} failed: {}", std::io::Error::last_os_error());
    }
    info!("mounted a cgroup v2 hierarchy at {OWN_CGROUP2} for sock_ops");
    Ok(PathBuf::from(OWN_CGROUP2))
}

/// A new iterator instance of the pinned iterator link (one per read).
fn iter_file(pin: &Path) -> anyhow::Result<std::fs::File> {
    let link = PinnedLink::from_pin(link_pin(pin, names::PROG_ITER)).context("opening the pinned iterator link")?;
    let link = IterLink::try_from(FdLink::from(link)).context("the pinned iterator link")?;
    link.into_file().context("bpf(BPF_ITER_CREATE)")
}

/// Every followed connection (not yet ended), as (process that last used it, fd it used, state).
/// Returns how many there were.
pub(super) fn for_each_conn(pin: &Path, mut f: impl FnMut(&ConnKey, &ConnState)) -> anyhow::Result<u64> {
    let mut file = iter_file(pin)?;
    let size = std::mem::size_of::<SockRecord>();
    let mut buf = Vec::with_capacity(64 * 1024);
    file.read_to_end(&mut buf).context("reading the socket iterator")?;
    let mut n = 0;
    for chunk in buf.chunks_exact(size) {
        // SAFETY: the iterator writes whole `SockRecord`s (plain integers, any bit pattern ok).
        let rec: SockRecord = unsafe { std::ptr::read_unaligned(chunk.as_ptr() as *const SockRecord) };
        n += 1;
        let c = &rec.state;
        if c.tgid == 0 {
            continue; // born, not read or written by any process yet
        }
        f(&ConnKey { tgid: c.tgid, fd: c.fd & !FD_UNPARSED }, c);
    }
    Ok(n)
}
