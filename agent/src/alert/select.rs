//! Reading rule metrics out of a snapshot: one `(labels, value)` instance per host, process or
//! (process, client). Interval metrics compare with the previous snapshot of the same pid.

use crate::{
    history::snapshot_time,
    model::snapshot::{ProcessSnapshot, Snapshot},
    predict::{Forecast, Predictions},
};

use super::{
    rule::{Metric, Scope},
    Labels,
};

/// One value of a rule's metric with the labels that identify where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub labels: Labels,
    pub value: f64,
    /// For `prediction.fd_exhaustion` / `prediction.crisis`: the forecast behind the value.
    pub forecast: Option<Forecast>,
}

/// Labels that identify a process: `comm`, `pid`, `listen_port` (sorted, comma-joined).
pub fn process_labels(p: &ProcessSnapshot) -> Labels {
    let mut ports = p.listening_ports.clone();
    ports.sort_unstable();
    let port = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    [("comm".to_string(), p.comm.clone()), ("pid".into(), p.pid.to_string()), ("listen_port".into(), port)].into()
}

fn delta(cur: u64, prev: Option<u64>) -> Option<f64> {
    // No previous reading, or a counter reset: no value this time.
    prev.filter(|p| *p <= cur).map(|p| (cur - p) as f64)
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// Values of `metric` in `scope`. Exited processes yield nothing (they are gone).
pub fn instances(
    metric: Metric,
    scope: Scope,
    s: &Snapshot,
    prev: Option<&Snapshot>,
    preds: Option<&Predictions>,
) -> Vec<Instance> {
    use Metric::*;
    let host =
        |v: Option<f64>| v.map(|value| vec![Instance { labels: Labels::new(), value, forecast: None }]).unwrap_or_default();
    let h = &s.host;
    let ph = prev.map(|p| &p.probe.health);
    match metric {
        HostConnectionsActive => return host(Some(s.totals.connections_active as f64)),
        HostSseStreamsActive => return host(Some(s.sse_totals.streams_active as f64)),
        HostMemoryUsedRatio => return host(h.memory_used_ratio),
        HostListenOverflowsDelta => return host(h.listen_overflows_delta.map(|v| v as f64)),
        HostConntrackUsageRatio => {
            return host(h.conntrack_count.zip(h.conntrack_max).and_then(|(c, m)| ratio(c as f64, m as f64)))
        }
        HostEphemeralPortsUsageRatio => return host(h.ephemeral_ports_usage_ratio),
        ProbeRingDrops => return host(delta(s.probe.health.ring_drops, ph.map(|p| p.ring_drops))),
        ProbeLostEvents => {
            let lost = |x: &crate::model::snapshot::Snapshot| {
                let hh = &x.probe.health;
                hh.ring_drops + hh.conn_map_full + hh.proc_map_full + hh.close_code_map_full
            };
            return host(delta(lost(s), prev.map(lost)));
        }
        ProbeOutOfSync => {
            // WebSocket connections and SSE streams alike.
            let lost = |x: &Snapshot| x.totals.out_of_sync + x.sse_totals.out_of_sync;
            return host(delta(lost(s), prev.map(lost)));
        }
        CrisisProbability if scope == Scope::Host => return host(preds.map(|p| p.host.crisis.probability)),
        CrisisProbability => {
            let Some(preds) = preds else { return Vec::new() };
            return preds
                .processes
                .iter()
                .filter(|pp| s.processes.iter().any(|p| p.pid == pp.pid && !p.exited))
                .map(|pp| Instance {
                    labels: [
                        ("comm".to_string(), pp.comm.clone()),
                        ("pid".into(), pp.pid.to_string()),
                        ("listen_port".into(), pp.listen_port.clone()),
                    ]
                    .into(),
                    value: pp.crisis.probability,
                    forecast: None,
                })
                .collect();
        }
        PredictionFdExhaustion | PredictionCrisis => return forecasts(metric, scope, s, preds),
        _ => {}
    }
    let dt = prev.and_then(|x| Some(snapshot_time(s)?.duration_since(snapshot_time(x)?).ok()?.as_secs_f64()));
    let mut out = Vec::new();
    for p in s.processes.iter().filter(|p| !p.exited) {
        let labels = process_labels(p);
        let before = prev.and_then(|x| x.processes.iter().find(|q| q.pid == p.pid && q.comm == p.comm));
        let w = &p.websocket;
        let d = |f: fn(&ProcessSnapshot) -> u64| delta(f(p), before.map(f));
        let per_second = |f: fn(&ProcessSnapshot) -> u64| d(f).zip(dt).and_then(|(n, dt)| ratio(n, dt));
        // SSE values only for processes that serve (or served) streams.
        let sse = p.sse.streams_opened > 0 || p.sse.streams_active > 0;
        let value = match metric {
            ConnectionsActive => Some(w.connections_active as f64),
            // "No connections" only means something for a process that listens.
            ListeningConnectionsActive => (!p.listening_ports.is_empty()).then_some(w.connections_active as f64),
            FdUsageRatio => p.resources.as_ref().and_then(|r| r.fd_usage_ratio),
            ClientConnections if scope == Scope::Client => {
                for c in &p.clients.top {
                    let mut l = labels.clone();
                    l.insert("client".into(), c.key.clone());
                    l.insert("client_key_source".into(), p.clients.key_source.clone());
                    out.push(Instance { labels: l, value: c.connections as f64, forecast: None });
                }
                None
            }
            ClientConnections => Some(p.clients.top.iter().map(|c| c.connections).max().unwrap_or(0) as f64),
            ConnectionHealthRatio => {
                let active = w.connections_active;
                Some(if active == 0 { 1.0 } else { (active - p.connections_stalled.min(active)) as f64 / active as f64 })
            }
            HandshakeSuccessRatio => {
                let ok = d(|x| x.websocket.connections_opened);
                let failed = d(|x| x.websocket.handshakes_failed);
                ok.zip(failed).and_then(|(o, f)| ratio(o, o + f))
            }
            AbnormalCloseRatio => {
                let ab = d(|x| x.websocket.abnormal_closes);
                let closed = d(|x| x.websocket.connections_closed);
                ab.zip(closed).and_then(|(a, c)| ratio(a, c))
            }
            ResponseP95Ms => p.latency.response.p95_ms,
            HandshakeP95Ms => p.latency.handshake.p95_ms,
            PingRttP95Ms => p.latency.ping_rtt.p95_ms,
            SendQueueBytes => Some(p.send_queue_bytes as f64),
            ConnectionsStalled => Some(p.connections_stalled as f64),
            SseStreamsActive => sse.then_some(p.sse.streams_active as f64),
            SseStreamsIdle => sse.then_some(p.sse_streams.idle as f64),
            SseSecondsSinceLastEvent => (p.sse.streams_active > 0).then_some(p.sse_streams.max_seconds_since_last_event),
            SseStreamsOpenedPerSecond => per_second(|x| x.sse.streams_opened).filter(|_| sse),
            SseStreamsClosedPerSecond => per_second(|x| x.sse.streams_closed).filter(|_| sse),
            SseResumedStreamsPerSecond => per_second(|x| x.sse.resumed_streams).filter(|_| sse),
            SseClientStreams if scope == Scope::Client => {
                let c = &p.sse_streams.clients;
                for t in &c.top {
                    let mut l = labels.clone();
                    l.insert("client".into(), t.key.clone());
                    l.insert("client_key_source".into(), c.key_source.clone());
                    out.push(Instance { labels: l, value: t.connections as f64, forecast: None });
                }
                None
            }
            SseClientStreams => sse.then(|| p.sse_streams.clients.top.iter().map(|c| c.connections).max().unwrap_or(0) as f64),
            _ => None,
        };
        if let Some(value) = value.filter(|v| v.is_finite()) {
            out.push(Instance { labels, value, forecast: None });
        }
    }
    out
}

/// Forecast rule inputs of the processes still alive (and, for a crisis, of the host).
fn forecasts(metric: Metric, scope: Scope, s: &Snapshot, preds: Option<&Predictions>) -> Vec<Instance> {
    let Some(preds) = preds else { return Vec::new() };
    let rule = match metric {
        Metric::PredictionFdExhaustion => crate::predict::FD_RULE,
        _ => crate::predict::CRISIS_RULE,
    };
    let pick = |fs: &[Forecast]| fs.iter().find(|f| f.rule == rule).cloned();
    let mut out = Vec::new();
    if scope == Scope::Process {
        for pp in preds.processes.iter().filter(|pp| s.processes.iter().any(|p| p.pid == pp.pid && !p.exited)) {
            if let Some(f) = pick(&pp.forecasts) {
                let labels: Labels = [
                    ("comm".to_string(), pp.comm.clone()),
                    ("pid".into(), pp.pid.to_string()),
                    ("listen_port".into(), pp.listen_port.clone()),
                ]
                .into();
                out.push(Instance { labels, value: f.value(), forecast: Some(f) });
            }
        }
    }
    if metric == Metric::PredictionCrisis {
        if let Some(f) = pick(&preds.host.forecasts) {
            let labels: Labels = [("scope".to_string(), "host".to_string())].into();
            out.push(Instance { labels, value: f.value(), forecast: Some(f) });
        }
    }
    out
}
