//! The snapshot: what the agent knows at one instant, served as JSON (`docs/api.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wsguard_common::{
    frame::{slot, DirCounters},
    stats::ProcStats,
};

use crate::model::{
    clients::{AgeBuckets, ClientsSnapshot},
    probe::{CloseCodes, ProbeHealth},
    resources::{HostResources, ProcessResources},
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub agent: AgentInfo,
    pub probe: ProbeInfo,
    /// Sums over the processes listed.
    pub totals: WebSocketStats,
    /// Host totals of Server-Sent Events streams (the second transport).
    pub sse_totals: super::sse::SseStats,
    /// Host resources (CPU, memory, TCP sockets, listen overflows, conntrack, ephemeral ports).
    pub host: HostResources,
    pub processes: Vec<ProcessSnapshot>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentInfo {
    pub version: String,
    /// Kernel release the agent runs on (`uname -r`).
    pub kernel: String,
    pub started_at: String,
    pub interval_seconds: f64,
    /// Build time of this snapshot, in milliseconds (wall clock).
    pub snapshot_ms: f64,
    /// CPU time the snapshot took (its thread's user + system time, kernel work on its behalf
    /// included), in milliseconds: unlike `snapshot_ms`, not stretched by waiting for a CPU.
    pub snapshot_cpu_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeInfo {
    /// Which probe runs: "socket" or "syscall" (see docs/kernel-support.md).
    pub mode: String,
    /// Why that mode runs: the config, what `auto` found on this kernel (or why the socket mode
    /// did not load), or a resumed probe.
    pub mode_reason: String,
    pub attached: bool,
    /// The agent picked up a probe that was already running (counts continued through a restart).
    pub resumed: bool,
    pub pin_path: String,
    pub events_received: u64,
    /// What could not be seen is counted, never guessed.
    pub health: ProbeHealth,
    /// `kernel.bpf_stats_enabled`: without it the kernel does not time programs.
    pub bpf_stats_enabled: bool,
    pub programs: Vec<super::probe::ProgramStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSnapshot {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    pub listening_ports: Vec<u16>,
    /// The process has exited; these are its final numbers.
    pub exited: bool,
    /// Inbound TCP connections that were already open when the probe attached and are still
    /// open. They are not followed (their handshake was never seen) and not in any count below.
    pub preexisting_connections: u64,
    /// Inbound TCP connections the probe did not follow from their first byte, since it
    /// attached (cumulative: they stay counted after they close): those open before the attach
    /// and those accepted while it was attaching, and (syscall mode) `closed_unread`. None of
    /// their traffic is in any count below.
    pub unfollowed_connections: u64,
    /// Syscall mode: accepted connections the process closed before reading a byte of them
    /// (moved to another fd by `dup2`, or to another process by fd passing, where that mode
    /// cannot follow them; or sent nothing). Part of `unfollowed_connections`. 0 in socket mode.
    pub closed_unread: u64,
    /// TCP connections accepted since the probe attached, and those that were not WebSocket.
    pub tcp_accepted: u64,
    pub not_websocket: u64,
    pub websocket: WebSocketStats,
    /// Server-Sent Events streams this process served (socket mode).
    pub sse: super::sse::SseStats,
    /// Its open SSE streams now: idle ones, the quietest, streams per client.
    pub sse_streams: super::sse::SseStreams,
    /// Per second over the last interval (None on the first snapshot of a process).
    pub rates: Option<Rates>,
    /// p50/p95/p99 since the agent first saw the process, from the probe's histograms.
    pub latency: Latencies,
    pub clients: ClientsSnapshot,
    pub connection_ages: AgeBuckets,
    /// No traffic either way for `limits.idle_after`.
    pub connections_idle: u64,
    /// A ping from the process unanswered for `limits.stall_after`.
    pub connections_stalled: u64,
    /// Kernel socket queues of its WebSocket connections (backpressure, slow consumers).
    pub send_queue_bytes: u64,
    pub recv_queue_bytes: u64,
    /// fds vs RLIMIT_NOFILE, memory, CPU, threads, identity from /proc and cgroups.
    pub resources: Option<ProcessResources>,
    /// Namespace, pod and container when the process runs in a Kubernetes pod (`k8s.rs`);
    /// absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<super::resources::Pod>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    pub connections_opened_per_second: f64,
    pub connections_closed_per_second: f64,
    pub frames_received_per_second: f64,
    pub frames_sent_per_second: f64,
    pub messages_received_per_second: f64,
    pub messages_sent_per_second: f64,
    pub payload_bytes_received_per_second: f64,
    pub payload_bytes_sent_per_second: f64,
}

impl Rates {
    /// Rates between two cumulative readings `dt` seconds apart (counter resets give 0).
    pub fn between(prev: &WebSocketStats, cur: &WebSocketStats, dt: f64) -> Rates {
        let r = |a: u64, b: u64| if b >= a && dt > 0.0 { (b - a) as f64 / dt } else { 0.0 };
        let f = |x: &Frames| x.text + x.binary + x.continuation + x.ping + x.pong + x.close;
        Rates {
            connections_opened_per_second: r(prev.connections_opened, cur.connections_opened),
            connections_closed_per_second: r(prev.connections_closed, cur.connections_closed),
            frames_received_per_second: r(f(&prev.frames_received), f(&cur.frames_received)),
            frames_sent_per_second: r(f(&prev.frames_sent), f(&cur.frames_sent)),
            messages_received_per_second: r(prev.messages_received, cur.messages_received),
            messages_sent_per_second: r(prev.messages_sent, cur.messages_sent),
            payload_bytes_received_per_second: r(prev.payload_bytes_received, cur.payload_bytes_received),
            payload_bytes_sent_per_second: r(prev.payload_bytes_sent, cur.payload_bytes_sent),
        }
    }
}

/// Quantiles in milliseconds (None when there is no sample yet), and the probe's histogram they
/// come from (what `/metrics` exports as a Prometheus histogram).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Sum of the measured latencies, nanoseconds (exact, from the probe).
    pub sum_ns: u64,
    /// The probe's log-linear buckets that are not empty, as `[index, count]` (bucket `i` spans
    /// `wsguard_common::hist::bounds(i)` nanoseconds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<[u64; 2]>,
}

impl Quantiles {
    pub fn from_hist(h: &[u64; wsguard_common::hist::BUCKETS], sum_ns: u64) -> Self {
        use wsguard_common::hist::quantile;
        let q = |x| quantile(h, x).map(|ns| ns / 1e6);
        let buckets = h.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| [i as u64, *n]).collect();
        Quantiles { samples: h.iter().sum(), p50_ms: q(0.50), p95_ms: q(0.95), p99_ms: q(0.99), sum_ns, buckets }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latencies {
    /// Upgrade request read → 101 written.
    pub handshake: Quantiles,
    /// Ping sent by the process → pong received.
    pub ping_rtt: Quantiles,
    /// Data message received → the process's next data frame sent.
    pub response: Quantiles,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Frames {
    pub text: u64,
    pub binary: u64,
    pub continuation: u64,
    pub ping: u64,
    pub pong: u64,
    pub close: u64,
}

impl From<&DirCounters> for Frames {
    fn from(d: &DirCounters) -> Self {
        let f = &d.frames;
        Frames {
            text: f[slot::TEXT],
            binary: f[slot::BINARY],
            continuation: f[slot::CONTINUATION],
            ping: f[slot::PING],
            pong: f[slot::PONG],
            close: f[slot::CLOSE],
        }
    }
}

impl Frames {
    fn add(&mut self, o: &Frames) {
        self.text += o.text;
        self.binary += o.binary;
        self.continuation += o.continuation;
        self.ping += o.ping;
        self.pong += o.pong;
        self.close += o.close;
    }
}

/// Cumulative since the agent first saw the process; received/sent from the process's side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebSocketStats {
    pub connections_opened: u64,
    pub connections_active: u64,
    pub connections_closed: u64,
    pub handshakes_failed: u64,
    pub abnormal_closes: u64,
    pub out_of_sync: u64,
    /// Socket mode: connections that moved bytes the probe could not read as a buffer
    /// (io_uring, splice/sendfile, recvmmsg/sendmmsg), any protocol, and those bytes. Their
    /// frames are not in the counts here.
    pub unparsed_connections: u64,
    pub unparsed_bytes: u64,
    pub frames_received: Frames,
    pub frames_sent: Frames,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub payload_bytes_received: u64,
    pub payload_bytes_sent: u64,
    pub close_codes_received: BTreeMap<String, u64>,
    pub close_codes_sent: BTreeMap<String, u64>,
    /// Mean handshake latency (upgrade request read → 101 written), milliseconds.
    pub handshake_latency_avg_ms: Option<f64>,
    /// Mean round trip of pings the process sent (ping written → pong read), milliseconds.
    pub ping_rtt_avg_ms: Option<f64>,
    /// Mean time from a data message read to the process's next data frame written, ms.
    pub response_latency_avg_ms: Option<f64>,
}

fn avg_ms(sum_ns: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum_ns as f64 / count as f64 / 1e6)
}

fn codes(m: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

impl WebSocketStats {
    pub fn from_probe(p: &ProcStats, cc: Option<&CloseCodes>) -> Self {
        let empty = CloseCodes::default();
        let cc = cc.unwrap_or(&empty);
        WebSocketStats {
            connections_opened: p.opened,
            connections_active: p.opened.saturating_sub(p.closed),
            connections_closed: p.closed,
            handshakes_failed: p.handshakes_failed,
            abnormal_closes: p.abnormal_closes,
            out_of_sync: p.out_of_sync,
            unparsed_connections: p.unparsed_conns,
            unparsed_bytes: p.unparsed_bytes,
            frames_received: (&p.rx).into(),
            frames_sent: (&p.tx).into(),
            messages_received: p.rx.messages,
            messages_sent: p.tx.messages,
            payload_bytes_received: p.rx.payload_bytes,
            payload_bytes_sent: p.tx.payload_bytes,
            close_codes_received: codes(&cc.received),
            close_codes_sent: codes(&cc.sent),
            handshake_latency_avg_ms: avg_ms(p.handshake_ns_sum, p.handshake_count),
            ping_rtt_avg_ms: avg_ms(p.ping_rtt_ns_sum, p.ping_rtt_count),
            response_latency_avg_ms: avg_ms(p.response_ns_sum, p.response_count),
        }
    }

    /// Add another process's numbers (for host totals; latency is not summed).
    pub fn add(&mut self, o: &WebSocketStats) {
        self.connections_opened += o.connections_opened;
        self.connections_active += o.connections_active;
        self.connections_closed += o.connections_closed;
        self.handshakes_failed += o.handshakes_failed;
        self.abnormal_closes += o.abnormal_closes;
        self.out_of_sync += o.out_of_sync;
        self.unparsed_connections += o.unparsed_connections;
        self.unparsed_bytes += o.unparsed_bytes;
        self.frames_received.add(&o.frames_received);
        self.frames_sent.add(&o.frames_sent);
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.payload_bytes_received += o.payload_bytes_received;
        self.payload_bytes_sent += o.payload_bytes_sent;
        for (k, v) in &o.close_codes_received {
            *self.close_codes_received.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.close_codes_sent {
            *self.close_codes_sent.entry(k.clone()).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History rows and exports written by older agents lack newer fields: they must still load.
    #[test]
    fn older_snapshots_still_deserialize() {
        let old = r#"{"timestamp":"2026-01-01T00:00:00Z","probe":{"attached":true},
            "processes":[{"pid":7,"comm":"node","websocket":{"connections_opened":3,"connections_closed":1}}]}"#;
        let s: Snapshot = serde_json::from_str(old).unwrap();
        assert_eq!(s.processes[0].websocket.connections_opened, 3);
        assert!(s.probe.programs.is_empty() && !s.probe.bpf_stats_enabled);
        // And a current snapshot round-trips.
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.processes[0].comm, "node");
    }
}
