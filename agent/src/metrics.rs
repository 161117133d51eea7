//! Prometheus exposition of a [`Snapshot`] (`GET /metrics`); every metric is listed in
//! `docs/metrics.md`.
//!
//! # Why `prometheus-client`
//! It is the Prometheus project's own Rust client (`prometheus/client_rust`), so label-value
//! escaping, number formatting and the `# HELP` / `# TYPE` layout follow the project that
//! defines the format. It has no global registry and no macros, and its [`Collector`] API fits
//! an agent that already holds all its numbers in a snapshot: each scrape encodes the latest
//! snapshot directly instead of mirroring it into long-lived atomics.
//!
//! # Format
//! The output is the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]): the format `promtool
//! check metrics` lints and every scraper reads. `prometheus-client` natively writes OpenMetrics,
//! whose counter *families* are named without `_total` (`# TYPE x counter`,
//! sample `x_total`); read as 0.0.4 text that leaves every counter sample without its type and
//! help. So counters are described under their full `_total` name and their samples are written
//! with the plain sample encoder ([`prometheus_client::encoding::MetricEncoder::encode_gauge`],
//! which writes `name{labels} value`), units are part of the names (no `# UNIT`), and no
//! `# EOF` is written. The unit tests pin the exact lines and run the real `promtool` on them.
//!
//! # Identity and cardinality
//! Per-process series carry `comm` and `listen_port` (and `pid` only with
//! `[metrics] pid_label = true`), so a restarted server keeps its series. Processes that share
//! a label set (e.g. several `node` workers) are summed into one series; averages are weighted
//! by connections opened. `[metrics] max_series` caps the whole exposition: label sets with the
//! most active connections are kept, whole label sets beyond the cap are dropped and counted in
//! `wsguard_metrics_series_dropped`. Close codes are exported only when seen, at most
//! [`MAX_CLOSE_CODES`] per label set and direction, the rest folded into `code="other"`.
//!
//! # Adding a metric
//! Declare a [`Spec`] constant, list it in [`FAMILIES`] (output order), push samples for it in
//! [`fixed_series`] (agent, probe, host: no process labels) or [`process_series`] (per label
//! set; aggregate new per-process fields in [`Group::add`]), and document it in
//! `docs/metrics.md` (a test checks that every name in [`FAMILIES`] is documented there).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    fmt,
};

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode_registry, DescriptorEncoder, MetricEncoder},
    metrics::MetricType, registry::Registry,
};
use serde::{Deserialize, Serialize};

use crate::snapshot::{Frames, ProcessSnapshot, Snapshot, WebSocketStats};

/// Content type of [`render`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// At most this many close-code series per label set and direction; the least frequent codes
/// beyond it are summed into `code="other"` (which counts as one of them).
pub const MAX_CLOSE_CODES: usize = 64;

/// `[metrics]` in the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Add a `pid` label to per-process series. Off by default: a pid changes with every restart
    /// of the watched process, so each restart would start new series (and leave old ones).
    pub pid_label: bool,
    /// Most series (sample lines) one scrape returns. Per-process label sets beyond it are
    /// dropped, fewest active connections first, and counted in
    /// `wsguard_metrics_series_dropped`. Agent, probe and host series are always exported.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { pid_label: false, max_series: 10_000 }
    }
}

/// The snapshot in the Prometheus text format 0.0.4 (see the module docs for the rules).
pub fn render(snapshot: &Snapshot, cfg: &MetricsConfig) -> String {
    let mut out = Families::new();
    fixed_series(snapshot, &mut out);

    // Per-process series, grouped by their label set.
    let mut groups: BTreeMap<Identity, Group> = BTreeMap::new();
    for p in &snapshot.processes {
        groups.entry(Identity::of(p, cfg)).or_default().add(p);
    }
    let mut sets: Vec<(Identity, Group, Vec<Pending>)> = groups
        .into_iter()
        .map(|(id, g)| {
            let mut series = Vec::new();
            process_series(&g, &mut series);
            (id, g, series)
        })
        .collect();

    // The cap: keep label sets in order of active connections while they fit. The two
    // `wsguard_metrics_series*` gauges are pushed last and counted here.
    let fixed = out.series() + 2;
    let mut budget = cfg.max_series.saturating_sub(fixed);
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by_key(|&i| {
        let ws = &sets[i].1.ws;
        (Reverse(ws.connections_active), Reverse(ws.connections_opened), i)
    });
    let mut keep = vec![false; sets.len()];
    let mut dropped = 0usize;
    for i in order {
        let n = sets[i].2.len();
        if dropped == 0 && n <= budget {
            keep[i] = true;
            budget -= n;
        } else {
            dropped += n;
        }
    }
    let mut kept = 0usize;
    for (i, (id, _, series)) in sets.iter_mut().enumerate() {
        if !keep[i] {
            continue;
        }
        kept += series.len();
        for (spec, extra, value) in series.drain(..) {
            let mut labels = id.labels();
            labels.extend(extra);
            out.push(spec, labels, value);
        }
    }
    out.push(&METRICS_SERIES, Vec::new(), Value::Int((fixed + kept) as u64));
    out.push(&METRICS_SERIES_DROPPED, Vec::new(), Value::Int(dropped as u64));

    let mut registry = Registry::default();
    registry.register_collector(Box::new(out.into_exposition()));
    let mut text = String::new();
    encode_registry(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

// ---------------------------------------------------------------------------------------------
// Metric descriptors.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family: full name (with unit and `_total`), type and help text.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Spec {
    Spec { name, kind: Kind::Counter, help }
}
const fn gauge(name: &'static str, help: &'static str) -> Spec {
    Spec { name, kind: Kind::Gauge, help }
}

// Per process (labels comm, listen_port[, pid]).
const WS_ACTIVE: Spec = gauge(
    "wsguard_websocket_connections_active",
    "WebSocket connections open now (handshake completed, not yet closed).",
);
const WS_OPENED: Spec = counter(
    "wsguard_websocket_connections_opened_total",
    "WebSocket connections opened (101 Switching Protocols written) since the agent first saw the process.",
);
const WS_CLOSED: Spec = counter(
    "wsguard_websocket_connections_closed_total",
    "WebSocket connections ended (the process closed the socket or exited), cleanly or not.",
);
const WS_HANDSHAKES_FAILED: Spec = counter(
    "wsguard_websocket_handshakes_failed_total",
    "WebSocket upgrade requests answered with anything but 101, or never answered.",
);
const WS_ABNORMAL: Spec = counter(
    "wsguard_websocket_abnormal_closes_total",
    "WebSocket connections that ended without the process receiving a close frame.",
);
const WS_OUT_OF_SYNC: Spec = counter(
    "wsguard_websocket_out_of_sync_total",
    "WebSocket connections whose framing could not be followed (invalid header); their frames are no longer counted.",
);
const WS_FRAMES: Spec = counter(
    "wsguard_websocket_frames_total",
    "WebSocket frames by direction (from the process's side) and opcode.",
);
const WS_MESSAGES: Spec = counter(
    "wsguard_websocket_messages_total",
    "Complete WebSocket data messages (text or binary, after continuations) by direction.",
);
const WS_PAYLOAD: Spec = counter(
    "wsguard_websocket_payload_bytes_total",
    "WebSocket payload bytes declared by frame headers (all opcodes, compressed if permessage-deflate) by direction.",
);
const WS_CLOSE_CODES: Spec = counter(
    "wsguard_websocket_close_codes_total",
    "Close frames by direction and status code; code=\"other\" folds codes beyond the per-label-set limit.",
);
const WS_HANDSHAKE_AVG: Spec = gauge(
    "wsguard_websocket_handshake_latency_seconds_avg",
    "Mean handshake latency (upgrade request read to 101 written) since the agent first saw the process; not a recent average.",
);
const WS_PING_RTT_AVG: Spec = gauge(
    "wsguard_websocket_ping_rtt_seconds_avg",
    "Mean round trip of pings the process sent (ping written to pong read) since the agent first saw the process.",
);
const WS_RESPONSE_AVG: Spec = gauge(
    "wsguard_websocket_response_latency_seconds_avg",
    "Mean time from a data message read to the process's next data frame written, since the agent first saw the process.",
);
const WS_PREEXISTING: Spec = gauge(
    "wsguard_websocket_preexisting_connections",
    "Inbound TCP connections open before the probe attached and still open; not followed and in no other count.",
);
const TCP_ACCEPTED: Spec = counter(
    "wsguard_tcp_connections_accepted_total",
    "TCP connections the process accepted since the probe attached.",
);
const TCP_NOT_WEBSOCKET: Spec = counter(
    "wsguard_tcp_connections_not_websocket_total",
    "Accepted TCP connections whose first bytes were not a WebSocket upgrade (dropped from tracking at once).",
);

// Host totals (no process labels).
const HOST_ACTIVE: Spec = gauge(
    "wsguard_host_websocket_connections_active",
    "WebSocket connections open now in all reported processes, including any dropped by max_series.",
);
const HOST_PROCESSES: Spec = gauge(
    "wsguard_host_websocket_processes",
    "Processes in the snapshot (with WebSocket activity or pre-existing connections, exited ones for a while).",
);

// Probe health.
const PROBE_ATTACHED: Spec = gauge("wsguard_probe_attached", "1 if the eBPF probe is attached, else 0.");
const PROBE_RESUMED: Spec = gauge(
    "wsguard_probe_resumed",
    "1 if the agent picked up an already running (pinned) probe, so counts continued through an agent restart.",
);
const PROBE_RING_DROPS: Spec = counter(
    "wsguard_probe_ring_drops_total",
    "Lifecycle events lost because the ring buffer was full.",
);
const PROBE_CONN_MAP_FULL: Spec = counter(
    "wsguard_probe_conn_map_full_total",
    "Connections not followed because the connection map was full.",
);
const PROBE_PROC_MAP_FULL: Spec = counter(
    "wsguard_probe_proc_map_full_total",
    "Processes not counted because the process map was full.",
);
const PROBE_CLOSE_CODE_MAP_FULL: Spec = counter(
    "wsguard_probe_close_code_map_full_total",
    "Close codes not counted because the close-code map was full.",
);
const PROBE_WALK_BUDGET: Spec = counter(
    "wsguard_probe_walk_budget_exceeded_total",
    "Syscall buffers whose frame walk hit the per-call budget; the connection is marked out of sync.",
);
const PROBE_READ_FAULTS: Spec = counter(
    "wsguard_probe_read_faults_total",
    "Failed reads of user memory by the probe; the connection is marked out of sync.",
);
const PROBE_CONN_MAP_ENTRIES: Spec = gauge(
    "wsguard_probe_conn_map_entries",
    "Entries in the probe's connection map now (all phases).",
);
const PROBE_CONN_MAP_CAPACITY: Spec = gauge(
    "wsguard_probe_conn_map_capacity",
    "Capacity of the probe's connection map ([probe] max_connections).",
);
const PROBE_EVENTS: Spec = counter(
    "wsguard_probe_events_total",
    "Lifecycle events the agent received from the probe's ring buffer since it started.",
);

// Agent.
const SNAPSHOT_DURATION: Spec = gauge(
    "wsguard_snapshot_duration_seconds",
    "Time taken to build the latest snapshot.",
);
const SNAPSHOT_TIMESTAMP: Spec = gauge(
    "wsguard_snapshot_timestamp_seconds",
    "Unix time at which the latest snapshot was built.",
);
const SNAPSHOT_INTERVAL: Spec = gauge(
    "wsguard_snapshot_interval_seconds",
    "Configured interval between snapshots ([agent] interval).",
);
const AGENT_START_TIME: Spec = gauge(
    "wsguard_agent_start_time_seconds",
    "Unix time at which the agent started.",
);
const BUILD_INFO: Spec = gauge("wsguard_build_info", "Always 1; the version label names the agent's version.");
const METRICS_SERIES: Spec = gauge(
    "wsguard_metrics_series",
    "Series in this exposition, these two metrics included; compare with [metrics] max_series.",
);
const METRICS_SERIES_DROPPED: Spec = gauge(
    "wsguard_metrics_series_dropped",
    "Per-process series left out of this exposition because of [metrics] max_series.",
);

/// Every family, in output order.
pub(crate) const FAMILIES: &[&Spec] = &[
    &WS_ACTIVE,
    &WS_OPENED,
    &WS_CLOSED,
    &WS_HANDSHAKES_FAILED,
    &WS_ABNORMAL,
    &WS_OUT_OF_SYNC,
    &WS_FRAMES,
    &WS_MESSAGES,
    &WS_PAYLOAD,
    &WS_CLOSE_CODES,
    &WS_HANDSHAKE_AVG,
    &WS_PING_RTT_AVG,
    &WS_RESPONSE_AVG,
    &WS_PREEXISTING,
    &TCP_ACCEPTED,
    &TCP_NOT_WEBSOCKET,
    &HOST_ACTIVE,
    &HOST_PROCESSES,
    &PROBE_ATTACHED,
    &PROBE_RESUMED,
    &PROBE_RING_DROPS,
    &PROBE_CONN_MAP_FULL,
    &PROBE_PROC_MAP_FULL,
    &PROBE_CLOSE_CODE_MAP_FULL,
    &PROBE_WALK_BUDGET,
    &PROBE_READ_FAULTS,
    &PROBE_CONN_MAP_ENTRIES,
    &PROBE_CONN_MAP_CAPACITY,
    &PROBE_EVENTS,
    &SNAPSHOT_DURATION,
    &SNAPSHOT_TIMESTAMP,
    &SNAPSHOT_INTERVAL,
    &AGENT_START_TIME,
    &BUILD_INFO,
    &METRICS_SERIES,
    &METRICS_SERIES_DROPPED,
];

// ---------------------------------------------------------------------------------------------
// Series.

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

/// A per-process series before its identity labels are added: family, own labels, value.
type Pending = (&'static Spec, Labels, Value);

/// Series without process labels: agent, probe and host.
fn fixed_series(s: &Snapshot, out: &mut Families) {
    let none = Vec::new;
    out.push(&HOST_ACTIVE, none(), Value::Int(s.totals.connections_active));
    out.push(&HOST_PROCESSES, none(), Value::Int(s.processes.len() as u64));

    let (p, h) = (&s.probe, &s.probe.health);
    out.push(&PROBE_ATTACHED, none(), flag(p.attached));
    out.push(&PROBE_RESUMED, none(), flag(p.resumed));
    out.push(&PROBE_RING_DROPS, none(), Value::Int(h.ring_drops));
    out.push(&PROBE_CONN_MAP_FULL, none(), Value::Int(h.conn_map_full));
    out.push(&PROBE_PROC_MAP_FULL, none(), Value::Int(h.proc_map_full));
    out.push(&PROBE_CLOSE_CODE_MAP_FULL, none(), Value::Int(h.close_code_map_full));
    out.push(&PROBE_WALK_BUDGET, none(), Value::Int(h.walk_budget_exceeded));
    out.push(&PROBE_READ_FAULTS, none(), Value::Int(h.read_faults));
    out.push(&PROBE_CONN_MAP_ENTRIES, none(), Value::Int(h.conn_map_entries));
    out.push(&PROBE_CONN_MAP_CAPACITY, none(), Value::Int(h.conn_map_capacity));
    out.push(&PROBE_EVENTS, none(), Value::Int(p.events_received));

    let a = &s.agent;
    out.push(&SNAPSHOT_DURATION, none(), Value::Float(a.snapshot_ms / 1e3));
    if let Some(t) = unix_seconds(&s.timestamp) {
        out.push(&SNAPSHOT_TIMESTAMP, none(), Value::Float(t));
    }
    out.push(&SNAPSHOT_INTERVAL, none(), Value::Float(a.interval_seconds));
    if let Some(t) = unix_seconds(&a.started_at) {
        out.push(&AGENT_START_TIME, none(), Value::Float(t));
    }
    let version = if a.version.is_empty() { env!("CARGO_PKG_VERSION") } else { a.version.as_str() };
    out.push(&BUILD_INFO, vec![("version", version.to_owned())], Value::Int(1));
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// The label set of a process's series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Identity {
    comm: String,
    /// Listening TCP ports, ascending, comma-separated; empty if none (e.g. once exited).
    listen_port: String,
    pid: Option<u32>,
}

impl Identity {
    fn of(p: &ProcessSnapshot, cfg: &MetricsConfig) -> Self {
        let mut ports = p.listening_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let listen_port = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        Identity { comm: p.comm.clone(), listen_port, pid: cfg.pid_label.then_some(p.pid) }
    }

    fn labels(&self) -> Labels {
        let mut l = vec![("comm", self.comm.clone()), ("listen_port", self.listen_port.clone())];
        if let Some(pid) = self.pid {
            l.push(("pid", pid.to_string()));
        }
        l
    }
}

/// Weighted mean accumulator.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    fn add(&mut self, v: Option<f64>, weight: u64) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            let w = weight.max(1) as f64;
            self.sum += v * w;
            self.weight += w;
        }
    }
    fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

/// The processes that share one label set, summed.
#[derive(Debug, Default)]
struct Group {
    ws: WebSocketStats,
    preexisting: u64,
    tcp_accepted: u64,
    not_websocket: u64,
    /// Means in milliseconds, weighted by connections opened.
    handshake_ms: Mean,
    ping_rtt_ms: Mean,
    response_ms: Mean,
}

impl Group {
    fn add(&mut self, p: &ProcessSnapshot) {
        let ws = &p.websocket;
        self.ws.add(ws);
        self.preexisting += p.preexisting_connections;
        self.tcp_accepted += p.tcp_accepted;
        self.not_websocket += p.not_websocket;
        let w = ws.connections_opened;
        self.handshake_ms.add(ws.handshake_latency_avg_ms, w);
        self.ping_rtt_ms.add(ws.ping_rtt_avg_ms, w);
        self.response_ms.add(ws.response_latency_avg_ms, w);
    }
}

/// The series of one label set, without its identity labels.
fn process_series(g: &Group, out: &mut Vec<Pending>) {
    let ws = &g.ws;
    let mut push = |spec: &'static Spec, labels: Labels, value: Value| out.push((spec, labels, value));
    push(&WS_ACTIVE, vec![], Value::Int(ws.connections_active));
    push(&WS_OPENED, vec![], Value::Int(ws.connections_opened));
    push(&WS_CLOSED, vec![], Value::Int(ws.connections_closed));
    push(&WS_HANDSHAKES_FAILED, vec![], Value::Int(ws.handshakes_failed));
    push(&WS_ABNORMAL, vec![], Value::Int(ws.abnormal_closes));
    push(&WS_OUT_OF_SYNC, vec![], Value::Int(ws.out_of_sync));
    for (dir, frames) in [("received", &ws.frames_received), ("sent", &ws.frames_sent)] {
        for (opcode, n) in by_opcode(frames) {
            push(&WS_FRAMES, vec![("direction", dir.into()), ("opcode", opcode.into())], Value::Int(n));
        }
    }
    for (dir, n) in [("received", ws.messages_received), ("sent", ws.messages_sent)] {
        push(&WS_MESSAGES, vec![("direction", dir.into())], Value::Int(n));
    }
    for (dir, n) in [("received", ws.payload_bytes_received), ("sent", ws.payload_bytes_sent)] {
        push(&WS_PAYLOAD, vec![("direction", dir.into())], Value::Int(n));
    }
    for (dir, codes) in [("received", &ws.close_codes_received), ("sent", &ws.close_codes_sent)] {
        for (code, n) in fold_close_codes(codes, MAX_CLOSE_CODES) {
            push(&WS_CLOSE_CODES, vec![("direction", dir.into()), ("code", code)], Value::Int(n));
        }
    }
    for (spec, mean) in [
        (&WS_HANDSHAKE_AVG, g.handshake_ms),
        (&WS_PING_RTT_AVG, g.ping_rtt_ms),
        (&WS_RESPONSE_AVG, g.response_ms),
    ] {
        if let Some(ms) = mean.get() {
            push(spec, vec![], Value::Float(ms / 1e3));
        }
    }
    push(&WS_PREEXISTING, vec![], Value::Int(g.preexisting));
    push(&TCP_ACCEPTED, vec![], Value::Int(g.tcp_accepted));
    push(&TCP_NOT_WEBSOCKET, vec![], Value::Int(g.not_websocket));
}

fn by_opcode(f: &Frames) -> [(&'static str, u64); 6] {
    [
        ("text", f.text),
        ("binary", f.binary),
        ("continuation", f.continuation),
        ("ping", f.ping),
        ("pong", f.pong),
        ("close", f.close),
    ]
}

/// Codes with a non-zero count, at most `max` series: the most frequent `max - 1` codes and
/// `"other"` for the rest when there are more than `max`. Sorted numerically, `"other"` last.
fn fold_close_codes(codes: &BTreeMap<String, u64>, max: usize) -> Vec<(String, u64)> {
    let numeric = |c: &str| c.parse::<u64>().unwrap_or(u64::MAX);
    let mut seen: Vec<(&String, u64)> = codes.iter().filter(|(_, n)| **n > 0).map(|(c, n)| (c, *n)).collect();
    let mut other = None;
    if seen.len() > max {
        seen.sort_by_key(|(c, n)| (Reverse(*n), numeric(c), *c));
        let keep = max.saturating_sub(1);
        other = Some(seen[keep..].iter().map(|(_, n)| n).sum::<u64>());
        seen.truncate(keep);
    }
    seen.sort_by_key(|(c, _)| (numeric(c), *c));
    let mut v: Vec<(String, u64)> = seen.into_iter().map(|(c, n)| (c.clone(), n)).collect();
    v.extend(other.map(|n| ("other".to_owned(), n)));
    v
}

// ---------------------------------------------------------------------------------------------
// Encoding.

#[derive(Debug)]
struct Family {
    spec: &'static Spec,
    samples: Vec<(Labels, Value)>,
}

/// Samples collected per family, in [`FAMILIES`] order.
struct Families {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
}

impl Families {
    fn new() -> Self {
        let families: Vec<Family> = FAMILIES.iter().map(|&spec| Family { spec, samples: Vec::new() }).collect();
        let index = families.iter().enumerate().map(|(i, f)| (f.spec.name, i)).collect();
        Families { families, index }
    }

    fn push(&mut self, spec: &'static Spec, labels: Labels, value: Value) {
        if matches!(value, Value::Float(v) if !v.is_finite()) {
            return;
        }
        let i = *self.index.get(spec.name).expect("every Spec is listed in FAMILIES");
        self.families[i].samples.push((labels, value));
    }

    fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    fn into_exposition(self) -> Exposition {
        Exposition(self.families.into_iter().filter(|f| !f.samples.is_empty()).collect())
    }
}

/// The collected families as a `prometheus-client` collector (see the module docs on the format).
#[derive(Debug)]
struct Exposition(Vec<Family>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for f in &self.0 {
            let kind = match f.spec.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(f.spec.name, f.spec.help, None, kind)?;
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(&mut metric, *value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, *value)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `name{labels} value`: the sample line of a gauge, and of a counter in the 0.0.4 format.
fn encode_value(enc: &mut MetricEncoder, value: Value) -> fmt::Result {
    match value {
        Value::Int(v) => enc.encode_gauge(&v),
        Value::Float(v) => enc.encode_gauge(&v),
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // snapshots are built as Default + assignments
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;
    use crate::snapshot::{Frames, Health};

    fn proc(pid: u32, comm: &str, ports: &[u16], active: u64) -> ProcessSnapshot {
        let mut p = ProcessSnapshot::default();
        p.pid = pid;
        p.comm = comm.into();
        p.listening_ports = ports.to_vec();
        p.websocket.connections_opened = active + 2;
        p.websocket.connections_closed = 2;
        p.websocket.connections_active = active;
        p
    }

    /// A snapshot exercising every metric.
    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        s.timestamp = "2024-05-01T12:00:00.500Z".into();
        s.agent.version = "0.1.0".into();
        s.agent.started_at = "2024-05-01T11:00:00Z".into();
        s.agent.interval_seconds = 5.0;
        s.agent.snapshot_ms = 12.5;
        s.probe.attached = true;
        s.probe.events_received = 42;
        s.probe.health = Health {
            conn_map_full: 1,
            proc_map_full: 2,
            ring_drops: 3,
            walk_budget_exceeded: 4,
            read_faults: 5,
            close_code_map_full: 6,
            conn_map_entries: 7,
            conn_map_capacity: 65536,
        };
        let mut p = proc(1234, "node", &[8080], 3);
        p.preexisting_connections = 1;
        p.tcp_accepted = 9;
        p.not_websocket = 4;
        let ws = &mut p.websocket;
        ws.handshakes_failed = 1;
        ws.abnormal_closes = 1;
        ws.out_of_sync = 0;
        ws.frames_received = Frames { text: 10, binary: 2, continuation: 1, ping: 0, pong: 4, close: 1 };
        ws.frames_sent = Frames { text: 11, binary: 0, continuation: 0, ping: 4, pong: 0, close: 2 };
        ws.messages_received = 12;
        ws.messages_sent = 11;
        ws.payload_bytes_received = 1000;
        ws.payload_bytes_sent = 2000;
        ws.close_codes_received.insert("1000".into(), 1);
        ws.close_codes_sent.insert("1001".into(), 1);
        ws.close_codes_sent.insert("4000".into(), 1);
        ws.handshake_latency_avg_ms = Some(1.5);
        ws.ping_rtt_avg_ms = Some(0.25);
        ws.response_latency_avg_ms = Some(2.0);
        s.totals = p.websocket.clone();
        s.processes.push(p);
        s
    }

    fn lines(text: &str) -> BTreeSet<&str> {
        text.lines().collect()
    }

    fn assert_has(text: &str, expected: &[&str]) {
        let got = lines(text);
        for l in expected {
            assert!(got.contains(l), "missing line {l:?} in:\n{text}");
        }
    }

    #[test]
    fn renders_exact_lines() {
        let text = render(&sample(), &MetricsConfig::default());
        let id = r#"comm="node",listen_port="8080""#;
        assert_has(
            &text,
            &[
                "# HELP wsguard_websocket_connections_active WebSocket connections open now (handshake completed, not yet closed).",
                "# TYPE wsguard_websocket_connections_active gauge",
                &format!("wsguard_websocket_connections_active{{{id}}} 3"),
                "# TYPE wsguard_websocket_connections_opened_total counter",
                &format!("wsguard_websocket_connections_opened_total{{{id}}} 5"),
                &format!("wsguard_websocket_connections_closed_total{{{id}}} 2"),
                &format!("wsguard_websocket_handshakes_failed_total{{{id}}} 1"),
                &format!("wsguard_websocket_abnormal_closes_total{{{id}}} 1"),
                &format!("wsguard_websocket_out_of_sync_total{{{id}}} 0"),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="received",opcode="text"}} 10"#),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="received",opcode="continuation"}} 1"#),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="sent",opcode="ping"}} 4"#),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="sent",opcode="binary"}} 0"#),
                &format!(r#"wsguard_websocket_messages_total{{{id},direction="received"}} 12"#),
                &format!(r#"wsguard_websocket_payload_bytes_total{{{id},direction="sent"}} 2000"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="received",code="1000"}} 1"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="sent",code="4000"}} 1"#),
                &format!("wsguard_websocket_handshake_latency_seconds_avg{{{id}}} 0.0015"),
                &format!("wsguard_websocket_ping_rtt_seconds_avg{{{id}}} 0.00025"),
                &format!("wsguard_websocket_response_latency_seconds_avg{{{id}}} 0.002"),
                &format!("wsguard_websocket_preexisting_connections{{{id}}} 1"),
                &format!("wsguard_tcp_connections_accepted_total{{{id}}} 9"),
                &format!("wsguard_tcp_connections_not_websocket_total{{{id}}} 4"),
                "wsguard_host_websocket_connections_active 3",
                "wsguard_host_websocket_processes 1",
                "wsguard_probe_attached 1",
                "wsguard_probe_resumed 0",
                "wsguard_probe_ring_drops_total 3",
                "wsguard_probe_conn_map_full_total 1",
                "wsguard_probe_proc_map_full_total 2",
                "wsguard_probe_close_code_map_full_total 6",
                "wsguard_probe_walk_budget_exceeded_total 4",
                "wsguard_probe_read_faults_total 5",
                "wsguard_probe_conn_map_entries 7",
                "wsguard_probe_conn_map_capacity 65536",
                "wsguard_probe_events_total 42",
                "wsguard_snapshot_duration_seconds 0.0125",
                "wsguard_snapshot_timestamp_seconds 1714564800.5",
                "wsguard_snapshot_interval_seconds 5.0",
                "wsguard_agent_start_time_seconds 1714561200.0",
                r#"wsguard_build_info{version="0.1.0"} 1"#,
                "wsguard_metrics_series_dropped 0",
            ],
        );
        // 12 frame series: every opcode in both directions, zeros included.
        assert_eq!(text.lines().filter(|l| l.starts_with("wsguard_websocket_frames_total{")).count(), 12);
        // No pid label by default; no received close code that did not occur.
        assert!(!text.contains("pid="), "{text}");
        assert!(!text.contains(r#"direction="received",code="1001""#), "{text}");
        check_exposition(&text);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(text.contains(&format!("wsguard_metrics_series {series}\n")), "{text}");
    }

    #[test]
    fn empty_snapshot_has_self_metrics_only() {
        let text = render(&Snapshot::default(), &MetricsConfig::default());
        check_exposition(&text);
        assert_has(&text, &["wsguard_probe_attached 0", "wsguard_host_websocket_connections_active 0"]);
        assert!(!text.contains("wsguard_websocket_"), "{text}");
        assert!(!text.contains("wsguard_snapshot_timestamp_seconds"), "no timestamp, no series: {text}");
        assert!(text.contains(&format!(r#"wsguard_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))));
    }

    #[test]
    fn processes_sharing_a_label_set_are_summed() {
        let mut s = Snapshot::default();
        let mut a = proc(100, "node", &[8080], 3);
        a.websocket.frames_received.text = 5;
        a.websocket.close_codes_received.insert("1000".into(), 2);
        a.websocket.handshake_latency_avg_ms = Some(1.0);
        let mut b = proc(200, "node", &[8080], 4);
        b.websocket.frames_received.text = 7;
        b.websocket.close_codes_received.insert("1000".into(), 3);
        b.websocket.close_codes_received.insert("1006".into(), 1);
        b.websocket.handshake_latency_avg_ms = Some(4.0);
        let c = proc(300, "node", &[9090], 1);
        s.processes = vec![a, b, c];

        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        let id = r#"comm="node",listen_port="8080""#;
        assert_has(
            &text,
            &[
                &format!("wsguard_websocket_connections_active{{{id}}} 7"),
                &format!("wsguard_websocket_connections_opened_total{{{id}}} 11"),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="received",opcode="text"}} 12"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="received",code="1000"}} 5"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="received",code="1006"}} 1"#),
                r#"wsguard_websocket_connections_active{comm="node",listen_port="9090"} 1"#,
            ],
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("wsguard_websocket_connections_active{")).count(), 2);
        // Weighted by connections opened: (1.0 ms * 5 + 4.0 ms * 6) / 11.
        let avg = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wsguard_websocket_handshake_latency_seconds_avg{{{id}}} ")))
            .expect("handshake average");
        assert!((avg.parse::<f64>().unwrap() - 29.0 / 11.0 / 1e3).abs() < 1e-12, "{avg}");

        // With pid labels every process is its own series.
        let text = render(&s, &MetricsConfig { pid_label: true, ..Default::default() });
        check_exposition(&text);
        assert_has(
            &text,
            &[
                r#"wsguard_websocket_connections_active{comm="node",listen_port="8080",pid="100"} 3"#,
                r#"wsguard_websocket_connections_active{comm="node",listen_port="8080",pid="200"} 4"#,
                r#"wsguard_websocket_connections_active{comm="node",listen_port="9090",pid="300"} 1"#,
            ],
        );
    }

    #[test]
    fn listen_port_label_is_sorted_and_deduplicated() {
        let mut s = Snapshot::default();
        s.processes = vec![proc(1, "srv", &[9229, 8080, 8080], 1), proc(2, "gone", &[], 0)];
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert_has(
            &text,
            &[
                r#"wsguard_websocket_connections_active{comm="srv",listen_port="8080,9229"} 1"#,
                r#"wsguard_websocket_connections_active{comm="gone",listen_port=""} 0"#,
            ],
        );
    }

    #[test]
    fn max_series_keeps_the_busiest_label_sets() {
        let mut s = Snapshot::default();
        for i in 0..50u32 {
            let p = proc(i + 1, &format!("w{i:02}"), &[8000 + i as u16], u64::from(i));
            s.totals.add(&p.websocket);
            s.processes.push(p);
        }
        let unlimited = render(&s, &MetricsConfig::default());
        check_exposition(&unlimited);
        let per_set = unlimited.lines().filter(|l| l.contains(r#"comm="w07""#)).count();
        let total = unlimited.lines().filter(|l| !l.starts_with('#')).count();
        let fixed = total - 50 * per_set;
        assert!(unlimited.contains("wsguard_metrics_series_dropped 0\n"));
        assert!(unlimited.contains(&format!("wsguard_metrics_series {total}\n")));

        // Room for 10 label sets and a bit.
        let cap = fixed + 10 * per_set + per_set / 2;
        let text = render(&s, &MetricsConfig { max_series: cap, ..Default::default() });
        check_exposition(&text);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series <= cap, "{series} > {cap}");
        assert_eq!(series, fixed + 10 * per_set);
        assert!(text.contains(&format!("wsguard_metrics_series_dropped {}\n", 40 * per_set)), "{text}");
        assert!(text.contains(&format!("wsguard_metrics_series {series}\n")), "{text}");
        let kept: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(r#"wsguard_websocket_connections_active{comm=""#))
            .map(|l| l[..3].to_owned())
            .collect();
        let expected: BTreeSet<String> = (40..50).map(|i| format!("w{i}")).collect();
        assert_eq!(kept, expected, "the 10 with most active connections are kept");
        // Host totals still count everything.
        assert_has(&text, &["wsguard_host_websocket_connections_active 1225", "wsguard_host_websocket_processes 50"]);

        // A cap below the fixed series keeps those and drops every process series.
        let text = render(&s, &MetricsConfig { max_series: 0, ..Default::default() });
        check_exposition(&text);
        assert!(!text.contains("wsguard_websocket_"), "{text}");
        assert!(text.contains(&format!("wsguard_metrics_series_dropped {}\n", 50 * per_set)), "{text}");
    }

    #[test]
    fn close_codes_are_capped_per_label_set_and_direction() {
        let mut codes = BTreeMap::new();
        for c in 0..100u64 {
            codes.insert((3000 + c).to_string(), c + 1);
        }
        codes.insert("1000".into(), 500);
        codes.insert("1001".into(), 0);
        let folded = fold_close_codes(&codes, MAX_CLOSE_CODES);
        assert_eq!(folded.len(), MAX_CLOSE_CODES);
        assert_eq!(folded[0], ("1000".to_owned(), 500));
        assert_eq!(folded.last().unwrap().0, "other");
        // Kept: 1000 and the 62 most frequent 3xxx codes (3038..=3099, counts 39..=100).
        assert_eq!(folded[1], ("3038".to_owned(), 39));
        let other: u64 = (1..=38).sum();
        assert_eq!(folded.last().unwrap().1, other);
        let total: u64 = folded.iter().map(|(_, n)| n).sum();
        assert_eq!(total, codes.values().sum::<u64>());
        // At or under the limit nothing is folded, zeros are left out, order is numeric.
        let mut few = BTreeMap::new();
        for c in ["4000", "1000", "999", "1006"] {
            few.insert(c.to_owned(), 1);
        }
        few.insert("1011".to_owned(), 0);
        let codes: Vec<String> = fold_close_codes(&few, MAX_CLOSE_CODES).into_iter().map(|(c, _)| c).collect();
        assert_eq!(codes, ["999", "1000", "1006", "4000"]);

        let mut s = Snapshot::default();
        let mut p = proc(1, "srv", &[80], 1);
        for c in 0..100u64 {
            p.websocket.close_codes_sent.insert((3000 + c).to_string(), 1);
            p.websocket.close_codes_received.insert((3000 + c).to_string(), 1);
        }
        s.processes.push(p);
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        for dir in ["received", "sent"] {
            let n = text.lines().filter(|l| l.contains(&format!(r#"direction="{dir}",code=""#))).count();
            assert_eq!(n, MAX_CLOSE_CODES, "{dir}");
        }
        assert_has(&text, &[r#"wsguard_websocket_close_codes_total{comm="srv",listen_port="80",direction="sent",code="other"} 37"#]);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = Snapshot::default();
        let nasty = "a\"b\\c\nd";
        s.processes.push(proc(1, nasty, &[80], 2));
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert_has(&text, &[r#"wsguard_websocket_connections_active{comm="a\"b\\c\nd",listen_port="80"} 2"#]);
        let parsed = parse_sample(
            text.lines().find(|l| l.starts_with("wsguard_websocket_connections_active{")).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed.1[0], ("comm".to_owned(), nasty.to_owned()));
    }

    #[test]
    fn non_finite_values_are_left_out() {
        let mut s = sample();
        s.agent.snapshot_ms = f64::NAN;
        s.processes[0].websocket.ping_rtt_avg_ms = Some(f64::INFINITY);
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert!(!text.contains("wsguard_snapshot_duration_seconds "), "{text}");
        assert!(!text.contains("wsguard_websocket_ping_rtt_seconds_avg{"), "{text}");
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: MetricsConfig = toml::from_str("").unwrap();
        assert_eq!(c, MetricsConfig { pid_label: false, max_series: 10_000 });
        let c: MetricsConfig = toml::from_str("pid_label = true").unwrap();
        assert_eq!(c, MetricsConfig { pid_label: true, max_series: 10_000 });
        assert!(toml::from_str::<MetricsConfig>("max_serie = 5").is_err());
    }

    #[test]
    fn families_are_well_formed_and_documented() {
        let doc = include_str!("../../docs/metrics.md");
        let mut names = HashSet::new();
        for f in FAMILIES {
            assert!(names.insert(f.name), "duplicate family {}", f.name);
            assert!(f.name.starts_with("wsguard_"), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(!f.help.is_empty() && !f.help.contains(['\\', '\n']), "{}", f.name);
            assert!(doc.contains(&format!("`{}`", f.name)), "{} is not in docs/metrics.md", f.name);
        }
    }

    /// Runs the real `promtool check metrics` (Debian package `prometheus`) when it is installed.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::{io::Write, process::{Command, Stdio}};
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("SKIP promtool_accepts_the_exposition: promtool is not on PATH (apt-get install prometheus)");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        let mut s = sample();
        let mut b = proc(99, "py\"thon", &[8765, 80], 2);
        b.websocket.close_codes_received.insert("1006".into(), 3);
        s.processes.push(b);
        let text = render(&s, &MetricsConfig { pid_label: true, ..Default::default() });
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && report.trim().is_empty(), "promtool: {:?}\n{report}\n{text}", out.status);
    }

    // A small parser of the text format 0.0.4, strict enough to catch what scrapers reject.

    type Parsed = (String, Vec<(String, String)>, f64);

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse_sample(line: &str) -> Result<Parsed, String> {
        let end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..end];
        if !is_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                let eq = rest.find('=').ok_or("label without =")?;
                let key = &rest[..eq];
                if !is_name(key) || key.starts_with("__") {
                    return Err(format!("bad label name {key:?}"));
                }
                rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let close = loop {
                    match chars.next().ok_or("unterminated label value")? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        (_, '\n') => return Err("raw newline in label value".into()),
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                rest = &rest[close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else {
                    rest = rest.strip_prefix('}').ok_or("expected , or }")?;
                    break;
                }
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before value")?;
        let v: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
        let mut keys: Vec<&String> = labels.iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        if keys.len() != labels.len() {
            return Err("duplicate label".into());
        }
        Ok((name.to_owned(), labels, v))
    }

    /// Every line is HELP, TYPE or a sample; each family has HELP then TYPE before its samples,
    /// appears once, counters end in `_total` with non-negative values, no series repeats.
    fn check_exposition(text: &str) {
        assert!(text.ends_with('\n') && !text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        let mut families = HashSet::new();
        let mut series = HashSet::new();
        let (mut help, mut current, mut kind) = (None::<String>, None::<String>, "");
        for line in text.lines() {
            if let Some(r) = line.strip_prefix("# HELP ") {
                let (name, h) = r.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
                assert!(!h.trim().is_empty(), "{line}");
                assert!(families.insert(name.to_owned()), "family {name} twice");
                help = Some(name.to_owned());
            } else if let Some(r) = line.strip_prefix("# TYPE ") {
                let (name, k) = r.split_once(' ').unwrap();
                assert_eq!(help.as_deref(), Some(name), "TYPE without HELP: {line}");
                assert!(k == "counter" || k == "gauge", "{line}");
                assert_eq!(k == "counter", name.ends_with("_total"), "{line}");
                (current, kind) = (Some(name.to_owned()), if k == "counter" { "counter" } else { "gauge" });
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line}");
                let (name, labels, v) = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                assert_eq!(current.as_deref(), Some(name.as_str()), "sample outside its family: {line}");
                assert!(v.is_finite(), "{line}");
                if kind == "counter" {
                    assert!(v >= 0.0, "{line}");
                }
                assert!(series.insert((name, labels)), "duplicate series {line}");
            }
        }
    }

    #[test]
    fn the_checker_rejects_broken_lines() {
        for bad in [
            "x{a=\"1\"",
            "x{a=1} 1",
            "x{a=\"\\q\"} 1",
            "x{a=\"1\",a=\"2\"} 1",
            "1x 1",
            "x{__a=\"1\"} 1",
            "x abc",
            "x{a=\"1\"}1",
        ] {
            assert!(parse_sample(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_sample(r#"x_total{a="q\"\\",b=""} 1.5"#).unwrap(),
            ("x_total".into(), vec![("a".into(), "q\"\\".into()), ("b".into(), String::new())], 1.5)
        );
    }
}
