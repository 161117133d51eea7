//! `log`: one JSON line per notice through `tracing` (target `wsguard::notify::log`), for log
//! pipelines and as a channel that cannot fail.

use serde_json::json;

use crate::notify::notice::Notice;

pub fn line(channel: &str, n: &Notice) -> String {
    let alerts: Vec<_> = n
        .entries
        .iter()
        .map(|e| {
            let a = &e.alert;
            json!({
                "reason": e.reason,
                "status": if e.firing() { "firing" } else { "resolved" },
                "fingerprint": a.fingerprint,
                "severity": a.severity,
                "labels": a.labels,
                "annotations": a.annotations,
                "starts_at": a.starts_at,
                "ends_at": a.ends_at,
                "acknowledged": a.acknowledged,
                "silenced": a.silenced,
                "inhibited": a.inhibited,
                "tier_name": a.tier_name,
            })
        })
        .collect();
    json!({
        "notification_id": n.id,
        "channel": channel,
        "status": n.status(),
        "title": n.title(),
        "group_labels": n.group_labels,
        "alerts": alerts,
    })
    .to_string()
}

pub fn emit(channel: &str, n: &Notice) {
    tracing::info!(target: "wsguard::notify::log", "{}", line(channel, n));
}
