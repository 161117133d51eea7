//! `webhook`: Alertmanager's webhook payload (version 4), so receivers written for Alertmanager
//! work unchanged, plus `notificationId` (also the `X-Wsguard-Notification-Id` header): a
//! receiver that sees an id twice got a retry of a notice it already accepted.

use serde_json::{json, Value};

use super::{post_json, Common, SendError};
use crate::notify::{config::ChannelConfig, notice::Notice};

/// Alertmanager's `endsAt` for alerts that have not ended (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub const ID_HEADER: &str = "X-Wsguard-Notification-Id";

pub struct Webhook {
    url: String,
    auth: Option<String>,
    max_alerts: usize,
    common: Common,
}

impl Webhook {
    pub fn new(cfg: &ChannelConfig, url: String, auth: Option<String>, common: Common) -> Self {
        Webhook { url, auth, max_alerts: cfg.max_alerts, common }
    }

    pub async fn send(&self, receiver: &str, n: &Notice) -> Result<(), SendError> {
        let body = render(n, receiver, &self.common, self.max_alerts);
        let mut headers = vec![(ID_HEADER, n.id.as_str())];
        if let Some(a) = &self.auth {
            headers.push(("Authorization", a.as_str()));
        }
        post_json(&self.common, &self.url, &headers, &body).await
    }
}

/// The v4 payload; `max_alerts` > 0 truncates the list (count in `truncatedAlerts`).
pub fn render(n: &Notice, receiver: &str, common: &Common, max_alerts: usize) -> Value {
    let keep = if max_alerts == 0 { n.entries.len() } else { max_alerts.min(n.entries.len()) };
    let alerts: Vec<Value> = n.entries[..keep]
        .iter()
        .map(|e| {
            let a = &e.alert;
            let firing = e.firing();
            json!({
                "status": if firing { "firing" } else { "resolved" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": a.starts_at,
                "endsAt": if firing { ZERO_TIME.to_string() } else { a.ends_at.clone().unwrap_or_else(|| ZERO_TIME.into()) },
                "generatorURL": common.generator_url(&a.fingerprint),
                "fingerprint": a.fingerprint,
                // wsguard additions (receivers for Alertmanager ignore unknown fields).
                "severity": a.severity,
                "reason": e.reason,
                "acknowledged": a.acknowledged,
                "silenced": a.silenced,
                "inhibited": a.inhibited,
                "tierName": a.tier_name,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{receiver}/{}", n.group_key),
        "truncatedAlerts": n.entries.len() - keep,
        "status": n.status(),
        "receiver": receiver,
        "groupLabels": n.group_labels,
        "commonLabels": n.common(|a| &a.labels),
        "commonAnnotations": n.common(|a| &a.annotations),
        "externalURL": common.external_url,
        "alerts": alerts,
        "notificationId": n.id,
    })
}
