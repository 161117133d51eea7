//! The maps both probe modes share (process records, close codes, histograms, events, health).
//! Sizes here are defaults; the agent sets them from config before loading. Process maps are
//! plain hash maps, not LRU: a full map is counted (`global::PROC_MAP_FULL`), never a silent
//! eviction. Each mode keeps its connection state in its own module (`syscall.rs`, `sock.rs`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use wsguard_common::{
    clientkey::KeyConfig,
    conn::ConnState,
    hist::Hists,
    stats::{global, CloseCodeKey, ProcStats},
};

wsguard_common::named!(
    WSG_PROCS = PROCS,
    WSG_CLOSE_CODES = CLOSE_CODES,
    WSG_EVENTS = EVENTS,
    WSG_GLOBAL = GLOBAL,
    WSG_INIT_CONN = INIT_CONN,
    WSG_ZERO_PROC = ZERO_PROC,
    WSG_LAYOUT = LAYOUT,
    WSG_KEY_CONFIG = KEY_CONFIG,
    WSG_HISTS = HISTS,
    WSG_ZERO_HISTS = ZERO_HISTS,
);

/// Per-process counters, one copy per CPU: the data path adds to this CPU's copy with plain
/// (non-atomic) adds and no cache line moves between CPUs; userspace sums the copies.
#[map]
pub static WSG_PROCS: PerCpuHashMap<u32, ProcStats> = PerCpuHashMap::with_max_entries(8192, 0);

#[map]
pub static WSG_CLOSE_CODES: HashMap<CloseCodeKey, u64> = HashMap::with_max_entries(16384, 0);

#[map]
pub static WSG_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Probe health counters, indexed by `stats::global`.
#[map]
pub static WSG_GLOBAL: PerCpuArray<u64> = PerCpuArray::with_max_entries(global::COUNT, 0);

/// Per-CPU template a new connection is copied from (keeps it off the BPF stack).
#[map]
pub static WSG_INIT_CONN: PerCpuArray<ConnState> = PerCpuArray::with_max_entries(1, 0);

/// An all-zero process record, copied in when a process is first seen.
#[map]
pub static WSG_ZERO_PROC: Array<ProcStats> = Array::with_max_entries(1, 0);

/// Record layout of the pinned maps (`LAYOUT_VERSION`, written by the agent at attach): a
/// resuming agent refuses maps made for another layout. The programs never use it.
#[map]
pub static WSG_LAYOUT: Array<u32> = Array::with_max_entries(1, 0);

/// Count a probe health event.
#[inline(always)]
pub fn bump(index: u32) {
    if let Some(p) = WSG_GLOBAL.get_ptr_mut(index) {
        // SAFETY: per-CPU value, the program is not preempted on this CPU.
        unsafe { *p += 1 };
    }
}

/// What client key to capture from upgrade requests; written by the agent from its config.
#[map]
pub static WSG_KEY_CONFIG: Array<KeyConfig> = Array::with_max_entries(1, 0);

/// Latency histograms per process (created at its first upgrade; not preallocated).
#[map]
pub static WSG_HISTS: HashMap<u32, Hists> = HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// An all-zero histogram set, copied in when a process upgrades its first connection.
#[map]
pub static WSG_ZERO_HISTS: Array<Hists> = Array::with_max_entries(1, 0);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Count one latency sample of kind `which` for `tgid`.
#[inline(always)]
pub fn hist_add(tgid: u32, which: usize, ns: u64) {
    let h = match WSG_HISTS.get_ptr_mut(&tgid) {
        Some(h) => h,
        None => {
            let Some(zero) = WSG_ZERO_HISTS.get(0) else { return };
            let _ = WSG_HISTS.insert(&tgid, zero, 1 /* BPF_NOEXIST */);
            match WSG_HISTS.get_ptr_mut(&tgid) {
                Some(h) => h,
                None => return bump(global::PROC_MAP_FULL),
            }
        }
    };
    let b = wsguard_common::hist::bucket(ns) & (wsguard_common::hist::BUCKETS - 1);
    // SAFETY: map value; bucket index masked into range.
    let slot = unsafe { &mut (*h).h[which % 3][b] };
    crate::atomic::add(slot, 1);
}
