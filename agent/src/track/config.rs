//! The `[limits]` section (thresholds that classify connections and clients), and what the
//! tracker reads of the rest of the config: never the whole config (notify secrets included).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::probe::config::ProbeConfig;

/// Thresholds that classify connections and clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one client (see `probe.client_key`) may hold per process.
    pub per_client_connections: u64,
    /// A connection with no traffic either way for this long is idle.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// A ping the process sent that is unanswered for this long makes the connection stalled.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { per_client_connections: 20, idle_after: Duration::from_secs(300), stall_after: Duration::from_secs(30) }
    }
}

/// What the tracker needs: its own `[limits]`, the `[probe]` filters and client-key settings,
/// where state lives and the snapshot interval. Built by the composition root.
#[derive(Debug, Clone, Default)]
pub struct TrackConfig {
    pub limits: LimitsConfig,
    pub probe: ProbeConfig,
    pub state_dir: PathBuf,
    pub interval: Duration,
}
