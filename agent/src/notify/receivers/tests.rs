use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use super::{http::Receiver, real, *};
use crate::{alert::Severity::*, alert::TransitionKind as K, notify::BreakerState};

fn names_and_status(reqs: &[http::Req]) -> Vec<(String, String)> {
    reqs.iter()
        .map(|r| {
            let a = &r.body["alerts"][0];
            (a["labels"]["alertname"].as_str().unwrap().to_string(), a["status"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_slack_receivers_get_their_formats() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(free_port());
    rx.up().await;
    let mut hook = http_channel("hook", ChannelKind::Webhook, rx.url("/hook"));
    hook.auth_header = Some("Bearer s3cret-token-1".into());
    let slack = http_channel("slack", ChannelKind::Slack, rx.url("/services/T0000/B0000/SLACKSECRET42"));
    let n = Notifier::open(fast_config(vec![hook, slack]), dir.path()).unwrap();
    let _run = Running::start(&n);
    let a = alert_now("ClientConnectionQuota", &[("client", "10.0.0.7"), ("pid", "42")], Critical);
    n.submit(&[event(&a, K::Firing)], std::slice::from_ref(&a), SystemTime::now()).unwrap();
    wait_until(10, "two firing notices", || rx.count() == 2).await;
    n.submit(&[resolved_now(&a)], &[], SystemTime::now()).unwrap();
    wait_until(10, "two resolved notices", || rx.count() == 4).await;
    let reqs = rx.reqs();
    let hooks: Vec<_> = reqs.iter().filter(|r| r.path == "/hook").cloned().collect();
    assert_eq!(
        names_and_status(&hooks),
        [("ClientConnectionQuota".into(), "firing".into()), ("ClientConnectionQuota".into(), "resolved".into())]
    );
    for h in &hooks {
        assert_eq!(h.body["version"], "4");
        assert_eq!(h.body["receiver"], "hook");
        assert_eq!(h.id_header.as_deref(), h.body["notificationId"].as_str(), "id header = body field");
        assert_eq!(h.auth.as_deref(), Some("Bearer s3cret-token-1"));
        assert_eq!(h.body["alerts"][0]["fingerprint"], a.fingerprint);
    }
    assert_ne!(hooks[0].id_header, hooks[1].id_header);
    assert_eq!(hooks[1].body["status"], "resolved");
    let slacks: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/services/")).collect();
    assert_eq!(slacks.len(), 2);
    assert!(slacks[0].body["text"].as_str().unwrap().starts_with("[FIRING:1] ClientConnectionQuota"));
    assert!(slacks[1].body["text"].as_str().unwrap().starts_with("[RESOLVED:1] ClientConnectionQuota"));
    assert!(slacks[0].body["blocks"].as_array().unwrap().len() >= 3);
    // The receiver records a request before it answers; the notifier counts it after the 2xx.
    wait_until(10, "4 notices counted sent", || n.stats().channels.iter().all(|c| c.sent == 2)).await;
    let st = n.stats();
    assert_eq!(st.storage, "sqlite");
    for c in &st.channels {
        assert_eq!((c.sent, c.pending, c.dropped, c.breaker), (2, 0, 0, BreakerState::Closed), "{}", c.name);
    }
    let json = serde_json::to_string(&st).unwrap();
    assert!(!json.contains("SLACKSECRET42") && !json.contains("s3cret"), "{json}");
    assert_eq!(st.channels[1].target, format!("http://127.0.0.1:{}", rx.port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_the_alert_and_drops_it_on_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let Some(am) = real::Alertmanager::start(dir.path()) else { return };
    for _ in 0..100 {
        if am.ready().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ch = http_channel("am", ChannelKind::Alertmanager, am.url());
    ch.resend_interval = Duration::from_secs(1);
    let mut cfg = fast_config(vec![ch]);
    cfg.external_url = "http://127.0.0.1:9595".into();
    let n = Notifier::open(cfg, dir.path()).unwrap();
    let _run = Running::start(&n);
    let a = alert_now("ClientConnectionQuota", &[("client", "10.0.0.9"), ("comm", "node"), ("pid", "4242")], Critical);
    n.submit(&[event(&a, K::Firing)], std::slice::from_ref(&a), SystemTime::now()).unwrap();
    let mut shown = Value::Null;
    for _ in 0..100 {
        if let Some(x) = am.alerts().await.into_iter().find(|x| x["labels"]["alertname"] == "ClientConnectionQuota") {
            shown = x;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!shown.is_null(), "alert never showed in Alertmanager");
    // Same identity on both sides: Alertmanager computed the same fingerprint from the labels.
    assert_eq!(shown["fingerprint"], a.fingerprint);
    assert_eq!(serde_json::to_value(&a.labels).unwrap(), shown["labels"]);
    assert_eq!(shown["annotations"]["severity"], "critical");
    assert_eq!(shown["status"]["state"], "active");
    assert_eq!(shown["generatorURL"], format!("http://127.0.0.1:9595/api/v1/alerts/{}", a.fingerprint));
    let ends0 = shown["endsAt"].as_str().unwrap().to_string();
    // A resend a second later pushes endsAt forward (now + 4 × resend_interval).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    n.submit(&[], std::slice::from_ref(&a), SystemTime::now()).unwrap();
    let mut moved = false;
    for _ in 0..100 {
        let cur = am.alerts().await;
        if cur.iter().any(|x| x["fingerprint"] == a.fingerprint && x["endsAt"].as_str().unwrap() > ends0.as_str()) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "resend did not extend endsAt past {ends0}");
    n.submit(&[resolved_now(&a)], &[], SystemTime::now()).unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !am.alerts().await.iter().any(|x| x["fingerprint"] == a.fingerprint) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "resolved alert still active in Alertmanager");
    wait_until(10, "firing, resend and resolve counted sent", || n.stats().channels[0].sent == 3).await;
    let c = &n.stats().channels[0];
    assert!(c.failed == 0 && c.pending == 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = real::Smtp::start(dir.path()) else { return };
    let mut ch = ChannelConfig::new("mail", ChannelKind::Email);
    ch.smtp = Some(format!("127.0.0.1:{}", smtp.port));
    ch.from = Some("wsguard <wsguard@example.org>".into());
    ch.to = vec!["ops@example.org".into(), "oncall@example.org".into()];
    let n = Notifier::open(fast_config(vec![ch]), dir.path()).unwrap();
    let _run = Running::start(&n);
    let a = alert_now("FdUsageHigh", &[("pid", "7")], Warning);
    n.submit(&[event(&a, K::Firing)], std::slice::from_ref(&a), SystemTime::now()).unwrap();
    wait_until(15, "firing mail", || smtp.messages().len() == 1).await;
    n.submit(&[resolved_now(&a)], &[], SystemTime::now()).unwrap();
    wait_until(15, "resolved mail", || smtp.messages().len() == 2).await;
    let msgs = smtp.messages();
    let subjects: Vec<&str> = msgs.iter().map(|m| m.lines().find(|l| l.starts_with("Subject:")).unwrap_or("")).collect();
    assert!(subjects.contains(&"Subject: [wsguard] [FIRING:1] FdUsageHigh"), "{subjects:?}");
    assert!(subjects.contains(&"Subject: [wsguard] [RESOLVED:1] FdUsageHigh"), "{subjects:?}");
    for m in &msgs {
        assert!(m.contains("X-Wsguard-Notification-Id: "), "{m}");
        assert!(m.contains("To: ops@example.org, oncall@example.org"), "{m}");
        assert!(m.contains(&a.fingerprint));
    }
    wait_until(10, "both mails counted sent", || n.stats().channels[0].sent == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_notice_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(free_port());
    let n = Notifier::open(fast_config(vec![http_channel("hook", ChannelKind::Webhook, rx.url("/"))]), dir.path()).unwrap();
    let _run = Running::start(&n);
    let mut firing = Vec::new();
    let mut want = Vec::new();
    for i in 0..20 {
        firing.push(alert_now(&format!("A{i:02}"), &[], Critical));
        n.submit(&[], &firing, SystemTime::now()).unwrap();
        want.push((format!("A{i:02}"), "firing".to_string()));
    }
    for _ in 0..5 {
        let a = firing.remove(0);
        n.submit(&[resolved_now(&a)], &firing, SystemTime::now()).unwrap();
        want.push((a.labels["alertname"].clone(), "resolved".to_string()));
    }
    wait_until(10, "breaker to open", || n.stats().channels[0].breaker == BreakerState::Open).await;
    let st = &n.stats().channels[0];
    assert_eq!((st.sent, st.pending, st.dropped), (0, 25, 0));
    assert!(st.failed >= 3 && st.last_error.as_deref().unwrap_or("").contains("error sending request"), "{st:?}");
    rx.up().await;
    wait_until(20, "all 25 notices", || n.stats().channels[0].sent == 25).await;
    assert_eq!(names_and_status(&rx.reqs()), want, "every notice, once, in order");
    let st = &n.stats().channels[0];
    assert_eq!((st.sent, st.pending, st.dropped, st.breaker), (25, 0, 0, BreakerState::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_notifier_mid_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(free_port());
    rx.delay_ms(100);
    rx.up().await;
    let cfg = fast_config(vec![http_channel("hook", ChannelKind::Webhook, rx.url("/"))]);
    let n = Notifier::open(cfg.clone(), dir.path()).unwrap();
    let run = Running::start(&n);
    let mut firing = Vec::new();
    for i in 0..30 {
        firing.push(alert_now(&format!("A{i:02}"), &[], Critical));
        n.submit(&[], &firing, SystemTime::now()).unwrap();
    }
    wait_until(20, "8 deliveries", || rx.count() >= 8).await;
    // Mid-delivery: a request is in flight (the receiver answers after 100 ms).
    run.stop().await;
    drop(n);
    let at_stop = rx.count();
    assert!(at_stop < 30, "all delivered before the stop; the test proves nothing");
    let n = Notifier::open(cfg, dir.path()).unwrap();
    assert!(n.stats().channels[0].pending >= (30 - at_stop) as u64);
    let _run = Running::start(&n);
    let unique = || rx.reqs().iter().map(|r| r.id_header.clone().unwrap()).collect::<std::collections::HashSet<_>>().len();
    wait_until(30, "all 30 notices after reopening", || unique() == 30).await;
    let reqs = rx.reqs();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    for r in &reqs {
        let id = r.id_header.clone().unwrap();
        if seen.insert(id.clone(), order.len()).is_none() {
            order.push(r.body["alerts"][0]["labels"]["alertname"].as_str().unwrap().to_string());
        }
    }
    let want: Vec<String> = (0..30).map(|i| format!("A{i:02}")).collect();
    assert_eq!(order, want, "first deliveries in order, none missing");
    // At least once: only the notice in flight at the stop may come twice, with the same id.
    assert!(reqs.len() - 30 <= 1, "{} duplicates", reqs.len() - 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_notice_is_dropped_after_max_rejections_and_the_next_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx =
        Receiver::new(free_port()).with_status(|b| if b["alerts"][0]["labels"]["alertname"] == "Bad" { 400 } else { 200 });
    rx.up().await;
    let mut cfg = fast_config(vec![http_channel("hook", ChannelKind::Webhook, rx.url("/"))]);
    cfg.delivery.max_rejections = 2;
    let n = Notifier::open(cfg, dir.path()).unwrap();
    let _run = Running::start(&n);
    let bad = alert_now("Bad", &[], Critical);
    let good = alert_now("Good", &[], Critical);
    n.submit(&[], &[bad.clone(), good.clone()], SystemTime::now()).unwrap();
    wait_until(10, "Good delivered", || rx.reqs().iter().any(|r| r.body["alerts"][0]["labels"]["alertname"] == "Good")).await;
    wait_until(10, "Good counted sent", || n.stats().channels[0].sent == 1).await;
    let c = &n.stats().channels[0];
    assert_eq!((c.sent, c.rejected, c.dropped, c.pending), (1, 2, 1, 0), "{c:?}");
    assert!(c.last_error.as_deref().unwrap().starts_with("HTTP 400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_drops_and_counts_an_undeliverable_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config(vec![http_channel("hook", ChannelKind::Webhook, format!("http://127.0.0.1:{}/", free_port()))]);
    cfg.delivery.max_age = Duration::from_secs(1);
    let n = Notifier::open(cfg, dir.path()).unwrap();
    let _run = Running::start(&n);
    n.submit(&[], &[alert_now("Lost", &[], Critical)], SystemTime::now()).unwrap();
    assert_eq!(n.stats().channels[0].pending, 1);
    wait_until(10, "drop after max_age", || n.stats().channels[0].dropped == 1).await;
    assert_eq!(n.stats().channels[0].pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_holds_excess_in_the_outbox_and_flush_delivers_without_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(free_port());
    rx.up().await;
    let mut ch = http_channel("hook", ChannelKind::Webhook, rx.url("/"));
    ch.cooldown = Duration::from_millis(200);
    let n = Notifier::open(fast_config(vec![ch]), dir.path()).unwrap();
    let alerts: Vec<Alert> = (0..5).map(|i| alert_now(&format!("C{i}"), &[], Warning)).collect();
    n.submit(&[], &alerts, SystemTime::now()).unwrap();
    assert_eq!(n.stats().channels[0].pending, 5);
    let t0 = Instant::now();
    n.flush(Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert_eq!(rx.count(), 5, "flush delivered everything");
    assert!(took >= Duration::from_millis(4 * 200 - 20), "cooldown spaced the notices ({took:?})");
    let c = &n.stats().channels[0];
    assert_eq!((c.sent, c.pending), (5, 0));
    // A flush with a receiver that is down gives up at the timeout and keeps the notices.
    rx.down().await;
    n.submit(&[], &alerts[..4], SystemTime::now()).unwrap(); // C4 resolved
    let t0 = Instant::now();
    n.flush(Duration::from_millis(500)).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(n.stats().channels[0].pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_state_dir_keeps_delivering_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let mut rx = Receiver::new(free_port());
    rx.up().await;
    let n = Notifier::open(fast_config(vec![http_channel("hook", ChannelKind::Webhook, rx.url("/"))]), &blocker).unwrap();
    let st = n.stats();
    assert_eq!(st.storage, "memory");
    assert!(st.storage_error.unwrap().contains("cannot open"));
    let _run = Running::start(&n);
    n.submit(&[], &[alert_now("M", &[], Critical)], SystemTime::now()).unwrap();
    wait_until(10, "delivery from memory", || n.stats().channels[0].sent == 1).await;
    assert_eq!(rx.count(), 1);
}
