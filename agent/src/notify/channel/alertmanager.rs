//! `alertmanager`: pushes to Alertmanager's `POST /api/v2/alerts` the way Prometheus does. A
//! firing alert is sent with `endsAt` = now + 4 × `resend_interval` and re-sent every
//! `resend_interval` (the planner queues resends), so Alertmanager resolves it by itself if this
//! agent disappears; a resolved alert is sent with `endsAt` = its resolve time.
//!
//! Severity is an annotation, not a label: labels are the alert's identity (the fingerprint
//! Alertmanager computes then equals ours), and escalation changes severity.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{post_json, Common, SendError};
use crate::{
    notify::{config::ChannelConfig, notice::Notice},
    util::time::rfc3339,
};

pub struct Alertmanager {
    endpoint: String,
    auth: Option<String>,
    resend: Duration,
    common: Common,
}

/// `http://am:9093` → `http://am:9093/api/v2/alerts` (a URL already ending so is kept).
pub fn endpoint(base: &str) -> String {
    let b = base.trim_end_matches('/');
    if b.ends_with("/api/v2/alerts") {
        b.to_string()
    } else {
        format!("{b}/api/v2/alerts")
    }
}

impl Alertmanager {
    pub fn new(cfg: &ChannelConfig, url: &str, auth: Option<String>, common: Common) -> Self {
        Alertmanager { endpoint: endpoint(url), auth, resend: cfg.resend_interval, common }
    }

    pub async fn send(&self, n: &Notice, now: SystemTime) -> Result<(), SendError> {
        let body = render(n, now, self.resend, &self.common);
        let headers: Vec<(&str, &str)> = self.auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        post_json(&self.common, &self.endpoint, &headers, &body).await
    }
}

/// `endsAt` of firing alerts is computed at delivery (`now`), so a notice delivered late after an
/// outage still keeps the alert open for four resend intervals.
pub fn render(n: &Notice, now: SystemTime, resend: Duration, common: &Common) -> Value {
    let alerts: Vec<Value> = n
        .entries
        .iter()
        .map(|e| {
            let a = &e.alert;
            let ends = if e.firing() { rfc3339(now + resend * 4) } else { a.ends_at.clone().unwrap_or_else(|| rfc3339(now)) };
            let mut ann = a.annotations.clone();
            ann.entry("severity".into()).or_insert_with(|| a.severity.as_str().into());
            json!({
                "labels": a.labels,
                "annotations": ann,
                "startsAt": a.starts_at,
                "endsAt": ends,
                "generatorURL": common.generator_url(&a.fingerprint),
            })
        })
        .collect();
    Value::Array(alerts)
}
