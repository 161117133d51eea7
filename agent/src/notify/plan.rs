//! The planner: alert transitions and the firing set → notices, per channel and group.
//!
//! Pure and clock-free (time is an argument). Its state is what each channel was told about the
//! current episode of each alert (so a resolve reaches every channel that heard the firing, also
//! after a restart) and the open group windows; it is persisted with the outbox in one
//! transaction.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    alert::{Alert, Labels, Severity, Status, Transition, TransitionKind},
    util::time::rfc3339,
};

use super::{
    notice::{unix_ms, Entry, Notice, Reason},
    route::{Grouping, Router},
};

/// What the planner needs to know about a channel.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub name: String,
    /// Alertmanager channels are not grouped or repeated; they get resends instead.
    pub alertmanager: bool,
    pub resend: Duration,
}

/// What one channel was told about the current episode of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub starts_at: String,
    pub tier: usize,
    pub severity: Severity,
    /// Group key the alert's notices go to on this channel.
    pub group: String,
    /// When an entry for it was last queued (unix ms); repeats count from here.
    pub notified_ms: u64,
    /// Last alert queued (the resolve is built from it if the alert vanishes unannounced).
    pub alert: Alert,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub labels: Labels,
    pub wait_ms: u64,
    pub interval_ms: u64,
    pub last_flush_ms: Option<u64>,
    /// When the oldest entry of the batch was queued.
    pub since_ms: Option<u64>,
    /// Entries waiting for the group's next notice, by fingerprint.
    pub batch: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanState {
    /// channel → fingerprint → episode.
    pub episodes: BTreeMap<String, BTreeMap<String, Episode>>,
    /// channel → group key → group.
    pub groups: BTreeMap<String, BTreeMap<String, Group>>,
    /// Alertmanager channel → last resend (unix ms).
    pub resends: BTreeMap<String, u64>,
    /// `now` of the newest plan (unix ms); an older one is stale (see [`Planner::plan`]).
    /// Not persisted: it only orders callers within one run, and skipping it keeps an
    /// evaluation that changes nothing from writing the file.
    #[serde(skip)]
    pub last_ms: u64,
}

pub struct Planner {
    router: Router,
    channels: Vec<ChannelInfo>,
    pub state: PlanState,
    /// Firing alerts no route matched (warned about once per alert).
    unrouted: HashSet<String>,
    pub unrouted_total: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Planner {
    /// `state` from the outbox; what it holds about channels no longer configured is dropped.
    pub fn new(router: Router, channels: Vec<ChannelInfo>, mut state: PlanState) -> Self {
        let known = |c: &String| channels.iter().any(|i| &i.name == c);
        state.episodes.retain(|c, _| known(c));
        state.groups.retain(|c, _| known(c));
        state.resends.retain(|c, _| known(c));
        Planner { router, channels, state, unrouted: HashSet::new(), unrouted_total: 0 }
    }

    /// One evaluation's transitions (with their alerts) and every alert firing now → the
    /// notices due now. `backlogged(channel)`: it still has undelivered notices (Alertmanager
    /// resends are then skipped: the backlog refreshes `endsAt` when it is delivered).
    pub fn plan(
        &mut self,
        events: &[(Transition, Alert)],
        firing: &[Alert],
        now: SystemTime,
        backlogged: &dyn Fn(&str) -> bool,
    ) -> Vec<Notice> {
        let now_ms = unix_ms(now);
        let stale = now_ms < self.state.last_ms;
        self.state.last_ms = self.state.last_ms.max(now_ms);
        let firing = if stale { &[][..] } else { firing };
        let mut current: BTreeMap<&str, &Alert> =
            firing.iter().filter(|a| a.status == Status::Firing).map(|a| (a.fingerprint.as_str(), a)).collect();
        let mut resolved: BTreeMap<&str, &Alert> = BTreeMap::new();
        for (t, a) in events {
            match t.kind {
                TransitionKind::Firing | TransitionKind::Escalated | TransitionKind::SeverityChanged
                    if a.status == Status::Firing =>
                {
                    current.insert(a.fingerprint.as_str(), a);
                }
                TransitionKind::Resolved => {
                    resolved.insert(a.fingerprint.as_str(), a);
                }
                _ => {}
            }
        }
        self.resolves(&current, &resolved, now, stale);
        self.firing(&current, now_ms, stale);
        if !stale {
            self.resends(&current, now_ms, backlogged);
        }
        self.unrouted.retain(|fp| current.contains_key(fp.as_str()));
        self.flush(now_ms, false)
    }

    /// Every group batch still waiting for its `group_wait`/`group_interval` becomes a notice
    /// now. For a stopping agent: otherwise those changes would go out only at the next start,
    /// which may be long after or never; the cost is a window cut short.
    pub fn close_windows(&mut self, now: SystemTime) -> Vec<Notice> {
        let now_ms = unix_ms(now);
        self.state.last_ms = self.state.last_ms.max(now_ms);
        self.flush(now_ms, true)
    }

    /// Every channel told about an episode that is no longer firing gets the resolve.
    fn resolves(&mut self, current: &BTreeMap<&str, &Alert>, resolved: &BTreeMap<&str, &Alert>, now: SystemTime, stale: bool) {
        let now_ms = unix_ms(now);
        let mut out = Vec::new();
        for (ch, eps) in self.state.episodes.iter_mut() {
            let ended: Vec<String> = eps
                .iter()
                .filter(|(fp, ep)| {
                    let announced = resolved.get(fp.as_str()).is_some_and(|a| a.starts_at == ep.starts_at);
                    let absent = current.get(fp.as_str()).is_none_or(|a| a.starts_at != ep.starts_at);
                    announced || (absent && !stale)
                })
                .map(|(fp, _)| fp.clone())
                .collect();
            for fp in ended {
                let ep = eps.remove(&fp).expect("listed");
                let alert = match resolved.get(fp.as_str()) {
                    Some(a) if a.starts_at == ep.starts_at => (*a).clone(),
                    _ => {
                        // Gone without a resolve transition (resolved by hand, state lost, or a
                        // new episode started): close the one the channel knows.
                        let mut a = ep.alert.clone();
                        a.status = Status::Resolved;
                        a.ends_at = Some(rfc3339(now));
                        a
                    }
                };
                out.push((ch.clone(), ep.group, Entry { reason: Reason::Resolved, alert }));
            }
        }
        for (ch, group, e) in out {
            self.add(&ch, &group, None, e, now_ms);
        }
    }

    fn firing(&mut self, current: &BTreeMap<&str, &Alert>, now_ms: u64, stale: bool) {
        for (fp, a) in current {
            let targets: Vec<(String, usize, Grouping)> =
                self.router.targets(a).into_iter().map(|t| (t.channel.to_string(), t.route, t.grouping.clone())).collect();
            if targets.is_empty() {
                if self.unrouted.insert(fp.to_string()) {
                    self.unrouted_total += 1;
                    tracing::warn!(alertname = a.labels.get("alertname").map(String::as_str).unwrap_or(""),
                        fingerprint = %fp, "firing alert matches no [[notify.routes]] entry; not notified");
                }
                continue;
            }
            for (channel, route, grouping) in targets {
                let Some(info) = self.channels.iter().find(|c| c.name == channel) else { continue };
                let (am, name) = (info.alertmanager, info.name.clone());
                let ep = self.state.episodes.entry(name.clone()).or_default().get_mut(*fp);
                let (group, new_group, reason) = match ep {
                    None if a.silenced => continue,
                    None => {
                        let (key, labels) = if am { (String::new(), Labels::new()) } else { grouping.key(route, &a.labels) };
                        let (wait, interval) = if am { (0, 0) } else { (ms(grouping.wait), ms(grouping.interval)) };
                        let reason = if a.tier > 0 { Reason::Escalated } else { Reason::Firing };
                        let ep = Episode {
                            starts_at: a.starts_at.clone(),
                            tier: a.tier,
                            severity: a.severity,
                            group: key.clone(),
                            notified_ms: now_ms,
                            alert: (*a).clone(),
                        };
                        self.state.episodes.get_mut(&name).expect("entry").insert(fp.to_string(), ep);
                        (key, Some((labels, wait, interval)), reason)
                    }
                    // A stale plan's alert may be older than what the episode holds.
                    Some(_) if stale => continue,
                    Some(ep) => {
                        let reason = if a.silenced {
                            None
                        } else if a.tier > ep.tier {
                            Some(Reason::Escalated)
                        } else if a.severity > ep.severity {
                            Some(Reason::SeverityRaised)
                        } else if !am && !a.acknowledged && now_ms >= ep.notified_ms + ms(grouping.repeat) {
                            Some(Reason::Repeat)
                        } else {
                            None
                        };
                        ep.tier = a.tier;
                        ep.severity = a.severity;
                        let Some(reason) = reason else { continue };
                        ep.notified_ms = now_ms;
                        ep.alert = (*a).clone();
                        (ep.group.clone(), None, reason)
                    }
                };
                self.add(&name, &group, new_group, Entry { reason, alert: (*a).clone() }, now_ms);
            }
        }
    }

    /// Alertmanager channels: every alert they know is re-sent each `resend_interval`.
    fn resends(&mut self, current: &BTreeMap<&str, &Alert>, now_ms: u64, backlogged: &dyn Fn(&str) -> bool) {
        let mut out = Vec::new();
        for info in self.channels.iter().filter(|c| c.alertmanager) {
            let Some(eps) = self.state.episodes.get(&info.name).filter(|e| !e.is_empty()) else { continue };
            let last = self.state.resends.get(&info.name).copied().unwrap_or(0);
            if now_ms < last + ms(info.resend) || backlogged(&info.name) {
                continue;
            }
            for (fp, ep) in eps {
                if let Some(a) = current.get(fp.as_str()) {
                    out.push((info.name.clone(), ep.group.clone(), Entry { reason: Reason::Resend, alert: (*a).clone() }));
                }
            }
            self.state.resends.insert(info.name.clone(), now_ms);
        }
        for (ch, group, e) in out {
            self.add(&ch, &group, None, e, now_ms);
        }
    }

    fn add(&mut self, ch: &str, key: &str, new: Option<(Labels, u64, u64)>, e: Entry, now_ms: u64) {
        let groups = self.state.groups.entry(ch.to_string()).or_default();
        let g = groups.entry(key.to_string()).or_insert_with(|| {
            let (labels, wait_ms, interval_ms) = new.unwrap_or_default();
            Group { labels, wait_ms, interval_ms, last_flush_ms: None, since_ms: None, batch: BTreeMap::new() }
        });
        g.since_ms.get_or_insert(now_ms);
        let fp = e.alert.fingerprint.clone();
        let merged = match g.batch.remove(&fp) {
            Some(old) => old.merge(e),
            None => e,
        };
        g.batch.insert(fp, merged);
    }

    /// Groups whose window is over become notices; empty groups nobody refers to are forgotten
    /// (the next alert for them waits `group_wait` again). `force`: ignore the windows.
    fn flush(&mut self, now_ms: u64, force: bool) -> Vec<Notice> {
        let mut out = Vec::new();
        for (ch, groups) in self.state.groups.iter_mut() {
            for (key, g) in groups.iter_mut() {
                let Some(since) = g.since_ms.filter(|_| !g.batch.is_empty()) else { continue };
                let due = match g.last_flush_ms {
                    None => since + g.wait_ms,
                    Some(l) => since.max(l + g.interval_ms),
                };
                if now_ms < due && !force {
                    continue;
                }
                out.push(Notice {
                    id: uuid::Uuid::new_v4().to_string(),
                    channel: ch.clone(),
                    group_key: key.clone(),
                    group_labels: g.labels.clone(),
                    created_ms: now_ms,
                    entries: std::mem::take(&mut g.batch).into_values().collect(),
                });
                g.last_flush_ms = Some(now_ms);
                g.since_ms = None;
            }
            let eps = self.state.episodes.get(ch);
            groups.retain(|key, g| !g.batch.is_empty() || eps.is_some_and(|e| e.values().any(|ep| &ep.group == key)));
        }
        self.state.groups.retain(|_, g| !g.is_empty());
        self.state.episodes.retain(|_, e| !e.is_empty());
        out
    }
}
