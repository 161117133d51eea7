//! The syscall mode (fallback): raw `sys_enter`/`sys_exit` tracepoints, connection state in a
//! hash keyed by `(tgid, fd)`. Needs no BTF and no cgroup; every syscall of every process runs
//! the exit hook, which filters first and cheaply.
//!
//! Cost model of the exit hook, cheapest first: a process that never called `accept` stops at the
//! watched-tgid bitmap; a watched process's other syscalls at one `pt_regs` read; a data syscall
//! on an fd that was never accepted at the (tgid, fd) bitmap; only a possibly tracked fd does the
//! connection hash lookup, the frame walk and one process-record lookup.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap},
    programs::RawTracePointContext,
};
use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    stats::global,
    FD_BITS, WATCHED_WORDS,
};

use crate::{
    atomic, lifecycle,
    maps::{bump, WSG_INIT_CONN},
    record::{proc_stats, Dir},
    regs,
};

wsguard_common::named!(WSG_CONNS = CONNS, WSG_WATCHED = WATCHED, WSG_FDBITS = FDBITS);

#[map]
pub static WSG_CONNS: HashMap<ConnKey, ConnState> = HashMap::with_max_entries(65536, 0);

/// One bit per tgid: set when the process calls `accept` (or, at attach, listens already). Never
/// cleared: a stale bit only costs a reused pid one cheap map miss per syscall.
#[map]
pub static WSG_WATCHED: Array<u64> = Array::with_max_entries(WATCHED_WORDS, 0);

/// One bit per hash of (tgid, fd), set when the process accepts a connection on that fd: a data
/// syscall or `close` on an fd whose bit is clear cannot be a tracked connection, so it costs an
/// array lookup instead of a hash lookup (a server's files, pipes, eventfds, outbound sockets).
/// Never cleared (two connections may share a bit); a stale bit costs what no filter would.
#[map]
pub static WSG_FDBITS: Array<u64> = Array::with_max_entries(FD_BITS / 64, 0);

pub fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let nr: i64 = ctx.arg(1);
    if nr != regs::CLOSE && nr != regs::ACCEPT && nr != regs::ACCEPT4 {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if nr != regs::CLOSE {
        watch(tgid);
        return Ok(());
    }
    if !watched(tgid) {
        return Ok(());
    }
    // Handled at entry: the fd is still ours here; at exit it may already be reused.
    let fd = regs::arg(ctx.arg(0), 0)? as u32;
    if fd_maybe_tracked(tgid, fd) {
        on_close(ConnKey { tgid, fd });
    }
    Ok(())
}

/// The part every syscall of every process runs: kept tiny (no stack frame to speak of); the
/// rest is a separate function, entered only by watched processes.
#[inline(always)]
pub fn try_sys_exit(ctx: &RawTracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watched(tgid) {
        return;
    }
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return;
    }
    let _ = exit_watched(ctx.arg(0), tgid, ret);
}

#[inline(never)]
fn exit_watched(r: *const u8, tgid: u32, ret: i64) -> Result<(), i64> {
    let sc = regs::syscall(r)?;
    if sc.nr == regs::ACCEPT || sc.nr == regs::ACCEPT4 {
        on_accept(tgid, ret as u32);
        return Ok(());
    }
    let Some(dir) = regs::data_dir(sc.nr) else { return Ok(()) };
    let fd = sc.a0 as u32;
    if !fd_maybe_tracked(tgid, fd) {
        return Ok(());
    }
    let Some((buf, iov, cnt)) = regs::buffers(r, &sc, false)? else { return Ok(()) };
    on_key_data(ConnKey { tgid, fd }, dir, buf, iov, cnt, ret as u64);
    Ok(())
}

#[inline(always)]
fn watched(tgid: u32) -> bool {
    match WSG_WATCHED.get(tgid >> 6) {
        Some(w) => *w & (1u64 << (tgid & 63)) != 0,
        None => false,
    }
}

#[inline(always)]
fn watch(tgid: u32) {
    if watched(tgid) {
        return;
    }
    if let Some(w) = WSG_WATCHED.get_ptr_mut(tgid >> 6) {
        // Atomic: 64 tgids share a word.
        atomic::or(w, 1u64 << (tgid & 63));
    }
}

/// False when (tgid, fd) was never an accepted connection (see `WSG_FDBITS`).
#[inline(always)]
fn fd_maybe_tracked(tgid: u32, fd: u32) -> bool {
    let bit = wsguard_common::fd_bit(tgid, fd);
    match WSG_FDBITS.get(bit >> 6) {
        Some(w) => *w & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}

#[inline(always)]
fn mark_fd(tgid: u32, fd: u32) {
    let bit = wsguard_common::fd_bit(tgid, fd);
    if let Some(w) = WSG_FDBITS.get_ptr_mut(bit >> 6) {
        // SAFETY: map value, valid while the program runs.
        if unsafe { *w } & (1u64 << (bit & 63)) == 0 {
            atomic::or(w, 1u64 << (bit & 63));
        }
    }
}

fn on_accept(tgid: u32, fd: u32) {
    let key = ConnKey { tgid, fd };
    // A tracked entry under a reused fd means its close was not seen (dup2, close_range):
    // end it first so it is not lost.
    if fd_maybe_tracked(tgid, fd) {
        on_close(key);
    }
    if let Some(p) = proc_stats(tgid) {
        p.accepted += 1;
    }
    let Some(init) = WSG_INIT_CONN.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU template; only id and accepted_ns are ever written, the rest stays zero.
    let init = unsafe { &mut *init };
    // SAFETY: helpers without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() } as u64;
    init.id = (now << 8) | (cpu & 0xff);
    init.accepted_ns = now;
    if WSG_CONNS.insert(&key, init, 0).is_err() {
        bump(global::CONN_MAP_FULL);
        return;
    }
    mark_fd(tgid, fd);
}

#[inline(never)]
fn on_close(key: ConnKey) {
    let Some(c) = WSG_CONNS.get_ptr_mut(&key) else { return };
    // SAFETY: map value, valid until removed below.
    let c = unsafe { &*c };
    if c.phase == phase::NEW && c.http.total == 0 {
        // Closed by the process that accepted it before it read a byte: the socket moved to
        // another fd (`dup2`) or process (fd passing), where this mode cannot follow it (or the
        // client sent nothing). Reported, never silent.
        if let Some(p) = proc_stats(key.tgid) {
            p.closed_unread += 1;
        }
    } else {
        lifecycle::end(&key, c);
    }
    let _ = WSG_CONNS.remove(&key);
}

#[inline(always)]
fn on_key_data(key: ConnKey, dir: Dir, buf: u64, iov: u64, cnt: u64, len: u64) {
    let Some(c) = WSG_CONNS.get_ptr_mut(&key) else { return };
    // SAFETY: map value; only the thread doing this syscall on this fd writes this direction.
    let c = unsafe { &mut *c };
    lifecycle::on_data(key, c, dir, buf, iov, cnt, len);
    if c.phase == phase::DONE {
        // Not a WebSocket (already counted): forget it, so its later syscalls stop at the miss.
        let _ = WSG_CONNS.remove(&key);
    }
}
