//! TLS plaintext for the socket mode: finds the OpenSSL copies on the host (shared `libssl` and
//! executables that link it statically and export its symbols, such as Debian's `node`) and
//! attaches the probe's uprobes to them by file, so every process using that file is covered,
//! including processes started later. The links belong to the running agent (not pinned): a stop
//! detaches them with the agent's other handles. Kernel side: agent-ebpf/src/tls.rs.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use aya::{
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};
use object::{Object, ObjectSymbol};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wsguard_common::{
    conn::{phase, ConnState},
    names,
};

/// The `[probe.tls]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Read TLS connections' plaintext from OpenSSL (socket mode only). Default true.
    pub enabled: bool,
    /// OpenSSL files to hook besides those found (shared `libssl.so*` or executables that export
    /// `SSL_read`). Found: `libssl` mapped by a running process, the system's `libssl.so.3`, and
    /// running executables (and `node` on `PATH`) that export `SSL_read`.
    pub paths: Vec<PathBuf>,
    /// Look for OpenSSL copies in running processes and the usual places (default true); false
    /// hooks `paths` only.
    pub discover: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { enabled: true, paths: Vec::new(), discover: true }
    }
}

/// Where OpenSSL's symbols are, as the program that handles each (entry probes; the return
/// probe `wsg_ssl_ret` goes on the four read/write calls).
const ENTRIES: [(&str, &str); 5] = [
    (names::PROG_SSL_READ, "SSL_read"),
    (names::PROG_SSL_READ_EX, "SSL_read_ex"),
    (names::PROG_SSL_WRITE, "SSL_write"),
    (names::PROG_SSL_WRITE_EX, "SSL_write_ex"),
    (names::PROG_SSL_FREE, "SSL_free"),
];
const RETURNS: [&str; 4] = ["SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"];

/// The system's shared OpenSSL, where distributions put it.
const SYSTEM_LIBSSL: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib64/libssl.so.3",
    "/usr/lib/libssl.so.3",
];

/// One OpenSSL file and whether it is hooked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub path: PathBuf,
    /// None: hooked; else why not.
    pub error: Option<String>,
}

/// The OpenSSL files to hook: `cfg.paths`, then (with `discover`) what the host has, each file
/// once (by device and inode: `/lib` and `/usr/lib` are often one directory).
pub fn candidates(cfg: &TlsConfig) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = cfg.paths.clone();
    if cfg.discover {
        paths.extend(SYSTEM_LIBSSL.iter().map(PathBuf::from));
        paths.extend(running_openssl());
        if let Some(node) = on_path("node") {
            paths.push(node);
        }
    }
    let mut seen = HashSet::new();
    paths
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            seen.insert((m.dev(), m.ino())).then(|| p.canonicalize().unwrap_or(p))
        })
        .filter(|p| exports_ssl_read(p))
        .collect()
}

/// `libssl*.so*` files mapped by running processes, and running executables that export
/// `SSL_read` (checked later by [`exports_ssl_read`]).
fn running_openssl() -> Vec<PathBuf> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            let base = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // Reading every executable's symbols would be costly: the known static embedders.
            if base == "node" || base == "nodejs" {
                out.insert(exe);
            }
        }
        let Ok(maps) = std::fs::read_to_string(e.path().join("maps")) else { continue };
        for line in maps.lines() {
            if let Some(p) = line.split_whitespace().nth(5) {
                let base = p.rsplit('/').next().unwrap_or("");
                if base.starts_with("libssl.so") {
                    out.insert(PathBuf::from(p));
                }
            }
        }
    }
    out.into_iter().collect()
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// The file is an ELF object whose dynamic symbols define `SSL_read`. Read lazily (headers,
/// `.dynsym`, `.dynstr`), never whole: Debian's `node` is ~100 MB, and copying it in one `read`
/// was a tenth of the agent's start-up CPU on the host it runs beside.
fn exports_ssl_read(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    let data = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&data) else { return false };
    obj.dynamic_symbols().any(|s| s.is_definition() && s.name() == Ok("SSL_read"))
}

/// Load the uprobe programs and attach them to every candidate. A file that does not take them
/// is reported and skipped; the rest of the agent runs either way. `resumed`: the probe ran on
/// without an agent, so without these hooks (see [`mark_gap`]).
pub fn attach(ebpf: &mut Ebpf, cfg: &TlsConfig, resumed: bool) -> Vec<Target> {
    if resumed {
        match mark_gap(ebpf) {
            Ok(0) => {}
            Ok(n) => warn!("TLS: {n} wss:// connections were open while no agent read their plaintext: marked out of sync"),
            Err(e) => warn!("TLS: cannot mark connections open across the restart: {e:#}"),
        }
    }
    if !cfg.enabled {
        return Vec::new();
    }
    if let Err(e) = load(ebpf) {
        warn!("TLS plaintext off: {e:#}");
        return vec![Target { path: PathBuf::new(), error: Some(format!("{e:#}")) }];
    }
    let targets: Vec<Target> = candidates(cfg)
        .into_iter()
        .map(|path| {
            let error = attach_file(ebpf, &path).err().map(|e| format!("{e:#}"));
            match &error {
                None => info!("TLS: hooked OpenSSL in {}", path.display()),
                Some(e) => warn!("TLS: cannot hook {}: {e}", path.display()),
            }
            Target { path, error }
        })
        .collect();
    if targets.is_empty() {
        info!("TLS: no OpenSSL found to hook (probe.tls.paths names more)");
    }
    targets
}

/// A resumed probe: the plaintext that passed while no agent had the uprobes attached is lost, so
/// a TLS WebSocket open across that gap is marked out of sync (its framing is never guessed).
fn mark_gap(ebpf: &mut Ebpf) -> anyhow::Result<u64> {
    const BPF_EXIST: u64 = 2;
    let map = ebpf.map_mut(names::TLS_CONN).context("map WSG_TLS_CONN missing")?;
    let mut m: aya::maps::HashMap<_, u64, ConnState> = aya::maps::HashMap::try_from(map)?;
    let keys: Vec<u64> = m.keys().flatten().collect();
    let mut n = 0;
    for k in keys {
        let Ok(mut c) = m.get(&k, 0) else { continue };
        if c.phase == phase::WEBSOCKET && c.out_of_sync == 0 {
            c.out_of_sync = 1;
            if m.insert(k, c, BPF_EXIST).is_ok() {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn load(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for prog in ENTRIES.iter().map(|(p, _)| *p).chain([names::PROG_SSL_RET]) {
        let p: &mut UProbe = ebpf.program_mut(prog).with_context(|| format!("program {prog} missing"))?.try_into()?;
        p.load().with_context(|| format!("loading {prog}"))?;
    }
    Ok(())
}

fn attach_file(ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<()> {
    for (prog, sym) in ENTRIES {
        let p: &mut UProbe = ebpf.program_mut(prog).context("program missing")?.try_into()?;
        p.attach(sym, path, UProbeScope::AllProcesses).with_context(|| format!("uprobe {sym}"))?;
    }
    for sym in RETURNS {
        let p: &mut UProbe = ebpf.program_mut(names::PROG_SSL_RET).context("program missing")?.try_into()?;
        p.attach(sym, path, UProbeScope::AllProcesses).with_context(|| format!("uretprobe {sym}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_openssl_is_no_candidate() {
        let cfg = TlsConfig { enabled: true, paths: vec![PathBuf::from("/bin/sh")], discover: false };
        assert!(candidates(&cfg).is_empty());
    }

    #[test]
    fn the_same_file_under_two_names_is_hooked_once() {
        let Some(lib) = SYSTEM_LIBSSL.iter().map(Path::new).find(|p| p.exists()) else { return };
        let alias = PathBuf::from("/lib").join(lib.strip_prefix("/usr/lib").unwrap_or(lib));
        let cfg = TlsConfig { enabled: true, paths: vec![lib.to_path_buf(), alias], discover: false };
        assert_eq!(candidates(&cfg).len(), 1);
    }
}
