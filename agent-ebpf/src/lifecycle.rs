//! Connection lifecycle shared by both probe modes: classify (upgrade request, `101`) → count
//! frames → end. Where the state lives (a `(tgid, fd)` hash in `syscall.rs`, the socket's own
//! storage in `sock.rs`) is the caller's business: these functions get the state itself.
//! Per-process totals are updated as bytes are seen (per-CPU copies, see `WSG_PROCS`), so they
//! are always exact and never depend on the ring buffer.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use wsguard_common::{
    conn::{add_counts, owed, phase, skip_payload, take_owed, ConnKey, ConnState},
    event::kind,
    hist::which,
    sse::conn_flags,
    stats::{global, CloseCodeKey, ProcStats},
};

use crate::{
    atomic,
    copy::{frame_in, frame_out},
    handshake, maps,
    maps::{bump, WSG_CLOSE_CODES},
    record::{emit, proc_stats, Dir},
    sse,
    walk::{self, mode, saw, verdict, Walk},
};

const BPF_NOEXIST: u64 = 1;

/// Count the end of a followed connection for process `key.tgid`: a WebSocket closed (abnormally
/// when no close frame was received), a handshake that never got its answer, or a connection
/// that never turned out to be WebSocket. The caller then forgets the state.
#[inline(never)]
pub(crate) fn end(key: &ConnKey, c: &ConnState) {
    let Some(p) = proc_stats(key.tgid) else { return };
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
            emit(kind::CLOSED, key, c, age, 0, abnormal as u8);
        }
        phase::UPGRADE_REQUESTED => {
            p.handshakes_failed += 1;
            emit(kind::HANDSHAKE_FAILED, key, c, 0, 0, 0);
        }
        phase::SSE => sse::end(p, c),
        phase::DONE => {}
        // A keep-alive connection whose SSE stream ended (chunked terminator) is a known
        // transport, not `not_websocket`.
        _ => {
            if c.sse.flags & conn_flags::WAS_SSE == 0 {
                p.not_websocket += 1;
            }
        }
    }
}

/// The `len` bytes one read or write moved on a followed connection (a flat buffer, or `cnt`
/// iovecs at `iov`), counted for process `key.tgid`.
#[inline(always)]
pub(crate) fn on_data(key: ConnKey, c: &mut ConnState, dir: Dir, buf: u64, iov: u64, cnt: u64, len: u64) {
    if c.out_of_sync != 0 || c.phase == phase::DONE {
        return;
    }
    let Some(w) = walk::begin(buf, iov, cnt, len) else { return };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if c.phase == phase::SSE {
        // What the client sends on an open stream is not walked.
        if dir == Dir::Tx {
            sse::body(&key, c, w, now);
        }
        return;
    }
    if c.phase != phase::WEBSOCKET && !handshake::handshake(&key, c, dir, w, now) {
        // A response head that just opened an SSE stream: the bytes behind it in this write
        // are the stream's first.
        if c.phase == phase::SSE && dir == Dir::Tx && w.total_left > 0 {
            sse::body(&key, c, w, now);
        }
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
