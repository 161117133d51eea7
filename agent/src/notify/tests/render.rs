//! Channel formats: webhook v4, Slack, Alertmanager v2, log line, email body.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::{
    alert::Severity::*,
    notify::{
        channel::{alertmanager, email, log, slack, webhook, Common},
        notice::Entry,
    },
};

fn common() -> Common {
    Common { http: reqwest::Client::new(), external_url: "http://agent.example:9595".into(), timeout: Duration::from_secs(1) }
}

fn notice() -> Notice {
    let a = firing("ClientConnectionQuota", &[("client", "10.0.0.1"), ("pid", "42")], Critical, 0);
    let b = firing("ClientConnectionQuota", &[("client", "10.0.0.2"), ("pid", "42")], Critical, 0);
    let (_, b_res) = resolve(&b, 60);
    Notice {
        id: "0b8f5c8e-0000-4000-8000-000000000001".into(),
        channel: "hook".into(),
        group_key: "0:{alertname=\"ClientConnectionQuota\"}".into(),
        group_labels: labels(&[("alertname", "ClientConnectionQuota")]),
        created_ms: 0,
        entries: vec![Entry { reason: Reason::Firing, alert: a }, Entry { reason: Reason::Resolved, alert: b_res }],
    }
}

#[test]
fn webhook_is_alertmanager_v4_with_a_notification_id() {
    let n = notice();
    let v = webhook::render(&n, "hook", &common(), 0);
    for k in [
        "version",
        "groupKey",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
        "truncatedAlerts",
        "notificationId",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "hook");
    assert_eq!(v["notificationId"], n.id);
    assert_eq!(v["truncatedAlerts"], 0);
    assert_eq!(v["commonLabels"], serde_json::json!({"alertname": "ClientConnectionQuota", "pid": "42"}));
    assert_eq!(v["externalURL"], "http://agent.example:9595");
    let a = &v["alerts"];
    assert_eq!(a[0]["status"], "firing");
    assert_eq!(a[0]["endsAt"], webhook::ZERO_TIME);
    assert_eq!(a[0]["startsAt"], rfc3339(at(0)));
    assert_eq!(a[0]["fingerprint"], n.entries[0].alert.fingerprint);
    assert_eq!(a[0]["generatorURL"], format!("http://agent.example:9595/api/v1/alerts/{}", n.entries[0].alert.fingerprint));
    assert_eq!(a[1]["status"], "resolved");
    assert_eq!(a[1]["endsAt"], rfc3339(at(60)));
    let t = webhook::render(&n, "hook", &common(), 1);
    assert_eq!((t["alerts"].as_array().unwrap().len(), t["truncatedAlerts"].as_u64()), (1, Some(1)));
}

#[test]
fn alertmanager_push_has_prometheus_ends_at() {
    let n = notice();
    let now = at(100);
    let v = alertmanager::render(&n, now, Duration::from_secs(60), &common());
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for a in arr {
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["annotations", "endsAt", "generatorURL", "labels", "startsAt"]);
        assert!(a["labels"].get("severity").is_none(), "severity is no label (identity)");
        assert_eq!(a["annotations"]["severity"], "critical");
    }
    assert_eq!(arr[0]["endsAt"], rfc3339(at(100 + 240)), "firing: now + 4 × resend_interval");
    assert_eq!(arr[1]["endsAt"], rfc3339(at(60)), "resolved: the resolve time");
    assert_eq!(alertmanager::endpoint("http://am:9093/"), "http://am:9093/api/v2/alerts");
    assert_eq!(alertmanager::endpoint("http://am:9093/x/api/v2/alerts"), "http://am:9093/x/api/v2/alerts");
}

#[test]
fn slack_message_has_text_and_blocks() {
    let v = slack::render(&notice());
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING:1] ClientConnectionQuota"), "{text}");
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks.iter().filter(|b| b["type"] == "section").count(), 2);
    assert!(blocks[1]["text"]["text"].as_str().unwrap().contains("`client=10.0.0.1`"));
    assert!(blocks[2]["text"]["text"].as_str().unwrap().contains("resolved"));
    assert!(blocks.last().unwrap()["elements"][0]["text"].as_str().unwrap().contains("0b8f5c8e"));
    // Label values cannot inject Slack markup.
    let mut n = notice();
    n.entries[0].alert.labels.insert("client".into(), "<!channel>&x".into());
    let t = slack::render(&n)["blocks"][1]["text"]["text"].as_str().unwrap().to_string();
    assert!(t.contains("client=&lt;!channel&gt;&amp;x") && !t.contains("<!channel>"), "{t}");
}

#[test]
fn log_line_is_one_json_object() {
    let line = log::line("audit", &notice());
    assert!(!line.contains('\n'));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["channel"], "audit");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(v["alerts"][1]["status"], "resolved");
}

#[test]
fn titles_and_email_body() {
    let mut n = notice();
    assert_eq!(n.title(), "[FIRING:1] ClientConnectionQuota");
    n.entries[0].reason = Reason::Escalated;
    assert_eq!(n.title(), "[FIRING:1] ClientConnectionQuota (escalated)");
    n.entries.remove(0);
    assert_eq!(n.title(), "[RESOLVED:1] ClientConnectionQuota");
    let body = email::body(&n);
    assert!(body.contains("RESOLVED") && body.contains("client=10.0.0.2") && body.contains(&n.id), "{body}");
}
