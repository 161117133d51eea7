//! Types shared by the wsguard eBPF probe (`wsguard-ebpf`) and the userspace agent, plus the
//! streaming parsers both run: [`frame`] (WebSocket framing), [`http`] (the upgrade handshake) and
//! [`sse`] (Server-Sent Events heads and bodies).
//!
//! Everything here is `no_std`, `#[repr(C)]` where it crosses the kernel boundary, and written so
//! the BPF verifier accepts it: fixed-size arrays indexed with masks, no panics, no allocation.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod clientkey;
pub mod conn;
pub mod event;
pub mod frame;
pub mod hist;
pub mod http;
pub mod sse;
pub mod stats;

#[cfg(feature = "user")]
mod pod;

/// Names of the maps and programs in the eBPF objects, the one list: the agent loads, resizes
/// and pins by these, and the probe ties each of its maps and programs to one with
/// [`named!`](crate::named) (a map's or program's name in the object is its Rust identifier,
/// and aya-ebpf's macros take no constant), so a rename on one side alone does not compile.
pub mod names {
    pub const CONNS: &str = "WSG_CONNS";
    pub const PROCS: &str = "WSG_PROCS";
    pub const CLOSE_CODES: &str = "WSG_CLOSE_CODES";
    pub const WATCHED: &str = "WSG_WATCHED";
    pub const EVENTS: &str = "WSG_EVENTS";
    pub const GLOBAL: &str = "WSG_GLOBAL";
    pub const KEY_CONFIG: &str = "WSG_KEY_CONFIG";
    pub const HISTS: &str = "WSG_HISTS";
    pub const FDBITS: &str = "WSG_FDBITS";
    pub const LAYOUT: &str = "WSG_LAYOUT";
    pub const PROG_ENTER: &str = "wsg_sys_enter";
    pub const PROG_EXIT: &str = "wsg_sys_exit";
    /// Templates and scratch records of both modes (pinned so a resumed probe keeps them).
    pub const INIT_CONN: &str = "WSG_INIT_CONN";
    pub const ZERO_PROC: &str = "WSG_ZERO_PROC";
    pub const ZERO_HISTS: &str = "WSG_ZERO_HISTS";
    pub const ITER_REC: &str = "WSG_ITER_REC";
    /// Socket mode (a second eBPF object, `wsguard-sock`).
    pub const SK: &str = "WSG_SK";
    pub const PROG_SOCK_OPS: &str = "wsg_sock_ops";
    pub const PROG_RECV: &str = "wsg_sock_recv";
    pub const PROG_SEND: &str = "wsg_sock_send";
    pub const PROG_END: &str = "wsg_sock_end";
    /// Socket mode: TCP state changes (who closed an SSE stream first).
    pub const PROG_STATE: &str = "wsg_sock_state";
    pub const PROG_ITER: &str = "wsg_sock_iter";
    /// Socket mode, fresh attach only (not pinned): cookies of connections born while the
    /// agent lists what predates the probe, and the switch that opens that window.
    pub const BORN: &str = "WSG_BORN";
    pub const BORN_OPEN: &str = "WSG_BORN_OPEN";
    /// Socket mode, TLS (see agent-ebpf/src/tls.rs).
    pub const TLS_THREAD: &str = "WSG_TLS_THREAD";
    pub const TLS_SSL: &str = "WSG_TLS_SSL";
    pub const TLS_LINK: &str = "WSG_TLS_LINK";
    pub const TLS_CONN: &str = "WSG_TLS_CONN";
    pub const PROG_SSL_READ: &str = "wsg_ssl_read";
    pub const PROG_SSL_READ_EX: &str = "wsg_ssl_read_ex";
    pub const PROG_SSL_WRITE: &str = "wsg_ssl_write";
    pub const PROG_SSL_WRITE_EX: &str = "wsg_ssl_write_ex";
    pub const PROG_SSL_RET: &str = "wsg_ssl_ret";
    pub const PROG_SSL_FREE: &str = "wsg_ssl_free";

    /// `a == b`, usable in a `const` assertion.
    pub const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    #[cfg(test)]
    #[test]
    fn same_compares_whole_names() {
        assert!(same(PROCS, "WSG_PROCS"));
        assert!(!same(PROCS, "WSG_PROC") && !same(PROCS, "WSG_PROCZ") && !same("", "x"));
    }
}

/// `named!(WSG_PROCS = PROCS, …)` in the probe: each map static or program function is named
/// (its identifier) as the constant in [`names`] says; otherwise the probe does not compile.
/// The item is referenced too, so removing it without its constant fails as well.
#[macro_export]
macro_rules! named {
    ($($item:ident = $name:ident),* $(,)?) => {
        $(const _: () = assert!($crate::names::same(stringify!($item), $crate::names::$name));)*
        #[allow(dead_code)]
        fn _named() {
            $(let _ = &$item;)*
        }
    };
}

/// Largest pid the watched-process bitmap covers (Linux's `PID_MAX_LIMIT`, 2^22).
pub const PID_MAX_LIMIT: u32 = 1 << 22;
/// Words in the watched-process bitmap (one bit per tgid).
pub const WATCHED_WORDS: u32 = PID_MAX_LIMIT / 64;

/// Bits in the (tgid, fd) filter of the probe (`WSG_FDBITS`): 4 Mi bits, 512 KiB.
pub const FD_BITS: u32 = 1 << 22;

/// Bit of the (tgid, fd) filter: consecutive fds of a process are consecutive bits (one cache
/// line covers 512 fds), processes are spread by a multiplicative hash.
#[inline(always)]
pub fn fd_bit(tgid: u32, fd: u32) -> u32 {
    tgid.wrapping_mul(0x9E37_79B1).wrapping_add(fd) & (FD_BITS - 1)
}

/// Version of the record layouts in the pinned maps (ConnState, ProcStats, map types). A
/// resuming agent refuses pinned maps of another version. Bump it with any layout change.
/// 2: ConnState reordered hot-first, WSG_PROCS per CPU, WSG_FDBITS added. 3: ConnState by cache
/// line (split counters, partial headers apart). 4: payload bytes counted as they pass, not as
/// declared (`ConnState::rx_owed_from`/`tx_owed_from`); a probe of version 3 left running would
/// keep counting declared lengths.
/// 5: ProcStats gained the unparsed counters; ConnState's padding became `tgid` and `fd`.
/// 6: ProcStats gained `closed_unread`; ConnState's phase `HTTP` (keep-alive between requests).
/// 7: phase `TLS` and the TLS maps (socket mode); three more health counters in WSG_GLOBAL.
/// 8: Server-Sent Events: phase `SSE`, `ConnState::sse` (80 bytes, the padding folded in),
/// `ProcStats::sse`, the socket mode's `wsg_sock_state` program.
pub const LAYOUT_VERSION: u32 = 8;
