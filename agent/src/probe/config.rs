//! The `[probe]` section: where the probe pins its maps, how large they are, which processes
//! are reported, and what identifies a client (`[probe.client_key]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Which probe to run: `auto` (default), `socket` or `syscall` (docs/kernel-support.md).
    /// `WSGUARD_PROBE_MODE` overrides it.
    pub mode: super::mode::ModeChoice,
    /// bpffs directory where maps and links are pinned, so a restart keeps counting.
    pub pin_path: PathBuf,
    /// Leave the probe attached and counting when the agent stops cleanly, so the next start
    /// resumes its counts (upgrades). Default false: a clean stop detaches (`wsguard run
    /// --keep-probe` and SIGUSR2 keep it for one stop).
    pub keep_on_stop: bool,
    /// Connections followed at once (accepted, not yet classified, and WebSocket).
    pub max_connections: u32,
    /// Processes with counters at once.
    pub max_processes: u32,
    /// Lifecycle event ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Only report processes listening on one of these TCP ports (empty: all).
    pub ports: Vec<u16>,
    /// Only report processes whose `comm` is one of these (empty: all).
    pub processes: Vec<String>,
    pub client_key: ClientKeyConfig,
    /// `[probe.tls]`: TLS plaintext from OpenSSL (socket mode).
    pub tls: super::tls::TlsConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            mode: Default::default(),
            pin_path: PathBuf::from("/sys/fs/bpf/wsguard"),
            keep_on_stop: false,
            max_connections: 65536,
            max_processes: 8192,
            ring_buffer_bytes: 1 << 20,
            ports: Vec::new(),
            processes: Vec::new(),
            client_key: ClientKeyConfig::default(),
            tls: Default::default(),
        }
    }
}

/// What identifies a client. By default the remote IP; optionally a header or query parameter
/// of the upgrade request (captured in the kernel, at most 32 bytes, or only a hash).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientKeyConfig {
    /// Request header whose value is the client key, e.g. `X-User-Id`.
    pub header: Option<String>,
    /// Query parameter whose value is the client key, e.g. `user`.
    pub query: Option<String>,
    /// Report (and keep in the kernel) only a hash of the value, never the value itself.
    pub hash: bool,
}

impl ClientKeyConfig {
    /// The key source as shown in snapshots.
    pub fn source(&self) -> String {
        match (&self.header, &self.query) {
            (Some(h), _) => format!("header:{h}"),
            (None, Some(q)) => format!("query:{q}"),
            (None, None) => "remote_ip".into(),
        }
    }

    /// A header or query value is captured (else the remote IP is the key).
    pub fn enabled(&self) -> bool {
        self.header.is_some() || self.query.is_some()
    }
}
