//! Per-connection state kept in the kernel's connection map, keyed by `(tgid, fd)`.

use crate::clientkey::KeyScan;
use crate::frame::{slot, DirCounters, FrameHot, F_PROC_OWED};
use crate::http::HttpScan;
use crate::sse::SseConn;

/// Key of the connection map: the process and its file descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Where a tracked connection is in its life. Only `WebSocket` connections are counted as such.
pub mod phase {
    /// Accepted; no request bytes yet, or an incomplete request head.
    pub const NEW: u8 = 0;
    /// A complete `GET` request with `Upgrade: websocket` was read; waiting for the response.
    pub const UPGRADE_REQUESTED: u8 = 1;
    /// `HTTP/1.1 101` was written: a WebSocket connection.
    pub const WEBSOCKET: u8 = 2;
    /// No longer followed (not WebSocket, failed handshake, or ended). Socket mode only: the
    /// state stays in the socket's storage until the kernel frees the socket; the syscall mode
    /// deletes its map entry instead, so userspace never reads this phase there.
    pub const DONE: u8 = 3;
    /// HTTP keep-alive: a complete plain `GET` (no upgrade) was read. The response is not
    /// walked; the next bytes read start a new request head, which may ask for the upgrade.
    /// Counted `not_websocket` when it ends in this phase.
    pub const HTTP: u8 = 4;
    /// Socket mode: the connection's first bytes were a TLS record. Its ciphertext is not
    /// parsed; its plaintext, read from OpenSSL's calls, has a state of its own (probe `tls.rs`).
    /// Only in the socket's storage: the iterator hands userspace the plaintext's state.
    pub const TLS: u8 = 5;
    /// A plain request was answered `200` with `Content-Type: text/event-stream`: a
    /// Server-Sent Events stream, whose body the probe counts (`ConnState::sse`). It ends with
    /// the connection, or with the chunked terminator (back to `HTTP`).
    pub const SSE: u8 = 6;
}

/// Socket mode: set in [`ConnState::fd`] once the connection moved bytes the probe could not
/// read as a buffer (counted in `ProcStats::unparsed_*`).
pub const FD_UNPARSED: u32 = 1 << 31;

/// Socket mode: one record of the probe's socket iterator (`wsg_sock_iter`), as userspace reads
/// it: the socket cookie (joins `sock_diag`), then the connection's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockRecord {
    pub cookie: u64,
    pub state: ConnState,
}

/// Data-frame counters of one direction: what a data syscall updates (in its hot line).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataCounters {
    pub messages: u64,
    pub payload_bytes: u64,
    pub text: u64,
    pub binary: u64,
}

/// The rarer frames of one direction (kept off the hot lines, updated only when seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtlCounters {
    pub continuation: u64,
    pub ping: u64,
    pub pong: u64,
    pub close: u64,
}

/// State of one tracked connection. Written only by the thread doing the syscall on that fd;
/// userspace reads it.
///
/// Laid out by cache line for the data path, which is bound by memory latency (the server's
/// own work evicts the state of its other connections between two messages on one): in the
/// kernel's hash map an element is a 48-byte header, the 8-byte key, then this value, and the
/// value's size (456) makes the element 512 bytes, 8 whole lines, so elements are line-aligned
/// in the preallocated pool. The first 8 bytes share the key's line (read by every lookup); a
/// read then touches only line 1 (bytes 8..72) and a write line 2 (72..136), plus line 1 for
/// `pending_msg_ns` when it closes a response-latency sample. Control frames, partial headers,
/// handshake and userspace-only fields come after. Every field is 8-byte aligned or packed into
/// 8-byte groups, so the probe copies them word by word (see `agent-ebpf/src/copy.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    // --- line 0 (with the map key) ---
    pub phase: u8,
    /// Framing could not be followed; later bytes are ignored, never guessed.
    pub out_of_sync: u8,
    /// The process received a close frame (so its close is not abnormal). One byte per
    /// direction: reader and writer threads may update a connection at the same time.
    pub close_rx_seen: u8,
    /// The process sent a close frame.
    pub close_tx_seen: u8,
    /// Socket mode: the process that last read or wrote the socket (0 = none yet). Its frames
    /// and its close count for that process. Unused (0) in the syscall mode (the map key has it).
    pub tgid: u32,
    // --- line 1: received direction ---
    pub rx: FrameHot,
    pub last_rx_ns: u64,
    /// First data message received since the process last sent data (0 = none).
    pub pending_msg_ns: u64,
    pub rx_data: DataCounters,
    // --- line 2: sent direction ---
    pub tx: FrameHot,
    pub last_tx_ns: u64,
    /// Outstanding ping sent by the process (0 = none), for ping→pong round-trip time.
    pub ping_ns: u64,
    pub tx_data: DataCounters,
    // --- line 3: control and continuation frames ---
    pub rx_ctl: CtlCounters,
    pub tx_ctl: CtlCounters,
    // --- lines 4-6: rarely written, or only read by userspace ---
    /// Partial frame headers (`FrameState::hdr`), used while `rx.hdr_len`/`tx.hdr_len` > 0.
    pub rx_hdr: [u64; 2],
    pub tx_hdr: [u64; 2],
    /// Last close code received / sent (0 = none yet; 1005 = close frame without a code).
    pub close_rx: u16,
    pub close_tx: u16,
    /// Socket mode: the fd of the last read or write that named one (a syscall argument), for
    /// the per-connection view; [`FD_UNPARSED`] in the top bit. 0 in the syscall mode.
    pub fd: u32,
    /// Last ping round-trip time seen, and how many were seen.
    pub rtt_last_ns: u64,
    pub rtt_count: u64,
    /// Unique id (ktime at accept << 8 | cpu), stable across agent restarts.
    pub id: u64,
    pub accepted_ns: u64,
    /// First byte of the upgrade request read.
    pub request_ns: u64,
    /// `101` written.
    pub upgraded_ns: u64,
    pub http: HttpScan,
    /// Client key captured from the upgrade request (when configured).
    pub key: KeyScan,
    /// `rx_data.payload_bytes` / `tx_data.payload_bytes` when the process record was last
    /// brought level with them; meaningful while `rx.flags` / `tx.flags` has `F_PROC_OWED`
    /// (see [`skip_payload`]). Here, off the hot lines: written once per run of payload-only
    /// syscalls, read by the next walk or the close.
    pub rx_owed_from: u64,
    pub tx_owed_from: u64,
    /// Server-Sent Events: the request's `Last-Event-ID`, the response head, then the stream's
    /// counters (phase `SSE`). Its padding also pads the map element to whole cache lines.
    pub sse: SseConn,
}

impl ConnState {
    /// Received frames, messages and bytes, as one set of counters.
    pub fn rx_counts(&self) -> DirCounters {
        counts(&self.rx_data, &self.rx_ctl)
    }

    /// Sent frames, messages and bytes.
    pub fn tx_counts(&self) -> DirCounters {
        counts(&self.tx_data, &self.tx_ctl)
    }
}

fn counts(d: &DataCounters, c: &CtlCounters) -> DirCounters {
    let mut frames = [0; slot::COUNT];
    frames[slot::TEXT] = d.text;
    frames[slot::BINARY] = d.binary;
    frames[slot::CONTINUATION] = c.continuation;
    frames[slot::PING] = c.ping;
    frames[slot::PONG] = c.pong;
    frames[slot::CLOSE] = c.close;
    DirCounters { messages: d.messages, payload_bytes: d.payload_bytes, frames }
}

/// Add one syscall's counts to a direction's counters; the control line is written only when
/// such frames were seen.
#[inline(always)]
pub fn add_counts(d: &mut DataCounters, c: &mut CtlCounters, delta: &DirCounters) {
    d.messages += delta.messages;
    d.payload_bytes += delta.payload_bytes;
    d.text += delta.frames[slot::TEXT];
    d.binary += delta.frames[slot::BINARY];
    let f = &delta.frames;
    if f[slot::CONTINUATION] | f[slot::PING] | f[slot::PONG] | f[slot::CLOSE] != 0 {
        c.continuation += f[slot::CONTINUATION];
        c.ping += f[slot::PING];
        c.pong += f[slot::PONG];
        c.close += f[slot::CLOSE];
    }
}

/// The probe's path for a syscall whose `n` bytes are all payload of the current frame
/// (`n <= hot.skippable()`): skip them and count them on the connection, in the line the skip
/// writes anyway. The process record is not looked up on this path; when `credit_later` (a
/// WebSocket connection, whose bytes the process counts) the direction is marked as owing them,
/// and the next walk or the close credits the process with [`owed`] bytes.
#[inline(always)]
pub fn skip_payload(hot: &mut FrameHot, d: &mut DataCounters, owed_from: &mut u64, n: u64, credit_later: bool) {
    hot.remaining -= n;
    if credit_later && hot.flags & F_PROC_OWED == 0 {
        hot.flags |= F_PROC_OWED;
        *owed_from = d.payload_bytes;
    }
    d.payload_bytes += n;
}

/// Payload bytes counted on the connection but not yet on the process (0 unless marked). Takes
/// `owed_from` by reference so the probe reads that cold field only when something is owed.
#[inline(always)]
pub fn owed(hot: &FrameHot, d: &DataCounters, owed_from: &u64) -> u64 {
    if hot.flags & F_PROC_OWED == 0 {
        0
    } else {
        d.payload_bytes - *owed_from
    }
}

/// [`owed`], and clear the mark: the caller credits the process with the result.
#[inline(always)]
pub fn take_owed(hot: &mut FrameHot, d: &DataCounters, owed_from: &u64) -> u64 {
    let n = owed(hot, d, owed_from);
    hot.flags &= !F_PROC_OWED;
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameState;
    use core::mem::{align_of, offset_of, size_of};

    /// The probe copies these word by word and relies on the line split above.
    #[test]
    fn layout() {
        assert_eq!(size_of::<ConnState>(), 456);
        assert_eq!((48 + 8 + size_of::<ConnState>()) % 64, 0, "whole cache lines per map element");
        assert_eq!(align_of::<ConnState>(), 8);
        assert_eq!(offset_of!(ConnState, rx), 8);
        assert_eq!(offset_of!(ConnState, rx_data) + size_of::<DataCounters>(), 72);
        assert_eq!(offset_of!(ConnState, tx), 72);
        assert_eq!(offset_of!(ConnState, tx_data) + size_of::<DataCounters>(), 136);
        assert_eq!(offset_of!(ConnState, tx_ctl) + size_of::<CtlCounters>(), 200);
        assert_eq!(size_of::<HttpScan>() % 8, 0);
        assert_eq!(size_of::<KeyScan>() % 8, 0);
        // FrameHot is FrameState's first 16 bytes, field for field; hdr follows.
        assert_eq!(size_of::<FrameHot>(), 16);
        assert_eq!(offset_of!(FrameState, hdr), 16);
        assert_eq!(size_of::<FrameState>(), 32);
        assert_eq!(offset_of!(FrameState, hdr_len), offset_of!(FrameHot, hdr_len));
        assert_eq!(offset_of!(FrameState, flags), offset_of!(FrameHot, flags));
        assert_eq!(offset_of!(FrameState, close_got), offset_of!(FrameHot, close_got));
        assert_eq!(offset_of!(FrameState, close_b0), offset_of!(FrameHot, close_b0));
        assert_eq!(offset_of!(FrameState, close_mask), offset_of!(FrameHot, close_mask));
    }

    #[test]
    fn counters_round_trip() {
        let delta = DirCounters { messages: 3, payload_bytes: 100, frames: [1, 2, 3, 4, 5, 6] };
        let mut c = ConnState::default();
        add_counts(&mut c.rx_data, &mut c.rx_ctl, &delta);
        add_counts(&mut c.rx_data, &mut c.rx_ctl, &delta);
        let mut twice = delta;
        twice.add(&delta);
        assert_eq!(c.rx_counts(), twice);
        assert_eq!(c.tx_counts(), DirCounters::default());
        let data_only = DirCounters { messages: 1, payload_bytes: 9, frames: [1, 0, 0, 0, 0, 0] };
        add_counts(&mut c.tx_data, &mut c.tx_ctl, &data_only);
        assert_eq!(c.tx_counts(), data_only);
    }
    extern crate std;
    use crate::frame::{FrameHeader, Sink, WINDOW};
    use std::vec::Vec;

    struct Delta(DirCounters);
    impl Sink for Delta {
        fn frame(&mut self, h: &FrameHeader) {
            self.0.record(h);
        }
        fn close_code(&mut self, _: u16) {}
        fn payload(&mut self, n: u64) {
            self.0.payload(n);
        }
    }

    /// One received syscall the way the probe's `on_data` handles it: all payload → skip it
    /// without a process lookup; else walk (through the parser, from the hot state and the
    /// partial header) and credit the process with the walk's bytes and what was owed.
    fn syscall(c: &mut ConnState, hdr: &mut [u8; WINDOW], proc_bytes: &mut u64, bytes: &[u8]) {
        let left = bytes.len() as u64;
        if c.rx.skippable() >= left {
            skip_payload(&mut c.rx, &mut c.rx_data, &mut c.rx_owed_from, left, true);
            return;
        }
        let owed_bytes = take_owed(&mut c.rx, &c.rx_data, &c.rx_owed_from);
        let h = c.rx;
        let mut fs = FrameState {
            remaining: h.remaining,
            hdr_len: h.hdr_len,
            flags: h.flags,
            close_got: h.close_got,
            close_b0: h.close_b0,
            close_mask: h.close_mask,
            _pad: h._pad,
            hdr: *hdr,
        };
        let mut d = Delta(DirCounters::default());
        fs.feed(bytes, &mut d).unwrap();
        c.rx = FrameHot {
            remaining: fs.remaining,
            hdr_len: fs.hdr_len,
            flags: fs.flags,
            close_got: fs.close_got,
            close_b0: fs.close_b0,
            close_mask: fs.close_mask,
            _pad: fs._pad,
        };
        *hdr = fs.hdr;
        add_counts(&mut c.rx_data, &mut c.rx_ctl, &d.0);
        *proc_bytes += d.0.payload_bytes + owed_bytes;
    }

    /// Feed `stream` in syscalls of the given sizes (cycled); after each, the connection counts
    /// exactly the payload seen so far (as one parser over the prefix does), and the process
    /// plus what is owed equals it. Returns (connection, process) totals after the close.
    fn run(stream: &[u8], sizes: &[usize]) -> (u64, u64) {
        let mut c = ConnState::default();
        let mut hdr = [0u8; WINDOW];
        let mut proc_bytes = 0u64;
        let (mut pos, mut i) = (0usize, 0usize);
        while pos < stream.len() {
            let end = (pos + sizes[i % sizes.len()]).min(stream.len());
            i += 1;
            syscall(&mut c, &mut hdr, &mut proc_bytes, &stream[pos..end]);
            pos = end;
            let mut seen = Delta(DirCounters::default());
            FrameState::new(false).feed(&stream[..pos], &mut seen).unwrap();
            assert_eq!(c.rx_data.payload_bytes, seen.0.payload_bytes, "after {pos} bytes");
            assert_eq!(proc_bytes + owed(&c.rx, &c.rx_data, &c.rx_owed_from), c.rx_data.payload_bytes);
        }
        // The close credits what is still owed.
        proc_bytes += owed(&c.rx, &c.rx_data, &c.rx_owed_from);
        (c.rx_data.payload_bytes, proc_bytes)
    }

    fn binary(len: usize) -> Vec<u8> {
        let mut v = std::vec![0x82u8, 126];
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.resize(4 + len, 0x5a);
        v
    }

    #[test]
    fn process_is_credited_with_payload_only_syscalls() {
        // A 2^63-1 byte header, then 1000 payload bytes in 10 syscalls, then the connection ends.
        let mut s = std::vec![0x82u8, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        s.resize(10 + 1000, 0);
        assert_eq!(run(&s, &[10, 100]), (1000, 1000));
        // A 60000-byte frame whose last byte ends a payload-only syscall, then a small frame:
        // the owed bytes reach the process at the next walk, not twice.
        let mut s = binary(60000);
        s.extend(binary(5));
        let first = 4 + 60000;
        assert_eq!(run(&s, &[4, 30000, 30000, 9]), (60005, 60005));
        assert_eq!(run(&s[..first], &[100, first - 100]), (60000, 60000));
        // Many frames at all sorts of cuts, some landing inside headers.
        let lens = [0, 1, 125, 126, 3000, 65535, 7];
        let s: Vec<u8> = lens.iter().flat_map(|&n| binary(n)).collect();
        let total = lens.iter().sum::<usize>() as u64;
        for sizes in [&[1usize][..], &[3, 5000], &[65536], &[2, 7, 13, 4096, 70000], &[126, 1]] {
            assert_eq!(run(&s, sizes), (total, total), "sizes {sizes:?}");
        }
    }

    #[test]
    fn nothing_is_owed_before_the_upgrade() {
        // Payload skipped while not yet WebSocket is folded into the process at the upgrade
        // (`rx_counts`), so it must not be owed too.
        let mut c = ConnState::default();
        c.rx.remaining = 50;
        skip_payload(&mut c.rx, &mut c.rx_data, &mut c.rx_owed_from, 20, false);
        assert_eq!((c.rx_data.payload_bytes, owed(&c.rx, &c.rx_data, &c.rx_owed_from)), (20, 0));
        skip_payload(&mut c.rx, &mut c.rx_data, &mut c.rx_owed_from, 20, true);
        assert_eq!((c.rx_data.payload_bytes, owed(&c.rx, &c.rx_data, &c.rx_owed_from)), (40, 20));
        skip_payload(&mut c.rx, &mut c.rx_data, &mut c.rx_owed_from, 10, true);
        assert_eq!(take_owed(&mut c.rx, &c.rx_data, &c.rx_owed_from), 30);
        assert_eq!((c.rx.remaining, owed(&c.rx, &c.rx_data, &c.rx_owed_from)), (0, 0));
    }
}
