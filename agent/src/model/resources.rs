//! Resources of a process and of the host at one sample, and where a process runs in
//! Kubernetes: plain data, sampled by `track/resources` and `track/k8s.rs`.

use serde::{Deserialize, Serialize};

/// Host resources at one sample. Delta fields are None on the first sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostResources {
    /// Busy share of all online CPUs since the previous sample, 0–100.
    pub cpu_percent: Option<f64>,
    /// Online CPUs (cpuN lines of /proc/stat).
    pub cpus: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// `1 - available / total`.
    pub memory_used_ratio: Option<f64>,
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
    /// TCP sockets in use, IPv4 + IPv6 (sockstat + sockstat6).
    pub tcp_sockets_inuse: Option<u64>,
    /// Sockets closed by their process but still holding data/kernel memory.
    pub tcp_sockets_orphan: Option<u64>,
    pub tcp_sockets_tw: Option<u64>,
    /// Connections dropped because a listener's accept queue was full (cumulative).
    pub listen_overflows_total: Option<u64>,
    /// SYNs/connections dropped at a listener for any reason, overflows included (cumulative).
    pub listen_drops_total: Option<u64>,
    pub listen_overflows_delta: Option<u64>,
    pub listen_drops_delta: Option<u64>,
    pub conntrack_count: Option<u64>,
    pub conntrack_max: Option<u64>,
    /// `net.ipv4.ip_local_port_range` (low, high), inclusive.
    pub ephemeral_ports_range: Option<(u16, u16)>,
    /// Non-listening TCP sockets (v4 + v6, TIME_WAIT included) whose local port is in the range.
    pub ephemeral_ports_in_use: Option<u64>,
    /// `in_use / range size`. A port can serve several destinations, so this is pressure, not a
    /// hard bound.
    pub ephemeral_ports_usage_ratio: Option<f64>,
}

/// Resources of one process at one sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessResources {
    pub pid: u32,
    /// Path of the executable; ends in " (deleted)" when the binary was replaced on disk
    /// (upgraded but not restarted).
    pub exe: Option<String>,
    /// When the process started, RFC 3339 UTC, second precision.
    pub start_time: Option<String>,
    pub uptime_seconds: Option<u64>,
    /// Innermost `*.service` / `*.scope` of the process's cgroup path.
    pub systemd_unit: Option<String>,
    /// 64-hex container id (docker, containerd, cri-o, podman).
    pub container_id: Option<String>,
    /// Kubernetes pod UID, dashed form.
    pub pod_uid: Option<String>,
    pub open_fds: Option<u64>,
    /// RLIMIT_NOFILE soft limit; None when unlimited or unreadable.
    pub fd_limit_soft: Option<u64>,
    /// RLIMIT_NOFILE hard limit; None when unlimited or unreadable.
    pub fd_limit_hard: Option<u64>,
    /// `open_fds / fd_limit_soft`: at 1.0 `accept()` fails with EMFILE.
    pub fd_usage_ratio: Option<f64>,
    pub rss_bytes: u64,
    pub threads: u64,
    /// CPU time over wall time since the previous sample, in percent of one core (may exceed
    /// 100 for multi-threaded servers). None on the first sample of a process.
    pub cpu_percent: Option<f64>,
    /// CPU time (user + system) the process has used since it started, in seconds.
    pub cpu_seconds_total: Option<f64>,
    /// Tightest memory limit of the cgroup and its ancestors; None when unlimited.
    pub memory_limit_bytes: Option<u64>,
}

/// Where a process runs in Kubernetes (absent from snapshots off Kubernetes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub namespace: String,
    pub pod: String,
    /// Container name; None when the container id is not in `/var/log/containers` and the pod
    /// has more than one container.
    pub container: Option<String>,
}
