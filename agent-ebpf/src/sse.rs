//! Server-Sent Events in the probe: a plain request's response head is scanned for
//! `text/event-stream` (`response`), then the stream's body is walked a 16-byte window per
//! `bpf_loop` step and its events, comments and bytes counted on the connection and the
//! process as they are written (`body`), and the stream's end counted by who ended it (`end`).
//! The scanners are agent-common's `sse.rs`; the handshake (`handshake.rs`) hands over here.

use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    sse::{body_bits, conn_flags, fin, found, side},
    stats::{global, ProcStats},
};

use crate::{
    copy::{copy, zero},
    maps::bump,
    record::proc_stats,
    walk::{mode, verdict, Walk},
};

/// A plain request head ended (phase `HTTP` follows): remember whether it carried
/// `Last-Event-ID`, and scan the response head next.
#[inline(always)]
pub(crate) fn request_done(c: &mut ConnState) {
    let resumed = c.sse.head.found & found::LAST_EVENT_ID != 0;
    c.sse.flags = (c.sse.flags & conn_flags::WAS_SSE) | if resumed { conn_flags::RESUMED } else { 0 };
    zero(&mut c.sse.head);
    c.sse.head.side = side::RESPONSE;
}

/// The next request head on a keep-alive connection begins: scan it from its start.
#[inline(always)]
pub(crate) fn next_request(c: &mut ConnState) {
    c.sse.flags &= conn_flags::WAS_SSE;
    zero(&mut c.sse.head);
}

/// Bytes written in answer to a plain request: scan the response head (it may span writes);
/// an SSE stream begins at its end (phase SSE), and the caller walks the bytes after it.
#[inline(never)]
pub(crate) fn response(key: &ConnKey, c: &mut ConnState, w: &mut Walk, now: u64) {
    if c.sse.flags & conn_flags::RESP_DONE != 0 {
        return; // another response's body: not walked
    }
    copy(&mut w.sse_head, &c.sse.head);
    let ok = w.run(mode::SSE_HEAD);
    copy(&mut c.sse.head, &w.sse_head);
    if ok && w.verdict == verdict::NONE {
        return; // the head goes on in the next write
    }
    if !ok || w.verdict != verdict::HTTP_DONE || !w.sse_head.is_stream() {
        c.sse.flags |= conn_flags::RESP_DONE;
        return;
    }
    let f = w.sse_head.found;
    let raw = f & found::COMPRESSED != 0;
    let resumed = c.sse.flags & conn_flags::RESUMED != 0;
    c.phase = phase::SSE;
    c.upgraded_ns = now;
    c.last_tx_ns = now;
    c.sse.events = 0;
    c.sse.comments = 0;
    c.sse.payload_bytes = 0;
    c.sse.last_event_ns = now;
    zero(&mut c.sse.body);
    c.sse.body.bits = if f & found::CHUNKED != 0 { body_bits::CHUNKED } else { 0 } | if raw { body_bits::RAW } else { 0 };
    c.sse.fin = fin::NONE;
    c.sse.flags = conn_flags::WAS_SSE | (c.sse.flags & conn_flags::RESUMED) | if raw { conn_flags::UNPARSEABLE } else { 0 };
    if let Some(p) = proc_stats(key.tgid) {
        p.sse.opened += 1;
        p.sse.resumed += resumed as u64;
        p.sse.unparseable += raw as u64;
    }
    // The bytes after the head are the stream's first: the caller walks them (`lifecycle`),
    // not this function, so `body` is not one more frame on this call chain (6.1's verifier
    // refused a chain of 544 stack bytes, limit 512).
}

/// Bytes the server wrote on an open stream: walk them through the de-chunker and the event
/// parser; count them on the connection and the process.
#[inline(never)]
pub(crate) fn body(key: &ConnKey, c: &mut ConnState, w: &mut Walk, now: u64) {
    copy(&mut w.sse_body, &c.sse.body);
    zero(&mut w.sse_delta);
    let ok = w.run(mode::SSE_BODY);
    copy(&mut c.sse.body, &w.sse_body);
    let (events, comments, bytes) = (w.sse_delta.events, w.sse_delta.comments, w.sse_delta.payload_bytes);
    c.sse.events += events;
    c.sse.comments += comments;
    c.sse.payload_bytes += bytes;
    if events > 0 {
        c.sse.last_event_ns = now;
    }
    c.last_tx_ns = now;
    let lost = !ok || w.verdict == verdict::DESYNC || w.verdict == verdict::FAULT;
    let ended = w.verdict == verdict::SSE_ENDED;
    if let Some(p) = proc_stats(key.tgid) {
        p.sse.events += events;
        p.sse.comments += comments;
        p.sse.payload_bytes += bytes;
        if lost {
            p.sse.out_of_sync += 1;
        }
        if ended {
            // A server may write the terminator after the client went away (Go's net/http
            // ends the handler's response when its context is cancelled): the first FIN decides.
            p.sse.closed += 1;
            if c.sse.fin == fin::CLIENT {
                p.sse.closed_by_client += 1;
            } else {
                p.sse.closed_by_server += 1;
            }
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
    if ended {
        // The server ended the stream with the chunked terminator; the connection may carry
        // another request (keep-alive). Whatever follows in this write is not walked.
        c.phase = phase::HTTP;
        c.sse.flags |= conn_flags::RESP_DONE;
    }
}

/// The connection of an open stream ends: closed, by the side whose FIN (or reset) came first
/// (socket mode; the syscall mode does not see it and counts neither).
#[inline(always)]
pub(crate) fn end(p: &mut ProcStats, c: &ConnState) {
    p.sse.closed += 1;
    match c.sse.fin {
        fin::CLIENT => p.sse.closed_by_client += 1,
        fin::SERVER => p.sse.closed_by_server += 1,
        _ => {}
    }
}
