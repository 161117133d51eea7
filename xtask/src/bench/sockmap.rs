//! The floor of a sockmap-based probe (issue #15's one untried design), loaded straight through
//! bpf(2) from hand-written instructions like the `tp_btf` floors: a `SOCKHASH`, a cgroup
//! `sock_ops` program that puts every passively established socket on the bench server's port
//! into it (key: remote ip4 and port), and verdict programs attached to that map that run only
//! on those sockets: `sk_msg` (send side) and `sk_skb` (`BPF_SK_SKB_VERDICT`, receive side).
//! [`Kind::Empty`] returns `SK_PASS` and nothing else: what the tcp_bpf data path alone costs the
//! server. [`Kind::Read`] also does what any real probe needs at least: 16 bytes of the message
//! (direct `msg->data` access on send, `bpf_skb_load_bytes` on receive) and one
//! `bpf_sk_storage_get` of the socket (on receive only if the verifier allows it there; the
//! outcome is recorded). `sock_ops` attaches to a cgroup of the bench's own that only the echo
//! server runs in ([`Cgroup`]), so no other socket of the host is touched. Dropping detaches.

use super::bpf::{bpf, prog_load, Fds};
use super::floor::{insn, int_btf, prog_id, sk_storage_map};
use anyhow::{bail, Context, Result};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};

/// Which verdict programs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `r0 = SK_PASS; exit` on both sides.
    Empty,
    /// 16 bytes of the message and one `bpf_sk_storage_get`, then `SK_PASS`.
    Read,
}

const MAP_CREATE: i64 = 0;
const LINK_CREATE: i64 = 28;
const MAP_TYPE_SOCKHASH: u32 = 18;
const PROG_TYPE_SOCK_OPS: u32 = 13;
const PROG_TYPE_SK_SKB: u32 = 14;
const PROG_TYPE_SK_MSG: u32 = 16;
const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
const ATTACH_SK_MSG_VERDICT: u32 = 7;
const ATTACH_SK_SKB_VERDICT: u32 = 38;
const SOCK_OPS_PASSIVE_ESTABLISHED_CB: i32 = 5;
const FUNC_SOCK_HASH_UPDATE: i32 = 70;
const FUNC_SKB_LOAD_BYTES: i32 = 26;
const FUNC_SK_STORAGE_GET: i32 = 107;
const SK_PASS: i32 = 1;

/// A cgroup v2 directory of the bench's own (`<cgroup2 mount>/wsguard-bench`): the echo server
/// is started in it, so its listening socket (and every socket accepted from it) belongs to it.
/// Removed when dropped (after the server, declared later, has stopped).
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    pub fn create() -> Result<Cgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| PathBuf::from(f[1]))
            .context("no cgroup v2 hierarchy mounted: the sockmap floor needs one for its sock_ops program")?;
        let dir = root.join("wsguard-bench");
        if !dir.is_dir() {
            std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        Ok(Cgroup { dir })
    }

    /// The `cgroup.procs` file a child writes its pid to before it execs the server.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The attached floor: program ids for bpf_stats, and what the verifier allowed.
pub struct Sockmap {
    /// (sk_msg, sk_skb, sock_ops) program ids.
    pub msg_prog: u64,
    pub skb_prog: u64,
    pub ops_prog: u64,
    /// Why the receive side's `bpf_sk_storage_get` was left out, when it was.
    pub skb_storage_refused: Option<String>,
    /// Closed in reverse when dropped: the sock_ops link first (no new sockets), then the
    /// verdict links, programs and maps; freeing the SOCKHASH takes its sockets out and gives
    /// them back their TCP proto ops.
    fds: Fds,
}

/// Attach the floor `kind` for sockets accepted on local `port` in the cgroup directory `cg`.
pub fn attach(kind: Kind, cg: &Path, port: u16) -> Result<Sockmap> {
    let mut out = Sockmap { msg_prog: 0, skb_prog: 0, ops_prog: 0, skb_storage_refused: None, fds: Fds::default() };
    let storage = match kind {
        Kind::Empty => None,
        Kind::Read => {
            let btf = int_btf()?;
            out.fds.push(btf);
            let m = sk_storage_map(btf)?;
            out.fds.push(m);
            Some(m)
        }
    };
    let hash = sockhash()?;
    out.fds.push(hash);

    // The verdict programs go on the map before any socket does: a socket's psock takes the
    // programs the map has when it is added.
    let msg = prog_load(PROG_TYPE_SK_MSG, ATTACH_SK_MSG_VERDICT, 0, &msg_code(storage), b"wsgb_sk_msg")?;
    out.fds.push(msg);
    out.msg_prog = prog_id(msg);
    out.fds.push(link(msg, hash, ATTACH_SK_MSG_VERDICT, "sk_msg verdict")?);
    let skb = match storage {
        None => prog_load(PROG_TYPE_SK_SKB, ATTACH_SK_SKB_VERDICT, 0, &skb_code(None), b"wsgb_sk_skb")?,
        Some(m) => match prog_load(PROG_TYPE_SK_SKB, ATTACH_SK_SKB_VERDICT, 0, &skb_code(Some(m)), b"wsgb_sk_skb") {
            Ok(fd) => fd,
            Err(e) => {
                out.skb_storage_refused = Some(format!("{e:#}"));
                prog_load(PROG_TYPE_SK_SKB, ATTACH_SK_SKB_VERDICT, 0, &skb_code(None), b"wsgb_sk_skb")?
            }
        },
    };
    out.fds.push(skb);
    out.skb_prog = prog_id(skb);
    out.fds.push(link(skb, hash, ATTACH_SK_SKB_VERDICT, "sk_skb verdict")?);

    let ops = prog_load(PROG_TYPE_SOCK_OPS, ATTACH_CGROUP_SOCK_OPS, 0, &ops_code(hash, port), b"wsgb_sockops")?;
    out.fds.push(ops);
    out.ops_prog = prog_id(ops);
    let dir = std::fs::File::open(cg).with_context(|| format!("open {}", cg.display()))?.into_raw_fd();
    out.fds.push(dir);
    out.fds.push(link(ops, dir, ATTACH_CGROUP_SOCK_OPS, "cgroup sock_ops")?);
    Ok(out)
}

/// `ld_imm64 r1, map` (a pseudo map fd): two instruction slots.
fn ld_map(dst: u8, fd: i32) -> [u64; 2] {
    [insn(0x18, dst, 1, 0, fd), 0]
}

/// sock_ops: on PASSIVE_ESTABLISHED of a socket whose local port is `port`, put it in `hash`
/// under (remote_port, remote_ip4); return 1.
fn ops_code(hash: i32, port: u16) -> Vec<u64> {
    let mut c = vec![
        insn(0xbf, 6, 1, 0, 0),                                // 0: r6 = ctx
        insn(0x61, 2, 6, 0, 0),                                // 1: r2 = ctx->op
        insn(0x55, 2, 0, 13, SOCK_OPS_PASSIVE_ESTABLISHED_CB), // 2: if r2 != PASSIVE goto 16
        insn(0x61, 2, 6, 68, 0),                               // 3: r2 = ctx->local_port (host order)
        insn(0x55, 2, 0, 11, port as i32),                     // 4: if r2 != port goto 16
        insn(0x61, 2, 6, 64, 0),                               // 5: r2 = ctx->remote_port
        insn(0x63, 10, 2, -8, 0),                              // 6: key[0] = r2
        insn(0x61, 2, 6, 24, 0),                               // 7: r2 = ctx->remote_ip4
        insn(0x63, 10, 2, -4, 0),                              // 8: key[1] = r2
        insn(0xbf, 1, 6, 0, 0),                                // 9: r1 = ctx
    ];
    c.extend(ld_map(2, hash)); // 10-11: r2 = hash
    c.extend([
        insn(0xbf, 3, 10, 0, 0),                    // 12: r3 = fp
        insn(0x07, 3, 0, 0, -8),                    // 13: r3 = &key
        insn(0xb7, 4, 0, 0, 0),                     // 14: r4 = BPF_ANY
        insn(0x85, 0, 0, 0, FUNC_SOCK_HASH_UPDATE), // 15: bpf_sock_hash_update
        insn(0xb7, 0, 0, 0, 1),                     // 16: r0 = 1
        insn(0x95, 0, 0, 0, 0),                     // 17: exit
    ]);
    c
}

/// sk_msg: SK_PASS; with `storage`, first copy msg->data[0..16] to the stack when the first
/// scatterlist element holds that much, and look the socket up in the storage map.
fn msg_code(storage: Option<i32>) -> Vec<u64> {
    let Some(m) = storage else { return vec![insn(0xb7, 0, 0, 0, SK_PASS), insn(0x95, 0, 0, 0, 0)] };
    let mut c = vec![
        insn(0xbf, 6, 1, 0, 0),    // 0: r6 = ctx
        insn(0x79, 2, 6, 0, 0),    // 1: r2 = msg->data
        insn(0x79, 3, 6, 8, 0),    // 2: r3 = msg->data_end
        insn(0xbf, 4, 2, 0, 0),    // 3: r4 = r2
        insn(0x07, 4, 0, 0, 16),   // 4: r4 += 16
        insn(0x2d, 4, 3, 4, 0),    // 5: if r4 > r3 goto 10
        insn(0x79, 5, 2, 0, 0),    // 6: r5 = data[0..8]
        insn(0x7b, 10, 5, -16, 0), // 7: stack = r5
        insn(0x79, 5, 2, 8, 0),    // 8: r5 = data[8..16]
        insn(0x7b, 10, 5, -8, 0),  // 9: stack = r5
        insn(0x79, 2, 6, 72, 0),   // 10: r2 = msg->sk
        insn(0x15, 2, 0, 5, 0),    // 11: if r2 == 0 goto 17
    ];
    c.extend(ld_map(1, m)); // 12-13
    c.extend([
        insn(0xb7, 3, 0, 0, 0),                   // 14: r3 = NULL
        insn(0xb7, 4, 0, 0, 0),                   // 15: r4 = 0 (no create)
        insn(0x85, 0, 0, 0, FUNC_SK_STORAGE_GET), // 16
        insn(0xb7, 0, 0, 0, SK_PASS),             // 17: r0 = SK_PASS
        insn(0x95, 0, 0, 0, 0),                   // 18: exit
    ]);
    c
}

/// sk_skb verdict: SK_PASS; with a read: `bpf_skb_load_bytes(skb, 0, stack, 16)` when the skb
/// holds 16 bytes, and with `storage` one `bpf_sk_storage_get` of skb->sk.
fn skb_code(storage: Option<i32>) -> Vec<u64> {
    let mut c = vec![
        insn(0xbf, 6, 1, 0, 0),                   // 0: r6 = ctx
        insn(0x61, 2, 6, 0, 0),                   // 1: r2 = skb->len
        insn(0xa5, 2, 0, 6, 16),                  // 2: if r2 < 16 goto 9
        insn(0xbf, 1, 6, 0, 0),                   // 3: r1 = ctx
        insn(0xb7, 2, 0, 0, 0),                   // 4: r2 = 0 (offset)
        insn(0xbf, 3, 10, 0, 0),                  // 5: r3 = fp
        insn(0x07, 3, 0, 0, -16),                 // 6: r3 = fp - 16
        insn(0xb7, 4, 0, 0, 16),                  // 7: r4 = 16
        insn(0x85, 0, 0, 0, FUNC_SKB_LOAD_BYTES), // 8
    ];
    if let Some(m) = storage {
        c.extend([
            insn(0x79, 2, 6, 168, 0), // 9: r2 = skb->sk
            insn(0x15, 2, 0, 5, 0),   // 10: if r2 == 0 goto 16
        ]);
        c.extend(ld_map(1, m)); // 11-12
        c.extend([
            insn(0xb7, 3, 0, 0, 0),                   // 13
            insn(0xb7, 4, 0, 0, 0),                   // 14
            insn(0x85, 0, 0, 0, FUNC_SK_STORAGE_GET), // 15
        ]);
    }
    c.extend([insn(0xb7, 0, 0, 0, SK_PASS), insn(0x95, 0, 0, 0, 0)]);
    c
}

fn sockhash() -> Result<i32> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&MAP_TYPE_SOCKHASH.to_ne_bytes());
    attr[4..8].copy_from_slice(&8u32.to_ne_bytes()); // key: remote port, remote ip4
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes()); // value: socket (fd/cookie slot)
    attr[12..16].copy_from_slice(&65536u32.to_ne_bytes());
    attr[28..38].copy_from_slice(b"wsgb_sockh");
    let fd = bpf(MAP_CREATE, &attr);
    if fd < 0 {
        bail!("creating the SOCKHASH failed: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn link(prog: i32, target: i32, attach_type: u32, what: &str) -> Result<i32> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(target as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    let fd = bpf(LINK_CREATE, &attr);
    if fd < 0 {
        bail!("BPF_LINK_CREATE ({what}) failed: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Whether process `pid` is in cgroup `cg` (the echo server must be, or nothing enters the map).
pub fn in_cgroup(pid: u32, cg: &Path) -> bool {
    let name = cg.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| s.lines().any(|l| l.starts_with("0::") && l.ends_with(&format!("/{name}"))))
        .unwrap_or(false)
}
