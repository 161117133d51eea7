//! The socket mode: connection state lives in the socket's own storage (`WSG_SK`, a
//! `BPF_MAP_TYPE_SK_STORAGE` map the kernel frees with the socket), found from the socket the
//! hook is handed, not from `(tgid, fd)`. So a connection is followed whatever process reads or
//! writes it (fd passing, `dup2`, Node `cluster`), and only socket I/O runs a wsguard program:
//!
//! * `wsg_sock_ops` (cgroup `sock_ops`, `PASSIVE_ESTABLISHED_CB`): an inbound TCP connection is
//!   born; its state is created (zeroed, id and birth time set).
//! * `wsg_sock_recv` / `wsg_sock_send` (`tp_btf` `sock_recv_length` / `sock_send_length`, args
//!   `sk, ret, flags`): one socket read or write. A socket without state stops at one helper
//!   call (a connection that turned out not to be WebSocket has its state deleted, so it joins
//!   them). Otherwise the current task's user registers (`bpf_task_pt_regs`, the ptrace ABI) say
//!   which syscall moved the bytes and where its buffers are; a syscall whose buffers cannot be
//!   read (io_uring, io-wq workers, splice/sendfile, recvmmsg/sendmmsg) is counted as unparsed
//!   bytes and never read as a buffer.
//! * `wsg_sock_end` (`tp_btf` `tcp_destroy_sock`): the socket is destroyed (its TCP is closed and
//!   no process holds it any more, so no read or write can follow); the end is counted for the
//!   last process that read or wrote it. Not `inet_sock_set_state` → `TCP_CLOSE`: a peer's reset
//!   can close the socket before `sock_send_length` of the server's `101` has run.
//! * `wsg_sock_state` (`tp_btf` `inet_sock_set_state`): the first FIN on an open Server-Sent
//!   Events stream says who ended it (`ESTABLISHED → CLOSE_WAIT`: the client; `→ FIN_WAIT1`:
//!   the server).
//! * `wsg_sock_iter` (BPF iterator over TCP sockets): hands userspace every followed
//!   connection's state with its socket cookie, in one read.
//!
//! No kernel struct is read at a fixed offset: socket pointers only go to helpers, the task's
//! registers are the ptrace ABI, and the iterator's `meta->seq` is checked by the verifier
//! against the kernel's BTF.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    btf_maps::SkStorage,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_get_socket_cookie, bpf_seq_write, bpf_sk_storage_delete,
            bpf_sk_storage_get, bpf_skc_to_tcp_sock, bpf_task_pt_regs,
        },
    },
    macros::{btf_map, map},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, SockOpsContext},
};
use wsguard_common::{
    conn::{phase, ConnKey, ConnState, SockRecord, FD_UNPARSED},
    sse::fin,
    stats::global,
};

use crate::{
    lifecycle,
    maps::{bump, WSG_INIT_CONN},
    record::{proc_stats, Dir},
    regs::{self, MSG_PEEK},
    tls,
};

#[btf_map]
pub static WSG_SK: SkStorage<ConnState> = SkStorage::new();

const SK_STORAGE_GET_F_CREATE: u64 = 1;

#[inline(always)]
fn storage() -> *mut c_void {
    // The helper wants the map definition's address (aya-ebpf's accessor is crate-private).
    ptr::addr_of!(WSG_SK) as *mut c_void
}

/// The state of socket `sk`, if it has one.
#[inline(always)]
fn state(sk: *mut c_void) -> Option<&'static mut ConnState> {
    // SAFETY: `sk` is the tracepoint's own socket argument (a BTF pointer the verifier checks).
    let p = unsafe { bpf_sk_storage_get(storage(), sk, ptr::null_mut(), 0) } as *mut ConnState;
    // SAFETY: storage of this socket, valid while the program runs.
    (!p.is_null()).then(|| unsafe { &mut *p })
}

/// An inbound connection is established: give it state.
pub fn on_sock_ops(ctx: &SockOpsContext) {
    if ctx.op() != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return;
    }
    // SAFETY: ctx field.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk } as *mut c_void;
    if sk.is_null() {
        return;
    }
    let Some(init) = WSG_INIT_CONN.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU template; only id and accepted_ns are ever written, the rest stays zero.
    let init = unsafe { &mut *init };
    // SAFETY: helpers without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    init.id = (now << 8) | (cpu & 0xff);
    init.accepted_ns = now;
    // SAFETY: ctx socket, checked non-null; the template is a map value.
    let p = unsafe { bpf_sk_storage_get(storage(), sk, init as *mut ConnState as *mut c_void, SK_STORAGE_GET_F_CREATE) };
    if p.is_null() {
        bump(global::SK_STORAGE_FULL);
    }
    if WSG_BORN_OPEN.get(0).is_some_and(|open| *open != 0) {
        // SAFETY: the sock_ops context, as the helper wants it.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
        let _ = WSG_BORN.insert(&cookie, &1, 0);
    }
}

/// Cookies of the connections born while `WSG_BORN_OPEN[0]` is set: only during a fresh
/// attach, between attaching `wsg_sock_ops` and the agent's listing of established inbound
/// sockets. A listed socket whose cookie is not here predates the probe (it has no state and
/// is reported as not followed); one that is here was born with state, even if that state was
/// since deleted (not WebSocket). Sized for any burst of a few milliseconds; not pinned.
#[map]
static WSG_BORN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// 1 while the agent lists the connections that predate the probe, else 0.
#[map]
static WSG_BORN_OPEN: Array<u32> = Array::with_max_entries(1, 0);

/// One read (`dir` Rx) or write on socket `ctx.arg(0)` that moved `ctx.arg(1)` bytes.
#[inline(always)]
pub fn on_io(ctx: &BtfTracePointContext, dir: Dir) {
    let sk: *mut c_void = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i32;
    if ret <= 0 {
        return;
    }
    if dir == Dir::Rx && ctx.arg::<u64>(2) & MSG_PEEK != 0 {
        return;
    }
    let Some(c) = state(sk) else { return };
    if c.phase != phase::DONE {
        if c.phase != phase::TLS {
            let _ = followed_io(c, dir, ret as u64);
        }
        if c.phase == phase::TLS {
            return tls::on_sock(sk, c, dir);
        }
        if c.phase != phase::DONE {
            return;
        }
    }
    // Not WebSocket (or a failed handshake), already counted: free the state, so this socket's
    // later I/O stops at a lookup that finds nothing (the socket's storage list is empty)
    // instead of walking to a done entry in cold cache lines. Nothing else reads a done state:
    // the end and the iterator skip it.
    // SAFETY: the tracepoint's own socket; the map definition's address, as in `storage()`.
    unsafe { bpf_sk_storage_delete(storage(), sk) };
}

#[inline(never)]
fn followed_io(c: &mut ConnState, dir: Dir, len: u64) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if c.tgid != tgid {
        if c.tgid == 0 {
            // First I/O: the connection is this process's (the one that accepted it may have
            // handed it on without reading: Node `cluster`, PM2).
            if let Some(p) = proc_stats(tgid) {
                p.accepted += 1;
            }
        }
        c.tgid = tgid;
    }
    // SAFETY: helpers without preconditions; the task pointer goes only to a helper.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return Ok(());
    }
    let sc = regs::syscall_btf(regs);
    let bufs = match regs::data_dir(sc.nr) {
        // The syscall matches the hook's direction: its arguments name this socket's buffers.
        // A receive's `MSG_PEEK` was filtered from the hook's own flags (`on_io`).
        Some(d) if d == dir => regs::buffers(regs, &sc, true)?,
        _ => None,
    };
    let Some((buf, iov, cnt)) = bufs else {
        unparsed(c, tgid, len);
        return Ok(());
    };
    c.fd = (c.fd & FD_UNPARSED) | (sc.a0 as u32 & !FD_UNPARSED);
    if c.phase == phase::NEW && dir == Dir::Rx && c.http.total == 0 && tls::client_hello(buf, iov, cnt) {
        c.phase = phase::TLS;
        return Ok(());
    }
    lifecycle::on_data(ConnKey { tgid, fd: sc.a0 as u32 }, c, dir, buf, iov, cnt, len);
    Ok(())
}

/// Bytes moved by something that is not a plain read/write syscall of this socket (io_uring,
/// an io-wq worker, splice/sendfile, recvmmsg/sendmmsg): counted, never read as a buffer. The
/// framing cannot be followed past them.
#[inline(never)]
fn unparsed(c: &mut ConnState, tgid: u32, len: u64) {
    if let Some(p) = proc_stats(tgid) {
        if c.fd & FD_UNPARSED == 0 {
            p.unparsed_conns += 1;
            if c.phase == phase::WEBSOCKET && c.out_of_sync == 0 {
                p.out_of_sync += 1;
            }
            if c.phase == phase::SSE && c.out_of_sync == 0 {
                p.sse.out_of_sync += 1;
            }
        }
        p.unparsed_bytes += len;
    }
    c.fd |= FD_UNPARSED;
    if c.phase == phase::WEBSOCKET || c.phase == phase::SSE {
        c.out_of_sync = 1;
    }
}

/// The socket is destroyed: the followed connection ends.
#[inline(always)]
pub fn on_end(ctx: &BtfTracePointContext) {
    let sk: *mut c_void = ctx.arg(0);
    let Some(c) = state(sk) else { return };
    if c.phase == phase::DONE {
        return;
    }
    if c.phase == phase::TLS {
        tls::on_end(sk);
        c.phase = phase::DONE;
        return;
    }
    if c.tgid == 0 {
        bump(global::ENDED_UNATTRIBUTED);
    } else if c.fd & FD_UNPARSED == 0 || c.phase == phase::WEBSOCKET || c.phase == phase::SSE {
        lifecycle::end(&ConnKey { tgid: c.tgid, fd: c.fd & !FD_UNPARSED }, c);
    }
    // Else never classified because its bytes could not be read (io_uring, ...): it is in
    // `unparsed_conns`, not `not_websocket`.
    c.phase = phase::DONE;
}

/// A TCP state change of socket `ctx.arg(0)` (`oldstate`, `newstate`): the first FIN (or reset)
/// on an open SSE stream says who ended it. Other sockets pay one helper call per change out of
/// `ESTABLISHED`, and none for the rest.
#[inline(always)]
pub fn on_state(ctx: &BtfTracePointContext) {
    const ESTABLISHED: u64 = 1;
    const FIN_WAIT1: u64 = 4;
    const CLOSE: u64 = 7;
    const CLOSE_WAIT: u64 = 8;
    if ctx.arg::<u64>(1) as u32 as u64 != ESTABLISHED {
        return;
    }
    let sk: *mut c_void = ctx.arg(0);
    let Some(c) = state(sk) else { return };
    if c.phase != phase::SSE || c.sse.fin != fin::NONE {
        return;
    }
    c.sse.fin = match ctx.arg::<u64>(2) as u32 as u64 {
        CLOSE_WAIT | CLOSE => fin::CLIENT,
        FIN_WAIT1 => fin::SERVER,
        _ => fin::NONE,
    };
}

wsguard_common::named!(WSG_SK = SK, WSG_ITER_REC = ITER_REC, WSG_BORN = BORN, WSG_BORN_OPEN = BORN_OPEN);

/// Scratch for one iterator record (too large for the BPF stack).
#[map]
static WSG_ITER_REC: PerCpuArray<SockRecord> = PerCpuArray::with_max_entries(1, 0);

/// Iterator over TCP sockets (`iter/tcp`): write `cookie, state` for each followed connection.
/// ctx is `struct bpf_iter__tcp { meta, sk_common, uid }`.
#[inline(always)]
pub fn on_iter(ctx: *const u64) {
    // SAFETY: ctx fields (pointers the verifier typed from the kernel's BTF).
    let (meta, skc) = unsafe { (*ctx as *const *mut c_void, *ctx.add(1) as *mut c_void) };
    if skc.is_null() {
        return;
    }
    // SAFETY: helper taking the BTF sock_common pointer; returns null for a non-full socket.
    let tp = unsafe { bpf_skc_to_tcp_sock(skc) } as *mut c_void;
    if tp.is_null() {
        return;
    }
    let Some(mut c) = state(tp).map(|c| &*c) else { return };
    if c.phase == phase::TLS {
        // The plaintext's state, once the socket turned out TLS.
        let Some(p) = tls::plaintext(tp) else { return };
        c = p;
    }
    if c.phase == phase::DONE {
        return;
    }
    let Some(rec) = WSG_ITER_REC.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU scratch record; tp is a socket pointer for the helper.
    unsafe {
        (*rec).cookie = bpf_get_socket_cookie(tp);
        crate::copy::copy(&mut (*rec).state, c);
        // meta->seq is the first field of struct bpf_iter_meta.
        let seq = *meta;
        bpf_seq_write(seq as *mut _, rec as *const c_void, core::mem::size_of::<SockRecord>() as u32);
    }
}
