//! Planner: routing, grouping, repeats, escalation, silences, resolves, Alertmanager resends.

use std::time::Duration;

use super::*;
use crate::alert::{Severity::*, TransitionKind as K};

fn r(name: &str, reason: Reason) -> (String, Reason) {
    (name.to_string(), reason)
}

fn route(channels: &[&str]) -> RouteConfig {
    RouteConfig { channels: channels.iter().map(|c| c.to_string()).collect(), ..Default::default() }
}

#[test]
fn routes_by_severity_labels_and_tier_first_match_wins() {
    let chans = vec![
        channel("pager", ChannelKind::Webhook),
        channel("slack", ChannelKind::Slack),
        channel("eng", ChannelKind::Webhook),
        channel("log", ChannelKind::Log),
    ];
    let routes = vec![
        RouteConfig { tiers: vec!["engineering".into()], ..route(&["eng"]) },
        RouteConfig { severity: vec![Critical], continue_: true, ..route(&["pager"]) },
        RouteConfig { matchers: vec!["alertname=~\"Client.*\"".into()], ..route(&["slack"]) },
        RouteConfig { matchers: vec!["team=ops".into()], ..route(&["log"]) },
    ];
    let cfg = config(chans, routes);
    let mut p = planner(&cfg, PlanState::default());
    let quota = firing("ClientConnectionQuota", &[("client", "10.0.0.1")], Critical, 0);
    let fd = firing("FdUsageHigh", &[("team", "ops")], Warning, 0);
    let mem = firing("HostMemoryHigh", &[], Warning, 0);
    let ns = p.plan(&[], &[quota.clone(), fd.clone(), mem.clone()], at(0), &no_backlog);
    let mut got = summary(&ns);
    got.sort();
    // Critical → pager and (continue) → slack by name; FdUsageHigh → log by label; HostMemoryHigh
    // matches nothing.
    assert_eq!(
        got,
        vec![
            ("log".into(), vec![r("FdUsageHigh", Reason::Firing)]),
            ("pager".into(), vec![r("ClientConnectionQuota", Reason::Firing)]),
            ("slack".into(), vec![r("ClientConnectionQuota", Reason::Firing)]),
        ]
    );
    assert_eq!(p.unrouted_total, 1);
    // Still unrouted next time: counted once per alert.
    p.plan(&[], &[quota, fd, mem], at(5), &no_backlog);
    assert_eq!(p.unrouted_total, 1);
}

#[test]
fn default_route_is_every_channel() {
    let cfg = config(vec![channel("a", ChannelKind::Log), channel("b", ChannelKind::Webhook)], vec![]);
    let mut p = planner(&cfg, PlanState::default());
    let ns = p.plan(&[], &[firing("X", &[], Warning, 0)], at(0), &no_backlog);
    assert_eq!(ns.iter().map(|n| n.channel.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn group_wait_collects_and_group_interval_spaces_notices() {
    let mut cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    cfg.group_wait = Duration::from_secs(10);
    cfg.group_interval = Duration::from_secs(60);
    let mut p = planner(&cfg, PlanState::default());
    let a1 = firing("Quota", &[("client", "a")], Critical, 0);
    let a2 = firing("Quota", &[("client", "b")], Critical, 5);
    let other = firing("Other", &[], Warning, 5);
    assert!(p.plan(&[], std::slice::from_ref(&a1), at(0), &no_backlog).is_empty(), "waiting group_wait");
    assert!(p.plan(&[], &[a1.clone(), a2.clone(), other.clone()], at(5), &no_backlog).is_empty());
    let ns = p.plan(&[], &[a1.clone(), a2.clone(), other.clone()], at(10), &no_backlog);
    // Quota's group (since 0) is due at 10 with both clients; Other's (since 5) at 15.
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Quota", Reason::Firing), r("Quota", Reason::Firing)])]);
    assert_eq!(ns[0].group_labels, labels(&[("alertname", "Quota")]));
    let ns = p.plan(&[], &[a1.clone(), a2.clone(), other.clone()], at(15), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Other", Reason::Firing)])]);
    // A third client joins the notified Quota group at 20: it waits for group_interval after
    // the group's last notice (10 + 60).
    let a3 = firing("Quota", &[("client", "c")], Critical, 20);
    let all = [a1.clone(), a2.clone(), a3.clone(), other.clone()];
    assert!(p.plan(&[], &all, at(20), &no_backlog).is_empty());
    assert!(p.plan(&[], &all, at(69), &no_backlog).is_empty());
    let ns = p.plan(&[], &all, at(70), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Quota", Reason::Firing)])]);
    assert_eq!(ns[0].entries[0].alert.labels["client"], "c");
}

#[test]
fn firing_then_resolved_within_group_wait_is_one_resolved_entry() {
    let mut cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    cfg.group_wait = Duration::from_secs(10);
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("Blip", &[], Warning, 0);
    assert!(p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog).is_empty());
    assert!(p.plan(&[resolve(&a, 5)], &[], at(5), &no_backlog).is_empty());
    let ns = p.plan(&[], &[], at(10), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Blip", Reason::Resolved)])]);
    assert_eq!(ns[0].status(), "resolved");
    // Nothing is left behind: the next firing of the same alert is a new group again.
    assert!(p.state.episodes.is_empty() && p.state.groups.is_empty());
}

#[test]
fn close_windows_on_stop_sends_what_groups_hold_and_keeps_the_episodes() {
    let mut cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    cfg.group_wait = Duration::from_secs(30);
    cfg.group_interval = Duration::from_secs(60);
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("Quota", &[], Critical, 0);
    let b = firing("Other", &[], Warning, 0);
    assert!(p.plan(&[], &[a.clone(), b.clone()], at(0), &no_backlog).is_empty(), "both wait group_wait");
    let ns = p.close_windows(at(3));
    let mut got = summary(&ns);
    got.sort();
    assert_eq!(got, vec![("w".into(), vec![r("Other", Reason::Firing)]), ("w".into(), vec![r("Quota", Reason::Firing)])]);
    assert!(ns.iter().all(|n| n.created_ms == super::super::notice::unix_ms(at(3))));
    assert!(p.close_windows(at(4)).is_empty(), "nothing held twice");
    // The channel still knows both alerts: a restart with this state resolves them, and no
    // firing notice is repeated.
    let mut p = planner(&cfg, p.state.clone());
    assert!(p.plan(&[], &[a.clone(), b.clone()], at(100), &no_backlog).is_empty());
    let ns = p.plan(&[resolve(&a, 110)], std::slice::from_ref(&b), at(110), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Quota", Reason::Resolved)])]);
}

#[test]
fn repeat_after_interval_unless_acknowledged_or_silenced() {
    let mut cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    cfg.repeat_interval = Duration::from_secs(3600);
    let mut p = planner(&cfg, PlanState::default());
    let mut a = firing("Long", &[], Warning, 0);
    assert_eq!(p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog).len(), 1);
    assert!(p.plan(&[], std::slice::from_ref(&a), at(3599), &no_backlog).is_empty());
    let ns = p.plan(&[], std::slice::from_ref(&a), at(3600), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Long", Reason::Repeat)])]);
    assert!(p.plan(&[], std::slice::from_ref(&a), at(3700), &no_backlog).is_empty(), "next repeat an interval later");
    a.acknowledged = true;
    assert!(p.plan(&[], std::slice::from_ref(&a), at(7200), &no_backlog).is_empty(), "acknowledged: no repeat");
    a.acknowledged = false;
    a.silenced = true;
    assert!(p.plan(&[], std::slice::from_ref(&a), at(7300), &no_backlog).is_empty(), "silenced: no repeat");
    a.silenced = false;
    assert_eq!(summary(&p.plan(&[], &[a], at(7400), &no_backlog)), vec![("w".into(), vec![r("Long", Reason::Repeat)])]);
}

#[test]
fn resolved_always_reaches_every_channel_that_heard_the_firing() {
    let cfg = config(vec![channel("a", ChannelKind::Webhook), channel("b", ChannelKind::Log)], vec![]);
    for flag in ["acknowledged", "silenced", "inhibited"] {
        let mut p = planner(&cfg, PlanState::default());
        let a = firing("Quota", &[], Critical, 0);
        assert_eq!(p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog).len(), 2);
        let mut still = a.clone();
        match flag {
            "acknowledged" => still.acknowledged = true,
            "silenced" => still.silenced = true,
            _ => {}
        }
        assert!(p.plan(&[], &[still.clone()], at(5), &no_backlog).is_empty());
        let (mut t, mut gone) = resolve(&still, 10);
        if flag == "inhibited" {
            (t.inhibited, gone.inhibited) = (true, true);
        }
        let ns = p.plan(&[(t, gone)], &[], at(10), &no_backlog);
        assert_eq!(
            summary(&ns),
            vec![("a".into(), vec![r("Quota", Reason::Resolved)]), ("b".into(), vec![r("Quota", Reason::Resolved)])],
            "{flag}"
        );
        let e = &ns[0].entries[0];
        assert_eq!((e.alert.status, e.alert.ends_at.clone()), (Status::Resolved, Some(rfc3339(at(10)))));
        assert_eq!(e.alert.inhibited, flag == "inhibited");
    }
}

#[test]
fn silenced_alert_is_not_notified_and_its_resolve_neither() {
    let cfg = config(vec![channel("a", ChannelKind::Webhook)], vec![]);
    let mut p = planner(&cfg, PlanState::default());
    let mut a = firing("Quiet", &[], Critical, 0);
    a.silenced = true;
    assert!(p.plan(&[(transition(&a, K::Firing, 0), a.clone())], std::slice::from_ref(&a), at(0), &no_backlog).is_empty());
    assert!(p.plan(&[resolve(&a, 10)], &[], at(10), &no_backlog).is_empty());
    // A silence that ends while the alert still fires: the alert is notified then.
    let mut b = firing("Later", &[], Critical, 20);
    b.silenced = true;
    assert!(p.plan(&[], &[b.clone()], at(20), &no_backlog).is_empty());
    b.silenced = false;
    assert_eq!(summary(&p.plan(&[], &[b], at(30), &no_backlog)), vec![("a".into(), vec![r("Later", Reason::Firing)])]);
}

#[test]
fn escalation_goes_to_the_new_tiers_route_and_resolve_to_both() {
    let cfg = config(
        vec![channel("ops", ChannelKind::Webhook), channel("eng", ChannelKind::Webhook)],
        vec![
            RouteConfig { tiers: vec!["operations".into()], ..route(&["ops"]) },
            RouteConfig { tiers: vec!["engineering".into(), "management".into()], ..route(&["eng"]) },
        ],
    );
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("Stuck", &[], Warning, 0);
    assert_eq!(
        summary(&p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog)),
        vec![("ops".into(), vec![r("Stuck", Reason::Firing)])]
    );
    let mut up = a.clone();
    (up.tier, up.tier_name, up.severity) = (1, Some("engineering".into()), Critical);
    let ns = p.plan(&[(transition(&up, K::Escalated, 900), up.clone())], &[up.clone()], at(900), &no_backlog);
    assert_eq!(summary(&ns), vec![("eng".into(), vec![r("Stuck", Reason::Escalated)])]);
    assert_eq!(ns[0].entries[0].alert.severity, Critical);
    // Management is routed to eng too: eng hears the second step.
    let mut top = up.clone();
    (top.tier, top.tier_name) = (2, Some("management".into()));
    let ns = p.plan(&[], &[top.clone()], at(1800), &no_backlog);
    assert_eq!(summary(&ns), vec![("eng".into(), vec![r("Stuck", Reason::Escalated)])]);
    let ns = p.plan(&[resolve(&top, 2000)], &[], at(2000), &no_backlog);
    assert_eq!(
        summary(&ns),
        vec![("eng".into(), vec![r("Stuck", Reason::Resolved)]), ("ops".into(), vec![r("Stuck", Reason::Resolved)])]
    );
}

#[test]
fn severity_raise_is_notified_and_a_vanished_alert_is_resolved() {
    let cfg = config(vec![channel("a", ChannelKind::Webhook)], vec![]);
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("Fd", &[("pid", "1")], Warning, 0);
    p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog);
    let mut crit = a.clone();
    crit.severity = Critical;
    assert_eq!(
        summary(&p.plan(&[], &[crit.clone()], at(5), &no_backlog)),
        vec![("a".into(), vec![r("Fd", Reason::SeverityRaised)])]
    );
    // Back to warning: no notice.
    assert!(p.plan(&[], std::slice::from_ref(&a), at(10), &no_backlog).is_empty());
    // Gone from the firing set without a transition (e.g. resolved by hand elsewhere).
    let ns = p.plan(&[], &[], at(15), &no_backlog);
    assert_eq!(summary(&ns), vec![("a".into(), vec![r("Fd", Reason::Resolved)])]);
    assert_eq!(ns[0].entries[0].alert.ends_at, Some(rfc3339(at(15))));
    assert_eq!(ns[0].entries[0].alert.status, Status::Resolved);
}

#[test]
fn state_survives_a_restart_so_the_resolve_still_goes_out() {
    let cfg = config(vec![channel("a", ChannelKind::Webhook)], vec![]);
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("Quota", &[], Critical, 0);
    p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog);
    let saved = serde_json::to_string(&p.state).unwrap();
    let mut p2 = planner(&cfg, serde_json::from_str(&saved).unwrap());
    assert!(p2.plan(&[], std::slice::from_ref(&a), at(5), &no_backlog).is_empty(), "no second firing notice after restart");
    assert_eq!(
        summary(&p2.plan(&[resolve(&a, 10)], &[], at(10), &no_backlog)),
        vec![("a".into(), vec![r("Quota", Reason::Resolved)])]
    );
    // A channel removed from the config loses its state.
    let other = config(vec![channel("b", ChannelKind::Webhook)], vec![]);
    let p3 = planner(&other, serde_json::from_str(&saved).unwrap());
    assert!(p3.state.episodes.is_empty());
}

#[test]
fn alertmanager_is_ungrouped_and_resent_every_interval() {
    let mut am = channel("am", ChannelKind::Alertmanager);
    am.resend_interval = Duration::from_secs(60);
    let mut cfg = config(vec![am, channel("w", ChannelKind::Webhook)], vec![]);
    cfg.group_wait = Duration::from_secs(30);
    let mut p = planner(&cfg, PlanState::default());
    let a = firing("A", &[], Critical, 0);
    let b = firing("B", &[], Warning, 10);
    let am_only = |ns: Vec<Notice>| ns.into_iter().filter(|n| n.channel == "am").collect::<Vec<_>>();
    let ns = p.plan(&[], std::slice::from_ref(&a), at(0), &no_backlog);
    assert_eq!(summary(&ns), vec![("am".into(), vec![r("A", Reason::Firing)])], "no group_wait for Alertmanager");
    assert_eq!(
        summary(&p.plan(&[], &[a.clone(), b.clone()], at(10), &no_backlog)),
        vec![("am".into(), vec![r("B", Reason::Firing)])]
    );
    assert!(p.plan(&[], &[a.clone(), b.clone()], at(30), &no_backlog).iter().all(|n| n.channel == "w"));
    assert!(am_only(p.plan(&[], &[a.clone(), b.clone()], at(59), &no_backlog)).is_empty());
    let ns = am_only(p.plan(&[], &[a.clone(), b.clone()], at(60), &no_backlog));
    assert_eq!(summary(&ns), vec![("am".into(), vec![r("A", Reason::Resend), r("B", Reason::Resend)])]);
    // Backlogged: no resend piles up (the backlog refreshes endsAt when delivered).
    assert!(p.plan(&[], &[a.clone(), b.clone()], at(120), &|c| c == "am").is_empty());
    assert_eq!(am_only(p.plan(&[], &[a.clone(), b.clone()], at(125), &no_backlog)).len(), 1);
    // Silenced alerts already known to Alertmanager keep being resent (it would expire them).
    let mut bs = b.clone();
    bs.silenced = true;
    let ns = am_only(p.plan(&[], &[a.clone(), bs.clone()], at(185), &no_backlog));
    assert_eq!(ns[0].entries.len(), 2);
    let ns = am_only(p.plan(&[resolve(&a, 190)], &[bs], at(190), &no_backlog));
    assert_eq!(summary(&ns), vec![("am".into(), vec![r("A", Reason::Resolved)])]);
}

#[test]
fn group_by_all_labels_gives_each_alert_its_own_notice() {
    let mut cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    cfg.group_by = vec!["...".into()];
    let mut p = planner(&cfg, PlanState::default());
    let ns = p.plan(&[], &[firing("Q", &[("c", "1")], Critical, 0), firing("Q", &[("c", "2")], Critical, 0)], at(0), &no_backlog);
    assert_eq!(ns.len(), 2);
    assert_eq!(ns[0].group_labels, ns[0].entries[0].alert.labels);
}

#[test]
fn a_stale_submit_neither_resolves_nor_downgrades_what_a_newer_one_notified() {
    let cfg = config(vec![channel("w", ChannelKind::Webhook)], vec![]);
    let mut p = planner(&cfg, PlanState::default());
    let old = firing("Old", &[], Warning, 0);
    let mut new = firing("New", &[], Warning, 10);
    p.plan(&[], std::slice::from_ref(&old), at(0), &no_backlog);
    // The newer caller (an evaluation at 10) notifies New, raised to critical.
    new.severity = Critical;
    assert_eq!(p.plan(&[], &[old.clone(), new.clone()], at(10), &no_backlog).len(), 1);
    // The older caller (computed at 9, submitted late) lacks New and sees it as warning: no
    // resolve, and no spurious severity_raised later.
    let mut seen_at_9 = new.clone();
    seen_at_9.severity = Warning;
    assert!(p.plan(&[], &[old.clone(), seen_at_9], at(9), &no_backlog).is_empty());
    assert!(p.plan(&[], std::slice::from_ref(&old), at(9), &no_backlog).is_empty());
    assert!(p.plan(&[], &[old.clone(), new.clone()], at(11), &no_backlog).is_empty());
    // Its explicit transitions still count.
    let ns = p.plan(&[resolve(&old, 9)], &[], at(9), &no_backlog);
    assert_eq!(summary(&ns), vec![("w".into(), vec![r("Old", Reason::Resolved)])]);
}
