//! Per-process and global counters kept in kernel maps. They are cumulative and updated with
//! atomic adds at the moment the kernel sees the bytes, so a snapshot never double-counts or
//! goes backwards, and an agent restart (maps are pinned) loses nothing.

use crate::{frame::DirCounters, sse::SseProcStats};

/// Cumulative WebSocket counters of one process (keyed by tgid). The probe keeps one copy per
/// CPU (`WSG_PROCS` is a per-CPU hash); the process's numbers are their sum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// TCP connections accepted while watched (all kinds, before classification).
    pub accepted: u64,
    /// Upgrades completed (`101` written).
    pub opened: u64,
    /// WebSocket connections ended (the process closed the fd, or it exited).
    pub closed: u64,
    /// Upgrade requests answered with anything but `101`, or never answered.
    pub handshakes_failed: u64,
    /// WebSocket connections that ended without the process receiving a close frame.
    pub abnormal_closes: u64,
    /// WebSocket connections whose framing could not be followed.
    pub out_of_sync: u64,
    /// Accepted connections classified as not WebSocket (plain HTTP or another protocol).
    pub not_websocket: u64,
    /// Handshake latency (request read → 101 written): sum and count.
    pub handshake_ns_sum: u64,
    pub handshake_count: u64,
    /// Ping sent by the process → next pong received: sum and count.
    pub ping_rtt_ns_sum: u64,
    pub ping_rtt_count: u64,
    /// Data message received → next data frame sent by the process: sum and count.
    pub response_ns_sum: u64,
    pub response_count: u64,
    pub rx: DirCounters,
    pub tx: DirCounters,
    /// Socket mode: connections that moved bytes the probe could not read as a buffer
    /// (io_uring, io-wq workers, splice/sendfile, recvmmsg/sendmmsg), and those bytes. Their
    /// frames are not counted (a WebSocket among them is also counted out of sync).
    pub unparsed_conns: u64,
    pub unparsed_bytes: u64,
    /// Syscall mode: accepted connections the accepting process closed before it read a byte
    /// of them. That is how a socket leaves for another fd (`dup2`) or process (fd passing:
    /// Node `cluster`, PM2), which this mode cannot follow; a client that connects and sends
    /// nothing lands here too. Reported in `unfollowed_connections`.
    pub closed_unread: u64,
    /// Server-Sent Events streams this process served (`sse.rs`).
    pub sse: SseProcStats,
}

/// Key of the close-code map: how often a process received or sent each close code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CloseCodeKey {
    pub tgid: u32,
    /// 0 = received by the process, 1 = sent by it.
    pub dir: u16,
    pub code: u16,
}

/// Indexes into the global counter array (`WSG_GLOBAL`, per CPU).
pub mod global {
    /// Connections not tracked because the connection map was full.
    pub const CONN_MAP_FULL: u32 = 0;
    /// Processes not tracked because the process map was full.
    pub const PROC_MAP_FULL: u32 = 1;
    /// Lifecycle events lost because the ring buffer was full.
    pub const RING_DROPS: u32 = 2;
    /// Syscalls whose bytes exceeded the per-syscall walk budget (connection marked out of sync).
    pub const WALK_BUDGET: u32 = 3;
    /// Reads of user memory that failed (connection marked out of sync).
    pub const READ_FAULTS: u32 = 4;
    /// Close-code counts lost because the close-code map was full.
    pub const CLOSE_CODE_MAP_FULL: u32 = 5;
    /// Socket mode: inbound connections whose per-socket state could not be created (memory).
    pub const SK_STORAGE_FULL: u32 = 6;
    /// Socket mode: connections that ended before any process read or wrote them (no process
    /// to count them for).
    pub const ENDED_UNATTRIBUTED: u32 = 7;
    /// Socket mode, TLS: plaintext connections or `SSL` links not kept because a TLS map was full.
    pub const TLS_MAP_FULL: u32 = 8;
    /// Socket mode, TLS: OpenSSL calls that returned plaintext for an `SSL` no socket could be
    /// paired with (its bytes are not counted).
    pub const TLS_UNLINKED: u32 = 9;
    /// Socket mode, TLS: TLS connections that ended without any plaintext seen (the server's TLS
    /// library is not hooked, or the peer sent no request): neither WebSocket nor `not_websocket`.
    pub const TLS_UNSEEN: u32 = 10;
    pub const COUNT: u32 = 11;
}

impl ProcStats {
    /// Add another record field by field (userspace sums the per-CPU copies of `WSG_PROCS`).
    pub fn merge(&mut self, o: &ProcStats) {
        self.accepted += o.accepted;
        self.opened += o.opened;
        self.closed += o.closed;
        self.handshakes_failed += o.handshakes_failed;
        self.abnormal_closes += o.abnormal_closes;
        self.out_of_sync += o.out_of_sync;
        self.not_websocket += o.not_websocket;
        self.handshake_ns_sum += o.handshake_ns_sum;
        self.handshake_count += o.handshake_count;
        self.ping_rtt_ns_sum += o.ping_rtt_ns_sum;
        self.ping_rtt_count += o.ping_rtt_count;
        self.response_ns_sum += o.response_ns_sum;
        self.response_count += o.response_count;
        self.rx.add(&o.rx);
        self.tx.add(&o.tx);
        self.unparsed_conns += o.unparsed_conns;
        self.unparsed_bytes += o.unparsed_bytes;
        self.closed_unread += o.closed_unread;
        self.sse.add(&o.sse);
    }
}
