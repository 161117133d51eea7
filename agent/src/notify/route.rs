//! Routing: which channels hear about an alert, and with which grouping.

use std::time::Duration;

use crate::alert::{silence::Matcher, Alert, Labels, Severity};

use super::config::NotifyConfig;

/// Grouping and repeat settings of a route (route values over `[notify]` defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub group_by: Vec<String>,
    pub wait: Duration,
    pub interval: Duration,
    pub repeat: Duration,
}

impl Grouping {
    /// The group key and group labels of an alert: `{label="value",…}` over `group_by`
    /// (`...`: all labels).
    pub fn key(&self, route: usize, labels: &Labels) -> (String, Labels) {
        let picked: Labels = if self.group_by.iter().any(|l| l == "...") {
            labels.clone()
        } else {
            self.group_by.iter().map(|l| (l.clone(), labels.get(l).cloned().unwrap_or_default())).collect()
        };
        let body: Vec<String> = picked.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (format!("{route}:{{{}}}", body.join(",")), picked)
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    severity: Vec<Severity>,
    matchers: Vec<Matcher>,
    tiers: Vec<String>,
    pub channels: Vec<String>,
    continue_: bool,
    pub grouping: Grouping,
}

impl Route {
    fn matches(&self, a: &Alert) -> bool {
        (self.severity.is_empty() || self.severity.contains(&a.severity))
            && self.matchers.iter().all(|m| m.matches(&a.labels))
            && (self.tiers.is_empty() || a.tier_name.as_ref().is_some_and(|t| self.tiers.contains(t)))
    }
}

/// One channel an alert goes to, through route number `route`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub channel: &'a str,
    pub route: usize,
    pub grouping: &'a Grouping,
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Compile `cfg.routes` (validated); none: one route to every channel.
    pub fn new(cfg: &NotifyConfig) -> Result<Self, String> {
        let grouping = |r: Option<&super::config::RouteConfig>| Grouping {
            group_by: r.and_then(|r| r.group_by.clone()).unwrap_or_else(|| cfg.group_by.clone()),
            wait: r.and_then(|r| r.group_wait).unwrap_or(cfg.group_wait),
            interval: r.and_then(|r| r.group_interval).unwrap_or(cfg.group_interval),
            repeat: r.and_then(|r| r.repeat_interval).unwrap_or(cfg.repeat_interval),
        };
        if cfg.routes.is_empty() {
            return Ok(Router {
                routes: vec![Route {
                    severity: Vec::new(),
                    matchers: Vec::new(),
                    tiers: Vec::new(),
                    channels: cfg.channels.iter().map(|c| c.name.clone()).collect(),
                    continue_: false,
                    grouping: grouping(None),
                }],
            });
        }
        let mut routes = Vec::new();
        for r in &cfg.routes {
            routes.push(Route {
                severity: r.severity.clone(),
                matchers: r.matchers.iter().map(|m| Matcher::parse(m)).collect::<Result<_, _>>()?,
                tiers: r.tiers.clone(),
                channels: r.channels.clone(),
                continue_: r.continue_,
                grouping: grouping(Some(r)),
            });
        }
        Ok(Router { routes })
    }

    /// Channels for an alert in route order, each once (the first route that names it wins).
    pub fn targets(&self, a: &Alert) -> Vec<Target<'_>> {
        let mut out: Vec<Target<'_>> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if !r.matches(a) {
                continue;
            }
            for c in &r.channels {
                if !out.iter().any(|t| t.channel == c) {
                    out.push(Target { channel: c, route: i, grouping: &r.grouping });
                }
            }
            if !r.continue_ {
                break;
            }
        }
        out
    }
}
