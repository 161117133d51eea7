//! The probe's maps. Sizes here are defaults; the agent sets them from config before loading.
//! Connection and process maps are plain hash maps, not LRU: a full map is counted
//! (`global::CONN_MAP_FULL`), never a silent eviction of a live connection's counts.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use wsguard_common::{
    conn::{ConnKey, ConnState},
    stats::{global, CloseCodeKey, ProcStats},
    WATCHED_WORDS,
};

#[map]
pub static WSG_CONNS: HashMap<ConnKey, ConnState> = HashMap::with_max_entries(65536, 0);

#[map]
pub static WSG_PROCS: HashMap<u32, ProcStats> = HashMap::with_max_entries(8192, 0);

#[map]
pub static WSG_CLOSE_CODES: HashMap<CloseCodeKey, u64> = HashMap::with_max_entries(16384, 0);

/// One bit per tgid: set when the process calls `accept`, cleared by the agent when it exits.
#[map]
pub static WSG_WATCHED: Array<u64> = Array::with_max_entries(WATCHED_WORDS, 0);

#[map]
pub static WSG_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Probe health counters, indexed by `stats::global`.
#[map]
pub static WSG_GLOBAL: PerCpuArray<u64> = PerCpuArray::with_max_entries(global::COUNT, 0);

/// Per-CPU template a new connection is copied from (keeps 300+ bytes off the BPF stack).
#[map]
pub static WSG_INIT_CONN: PerCpuArray<ConnState> = PerCpuArray::with_max_entries(1, 0);

/// An all-zero process record, copied in when a process is first seen.
#[map]
pub static WSG_ZERO_PROC: Array<ProcStats> = Array::with_max_entries(1, 0);

/// Count a probe health event.
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(p) = WSG_GLOBAL.get_ptr_mut(index) {
        // SAFETY: per-CPU value, the program is not preempted on this CPU.
        unsafe { *p += 1 };
    }
}
