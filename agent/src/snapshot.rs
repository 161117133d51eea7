//! The snapshot: what the agent knows at one instant, served as JSON (`docs/api.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wsguard_common::{
    frame::{slot, DirCounters},
    stats::ProcStats,
};

use crate::probe::maps::{CloseCodes, ProbeHealth};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub agent: AgentInfo,
    pub probe: ProbeInfo,
    /// Sums over the processes listed.
    pub totals: WebSocketStats,
    pub processes: Vec<ProcessSnapshot>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub started_at: String,
    pub interval_seconds: f64,
    /// Build time of this snapshot, in milliseconds.
    pub snapshot_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub attached: bool,
    /// The agent picked up a probe that was already running (counts continued through a restart).
    pub resumed: bool,
    pub pin_path: String,
    pub events_received: u64,
    pub health: Health,
}

/// Probe health counters: what could not be seen is counted, never guessed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub conn_map_full: u64,
    pub proc_map_full: u64,
    pub ring_drops: u64,
    pub walk_budget_exceeded: u64,
    pub read_faults: u64,
    pub close_code_map_full: u64,
    pub conn_map_entries: u64,
    pub conn_map_capacity: u64,
}

impl From<ProbeHealth> for Health {
    fn from(h: ProbeHealth) -> Self {
        Health {
            conn_map_full: h.conn_map_full,
            proc_map_full: h.proc_map_full,
            ring_drops: h.ring_drops,
            walk_budget_exceeded: h.walk_budget_exceeded,
            read_faults: h.read_faults,
            close_code_map_full: h.close_code_map_full,
            conn_map_entries: h.conn_map_entries,
            conn_map_capacity: h.conn_map_capacity,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// TCP connections accepted since the probe attached, and those that were not WebSocket.
    pub tcp_accepted: u64,
    pub not_websocket: u64,
    pub websocket: WebSocketStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct WebSocketStats {
    pub connections_opened: u64,
    pub connections_active: u64,
    pub connections_closed: u64,
    pub handshakes_failed: u64,
    pub abnormal_closes: u64,
    pub out_of_sync: u64,
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
