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
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// Unique id (ktime at accept << 8 | cpu), stable across agent restarts.
    pub id: u64,
    pub accepted_ns: u64,
    /// First byte of the upgrade request read.
    pub request_ns: u64,
    /// `101` written.
    pub upgraded_ns: u64,
    pub last_rx_ns: u64,
    pub last_tx_ns: u64,
    /// Outstanding ping sent by the process (0 = none), for ping→pong round-trip time.
    pub ping_ns: u64,
    /// First data message received since the process last sent data (0 = none).
    pub pending_msg_ns: u64,
    /// Last ping round-trip time seen, and the running sum and count.
    pub rtt_last_ns: u64,
    pub rtt_sum_ns: u64,
    pub rtt_count: u64,
    /// Response latency (inbound data message → next outbound data frame): sum, count.
    pub resp_sum_ns: u64,
    pub resp_count: u64,
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
    pub http: HttpScan,
    /// Client key captured from the upgrade request (when configured).
    pub key: KeyScan,
    pub rx: FrameState,
    pub tx: FrameState,
    pub rx_count: DirCounters,
    pub tx_count: DirCounters,
}
