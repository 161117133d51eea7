//! The upgrade handshake of a tracked connection: the request on the way in (must ask for
//! `Upgrade: websocket`; a client key may be captured), the `101` on the way out. A plain `GET`
//! with nothing behind it keeps the connection followed for its next request (HTTP keep-alive:
//! the upgrade may come later, phase `HTTP`); anything else ends the tracking at once (counted
//! `not_websocket` or `handshakes_failed`). The answer to a plain request may open a
//! Server-Sent Events stream (`sse.rs`).

use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    event::kind,
    hist::which,
    http::side,
};

use crate::{
    copy::{copy, zero},
    maps::{self, WSG_KEY_CONFIG},
    record::{drop_conn, emit, proc_stats, Dir, NOT_WEBSOCKET},
    sse,
    walk::{mode, verdict, Walk},
};

/// The upgrade handshake: the request on the way in, the response on the way out. Returns true
/// when the walk goes on with frames (bytes after the head, or frames a client sent before the
/// `101`), false when this syscall is done with.
#[inline(never)]
pub fn handshake(key: &ConnKey, c: &mut ConnState, dir: Dir, w: &mut Walk, now: u64) -> bool {
    match (dir, c.phase) {
        (Dir::Rx, phase::NEW) | (Dir::Tx, phase::UPGRADE_REQUESTED) => {}
        // Keep-alive: the next request head starts (`c.http` was reset after the last one).
        (Dir::Rx, phase::HTTP) => {
            c.phase = phase::NEW;
            sse::next_request(c);
        }
        // The answer to a plain request: its head is scanned for an SSE stream (`sse.rs`);
        // any other body is not walked.
        (Dir::Tx, phase::HTTP) => {
            sse::response(key, c, w, now);
            return false;
        }
        (Dir::Tx, phase::NEW) => {
            // The process spoke before a complete upgrade request: not a WebSocket server side.
            drop_conn(key, NOT_WEBSOCKET, c);
            return false;
        }
        _ => return true,
    }
    if dir == Dir::Rx && c.http.total == 0 {
        c.request_ns = now;
    }
    copy(&mut w.http, &c.http);
    if dir == Dir::Rx {
        if let Some(cfg) = WSG_KEY_CONFIG.get(0) {
            if cfg.enabled() {
                copy(&mut w.kcfg, cfg);
                copy(&mut w.key, &c.key);
                w.want_key = 1;
            }
        }
        copy(&mut w.sse_head, &c.sse.head);
        w.want_sse = 1;
    }
    let ok = w.run(mode::HTTP);
    if w.want_key != 0 {
        copy(&mut c.key, &w.key);
    }
    if w.want_sse != 0 {
        copy(&mut c.sse.head, &w.sse_head);
    }
    if !ok {
        drop_conn(key, NOT_WEBSOCKET, c);
        return false;
    }
    copy(&mut c.http, &w.http);
    match w.verdict {
        verdict::HTTP_DONE => {}
        verdict::NONE => return false, // head continues in the next syscall
        _ => {
            // Not HTTP, or unreadable: follow it no further.
            let failed = if dir == Dir::Tx { 0 } else { NOT_WEBSOCKET };
            drop_conn(key, failed, c);
            return false;
        }
    }
    if dir == Dir::Rx {
        if !w.http.found() {
            if w.total_left != 0 {
                // A body or a pipelined request behind the head: where the next head starts
                // is not known, so the connection is followed no further.
                drop_conn(key, NOT_WEBSOCKET, c);
            } else {
                // A plain request on a connection that may stay open (HTTP keep-alive): the
                // next request may ask for the upgrade. Counted `not_websocket` at its end
                // unless it does.
                c.phase = phase::HTTP;
                zero(&mut c.http);
                sse::request_done(c);
            }
            return false;
        }
        c.phase = phase::UPGRADE_REQUESTED;
        zero(&mut c.http);
        c.http.side = side::RESPONSE;
    } else {
        if w.http.status != 101 {
            drop_conn(key, w.http.status as u32, c);
            return false;
        }
        let rsv1_ok = w.http.found();
        c.phase = phase::WEBSOCKET;
        c.upgraded_ns = now;
        c.last_rx_ns = now;
        c.last_tx_ns = now;
        c.rx.set_rsv1_ok(rsv1_ok);
        zero(&mut c.tx);
        c.tx.set_rsv1_ok(rsv1_ok);
        on_upgrade(key, c, now);
    }
    true
}

fn on_upgrade(key: &ConnKey, c: &ConnState, now: u64) {
    let latency = now.saturating_sub(c.request_ns);
    if let Some(p) = proc_stats(key.tgid) {
        p.opened += 1;
        p.handshake_ns_sum += latency;
        p.handshake_count += 1;
        maps::hist_add(key.tgid, which::HANDSHAKE, latency);
        // Frames the client sent right behind its request count from now on.
        p.rx.add(&c.rx_counts());
    }
    emit(kind::UPGRADED, key, c, latency, 101, 0);
}
