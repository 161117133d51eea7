//! Loading, attaching and pinning the eBPF probe, and reading its maps.
//!
//! Two probes are built, one object each: the socket mode (`sock.rs`) and the syscall mode
//! (the fallback, this file); `mode.rs` picks one at start.
//! Maps and links are pinned under `probe.pin_path`. When an agent starts and finds the links
//! pinned there, it reuses the running probe and its maps as they are: nothing is reloaded, so
//! counting never stops across a restart. `--fresh` unpins everything and starts from zero.
//! A clean stop detaches (`detach.rs`) unless the operator keeps the probe (`keep_on_stop`).

pub mod config;
pub mod events;

mod batch;
pub mod detach;
pub mod fs;
pub mod maps;
pub mod mode;
mod predating;
mod sock;
pub mod tls;

pub use mode::Mode;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use aya::{
    maps::MapInfo,
    programs::{links::FdLink, links::PinnedLink, RawTracePoint},
    Ebpf, EbpfLoader,
};
use tracing::{info, warn};
use wsguard_common::{conn::ConnState, names, stats::ProcStats};

use config::ProbeConfig;

use crate::model::probe::ProgramStats;

/// The eBPF objects built by build.rs (empty when built without the eBPF toolchain).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wsguard"));
static SOCK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wsguard-sock"));

/// Maps the syscall mode pins (all of them: the pinned programs keep using the pinned instances).
const PINNED_MAPS: [&str; 13] = [
    names::CONNS,
    names::PROCS,
    names::CLOSE_CODES,
    names::WATCHED,
    names::EVENTS,
    names::GLOBAL,
    names::KEY_CONFIG,
    names::HISTS,
    names::FDBITS,
    names::LAYOUT,
    names::INIT_CONN,
    names::ZERO_PROC,
    names::ZERO_HISTS,
];
const TRACEPOINTS: [(&str, &str); 2] = [(names::PROG_ENTER, "sys_enter"), (names::PROG_EXIT, "sys_exit")];

/// A loaded (or resumed) probe.
pub struct Probe {
    pub ebpf: Ebpf,
    pub mode: Mode,
    /// Why this mode runs (one sentence: the config, what `auto` found, or a resumed probe).
    pub reason: String,
    /// True when an already running probe was picked up from the pins.
    pub resumed: bool,
    pub pin_path: PathBuf,
    /// Inbound connections per process open just before a fresh attach (None on resume). Taken
    /// before attaching so a connection is either pre-existing or followed, never both.
    pub preexisting: Option<HashMap<u32, HashSet<u64>>>,
    /// OpenSSL files hooked for TLS plaintext (socket mode), and those that could not be.
    pub tls: Vec<tls::Target>,
}

impl Probe {
    /// Kernel statistics of the probe's programs (from their pins; empty for a probe attached
    /// by an older agent that did not pin its programs).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        programs(self.mode)
            .iter()
            .filter_map(|prog| {
                let info = aya::programs::ProgramInfo::from_pin(prog_pin(&self.pin_path, prog)).ok()?;
                let (n, t) = (info.run_count(), info.run_time().as_nanos() as u64);
                Some(ProgramStats {
                    program: (*prog).into(),
                    run_count: n,
                    run_time_ns: t,
                    avg_ns_per_run: (n > 0).then(|| t as f64 / n as f64),
                })
            })
            .collect()
    }

    /// The programs are still attached (their pinned links exist); false after `wsguard detach`.
    pub fn attached(&self) -> bool {
        programs(self.mode).iter().all(|p| link_pin(&self.pin_path, p).exists())
    }
}

/// The programs of a mode (each pinned with its link).
fn programs(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Syscall => &[names::PROG_ENTER, names::PROG_EXIT],
        Mode::Socket => &sock::PROGRAMS,
    }
}

/// The mode of the probe pinned at `pin`, if one is (all its links are pinned).
fn pinned_mode(pin: &Path) -> Option<Mode> {
    [Mode::Socket, Mode::Syscall].into_iter().find(|m| programs(*m).iter().all(|p| link_pin(pin, p).exists()))
}

/// Load one mode's object with the map sizes from `cfg` (`conns`: the connection map's, for the
/// mode that has one) and its maps pinned under `pin` (reused when already there), then write
/// the client-key config: on every start, so a config change applies to a resumed probe too.
fn load_object(cfg: &ProbeConfig, pin: &Path, pinned: &[&str], conns: Option<u32>, object: &[u8]) -> anyhow::Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    if let Some(n) = conns {
        loader.map_max_entries(names::CONNS, n);
    }
    loader
        .map_max_entries(names::PROCS, cfg.max_processes)
        .map_max_entries(names::HISTS, cfg.max_processes)
        .map_max_entries(names::EVENTS, cfg.ring_buffer_bytes);
    let paths: Vec<(&str, PathBuf)> = pinned.iter().map(|m| (*m, pin.join(m))).collect();
    for (m, p) in &paths {
        loader.map_pin_path(m, p.as_path());
    }
    let mut ebpf = loader.load(object)?;
    maps::set_key_config(&mut ebpf, &cfg.client_key)?;
    Ok(ebpf)
}

/// A resumed probe: every program's pinned link must still open.
fn check_pinned_links<'a>(pin: &Path, progs: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
    for prog in progs {
        PinnedLink::from_pin(link_pin(pin, prog))
            .with_context(|| format!("pinned link {prog} is unusable; restart with --fresh"))?;
    }
    Ok(())
}

fn link_pin(pin: &Path, prog: &str) -> PathBuf {
    pin.join(format!("link_{prog}"))
}

fn prog_pin(pin: &Path, prog: &str) -> PathBuf {
    pin.join(format!("prog_{prog}"))
}

/// Whether the socket mode loads on this kernel (maps created, programs verified; nothing is
/// attached or pinned). Needs the privileges the agent runs with.
pub fn check_socket_mode() -> anyhow::Result<()> {
    if SOCK_OBJECT.is_empty() {
        bail!("this wsguard binary was built without its eBPF probe");
    }
    sock::check_load(SOCK_OBJECT)
}

/// Load or resume the probe according to `cfg` (its mode: `[probe] mode` or
/// `WSGUARD_PROBE_MODE`, resolved against this kernel's features).
pub fn start(cfg: &ProbeConfig, fresh: bool) -> anyhow::Result<Probe> {
    if OBJECT.is_empty() || SOCK_OBJECT.is_empty() {
        bail!(
            "this wsguard binary was built without its eBPF probe (bpf-linker or the eBPF Rust \
             toolchain was missing at build time). Run `cargo xtask setup`, then rebuild; see README"
        );
    }
    match fs::ensure_tracefs() {
        Ok(true) => info!("mounted tracefs at {}", fs::TRACEFS),
        Ok(false) => {}
        Err(e) => warn!("{e:#} (raw tracepoints attach without it; `wsguard doctor` explains)"),
    }
    let pin = &cfg.pin_path;
    fs::ensure_bpffs(pin)?;
    if fresh && pin.exists() {
        std::fs::remove_dir_all(pin).with_context(|| format!("cannot remove {}", pin.display()))?;
        info!("--fresh: removed pinned probe state at {}", pin.display());
    }
    std::fs::create_dir_all(pin).with_context(|| format!("cannot create {}", pin.display()))?;
    let choice = cfg.mode.with_env()?;
    let pinned = pinned_mode(pin);
    let (mut mode, mut reason) = match pinned {
        Some(m) => {
            if matches!((choice, m), (mode::ModeChoice::Socket, Mode::Syscall) | (mode::ModeChoice::Syscall, Mode::Socket)) {
                bail!(
                    "the probe pinned at {} runs the {m} mode, but the {} mode was asked for; \
                     restart with --fresh to switch (counts restart at 0)",
                    pin.display(),
                    if m == Mode::Socket { "syscall" } else { "socket" }
                );
            }
            check_layout(pin, m)?;
            (m, format!("resumed the {m}-mode probe pinned at {}", pin.display()))
        }
        None => {
            let (m, why) = mode::resolve(choice, &mode::Features::detect()).map_err(|e| anyhow::anyhow!(e))?;
            info!("probe mode {m} ({why})");
            (m, why)
        }
    };
    let resumed = pinned.is_some();
    if mode == Mode::Socket {
        if let Some(w) = mode::tcp_iter_uaf_warning(&mode::kernel_release()) {
            warn!("{w}");
        }
        match sock::start(cfg, pin, resumed, SOCK_OBJECT) {
            Ok(mut p) => {
                p.reason = reason;
                return Ok(p);
            }
            // `auto` proves the socket mode by loading it: what the kernel's BTF could not
            // tell (socket storage from tracing programs, a sock_ops link) falls back here.
            Err(e) if choice == mode::ModeChoice::Auto && !resumed => {
                reason = format!("auto: the socket mode did not load here ({e:#}); the syscall mode runs");
                warn!("{reason}");
                // Maps the attempt pinned are not the syscall mode's to reuse.
                detach::detach(pin).with_context(|| format!("cleaning {} after the socket mode failed", pin.display()))?;
                std::fs::create_dir_all(pin).with_context(|| format!("cannot create {}", pin.display()))?;
                mode = Mode::Syscall;
            }
            Err(e) => return Err(e),
        }
    }
    debug_assert_eq!(mode, Mode::Syscall);

    let mut ebpf = load_object(cfg, pin, &PINNED_MAPS, Some(cfg.max_connections), OBJECT).context("loading the eBPF object")?;

    let mut preexisting = None;
    if resumed {
        check_pinned_links(pin, TRACEPOINTS.iter().map(|(prog, _)| *prog))?;
        info!("resumed the running probe pinned at {}", pin.display());
    } else {
        // A server already blocked in accept() made its entry before we attached; mark every
        // listener now, before attaching, so no kernel writer races these word updates.
        let pids = crate::util::procinfo::listening_pids();
        maps::mark_watched(&mut ebpf, &pids)?;
        maps::set_layout(&mut ebpf)?;
        let before = crate::util::procinfo::inbound_connection_fds();
        info!("watching {} processes that already listen", pids.len());
        for (prog, tp) in TRACEPOINTS {
            let p: &mut RawTracePoint =
                ebpf.program_mut(prog).with_context(|| format!("program {prog} missing from the object"))?.try_into()?;
            p.load().with_context(|| format!("the verifier rejected {prog}"))?;
            let id = p.attach(tp).with_context(|| format!("attaching {prog} to raw tracepoint {tp}"))?;
            let link: FdLink = p.take_link(id)?.into();
            link.pin(link_pin(pin, prog)).with_context(|| format!("pinning the {prog} link"))?;
            // Pinned too, so any later agent can read its run time and count (bpf_stats).
            p.pin(prog_pin(pin, prog)).with_context(|| format!("pinning program {prog}"))?;
        }
        info!("probe attached (raw tracepoints sys_enter, sys_exit), pinned at {}", pin.display());
        preexisting = Some(not_followed(&ebpf, before));
    }
    Ok(Probe { ebpf, mode: Mode::Syscall, reason, resumed, pin_path: pin.clone(), preexisting, tls: Vec::new() })
}

/// The inbound connections the probe does not follow from their first byte: those open before
/// the scan just before attaching (`before`), and those accepted between that scan and the
/// attach, which the probe never saw accepted (loading and verifying can take seconds on a busy
/// machine; the first start on a new host mounts tracefs too). Connections accepted after the
/// attach are in the connection map; one found open but not there is checked again a moment
/// later (its accept may still be returning), then counted as not followed.
fn not_followed(ebpf: &Ebpf, before: HashMap<u32, HashMap<u64, u32>>) -> HashMap<u32, HashSet<u64>> {
    let unseen = |after: &HashMap<u32, HashMap<u64, u32>>| -> Vec<(u32, u64, u32)> {
        let mut out = Vec::new();
        for (pid, conns) in after {
            for (&inode, &fd) in conns {
                let known_before = before.get(pid).is_some_and(|b| b.contains_key(&inode));
                if !known_before && !maps::conn_tracked(ebpf, *pid, fd) {
                    out.push((*pid, inode, fd));
                }
            }
        }
        out
    };
    let mut gap = unseen(&crate::util::procinfo::inbound_connection_fds());
    if !gap.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let again = crate::util::procinfo::inbound_connection_fds();
        let still: HashSet<(u32, u64, u32)> = unseen(&again).into_iter().collect();
        gap.retain(|c| still.contains(c));
    }
    if !gap.is_empty() {
        warn!(
            "{} connections were accepted while the probe was attaching: not followed, reported as \
             pre-existing (unfollowed_connections)",
            gap.len()
        );
    }
    let mut out: HashMap<u32, HashSet<u64>> = before.into_iter().map(|(pid, m)| (pid, m.into_keys().collect())).collect();
    for (pid, inode, _) in gap {
        out.entry(pid).or_default().insert(inode);
    }
    out
}

/// Refuse pinned maps made by a wsguard with another record layout: the layout version written
/// at attach (older probes have no `WSG_LAYOUT` map at all), and the record sizes.
fn check_layout(pin: &Path, mode: Mode) -> anyhow::Result<()> {
    let incompatible = |why: String| {
        anyhow::anyhow!(
            "the probe pinned at {} was made by an incompatible wsguard version ({why}); restart \
             with --fresh to replace it (counts restart at 0)",
            pin.display()
        )
    };
    let version = aya::maps::MapData::from_pin(pin.join(names::LAYOUT))
        .ok()
        .and_then(|m| aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(m)).ok())
        .and_then(|a| a.get(&0, 0).ok());
    if version != Some(wsguard_common::LAYOUT_VERSION) {
        let found = version.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
        return Err(incompatible(format!("layout version {found} != {}", wsguard_common::LAYOUT_VERSION)));
    }
    let conns = if mode == Mode::Socket { names::SK } else { names::CONNS };
    let want = [(conns, std::mem::size_of::<ConnState>()), (names::PROCS, std::mem::size_of::<ProcStats>())];
    for (name, size) in want {
        let info =
            MapInfo::from_pin(pin.join(name)).with_context(|| format!("reading pinned map {name}; restart with --fresh"))?;
        if info.value_size() as usize != size {
            return Err(incompatible(format!("{name}: value size {} != {size}", info.value_size())));
        }
    }
    Ok(())
}

/// Detach and unpin everything under `pin` (`wsguard detach`, a clean stop).
pub fn remove(pin: &Path) -> std::io::Result<detach::Detached> {
    detach::detach(pin)
}
