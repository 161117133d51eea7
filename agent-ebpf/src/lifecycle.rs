//! Connection lifecycle: accept → classify (upgrade request, `101`) → count frames → close.
//! Per-process totals are updated as bytes are seen (per-CPU copies, see `WSG_PROCS`), so they
//! are always exact and never depend on the ring buffer.
//!
//! Cost model of the exit hook, cheapest first: a process that never called `accept` stops at the
//! watched-tgid bitmap; a watched process's other syscalls at one `pt_regs` read; a data syscall
//! on an fd that was never accepted at the (tgid, fd) bitmap; only a possibly tracked fd does the
//! connection hash lookup, the frame walk and one process-record lookup.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::RawTracePointContext,
};
use wsguard_common::{
    conn::{add_counts, owed, phase, skip_payload, take_owed, ConnKey, ConnState},
    event::kind,
    hist::which,
    stats::{global, CloseCodeKey, ProcStats},
};

use crate::{
    atomic,
    copy::{frame_in, frame_out},
    handshake, maps,
    maps::{bump, WSG_CLOSE_CODES, WSG_CONNS, WSG_FDBITS, WSG_INIT_CONN, WSG_WATCHED},
    record::{emit, proc_stats, Dir},
    regs,
    walk::{self, mode, saw, verdict, Walk},
};

const MSG_PEEK: u64 = 2;
const BPF_NOEXIST: u64 = 1;

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
    // (direction, flat buffer, iovec array, iovec count)
    let (dir, buf, iov, cnt) = match sc.nr {
        regs::ACCEPT | regs::ACCEPT4 => {
            on_accept(tgid, ret as u32);
            return Ok(());
        }
        regs::READ => (Dir::Rx, sc.a1, 0, 0),
        regs::WRITE | regs::SENDTO => (Dir::Tx, sc.a1, 0, 0),
        regs::RECVFROM => (Dir::Rx, sc.a1, 0, 0),
        regs::READV => (Dir::Rx, 0, sc.a1, sc.a2),
        regs::WRITEV => (Dir::Tx, 0, sc.a1, sc.a2),
        regs::RECVMSG | regs::SENDMSG => (if sc.nr == regs::RECVMSG { Dir::Rx } else { Dir::Tx }, 0, 0, 0),
        _ => return Ok(()),
    };
    let fd = sc.a0 as u32;
    if !fd_maybe_tracked(tgid, fd) {
        return Ok(());
    }
    let (iov, cnt) = match sc.nr {
        regs::RECVFROM => {
            if regs::arg(r, 3)? & MSG_PEEK != 0 {
                return Ok(());
            }
            (iov, cnt)
        }
        regs::RECVMSG | regs::SENDMSG => {
            if sc.nr == regs::RECVMSG && sc.a2 & MSG_PEEK != 0 {
                return Ok(());
            }
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            // SAFETY: user pointers read through the helper.
            let iov: u64 = unsafe { bpf_probe_read_user((sc.a1 + 16) as *const u64) }.map_err(|e| e as i64)?;
            let cnt: u64 = unsafe { bpf_probe_read_user((sc.a1 + 24) as *const u64) }.map_err(|e| e as i64)?;
            (iov, cnt)
        }
        _ => (iov, cnt),
    };
    on_data(ConnKey { tgid, fd }, dir, buf, iov, cnt, ret as u64);
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
    if let Some(p) = proc_stats(key.tgid) {
        match c.phase {
            phase::WEBSOCKET => {
                let abnormal = c.close_rx_seen == 0 && c.out_of_sync == 0;
                // Payload skipped since the last walk (a frame in flight, or one that ended on a
                // payload-only syscall) reaches the process now.
                p.rx.payload(owed(&c.rx, &c.rx_data, &c.rx_owed_from));
                p.tx.payload(owed(&c.tx, &c.tx_data, &c.tx_owed_from));
                p.closed += 1;
                if abnormal {
                    p.abnormal_closes += 1;
                }
                // SAFETY: helper without preconditions.
                let age = unsafe { bpf_ktime_get_ns() }.saturating_sub(c.upgraded_ns);
                emit(kind::CLOSED, &key, c, age, 0, abnormal as u8);
            }
            phase::UPGRADE_REQUESTED => {
                p.handshakes_failed += 1;
                emit(kind::HANDSHAKE_FAILED, &key, c, 0, 0, 0);
            }
            _ => p.not_websocket += 1,
        }
    }
    let _ = WSG_CONNS.remove(&key);
}

#[inline(always)]
fn on_data(key: ConnKey, dir: Dir, buf: u64, iov: u64, cnt: u64, len: u64) {
    let Some(c) = WSG_CONNS.get_ptr_mut(&key) else { return };
    // SAFETY: map value; only the thread doing this syscall on this fd writes this direction.
    let c = unsafe { &mut *c };
    if c.out_of_sync != 0 {
        return;
    }
    let Some(w) = walk::begin(buf, iov, cnt, len) else { return };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if c.phase != phase::WEBSOCKET && !handshake::handshake(&key, c, dir, w, now) {
        return;
    }
    // Frames (possibly following the head in the same syscall).
    if w.total_left == 0 {
        return;
    }
    // All the bytes left are payload of the current frame: nothing to read, so no walk and no
    // process-record lookup. They count on the connection now (same line as `remaining`) and on
    // the process at the next walk or the close (`skip_payload`).
    let left = w.total_left;
    let ws = c.phase == phase::WEBSOCKET;
    if dir == Dir::Rx {
        if c.rx.skippable() >= left {
            skip_payload(&mut c.rx, &mut c.rx_data, &mut c.rx_owed_from, left, ws);
            c.last_rx_ns = now;
            return;
        }
    } else if c.tx.skippable() >= left {
        skip_payload(&mut c.tx, &mut c.tx_data, &mut c.tx_owed_from, left, ws);
        c.last_tx_ns = now;
        return;
    }
    // Payload the process was not credited with yet (taken before the walk adds to the
    // connection's counters).
    let owed_bytes;
    let ok = if dir == Dir::Rx {
        owed_bytes = take_owed(&mut c.rx, &c.rx_data, &c.rx_owed_from);
        frame_in(&mut w.fs, &c.rx, &c.rx_hdr);
        let ok = w.run(mode::FRAMES);
        frame_out(&mut c.rx, &mut c.rx_hdr, &w.fs);
        add_counts(&mut c.rx_data, &mut c.rx_ctl, &w.acc.delta);
        c.last_rx_ns = now;
        ok
    } else {
        owed_bytes = take_owed(&mut c.tx, &c.tx_data, &c.tx_owed_from);
        frame_in(&mut w.fs, &c.tx, &c.tx_hdr);
        let ok = w.run(mode::FRAMES);
        frame_out(&mut c.tx, &mut c.tx_hdr, &w.fs);
        add_counts(&mut c.tx_data, &mut c.tx_ctl, &w.acc.delta);
        c.last_tx_ns = now;
        ok
    };
    let lost = !ok || w.verdict == verdict::DESYNC || w.verdict == verdict::FAULT;
    // Only a WebSocket's frames count for the process (frames read before the 101 are added at
    // the upgrade). One process-record lookup per syscall.
    let mut p = if ws { proc_stats(key.tgid) } else { None };
    if let Some(p) = p.as_deref_mut() {
        let pd = if dir == Dir::Rx { &mut p.rx } else { &mut p.tx };
        pd.add(&w.acc.delta);
        pd.payload(owed_bytes);
        if lost {
            p.out_of_sync += 1;
        }
    }
    if !ok {
        bump(global::WALK_BUDGET);
    }
    if w.verdict == verdict::FAULT {
        bump(global::READ_FAULTS);
    }
    if lost {
        c.out_of_sync = 1;
    }
    if w.acc.saw != 0 || w.acc.close_code != 0 {
        on_frames_seen(&key, c, dir, w, now, ws, p);
    }
}

#[inline(always)]
fn on_frames_seen(key: &ConnKey, c: &mut ConnState, dir: Dir, w: &Walk, now: u64, counted: bool, p: Option<&mut ProcStats>) {
    let s = w.acc.saw;
    if dir == Dir::Tx {
        if s & saw::PING != 0 && c.ping_ns == 0 {
            c.ping_ns = now;
        }
        if s & saw::DATA != 0 && c.pending_msg_ns != 0 {
            let lat = now.saturating_sub(c.pending_msg_ns);
            c.pending_msg_ns = 0;
            if let Some(p) = p {
                p.response_ns_sum += lat;
                p.response_count += 1;
                maps::hist_add(key.tgid, which::RESPONSE, lat);
            }
        }
        if s & saw::CLOSE != 0 {
            c.close_tx_seen = 1;
        }
        if w.acc.close_code != 0 {
            c.close_tx = w.acc.close_code;
        }
    } else {
        if s & saw::PONG != 0 && c.ping_ns != 0 {
            let rtt = now.saturating_sub(c.ping_ns);
            c.ping_ns = 0;
            c.rtt_last_ns = rtt;
            c.rtt_count += 1;
            if let Some(p) = p {
                p.ping_rtt_ns_sum += rtt;
                p.ping_rtt_count += 1;
                maps::hist_add(key.tgid, which::PING_RTT, rtt);
            }
            // No ring event per pong: round trips are in the maps (no per-frame events).
        }
        if s & saw::FIN_DATA != 0 && c.pending_msg_ns == 0 {
            c.pending_msg_ns = now;
        }
        if s & saw::CLOSE != 0 {
            c.close_rx_seen = 1;
        }
        if w.acc.close_code != 0 {
            c.close_rx = w.acc.close_code;
        }
    }
    if counted && w.acc.close_code != 0 {
        let ck = CloseCodeKey { tgid: key.tgid, dir: (dir == Dir::Tx) as u16, code: w.acc.close_code };
        match WSG_CLOSE_CODES.get_ptr_mut(&ck) {
            Some(n) => atomic::add(n, 1),
            None => {
                if WSG_CLOSE_CODES.insert(&ck, &1u64, BPF_NOEXIST).is_err() {
                    match WSG_CLOSE_CODES.get_ptr_mut(&ck) {
                        Some(n) => atomic::add(n, 1),
                        None => bump(global::CLOSE_CODE_MAP_FULL),
                    }
                }
            }
        }
    }
}
