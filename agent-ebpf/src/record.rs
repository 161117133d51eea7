//! What the kernel side records outside the counters of one walk: the per-CPU process record,
//! lifecycle events on the ring buffer, and the end of tracking for a connection that is not
//! WebSocket. Used by the lifecycle both modes share (`lifecycle.rs`), the handshake
//! (`handshake.rs`) and each mode's hooks (`syscall.rs`, `sock.rs`), so none imports another.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    event::{kind, Event},
    stats::{global, ProcStats},
};

use crate::maps::{bump, WSG_EVENTS, WSG_PROCS, WSG_ZERO_PROC};

const BPF_NOEXIST: u64 = 1;

/// The direction of a syscall's bytes, from the process's side.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Rx,
    Tx,
}

/// This CPU's copy of the process record, created on first use (from an all-zero map value; a
/// per-CPU insert zeroes the other CPUs' copies).
#[inline(always)]
pub(crate) fn proc_stats(tgid: u32) -> Option<&'static mut ProcStats> {
    if let Some(p) = WSG_PROCS.get_ptr_mut(&tgid) {
        // SAFETY: this CPU's copy of a map value; programs are not preempted on their CPU.
        return Some(unsafe { &mut *p });
    }
    let zero = WSG_ZERO_PROC.get(0)?;
    if WSG_PROCS.insert(&tgid, zero, BPF_NOEXIST).is_err() && WSG_PROCS.get_ptr(&tgid).is_none() {
        bump(global::PROC_MAP_FULL);
        return None;
    }
    // SAFETY: as above.
    WSG_PROCS.get_ptr_mut(&tgid).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub(crate) fn emit(kind: u8, key: &ConnKey, c: &ConnState, value_ns: u64, status: u16, abnormal: u8) {
    match WSG_EVENTS.reserve::<Event>(0) {
        Some(mut e) => {
            // Field by field: a struct literal would be built on the stack and copied with a
            // byte loop (see copy.rs).
            let p = e.as_mut_ptr();
            // SAFETY: the reserved record is valid for writes of one Event.
            unsafe {
                (*p).kind = kind;
                (*p).abnormal = abnormal;
                (*p).status = status;
                (*p).tgid = key.tgid;
                (*p).fd = key.fd;
                (*p).close_rx = c.close_rx;
                (*p).close_tx = c.close_tx;
                (*p).conn_id = c.id;
                (*p).ts_ns = bpf_ktime_get_ns();
                (*p).value_ns = value_ns;
            }
            e.submit(0);
        }
        None => bump(global::RING_DROPS),
    }
}

/// Stop following a connection that turned out not to be WebSocket (or failed its handshake):
/// counted, then marked `DONE` (the syscall mode deletes such an entry, see `syscall.rs`; the
/// socket mode leaves it in the socket's storage, which the kernel frees with the socket).
/// `failed_status`: the response status of a failed handshake (0: none was seen), or
/// [`NOT_WEBSOCKET`]. A plain integer, not an `Option<u16>`: LLVM passes an `Option`'s payload
/// in its own register and leaves it undefined for `None`, which the verifier refuses to spill.
#[inline(never)]
pub(crate) fn drop_conn(key: &ConnKey, failed_status: u32, c: &mut ConnState) {
    if let Some(p) = proc_stats(key.tgid) {
        if failed_status == NOT_WEBSOCKET {
            p.not_websocket += 1;
        } else {
            p.handshakes_failed += 1;
            emit(kind::HANDSHAKE_FAILED, key, c, 0, failed_status as u16, 0);
        }
    }
    c.phase = phase::DONE;
}

/// [`drop_conn`]: the connection is not WebSocket (no handshake failed).
pub(crate) const NOT_WEBSOCKET: u32 = u32::MAX;
