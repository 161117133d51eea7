//! Connection lifecycle: accept → classify (upgrade request, `101`) → count frames → close.
//! Per-process totals are updated with atomic adds as bytes are seen, so they are always exact
//! and never depend on the ring buffer.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::RawTracePointContext,
};
use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    event::{kind, Event},
    frame::{DirCounters, FrameState},
    hist::which,
    http::{side, HttpScan},
    stats::{global, CloseCodeKey, ProcStats},
};

use crate::{
    atomic::{self, add},
    maps,
    maps::{
        bump, WSG_CLOSE_CODES, WSG_CONNS, WSG_EVENTS, WSG_INIT_CONN, WSG_KEY_CONFIG, WSG_PROCS, WSG_WATCHED,
        WSG_ZERO_PROC,
    },
    regs,
    walk::{self, mode, saw, verdict, Walk},
};

const MSG_PEEK: u64 = 2;
const BPF_NOEXIST: u64 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Rx,
    Tx,
}

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
    on_close(ConnKey { tgid, fd });
    Ok(())
}

pub fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watched(tgid) {
        return Ok(());
    }
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    let r: *const u8 = ctx.arg(0);
    let nr = regs::nr(r)?;
    // (direction, flat buffer, iovec array, iovec count)
    let (dir, buf, iov, cnt) = match nr {
        regs::ACCEPT | regs::ACCEPT4 => {
            on_accept(tgid, ret as u32);
            return Ok(());
        }
        regs::READ => (Dir::Rx, regs::arg(r, 1)?, 0, 0),
        regs::WRITE | regs::SENDTO => (Dir::Tx, regs::arg(r, 1)?, 0, 0),
        regs::RECVFROM => {
            if regs::arg(r, 3)? & MSG_PEEK != 0 {
                return Ok(());
            }
            (Dir::Rx, regs::arg(r, 1)?, 0, 0)
        }
        regs::READV => (Dir::Rx, 0, regs::arg(r, 1)?, regs::arg(r, 2)?),
        regs::WRITEV => (Dir::Tx, 0, regs::arg(r, 1)?, regs::arg(r, 2)?),
        regs::RECVMSG | regs::SENDMSG => {
            let dir = if nr == regs::RECVMSG { Dir::Rx } else { Dir::Tx };
            if dir == Dir::Rx && regs::arg(r, 2)? & MSG_PEEK != 0 {
                return Ok(());
            }
            let msg = regs::arg(r, 1)?;
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            // SAFETY: user pointers read through the helper.
            let iov: u64 = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.map_err(|e| e as i64)?;
            let cnt: u64 = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.map_err(|e| e as i64)?;
            (dir, 0, iov, cnt)
        }
        _ => return Ok(()),
    };
    let fd = regs::arg(r, 0)? as u32;
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

fn add_dir(to: &mut DirCounters, d: &DirCounters) {
    let mut i = 0;
    while i < d.frames.len() {
        add(&mut to.frames[i], d.frames[i]);
        i += 1;
    }
    add(&mut to.messages, d.messages);
    add(&mut to.payload_bytes, d.payload_bytes);
}

/// The process record, created on first use (copied from an all-zero map value, not the stack).
#[inline(always)]
fn proc_stats(tgid: u32) -> Option<&'static mut ProcStats> {
    if let Some(p) = WSG_PROCS.get_ptr_mut(&tgid) {
        // SAFETY: map value, valid while the program runs.
        return Some(unsafe { &mut *p });
    }
    let zero = WSG_ZERO_PROC.get(0)?;
    if WSG_PROCS.insert(&tgid, zero, BPF_NOEXIST).is_err() && WSG_PROCS.get_ptr(&tgid).is_none() {
        bump(global::PROC_MAP_FULL);
        return None;
    }
    // SAFETY: as above.
    WSG_PROCS.get_ptr_mut(&tgid).map(|p| unsafe { &mut *p })
}

fn emit(kind: u8, key: &ConnKey, c: &ConnState, value_ns: u64, status: u16, abnormal: u8) {
    match WSG_EVENTS.reserve::<Event>(0) {
        Some(mut e) => {
            e.write(Event {
                kind,
                abnormal,
                status,
                tgid: key.tgid,
                fd: key.fd,
                close_rx: c.close_rx,
                close_tx: c.close_tx,
                conn_id: c.id,
                // SAFETY: helper without preconditions.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                value_ns,
            });
            e.submit(0);
        }
        None => bump(global::RING_DROPS),
    }
}

fn on_accept(tgid: u32, fd: u32) {
    let key = ConnKey { tgid, fd };
    // A tracked entry under a reused fd means its close was not seen (dup2, close_range):
    // end it first so it is not lost.
    on_close(key);
    if let Some(p) = proc_stats(tgid) {
        add(&mut p.accepted, 1);
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
    }
}

fn on_close(key: ConnKey) {
    let Some(c) = WSG_CONNS.get_ptr_mut(&key) else { return };
    // SAFETY: map value, valid until removed below.
    let c = unsafe { &*c };
    if let Some(p) = proc_stats(key.tgid) {
        match c.phase {
            phase::WEBSOCKET => {
                let abnormal = c.close_rx_seen == 0 && c.out_of_sync == 0;
                add(&mut p.closed, 1);
                if abnormal {
                    add(&mut p.abnormal_closes, 1);
                }
                // SAFETY: helper without preconditions.
                let age = unsafe { bpf_ktime_get_ns() } - c.upgraded_ns;
                emit(kind::CLOSED, &key, c, age, 0, abnormal as u8);
            }
            phase::UPGRADE_REQUESTED => {
                add(&mut p.handshakes_failed, 1);
                emit(kind::HANDSHAKE_FAILED, &key, c, 0, 0, 0);
            }
            _ => add(&mut p.not_websocket, 1),
        }
    }
    let _ = WSG_CONNS.remove(&key);
}

/// Stop following a connection that turned out not to be WebSocket (or failed its handshake).
fn drop_conn(key: &ConnKey, failed_status: Option<u16>, c: &ConnState) {
    if let Some(p) = proc_stats(key.tgid) {
        match failed_status {
            Some(status) => {
                add(&mut p.handshakes_failed, 1);
                emit(kind::HANDSHAKE_FAILED, key, c, 0, status, 0);
            }
            None => add(&mut p.not_websocket, 1),
        }
    }
    let _ = WSG_CONNS.remove(key);
}

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

    // Handshake: the request on the way in, the response on the way out.
    let head = match (dir, c.phase) {
        (Dir::Rx, phase::NEW) => true,
        (Dir::Tx, phase::UPGRADE_REQUESTED) => true,
        (Dir::Tx, phase::NEW) => {
            // The process spoke before a complete upgrade request: not a WebSocket server side.
            drop_conn(&key, None, c);
            return;
        }
        _ => false,
    };
    if head {
        if dir == Dir::Rx && c.http.total == 0 {
            c.request_ns = now;
        }
        w.http = c.http;
        if dir == Dir::Rx {
            if let Some(cfg) = WSG_KEY_CONFIG.get(0) {
                if cfg.enabled() {
                    w.kcfg = *cfg;
                    w.key = c.key;
                    w.want_key = 1;
                }
            }
        }
        let ok = w.run(mode::HTTP);
        if w.want_key != 0 {
            c.key = w.key;
        }
        if !ok {
            drop_conn(&key, None, c);
            return;
        }
        c.http = w.http;
        match w.verdict {
            verdict::HTTP_DONE => {}
            verdict::NONE => return, // head continues in the next syscall
            _ => {
                // Not HTTP, or unreadable: follow it no further.
                let failed = if dir == Dir::Tx { Some(0) } else { None };
                drop_conn(&key, failed, c);
                return;
            }
        }
        if dir == Dir::Rx {
            if !w.http.found() {
                drop_conn(&key, None, c);
                return;
            }
            c.phase = phase::UPGRADE_REQUESTED;
            c.http = HttpScan::new(side::RESPONSE);
        } else {
            if w.http.status != 101 {
                drop_conn(&key, Some(w.http.status), c);
                return;
            }
            let rsv1_ok = w.http.found();
            c.phase = phase::WEBSOCKET;
            c.upgraded_ns = now;
            c.last_rx_ns = now;
            c.last_tx_ns = now;
            c.rx.set_rsv1_ok(rsv1_ok);
            c.tx = FrameState::new(rsv1_ok);
            on_upgrade(&key, c, now);
        }
    }

    // Frames (possibly following the head in the same syscall).
    if w.total_left == 0 {
        return;
    }
    w.fs = if dir == Dir::Rx { c.rx } else { c.tx };
    let ok = w.run(mode::FRAMES);
    if dir == Dir::Rx {
        c.rx = w.fs;
        c.rx_count.add(&w.acc.delta);
        c.last_rx_ns = now;
    } else {
        c.tx = w.fs;
        c.tx_count.add(&w.acc.delta);
        c.last_tx_ns = now;
    }
    let counted = c.phase == phase::WEBSOCKET;
    if counted {
        if let Some(p) = proc_stats(key.tgid) {
            add_dir(if dir == Dir::Rx { &mut p.rx } else { &mut p.tx }, &w.acc.delta);
            if !ok || w.verdict == verdict::DESYNC || w.verdict == verdict::FAULT {
                add(&mut p.out_of_sync, 1);
            }
        }
    }
    if !ok {
        bump(global::WALK_BUDGET);
    }
    if w.verdict == verdict::FAULT {
        bump(global::READ_FAULTS);
    }
    if !ok || w.verdict == verdict::DESYNC || w.verdict == verdict::FAULT {
        c.out_of_sync = 1;
    }
    if w.acc.saw != 0 || w.acc.close_code != 0 {
        on_frames_seen(&key, c, dir, &w, now, counted);
    }
}

fn on_upgrade(key: &ConnKey, c: &ConnState, now: u64) {
    let latency = now - c.request_ns;
    if let Some(p) = proc_stats(key.tgid) {
        add(&mut p.opened, 1);
        add(&mut p.handshake_ns_sum, latency);
        add(&mut p.handshake_count, 1);
        maps::hist_add(key.tgid, which::HANDSHAKE, latency);
        // Frames the client sent right behind its request count from now on.
        add_dir(&mut p.rx, &c.rx_count);
    }
    emit(kind::UPGRADED, key, c, latency, 101, 0);
}

fn on_frames_seen(key: &ConnKey, c: &mut ConnState, dir: Dir, w: &Walk, now: u64, counted: bool) {
    let s = w.acc.saw;
    if dir == Dir::Tx {
        if s & saw::PING != 0 && c.ping_ns == 0 {
            c.ping_ns = now;
        }
        if s & saw::DATA != 0 && c.pending_msg_ns != 0 {
            let lat = now - c.pending_msg_ns;
            c.resp_sum_ns += lat;
            c.resp_count += 1;
            c.pending_msg_ns = 0;
            if counted {
                if let Some(p) = proc_stats(key.tgid) {
                    add(&mut p.response_ns_sum, lat);
                    add(&mut p.response_count, 1);
                    maps::hist_add(key.tgid, which::RESPONSE, lat);
                }
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
            let rtt = now - c.ping_ns;
            c.ping_ns = 0;
            c.rtt_last_ns = rtt;
            c.rtt_sum_ns += rtt;
            c.rtt_count += 1;
            if counted {
                if let Some(p) = proc_stats(key.tgid) {
                    add(&mut p.ping_rtt_ns_sum, rtt);
                    add(&mut p.ping_rtt_count, 1);
                    maps::hist_add(key.tgid, which::PING_RTT, rtt);
                }
            }
            emit(kind::PING_RTT, key, c, rtt, 0, 0);
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
            Some(n) => add(n, 1),
            None => {
                if WSG_CLOSE_CODES.insert(&ck, &1u64, BPF_NOEXIST).is_err() {
                    match WSG_CLOSE_CODES.get_ptr_mut(&ck) {
                        Some(n) => add(n, 1),
                        None => bump(global::CLOSE_CODE_MAP_FULL),
                    }
                }
            }
        }
    }
}
