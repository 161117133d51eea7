//! The floors of the socket mode's hot path, loaded straight through bpf(2) (no compiler
//! needed): `tp_btf` programs on `sock_recv_length` and `sock_send_length`, the hooks
//! `wsg_sock_recv`/`wsg_sock_send` run on, that do (a) nothing (`r0 = 0; exit`: the
//! trampoline alone) or (b) only what every socket I/O of the host pays in the socket mode, one
//! `bpf_sk_storage_get` of the socket (in an empty socket-storage map, so every socket's lookup
//! misses, as an untracked socket's does). Whatever the probe does for an untracked socket, it
//! pays (b); what it adds beyond (b) is its own. Detached when dropped.

use super::bpf::{bpf, prog_load, Fds};
use anyhow::{bail, Context, Result};

/// Which floor program.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Floor {
    /// `r0 = 0; exit`.
    Empty,
    /// `bpf_sk_storage_get(map, ctx->sk, NULL, 0); r0 = 0; exit`.
    SkGet,
}

impl Floor {
    pub fn name(self) -> &'static str {
        match self {
            Floor::Empty => "empty_tp_btf",
            Floor::SkGet => "sk_storage_get_tp_btf",
        }
    }
}

/// Both hooks' programs (recv, send), their map and BTF. Dropping detaches and frees them.
pub struct FloorProgs {
    pub prog_ids: Vec<u64>,
    fds: Fds,
}

const MAP_CREATE: i64 = 0;
const OBJ_GET_INFO_BY_FD: i64 = 15;
const RAW_TRACEPOINT_OPEN: i64 = 17;
const BTF_LOAD: i64 = 18;
const PROG_TYPE_TRACING: u32 = 26;
const TRACE_RAW_TP: u32 = 23;
const MAP_TYPE_SK_STORAGE: u32 = 24;
const F_NO_PREALLOC: u32 = 1;
const FUNC_SK_STORAGE_GET: i64 = 107;

/// One instruction: opcode, dst/src registers, offset, immediate.
pub(super) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64 | ((dst as u64 | (src as u64) << 4) << 8) | ((off as u16 as u64) << 16) | ((imm as u32 as u64) << 32)
}

/// Attach floor `f` to both socket I/O tracepoints.
pub fn attach(f: Floor) -> Result<FloorProgs> {
    let mut out = FloorProgs { prog_ids: Vec::new(), fds: Fds::default() };
    let map_fd = match f {
        Floor::Empty => None,
        Floor::SkGet => {
            let btf = int_btf()?;
            out.fds.push(btf);
            let m = sk_storage_map(btf)?;
            out.fds.push(m);
            Some(m)
        }
    };
    let code = match map_fd {
        None => vec![insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)],
        Some(m) => vec![
            insn(0x79, 2, 1, 0, 0),                          // r2 = ctx[0] (sk)
            insn(0x18, 1, 1, 0, m),                          // r1 = map (ld_imm64, pseudo map fd)
            0,                                               //   (its second half)
            insn(0xb7, 3, 0, 0, 0),                          // r3 = NULL (no init value)
            insn(0xb7, 4, 0, 0, 0),                          // r4 = 0 (no create)
            insn(0x85, 0, 0, 0, FUNC_SK_STORAGE_GET as i32), // call bpf_sk_storage_get
            insn(0xb7, 0, 0, 0, 0),                          // r0 = 0
            insn(0x95, 0, 0, 0, 0),                          // exit
        ],
    };
    for tp in ["sock_recv_length", "sock_send_length"] {
        let btf_id = trace_btf_id(tp)?;
        let name: &[u8] = if f == Floor::Empty { b"wsgb_btf_empty" } else { b"wsgb_btf_skget" };
        let fd = prog_load(PROG_TYPE_TRACING, TRACE_RAW_TP, btf_id, &code, name)
            .with_context(|| format!("the {} floor on {tp}", f.name()))?;
        out.fds.push(fd);
        out.prog_ids.push(prog_id(fd));
        let mut attr = [0u8; 128];
        attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        let link = bpf(RAW_TRACEPOINT_OPEN, &attr);
        if link < 0 {
            bail!("attaching the {} floor to {tp} failed", f.name());
        }
        out.fds.push(link);
    }
    Ok(out)
}

/// The vmlinux BTF id of `btf_trace_<tp>`, the typedef a `tp_btf` program attaches by.
fn trace_btf_id(tp: &str) -> Result<u32> {
    let text = crate::util::output(crate::util::cmd("bpftool", ["btf", "dump", "file", "/sys/kernel/btf/vmlinux"]))
        .context("bpftool btf dump of vmlinux")?;
    let want = format!("TYPEDEF 'btf_trace_{tp}'");
    let line = text.lines().find(|l| l.contains(&want)).with_context(|| format!("no {want} in vmlinux BTF"))?;
    Ok(line.trim_start_matches('[').split(']').next().unwrap_or("").parse()?)
}

/// A BTF blob with one type, `int` (id 1): socket storage maps need BTF key and value types.
pub(super) fn int_btf() -> Result<i32> {
    let strings = b"\0int\0";
    let mut types = Vec::new();
    for w in
        [1u32 /* name "int" */, 1 << 24 /* kind INT */, 4 /* size */, (1 << 24) | 32 /* signed, 32 bits */]
    {
        types.extend_from_slice(&w.to_ne_bytes());
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]);
    for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(strings);
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(blob.as_ptr() as u64).to_ne_bytes());
    attr[16..20].copy_from_slice(&(blob.len() as u32).to_ne_bytes());
    let fd = bpf(BTF_LOAD, &attr);
    if fd < 0 {
        bail!("BPF_BTF_LOAD of the floor's int type failed");
    }
    Ok(fd)
}

pub(super) fn sk_storage_map(btf: i32) -> Result<i32> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&MAP_TYPE_SK_STORAGE.to_ne_bytes());
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes());
    attr[16..20].copy_from_slice(&F_NO_PREALLOC.to_ne_bytes());
    attr[28..38].copy_from_slice(b"wsgb_floor");
    attr[48..52].copy_from_slice(&(btf as u32).to_ne_bytes());
    attr[52..56].copy_from_slice(&1u32.to_ne_bytes());
    attr[56..60].copy_from_slice(&1u32.to_ne_bytes());
    let fd = bpf(MAP_CREATE, &attr);
    if fd < 0 {
        bail!("creating the floor's socket storage map failed");
    }
    Ok(fd)
}

pub(super) fn prog_id(fd: i32) -> u64 {
    // struct bpf_prog_info starts with type (u32) and id (u32).
    let mut info = [0u8; 256];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    if bpf(OBJ_GET_INFO_BY_FD, &attr) == 0 {
        u32::from_ne_bytes(info[4..8].try_into().unwrap()) as u64
    } else {
        0
    }
}
