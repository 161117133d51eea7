//! Per-connection state kept in the kernel's connection map, keyed by `(tgid, fd)`.

use crate::clientkey::KeyScan;
use crate::frame::{slot, DirCounters, FrameHot};
use crate::http::HttpScan;

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
/// value's size (392) makes the element 448 bytes, 7 whole lines, so elements are line-aligned
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
    pub _pad0: [u8; 4],
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
    pub _pad1: u32,
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
    /// Pads the map element to whole cache lines (see above).
    pub _pad2: [u64; 4],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameState;
    use core::mem::{align_of, offset_of, size_of};

    /// The probe copies these word by word and relies on the line split above.
    #[test]
    fn layout() {
        assert_eq!(size_of::<ConnState>(), 392);
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
}
