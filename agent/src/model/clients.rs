//! Connections per client of a process, and their ages: plain data, built by
//! `track/conns.rs`.

use serde::{Deserialize, Serialize};

/// Connections per client key of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientsSnapshot {
    /// What identifies a client: `remote_ip`, `header:<name>` or `query:<name>`.
    pub key_source: String,
    pub distinct: u64,
    pub quota: u64,
    /// Clients at or over the quota.
    pub at_or_over_quota: u64,
    /// Clients by connections, most first (at most 10).
    pub top: Vec<ClientCount>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ClientCount {
    pub key: String,
    pub connections: u64,
}

/// Connection ages: 0–5 min, 5–30 min, 30 min–2 h, 2 h+.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgeBuckets {
    pub under_5m: u64,
    pub from_5m_to_30m: u64,
    pub from_30m_to_2h: u64,
    pub over_2h: u64,
}
