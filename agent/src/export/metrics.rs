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
//! Latencies are *histograms* (`_bucket{le}`, `_sum`, `_count`) written with the client's
//! histogram encoder: the probe's log-linear buckets folded into bounds that are edges of them
//! (`keep::LE_LOG2_NS`), so they aggregate across series and over any window and stay exact.
//!
//! # Identity and cardinality
//! Per-process series carry `comm`, `listen_port` (the lowest port the process listens on: one
//! value) and `unit` (the systemd unit or container scope, empty when unknown; `pid` only with
//! `[metrics] pid_label = true`), so a restarted server keeps its series. Processes that share a
//! label set (e.g. several `node` workers) are summed into one series, and what cannot be summed
//! takes the maximum (`fd_usage_ratio`, the cgroup memory limit, the client quota). Counters
//! stay monotonic per label set when a process goes away ([`super::keep`]). `[metrics] max_series` caps the whole exposition: label sets with the
//! most active connections are kept, whole label sets beyond the cap are dropped and counted in
//! `wsguard_metrics_series_dropped`. Close codes are exported only when seen, at most
//! [`MAX_CLOSE_CODES`] per label set and direction, the rest folded into `code="other"`.
//!
//! # Adding a metric
//! Declare a [`Spec`] constant, list it in [`FAMILIES`] (output order), push samples for it in
//! [`fixed_series`] (agent, probe, host: no process labels), [`activity_series`] (the agent's
//! own alerts, notifications, remediation) or [`process_series`] (per label set; a new counter
//! goes into [`Counters`], a gauge into [`Group::add`]), and document it in `docs/metrics.md`
//! (a test checks that the docs name exactly the families of [`FAMILIES`]).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    fmt,
};

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode_registry, DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use serde::{Deserialize, Serialize};

use super::keep::{Counters, Hist, Kept, UNIDENTIFIED};
use crate::{
    model::clients::AgeBuckets,
    model::resources::ProcessResources,
    model::snapshot::{Frames, ProcessSnapshot, Snapshot},
    predict::{Predictions, ProcessPrediction, ResourcePrediction},
};

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

/// What the exposition adds to the snapshot; all optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extras<'a> {
    /// Forecasts made from the snapshot (`wsguard_prediction_*`).
    pub predictions: Option<&'a Predictions>,
    /// Label sets and totals of gone processes (monotonic counters, see [`super::keep`]).
    pub kept: Option<&'a Kept>,
    /// The agent's own alerts, notifications and remediation.
    pub activity: Option<&'a Activity>,
}

/// The snapshot in the Prometheus text format 0.0.4 (see the module docs for the rules).
pub fn render(snapshot: &Snapshot, cfg: &MetricsConfig) -> String {
    render_with(snapshot, &Extras::default(), cfg)
}

/// The snapshot and what `extras` holds. Forecasts of a process join its label set (same
/// identity, `pid` only with `pid_label`, dropped with it by `max_series`); host forecasts and
/// scores are fixed series.
pub fn render_with(snapshot: &Snapshot, extras: &Extras, cfg: &MetricsConfig) -> String {
    let mut out = Families::new();
    fixed_series(snapshot, &mut out);
    if let Some(p) = extras.predictions {
        prediction_fixed_series(p, &mut out);
    }
    if let Some(a) = extras.activity {
        activity_series(a, &mut out);
    }

    // Per-process series, grouped by their label set.
    let empty = Kept::default();
    let kept = extras.kept.unwrap_or(&empty);
    let mut groups: BTreeMap<Identity, Group> = BTreeMap::new();
    for p in &snapshot.processes {
        let g = groups.entry(kept.identity(p, cfg)).or_default();
        g.add(p);
        g.counters.add(&kept.counters(p));
    }
    for (id, c) in kept.retired() {
        groups.entry(id.clone()).or_default().counters.add(c);
    }
    for pp in extras.predictions.map(|p| p.processes.as_slice()).unwrap_or_default() {
        if let Some(p) = snapshot.processes.iter().find(|p| p.pid == pp.pid) {
            groups.entry(kept.identity(p, cfg)).or_default().forecast.add(pp);
        }
    }
    let mut sets: Vec<(Identity, Group, Vec<Pending>)> = groups
        .into_iter()
        .map(|(id, g)| {
            let mut series = Vec::new();
            process_series(&g, &mut series);
            (id, g, series)
        })
        .collect();

    // The cap: keep label sets in order of active connections (and streams) while they fit. The two
    // `wsguard_metrics_series*` gauges are pushed last and counted here.
    let fixed = out.series() + 2;
    let mut budget = cfg.max_series.saturating_sub(fixed);
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by_key(|&i| {
        let g = &sets[i].1;
        (Reverse(g.active + g.sse.active), Reverse(g.counters.ws.connections_opened + g.counters.sse.streams_opened), i)
    });
    let mut keep = vec![false; sets.len()];
    let mut dropped = 0usize;
    for i in order {
        let n = lines(&sets[i].2);
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
        kept += lines(series);
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
    /// `_bucket{le}`, `_sum` and `_count`.
    Histogram,
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
const fn histogram(name: &'static str, help: &'static str) -> Spec {
    Spec { name, kind: Kind::Histogram, help }
}

// Per process (labels comm, listen_port, unit[, pid]).
const WS_ACTIVE: Spec =
    gauge("wsguard_websocket_connections_active", "WebSocket connections open now (handshake completed, not yet closed).");
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
const WS_UNPARSED_CONNS: Spec = counter(
    "wsguard_unparsed_connections_total",
    "Socket mode: connections that moved bytes the probe could not read as a buffer (io_uring, splice/sendfile, recvmmsg/sendmmsg); their frames are not counted.",
);
const WS_UNPARSED_BYTES: Spec = counter(
    "wsguard_unparsed_bytes_total",
    "Socket mode: bytes moved on connections by I/O the probe could not read as a buffer (see wsguard_unparsed_connections_total).",
);
const WS_FRAMES: Spec =
    counter("wsguard_websocket_frames_total", "WebSocket frames by direction (from the process's side) and opcode.");
const WS_MESSAGES: Spec = counter(
    "wsguard_websocket_messages_total",
    "Complete WebSocket data messages (text or binary, after continuations) by direction.",
);
const WS_PAYLOAD: Spec = counter(
    "wsguard_websocket_payload_bytes_total",
    "WebSocket payload bytes the process read or wrote, counted as they pass (all opcodes, compressed if permessage-deflate, headers excluded) by direction.",
);
const WS_CLOSE_CODES: Spec = counter(
    "wsguard_websocket_close_codes_total",
    "Close frames by direction and status code; code=\"other\" folds codes beyond the per-label-set limit.",
);
const WS_HANDSHAKE_LATENCY: Spec = histogram(
    "wsguard_websocket_handshake_latency_seconds",
    "Handshake latency (upgrade request read to 101 written), from the probe's histogram.",
);
const WS_PING_RTT: Spec = histogram(
    "wsguard_websocket_ping_rtt_seconds",
    "Round trip of pings the process sent (ping written to pong read), from the probe's histogram.",
);
const WS_RESPONSE_LATENCY: Spec = histogram(
    "wsguard_websocket_response_latency_seconds",
    "Time from a data message read to the process's next data frame written, from the probe's histogram.",
);
const WS_IDLE: Spec =
    gauge("wsguard_websocket_connections_idle", "WebSocket connections with no traffic either way for [limits] idle_after.");
const WS_STALLED: Spec = gauge(
    "wsguard_websocket_connections_stalled",
    "WebSocket connections with a ping from the process unanswered for [limits] stall_after.",
);
const WS_SEND_QUEUE: Spec = gauge(
    "wsguard_websocket_send_queue_bytes",
    "Bytes the process wrote to its WebSocket connections that the peers have not acknowledged yet (kernel send queues).",
);
const WS_RECV_QUEUE: Spec = gauge(
    "wsguard_websocket_recv_queue_bytes",
    "Bytes received on the process's WebSocket connections that it has not read yet (kernel receive queues).",
);
const WS_AGES: Spec =
    gauge("wsguard_websocket_connection_age_connections", "WebSocket connections open now by age since their handshake.");
const WS_CLIENTS: Spec = gauge(
    "wsguard_websocket_clients",
    "Distinct client keys ([probe.client_key]) with an open WebSocket connection, summed over the processes of a label set.",
);
const WS_CLIENTS_OVER_QUOTA: Spec = gauge(
    "wsguard_websocket_clients_at_or_over_quota",
    "Clients holding at least [limits] per_client_connections open WebSocket connections to one process.",
);
const WS_CLIENT_QUOTA: Spec = gauge(
    "wsguard_websocket_client_quota",
    "Open WebSocket connections one client may hold per process ([limits] per_client_connections).",
);
const WS_PREEXISTING: Spec = gauge(
    "wsguard_websocket_preexisting_connections",
    "Inbound TCP connections open before the probe attached and still open; not followed and in no other count.",
);
const WS_UNFOLLOWED: Spec = counter(
    "wsguard_websocket_unfollowed_connections_total",
    "Inbound TCP connections the probe did not follow from their first byte (open before it attached, accepted while it attached, or, syscall mode, closed unread: moved by dup2 or fd passing); their traffic is in no other count.",
);
const TCP_ACCEPTED: Spec =
    counter("wsguard_tcp_connections_accepted_total", "TCP connections the process accepted since the probe attached.");
const TCP_NOT_WEBSOCKET: Spec = counter(
    "wsguard_tcp_connections_not_websocket_total",
    "Accepted TCP connections whose first bytes were not a WebSocket upgrade (dropped from tracking at once).",
);

// Server-Sent Events, per process (same labels). Parallel families rather than a `transport`
// label on the WebSocket ones: frames, opcodes, close codes and pings mean nothing for a
// stream, and events/comments/resumes mean nothing for a WebSocket (docs/metrics.md, "Why
// parallel SSE families").
const SSE_ACTIVE: Spec = gauge(
    "wsguard_sse_streams_active",
    "Server-Sent Events streams open now (text/event-stream response written, not yet closed).",
);
const SSE_OPENED: Spec = counter(
    "wsguard_sse_streams_opened_total",
    "SSE streams opened (a response with Content-Type: text/event-stream written) since the agent first saw the process.",
);
const SSE_CLOSED: Spec = counter("wsguard_sse_streams_closed_total", "SSE streams ended, by anyone.");
const SSE_ENDED_BY: Spec = counter(
    "wsguard_sse_stream_ends_total",
    "SSE streams ended, by who ended them: by=\"client\" (the client went away first) or by=\"server\" (chunked terminator, or the server closed first).",
);
const SSE_EVENTS: Spec =
    counter("wsguard_sse_events_total", "SSE events written: blocks ended by a blank line that carry at least one data field.");
const SSE_COMMENTS: Spec = counter(
    "wsguard_sse_comments_total",
    "SSE comment lines written (starting with ':', keep-alives included), counted apart from events.",
);
const SSE_PAYLOAD: Spec = counter(
    "wsguard_sse_payload_bytes_total",
    "Bytes of SSE event streams written (fields, comments, line ends; chunked framing and the response head excluded).",
);
const SSE_RESUMED: Spec = counter(
    "wsguard_sse_resumed_streams_total",
    "SSE streams whose request carried Last-Event-ID (a client reconnecting and resuming).",
);
const SSE_UNPARSEABLE: Spec = counter(
    "wsguard_sse_unparseable_streams_total",
    "SSE streams with a compressed body (Content-Encoding): counted as streams and bytes, their events and comments are not.",
);
const SSE_OUT_OF_SYNC: Spec = counter(
    "wsguard_sse_out_of_sync_total",
    "SSE streams whose framing could not be followed; their later events are not counted.",
);
const SSE_IDLE: Spec = gauge(
    "wsguard_sse_streams_idle",
    "Open SSE streams with no event for [limits] idle_after (keep-alive comments do not count).",
);
const SSE_QUIETEST: Spec = gauge(
    "wsguard_sse_quietest_stream_seconds",
    "Seconds since the last event of the open SSE stream quiet the longest (the largest in the label set).",
);
const SSE_CLIENTS: Spec = gauge(
    "wsguard_sse_clients",
    "Distinct client keys ([probe.client_key]) with an open SSE stream, summed over the processes of a label set.",
);
const SSE_CLIENTS_OVER_QUOTA: Spec = gauge(
    "wsguard_sse_clients_at_or_over_quota",
    "Clients holding at least [limits] per_client_connections open SSE streams to one process.",
);

// Process resources (same labels).
const PROC_OPEN_FDS: Spec = gauge("wsguard_process_open_fds", "Open file descriptors, summed over the processes of a label set.");
const PROC_FD_LIMIT: Spec = gauge(
    "wsguard_process_fd_limit_soft",
    "RLIMIT_NOFILE soft limit, summed over the processes of a label set; absent if any of them is unlimited or unknown.",
);
const PROC_FD_RATIO: Spec = gauge(
    "wsguard_process_fd_usage_ratio",
    "Open fds over the RLIMIT_NOFILE soft limit of the fullest process of the label set; at 1 accept() fails with EMFILE.",
);
const PROC_RSS: Spec =
    gauge("wsguard_process_resident_memory_bytes", "Resident memory, summed over the processes of a label set.");
const PROC_CPU: Spec = counter(
    "wsguard_process_cpu_seconds_total",
    "User and system CPU time the processes of a label set used, in seconds (gone processes' totals kept).",
);
const PROC_LISTEN_PORT: Spec = gauge(
    "wsguard_process_listen_port_info",
    "Always 1: one series per TCP port a process of the label set listens on (label port).",
);
const PROC_THREADS: Spec = gauge("wsguard_process_threads", "Threads, summed over the processes of a label set.");
const PROC_MEMORY_LIMIT: Spec = gauge(
    "wsguard_process_memory_limit_bytes",
    "Tightest cgroup memory limit of the process (the largest in the label set); absent when unlimited or unknown.",
);

// Host totals (no process labels).
const HOST_ACTIVE: Spec = gauge(
    "wsguard_host_websocket_connections_active",
    "WebSocket connections open now in all reported processes, including any dropped by max_series.",
);
const HOST_SSE_ACTIVE: Spec = gauge(
    "wsguard_host_sse_streams_active",
    "SSE streams open now in all reported processes, including any dropped by max_series.",
);
const HOST_PROCESSES: Spec = gauge(
    "wsguard_host_websocket_processes",
    "Processes in the snapshot (with WebSocket activity or pre-existing connections, exited ones for a while).",
);

// Host resources (no labels; each only when the host provides it).
const HOST_CPU: Spec =
    gauge("wsguard_host_cpu_usage_ratio", "Busy share of all online CPUs since the previous snapshot, 0 to 1.");
const HOST_MEMORY_USED: Spec = gauge("wsguard_host_memory_used_ratio", "1 - MemAvailable / MemTotal.");
const HOST_LOAD1: Spec = gauge("wsguard_host_load1", "1-minute load average.");
const HOST_TCP_INUSE: Spec = gauge("wsguard_host_tcp_sockets_inuse", "TCP sockets in use, IPv4 and IPv6 (sockstat).");
const HOST_LISTEN_OVERFLOWS: Spec = counter(
    "wsguard_host_listen_overflows_total",
    "Connections dropped because a listener's accept queue was full (TcpExt ListenOverflows).",
);
const HOST_LISTEN_DROPS: Spec = counter(
    "wsguard_host_listen_drops_total",
    "SYNs or connections dropped at a listener for any reason, overflows included (TcpExt ListenDrops).",
);
const HOST_CONNTRACK: Spec = gauge("wsguard_host_conntrack_entries", "Entries in the conntrack table (nf_conntrack_count).");
const HOST_CONNTRACK_MAX: Spec = gauge("wsguard_host_conntrack_max", "Size of the conntrack table (nf_conntrack_max).");
const HOST_EPHEMERAL: Spec = gauge(
    "wsguard_host_ephemeral_ports_in_use",
    "Non-listening TCP sockets whose local port is in net.ipv4.ip_local_port_range.",
);
const HOST_EPHEMERAL_RATIO: Spec = gauge(
    "wsguard_host_ephemeral_ports_usage_ratio",
    "Ephemeral ports in use over the size of net.ipv4.ip_local_port_range (pressure, not a hard bound).",
);

// Probe health.
const PROBE_ATTACHED: Spec = gauge("wsguard_probe_attached", "1 if the eBPF probe is attached, else 0.");
const PROBE_RESUMED: Spec = gauge(
    "wsguard_probe_resumed",
    "1 if the agent picked up an already running (pinned) probe, so counts continued through an agent restart.",
);
const PROBE_RUNS: Spec =
    counter("wsguard_probe_runs_total", "Runs of each probe program (kept by the kernel only while kernel.bpf_stats_enabled=1).");
const PROBE_RUN_TIME: Spec = counter(
    "wsguard_probe_run_time_seconds_total",
    "Time spent in each probe program (kept by the kernel only while kernel.bpf_stats_enabled=1).",
);
const PROBE_RING_DROPS: Spec =
    counter("wsguard_probe_ring_drops_total", "Lifecycle events lost because the ring buffer was full.");
const PROBE_CONN_MAP_FULL: Spec =
    counter("wsguard_probe_conn_map_full_total", "Connections not followed because the connection map was full.");
const PROBE_PROC_MAP_FULL: Spec =
    counter("wsguard_probe_proc_map_full_total", "Processes not counted because the process map was full.");
const PROBE_CLOSE_CODE_MAP_FULL: Spec =
    counter("wsguard_probe_close_code_map_full_total", "Close codes not counted because the close-code map was full.");
const PROBE_WALK_BUDGET: Spec = counter(
    "wsguard_probe_walk_budget_exceeded_total",
    "Syscall buffers whose frame walk hit the per-call budget; the connection is marked out of sync.",
);
const PROBE_READ_FAULTS: Spec =
    counter("wsguard_probe_read_faults_total", "Failed reads of user memory by the probe; the connection is marked out of sync.");
const PROBE_CONN_MAP_ENTRIES: Spec =
    gauge("wsguard_probe_conn_map_entries", "Entries in the probe's connection map now (all phases).");
const PROBE_CONN_MAP_CAPACITY: Spec = gauge(
    "wsguard_probe_conn_map_capacity",
    "Capacity of the syscall mode's connection map ([probe] max_connections); 0 in the socket mode (no fixed capacity).",
);
const PROBE_INFO: Spec =
    gauge("wsguard_probe_info", "1, labelled with the probe mode that runs (socket or syscall; see docs/kernel-support.md).");
const PROBE_SK_STORAGE_FULL: Spec = counter(
    "wsguard_probe_sk_storage_full_total",
    "Socket mode: inbound connections not followed because their per-socket state could not be created.",
);
const PROBE_ENDED_UNATTRIBUTED: Spec = counter(
    "wsguard_probe_ended_unattributed_total",
    "Socket mode: followed connections that ended before any process read or wrote them.",
);
const PROBE_TLS_MAP_FULL: Spec = counter(
    "wsguard_probe_tls_map_full_total",
    "Socket mode, TLS: plaintext connection states or SSL links not kept because a TLS map was full.",
);
const PROBE_TLS_UNLINKED: Spec = counter(
    "wsguard_probe_tls_unlinked_total",
    "Socket mode, TLS: OpenSSL calls that moved plaintext for an SSL no socket could be paired with (not counted).",
);
const PROBE_TLS_UNSEEN: Spec = counter(
    "wsguard_probe_tls_unseen_total",
    "Socket mode, TLS: TLS connections that ended with no plaintext seen (no hooked OpenSSL, or no request).",
);
const PROBE_EVENTS: Spec =
    counter("wsguard_probe_events_total", "Lifecycle events the agent received from the probe's ring buffer since it started.");

// Agent.
const SNAPSHOT_DURATION: Spec = gauge("wsguard_snapshot_duration_seconds", "Time taken to build the latest snapshot.");
const SNAPSHOT_TIMESTAMP: Spec = gauge("wsguard_snapshot_timestamp_seconds", "Unix time at which the latest snapshot was built.");
const SNAPSHOT_INTERVAL: Spec =
    gauge("wsguard_snapshot_interval_seconds", "Configured interval between snapshots ([agent] interval).");
const AGENT_START_TIME: Spec = gauge("wsguard_agent_start_time_seconds", "Unix time at which the agent started.");
const BUILD_INFO: Spec =
    gauge("wsguard_build_info", "Always 1; labels name the agent's version, the probe mode that runs and the kernel release.");
const METRICS_SERIES: Spec =
    gauge("wsguard_metrics_series", "Series in this exposition, these two metrics included; compare with [metrics] max_series.");
const METRICS_SERIES_DROPPED: Spec =
    gauge("wsguard_metrics_series_dropped", "Per-process series left out of this exposition because of [metrics] max_series.");

/// Every family, in output order.
pub(crate) const FAMILIES: &[&Spec] = &[
    &WS_ACTIVE,
    &WS_OPENED,
    &WS_CLOSED,
    &WS_HANDSHAKES_FAILED,
    &WS_ABNORMAL,
    &WS_OUT_OF_SYNC,
    &WS_UNPARSED_CONNS,
    &WS_UNPARSED_BYTES,
    &WS_FRAMES,
    &WS_MESSAGES,
    &WS_PAYLOAD,
    &WS_CLOSE_CODES,
    &WS_HANDSHAKE_LATENCY,
    &WS_PING_RTT,
    &WS_RESPONSE_LATENCY,
    &WS_IDLE,
    &WS_STALLED,
    &WS_SEND_QUEUE,
    &WS_RECV_QUEUE,
    &WS_AGES,
    &WS_CLIENTS,
    &WS_CLIENTS_OVER_QUOTA,
    &WS_CLIENT_QUOTA,
    &WS_PREEXISTING,
    &WS_UNFOLLOWED,
    &TCP_ACCEPTED,
    &TCP_NOT_WEBSOCKET,
    &SSE_ACTIVE,
    &SSE_OPENED,
    &SSE_CLOSED,
    &SSE_ENDED_BY,
    &SSE_EVENTS,
    &SSE_COMMENTS,
    &SSE_PAYLOAD,
    &SSE_RESUMED,
    &SSE_UNPARSEABLE,
    &SSE_OUT_OF_SYNC,
    &SSE_IDLE,
    &SSE_QUIETEST,
    &SSE_CLIENTS,
    &SSE_CLIENTS_OVER_QUOTA,
    &PROC_OPEN_FDS,
    &PROC_FD_LIMIT,
    &PROC_FD_RATIO,
    &PROC_RSS,
    &PROC_CPU,
    &PROC_LISTEN_PORT,
    &PROC_THREADS,
    &PROC_MEMORY_LIMIT,
    &HOST_ACTIVE,
    &HOST_SSE_ACTIVE,
    &HOST_PROCESSES,
    &HOST_CPU,
    &HOST_MEMORY_USED,
    &HOST_LOAD1,
    &HOST_TCP_INUSE,
    &HOST_LISTEN_OVERFLOWS,
    &HOST_LISTEN_DROPS,
    &HOST_CONNTRACK,
    &HOST_CONNTRACK_MAX,
    &HOST_EPHEMERAL,
    &HOST_EPHEMERAL_RATIO,
    &PROBE_ATTACHED,
    &PROBE_INFO,
    &PROBE_RESUMED,
    &PROBE_RUNS,
    &PROBE_RUN_TIME,
    &PROBE_RING_DROPS,
    &PROBE_CONN_MAP_FULL,
    &PROBE_PROC_MAP_FULL,
    &PROBE_CLOSE_CODE_MAP_FULL,
    &PROBE_WALK_BUDGET,
    &PROBE_READ_FAULTS,
    &PROBE_SK_STORAGE_FULL,
    &PROBE_ENDED_UNATTRIBUTED,
    &PROBE_TLS_MAP_FULL,
    &PROBE_TLS_UNLINKED,
    &PROBE_TLS_UNSEEN,
    &PROBE_CONN_MAP_ENTRIES,
    &PROBE_CONN_MAP_CAPACITY,
    &PROBE_EVENTS,
    &SNAPSHOT_DURATION,
    &SNAPSHOT_TIMESTAMP,
    &SNAPSHOT_INTERVAL,
    &AGENT_START_TIME,
    &BUILD_INFO,
    &ALERTS_FIRING,
    &ALERTS_PENDING,
    &ALERT_TRANSITIONS,
    &NOTIFY_SENT,
    &NOTIFY_FAILED,
    &NOTIFY_DROPPED,
    &NOTIFY_QUEUED,
    &REMEDIATION_RUNS,
    &PRED_HORIZON,
    &PRED_USAGE,
    &PRED_ETA,
    &PRED_ETA_LOW,
    &PRED_ETA_HIGH,
    &PRED_RES_PROB,
    &PRED_CRISIS_PROB,
    &PRED_CONFIDENCE,
    &PRED_CLASS,
    &PRED_PRECISION,
    &PRED_RECALL,
    &PRED_LEAD,
    &PRED_ETA_ERROR,
    &PRED_FORECASTS,
    &PRED_TP,
    &PRED_FP,
    &PRED_EXHAUSTIONS,
    &METRICS_SERIES,
    &METRICS_SERIES_DROPPED,
];

// ---------------------------------------------------------------------------------------------
// Series.

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
    /// A histogram: its buckets, `_sum` and `_count` lines.
    Hist(Box<Hist>),
}

impl Value {
    /// Sample lines this value is written as.
    fn lines(&self) -> usize {
        match self {
            Value::Hist(h) => h.buckets.len() + 2,
            _ => 1,
        }
    }

    fn is_finite(&self) -> bool {
        match self {
            Value::Int(_) | Value::Hist(_) => true,
            Value::Float(v) => v.is_finite(),
        }
    }
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

/// Sample lines of a per-process label set.
fn lines(series: &[Pending]) -> usize {
    series.iter().map(|(_, _, v)| v.lines()).sum()
}

/// A per-process series before its identity labels are added: family, own labels, value.
type Pending = (&'static Spec, Labels, Value);

/// Series without process labels: agent, probe and host.
fn fixed_series(s: &Snapshot, out: &mut Families) {
    let none = Vec::new;
    out.push(&HOST_ACTIVE, none(), Value::Int(s.totals.connections_active));
    out.push(&HOST_SSE_ACTIVE, none(), Value::Int(s.sse_totals.streams_active));
    out.push(&HOST_PROCESSES, none(), Value::Int(s.processes.len() as u64));

    let h = &s.host;
    for (spec, v) in [
        (&HOST_CPU, h.cpu_percent.map(|p| p / 100.0)),
        (&HOST_MEMORY_USED, h.memory_used_ratio),
        (&HOST_LOAD1, h.load_1),
        (&HOST_EPHEMERAL_RATIO, h.ephemeral_ports_usage_ratio),
    ] {
        if let Some(v) = v {
            out.push(spec, none(), Value::Float(v));
        }
    }
    for (spec, v) in [
        (&HOST_TCP_INUSE, h.tcp_sockets_inuse),
        (&HOST_LISTEN_OVERFLOWS, h.listen_overflows_total),
        (&HOST_LISTEN_DROPS, h.listen_drops_total),
        (&HOST_CONNTRACK, h.conntrack_count),
        (&HOST_CONNTRACK_MAX, h.conntrack_max),
        (&HOST_EPHEMERAL, h.ephemeral_ports_in_use),
    ] {
        if let Some(v) = v {
            out.push(spec, none(), Value::Int(v));
        }
    }

    let (p, h) = (&s.probe, &s.probe.health);
    out.push(&PROBE_ATTACHED, none(), flag(p.attached));
    if !p.mode.is_empty() {
        out.push(&PROBE_INFO, vec![("mode", p.mode.clone())], Value::Int(1));
    }
    out.push(&PROBE_RESUMED, none(), flag(p.resumed));
    out.push(&PROBE_RING_DROPS, none(), Value::Int(h.ring_drops));
    out.push(&PROBE_CONN_MAP_FULL, none(), Value::Int(h.conn_map_full));
    out.push(&PROBE_PROC_MAP_FULL, none(), Value::Int(h.proc_map_full));
    out.push(&PROBE_CLOSE_CODE_MAP_FULL, none(), Value::Int(h.close_code_map_full));
    out.push(&PROBE_WALK_BUDGET, none(), Value::Int(h.walk_budget_exceeded));
    out.push(&PROBE_READ_FAULTS, none(), Value::Int(h.read_faults));
    out.push(&PROBE_SK_STORAGE_FULL, none(), Value::Int(h.sk_storage_full));
    out.push(&PROBE_ENDED_UNATTRIBUTED, none(), Value::Int(h.ended_unattributed));
    out.push(&PROBE_TLS_MAP_FULL, none(), Value::Int(h.tls_map_full));
    out.push(&PROBE_TLS_UNLINKED, none(), Value::Int(h.tls_unlinked));
    out.push(&PROBE_TLS_UNSEEN, none(), Value::Int(h.tls_unseen));
    out.push(&PROBE_CONN_MAP_ENTRIES, none(), Value::Int(h.conn_map_entries));
    out.push(&PROBE_CONN_MAP_CAPACITY, none(), Value::Int(h.conn_map_capacity));
    out.push(&PROBE_EVENTS, none(), Value::Int(p.events_received));
    for prog in &p.programs {
        let l = vec![("program", prog.program.clone())];
        out.push(&PROBE_RUNS, l.clone(), Value::Int(prog.run_count));
        out.push(&PROBE_RUN_TIME, l, Value::Float(prog.run_time_ns as f64 / 1e9));
    }

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
    let build = vec![("version", version.to_owned()), ("probe_mode", p.mode.clone()), ("kernel", a.kernel.clone())];
    out.push(&BUILD_INFO, build, Value::Int(1));
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// The label set of a process's series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Identity {
    /// `/proc/PID/comm`; [`UNIDENTIFIED`] when the process exited before it was read.
    pub(crate) comm: String,
    /// The lowest TCP port the process listens on; empty if none.
    listen_port: String,
    /// Systemd unit or container scope (innermost `*.service`/`*.scope` of the cgroup); empty
    /// when unknown (no resources sampled, e.g. once exited).
    unit: String,
    pid: Option<u32>,
    /// `namespace`, `pod`, `container` labels, only for processes in a Kubernetes pod.
    kubernetes: Option<(String, String, String)>,
}

impl Identity {
    pub(crate) fn of(p: &ProcessSnapshot, cfg: &MetricsConfig) -> Self {
        let listen_port = p.listening_ports.iter().min().map(u16::to_string).unwrap_or_default();
        let unit = p.resources.as_ref().and_then(|r| r.systemd_unit.clone()).unwrap_or_default();
        let kubernetes =
            p.kubernetes.as_ref().map(|k| (k.namespace.clone(), k.pod.clone(), k.container.clone().unwrap_or_default()));
        let comm = if p.comm.is_empty() { UNIDENTIFIED.to_owned() } else { p.comm.clone() };
        Identity { comm, listen_port, unit, pid: cfg.pid_label.then_some(p.pid), kubernetes }
    }

    fn labels(&self) -> Labels {
        let mut l = vec![("comm", self.comm.clone()), ("listen_port", self.listen_port.clone()), ("unit", self.unit.clone())];
        if let Some(pid) = self.pid {
            l.push(("pid", pid.to_string()));
        }
        if let Some((ns, pod, container)) = &self.kubernetes {
            l.extend([("namespace", ns.clone()), ("pod", pod.clone()), ("container", container.clone())]);
        }
        l
    }
}

fn max_f(acc: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        *acc = Some(acc.map_or(v, |m| m.max(v)));
    }
}

/// Resources of the processes of a label set (only those with a resource sample).
#[derive(Debug, Default)]
struct ResourcesAcc {
    sampled: bool,
    open_fds: Option<u64>,
    fd_limit_soft: Option<u64>,
    /// Some process with resources has no known (or an unlimited) soft limit.
    fd_limit_unknown: bool,
    fd_usage_ratio: Option<f64>,
    rss_bytes: u64,
    threads: u64,
    memory_limit_bytes: Option<u64>,
}

impl ResourcesAcc {
    fn add(&mut self, r: &ProcessResources) {
        self.sampled = true;
        if let Some(n) = r.open_fds {
            self.open_fds = Some(self.open_fds.unwrap_or(0) + n);
        }
        match r.fd_limit_soft {
            Some(l) => self.fd_limit_soft = Some(self.fd_limit_soft.unwrap_or(0) + l),
            None => self.fd_limit_unknown = true,
        }
        max_f(&mut self.fd_usage_ratio, r.fd_usage_ratio);
        self.rss_bytes += r.rss_bytes;
        self.threads += r.threads;
        if let Some(l) = r.memory_limit_bytes {
            self.memory_limit_bytes = Some(self.memory_limit_bytes.map_or(l, |m| m.max(l)));
        }
    }
}

/// The processes that share one label set, summed; `counters` also holds the totals of its
/// processes that are gone.
#[derive(Debug, Default)]
struct Group {
    counters: Counters,
    active: u64,
    preexisting: u64,
    /// Every port a process of the set listens on.
    ports: std::collections::BTreeSet<u16>,
    idle: u64,
    stalled: u64,
    send_queue_bytes: u64,
    recv_queue_bytes: u64,
    ages: AgeBuckets,
    clients: u64,
    clients_over_quota: u64,
    /// Only processes whose connections were classified (live ones) carry the quota.
    client_quota: Option<u64>,
    resources: ResourcesAcc,
    forecast: ForecastAcc,
    sse: SseAcc,
}

/// The SSE gauges of a label set (its counters are in [`Counters::sse`]).
#[derive(Debug, Default)]
struct SseAcc {
    active: u64,
    idle: u64,
    quietest_seconds: f64,
    clients: u64,
    clients_over_quota: u64,
}

impl Group {
    /// The gauges of a live (or recently exited) process; its counters are added by the caller.
    fn add(&mut self, p: &ProcessSnapshot) {
        self.active += p.websocket.connections_active;
        self.preexisting += p.preexisting_connections;
        self.ports.extend(&p.listening_ports);
        self.idle += p.connections_idle;
        self.stalled += p.connections_stalled;
        self.send_queue_bytes += p.send_queue_bytes;
        self.recv_queue_bytes += p.recv_queue_bytes;
        let (a, b) = (&mut self.ages, &p.connection_ages);
        a.under_5m += b.under_5m;
        a.from_5m_to_30m += b.from_5m_to_30m;
        a.from_30m_to_2h += b.from_30m_to_2h;
        a.over_2h += b.over_2h;
        let c = &p.clients;
        self.clients += c.distinct;
        self.clients_over_quota += c.at_or_over_quota;
        if !c.key_source.is_empty() {
            self.client_quota = Some(self.client_quota.map_or(c.quota, |q| q.max(c.quota)));
        }
        if let Some(r) = &p.resources {
            self.resources.add(r);
        }
        let (sse, streams) = (&mut self.sse, &p.sse_streams);
        sse.active += p.sse.streams_active;
        sse.idle += streams.idle;
        sse.quietest_seconds = sse.quietest_seconds.max(streams.max_seconds_since_last_event);
        sse.clients += streams.clients.distinct;
        sse.clients_over_quota += streams.clients.at_or_over_quota;
    }
}

/// The series of one label set, without its identity labels.
fn process_series(g: &Group, out: &mut Vec<Pending>) {
    prediction_process_series(&g.forecast, out);
    let c = &g.counters;
    let ws = &c.ws;
    let mut push = |spec: &'static Spec, labels: Labels, value: Value| out.push((spec, labels, value));
    push(&WS_ACTIVE, vec![], Value::Int(g.active));
    push(&WS_OPENED, vec![], Value::Int(ws.connections_opened));
    push(&WS_CLOSED, vec![], Value::Int(ws.connections_closed));
    push(&WS_HANDSHAKES_FAILED, vec![], Value::Int(ws.handshakes_failed));
    push(&WS_ABNORMAL, vec![], Value::Int(ws.abnormal_closes));
    push(&WS_OUT_OF_SYNC, vec![], Value::Int(ws.out_of_sync));
    push(&WS_UNPARSED_CONNS, vec![], Value::Int(ws.unparsed_connections));
    push(&WS_UNPARSED_BYTES, vec![], Value::Int(ws.unparsed_bytes));
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
    for (spec, h) in [&WS_HANDSHAKE_LATENCY, &WS_PING_RTT, &WS_RESPONSE_LATENCY].into_iter().zip(&c.latency) {
        push(spec, vec![], Value::Hist(Box::new(*h)));
    }
    push(&WS_IDLE, vec![], Value::Int(g.idle));
    push(&WS_STALLED, vec![], Value::Int(g.stalled));
    push(&WS_SEND_QUEUE, vec![], Value::Int(g.send_queue_bytes));
    push(&WS_RECV_QUEUE, vec![], Value::Int(g.recv_queue_bytes));
    let a = &g.ages;
    for (age, n) in [("under_5m", a.under_5m), ("5m_30m", a.from_5m_to_30m), ("30m_2h", a.from_30m_to_2h), ("over_2h", a.over_2h)]
    {
        push(&WS_AGES, vec![("age", age.into())], Value::Int(n));
    }
    push(&WS_CLIENTS, vec![], Value::Int(g.clients));
    push(&WS_CLIENTS_OVER_QUOTA, vec![], Value::Int(g.clients_over_quota));
    if let Some(q) = g.client_quota {
        push(&WS_CLIENT_QUOTA, vec![], Value::Int(q));
    }
    push(&WS_PREEXISTING, vec![], Value::Int(g.preexisting));
    push(&WS_UNFOLLOWED, vec![], Value::Int(c.unfollowed));
    push(&TCP_ACCEPTED, vec![], Value::Int(c.tcp_accepted));
    push(&TCP_NOT_WEBSOCKET, vec![], Value::Int(c.not_websocket));
    sse_series(g, &mut push);
    if let Some(v) = c.cpu_seconds {
        push(&PROC_CPU, vec![], Value::Float(v));
    }
    for port in &g.ports {
        push(&PROC_LISTEN_PORT, vec![("port", port.to_string())], Value::Int(1));
    }

    let r = &g.resources;
    if r.sampled {
        if let Some(n) = r.open_fds {
            push(&PROC_OPEN_FDS, vec![], Value::Int(n));
        }
        if let Some(l) = r.fd_limit_soft.filter(|_| !r.fd_limit_unknown) {
            push(&PROC_FD_LIMIT, vec![], Value::Int(l));
        }
        if let Some(v) = r.fd_usage_ratio {
            push(&PROC_FD_RATIO, vec![], Value::Float(v));
        }
        push(&PROC_RSS, vec![], Value::Int(r.rss_bytes));
        push(&PROC_THREADS, vec![], Value::Int(r.threads));
        if let Some(l) = r.memory_limit_bytes {
            push(&PROC_MEMORY_LIMIT, vec![], Value::Int(l));
        }
    }
}

/// The SSE families of one label set.
/// Only label sets that have served a stream get them: a WebSocket-only host carries no
/// zero SSE series (the first stream starts them; `rate()` reads that as a new series).
fn sse_series(g: &Group, push: &mut impl FnMut(&'static Spec, Labels, Value)) {
    let (c, live) = (&g.counters.sse, &g.sse);
    if c.streams_opened == 0 && live.active == 0 {
        return;
    }
    push(&SSE_ACTIVE, vec![], Value::Int(live.active));
    push(&SSE_OPENED, vec![], Value::Int(c.streams_opened));
    push(&SSE_CLOSED, vec![], Value::Int(c.streams_closed));
    for (by, n) in [("client", c.closed_by_client), ("server", c.closed_by_server)] {
        push(&SSE_ENDED_BY, vec![("by", by.into())], Value::Int(n));
    }
    push(&SSE_EVENTS, vec![], Value::Int(c.events_sent));
    push(&SSE_COMMENTS, vec![], Value::Int(c.comments_sent));
    push(&SSE_PAYLOAD, vec![], Value::Int(c.payload_bytes_sent));
    push(&SSE_RESUMED, vec![], Value::Int(c.resumed_streams));
    push(&SSE_UNPARSEABLE, vec![], Value::Int(c.unparseable_streams));
    push(&SSE_OUT_OF_SYNC, vec![], Value::Int(c.out_of_sync));
    push(&SSE_IDLE, vec![], Value::Int(live.idle));
    push(&SSE_QUIETEST, vec![], Value::Float(live.quietest_seconds));
    push(&SSE_CLIENTS, vec![], Value::Int(live.clients));
    push(&SSE_CLIENTS_OVER_QUOTA, vec![], Value::Int(live.clients_over_quota));
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

// ---------------------------------------------------------------------------------------------
// Forecasts (`predict/`): `scope` is `process` (with the label set's labels) or `host`.

const PRED_HORIZON: Spec = gauge("wsguard_prediction_horizon_seconds", "Forecast horizon.");
const PRED_USAGE: Spec = gauge(
    "wsguard_prediction_usage_ratio",
    "Current usage of the resource as a share of its limit (the highest of a label set).",
);
const PRED_ETA: Spec = gauge(
    "wsguard_prediction_eta_seconds",
    "Forecast seconds until the resource reaches its limit (the soonest of a label set; absent when it is not heading there).",
);
const PRED_ETA_LOW: Spec =
    gauge("wsguard_prediction_eta_low_seconds", "Lower bound of the ETA interval (fastest plausible growth).");
const PRED_ETA_HIGH: Spec =
    gauge("wsguard_prediction_eta_high_seconds", "Upper bound of the ETA interval (slowest plausible growth).");
const PRED_RES_PROB: Spec = gauge(
    "wsguard_prediction_resource_probability",
    "Probability that the resource reaches its limit within the horizon (the highest of a label set).",
);
const PRED_CRISIS_PROB: Spec = gauge(
    "wsguard_prediction_crisis_probability",
    "Probability of a crisis (a limit reached) within the forecast horizon (the highest of a label set).",
);
const PRED_CONFIDENCE: Spec = gauge(
    "wsguard_prediction_confidence",
    "Confidence in the crisis forecast, 0 to 1 (of the most probable crisis of a label set).",
);
const PRED_CLASS: Spec = gauge(
    "wsguard_prediction_crisis_class",
    "Crisis class (leak, surge, saturation, none) of the most probable crisis; always 1.",
);
const PRED_PRECISION: Spec = gauge("wsguard_prediction_precision", "Scored forecasts that came true, share of all scored.");
const PRED_RECALL: Spec = gauge("wsguard_prediction_recall", "Exhaustions that were forecast, share of all exhaustions.");
const PRED_LEAD: Spec = gauge("wsguard_prediction_lead_time_seconds", "Mean realised lead time of true forecasts.");
const PRED_ETA_ERROR: Spec = gauge("wsguard_prediction_eta_error_ratio", "Mean relative ETA error of true forecasts.");
const PRED_FORECASTS: Spec = counter("wsguard_prediction_forecasts_total", "Forecasts made (predictive condition persisted).");
const PRED_TP: Spec =
    counter("wsguard_prediction_true_positives_total", "Forecasts followed by the exhaustion within the horizon.");
const PRED_FP: Spec = counter("wsguard_prediction_false_positives_total", "Forecasts whose horizon passed without exhaustion.");
const PRED_EXHAUSTIONS: Spec = counter("wsguard_prediction_exhaustions_total", "Resources that reached their exhaustion level.");

/// One resource's forecast over the processes of a label set: what matters most wins (highest
/// usage and probability, soonest ETA).
#[derive(Debug, Default, Clone)]
struct ResourceAcc {
    usage: Option<f64>,
    eta: Option<f64>,
    eta_low: Option<f64>,
    eta_high: Option<f64>,
    probability: Option<f64>,
}

fn min_f(acc: &mut Option<f64>, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        *acc = Some(acc.map_or(v, |m| m.min(v)));
    }
}

impl ResourceAcc {
    fn add(&mut self, r: &ResourcePrediction) {
        max_f(&mut self.usage, Some(r.usage_ratio));
        min_f(&mut self.eta, r.eta_seconds);
        min_f(&mut self.eta_low, r.eta_low_seconds);
        min_f(&mut self.eta_high, r.eta_high_seconds);
        max_f(&mut self.probability, Some(r.probability));
    }

    fn push(&self, scope: &str, resource: &str, mut push: impl FnMut(&'static Spec, Labels, Value)) {
        let l = || vec![("scope", scope.to_owned()), ("resource", resource.to_owned())];
        for (spec, v) in [
            (&PRED_USAGE, self.usage),
            (&PRED_RES_PROB, self.probability),
            (&PRED_ETA, self.eta),
            (&PRED_ETA_LOW, self.eta_low),
            (&PRED_ETA_HIGH, self.eta_high),
        ] {
            if let Some(v) = v {
                push(spec, l(), Value::Float(v));
            }
        }
    }
}

/// The forecasts of a label set's processes.
#[derive(Debug, Default, Clone)]
struct ForecastAcc {
    resources: BTreeMap<String, ResourceAcc>,
    /// (probability, confidence, class) of the most probable crisis.
    crisis: Option<(f64, f64, &'static str)>,
}

impl ForecastAcc {
    fn add(&mut self, p: &ProcessPrediction) {
        for r in &p.resources {
            self.resources.entry(r.resource.clone()).or_default().add(r);
        }
        let c = &p.crisis;
        if self.crisis.is_none_or(|(prob, ..)| c.probability > prob) {
            self.crisis = Some((c.probability, c.confidence, c.class.as_str()));
        }
    }
}

fn crisis_series(scope: &str, (p, conf, class): (f64, f64, &str), mut push: impl FnMut(&'static Spec, Labels, Value)) {
    push(&PRED_CRISIS_PROB, vec![("scope", scope.to_owned())], Value::Float(p));
    push(&PRED_CONFIDENCE, vec![("scope", scope.to_owned())], Value::Float(conf));
    push(&PRED_CLASS, vec![("scope", scope.to_owned()), ("class", class.to_owned())], Value::Int(1));
}

fn prediction_process_series(f: &ForecastAcc, out: &mut Vec<Pending>) {
    let mut push = |spec: &'static Spec, labels: Labels, value: Value| out.push((spec, labels, value));
    for (resource, r) in &f.resources {
        r.push("process", resource, &mut push);
    }
    if let Some(c) = f.crisis {
        crisis_series("process", c, push);
    }
}

/// Horizon, host forecasts and the scores of each forecast rule.
fn prediction_fixed_series(p: &Predictions, out: &mut Families) {
    out.push(&PRED_HORIZON, Vec::new(), Value::Float(p.horizon_seconds));
    for r in &p.host.resources {
        let mut acc = ResourceAcc::default();
        acc.add(r);
        acc.push("host", &r.resource, |spec, l, v| out.push(spec, l, v));
    }
    let c = &p.host.crisis;
    crisis_series("host", (c.probability, c.confidence, c.class.as_str()), |spec, l, v| out.push(spec, l, v));
    for s in &p.scores.rules {
        let l = || vec![("alertname", s.rule.clone())];
        for (spec, v) in [
            (&PRED_PRECISION, s.precision),
            (&PRED_RECALL, s.recall),
            (&PRED_LEAD, s.lead_time_seconds),
            (&PRED_ETA_ERROR, s.eta_error_ratio),
        ] {
            if let Some(v) = v {
                out.push(spec, l(), Value::Float(v));
            }
        }
        for (spec, n) in [
            (&PRED_FORECASTS, s.predictions),
            (&PRED_TP, s.true_positives),
            (&PRED_FP, s.false_positives),
            (&PRED_EXHAUSTIONS, s.exhaustions),
        ] {
            out.push(spec, l(), Value::Int(n));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's own activity: alerts, notifications, remediation (no process labels).

const ALERTS_FIRING: Spec =
    gauge("wsguard_alerts_firing", "Alerts firing now, by severity (silenced and acknowledged ones included).");
const ALERTS_PENDING: Spec = gauge("wsguard_alerts_pending", "Alerts whose condition holds, waiting for their rule's for.");
const ALERT_TRANSITIONS: Spec = counter(
    "wsguard_alert_transitions_total",
    "Alert state changes since the agent started, by kind (pending, cancelled, firing, resolved, escalated, severity_changed).",
);
const NOTIFY_SENT: Spec =
    counter("wsguard_notifications_sent_total", "Notifications a channel delivered since the agent started.");
const NOTIFY_FAILED: Spec = counter(
    "wsguard_notifications_failed_total",
    "Delivery attempts that failed since the agent started (the notice stays queued and is retried unless dropped).",
);
const NOTIFY_DROPPED: Spec = counter(
    "wsguard_notifications_dropped_total",
    "Notifications given up since the agent started (too old, or rejected too many times in a row).",
);
const NOTIFY_QUEUED: Spec = gauge("wsguard_notifications_queued", "Notifications waiting in the outbox for their channel.");
const REMEDIATION_RUNS: Spec = counter(
    "wsguard_remediation_runs_total",
    "Remediation runs since the agent started, by action and result (ok, failed, cancelled, dry_run, noop, skipped).",
);

/// The agent's own activity, read from the alert service, the notifier and the remediation
/// audit when the exposition is built.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Activity {
    /// Present when alerting runs.
    pub alerts: Option<AlertActivity>,
    pub notifications: Vec<ChannelActivity>,
    /// Runs by (action, result); present when remediation is configured.
    pub remediation: Option<BTreeMap<(String, String), u64>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct AlertActivity {
    /// Firing alerts by severity (`info`, `warning`, `critical`; all three always present).
    pub firing: BTreeMap<String, u64>,
    pub pending: u64,
    /// State changes by kind since the agent started.
    pub transitions: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChannelActivity {
    pub channel: String,
    pub kind: String,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub queued: u64,
}

fn activity_series(a: &Activity, out: &mut Families) {
    if let Some(al) = &a.alerts {
        for (severity, n) in &al.firing {
            out.push(&ALERTS_FIRING, vec![("severity", severity.clone())], Value::Int(*n));
        }
        out.push(&ALERTS_PENDING, Vec::new(), Value::Int(al.pending));
        for (kind, n) in &al.transitions {
            out.push(&ALERT_TRANSITIONS, vec![("transition", kind.clone())], Value::Int(*n));
        }
    }
    for c in &a.notifications {
        let l = || vec![("channel", c.channel.clone()), ("kind", c.kind.clone())];
        out.push(&NOTIFY_SENT, l(), Value::Int(c.sent));
        out.push(&NOTIFY_FAILED, l(), Value::Int(c.failed));
        out.push(&NOTIFY_DROPPED, l(), Value::Int(c.dropped));
        out.push(&NOTIFY_QUEUED, l(), Value::Int(c.queued));
    }
    for ((action, result), n) in a.remediation.iter().flatten() {
        out.push(&REMEDIATION_RUNS, vec![("action", action.clone()), ("result", result.clone())], Value::Int(*n));
    }
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
        if !value.is_finite() {
            return;
        }
        let i = *self.index.get(spec.name).expect("every Spec is listed in FAMILIES");
        self.families[i].samples.push((labels, value));
    }

    fn series(&self) -> usize {
        self.families.iter().flat_map(|f| &f.samples).map(|(_, v)| v.lines()).sum()
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
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(f.spec.name, f.spec.help, None, kind)?;
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(&mut metric, value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, value)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `name{labels} value`: the sample line of a gauge, and of a counter in the 0.0.4 format;
/// a histogram's `_sum`, `_count` and cumulative `_bucket{le}` lines.
fn encode_value(enc: &mut MetricEncoder, value: &Value) -> fmt::Result {
    match value {
        Value::Int(v) => enc.encode_gauge(v),
        Value::Float(v) => enc.encode_gauge(v),
        Value::Hist(h) => {
            let buckets: Vec<(f64, u64)> = Hist::bounds().zip(h.buckets).collect();
            enc.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count, &buckets, None)
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // snapshots are built as Default + assignments
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;
    use crate::{
        model::clients::ClientsSnapshot,
        model::resources::HostResources,
        model::snapshot::{Frames, Latencies, Quantiles},
        model::sse::{SseStats, SseStreams},
    };

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

    /// The probe's histogram of these latencies (nanoseconds), as the tracker reports it.
    fn latencies(ns: &[u64]) -> Quantiles {
        let mut h = [0u64; wsguard_common::hist::BUCKETS];
        for &v in ns {
            h[wsguard_common::hist::bucket(v)] += 1;
        }
        Quantiles::from_hist(&h, ns.iter().sum())
    }

    /// A snapshot exercising every metric.
    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        s.agent.kernel = "6.1.0-test".into();
        s.timestamp = "2024-05-01T12:00:00.500Z".into();
        s.agent.version = "0.1.0".into();
        s.agent.started_at = "2024-05-01T11:00:00Z".into();
        s.agent.interval_seconds = 5.0;
        s.agent.snapshot_ms = 12.5;
        s.probe.attached = true;
        s.probe.mode = "socket".into();
        s.probe.events_received = 42;
        s.probe.programs = vec![crate::model::probe::ProgramStats {
            program: "wsg_sys_exit".into(),
            run_count: 1000,
            run_time_ns: 150_000,
            avg_ns_per_run: Some(150.0),
        }];
        s.probe.health = crate::model::probe::ProbeHealth {
            conn_map_full: 1,
            proc_map_full: 2,
            ring_drops: 3,
            walk_budget_exceeded: 4,
            read_faults: 5,
            close_code_map_full: 6,
            sk_storage_full: 0,
            ended_unattributed: 0,
            tls_map_full: 0,
            tls_unlinked: 0,
            tls_unseen: 0,
            conn_map_entries: 7,
            conn_map_capacity: 65536,
            unfollowed_connections: 0,
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
        p.latency = Latencies {
            handshake: latencies(&[500_000, 1_000_000, 1_000_000, 2_000_000, 3_000_000]),
            ping_rtt: latencies(&[250_000, 250_000, 250_000, 250_000]),
            // No samples: every bucket, _sum and _count 0.
            response: Quantiles::default(),
        };
        p.connections_idle = 2;
        p.connections_stalled = 1;
        p.send_queue_bytes = 4096;
        p.recv_queue_bytes = 512;
        p.connection_ages = AgeBuckets { under_5m: 1, from_5m_to_30m: 0, from_30m_to_2h: 2, over_2h: 0 };
        p.clients =
            ClientsSnapshot { key_source: "remote_ip".into(), distinct: 2, quota: 20, at_or_over_quota: 0, top: Vec::new() };
        p.resources = Some(ProcessResources {
            pid: 1234,
            systemd_unit: Some("chat.service".into()),
            open_fds: Some(100),
            fd_limit_soft: Some(1024),
            fd_usage_ratio: Some(100.0 / 1024.0),
            rss_bytes: 52_428_800,
            threads: 11,
            cpu_percent: Some(12.5),
            cpu_seconds_total: Some(12.5),
            memory_limit_bytes: Some(1 << 30),
            ..Default::default()
        });
        s.host = HostResources {
            cpu_percent: Some(37.5),
            memory_used_ratio: Some(0.25),
            load_1: Some(1.5),
            tcp_sockets_inuse: Some(120),
            listen_overflows_total: Some(3),
            listen_drops_total: Some(5),
            conntrack_count: Some(200),
            conntrack_max: Some(262_144),
            ephemeral_ports_in_use: Some(10),
            ephemeral_ports_usage_ratio: Some(0.5),
            ..Default::default()
        };
        p.sse = SseStats {
            streams_opened: 9,
            streams_active: 4,
            streams_closed: 5,
            events_sent: 1200,
            comments_sent: 30,
            payload_bytes_sent: 64_000,
            resumed_streams: 3,
            closed_by_client: 4,
            closed_by_server: 1,
            unparseable_streams: 1,
            out_of_sync: 2,
        };
        p.sse_streams = SseStreams {
            idle: 2,
            max_seconds_since_last_event: 95.5,
            clients: ClientsSnapshot {
                key_source: "remote_ip".into(),
                distinct: 3,
                quota: 20,
                at_or_over_quota: 1,
                top: Vec::new(),
            },
        };
        s.totals = p.websocket.clone();
        s.sse_totals = p.sse.clone();
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
        let id = r#"comm="node",listen_port="8080",unit="chat.service""#;
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
                &format!("wsguard_websocket_preexisting_connections{{{id}}} 1"),
                &format!("wsguard_tcp_connections_accepted_total{{{id}}} 9"),
                &format!("wsguard_tcp_connections_not_websocket_total{{{id}}} 4"),
                "# TYPE wsguard_websocket_handshake_latency_seconds histogram",
                // 0.5 ms lies in the probe's bucket [458752, 524288) ns, 1 ms in [917504,
                // 1048576), 2 ms in [1835008, 2097152), 3 ms in [2621440, 3145728): under 2^22.
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.000262144",{id}}} 0"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.000524288",{id}}} 1"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.001048576",{id}}} 3"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.002097152",{id}}} 4"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.004194304",{id}}} 5"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="17.179869184",{id}}} 5"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="+Inf",{id}}} 5"#),
                &format!("wsguard_websocket_handshake_latency_seconds_sum{{{id}}} 0.0075"),
                &format!("wsguard_websocket_handshake_latency_seconds_count{{{id}}} 5"),
                "# TYPE wsguard_websocket_ping_rtt_seconds histogram",
                &format!(r#"wsguard_websocket_ping_rtt_seconds_bucket{{le="0.000262144",{id}}} 4"#),
                &format!("wsguard_websocket_ping_rtt_seconds_sum{{{id}}} 0.001"),
                &format!("wsguard_websocket_ping_rtt_seconds_count{{{id}}} 4"),
                "# TYPE wsguard_websocket_response_latency_seconds histogram",
                &format!(r#"wsguard_websocket_response_latency_seconds_bucket{{le="+Inf",{id}}} 0"#),
                &format!("wsguard_websocket_response_latency_seconds_sum{{{id}}} 0.0"),
                &format!("wsguard_websocket_response_latency_seconds_count{{{id}}} 0"),
                &format!("wsguard_websocket_connections_idle{{{id}}} 2"),
                &format!("wsguard_websocket_connections_stalled{{{id}}} 1"),
                &format!("wsguard_websocket_send_queue_bytes{{{id}}} 4096"),
                &format!("wsguard_websocket_recv_queue_bytes{{{id}}} 512"),
                &format!(r#"wsguard_websocket_connection_age_connections{{{id},age="under_5m"}} 1"#),
                &format!(r#"wsguard_websocket_connection_age_connections{{{id},age="5m_30m"}} 0"#),
                &format!(r#"wsguard_websocket_connection_age_connections{{{id},age="30m_2h"}} 2"#),
                &format!(r#"wsguard_websocket_connection_age_connections{{{id},age="over_2h"}} 0"#),
                &format!("wsguard_websocket_clients{{{id}}} 2"),
                &format!("wsguard_websocket_clients_at_or_over_quota{{{id}}} 0"),
                &format!("wsguard_websocket_client_quota{{{id}}} 20"),
                "# TYPE wsguard_sse_streams_active gauge",
                &format!("wsguard_sse_streams_active{{{id}}} 4"),
                "# TYPE wsguard_sse_streams_opened_total counter",
                &format!("wsguard_sse_streams_opened_total{{{id}}} 9"),
                &format!("wsguard_sse_streams_closed_total{{{id}}} 5"),
                &format!(r#"wsguard_sse_stream_ends_total{{{id},by="client"}} 4"#),
                &format!(r#"wsguard_sse_stream_ends_total{{{id},by="server"}} 1"#),
                &format!("wsguard_sse_events_total{{{id}}} 1200"),
                &format!("wsguard_sse_comments_total{{{id}}} 30"),
                &format!("wsguard_sse_payload_bytes_total{{{id}}} 64000"),
                &format!("wsguard_sse_resumed_streams_total{{{id}}} 3"),
                &format!("wsguard_sse_unparseable_streams_total{{{id}}} 1"),
                &format!("wsguard_sse_out_of_sync_total{{{id}}} 2"),
                &format!("wsguard_sse_streams_idle{{{id}}} 2"),
                &format!("wsguard_sse_quietest_stream_seconds{{{id}}} 95.5"),
                &format!("wsguard_sse_clients{{{id}}} 3"),
                &format!("wsguard_sse_clients_at_or_over_quota{{{id}}} 1"),
                "wsguard_host_sse_streams_active 4",
                &format!("wsguard_process_open_fds{{{id}}} 100"),
                &format!("wsguard_process_fd_limit_soft{{{id}}} 1024"),
                &format!("wsguard_process_fd_usage_ratio{{{id}}} 0.09765625"),
                &format!("wsguard_process_resident_memory_bytes{{{id}}} 52428800"),
                "# TYPE wsguard_process_cpu_seconds_total counter",
                &format!("wsguard_process_cpu_seconds_total{{{id}}} 12.5"),
                &format!(r#"wsguard_process_listen_port_info{{{id},port="8080"}} 1"#),
                &format!("wsguard_process_threads{{{id}}} 11"),
                &format!("wsguard_process_memory_limit_bytes{{{id}}} 1073741824"),
                "wsguard_host_websocket_connections_active 3",
                "wsguard_host_websocket_processes 1",
                "wsguard_host_cpu_usage_ratio 0.375",
                "wsguard_host_memory_used_ratio 0.25",
                "wsguard_host_load1 1.5",
                "wsguard_host_tcp_sockets_inuse 120",
                "# TYPE wsguard_host_listen_overflows_total counter",
                "wsguard_host_listen_overflows_total 3",
                "wsguard_host_listen_drops_total 5",
                "wsguard_host_conntrack_entries 200",
                "wsguard_host_conntrack_max 262144",
                "wsguard_host_ephemeral_ports_in_use 10",
                "wsguard_host_ephemeral_ports_usage_ratio 0.5",
                "wsguard_probe_attached 1",
                "wsguard_probe_info{mode=\"socket\"} 1",
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
                r#"wsguard_probe_runs_total{program="wsg_sys_exit"} 1000"#,
                r#"wsguard_probe_run_time_seconds_total{program="wsg_sys_exit"} 0.00015"#,
                "wsguard_snapshot_duration_seconds 0.0125",
                "wsguard_snapshot_timestamp_seconds 1714564800.5",
                "wsguard_snapshot_interval_seconds 5.0",
                "wsguard_agent_start_time_seconds 1714561200.0",
                r#"wsguard_build_info{version="0.1.0",probe_mode="socket",kernel="6.1.0-test"} 1"#,
                "wsguard_metrics_series_dropped 0",
            ],
        );
        // 12 frame series: every opcode in both directions, zeros included.
        assert_eq!(text.lines().filter(|l| l.starts_with("wsguard_websocket_frames_total{")).count(), 12);
        // Every bound of every histogram, +Inf included.
        let buckets = text.lines().filter(|l| l.starts_with("wsguard_websocket_handshake_latency_seconds_bucket{")).count();
        assert_eq!(buckets, super::super::keep::LE_BUCKETS);
        // Every family of FAMILIES is in the sample (a new family needs a value here); forecast
        // families need forecasts (predict::tests checks them), activity families activity.
        let own = ["wsguard_prediction_", "wsguard_alert", "wsguard_notifications_", "wsguard_remediation_"];
        for f in FAMILIES.iter().filter(|f| !own.iter().any(|o| f.name.starts_with(o))) {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{} missing from the sample", f.name);
        }
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
        assert!(
            text.contains(&format!(r#"wsguard_build_info{{version="{}",probe_mode="",kernel=""}} 1"#, env!("CARGO_PKG_VERSION")))
        );
    }

    /// SSE families appear only for label sets that served a stream, sum over processes that
    /// share a label set, and their counters keep a gone process's totals (monotonic).
    #[test]
    fn sse_series_only_where_streams_were_served_and_stay_monotonic() {
        let cfg = MetricsConfig::default();
        let ws_only = proc(50, "ws", &[7070], 1);
        let mut a = proc(100, "py", &[8000], 0);
        a.sse = SseStats { streams_opened: 5, streams_active: 2, events_sent: 40, resumed_streams: 1, ..Default::default() };
        let mut b = proc(200, "py", &[8000], 0);
        b.sse = SseStats { streams_opened: 3, streams_active: 3, events_sent: 2, resumed_streams: 2, ..Default::default() };
        let mut s = Snapshot { processes: vec![ws_only.clone(), a, b.clone()], ..Default::default() };
        s.sse_totals.streams_active = 5;
        let mut kept = Kept::default();
        kept.observe(&s, &cfg, 0.0);
        let text = render_with(&s, &Extras { kept: Some(&kept), ..Default::default() }, &cfg);
        check_exposition(&text);
        let id = r#"comm="py",listen_port="8000",unit="""#;
        assert_has(
            &text,
            &[
                &format!("wsguard_sse_streams_active{{{id}}} 5"),
                &format!("wsguard_sse_streams_opened_total{{{id}}} 8"),
                &format!("wsguard_sse_events_total{{{id}}} 42"),
                &format!("wsguard_sse_resumed_streams_total{{{id}}} 3"),
                "wsguard_host_sse_streams_active 5",
            ],
        );
        assert!(!text.contains(r#"wsguard_sse_streams_active{comm="ws""#), "{text}");

        // Process 100 goes away: its totals stay in the label set's counters.
        let s = Snapshot { processes: vec![ws_only, b], ..Default::default() };
        kept.observe(&s, &cfg, 10.0);
        let text = render_with(&s, &Extras { kept: Some(&kept), ..Default::default() }, &cfg);
        assert_has(
            &text,
            &[
                &format!("wsguard_sse_streams_active{{{id}}} 3"),
                &format!("wsguard_sse_streams_opened_total{{{id}}} 8"),
                &format!("wsguard_sse_events_total{{{id}}} 42"),
            ],
        );
    }

    /// Under `max_series`, a label set busy with SSE streams outranks an idle one.
    #[test]
    fn max_series_keeps_label_sets_with_open_streams() {
        let quiet = proc(1, "quiet", &[7000], 0);
        let mut streams = proc(2, "sse", &[8000], 0);
        streams.sse = SseStats { streams_opened: 50, streams_active: 40, ..Default::default() };
        let s = Snapshot { processes: vec![quiet, streams], ..Default::default() };
        let full = render(&s, &MetricsConfig::default());
        let quiet_lines = full.lines().filter(|l| l.contains(r#"comm="quiet""#)).count();
        let total = full.lines().filter(|l| !l.starts_with('#')).count();
        let text = render(&s, &MetricsConfig { max_series: total - quiet_lines, ..Default::default() });
        assert!(text.contains(r#"wsguard_sse_streams_active{comm="sse",listen_port="8000",unit=""} 40"#), "{text}");
        assert!(!text.contains(r#"comm="quiet""#), "{text}");
    }

    #[test]
    fn processes_sharing_a_label_set_are_summed() {
        let mut s = Snapshot::default();
        let mut a = proc(100, "node", &[8080], 3);
        a.websocket.frames_received.text = 5;
        a.websocket.close_codes_received.insert("1000".into(), 2);
        a.latency.handshake = latencies(&[1_000_000; 5]);
        let mut b = proc(200, "node", &[8080], 4);
        b.websocket.frames_received.text = 7;
        b.websocket.close_codes_received.insert("1000".into(), 3);
        b.websocket.close_codes_received.insert("1006".into(), 1);
        b.latency.handshake = latencies(&[4_000_000; 6]);
        let c = proc(300, "node", &[9090], 1);
        s.processes = vec![a, b, c];

        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        let id = r#"comm="node",listen_port="8080",unit="""#;
        assert_has(
            &text,
            &[
                &format!("wsguard_websocket_connections_active{{{id}}} 7"),
                &format!("wsguard_websocket_connections_opened_total{{{id}}} 11"),
                &format!(r#"wsguard_websocket_frames_total{{{id},direction="received",opcode="text"}} 12"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="received",code="1000"}} 5"#),
                &format!(r#"wsguard_websocket_close_codes_total{{{id},direction="received",code="1006"}} 1"#),
                r#"wsguard_websocket_connections_active{comm="node",listen_port="9090",unit=""} 1"#,
            ],
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("wsguard_websocket_connections_active{")).count(), 2);
        // Histograms add up bucket by bucket: 5 × 1 ms and 6 × 4 ms (under 2^22 ns).
        assert_has(
            &text,
            &[
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.001048576",{id}}} 5"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.002097152",{id}}} 5"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.004194304",{id}}} 11"#),
                &format!("wsguard_websocket_handshake_latency_seconds_sum{{{id}}} 0.029"),
                &format!("wsguard_websocket_handshake_latency_seconds_count{{{id}}} 11"),
            ],
        );

        // With pid labels every process is its own series.
        let text = render(&s, &MetricsConfig { pid_label: true, ..Default::default() });
        check_exposition(&text);
        assert_has(
            &text,
            &[
                r#"wsguard_websocket_connections_active{comm="node",listen_port="8080",unit="",pid="100"} 3"#,
                r#"wsguard_websocket_connections_active{comm="node",listen_port="8080",unit="",pid="200"} 4"#,
                r#"wsguard_websocket_connections_active{comm="node",listen_port="9090",unit="",pid="300"} 1"#,
            ],
        );
    }

    #[test]
    fn newer_fields_aggregate_by_their_rules() {
        let mut s = Snapshot::default();
        let unit = |u: &str, fds: u64, limit: Option<u64>, cpu: Option<f64>, mem: Option<u64>| ProcessResources {
            systemd_unit: Some(u.into()),
            open_fds: Some(fds),
            fd_limit_soft: limit,
            fd_usage_ratio: limit.map(|l| fds as f64 / l as f64),
            rss_bytes: 1000,
            threads: 2,
            cpu_seconds_total: cpu,
            memory_limit_bytes: mem,
            ..Default::default()
        };
        let clients = |distinct, over| ClientsSnapshot {
            key_source: "remote_ip".into(),
            distinct,
            quota: 20,
            at_or_over_quota: over,
            top: Vec::new(),
        };
        let mut a = proc(1, "node", &[8080], 3);
        a.latency.handshake = latencies(&[2_000_000; 10]);
        a.connections_idle = 1;
        a.connection_ages.over_2h = 2;
        a.clients = clients(3, 1);
        a.resources = Some(unit("chat.service", 256, Some(1024), Some(10.0), Some(1 << 30)));
        let mut b = proc(2, "node", &[8080], 4);
        b.latency.handshake = latencies(&[3_000_000; 30]);
        b.connections_idle = 2;
        b.connection_ages.over_2h = 1;
        b.clients = clients(2, 0);
        b.resources = Some(unit("chat.service", 768, Some(1024), None, Some(1 << 29)));
        // The same server in another unit is another label set; one process without a soft
        // limit there hides the set's limit.
        let mut c = proc(3, "node", &[8080], 1);
        c.resources = Some(unit("other.service", 10, None, None, None));
        // Exited: no resources, no classified connections: no resource or quota series.
        let mut d = proc(4, "node", &[9000], 0);
        d.exited = true;
        d.latency.handshake = latencies(&[5_000_000]);
        s.processes = vec![a, b, c, d];

        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        let id = r#"comm="node",listen_port="8080",unit="chat.service""#;
        assert_has(
            &text,
            &[
                // Histograms: buckets, count and sum add up.
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.002097152",{id}}} 10"#),
                &format!(r#"wsguard_websocket_handshake_latency_seconds_bucket{{le="0.004194304",{id}}} 40"#),
                &format!("wsguard_websocket_handshake_latency_seconds_count{{{id}}} 40"),
                &format!("wsguard_websocket_handshake_latency_seconds_sum{{{id}}} 0.11"),
                &format!("wsguard_websocket_connections_idle{{{id}}} 3"),
                &format!(r#"wsguard_websocket_connection_age_connections{{{id},age="over_2h"}} 3"#),
                &format!("wsguard_websocket_clients{{{id}}} 5"),
                &format!("wsguard_websocket_clients_at_or_over_quota{{{id}}} 1"),
                &format!("wsguard_websocket_client_quota{{{id}}} 20"),
                &format!("wsguard_process_open_fds{{{id}}} 1024"),
                &format!("wsguard_process_fd_limit_soft{{{id}}} 2048"),
                &format!("wsguard_process_fd_usage_ratio{{{id}}} 0.75"),
                &format!("wsguard_process_resident_memory_bytes{{{id}}} 2000"),
                &format!("wsguard_process_cpu_seconds_total{{{id}}} 10.0"),
                &format!("wsguard_process_threads{{{id}}} 4"),
                &format!("wsguard_process_memory_limit_bytes{{{id}}} 1073741824"),
                r#"wsguard_process_open_fds{comm="node",listen_port="8080",unit="other.service"} 10"#,
                r#"wsguard_websocket_handshake_latency_seconds_count{comm="node",listen_port="9000",unit=""} 1"#,
            ],
        );
        let other = r#"unit="other.service""#;
        for absent in ["wsguard_process_fd_limit_soft", "wsguard_process_fd_usage_ratio", "wsguard_process_cpu_seconds_total"] {
            assert!(!text.contains(&format!("{absent}{{comm=\"node\",listen_port=\"8080\",{other}}}")), "{absent}: {text}");
        }
        let exited = r#"listen_port="9000""#;
        for l in text.lines().filter(|l| l.contains(exited)) {
            let listen = l.starts_with("wsguard_process_listen_port_info");
            assert!(listen || !l.starts_with("wsguard_process_") && !l.starts_with("wsguard_websocket_client_quota"), "{l}");
        }
        // Host resources the host did not provide are absent.
        assert!(!text.contains("wsguard_host_cpu_usage_ratio"), "{text}");
        assert!(!text.contains("wsguard_host_conntrack"), "{text}");
    }

    #[test]
    fn histograms_count_all_their_lines_against_max_series() {
        let mut s = Snapshot::default();
        let mut p = proc(1, "srv", &[80], 1);
        p.latency.handshake = latencies(&[1_000_000]);
        s.processes.push(p);
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(text.contains(&format!("wsguard_metrics_series {series}\n")), "{text}");
        // A cap one line short of the whole exposition drops the label set.
        let text = render(&s, &MetricsConfig { max_series: series - 1, ..Default::default() });
        check_exposition(&text);
        assert!(!text.contains("wsguard_websocket_"), "{text}");
    }

    #[test]
    fn listen_port_label_is_one_port() {
        let mut s = Snapshot::default();
        s.processes = vec![proc(1, "srv", &[9229, 8080, 8080], 1), proc(2, "gone", &[], 0)];
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        let id = "comm=\"srv\",listen_port=\"8080\",unit=\"\"";
        assert_has(
            &text,
            &[
                &format!("wsguard_websocket_connections_active{{{id}}} 1"),
                &format!(r#"wsguard_process_listen_port_info{{{id},port="8080"}} 1"#),
                &format!(r#"wsguard_process_listen_port_info{{{id},port="9229"}} 1"#),
                r#"wsguard_websocket_connections_active{comm="gone",listen_port="",unit=""} 0"#,
            ],
        );
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, labels, _) = parse_sample(l).unwrap();
            for (k, v) in labels.iter().filter(|(k, _)| k == "listen_port" || k == "port") {
                assert!(v.is_empty() || v.parse::<u16>().is_ok(), "{k}={v:?}: {l}");
            }
        }
    }

    /// The value of the sample `name{labels}` in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// A label set's counters never go down while its processes exit and leave the snapshot;
    /// an exited process keeps its unit; the retired totals end `RETIRED_FOR` after the last
    /// process of the set went away.
    #[test]
    fn counters_stay_monotonic_when_a_process_goes() {
        use super::super::keep::RETIRED_FOR;
        let cfg = MetricsConfig::default();
        let res = |cpu: f64| ProcessResources {
            systemd_unit: Some("chat.service".into()),
            cpu_seconds_total: Some(cpu),
            ..Default::default()
        };
        let mut a = proc(100, "node", &[8080], 1);
        a.resources = Some(res(2.0));
        a.latency.handshake = latencies(&[1_000_000; 3]);
        a.websocket.frames_received.text = 10;
        let mut b = proc(200, "node", &[8080], 1);
        b.resources = Some(res(3.0));
        b.latency.handshake = latencies(&[1_000_000; 3]);
        b.websocket.frames_received.text = 5;
        let id = r#"comm="node",listen_port="8080",unit="chat.service""#;
        let mut kept = Kept::default();
        let mut s = Snapshot::default();
        let mut at = 1000.0;
        let step = |s: &Snapshot, kept: &mut Kept, at: f64| {
            kept.observe(s, &cfg, at);
            let text = render_with(s, &Extras { kept: Some(kept), ..Default::default() }, &cfg);
            check_exposition(&text);
            let v = |n: &str| value(&text, &format!("{n}{{{id}}}"));
            let frames = value(&text, &format!(r#"wsguard_websocket_frames_total{{{id},direction="received",opcode="text"}}"#));
            (
                v("wsguard_websocket_connections_opened_total"),
                v("wsguard_process_cpu_seconds_total"),
                v("wsguard_websocket_handshake_latency_seconds_count"),
                frames,
            )
        };
        s.processes = vec![a.clone(), b.clone()];
        let full = (Some(6.0), Some(5.0), Some(6.0), Some(15.0));
        assert_eq!(step(&s, &mut kept, at), full);
        // `a` exits: no /proc any more, its final numbers are still reported, under its unit.
        a.exited = true;
        a.resources = None;
        a.websocket.connections_active = 0;
        s.processes = vec![a.clone(), b.clone()];
        at += 5.0;
        assert_eq!(step(&s, &mut kept, at), full);
        // `a` leaves the snapshot: its totals stay in the label set.
        s.processes = vec![b.clone()];
        at += 300.0;
        assert_eq!(step(&s, &mut kept, at), full);
        // Without what the exporter keeps, the counter would have gone down (the old behaviour).
        let plain = render(&s, &cfg);
        assert_eq!(value(&plain, &format!("wsguard_websocket_connections_opened_total{{{id}}}")), Some(3.0));
        // `b` moves on a little, then goes too: still monotonic, nothing active.
        b.websocket.connections_opened += 1;
        s.processes = vec![b.clone()];
        at += 5.0;
        assert_eq!(step(&s, &mut kept, at), (Some(7.0), Some(5.0), Some(6.0), Some(15.0)));
        s.processes.clear();
        at += 5.0;
        assert_eq!(step(&s, &mut kept, at), (Some(7.0), Some(5.0), Some(6.0), Some(15.0)));
        // Kept for RETIRED_FOR after the last process of the set went away, then the series end.
        at += RETIRED_FOR;
        assert_eq!(step(&s, &mut kept, at).0, Some(7.0));
        at += 1.0;
        assert_eq!(step(&s, &mut kept, at), (None, None, None, None));
    }

    /// A process that exited before /proc/PID was read has no comm: it gets `unidentified`,
    /// never a series whose labels are all empty.
    #[test]
    fn unidentified_processes_are_labelled() {
        let mut s = Snapshot::default();
        let mut p = proc(7, "", &[], 0);
        p.exited = true;
        s.processes.push(p);
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert_has(&text, &[r#"wsguard_websocket_connections_opened_total{comm="unidentified",listen_port="",unit=""} 2"#]);
        assert!(!text.contains(r#"comm="""#), "{text}");
    }

    #[test]
    fn retired_label_sets_are_bounded() {
        use super::super::keep::MAX_RETIRED_SETS;
        let cfg = MetricsConfig::default();
        let mut kept = Kept::default();
        let mut s = Snapshot::default();
        for i in 0..(MAX_RETIRED_SETS + 10) as u32 {
            s.processes = vec![proc(i + 1, &format!("p{i}"), &[], 0)];
            kept.observe(&s, &cfg, 1e5 + f64::from(i));
        }
        s.processes.clear();
        kept.observe(&s, &cfg, 1e5 + (MAX_RETIRED_SETS + 10) as f64);
        assert_eq!(kept.retired().count(), MAX_RETIRED_SETS);
        // The oldest went first.
        assert!(kept.retired().all(|(id, _)| id.comm != "p0" && id.comm != "p9"));
    }

    /// The agent's own alerts, notifications and remediation, with `build_info`, pass promtool.
    #[test]
    fn activity_is_exported() {
        let a = Activity {
            alerts: Some(AlertActivity {
                firing: [("info", 0), ("warning", 2), ("critical", 1)].into_iter().map(|(k, n)| (k.to_owned(), n)).collect(),
                pending: 4,
                transitions: [("firing".to_owned(), 3), ("resolved".to_owned(), 1)].into_iter().collect(),
            }),
            notifications: vec![ChannelActivity {
                channel: "ops".into(),
                kind: "slack".into(),
                sent: 5,
                failed: 2,
                dropped: 1,
                queued: 3,
            }],
            remediation: Some([(("close-idle".to_owned(), "ok".to_owned()), 2)].into_iter().collect()),
        };
        let text = render_with(&sample(), &Extras { activity: Some(&a), ..Default::default() }, &MetricsConfig::default());
        check_exposition(&text);
        promtool(&text);
        assert_has(
            &text,
            &[
                r#"wsguard_alerts_firing{severity="critical"} 1"#,
                r#"wsguard_alerts_firing{severity="info"} 0"#,
                "wsguard_alerts_pending 4",
                r#"wsguard_alert_transitions_total{transition="firing"} 3"#,
                r#"wsguard_notifications_sent_total{channel="ops",kind="slack"} 5"#,
                r#"wsguard_notifications_failed_total{channel="ops",kind="slack"} 2"#,
                r#"wsguard_notifications_dropped_total{channel="ops",kind="slack"} 1"#,
                r#"wsguard_notifications_queued{channel="ops",kind="slack"} 3"#,
                r#"wsguard_remediation_runs_total{action="close-idle",result="ok"} 2"#,
            ],
        );
        for f in FAMILIES.iter().filter(|f| f.name.starts_with("wsguard_alert") || f.name.contains("notifications_")) {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{} missing", f.name);
        }
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
        assert_has(
            &text,
            &[r#"wsguard_websocket_close_codes_total{comm="srv",listen_port="80",unit="",direction="sent",code="other"} 37"#],
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = Snapshot::default();
        let nasty = "a\"b\\c\nd";
        s.processes.push(proc(1, nasty, &[80], 2));
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert_has(&text, &[r#"wsguard_websocket_connections_active{comm="a\"b\\c\nd",listen_port="80",unit=""} 2"#]);
        let parsed =
            parse_sample(text.lines().find(|l| l.starts_with("wsguard_websocket_connections_active{")).unwrap()).unwrap();
        assert_eq!(parsed.1[0], ("comm".to_owned(), nasty.to_owned()));
    }

    #[test]
    fn non_finite_values_are_left_out() {
        let mut s = sample();
        s.agent.snapshot_ms = f64::NAN;
        s.processes[0].resources.as_mut().unwrap().fd_usage_ratio = Some(f64::INFINITY);
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert!(!text.contains("wsguard_snapshot_duration_seconds "), "{text}");
        assert!(!text.contains("wsguard_process_fd_usage_ratio{"), "{text}");
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: MetricsConfig = toml::from_str("").unwrap();
        assert_eq!(c, MetricsConfig { pid_label: false, max_series: 10_000 });
        let c: MetricsConfig = toml::from_str("pid_label = true").unwrap();
        assert_eq!(c, MetricsConfig { pid_label: true, max_series: 10_000 });
        assert!(toml::from_str::<MetricsConfig>("max_serie = 5").is_err());
    }

    /// Processes in a Kubernetes pod get namespace/pod/container labels; others do not.
    #[test]
    fn kubernetes_labels_only_in_pods() {
        let mut s = Snapshot::default();
        let mut in_pod = proc(100, "node", &[8080], 3);
        in_pod.kubernetes =
            Some(crate::model::resources::Pod { namespace: "prod".into(), pod: "chat-0".into(), container: Some("chat".into()) });
        s.processes = vec![in_pod, proc(200, "python3", &[9090], 1)];
        let text = render(&s, &MetricsConfig::default());
        check_exposition(&text);
        assert_has(
            &text,
            &[
                r#"wsguard_websocket_connections_active{comm="node",listen_port="8080",unit="",namespace="prod",pod="chat-0",container="chat"} 3"#,
                r#"wsguard_websocket_connections_active{comm="python3",listen_port="9090",unit=""} 1"#,
            ],
        );
    }

    /// `wsguard_…` names in a text, with any histogram/summary sample suffix taken off when the
    /// base is a family (`x_bucket` → `x`), and `{…}`/`[…]` selectors cut.
    fn names_in(text: &str) -> BTreeSet<String> {
        let families: HashSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("wsguard_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            rest = &tail[end..];
            // Part of another word or path, or a prefix (`wsguard_probe_*`).
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.' || c == '-')
                || name.ends_with('_')
            {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| families.contains(b)))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        out
    }

    /// docs/metrics.md names exactly the families the binary exports (its tables and prose);
    /// the shipped dashboard and alert rules use no name the binary does not export.
    #[test]
    fn families_are_well_formed_and_documented_both_ways() {
        let doc = include_str!("../../../docs/metrics.md");
        let mut names = HashSet::new();
        for f in FAMILIES {
            assert!(names.insert(f.name), "duplicate family {}", f.name);
            assert!(f.name.starts_with("wsguard_"), "{}", f.name);
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(!f.help.is_empty() && !f.help.contains(['\\', '\n']), "{}", f.name);
            assert!(doc.contains(&format!("`{}`", f.name)), "{} is not in docs/metrics.md", f.name);
        }
        let exported: BTreeSet<String> = FAMILIES.iter().map(|f| f.name.to_owned()).collect();
        // README, every doc, the dashboard, the alert rules and the Kubernetes manifests.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("README.md"), root.join("config/grafana/wsguard-dashboard.json")];
        for dir in ["docs", "config/prometheus", "config/kubernetes/base", "config"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "md" || x == "yml" || x == "yaml" || x == "toml") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 15, "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let unknown: Vec<String> = names_in(&text).into_iter().filter(|n| !exported.contains(n)).collect();
            assert!(unknown.is_empty(), "{} names metrics the binary does not export: {unknown:?}", f.display());
        }
    }

    #[test]
    fn the_name_scanner_finds_what_docs_name() {
        let found = names_in("`wsguard_websocket_handshake_latency_seconds_bucket{le=\"1\"}` and wsguard_nope_total, not /etc/wsguard_x, my_wsguard_y or wsguard_probe_*");
        let want: BTreeSet<String> =
            ["wsguard_websocket_handshake_latency_seconds", "wsguard_nope_total"].into_iter().map(String::from).collect();
        assert_eq!(found, want);
    }

    /// Runs the real `promtool check metrics` (Debian package `prometheus`) when it is installed.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::{
            io::Write,
            process::{Command, Stdio},
        };
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `cargo xtask setup` installs it; CI must not pass without the real linter.
                assert!(std::env::var_os("CI").is_none(), "promtool is not on PATH under CI (apt-get install prometheus)");
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
                kind = match k {
                    "counter" => "counter",
                    "gauge" => "gauge",
                    "histogram" => "histogram",
                    _ => panic!("unexpected type {line}"),
                };
                assert_eq!(k == "counter", name.ends_with("_total"), "{line}");
                current = Some(name.to_owned());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line}");
                let (name, labels, v) = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                let family = current.as_deref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
                let has_quantile = labels.iter().any(|(k, _)| k == "quantile");
                let has_le = labels.iter().any(|(k, _)| k == "le");
                if kind == "histogram" {
                    // `name_bucket{…,le="b"}` (integer, cumulative), `name_sum{…}`, `name_count{…}`.
                    match name.strip_prefix(family) {
                        Some("_bucket") => assert!(has_le && v >= 0.0 && v.fract() == 0.0, "{line}"),
                        Some("_sum") => assert!(!has_le && v >= 0.0, "{line}"),
                        Some("_count") => assert!(!has_le && v >= 0.0 && v.fract() == 0.0, "{line}"),
                        _ => panic!("sample outside its family: {line}"),
                    }
                    assert!(!has_quantile, "{line}");
                } else {
                    assert_eq!(family, name, "sample outside its family: {line}");
                    // promtool: "non-summary metrics should not have \"quantile\" label".
                    assert!(!has_quantile, "{line}");
                }
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
        for bad in
            ["x{a=\"1\"", "x{a=1} 1", "x{a=\"\\q\"} 1", "x{a=\"1\",a=\"2\"} 1", "1x 1", "x{__a=\"1\"} 1", "x abc", "x{a=\"1\"}1"]
        {
            assert!(parse_sample(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_sample(r#"x_total{a="q\"\\",b=""} 1.5"#).unwrap(),
            ("x_total".into(), vec![("a".into(), "q\"\\".into()), ("b".into(), String::new())], 1.5)
        );
    }

    #[test]
    fn forecasts_join_their_label_set_and_pass_promtool() {
        use crate::predict::{scenarios, PredictConfig, Predictor};
        let s = scenarios::leak(10.0, 100.0);
        let mut p = Predictor::new(PredictConfig::default());
        let cfg = MetricsConfig::default();
        let mut last = None;
        for (i, snap) in s.snapshots.iter().enumerate() {
            let pr = p.observe(snap);
            if i == s.snapshots.len() * 3 / 4 {
                let text = render_with(snap, &Extras { predictions: Some(&pr), ..Default::default() }, &cfg);
                // The process's label set (no pid without [metrics] pid_label).
                assert!(text.contains("wsguard_prediction_eta_seconds{comm=\"node\",listen_port=\"8080\",unit=\"\",scope=\"process\",resource=\"fds\"}"), "{text}");
                // Alert state lives in the alert engine (/api/v1/alerts, Alertmanager), not here.
                assert!(!text.contains("alert_firing"), "{text}");
                check_exposition(&text);
                promtool(&text);
                let with_pid = render_with(
                    snap,
                    &Extras { predictions: Some(&pr), ..Default::default() },
                    &MetricsConfig { pid_label: true, ..Default::default() },
                );
                assert!(with_pid.contains("wsguard_prediction_usage_ratio{comm=\"node\",listen_port=\"8080\",unit=\"\",pid=\"4242\",scope=\"process\",resource=\"fds\"}"), "{with_pid}");
                // max_series drops the label set's forecasts with it, and counts them.
                let capped = render_with(
                    snap,
                    &Extras { predictions: Some(&pr), ..Default::default() },
                    &MetricsConfig { max_series: 0, ..Default::default() },
                );
                assert!(!capped.contains("scope=\"process\""), "{capped}");
                assert!(capped.contains("wsguard_prediction_horizon_seconds 1800"), "{capped}");
            }
            last = Some((snap, pr));
        }
        let (snap, pr) = last.unwrap();
        let text = render_with(snap, &Extras { predictions: Some(&pr), ..Default::default() }, &cfg);
        for m in [
            "wsguard_prediction_precision{alertname=\"PredictedFdExhaustion\"} 1",
            "wsguard_prediction_recall{alertname=\"PredictedFdExhaustion\"} 1",
            "wsguard_prediction_lead_time_seconds{alertname=\"PredictedFdExhaustion\"}",
            "wsguard_prediction_eta_error_ratio{alertname=\"PredictedFdExhaustion\"}",
            "wsguard_prediction_true_positives_total{alertname=\"PredictedFdExhaustion\"} 1",
            "wsguard_prediction_crisis_probability{comm=\"node\",listen_port=\"8080\",unit=\"\",scope=\"process\"}",
            "wsguard_prediction_crisis_probability{scope=\"host\"}",
            "wsguard_prediction_confidence{",
        ] {
            assert!(text.contains(m), "{m} missing:\n{text}");
        }
        check_exposition(&text);
        promtool(&text);
    }

    /// `promtool check metrics` when installed (Debian package `prometheus`).
    fn promtool(text: &str) {
        use std::io::Write;
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            assert!(std::env::var_os("CI").is_none(), "promtool is not on PATH under CI (apt-get install prometheus)");
            eprintln!("promtool not installed; skipping the lint");
            return;
        };
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
