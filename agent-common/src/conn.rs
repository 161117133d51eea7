//! Per-connection state kept in the kernel's connection map, keyed by `(tgid, fd)`.

use crate::clientkey::KeyScan;
use crate::frame::{DirCounters, FrameState};
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

/// State of one tracked connection. Written only by the thread doing the syscall on that fd;
/// userspace reads it.
///
/// Laid out hot first, by direction, so that a data syscall touches as few cache lines as
/// possible: a read uses the first 136 bytes (flags, times, `rx`, `rx_count`), a write the
/// first 40 plus `tx`..`resp_count`. What is only used around the handshake, or only by
/// userspace, comes last. Every field is 8-byte aligned or packed into 8-byte groups, and the
/// size is a multiple of 8, so the probe copies it word by word (see `agent-ebpf/src/copy.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    pub phase: u8,
    /// The process received a close frame (so its close is not abnormal). One byte per
    /// direction: reader and writer threads may update a connection at the same time.
    pub close_rx_seen: u8,
    /// The process sent a close frame.
    pub close_tx_seen: u8,
    /// Framing could not be followed; later bytes are ignored, never guessed.
    pub out_of_sync: u8,
    /// Last close code received / sent (0 = none yet; 1005 = close frame without a code).
    pub close_rx: u16,
    pub close_tx: u16,
    pub last_rx_ns: u64,
    pub last_tx_ns: u64,
    /// First data message received since the process last sent data (0 = none).
    pub pending_msg_ns: u64,
    /// Outstanding ping sent by the process (0 = none), for ping→pong round-trip time.
    pub ping_ns: u64,
    // --- received direction (offset 40) ---
    pub rx: FrameState,
    pub rx_count: DirCounters,
    // --- sent direction (offset 136) ---
    pub tx: FrameState,
    pub tx_count: DirCounters,
    /// Response latency (inbound data message → next outbound data frame): sum, count.
    pub resp_sum_ns: u64,
    pub resp_count: u64,
    // --- rarely written (offset 248) ---
    /// Last ping round-trip time seen, and the running sum and count.
    pub rtt_last_ns: u64,
    pub rtt_sum_ns: u64,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    /// The probe copies these word by word and relies on the hot/cold split above.
    #[test]
    fn layout() {
        assert_eq!(size_of::<ConnState>() % 8, 0);
        assert_eq!(align_of::<ConnState>(), 8);
        assert_eq!(offset_of!(ConnState, rx), 40);
        assert_eq!(offset_of!(ConnState, rx_count), 72);
        assert_eq!(offset_of!(ConnState, tx), 136);
        assert_eq!(offset_of!(ConnState, resp_count), 240);
        assert_eq!(size_of::<FrameState>(), 32);
        assert_eq!(size_of::<DirCounters>(), 64);
        assert_eq!(size_of::<HttpScan>() % 8, 0);
        assert_eq!(size_of::<KeyScan>() % 8, 0);
    }
}
