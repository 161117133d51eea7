//! Remediator tests without a kernel: the target is this test process itself (so the /proc
//! identity checks are real), actions are harmless `exec` commands writing to a scratch file,
//! and time is passed in.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use super::{audit::Entry, RemediationConfig, Remediator};
use crate::{
    alert::{fingerprint, Alert, Labels, Severity, Status},
    model::resources::ProcessResources,
    model::snapshot::{ProcessSnapshot, Snapshot},
    track::conns::ConnectionSnapshot,
};

fn me() -> (u32, String) {
    let pid = std::process::id();
    (pid, crate::util::procinfo::identity(pid).unwrap().comm)
}

fn snap(pid: u32, comm: &str) -> Snapshot {
    let p = ProcessSnapshot {
        pid,
        comm: comm.into(),
        resources: Some(ProcessResources {
            open_fds: Some(90),
            fd_limit_soft: Some(100),
            fd_usage_ratio: Some(0.9),
            ..Default::default()
        }),
        ..Default::default()
    };
    Snapshot { processes: vec![p], ..Default::default() }
}

fn alert(name: &str, labels: &[(&str, &str)], value: f64) -> Alert {
    let mut l: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("alertname".into(), name.into());
    let fp = format!("{:016x}", fingerprint(&l));
    Alert {
        labels: l,
        annotations: Labels::new(),
        severity: Severity::Warning,
        status: Status::Firing,
        starts_at: String::new(),
        ends_at: None,
        fingerprint: fp,
        value: Some(value),
        occurrences: 1,
        first_seen: String::new(),
        last_seen: String::new(),
        acknowledged: false,
        ack: None,
        silenced: false,
        silenced_by: vec![],
        inhibited: false,
        tier: 0,
        tier_name: None,
        flapping: false,
        manual: false,
        forecast: None,
    }
}

fn proc_alert(value: f64) -> Alert {
    let (pid, comm) = me();
    alert("FdUsageHigh", &[("pid", &pid.to_string()), ("comm", &comm)], value)
}

struct Fx {
    dir: tempfile::TempDir,
    rem: Remediator,
    t0: SystemTime,
}

/// A Remediator with one exec action on FdUsageHigh that appends a line to `ran`.
fn fixture(extra_global: &str, extra_action: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let text = format!(
        "[remediation]\nsettle = \"1s\"\n{extra_global}\n[[remediation.actions]]\nname = \"hook\"\ntype = \"exec\"\non = [\"FdUsageHigh\"]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", \"echo $WSGUARD_PID >> {}\"]\n{extra_action}\n",
        ran.display()
    );
    #[derive(serde::Deserialize)]
    struct W {
        remediation: RemediationConfig,
    }
    let cfg = toml::from_str::<W>(&text).unwrap().remediation;
    cfg.validate().unwrap();
    let rem = Remediator::open(cfg, dir.path()).unwrap();
    Fx { dir, rem, t0: SystemTime::now() }
}

impl Fx {
    fn at(&self, s: u64) -> SystemTime {
        self.t0 + Duration::from_secs(s)
    }
    fn tick(&mut self, s: u64, firing: &[Alert]) {
        let (pid, comm) = me();
        let now = self.at(s);
        self.rem.handle(&[], firing, &snap(pid, &comm), &HashMap::new(), now);
    }
    fn rows(&self) -> Vec<Entry> {
        let mut v = self.rem.shared().with(|a| a.list(1000, None)).unwrap();
        v.reverse();
        v
    }
    fn events(&self) -> Vec<String> {
        self.rows().into_iter().map(|r| if r.event == "skipped" { format!("skipped:{}", r.result) } else { r.event }).collect()
    }
    fn ran(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("ran")).map(|s| s.lines().count()).unwrap_or(0)
    }
    /// Wait until every started run has its result row.
    async fn quiesce(&self) {
        for _ in 0..200 {
            let rows = self.rows();
            if rows.iter().filter(|r| r.event == "result").count() == rows.iter().filter(|r| r.event == "run").count() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("runs did not finish: {:?}", self.events());
    }
    /// Wait until `n` runs have a result row.
    async fn settle(&self, n: usize) {
        for _ in 0..200 {
            if self.rows().iter().filter(|r| r.event == "result").count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("runs did not finish: {:?}", self.events());
    }
}

#[tokio::test]
async fn dry_run_records_everything_and_does_nothing() {
    let mut f = fixture("", "dry_run = true");
    f.tick(0, &[proc_alert(0.9)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.ran(), 0, "nothing ran");
    let rows = f.rows();
    assert_eq!(f.events(), vec!["dry_run"]);
    let r = &rows[0];
    assert!(r.dry_run && r.detail.starts_with("run [\"/bin/sh\""), "{r:?}");
    assert_eq!((r.alertname.as_str(), r.pid), ("FdUsageHigh", Some(std::process::id())));
    let before = r.before.as_ref().unwrap();
    assert_eq!((before["alert_value"].as_f64(), before["open_fds"].as_u64()), (Some(0.9), Some(90)));
    // A dry run keeps the real cadence: the cooldown applies to it too.
    f.tick(5, &[proc_alert(0.9)]);
    assert_eq!(f.events(), vec!["dry_run", "skipped:cooldown"]);
}

#[tokio::test]
async fn cooldown_stops_a_second_run_until_it_passes() {
    let mut f = fixture("", "dry_run = false\ncooldown = \"60s\"\nbreaker_after = 0");
    f.tick(0, &[proc_alert(0.9)]);
    f.settle(1).await;
    assert_eq!(f.ran(), 1);
    f.tick(10, &[proc_alert(0.9)]);
    f.tick(20, &[proc_alert(0.9)]);
    assert_eq!(f.ran(), 1, "stopped by the cooldown");
    f.tick(61, &[proc_alert(0.9)]);
    f.settle(2).await;
    assert_eq!(f.ran(), 2);
    let ev = f.events();
    assert_eq!(ev.iter().filter(|e| *e == "skipped:cooldown").count(), 1, "recorded once, not every tick: {ev:?}");
    let result = f.rows().into_iter().find(|r| r.event == "result").unwrap();
    assert_eq!(result.result, "ok");
    let written = std::fs::read_to_string(f.dir.path().join("ran")).unwrap();
    assert_eq!(written.lines().next(), Some(std::process::id().to_string().as_str()), "WSGUARD_PID in the env");
}

#[tokio::test]
async fn hourly_cap_stops_the_third_run() {
    let mut f = fixture("", "dry_run = false\ncooldown = \"0s\"\nmax_runs_per_hour = 2\nbreaker_after = 0");
    for s in [0, 10, 20, 30] {
        f.tick(s, &[proc_alert(0.9)]);
        f.quiesce().await;
    }
    assert_eq!(f.ran(), 2);
    assert!(f.events().contains(&"skipped:hourly cap (2 runs per hour)".to_string()), "{:?}", f.events());
    f.tick(3601, &[proc_alert(0.9)]);
    f.settle(3).await;
    assert_eq!(f.ran(), 3, "the first run left the hour");
}

#[tokio::test]
async fn circuit_breaker_trips_after_runs_that_did_not_help_and_an_operator_resets_it() {
    let mut f = fixture("", "dry_run = false\ncooldown = \"0s\"\nbreaker_after = 2");
    let a = proc_alert(0.9);
    f.tick(0, std::slice::from_ref(&a));
    f.settle(1).await;
    f.tick(10, std::slice::from_ref(&a)); // judges run 1 (value unchanged: a miss), runs again
    f.settle(2).await;
    f.tick(20, std::slice::from_ref(&a)); // judges run 2: second miss, trips
    f.tick(30, std::slice::from_ref(&a));
    f.tick(40, std::slice::from_ref(&a));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcomes: Vec<_> = f.rows().into_iter().filter(|r| r.event == "outcome").map(|r| r.result).collect();
    assert_eq!(outcomes, vec!["not_improved", "not_improved"]);
    assert!(f.events().contains(&"breaker_tripped".to_string()));
    assert_eq!(f.ran(), 2, "the breaker stopped the action");
    f.rem.shared().with(|x| x.reset_breaker("hook", "ops", SystemTime::now())).unwrap();
    f.tick(50, std::slice::from_ref(&a));
    f.settle(3).await;
    assert_eq!(f.ran(), 3, "reset by an operator");
    // A run that helps: the alert resolved by the time it is judged.
    f.tick(60, &[]);
    assert_eq!(f.rows().iter().rfind(|r| r.event == "outcome").unwrap().result, "improved");
}

#[tokio::test]
async fn kill_switch_stops_runs_and_persists() {
    let mut f = fixture("", "dry_run = false\ncooldown = \"0s\"");
    f.rem.shared().with(|a| a.set_paused(true, "ops", SystemTime::now())).unwrap();
    f.tick(0, &[proc_alert(0.9)]);
    f.tick(10, &[proc_alert(0.9)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.ran(), 0);
    assert_eq!(f.events(), vec!["paused", "skipped:paused (kill switch)"]);
    // A new Remediator on the same state dir (agent restart) is still paused.
    let cfg = f.rem.cfg_for_tests();
    f.rem = Remediator::open(cfg, f.dir.path()).unwrap();
    f.tick(20, &[proc_alert(0.9)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.ran(), 0);
    f.rem.shared().with(|a| a.set_paused(false, "ops", SystemTime::now())).unwrap();
    f.tick(30, &[proc_alert(0.9)]);
    f.settle(1).await;
    assert_eq!(f.ran(), 1);
}

#[tokio::test]
async fn one_run_at_a_time_per_process() {
    let mut f = fixture("", "dry_run = false\ncooldown = \"0s\"");
    // Replace the command with a slow one.
    f.rem.set_command_for_tests("hook", &["/bin/sh", "-c", "sleep 1; echo x >> $0"], &f.dir.path().join("ran"));
    f.tick(0, &[proc_alert(0.9)]);
    f.tick(1, &[proc_alert(0.9)]);
    assert!(f.events().contains(&"skipped:another run on this process is in progress".to_string()), "{:?}", f.events());
    f.settle(1).await;
    f.tick(2, &[proc_alert(0.9)]);
    f.settle(2).await;
    assert_eq!(f.ran(), 2);
}

#[tokio::test]
async fn never_acts_on_a_process_the_alert_does_not_name() {
    let mut f = fixture("", "dry_run = false");
    let (pid, comm) = me();
    // Wrong comm for our pid (a reused pid), a pid not in the snapshot, no pid at all (signal
    // needs one; exec on a host alert is fine but this action only matches FdUsageHigh).
    f.tick(0, &[alert("FdUsageHigh", &[("pid", &pid.to_string()), ("comm", "other")], 0.9)]);
    f.tick(1, &[alert("FdUsageHigh", &[("pid", "4194000"), ("comm", &comm)], 0.9)]);
    f.tick(2, &[alert("OtherAlert", &[("pid", &pid.to_string()), ("comm", &comm)], 0.9)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.ran(), 0);
    let ev = f.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev[0].contains("not a live process of the snapshot"), "{ev:?}");
    assert!(ev[1].contains("not a live process of the snapshot"), "{ev:?}");
}

#[tokio::test]
async fn matchers_and_host_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: RemediationConfig = toml::from_str(
        "[[actions]]\nname = \"hup\"\ntype = \"signal\"\non = [\"HostMemoryHigh\", \"FdUsageHigh\"]\nsignal = \"HUP\"\nmatch = ['comm=\"nginx\"']\n",
    )
    .unwrap();
    let mut rem = Remediator::open(cfg, dir.path()).unwrap();
    let (pid, comm) = me();
    let now = SystemTime::now();
    // Our comm is not nginx: the matcher keeps the action away. A host alert names no process.
    rem.handle(&[], &[proc_alert(0.9)], &snap(pid, &comm), &HashMap::new(), now);
    rem.handle(&[], &[alert("HostMemoryHigh", &[("comm", "nginx")], 0.9)], &snap(pid, &comm), &HashMap::new(), now);
    let rows = rem.shared().with(|a| a.list(10, None)).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].result, "the alert names no process (no pid label)");
}

#[tokio::test]
async fn approval_waits_for_an_operator() {
    let mut f = fixture("", "dry_run = false\napproval = true");
    f.tick(0, &[proc_alert(0.9)]);
    f.tick(10, &[proc_alert(0.9)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.ran(), 0);
    let pending = f.rem.shared().with(|a| a.pending_approvals()).unwrap();
    assert_eq!(pending.len(), 1, "one request, not one per tick");
    f.rem.shared().with(|a| a.approve(pending[0].id, "alice", SystemTime::now())).unwrap();
    f.tick(20, &[proc_alert(0.9)]);
    f.settle(1).await;
    assert_eq!(f.ran(), 1);
    assert_eq!(f.events(), vec!["awaiting_approval", "approved", "run", "result"]);
    // An unapproved request expires when its alert stops firing.
    f.tick(1000, &[proc_alert(0.9)]);
    f.tick(1010, &[]);
    assert!(f.events().ends_with(&["awaiting_approval".to_string(), "approval_expired".to_string()]), "{:?}", f.events());
}

#[tokio::test]
async fn close_connections_with_nothing_to_select_is_a_noop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: RemediationConfig = toml::from_str(
        "[[actions]]\nname = \"idle\"\ntype = \"close_connections\"\non = [\"FdUsageHigh\"]\ndry_run = false\nselect = { by = \"idle\", idle_for = \"2m\" }\n",
    )
    .unwrap();
    let mut rem = Remediator::open(cfg, dir.path()).unwrap();
    let (pid, comm) = me();
    let busy = ConnectionSnapshot { fd: 7, idle_seconds: 3.0, ..Default::default() };
    let conns = HashMap::from([(pid, vec![busy])]);
    rem.handle(&[], &[proc_alert(0.9)], &snap(pid, &comm), &conns, SystemTime::now());
    let rows = rem.shared().with(|a| a.list(10, None)).unwrap();
    assert_eq!((rows.len(), rows[0].event.as_str(), rows[0].result.as_str()), (1, "noop", "nothing selected"));
    assert!(rows[0].detail.contains("close 0 connections"), "{}", rows[0].detail);
}

#[tokio::test]
async fn disabled_globally_records_nothing() {
    let mut f = fixture("enabled = false", "dry_run = false");
    f.tick(0, &[proc_alert(0.9)]);
    assert!(f.rows().is_empty());
    let st = serde_json::to_value(f.rem.shared().status(10).unwrap()).unwrap();
    assert_eq!((st["enabled"].as_bool(), st["paused"].as_bool()), (Some(false), Some(false)), "{st}");
    assert_eq!(st["actions"][0]["name"], "hook");
}
