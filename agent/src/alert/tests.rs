//! State machine tests on synthetic snapshots.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{
    model::clients::ClientCount,
    model::resources::ProcessResources,
    model::snapshot::{ProcessSnapshot, Snapshot},
};

use super::{
    rule::{Metric, Op, Rule, Scope, Threshold},
    silence::Matcher,
    state::fingerprint,
    AlertConfig, Engine, EscalationConfig, FlapConfig, Labels, Profile, Severity, Status, TransitionKind as K,
};

const T0: u64 = 1_800_000_000;

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + s)
}

fn process(pid: u32, fd_ratio: f64) -> ProcessSnapshot {
    ProcessSnapshot {
        pid,
        comm: "node".into(),
        listening_ports: vec![8080],
        resources: Some(ProcessResources { fd_usage_ratio: Some(fd_ratio), ..Default::default() }),
        ..Default::default()
    }
}

fn snap(procs: Vec<ProcessSnapshot>) -> Snapshot {
    Snapshot { processes: procs, ..Default::default() }
}

fn fd_rule(for_s: u64, keep_s: u64) -> Rule {
    Rule {
        name: "FdUsageHigh".into(),
        scope: Scope::Process,
        metric: Metric::FdUsageRatio,
        op: Op::Gt,
        warning: Some(Threshold::Hysteresis { fire: 0.7, clear: Some(0.65) }),
        critical: Some(Threshold::Hysteresis { fire: 0.9, clear: Some(0.85) }),
        for_: Duration::from_secs(for_s),
        keep_firing_for: Duration::from_secs(keep_s),
        labels: [("team".to_string(), "ops".to_string())].into(),
        annotations: super::rule::Annotations {
            summary: "{{ .labels.comm }} pid {{ .labels.pid }} at {{ .value }} (> {{ .threshold }}, {{ .severity }})".into(),
            ..Default::default()
        },
    }
}

fn cfg() -> AlertConfig {
    AlertConfig { escalation: EscalationConfig { tiers: vec![], escalate_after: Duration::from_secs(900) }, ..Default::default() }
}

fn engine(rule: Rule, cfg: AlertConfig) -> Engine {
    Engine::with_rules(vec![rule], cfg)
}

fn kinds(t: &[super::Transition]) -> Vec<K> {
    t.iter().map(|t| t.kind).collect()
}

#[test]
fn fingerprint_matches_alertmanager() {
    // FNV-1a 64 of "alertname" 0xff "TestAlert" 0xff "instance" 0xff "localhost" 0xff,
    // computed independently (Python, byte by byte) from Alertmanager's labelSetToFingerprint.
    let l: Labels = [("instance".to_string(), "localhost".to_string()), ("alertname".into(), "TestAlert".into())].into();
    assert_eq!(format!("{:016x}", fingerprint(&l)), "00385bfc13cbc5b2");
    // The empty set is the FNV offset basis.
    assert_eq!(fingerprint(&Labels::new()), 0xcbf29ce484222325);
}

#[test]
fn for_pending_then_firing_then_resolved() {
    let mut e = engine(fd_rule(60, 0), cfg());
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.75)]), None, at(0))), vec![K::Pending]);
    assert_eq!(e.alerts()[0].status, Status::Pending);
    assert!(e.evaluate(&snap(vec![process(1, 0.75)]), None, at(30)).is_empty());
    let t = e.evaluate(&snap(vec![process(1, 0.75)]), None, at(60));
    assert_eq!(kinds(&t), vec![K::Firing]);
    let a = &e.alerts()[0];
    assert_eq!((a.status, a.severity, a.occurrences), (Status::Firing, Severity::Warning, 1));
    assert_eq!(a.labels["alertname"], "FdUsageHigh");
    assert_eq!(a.labels["team"], "ops");
    assert_eq!(a.starts_at, "2027-01-15T08:01:00Z");
    assert_eq!(a.first_seen, "2027-01-15T08:00:00Z");
    assert_eq!(a.annotations["summary"], "node pid 1 at 0.75 (> 0.7, warning)");
    let t = e.evaluate(&snap(vec![process(1, 0.5)]), None, at(70));
    assert_eq!(kinds(&t), vec![K::Resolved]);
    let a = &e.alerts()[0];
    assert_eq!((a.status, a.ends_at.as_deref()), (Status::Resolved, Some("2027-01-15T08:01:10Z")));
    // A pending alert whose condition goes away before `for` is cancelled and forgotten.
    let mut e = engine(fd_rule(60, 0), cfg());
    e.evaluate(&snap(vec![process(1, 0.75)]), None, at(0));
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.1)]), None, at(10))), vec![K::Cancelled]);
    assert!(e.alerts().is_empty());
}

#[test]
fn hysteresis_and_severity_changes() {
    let mut e = engine(fd_rule(0, 0), cfg());
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.72)]), None, at(0))), vec![K::Firing]);
    // Hovering between clear (0.65) and fire (0.7): stays firing, no transitions.
    for (i, v) in [0.66, 0.69, 0.67, 0.71, 0.66].into_iter().enumerate() {
        assert!(e.evaluate(&snap(vec![process(1, v)]), None, at(10 + i as u64)).is_empty(), "{v}");
        assert_eq!(e.alerts()[0].status, Status::Firing);
    }
    // Escalates to critical past 0.9, stays critical down to 0.85, de-escalates below.
    let t = e.evaluate(&snap(vec![process(1, 0.92)]), None, at(20));
    assert_eq!((t[0].kind, t[0].severity, t[0].from_severity), (K::SeverityChanged, Severity::Critical, Some(Severity::Warning)));
    assert!(e.evaluate(&snap(vec![process(1, 0.86)]), None, at(21)).is_empty());
    let t = e.evaluate(&snap(vec![process(1, 0.84)]), None, at(22));
    assert_eq!((t[0].kind, t[0].severity), (K::SeverityChanged, Severity::Warning));
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.64)]), None, at(23))), vec![K::Resolved]);
    assert_eq!(e.alerts()[0].occurrences, 1);
}

#[test]
fn keep_firing_for() {
    let mut e = engine(fd_rule(0, 60), cfg());
    e.evaluate(&snap(vec![process(1, 0.8)]), None, at(0));
    assert!(e.evaluate(&snap(vec![process(1, 0.1)]), None, at(10)).is_empty());
    assert!(e.evaluate(&snap(vec![process(1, 0.1)]), None, at(59)).is_empty());
    assert_eq!(e.alerts()[0].status, Status::Firing);
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.1)]), None, at(60))), vec![K::Resolved]);
}

#[test]
fn flapping_alert_is_held_firing() {
    let mut c = cfg();
    c.flap = FlapConfig { threshold: 2, window: Duration::from_secs(600), hold: Duration::from_secs(120) };
    let mut e = engine(fd_rule(0, 0), c);
    let mut t = 0;
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(kinds(&e.evaluate(&snap(vec![process(1, 0.8)]), None, at(t))));
        all.extend(kinds(&e.evaluate(&snap(vec![process(1, 0.1)]), None, at(t + 10))));
        t += 20;
    }
    // Fired twice and resolved twice; the third start makes it flapping: held instead of resolved.
    assert_eq!(all, vec![K::Firing, K::Resolved, K::Firing, K::Resolved, K::Firing]);
    let a = &e.alerts()[0];
    assert!(a.flapping && a.status == Status::Firing && a.occurrences == 3);
    // Coming back while held is no new occurrence.
    assert!(e.evaluate(&snap(vec![process(1, 0.8)]), None, at(t)).is_empty());
    assert!(e.evaluate(&snap(vec![process(1, 0.1)]), None, at(t + 10)).is_empty());
    assert!(e.evaluate(&snap(vec![process(1, 0.1)]), None, at(t + 119)).is_empty());
    assert_eq!(kinds(&e.evaluate(&snap(vec![process(1, 0.1)]), None, at(t + 120))), vec![K::Resolved]);
    assert!(!e.alerts()[0].flapping);
}

#[test]
fn escalation_through_tiers_and_ack() {
    let mut c = cfg();
    c.escalation = EscalationConfig::default(); // operations → engineering → management, 15m
    let mut e = engine(fd_rule(0, 0), c);
    e.evaluate(&snap(vec![process(1, 0.75)]), None, at(0));
    let a = &e.alerts()[0];
    assert_eq!((a.tier, a.tier_name.as_deref()), (0, Some("operations")));
    assert!(e.evaluate(&snap(vec![process(1, 0.75)]), None, at(899)).is_empty());
    let t = e.evaluate(&snap(vec![process(1, 0.75)]), None, at(900));
    assert_eq!((t[0].kind, t[0].tier, t[0].severity), (K::Escalated, 1, Severity::Critical));
    let a = &e.alerts()[0];
    assert_eq!((a.tier_name.as_deref(), a.severity), (Some("engineering"), Severity::Critical));
    // Thresholds do not lower an escalated severity.
    assert!(e.evaluate(&snap(vec![process(1, 0.72)]), None, at(1000)).is_empty());
    // Acknowledged: no further escalation.
    let fp = a.fingerprint.clone();
    let acked = e.acknowledge(&fp[..8], "alice", "looking", at(1010)).unwrap();
    assert!(acked.acknowledged && acked.ack.as_ref().unwrap().by == "alice");
    assert!(e.evaluate(&snap(vec![process(1, 0.75)]), None, at(5000)).is_empty());
    assert_eq!(e.alerts()[0].tier, 1);
    // The ack expires on resolve; the next episode starts at tier 0, unacknowledged, and
    // climbs to the last tier and no further.
    e.evaluate(&snap(vec![process(1, 0.1)]), None, at(5010));
    let a = e.alert(&fp).unwrap();
    assert!(!a.acknowledged && a.ack.is_none() && a.status == Status::Resolved);
    assert!(e.acknowledge(&fp, "bob", "", at(5011)).is_err());
    e.evaluate(&snap(vec![process(1, 0.75)]), None, at(6000));
    let t = e.evaluate(&snap(vec![process(1, 0.75)]), None, at(6000 + 3600));
    assert_eq!(kinds(&t), vec![K::Escalated, K::Escalated]);
    let a = e.alert(&fp).unwrap();
    assert_eq!((a.tier, a.tier_name.as_deref(), a.occurrences), (2, Some("management"), 2));
}

#[test]
fn silences_with_matchers() {
    let mut e = engine(fd_rule(0, 0), cfg());
    let procs = || snap(vec![process(1, 0.8), process(2, 0.8), ProcessSnapshot { comm: "python".into(), ..process(3, 0.8) }]);
    e.evaluate(&procs(), None, at(0));
    let m = |s: &str| Matcher::parse(s).unwrap();
    let id = e
        .silence(
            vec![m("alertname=FdUsageHigh"), m("pid=~\"1|3\""), m("comm!=python")],
            Duration::from_secs(60),
            "ops",
            "deploy",
            at(1),
        )
        .unwrap();
    let silenced = |e: &Engine| {
        let mut v: Vec<String> = e.alerts().iter().filter(|a| a.silenced).map(|a| a.labels["pid"].clone()).collect();
        v.sort();
        v
    };
    assert_eq!(silenced(&e), vec!["1"]);
    assert_eq!(e.alerts().iter().find(|a| a.silenced).unwrap().silenced_by, vec![id.clone()]);
    // Silenced alerts still transition, flagged.
    let mut s = procs();
    s.processes[0] = process(1, 0.1);
    let t = e.evaluate(&s, None, at(10));
    assert_eq!((t.len(), t[0].kind, t[0].silenced), (1, K::Resolved, true));
    // `!~` and expiry.
    e.evaluate(&procs(), None, at(20));
    e.silence(vec![m("pid!~[12]")], Duration::from_secs(5), "ops", "", at(20)).unwrap();
    assert_eq!(silenced(&e), vec!["1", "3"]);
    e.evaluate(&procs(), None, at(61));
    assert!(silenced(&e).is_empty());
    assert!(e.silences().is_empty());
    assert!(Matcher::parse("pid=~(").is_err() && Matcher::parse("novalue").is_err());
    assert!(!e.unsilence(&id, at(62)));
}

#[test]
fn a_gone_process_inhibits_its_alerts() {
    let mut e = engine(fd_rule(0, 300), cfg());
    e.evaluate(&snap(vec![process(1, 0.8), process(2, 0.8)]), None, at(0));
    // pid 1 exits, pid 2 disappears: both resolve at once (keep_firing_for does not apply),
    // flagged inhibited.
    let gone = ProcessSnapshot { exited: true, ..process(1, 0.8) };
    let t = e.evaluate(&snap(vec![gone]), None, at(10));
    assert_eq!(kinds(&t), vec![K::Resolved, K::Resolved]);
    assert!(t.iter().all(|t| t.inhibited));
    assert!(e.alerts().iter().all(|a| a.inhibited && a.status == Status::Resolved));
    // A reused pid with another comm is another process.
    let mut e = engine(fd_rule(0, 300), cfg());
    e.evaluate(&snap(vec![process(1, 0.8)]), None, at(0));
    let t = e.evaluate(&snap(vec![ProcessSnapshot { comm: "java".into(), ..process(1, 0.1) }]), None, at(10));
    assert!(t.iter().any(|t| t.inhibited && t.kind == K::Resolved));
}

fn quota_snapshot(n: u64) -> Snapshot {
    let mut p = process(4242, 0.1);
    p.websocket.connections_active = n + 3;
    p.clients.key_source = "remote_ip".into();
    p.clients.quota = 20;
    p.clients.top =
        vec![ClientCount { key: "10.1.2.3".into(), connections: n }, ClientCount { key: "10.1.2.4".into(), connections: 3 }];
    snap(vec![p])
}

#[test]
fn client_connection_quota_fires_and_resolves() {
    let mut c = cfg();
    c.profile = Profile::Staging;
    let mut e = Engine::new(c, 20);
    let t = e.evaluate(&quota_snapshot(25), None, at(0));
    let quota: Vec<_> = t.iter().filter(|t| t.alertname == "ClientConnectionQuota").collect();
    assert_eq!(quota.len(), 1);
    assert_eq!((quota[0].kind, quota[0].severity), (K::Firing, Severity::Critical));
    let a = e.alerts().into_iter().find(|a| a.labels["alertname"] == "ClientConnectionQuota").unwrap();
    let want: Labels = [
        ("alertname", "ClientConnectionQuota"),
        ("client", "10.1.2.3"),
        ("client_key_source", "remote_ip"),
        ("comm", "node"),
        ("listen_port", "8080"),
        ("pid", "4242"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(a.labels, want);
    assert_eq!(a.value, Some(25.0));
    assert_eq!(a.annotations["summary"], "Client 10.1.2.3 holds 25 connections to node (pid 4242, port 8080); quota 20");
    assert!(a.annotations["runbook_url"].ends_with("#clientconnectionquota"));
    // Still over quota: no new transition; at 20 still over (>=); at 19 resolved.
    assert!(e.evaluate(&quota_snapshot(20), None, at(5)).iter().all(|t| t.alertname != "ClientConnectionQuota"));
    let t = e.evaluate(&quota_snapshot(19), None, at(10));
    let quota: Vec<_> = t.iter().filter(|t| t.alertname == "ClientConnectionQuota").collect();
    assert_eq!(quota.len(), 1);
    assert_eq!(quota[0].kind, K::Resolved);
    // The JSON contract.
    let v = serde_json::to_value(e.alert(&a.fingerprint).unwrap()).unwrap();
    for k in [
        "labels",
        "severity",
        "status",
        "starts_at",
        "ends_at",
        "fingerprint",
        "annotations",
        "occurrences",
        "acknowledged",
        "silenced",
        "tier",
        "flapping",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!((v["status"].as_str(), v["severity"].as_str()), (Some("resolved"), Some("critical")));
}

#[test]
fn manual_alert_stays_until_resolved() {
    let mut e = Engine::new(cfg(), 20);
    let t = e.fire(Severity::Critical, "datacenter on fire", [("team".to_string(), "ops".to_string())].into(), at(0));
    assert_eq!((t.kind, t.alertname.as_str()), (K::Firing, "ManualAlert"));
    for i in 1..5 {
        e.evaluate(&snap(vec![]), None, at(i * 100));
    }
    let a = e.alert(&t.fingerprint).unwrap().clone();
    assert!(a.manual && a.status == Status::Firing && a.annotations["summary"] == "datacenter on fire");
    assert_eq!(e.resolve(&t.fingerprint, at(1000)).unwrap().kind, K::Resolved);
    assert!(e.resolve(&t.fingerprint, at(1001)).is_err());
}

#[test]
fn interval_ratios_and_predictions_hook() {
    use crate::predict::{Predictions, ProcessPrediction};
    let mut e = Engine::new(cfg(), 20);
    let mut p = process(7, 0.1);
    p.websocket.connections_opened = 100;
    p.websocket.connections_closed = 50;
    e.evaluate(&snap(vec![p.clone()]), None, at(0));
    p.websocket.connections_opened = 180;
    p.websocket.handshakes_failed = 20; // 80 / 100 succeeded this interval
    p.websocket.connections_closed = 60;
    p.websocket.abnormal_closes = 5; // 5 of 10 closes abnormal
    let mut preds = Predictions::default();
    preds.processes.push(ProcessPrediction { pid: 7, comm: "node".into(), listen_port: "8080".into(), ..Default::default() });
    preds.processes[0].crisis.probability = 0.8;
    let t = e.evaluate(&snap(vec![p]), Some(&preds), at(5));
    let names: Vec<&str> = t.iter().map(|t| t.alertname.as_str()).collect();
    assert!(names.contains(&"CrisisProbabilityHigh"), "{names:?}");
    let hs = e.alerts().into_iter().find(|a| a.labels["alertname"] == "HandshakeSuccessLow").unwrap();
    assert_eq!((hs.status, hs.value, hs.severity), (Status::Pending, Some(0.8), Severity::Critical));
    let ab = e.alerts().into_iter().find(|a| a.labels["alertname"] == "AbnormalCloseRateHigh").unwrap();
    assert_eq!(ab.value, Some(0.5));
}

#[test]
fn alert_config_from_toml() {
    let c: AlertConfig = toml::from_str(
        r#"
        profile = "staging"
        [escalation]
        tiers = ["l1", "l2"]
        escalate_after = "5m"
        [flap]
        threshold = 5
        [[rules]]
        name = "FdUsageHigh"
        metric = "process.resources.fd_usage_ratio"
        warning = 0.5
        [[rules]]
        name = "ClientsBusy"
        scope = "process"
        metric = "process.clients.top_connections"
        op = ">="
        critical = 10
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.escalation.escalate_after, Duration::from_secs(300));
    assert_eq!((c.flap.threshold, c.flap.window), (5, Duration::from_secs(1800)));
    let rules = c.effective_rules(20);
    let fd = rules.iter().find(|r| r.name == "FdUsageHigh").unwrap();
    assert_eq!((fd.warning.unwrap().fire(), fd.critical), (0.5, None));
    assert!(rules.iter().any(|r| r.name == "ClientsBusy"));
    let conns = rules.iter().find(|r| r.name == "WebSocketConnectionsHigh").unwrap();
    assert_eq!(conns.critical.unwrap().fire(), 1000.0);
    assert!(toml::from_str::<AlertConfig>("[[rules]]\nname = \"x\"\nmetric = \"process.nope\"\n").is_err());
    let bad: AlertConfig =
        toml::from_str("[[rules]]\nname = \"x\"\nmetric = \"host.memory_used_ratio\"\nwarning = 0.5\n").unwrap();
    assert_eq!(bad.validate().unwrap_err().0, "alert.rules"); // host metric in the default process scope
}

#[test]
fn host_scope_rule_and_probe_deltas() {
    let mut e = Engine::new(cfg(), 20);
    let mut s = snap(vec![]);
    s.host.memory_used_ratio = Some(0.95);
    s.probe.health.ring_drops = 10;
    e.evaluate(&s, None, at(0));
    s.probe.health.ring_drops = 17;
    let t = e.evaluate(&s, None, at(5));
    let lost = t.iter().find(|t| t.alertname == "ProbeEventsLost").unwrap();
    assert_eq!(lost.kind, K::Firing);
    let a = e.alerts().into_iter().find(|a| a.labels["alertname"] == "ProbeEventsLost").unwrap();
    assert_eq!(a.annotations["summary"], "The probe lost 7 events since the last snapshot");
    assert_eq!(a.labels.len(), 1);
    let mem = e.alerts().into_iter().find(|a| a.labels["alertname"] == "HostMemoryHigh").unwrap();
    assert_eq!((mem.status, mem.severity), (Status::Pending, Severity::Critical));
    // No more drops: held by keep_firing_for (10m), then resolved.
    assert!(e.evaluate(&s, None, at(300)).iter().all(|t| t.alertname != "ProbeEventsLost"));
    assert!(e.evaluate(&s, None, at(605)).iter().any(|t| t.alertname == "ProbeEventsLost" && t.kind == K::Resolved));
}

#[test]
fn state_survives_a_restart_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = super::store::Store::open(dir.path()).unwrap();
    let mut e = engine(fd_rule(0, 0), cfg());
    let t = e.evaluate(&snap(vec![process(7, 0.95)]), None, at(0));
    assert_eq!(kinds(&t), vec![K::Firing]);
    let fp = t[0].fingerprint.clone();
    e.acknowledge(&fp, "ana", "looking", at(1)).unwrap();
    let sid = e.silence(vec![Matcher::parse("comm=~no.*").unwrap()], Duration::from_secs(3600), "ana", "", at(1)).unwrap();
    let events: Vec<_> = t
        .iter()
        .map(|t| super::store::Event { transition: t.clone(), alert: e.alert(&t.fingerprint).unwrap().clone() })
        .collect();
    store.save(&e.export(), &events).unwrap();
    drop(store);

    // A new process (agent restart): same rules, state from the store.
    let store = super::store::Store::open(dir.path()).unwrap();
    let mut e2 = engine(fd_rule(0, 0), cfg());
    e2.restore(store.load().unwrap().unwrap()).unwrap();
    let a = e2.alert(&fp).unwrap();
    assert_eq!((a.status, a.acknowledged, a.silenced), (Status::Firing, true, true));
    assert_eq!(a.ack.as_ref().unwrap().by, "ana");
    assert_eq!(e2.silences()[0].id, sid);
    assert!(e2.silences()[0].active(at(2)), "silence clock restored");
    // Still over the threshold: no new firing (no duplicate notification after a restart).
    assert_eq!(kinds(&e2.evaluate(&snap(vec![process(7, 0.95)]), None, at(5))), vec![]);
    assert_eq!(e2.alert(&fp).unwrap().occurrences, 1);
    assert_eq!(store.events(10).unwrap().len(), 1);
    // Clears: resolved once, and the ack ends with the episode.
    assert_eq!(kinds(&e2.evaluate(&snap(vec![process(7, 0.1)]), None, at(10))), vec![K::Resolved]);
    assert!(!e2.alert(&fp).unwrap().acknowledged);
}

#[test]
fn restore_drops_alerts_of_removed_rules_but_keeps_manual_ones() {
    let mut e = engine(fd_rule(0, 0), cfg());
    e.evaluate(&snap(vec![process(7, 0.95)]), None, at(0));
    let m = e.fire(Severity::Critical, "disk on fire", Labels::new(), at(0));
    let state = e.export();
    let mut other = Engine::with_rules(vec![], cfg());
    other.restore(state).unwrap();
    let all = other.alerts();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].fingerprint, m.fingerprint);
}

#[test]
fn first_evaluation_after_restart_keeps_interval_alerts() {
    // An interval metric has no value on the first snapshot after a restart; that must not
    // resolve (and later re-fire) an alert that was firing before.
    let rule = Rule {
        name: "LostEvents".into(),
        scope: Scope::Host,
        metric: Metric::ProbeLostEvents,
        op: Op::Gt,
        warning: Some(Threshold::At(0.0)),
        critical: None,
        for_: Duration::ZERO,
        keep_firing_for: Duration::ZERO,
        labels: Labels::new(),
        annotations: Default::default(),
    };
    let mut s1 = snap(vec![]);
    let mut e = Engine::with_rules(vec![rule.clone()], cfg());
    e.evaluate(&s1, None, at(0));
    s1.probe.health.ring_drops = 5;
    assert_eq!(kinds(&e.evaluate(&s1, None, at(5))), vec![K::Firing]);
    let mut e2 = Engine::with_rules(vec![rule], cfg());
    e2.restore(e.export()).unwrap();
    assert_eq!(kinds(&e2.evaluate(&s1, None, at(10))), vec![], "no value yet is not 'cleared'");
    assert_eq!(e2.alerts()[0].status, Status::Firing);
}

/// Forecasts are rule inputs of this engine: `PredictedFdExhaustion` and `PredictedCrisis`
/// (default rules) fire, carry the forecast and its ETA in the summary, are silenced,
/// acknowledged, escalated and resolved like any other alert.
#[test]
fn forecast_alerts_are_ordinary_alerts() {
    use crate::predict::{Forecast, Predictions, ProcessPrediction, Trigger, CRISIS_RULE, FD_RULE};
    let c = AlertConfig {
        escalation: EscalationConfig { tiers: vec!["ops".into(), "eng".into()], escalate_after: Duration::from_secs(60) },
        ..Default::default()
    };
    let rules = c.effective_rules(20).into_iter().filter(|r| [FD_RULE, CRISIS_RULE].contains(&r.name.as_str())).collect();
    let mut e = Engine::with_rules(rules, c);
    let preds = |trigger: Option<Trigger>| {
        let fd = Forecast {
            rule: FD_RULE.into(),
            resource: Some("fds".into()),
            trigger,
            current: 300.0,
            limit: 400.0,
            usage_ratio: 0.75,
            eta_seconds: Some(40.0),
            eta_low_seconds: Some(38.0),
            eta_high_seconds: Some(42.0),
            ..Default::default()
        };
        let mut p = Predictions::default();
        p.processes.push(ProcessPrediction {
            pid: 7,
            comm: "node".into(),
            listen_port: "8080".into(),
            forecasts: vec![fd],
            ..Default::default()
        });
        p.host.forecasts.push(Forecast { rule: CRISIS_RULE.into(), trigger, class: Some("leak".into()), ..Default::default() });
        p
    };
    let s = snap(vec![process(7, 0.75)]);
    assert!(e.evaluate(&s, Some(&preds(None)), at(0)).is_empty());
    let t = e.evaluate(&s, Some(&preds(Some(Trigger::Forecast))), at(1));
    assert_eq!(kinds(&t), [K::Firing, K::Firing]);
    let fd = e.alerts().into_iter().find(|a| a.labels["alertname"] == FD_RULE).unwrap();
    let labels: Vec<&str> = fd.labels.keys().map(String::as_str).collect();
    assert_eq!(labels, ["alertname", "comm", "listen_port", "pid", "severity"]);
    assert_eq!((fd.status, fd.severity, fd.labels["severity"].as_str()), (Status::Firing, Severity::Critical, "critical"));
    assert_eq!(fd.forecast.as_ref().unwrap().trigger, Some(Trigger::Forecast));
    assert_eq!(
        fd.annotations["summary"],
        "node (pid 7) holds 300 of 400 fds (75%); ETA to exhaustion 40 s (38 s to 42 s) [forecast]"
    );
    let host = e.alerts().into_iter().find(|a| a.labels["alertname"] == CRISIS_RULE).unwrap();
    assert_eq!(host.labels.get("scope").map(String::as_str), Some("host"));
    // Silenced and acknowledged like any alert; the crisis one, unacknowledged, escalates.
    e.silence(vec![Matcher::parse("alertname=PredictedFdExhaustion").unwrap()], Duration::from_secs(600), "me", "", at(2))
        .unwrap();
    e.acknowledge(&fd.fingerprint, "me", "on it", at(2)).unwrap();
    let t = e.evaluate(&s, Some(&preds(Some(Trigger::Backstop))), at(70));
    assert_eq!(t.iter().map(|t| (t.alertname.as_str(), t.kind)).collect::<Vec<_>>(), [(CRISIS_RULE, K::Escalated)]);
    let fd = e.alert(&fd.fingerprint).unwrap().clone();
    assert!(fd.silenced && fd.acknowledged && fd.annotations["summary"].ends_with("[backstop]"), "{fd:?}");
    // The condition stops holding: resolved.
    let t = e.evaluate(&s, Some(&preds(None)), at(71));
    assert_eq!(kinds(&t), [K::Resolved, K::Resolved]);
}

/// A process serving SSE streams at second `secs` of the test clock (RFC 3339 timestamp, so
/// interval metrics can divide by the time between snapshots).
fn sse_snapshot(secs: u64, opened: u64, closed: u64, resumed: u64, idle: u64, quiet: f64) -> Snapshot {
    use crate::model::sse::{SseStats, SseStreams};
    let mut p = process(77, 0.1);
    p.sse = SseStats {
        streams_opened: opened,
        streams_closed: closed,
        streams_active: opened - closed,
        resumed_streams: resumed,
        ..Default::default()
    };
    p.sse_streams = SseStreams {
        idle,
        max_seconds_since_last_event: quiet,
        clients: crate::model::clients::ClientsSnapshot {
            key_source: "remote_ip".into(),
            quota: 20,
            top: vec![
                ClientCount { key: "10.9.9.9".into(), connections: 22 },
                ClientCount { key: "10.9.9.8".into(), connections: 1 },
            ],
            ..Default::default()
        },
    };
    let mut s = snap(vec![p, process(78, 0.1)]);
    s.timestamp = humantime::format_rfc3339_millis(at(secs)).to_string();
    s.sse_totals.streams_active = opened - closed;
    s
}

/// Every SSE rule metric reads the SSE numbers (a WebSocket-only process yields no value);
/// churn and resumes are per second over the interval.
#[test]
fn sse_metrics_read_streams() {
    use super::select::instances;
    let prev = sse_snapshot(0, 100, 90, 10, 0, 0.0);
    let cur = sse_snapshot(10, 150, 100, 40, 3, 421.5);
    let one = |m: Metric, scope: Scope| -> Vec<f64> {
        instances(m, scope, &cur, Some(&prev), None).into_iter().map(|i| i.value).collect()
    };
    assert_eq!(one(Metric::HostSseStreamsActive, Scope::Host), vec![50.0]);
    assert_eq!(one(Metric::SseStreamsActive, Scope::Process), vec![50.0]);
    assert_eq!(one(Metric::SseStreamsIdle, Scope::Process), vec![3.0]);
    assert_eq!(one(Metric::SseSecondsSinceLastEvent, Scope::Process), vec![421.5]);
    assert_eq!(one(Metric::SseStreamsOpenedPerSecond, Scope::Process), vec![5.0]);
    assert_eq!(one(Metric::SseStreamsClosedPerSecond, Scope::Process), vec![1.0]);
    assert_eq!(one(Metric::SseResumedStreamsPerSecond, Scope::Process), vec![3.0]);
    assert_eq!(one(Metric::SseClientStreams, Scope::Process), vec![22.0]);
    let per_client = instances(Metric::SseClientStreams, Scope::Client, &cur, Some(&prev), None);
    assert_eq!(per_client.len(), 2);
    assert_eq!((per_client[0].labels["client"].as_str(), per_client[0].value), ("10.9.9.9", 22.0));
    // SSE streams out of sync count in probe.out_of_sync.
    let mut lost = cur.clone();
    lost.sse_totals.out_of_sync = 3;
    let v: Vec<f64> =
        instances(Metric::ProbeOutOfSync, Scope::Host, &lost, Some(&prev), None).into_iter().map(|i| i.value).collect();
    assert_eq!(v, vec![3.0]);
    // Interval metrics need a previous snapshot.
    assert!(instances(Metric::SseStreamsOpenedPerSecond, Scope::Process, &cur, None, None).is_empty());
    for m in [Metric::SseStreamsOpenedPerSecond, Metric::SseResumedStreamsPerSecond, Metric::SseStreamsClosedPerSecond] {
        assert!(m.needs_previous(), "{m:?}");
    }
}

/// Rules on SSE metrics parse from TOML, validate (scope checked), fire and resolve; the default
/// per-client stream quota fires for a client over `[limits] per_client_connections`.
#[test]
fn sse_rules_fire_idle_churn_and_quota() {
    let r: Rule = toml::from_str(
        r#"
        name = "SseStreamQuiet"
        metric = "process.sse.seconds_since_last_event"
        op = ">"
        warning = 300
        "#,
    )
    .unwrap();
    r.validate().unwrap();
    let bad = Rule { scope: Scope::Host, ..r.clone() };
    assert!(bad.validate().unwrap_err().contains("cannot be evaluated in scope"));
    let unknown = toml::from_str::<Rule>("name = \"X\"\nmetric = \"process.sse.nope\"\nwarning = 1\n").unwrap_err();
    assert!(unknown.to_string().contains("process.sse.seconds_since_last_event"), "{unknown}");
    let churn: Rule =
        toml::from_str("name = \"SseChurn\"\nmetric = \"process.sse.resumed_streams_per_second\"\nop = \">\"\nwarning = 2\n")
            .unwrap();

    let mut e = Engine::with_rules(vec![r, churn], cfg());
    e.evaluate(&sse_snapshot(0, 100, 90, 10, 0, 10.0), None, at(0));
    let t = e.evaluate(&sse_snapshot(10, 150, 100, 40, 3, 421.5), None, at(10));
    let names: Vec<&str> = t.iter().filter(|t| t.kind == K::Firing).map(|t| t.alertname.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"SseStreamQuiet") && names.contains(&"SseChurn"), "{names:?}");
    // Events flow again and resumes stop: both resolve.
    let t = e.evaluate(&sse_snapshot(20, 150, 100, 40, 0, 1.0), None, at(20));
    assert_eq!(t.iter().filter(|t| t.kind == K::Resolved).count(), 2, "{t:?}");

    let mut e = Engine::new(cfg(), 20);
    e.evaluate(&sse_snapshot(0, 100, 90, 10, 0, 0.0), None, at(0));
    let a = e.alerts().into_iter().find(|a| a.labels["alertname"] == "SseClientStreamQuota").unwrap();
    assert_eq!((a.labels["client"].as_str(), a.value), ("10.9.9.9", Some(22.0)));
    assert_eq!(a.annotations["summary"], "Client 10.9.9.9 holds 22 SSE streams to node (pid 77, port 8080); quota 20");
}
