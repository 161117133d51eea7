//! In-kernel cost: `kernel.bpf_stats_enabled`, `bpftool -j prog show`, and an empty raw
//! tracepoint program (the floor) loaded straight through bpf(2).

use crate::util;
use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn stats_enabled() -> bool {
    std::fs::read_to_string(STATS_SYSCTL).map(|s| s.trim() == "1").unwrap_or(false)
}

pub fn set_stats(on: bool) {
    let _ = std::fs::write(STATS_SYSCTL, if on { "1" } else { "0" });
}

/// run_time_ns and run_cnt of one program at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ns: u64,
    pub cnt: u64,
}

/// `bpftool -j prog show`: id -> (type, name, counts).
pub fn progs() -> BTreeMap<u64, (String, String, Counts)> {
    let mut out = BTreeMap::new();
    let Some(text) = util::output(util::cmd("bpftool", ["-j", "prog", "show"])) else {
        return out;
    };
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&text) else {
        return out;
    };
    for p in list {
        let Some(id) = p["id"].as_u64() else { continue };
        let c = Counts { ns: p["run_time_ns"].as_u64().unwrap_or(0), cnt: p["run_cnt"].as_u64().unwrap_or(0) };
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        out.insert(id, (s("type"), s("name"), c));
    }
    out
}

/// Counts of the given programs now.
pub fn counts(ids: &[u64]) -> Vec<Counts> {
    let all = progs();
    ids.iter().map(|id| all.get(id).map(|p| p.2).unwrap_or_default()).collect()
}

/// ns per run between two readings; None without runs.
pub fn ns_per_run(a: Counts, b: Counts) -> Option<f64> {
    let runs = b.cnt.checked_sub(a.cnt)?;
    (runs > 0).then(|| (b.ns.saturating_sub(a.ns)) as f64 / runs as f64)
}

/// Raw tracepoint links: (prog id, tp_name, pinned paths).
pub fn raw_tp_links() -> Vec<(u64, String, Vec<String>)> {
    let Some(text) = util::output(util::cmd("bpftool", ["-j", "-f", "link", "show"])) else {
        return Vec::new();
    };
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    list.iter()
        .filter(|l| l["type"] == "raw_tracepoint")
        .map(|l| {
            let pins = l["pinned"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
                .unwrap_or_default();
            (l["prog_id"].as_u64().unwrap_or(0), l["tp_name"].as_str().unwrap_or("").to_string(), pins)
        })
        .collect()
}

/// The two programs of our probe that run on the data path, from the links pinned under
/// `pin_path` (waiting up to 30 s for the agent to pin them: a busy shared machine can take that long, and in the socket mode its `sock_ops`): (sys_enter, sys_exit) in the syscall
/// mode, (wsg_sock_recv, wsg_sock_send) in the socket mode.
pub fn wsguard_progs(pin_path: &Path) -> Option<(u64, u64)> {
    for _ in 0..300 {
        if let Some(ids) = wsguard_progs_now(pin_path) {
            return Some(ids);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("    warning: no links pinned under {}: no probe stats", pin_path.display());
    None
}

/// Hot program names of each mode, in the order [`wsguard_progs`] returns them.
pub const SYSCALL_HOT: [&str; 2] = ["wsg_sys_enter", "wsg_sys_exit"];
pub const SOCKET_HOT: [&str; 2] = ["wsg_sock_recv", "wsg_sock_send"];

fn wsguard_progs_now(pin_path: &Path) -> Option<(u64, u64)> {
    let ids = own_links(&pin_path.to_string_lossy());
    let all = progs();
    let find = |name: &str| ids.iter().copied().find(|id| all.get(id).is_some_and(|p| p.1 == name));
    if let (Some(a), Some(b)) = (find(SOCKET_HOT[0]), find(SOCKET_HOT[1])) {
        // The socket mode pins `sock_ops` last: until it is attached, connections are born
        // without state and a measurement would time untracked runs as tracked ones.
        return find("wsg_sock_ops").map(|_| (a, b));
    }
    if let (Some(a), Some(b)) = (find(SYSCALL_HOT[0]), find(SYSCALL_HOT[1])) {
        return Some((a, b));
    }
    None
}

/// Sum of run_cnt and run_time_ns over every program of the bench's own probe (the links
/// pinned under the bench's pin path; other helpers' probes on a shared machine are left out).
pub fn all_wsguard_counts() -> Counts {
    sum_own(|_| true)
}

/// run_cnt and run_time_ns of the bench's own programs named in `names`, summed.
pub fn counts_named(names: &[&str]) -> Counts {
    sum_own(|n| names.contains(&n))
}

fn sum_own(want: impl Fn(&str) -> bool) -> Counts {
    let own = own_links(super::PIN_PATH);
    progs()
        .iter()
        .filter(|(id, p)| own.contains(id) && p.1.starts_with("wsg_") && want(&p.1))
        .fold(Counts::default(), |a, (_, p)| Counts { ns: a.ns + p.2.ns, cnt: a.cnt + p.2.cnt })
}

/// Whether the bench's own probe has a program named `name`.
pub fn has_own_prog(name: &str) -> bool {
    let own = own_links(super::PIN_PATH);
    progs().iter().any(|(id, p)| own.contains(id) && p.1 == name)
}

/// wsguard probes attached or pinned anywhere but at `own_pin` (the bench's own, which it
/// detaches itself): programs named `wsg_*` in `bpftool prog show` that are not the bench's, and
/// pin directories `/sys/fs/bpf/wsguard*` holding links. Each line names one and how to detach it.
pub fn other_wsguard_probes(own_pin: &Path) -> Vec<String> {
    let own = own_pin.to_string_lossy().to_string();
    let mut out = Vec::new();
    let mut pins: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().to_string())
        .filter(|p| p.starts_with("/sys/fs/bpf/wsguard") && *p != own)
        .collect();
    pins.sort();
    for p in &pins {
        if own_links(p).is_empty() {
            // Only maps left pinned (an agent stopped with its state kept): nothing runs, so
            // "off" is still off. Loaded `wsg_*` programs are caught below whatever holds them.
            println!("    note: {p} holds pinned wsguard maps but no links (nothing attached); not ours, left alone");
            continue;
        }
        out.push(format!(
            "pinned probe {p}: `wsguard detach -c <the config whose probe.pin_path is {p}>` (or `rm -r {p}` once its agent stopped)"
        ));
    }
    let own_ids: Vec<u64> = own_links(&own);
    for (id, (_, name, _)) in progs() {
        if name.starts_with("wsg_") && !own_ids.contains(&id) {
            out.push(format!(
                "program {id} ({name}) is loaded: stop the agent that holds it and detach its probe (`wsguard detach -c <its config>`)"
            ));
        }
    }
    out
}

/// Program ids behind links pinned under `pin`.
fn own_links(pin: &str) -> Vec<u64> {
    let Some(text) = util::output(util::cmd("bpftool", ["-j", "-f", "link", "show"])) else {
        return Vec::new();
    };
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    list.iter()
        .filter(|l| l["pinned"].as_array().is_some_and(|a| a.iter().any(|p| p.as_str().is_some_and(|p| p.starts_with(pin)))))
        .filter_map(|l| l["prog_id"].as_u64())
        .collect()
}

/// Other programs on the syscall hooks (they tax every run, off or on), for the record.
pub fn foreign_syscall_hooks(pin_path: &Path) -> Vec<String> {
    let pin = pin_path.to_string_lossy().to_string();
    raw_tp_links()
        .into_iter()
        .filter(|(_, tp, pins)| (tp == "sys_enter" || tp == "sys_exit") && !pins.iter().any(|p| p.starts_with(&pin)))
        .map(|(id, tp, pins)| format!("prog {id} on raw {tp} pinned at {}", pins.join(",")))
        .collect()
}

#[cfg(target_arch = "x86_64")]
const SYS_BPF: i64 = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: i64 = 280;

extern "C" {
    fn syscall(n: i64, ...) -> i64;
    pub(super) fn close(fd: i32) -> i32;
}

/// File descriptors of loaded objects (BTF, maps, programs, links), closed in reverse order when
/// dropped: links first (they hold the programs), then programs, maps and BTF.
#[derive(Default)]
pub(super) struct Fds(Vec<i32>);

impl Fds {
    pub(super) fn push(&mut self, fd: i32) {
        self.0.push(fd);
    }
}

impl Drop for Fds {
    fn drop(&mut self) {
        for fd in self.0.iter().rev() {
            // SAFETY: our fds, closed once.
            unsafe { close(*fd) };
        }
    }
}

/// `BPF_PROG_LOAD` of hand-written instructions `code` (GPL), typed `prog_type` / `attach_type`,
/// attached by vmlinux BTF id `attach_btf_id` (0: none): its fd, or the errno and the verifier
/// log's last lines.
pub(super) fn prog_load(prog_type: u32, attach_type: u32, attach_btf_id: u32, code: &[u64], name: &[u8]) -> Result<i32> {
    const PROG_LOAD: i64 = 5;
    let license = b"GPL\0";
    let mut log = vec![0u8; 16384];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&(code.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..48 + name.len()].copy_from_slice(name);
    attr[68..72].copy_from_slice(&attach_type.to_ne_bytes());
    attr[108..112].copy_from_slice(&attach_btf_id.to_ne_bytes());
    let fd = bpf(PROG_LOAD, &attr);
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        let last = log.trim_end_matches('\0').trim().lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        bail!("BPF_PROG_LOAD of {} refused ({err}): {last}", String::from_utf8_lossy(name));
    }
    Ok(fd)
}

/// bpf(2) command `cmd` with a zero-padded attr whose pointers outlive the call: the fd or
/// result it returns (negative on failure).
pub(super) fn bpf(cmd: i64, attr: &[u8; 128]) -> i32 {
    // SAFETY: the attr is 128 readable bytes, the size passed; what it points to is the caller's.
    unsafe { syscall(SYS_BPF, cmd, attr.as_ptr(), attr.len() as u32) as i32 }
}

/// An empty program (`r0 = 0; exit`) on a raw tracepoint: the floor every raw
/// `sys_enter`/`sys_exit` program pays. Detached when dropped.
pub struct EmptyRawTp {
    pub prog_id: u64,
    prog_fd: i32,
    link_fd: i32,
}

impl EmptyRawTp {
    pub fn attach(tp: &str) -> Result<EmptyRawTp> {
        const PROG_LOAD: i64 = 5;
        const RAW_TRACEPOINT_OPEN: i64 = 17;
        const OBJ_GET_INFO_BY_FD: i64 = 15;
        const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
        // mov64 r0, 0 ; exit
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&PROG_TYPE_RAW_TRACEPOINT.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..58].copy_from_slice(b"wsgb_empty");
        // SAFETY: bpf(2) with a zero-padded attr of the size passed; pointers outlive the call.
        let prog_fd = unsafe { syscall(SYS_BPF, PROG_LOAD, attr.as_ptr(), attr.len() as u32) };
        if prog_fd < 0 {
            bail!("BPF_PROG_LOAD of the empty raw tracepoint program failed");
        }
        let name = format!("{tp}\0");
        let mut attr = [0u8; 128];
        attr[0..8].copy_from_slice(&(name.as_ptr() as u64).to_ne_bytes());
        attr[8..12].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
        // SAFETY: as above.
        let link_fd = unsafe { syscall(SYS_BPF, RAW_TRACEPOINT_OPEN, attr.as_ptr(), attr.len() as u32) };
        if link_fd < 0 {
            // SAFETY: our fd.
            unsafe { close(prog_fd as i32) };
            bail!("BPF_RAW_TRACEPOINT_OPEN({tp}) failed");
        }
        // struct bpf_prog_info starts with type (u32) and id (u32).
        let mut info = [0u8; 256];
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        // SAFETY: as above; info is writable for info_len bytes.
        let r = unsafe { syscall(SYS_BPF, OBJ_GET_INFO_BY_FD, attr.as_ptr(), attr.len() as u32) };
        let prog_id = if r == 0 { u32::from_ne_bytes(info[4..8].try_into().unwrap()) as u64 } else { 0 };
        Ok(EmptyRawTp { prog_id, prog_fd: prog_fd as i32, link_fd: link_fd as i32 })
    }
}

impl Drop for EmptyRawTp {
    fn drop(&mut self) {
        // SAFETY: our fds, closed once.
        unsafe {
            close(self.link_fd);
            close(self.prog_fd);
        }
    }
}
