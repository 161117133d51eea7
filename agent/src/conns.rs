//! Per-connection detail and per-client aggregation, built from the probe's connection map and
//! the process's own socket tables (peer address, queues) in /proc.

use std::{collections::HashMap, net::SocketAddr};

use procfs::process::{FDTarget, Process};
use serde::{Deserialize, Serialize};
use wsguard_common::{
    conn::{phase, ConnState},
    frame::DirCounters,
};

use crate::snapshot::Frames;

/// One WebSocket connection, as `GET /api/v1/processes/{pid}/connections` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionSnapshot {
    pub fd: u32,
    pub id: u64,
    pub peer: Option<String>,
    pub client_key: String,
    pub age_seconds: f64,
    pub idle_seconds: f64,
    pub idle: bool,
    /// A ping the process sent has gone unanswered past `limits.stall_after`.
    pub stalled: bool,
    pub handshake_latency_ms: f64,
    pub ping_rtt_last_ms: Option<f64>,
    pub frames_received: Frames,
    pub frames_sent: Frames,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub payload_bytes_received: u64,
    pub payload_bytes_sent: u64,
    pub send_queue_bytes: u64,
    pub recv_queue_bytes: u64,
    pub out_of_sync: bool,
}

/// Connections per client key of one process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

/// What the per-connection pass yields for one process.
#[derive(Debug, Default)]
pub struct ProcessConns {
    pub connections: Vec<ConnectionSnapshot>,
    pub clients: ClientsSnapshot,
    pub ages: AgeBuckets,
    pub idle: u64,
    pub stalled: u64,
    pub send_queue_bytes: u64,
    pub recv_queue_bytes: u64,
}

/// Limits that classify connections.
pub struct Limits {
    pub quota: u64,
    pub idle_after_s: f64,
    pub stall_after_s: f64,
    pub key_source: String,
    pub hash_keys: bool,
}

/// Current CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Socket details of a process: fd → (peer, tx queue, rx queue).
fn sockets(pid: u32) -> HashMap<u32, (SocketAddr, u64, u64)> {
    let mut out = HashMap::new();
    let Ok(p) = Process::new(pid as i32) else { return out };
    let mut by_inode = HashMap::new();
    for table in [p.tcp(), p.tcp6()].into_iter().flatten() {
        for e in table {
            by_inode.insert(e.inode, (e.remote_address, e.tx_queue as u64, e.rx_queue as u64));
        }
    }
    if let Ok(fds) = p.fd() {
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                if let Some(v) = by_inode.get(&inode) {
                    out.insert(fd.fd as u32, *v);
                }
            }
        }
    }
    out
}

fn client_key(c: &ConnState, peer: Option<&SocketAddr>, hash_keys: bool) -> String {
    let k = &c.key;
    if k.found() {
        let raw_fits = k.key_len as u16 == k.total_len && k.total_len > 0;
        if raw_fits && !hash_keys {
            return String::from_utf8_lossy(&k.key[..k.key_len as usize]).into_owned();
        }
        return format!("h:{:016x}", k.hash);
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Build the per-connection view of `pid` from its tracked WebSocket connections.
pub fn process_conns(pid: u32, conns: &[(u32, &ConnState)], limits: &Limits) -> ProcessConns {
    let now = monotonic_ns();
    let socks = sockets(pid);
    let mut out = ProcessConns::default();
    let mut per_client: HashMap<String, u64> = HashMap::new();
    for (fd, c) in conns.iter().filter(|(_, c)| c.phase == phase::WEBSOCKET) {
        let s = socks.get(fd);
        let key = client_key(c, s.map(|s| &s.0), limits.hash_keys);
        *per_client.entry(key.clone()).or_default() += 1;
        let age = ns_to_s(now.saturating_sub(c.upgraded_ns));
        let idle_s = ns_to_s(now.saturating_sub(c.last_rx_ns.max(c.last_tx_ns)));
        let idle = idle_s >= limits.idle_after_s;
        let stalled = c.ping_ns != 0 && ns_to_s(now.saturating_sub(c.ping_ns)) >= limits.stall_after_s;
        match age {
            a if a < 300.0 => out.ages.under_5m += 1,
            a if a < 1800.0 => out.ages.from_5m_to_30m += 1,
            a if a < 7200.0 => out.ages.from_30m_to_2h += 1,
            _ => out.ages.over_2h += 1,
        }
        out.idle += idle as u64;
        out.stalled += stalled as u64;
        let (sq, rq) = s.map(|s| (s.1, s.2)).unwrap_or_default();
        out.send_queue_bytes += sq;
        out.recv_queue_bytes += rq;
        out.connections.push(conn_view(*fd, c, s.map(|s| s.0), key, age, idle_s, idle, stalled, sq, rq));
    }
    let mut top: Vec<ClientCount> =
        per_client.iter().map(|(k, n)| ClientCount { key: k.clone(), connections: *n }).collect();
    top.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.key.cmp(&b.key)));
    out.clients = ClientsSnapshot {
        key_source: limits.key_source.clone(),
        distinct: per_client.len() as u64,
        quota: limits.quota,
        at_or_over_quota: per_client.values().filter(|n| **n >= limits.quota).count() as u64,
        top: top.into_iter().take(10).collect(),
    };
    out.connections.sort_by_key(|c| c.fd);
    out
}

#[allow(clippy::too_many_arguments)]
fn conn_view(
    fd: u32,
    c: &ConnState,
    peer: Option<SocketAddr>,
    client_key: String,
    age: f64,
    idle_s: f64,
    idle: bool,
    stalled: bool,
    sq: u64,
    rq: u64,
) -> ConnectionSnapshot {
    let d = |x: &DirCounters| Frames::from(x);
    ConnectionSnapshot {
        fd,
        id: c.id,
        peer: peer.map(|p| p.to_string()),
        client_key,
        age_seconds: age,
        idle_seconds: idle_s,
        idle,
        stalled,
        handshake_latency_ms: c.upgraded_ns.saturating_sub(c.request_ns) as f64 / 1e6,
        ping_rtt_last_ms: (c.rtt_count > 0).then(|| c.rtt_last_ns as f64 / 1e6),
        frames_received: d(&c.rx_count),
        frames_sent: d(&c.tx_count),
        messages_received: c.rx_count.messages,
        messages_sent: c.tx_count.messages,
        payload_bytes_received: c.rx_count.payload_bytes,
        payload_bytes_sent: c.tx_count.payload_bytes,
        send_queue_bytes: sq,
        recv_queue_bytes: rq,
        out_of_sync: c.out_of_sync != 0,
    }
}
