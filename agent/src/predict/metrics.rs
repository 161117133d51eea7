//! Prometheus text (0.0.4) for the forecasts, appended to `/metrics` after the snapshot's series.
//! Per-resource and per-process series carry `scope` (`process` or `host`), `comm`,
//! `listen_port` and `pid` (empty for the host); scores carry `alertname`.

use std::fmt::Write;

use super::{Predictions, ResourcePrediction};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family { name, help, kind, samples: Vec::new() }
    }
    fn push(&mut self, labels: String, v: f64) {
        self.samples.push((labels, v));
    }
    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (l, v) in &self.samples {
            let _ = writeln!(out, "{}{} {}", self.name, l, num(*v));
        }
    }
}

/// The forecast series for `/metrics`.
pub fn metrics_text(p: &Predictions) -> String {
    let mut usage = Family::new("wsguard_prediction_usage_ratio", "gauge", "Current usage of the resource as a share of its limit.");
    let mut eta = Family::new(
        "wsguard_prediction_eta_seconds",
        "gauge",
        "Forecast seconds until the resource reaches its limit (absent when it is not heading there).",
    );
    let mut eta_low = Family::new("wsguard_prediction_eta_low_seconds", "gauge", "Lower bound of the ETA interval (fastest plausible growth).");
    let mut eta_high = Family::new("wsguard_prediction_eta_high_seconds", "gauge", "Upper bound of the ETA interval (slowest plausible growth).");
    let mut res_prob = Family::new(
        "wsguard_prediction_resource_probability",
        "gauge",
        "Probability that the resource reaches its limit within the horizon.",
    );
    let mut prob = Family::new(
        "wsguard_prediction_crisis_probability",
        "gauge",
        "Probability of a crisis (a limit reached) within the forecast horizon.",
    );
    let mut conf = Family::new("wsguard_prediction_confidence", "gauge", "Confidence in the crisis forecast, 0 to 1.");
    let mut class = Family::new("wsguard_prediction_crisis_class", "gauge", "Crisis class (leak, surge, saturation, none); always 1.");
    let mut horizon = Family::new("wsguard_prediction_horizon_seconds", "gauge", "Forecast horizon.");
    horizon.push(String::new(), p.horizon_seconds);

    let mut resource = |scope: &str, comm: &str, port: &str, pid: &str, r: &ResourcePrediction| {
        let l = labels(&[("scope", scope), ("comm", comm), ("listen_port", port), ("pid", pid), ("resource", &r.resource)]);
        usage.push(l.clone(), r.usage_ratio);
        res_prob.push(l.clone(), r.probability);
        if let Some(e) = r.eta_seconds {
            eta.push(l.clone(), e);
        }
        if let Some(e) = r.eta_low_seconds {
            eta_low.push(l.clone(), e);
        }
        if let Some(e) = r.eta_high_seconds {
            eta_high.push(l, e);
        }
    };
    for pr in &p.processes {
        let pid = pr.pid.to_string();
        for r in &pr.resources {
            resource("process", &pr.comm, &pr.listen_port, &pid, r);
        }
    }
    for r in &p.host.resources {
        resource("host", "", "", "", r);
    }
    let crises = p
        .processes
        .iter()
        .map(|pr| (("process", pr.comm.as_str(), pr.listen_port.as_str(), pr.pid.to_string()), &pr.crisis))
        .chain(std::iter::once((("host", "", "", String::new()), &p.host.crisis)));
    for ((scope, comm, port, pid), c) in crises {
        let l = labels(&[("scope", scope), ("comm", comm), ("listen_port", port), ("pid", &pid)]);
        prob.push(l.clone(), c.probability);
        conf.push(l, c.confidence);
        let lc = labels(&[("scope", scope), ("comm", comm), ("listen_port", port), ("pid", &pid), ("class", c.class.as_str())]);
        class.push(lc, 1.0);
    }

    let mut precision = Family::new("wsguard_prediction_precision", "gauge", "Scored forecasts that came true, share of all scored.");
    let mut recall = Family::new("wsguard_prediction_recall", "gauge", "Exhaustions that were forecast, share of all exhaustions.");
    let mut lead = Family::new("wsguard_prediction_lead_time_seconds", "gauge", "Mean realised lead time of true forecasts.");
    let mut err = Family::new("wsguard_prediction_eta_error_ratio", "gauge", "Mean relative ETA error of true forecasts.");
    let mut made = Family::new("wsguard_prediction_forecasts_total", "counter", "Forecasts made (predictive condition persisted).");
    let mut tp = Family::new("wsguard_prediction_true_positives_total", "counter", "Forecasts followed by the exhaustion within the horizon.");
    let mut fp = Family::new("wsguard_prediction_false_positives_total", "counter", "Forecasts whose horizon passed without exhaustion.");
    let mut ex = Family::new("wsguard_prediction_exhaustions_total", "counter", "Resources that reached their exhaustion level.");
    for s in &p.scores.rules {
        let l = labels(&[("alertname", &s.rule)]);
        if let Some(v) = s.precision {
            precision.push(l.clone(), v);
        }
        if let Some(v) = s.recall {
            recall.push(l.clone(), v);
        }
        if let Some(v) = s.lead_time_seconds {
            lead.push(l.clone(), v);
        }
        if let Some(v) = s.eta_error_ratio {
            err.push(l.clone(), v);
        }
        made.push(l.clone(), s.predictions as f64);
        tp.push(l.clone(), s.true_positives as f64);
        fp.push(l.clone(), s.false_positives as f64);
        ex.push(l, s.exhaustions as f64);
    }

    let mut out = String::new();
    for f in [
        &horizon, &usage, &eta, &eta_low, &eta_high, &res_prob, &prob, &conf, &class, &precision, &recall, &lead,
        &err, &made, &tp, &fp, &ex,
    ] {
        f.write(&mut out);
    }
    out
}
