//! Lifecycle events sent to userspace over the ring buffer. Counts never depend on them (they
//! live in maps); events carry latencies and per-connection history, and losses are counted.

/// Event kinds.
pub mod kind {
    pub const UPGRADED: u8 = 1;
    pub const HANDSHAKE_FAILED: u8 = 2;
    pub const CLOSED: u8 = 3;
    pub const PING_RTT: u8 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub kind: u8,
    /// For `CLOSED`: 1 if abnormal.
    pub abnormal: u8,
    /// For `HANDSHAKE_FAILED`: the HTTP status written (0 = none).
    pub status: u16,
    pub tgid: u32,
    pub fd: u32,
    pub close_rx: u16,
    pub close_tx: u16,
    pub conn_id: u64,
    pub ts_ns: u64,
    /// `UPGRADED`: handshake latency; `PING_RTT`: round-trip time; `CLOSED`: connection age.
    pub value_ns: u64,
}
