//! `[notify]`: channels, routes, grouping and delivery settings (`docs/notifications.md`).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::alert::{silence::Matcher, Severity};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub channels: Vec<ChannelConfig>,
    /// First matching route wins (unless it has `continue = true`); none configured: one route
    /// to every channel.
    pub routes: Vec<RouteConfig>,
    /// Base URL of this agent as receivers should link to it (`generatorURL`, `externalURL`);
    /// empty: no links.
    pub external_url: String,
    /// Labels whose values split alerts into groups (`["..."]`: every alert its own group).
    pub group_by: Vec<String>,
    /// A new group waits this long for more alerts before its first notice.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// A group that was notified waits this long before notifying changes.
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    /// A still-firing, unacknowledged alert is notified again after this long.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    pub delivery: DeliveryConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            routes: Vec::new(),
            external_url: String::new(),
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(5),
            group_interval: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(4 * 3600),
            delivery: DeliveryConfig::default(),
        }
    }
}

/// Retries, backoff and circuit breaker, the same for every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// First retry delay; doubles per failed attempt (with jitter) up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A notice still undelivered this long after it was created is dropped (counted, logged).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Consecutive failures that open a channel's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before one probe (half-open).
    #[serde(with = "humantime_serde")]
    pub breaker_open: Duration,
    /// A notice the receiver rejects (HTTP 4xx other than 408/425/429, SMTP 5xx) this many
    /// times in a row is dropped: it would block the channel until `max_age`.
    pub max_rejections: u32,
    /// Per-request timeout (HTTP and SMTP).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            max_age: Duration::from_secs(24 * 3600),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(30),
            max_rejections: 5,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Log,
    Webhook,
    Slack,
    Alertmanager,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Log => "log",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Alertmanager => "alertmanager",
            ChannelKind::Email => "email",
        }
    }

    fn http(self) -> bool {
        matches!(self, ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Alertmanager)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a local relay).
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// One `[[notify.channels]]` entry. A secret comes from exactly one of the value, `*_file`
/// (trailing newline trimmed) or `*_env`. `Debug` hides the secret values.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// webhook: the receiver; slack: the incoming-webhook URL; alertmanager: its base URL.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// webhook / alertmanager: value of the `Authorization` header, e.g. `Bearer …`.
    #[serde(default)]
    pub auth_header: Option<String>,
    #[serde(default)]
    pub auth_header_file: Option<PathBuf>,
    #[serde(default)]
    pub auth_header_env: Option<String>,
    /// alertmanager: every firing alert is re-sent this often (Prometheus' `resend_delay`).
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// webhook: at most this many alerts per notice, the rest counted in `truncatedAlerts`
    /// (0: all).
    #[serde(default)]
    pub max_alerts: usize,
    /// At most this many notices per minute (0: no limit); excess waits in the outbox.
    #[serde(default)]
    pub rate_limit: u32,
    /// At least this long between two notices on this channel; excess waits in the outbox.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Duration,
    /// email: `host:port` of the SMTP server.
    #[serde(default)]
    pub smtp: Option<String>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &hide(&self.url))
            .field("url_file", &self.url_file)
            .field("url_env", &self.url_env)
            .field("auth_header", &hide(&self.auth_header))
            .field("auth_header_file", &self.auth_header_file)
            .field("auth_header_env", &self.auth_header_env)
            .field("resend_interval", &self.resend_interval)
            .field("max_alerts", &self.max_alerts)
            .field("rate_limit", &self.rate_limit)
            .field("cooldown", &self.cooldown)
            .field("smtp", &self.smtp)
            .field("tls", &self.tls)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("username", &self.username)
            .field("password", &hide(&self.password))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish()
    }
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}

impl ChannelConfig {
    /// A channel of `kind` named `name` with every optional setting at its default.
    #[cfg(test)]
    pub fn new(name: &str, kind: ChannelKind) -> Self {
        ChannelConfig {
            name: name.into(),
            kind,
            url: None,
            url_file: None,
            url_env: None,
            auth_header: None,
            auth_header_file: None,
            auth_header_env: None,
            resend_interval: default_resend(),
            max_alerts: 0,
            rate_limit: 0,
            cooldown: Duration::ZERO,
            smtp: None,
            tls: SmtpTls::None,
            from: None,
            to: Vec::new(),
            username: None,
            password: None,
            password_file: None,
            password_env: None,
        }
    }
}

/// One `[[notify.routes]]` entry: all given conditions must hold (empty: any).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub severity: Vec<Severity>,
    /// Label matchers in the silence syntax: `alertname=~"Client.*"`, `comm!=node`.
    pub matchers: Vec<String>,
    /// Escalation tier names (`Alert.tier_name`).
    pub tiers: Vec<String>,
    pub channels: Vec<String>,
    /// Keep matching later routes after this one.
    #[serde(rename = "continue")]
    pub continue_: bool,
    pub group_by: Option<Vec<String>>,
    #[serde(with = "humantime_serde")]
    pub group_wait: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub group_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
}

fn sources(n: usize) -> Result<(), String> {
    if n > 1 {
        return Err("set only one of the value, its _file and its _env".into());
    }
    Ok(())
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let ch = |i: usize, c: &ChannelConfig, m: String| ("notify.channels", format!("[{i}] {:?}: {m}", c.name));
        for (i, c) in self.channels.iter().enumerate() {
            if c.name.is_empty() || !c.name.chars().all(|x| x.is_ascii_alphanumeric() || "-_.".contains(x)) {
                return Err(ch(i, c, "name must be non-empty [A-Za-z0-9_.-]".into()));
            }
            if self.channels[..i].iter().any(|o| o.name == c.name) {
                return Err(ch(i, c, "duplicate channel name".into()));
            }
            let n_url = [c.url.is_some(), c.url_file.is_some(), c.url_env.is_some()].iter().filter(|x| **x).count();
            if c.kind.http() {
                if n_url == 0 {
                    return Err(ch(i, c, "needs url, url_file or url_env".into()));
                }
                sources(n_url).map_err(|m| ch(i, c, format!("url: {m}")))?;
                if let Some(u) = &c.url {
                    super::secret::check_http_url(u).map_err(|m| ch(i, c, format!("url: {m}")))?;
                }
            } else if n_url > 0 {
                return Err(ch(i, c, format!("url is not used by type {}", c.kind.as_str())));
            }
            let n_auth = [c.auth_header.is_some(), c.auth_header_file.is_some(), c.auth_header_env.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            sources(n_auth).map_err(|m| ch(i, c, format!("auth_header: {m}")))?;
            if n_auth > 0 && !matches!(c.kind, ChannelKind::Webhook | ChannelKind::Alertmanager) {
                return Err(ch(i, c, "auth_header is only for webhook and alertmanager".into()));
            }
            if c.resend_interval < Duration::from_secs(1) {
                return Err(ch(i, c, "resend_interval must be at least 1s".into()));
            }
            let n_pw = [c.password.is_some(), c.password_file.is_some(), c.password_env.is_some()].iter().filter(|x| **x).count();
            sources(n_pw).map_err(|m| ch(i, c, format!("password: {m}")))?;
            if c.kind == ChannelKind::Email {
                let smtp = c.smtp.as_deref().unwrap_or("");
                super::channel::email::parse_host_port(smtp).map_err(|m| ch(i, c, format!("smtp: {m}")))?;
                let from = c.from.as_deref().ok_or_else(|| ch(i, c, "needs from".into()))?;
                super::channel::email::parse_mailbox(from).map_err(|m| ch(i, c, format!("from: {m}")))?;
                if c.to.is_empty() {
                    return Err(ch(i, c, "needs at least one address in to".into()));
                }
                for t in &c.to {
                    super::channel::email::parse_mailbox(t).map_err(|m| ch(i, c, format!("to: {m}")))?;
                }
                if n_pw > 0 && c.username.is_none() {
                    return Err(ch(i, c, "a password needs a username".into()));
                }
            } else if c.smtp.is_some() || c.from.is_some() || !c.to.is_empty() || c.username.is_some() || n_pw > 0 {
                return Err(ch(i, c, "smtp, from, to, username and password are only for email".into()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let bad = |m: String| ("notify.routes", format!("[{i}]: {m}"));
            if r.channels.is_empty() {
                return Err(bad("needs at least one channel".into()));
            }
            for c in &r.channels {
                if !self.channels.iter().any(|x| &x.name == c) {
                    return Err(bad(format!("unknown channel {c:?}")));
                }
            }
            for m in &r.matchers {
                Matcher::parse(m).map_err(bad)?;
            }
            if let Some(g) = &r.group_by {
                check_group_by(g).map_err(bad)?;
            }
            if r.repeat_interval.is_some_and(|d| d.is_zero()) {
                return Err(bad("repeat_interval must be positive".into()));
            }
        }
        check_group_by(&self.group_by).map_err(|m| ("notify.group_by", m))?;
        if self.repeat_interval.is_zero() {
            return Err(("notify.repeat_interval", "must be positive".into()));
        }
        if !self.external_url.is_empty() {
            super::secret::check_http_url(&self.external_url).map_err(|m| ("notify.external_url", m))?;
        }
        let d = &self.delivery;
        if d.retry_initial.is_zero() {
            return Err(("notify.delivery.retry_initial", "must be positive".into()));
        }
        if d.retry_max < d.retry_initial {
            return Err(("notify.delivery.retry_max", "must not be shorter than retry_initial".into()));
        }
        if d.max_age < Duration::from_secs(1) {
            return Err(("notify.delivery.max_age", "must be at least 1s".into()));
        }
        if d.breaker_threshold == 0 {
            return Err(("notify.delivery.breaker_threshold", "must be at least 1".into()));
        }
        if d.max_rejections == 0 {
            return Err(("notify.delivery.max_rejections", "must be at least 1".into()));
        }
        if d.timeout.is_zero() {
            return Err(("notify.delivery.timeout", "must be positive".into()));
        }
        Ok(())
    }
}

fn check_group_by(g: &[String]) -> Result<(), String> {
    if g.iter().any(|l| l.is_empty()) {
        return Err("group_by: empty label name".into());
    }
    if g.iter().any(|l| l == "...") && g.len() > 1 {
        return Err("group_by: \"...\" (every alert its own group) must stand alone".into());
    }
    Ok(())
}
