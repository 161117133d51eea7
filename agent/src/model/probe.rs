//! What the probe reports about itself and the close codes it saw: plain data, read by the
//! probe (`probe/maps.rs`), shown in snapshots and metrics.

use std::collections::BTreeMap;

/// Close codes by code, received and sent.
#[derive(Debug, Default, Clone)]
pub struct CloseCodes {
    pub received: BTreeMap<u16, u64>,
    pub sent: BTreeMap<u16, u64>,
}

/// Probe health counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProbeHealth {
    pub conn_map_full: u64,
    pub proc_map_full: u64,
    pub ring_drops: u64,
    pub walk_budget_exceeded: u64,
    pub read_faults: u64,
    pub close_code_map_full: u64,
    /// Socket mode: inbound connections left without state (memory), and connections that
    /// ended before any process read or wrote them.
    pub sk_storage_full: u64,
    pub ended_unattributed: u64,
    /// Socket mode, TLS (probe `tls.rs`): plaintext states or links a full TLS map could not
    /// keep; OpenSSL calls whose `SSL` could not be paired with a socket (their plaintext is not
    /// counted); TLS connections that ended with no plaintext seen (no hooked OpenSSL, or no
    /// request).
    pub tls_map_full: u64,
    pub tls_unlinked: u64,
    pub tls_unseen: u64,
    /// Entries in the connection map now (all phases) and its capacity.
    pub conn_map_entries: u64,
    pub conn_map_capacity: u64,
    /// Inbound connections the probe did not follow from their first byte, summed over the
    /// listed processes (`unfollowed_connections` of each; set by the tracker, not the kernel).
    pub unfollowed_connections: u64,
}

/// Run count and time of one probe program. Both stay 0 unless `kernel.bpf_stats_enabled=1`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ProgramStats {
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Mean ns per run (None without runs).
    pub avg_ns_per_run: Option<f64>,
}
