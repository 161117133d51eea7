//! Rule definitions (`[[alert.rules]]`) and the default rule set.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::Severity;

/// What one alert instance is about; decides the identifying labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Host,
    #[default]
    Process,
    /// One instance per (process, client key).
    Client,
}

/// Supported expressions over a snapshot (and, for `prediction.*`, the forecasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Host: WebSocket connections open over all processes.
    #[serde(rename = "host.websocket.connections_active")]
    HostConnectionsActive,
    #[serde(rename = "host.memory_used_ratio")]
    HostMemoryUsedRatio,
    /// Listen queue overflows since the last snapshot (`ListenOverflows` delta).
    #[serde(rename = "host.listen_overflows_delta")]
    HostListenOverflowsDelta,
    #[serde(rename = "host.conntrack_usage_ratio")]
    HostConntrackUsageRatio,
    #[serde(rename = "host.ephemeral_ports_usage_ratio")]
    HostEphemeralPortsUsageRatio,
    #[serde(rename = "process.websocket.connections_active")]
    ConnectionsActive,
    /// Like `process.websocket.connections_active`, only for processes that listen.
    #[serde(rename = "process.listening.connections_active")]
    ListeningConnectionsActive,
    #[serde(rename = "process.resources.fd_usage_ratio")]
    FdUsageRatio,
    /// Connections of the busiest client (scope process) or of each client (scope client).
    #[serde(rename = "process.clients.top_connections")]
    ClientConnections,
    /// Active connections that are not stalled, as a share of active (1 with none active).
    #[serde(rename = "process.connection_health_ratio")]
    ConnectionHealthRatio,
    /// Over the interval: upgrades / (upgrades + failed handshakes); none without attempts.
    #[serde(rename = "process.handshake_success_ratio")]
    HandshakeSuccessRatio,
    /// Over the interval: abnormal closes / closes; none without closes.
    #[serde(rename = "process.abnormal_close_ratio")]
    AbnormalCloseRatio,
    #[serde(rename = "process.latency.response.p95_ms")]
    ResponseP95Ms,
    #[serde(rename = "process.latency.handshake.p95_ms")]
    HandshakeP95Ms,
    #[serde(rename = "process.latency.ping_rtt.p95_ms")]
    PingRttP95Ms,
    /// Bytes queued in the kernel towards clients on the process's WebSocket sockets.
    #[serde(rename = "process.send_queue_bytes")]
    SendQueueBytes,
    #[serde(rename = "process.connections_stalled")]
    ConnectionsStalled,
    /// Ring buffer drops since the last snapshot.
    #[serde(rename = "probe.ring_drops")]
    ProbeRingDrops,
    /// Everything the probe could not see since the last snapshot: ring drops, full maps.
    #[serde(rename = "probe.lost_events")]
    ProbeLostEvents,
    /// Connections (and SSE streams) newly marked out of sync (invalid frame header, lost
    /// stream framing) since the last snapshot.
    #[serde(rename = "probe.out_of_sync")]
    ProbeOutOfSync,
    /// Host: SSE streams open over all processes.
    #[serde(rename = "host.sse.streams_active")]
    HostSseStreamsActive,
    /// SSE streams the process holds open.
    #[serde(rename = "process.sse.streams_active")]
    SseStreamsActive,
    /// Open SSE streams with no event for `[limits] idle_after` (keep-alive comments do not
    /// count as events).
    #[serde(rename = "process.sse.streams_idle")]
    SseStreamsIdle,
    /// Seconds since the last event of the process's quietest open SSE stream.
    #[serde(rename = "process.sse.seconds_since_last_event")]
    SseSecondsSinceLastEvent,
    /// Over the interval, per second: SSE streams opened (churn).
    #[serde(rename = "process.sse.streams_opened_per_second")]
    SseStreamsOpenedPerSecond,
    /// Over the interval, per second: SSE streams ended (churn).
    #[serde(rename = "process.sse.streams_closed_per_second")]
    SseStreamsClosedPerSecond,
    /// Over the interval, per second: SSE streams whose request carried `Last-Event-ID`
    /// (clients reconnecting and resuming).
    #[serde(rename = "process.sse.resumed_streams_per_second")]
    SseResumedStreamsPerSecond,
    /// SSE streams of the busiest client (scope process) or of each client (scope client).
    #[serde(rename = "process.sse.clients.top_streams")]
    SseClientStreams,
    /// Crisis probability over the horizon (process or host scope), from the forecasts.
    #[serde(rename = "prediction.crisis_probability")]
    CrisisProbability,
    /// The forecast input of `PredictedFdExhaustion` (per process): 1 when the fd forecast
    /// (ETA within the horizon AND floor, persisted) holds, 2 at the backstop, else 0.
    #[serde(rename = "prediction.fd_exhaustion")]
    PredictionFdExhaustion,
    /// The forecast input of `PredictedCrisis`, the same way from the crisis probability and
    /// confidence; in scope `process` it covers the processes and the host (label `scope=host`).
    #[serde(rename = "prediction.crisis")]
    PredictionCrisis,
}

impl Metric {
    /// Interval metrics: computed against the previous snapshot, so none on the first one.
    pub fn needs_previous(self) -> bool {
        use Metric::*;
        matches!(
            self,
            HostListenOverflowsDelta
                | ProbeRingDrops
                | ProbeLostEvents
                | ProbeOutOfSync
                | HandshakeSuccessRatio
                | AbnormalCloseRatio
                | SseStreamsOpenedPerSecond
                | SseStreamsClosedPerSecond
                | SseResumedStreamsPerSecond
        )
    }

    /// Scopes the metric can be evaluated in.
    pub fn scopes(self) -> &'static [Scope] {
        use Metric::*;
        match self {
            HostConnectionsActive
            | HostMemoryUsedRatio
            | HostListenOverflowsDelta
            | HostConntrackUsageRatio
            | HostEphemeralPortsUsageRatio
            | ProbeRingDrops
            | ProbeLostEvents
            | ProbeOutOfSync
            | HostSseStreamsActive => &[Scope::Host],
            ClientConnections | SseClientStreams => &[Scope::Process, Scope::Client],
            CrisisProbability | PredictionCrisis => &[Scope::Process, Scope::Host],
            _ => &[Scope::Process],
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    #[default]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// `warning = 0.7` or `warning = { fire = 0.7, clear = 0.65 }`. An active level stays active
/// while the value still satisfies the comparison against `clear` (default: `fire`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    At(f64),
    Hysteresis {
        fire: f64,
        #[serde(default)]
        clear: Option<f64>,
    },
}

impl Threshold {
    pub fn fire(&self) -> f64 {
        match *self {
            Threshold::At(v) | Threshold::Hysteresis { fire: v, .. } => v,
        }
    }
    pub fn clear(&self) -> f64 {
        match *self {
            Threshold::At(v) => v,
            Threshold::Hysteresis { fire, clear } => clear.unwrap_or(fire),
        }
    }
    fn hyst(fire: f64, clear: f64) -> Self {
        Threshold::Hysteresis { fire, clear: Some(clear) }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Annotations {
    /// Templated: `{{ .labels.NAME }}`, `{{ .value }}`, `{{ .threshold }}`, `{{ .severity }}`.
    pub summary: String,
    pub message: String,
    pub action: String,
    pub runbook_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub scope: Scope,
    pub metric: Metric,
    #[serde(default)]
    pub op: Op,
    #[serde(default)]
    pub warning: Option<Threshold>,
    #[serde(default)]
    pub critical: Option<Threshold>,
    /// The condition must hold this long before the alert fires (pending until then).
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// Keep firing this long after the condition stopped holding.
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Annotations,
}

impl Rule {
    /// Check a rule; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("rule name {:?} must be non-empty [A-Za-z0-9_]", self.name));
        }
        if !self.metric.scopes().contains(&self.scope) {
            return Err(format!("rule {}: metric {:?} cannot be evaluated in scope {:?}", self.name, self.metric, self.scope));
        }
        if self.warning.is_none() && self.critical.is_none() {
            return Err(format!("rule {}: needs a warning or a critical threshold", self.name));
        }
        for t in [self.warning, self.critical].into_iter().flatten() {
            // The clear threshold must not be stricter than the fire threshold.
            let ok = match self.op {
                Op::Gt | Op::Ge => t.clear() <= t.fire(),
                Op::Lt | Op::Le => t.clear() >= t.fire(),
            };
            if !ok || !t.fire().is_finite() || !t.clear().is_finite() {
                return Err(format!("rule {}: clear threshold {} is on the wrong side of {}", self.name, t.clear(), t.fire()));
            }
        }
        Ok(())
    }

    /// The level the value is at, given the level the alert is at now (hysteresis): an active
    /// level holds until the value passes its clear threshold; a new level needs its fire one.
    pub fn level(&self, value: f64, active: Option<Severity>) -> Option<Severity> {
        let at =
            |t: Option<Threshold>, was: bool| t.is_some_and(|t| self.op.holds(value, if was { t.clear() } else { t.fire() }));
        if at(self.critical, active == Some(Severity::Critical)) {
            return Some(Severity::Critical);
        }
        if at(self.warning, active.is_some()) {
            return Some(Severity::Warning);
        }
        // Only a critical threshold, or the value is between critical's clear and warning's.
        if active.is_some() && self.warning.is_none() && at(self.critical, true) {
            return Some(Severity::Critical);
        }
        None
    }

    /// Threshold of a level (for templates).
    pub fn threshold(&self, s: Severity) -> Option<f64> {
        match s {
            Severity::Critical => self.critical.or(self.warning),
            _ => self.warning.or(self.critical),
        }
        .map(|t| t.fire())
    }
}

/// Numbers of the default rules that differ between profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    #[default]
    Production,
    Staging,
}

const RUNBOOK: &str = "https://github.com/wsguard/wsguard/blob/main/docs/alerts.md";

#[allow(clippy::too_many_arguments)]
fn rule(
    name: &str,
    scope: Scope,
    metric: Metric,
    op: Op,
    warning: Option<Threshold>,
    critical: Option<Threshold>,
    for_s: u64,
    summary: &str,
    action: &str,
) -> Rule {
    Rule {
        name: name.into(),
        scope,
        metric,
        op,
        warning,
        critical,
        for_: Duration::from_secs(for_s),
        keep_firing_for: Duration::ZERO,
        labels: BTreeMap::new(),
        annotations: Annotations {
            summary: summary.into(),
            message: String::new(),
            action: action.into(),
            runbook_url: format!("{RUNBOOK}#{}", name.to_lowercase()),
        },
    }
}

/// The default rules; `per_client_connections` is `[limits] per_client_connections`.
pub fn defaults(profile: Profile, per_client_connections: u64) -> Vec<Rule> {
    use Metric::*;
    use Op::*;
    use Scope::*;
    let h = Threshold::hyst;
    let some = Some;
    // (process warning, process critical, host warning, host critical) connection counts.
    let (pw, pc, hw, hc) = match profile {
        Profile::Production => (5_000.0, 10_000.0, 20_000.0, 40_000.0),
        Profile::Staging => (500.0, 1_000.0, 2_000.0, 4_000.0),
    };
    let mut rules = vec![
        rule(
            "ClientConnectionQuota",
            Client,
            ClientConnections,
            Ge,
            None,
            some(Threshold::At(per_client_connections as f64)),
            0,
            "Client {{ .labels.client }} holds {{ .value }} connections to {{ .labels.comm }} (pid {{ .labels.pid }}, port {{ .labels.listen_port }}); quota {{ .threshold }}",
            "Find the client's reconnect loop or leak; close its over-quota connections (remediation) or raise [limits] per_client_connections.",
        ),
        rule(
            "SseClientStreamQuota",
            Client,
            SseClientStreams,
            Ge,
            None,
            some(Threshold::At(per_client_connections as f64)),
            0,
            "Client {{ .labels.client }} holds {{ .value }} SSE streams to {{ .labels.comm }} (pid {{ .labels.pid }}, port {{ .labels.listen_port }}); quota {{ .threshold }}",
            "Find the client opening streams without closing old ones (tabs, a reconnect loop); close its idle streams (remediation) or raise [limits] per_client_connections.",
        ),
        rule(
            "WebSocketConnectionsHigh",
            Process,
            ConnectionsActive,
            Gt,
            some(h(pw, pw * 0.9)),
            some(h(pc, pc * 0.9)),
            120,
            "{{ .labels.comm }} (pid {{ .labels.pid }}) holds {{ .value }} WebSocket connections (threshold {{ .threshold }})",
            "Check for a connection leak or a traffic surge; scale out or shed load.",
        ),
        rule(
            "HostWebSocketConnectionsHigh",
            Host,
            HostConnectionsActive,
            Gt,
            some(h(hw, hw * 0.9)),
            some(h(hc, hc * 0.9)),
            120,
            "The host holds {{ .value }} WebSocket connections (threshold {{ .threshold }})",
            "Spread load over more hosts; check per-process alerts for the source.",
        ),
        rule(
            "ConnectionHealthLow",
            Process,
            ConnectionHealthRatio,
            Lt,
            some(h(0.8, 0.85)),
            some(h(0.6, 0.65)),
            60,
            "Only {{ .value }} of {{ .labels.comm }}'s (pid {{ .labels.pid }}) connections answer pings",
            "Look for stalled clients or a blocked event loop in the server.",
        ),
        rule(
            "HandshakeSuccessLow",
            Process,
            HandshakeSuccessRatio,
            Lt,
            some(h(0.95, 0.97)),
            some(h(0.90, 0.92)),
            120,
            "Handshake success of {{ .labels.comm }} (pid {{ .labels.pid }}) is {{ .value }}",
            "Check upgrade rejections (auth, origin, proxy headers) in the server's logs.",
        ),
        rule(
            "AbnormalCloseRateHigh",
            Process,
            AbnormalCloseRatio,
            Gt,
            some(h(0.05, 0.04)),
            some(h(0.20, 0.15)),
            120,
            "{{ .value }} of {{ .labels.comm }}'s (pid {{ .labels.pid }}) closes were abnormal",
            "Look for network resets, crashes of clients or proxies timing connections out.",
        ),
        rule(
            "ResponseLatencyHigh",
            Process,
            ResponseP95Ms,
            Gt,
            some(h(2_000.0, 1_800.0)),
            some(h(10_000.0, 9_000.0)),
            120,
            "p95 response latency of {{ .labels.comm }} (pid {{ .labels.pid }}) is {{ .value }} ms",
            "Profile the server: CPU saturation, blocking calls, slow downstreams.",
        ),
        rule(
            "NoActiveConnections",
            Process,
            ListeningConnectionsActive,
            Lt,
            some(Threshold::At(1.0)),
            None,
            600,
            "{{ .labels.comm }} (pid {{ .labels.pid }}) listens on {{ .labels.listen_port }} but has no WebSocket connections",
            "Check that clients can reach the server (load balancer, DNS, TLS termination).",
        ),
        rule(
            "FdUsageHigh",
            Process,
            FdUsageRatio,
            Gt,
            some(h(0.7, 0.65)),
            some(h(0.9, 0.85)),
            60,
            "{{ .labels.comm }} (pid {{ .labels.pid }}) uses {{ .value }} of its fd limit",
            "Look for a connection leak; raise LimitNOFILE if the load is legitimate.",
        ),
        rule(
            "ListenQueueOverflow",
            Host,
            HostListenOverflowsDelta,
            Gt,
            some(Threshold::At(0.0)),
            None,
            0,
            "{{ .value }} listen queue overflows since the last snapshot",
            "Servers accept too slowly: raise the backlog (somaxconn) or add accept capacity.",
        ),
        rule(
            "HostMemoryHigh",
            Host,
            HostMemoryUsedRatio,
            Gt,
            some(h(0.8, 0.75)),
            some(h(0.9, 0.85)),
            120,
            "Host memory use is {{ .value }}",
            "Find the process that grows; per-connection buffers add up with many connections.",
        ),
        rule(
            "SendQueueBacklog",
            Process,
            SendQueueBytes,
            Gt,
            some(h(1_048_576.0, 524_288.0)),
            some(h(16_777_216.0, 8_388_608.0)),
            60,
            "{{ .value }} bytes wait in the send queues of {{ .labels.comm }} (pid {{ .labels.pid }})",
            "Slow consumers: apply backpressure or drop clients that cannot keep up.",
        ),
        rule(
            "ProbeEventsLost",
            Host,
            ProbeLostEvents,
            Gt,
            some(Threshold::At(0.0)),
            None,
            0,
            "The probe lost {{ .value }} events since the last snapshot",
            "Raise probe.ring_buffer_bytes / probe.max_connections; counts are incomplete meanwhile.",
        ),
        rule(
            "ProbeOutOfSync",
            Host,
            ProbeOutOfSync,
            Gt,
            some(Threshold::At(0.0)),
            None,
            0,
            "{{ .value }} connections went out of sync (invalid frame headers)",
            "Check for non-RFC 6455 traffic or TLS in the process; report a parser bug if neither.",
        ),
        rule(
            "CrisisProbabilityHigh",
            Process,
            CrisisProbability,
            Gt,
            some(h(0.7, 0.6)),
            None,
            0,
            "Crisis probability of {{ .labels.comm }} (pid {{ .labels.pid }}) is {{ .value }}",
            "See /api/v1/predictions for the resource and the recommendation.",
        ),
    ];
    // Forecast rules: the condition (evidence, floor, persistence, backstop) is computed by
    // predict/ (`[predict]`); the rule fires as soon as it holds.
    let mut fd = rule(
        crate::predict::FD_RULE,
        Process,
        PredictionFdExhaustion,
        Ge,
        None,
        some(Threshold::At(1.0)),
        0,
        "{{ .labels.comm }} (pid {{ .labels.pid }}) holds {{ .forecast.current }} of {{ .forecast.limit }} fds ({{ .forecast.usage }}); ETA to exhaustion {{ .forecast.eta }} ({{ .forecast.eta_low }} to {{ .forecast.eta_high }}) [{{ .forecast.trigger }}]",
        "Find the connections that are never closed (idle ones first); close idle connections as a stopgap or raise LimitNOFILE to buy time.",
    );
    fd.labels.insert("severity".into(), "critical".into());
    fd.annotations.message = "{{ .forecast.recommendation }}".into();
    let mut crisis = rule(
        crate::predict::CRISIS_RULE,
        Process,
        PredictionCrisis,
        Ge,
        some(Threshold::At(1.0)),
        None,
        0,
        "{{ .forecast.class }} crisis forecast for {{ .forecast.resource }} ({{ .forecast.usage }} of the limit), ETA {{ .forecast.eta }}, p={{ .forecast.probability }}, confidence {{ .forecast.confidence }} [{{ .forecast.trigger }}]",
        "See the message and /api/v1/predictions for the resource and the recommendation.",
    );
    crisis.labels.insert("severity".into(), "warning".into());
    crisis.annotations.message = "{{ .forecast.recommendation }}".into();
    rules.push(fd);
    rules.push(crisis);
    for r in &mut rules {
        if matches!(r.name.as_str(), "ListenQueueOverflow" | "ProbeEventsLost" | "ProbeOutOfSync") {
            r.keep_firing_for = Duration::from_secs(600);
        }
    }
    rules
}

#[cfg(test)]
mod tests {

    /// Every default rule's runbook URL points at a heading of docs/alerts.md (GitHub's anchor of
    /// `### Name` is `#name`).
    #[test]
    fn runbook_anchors_exist() {
        let doc = include_str!("../../../docs/alerts.md");
        let anchors: std::collections::HashSet<String> =
            doc.lines().filter_map(|l| l.strip_prefix("### ")).map(|h| h.trim().to_lowercase()).collect();
        for r in super::defaults(super::Profile::Production, 20) {
            let url = &r.annotations.runbook_url;
            let (page, anchor) = url.rsplit_once('#').expect("runbook URL with an anchor");
            assert!(page.ends_with("docs/alerts.md"), "{url}");
            assert!(anchors.contains(anchor), "{}: no heading for #{anchor} in docs/alerts.md", r.name);
        }
    }
    use super::*;

    #[test]
    fn defaults_validate_and_parse_from_toml() {
        for p in [Profile::Production, Profile::Staging] {
            for r in defaults(p, 20) {
                r.validate().unwrap();
            }
        }
        #[derive(Deserialize)]
        struct W {
            rules: Vec<Rule>,
        }
        let w: W = toml::from_str(
            r#"
            [[rules]]
            name = "FdHot"
            metric = "process.resources.fd_usage_ratio"
            op = ">"
            warning = 0.7
            critical = { fire = 0.9, clear = 0.85 }
            for = "1m"
            keep_firing_for = "30s"
            labels = { team = "ops" }
            annotations = { summary = "fd {{ .value }}", runbook_url = "https://x" }
            "#,
        )
        .unwrap();
        let r = &w.rules[0];
        r.validate().unwrap();
        assert_eq!((r.for_, r.keep_firing_for), (Duration::from_secs(60), Duration::from_secs(30)));
        assert_eq!(r.critical.unwrap().clear(), 0.85);
        assert_eq!(r.warning.unwrap().clear(), 0.7);
        let bad = Rule { scope: Scope::Host, ..r.clone() };
        assert!(bad.validate().unwrap_err().contains("scope"));
        let bad = Rule { critical: Some(Threshold::hyst(0.9, 0.95)), ..r.clone() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn levels_with_hysteresis() {
        let r = defaults(Profile::Production, 20).into_iter().find(|r| r.name == "FdUsageHigh").unwrap();
        assert_eq!(r.level(0.68, None), None);
        assert_eq!(r.level(0.71, None), Some(Severity::Warning));
        assert_eq!(r.level(0.68, Some(Severity::Warning)), Some(Severity::Warning)); // above clear 0.65
        assert_eq!(r.level(0.64, Some(Severity::Warning)), None);
        assert_eq!(r.level(0.88, Some(Severity::Warning)), Some(Severity::Warning)); // not yet 0.9
        assert_eq!(r.level(0.91, Some(Severity::Warning)), Some(Severity::Critical));
        assert_eq!(r.level(0.87, Some(Severity::Critical)), Some(Severity::Critical)); // above 0.85
        assert_eq!(r.level(0.84, Some(Severity::Critical)), Some(Severity::Warning));
        let lt = defaults(Profile::Production, 20).into_iter().find(|r| r.name == "HandshakeSuccessLow").unwrap();
        assert_eq!(lt.level(0.94, None), Some(Severity::Warning));
        assert_eq!(lt.level(0.96, Some(Severity::Warning)), Some(Severity::Warning));
        assert_eq!(lt.level(0.98, Some(Severity::Warning)), None);
    }
}
