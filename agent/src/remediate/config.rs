//! `[remediation]` and `[[remediation.actions]]`: what may be done, when, and within which
//! bounds. One flat struct per action (fields that do not belong to its `type` are refused by
//! `validate`) keeps serde's `deny_unknown_fields` working and its errors precise.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{alert::silence::Matcher, model::sse::Transport};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// Global switch: when false nothing is evaluated, run or recorded.
    pub enabled: bool,
    /// Global dry run: every action is only recorded (what it would do), nothing is done.
    pub dry_run: bool,
    /// Defaults for actions that do not set their own.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    pub max_runs_per_hour: u32,
    /// Circuit breaker: an action is disabled after this many consecutive runs that did not
    /// improve the metric of the alert that fired it (0: never).
    pub breaker_after: u32,
    /// How long after a run its effect is judged (alert resolved, or its value moved the right
    /// way).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// A run waiting for `wsguard remediation approve` is dropped after this long.
    #[serde(with = "humantime_serde")]
    pub approval_ttl: Duration,
    pub actions: Vec<ActionConfig>,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dry_run: false,
            cooldown: Duration::from_secs(600),
            max_runs_per_hour: 6,
            breaker_after: 3,
            settle: Duration::from_secs(60),
            approval_ttl: Duration::from_secs(900),
            actions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    CloseConnections,
    Exec,
    Http,
    Signal,
    RestartUnit,
    RaiseFdLimit,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::CloseConnections => "close_connections",
            ActionType::Exec => "exec",
            ActionType::Http => "http",
            ActionType::Signal => "signal",
            ActionType::RestartUnit => "restart_unit",
            ActionType::RaiseFdLimit => "raise_fd_limit",
        }
    }

    /// Acts on one process, which must come from the alert's `pid` label.
    pub fn needs_process(self) -> bool {
        !matches!(self, ActionType::Exec | ActionType::Http)
    }
}

/// Which connections `close_connections` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// No traffic either way for `idle_for` (re-checked in the kernel's tcp_info before closing).
    Idle,
    /// A client's connections beyond `keep` (default: the process's client quota).
    OverQuota,
    /// A ping from the process unanswered for `[limits] stall_after`.
    Stalled,
    /// The oldest connections.
    Oldest,
    /// Server-Sent Events streams with no *event* for `idle_for` (keep-alive comments do not
    /// count). Not re-checked in tcp_info: keep-alives move bytes, so a quiet stream is rarely
    /// TCP-idle. Implies `transport = "sse"`.
    IdleStreams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Close the most recent connections first (keep the established ones).
    Newest,
    Oldest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    pub by: SelectBy,
    /// Which connections are candidates: `websocket` (the default, except for `idle_streams`)
    /// or `sse` streams. One transport per action, so the bounds and the quota count the same
    /// kind of connection.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// `idle`: minimum idle time.
    #[serde(default = "default_idle_for", with = "humantime_serde")]
    pub idle_for: Duration,
    /// `over_quota`: which of a client's connections go first.
    #[serde(default = "default_order")]
    pub order: Order,
    /// `over_quota`: connections each client keeps (default: the process's quota,
    /// `[limits] per_client_connections`).
    #[serde(default)]
    pub keep: Option<u64>,
    /// At most this many connections per run.
    #[serde(default = "default_max_count")]
    pub max_count: u64,
    /// At most this share of the process's connections of the selected transport per run.
    #[serde(default = "default_max_fraction")]
    pub max_fraction: f64,
}

impl SelectConfig {
    /// The transport the selector looks at.
    pub fn transport(&self) -> Transport {
        match (self.transport, self.by) {
            (Some(t), _) => t,
            (None, SelectBy::IdleStreams) => Transport::Sse,
            (None, _) => Transport::Websocket,
        }
    }
}

fn default_idle_for() -> Duration {
    Duration::from_secs(300)
}
fn default_order() -> Order {
    Order::Newest
}
fn default_max_count() -> u64 {
    100
}
fn default_max_fraction() -> f64 {
    0.25
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ActionType,
    /// Alert names that trigger the action (while they fire).
    pub on: Vec<String>,
    /// Extra label matchers the alert must satisfy, e.g. `['comm="node"']`.
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    /// Only record what would be done. Defaults to true: an action acts only once its
    /// operator wrote `dry_run = false`.
    #[serde(default = "yes")]
    pub dry_run: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Wait for `wsguard remediation approve ID` before each run.
    #[serde(default)]
    pub approval: bool,
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    #[serde(default)]
    pub max_runs_per_hour: Option<u32>,
    #[serde(default)]
    pub breaker_after: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub settle: Option<Duration>,
    /// exec / http / restart_unit: give up (and kill the command) after this long.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// close_connections.
    #[serde(default)]
    pub select: Option<SelectConfig>,
    /// exec: argv, no shell (use `["/bin/sh", "-c", "..."]` for one).
    #[serde(default)]
    pub command: Vec<String>,
    /// exec: run as this user (default `nobody`; `root` must be written out).
    #[serde(default)]
    pub user: Option<String>,
    /// http.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// http: a header whose value is secret, read at each call from `secret_file` or
    /// `secret_env`; never logged or recorded.
    #[serde(default)]
    pub secret_header: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// signal: `SIGHUP`, `HUP`, `SIGUSR1`, ...
    #[serde(default)]
    pub signal: Option<String>,
    /// raise_fd_limit: new soft limit = soft × factor, at most the hard limit (and `max`).
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub max: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Signals an action may send (by name, with or without `SIG`).
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    Some(match n {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

impl ActionConfig {
    pub fn cooldown(&self, g: &RemediationConfig) -> Duration {
        self.cooldown.unwrap_or(g.cooldown)
    }
    pub fn max_runs_per_hour(&self, g: &RemediationConfig) -> u32 {
        self.max_runs_per_hour.unwrap_or(g.max_runs_per_hour)
    }
    pub fn breaker_after(&self, g: &RemediationConfig) -> u32 {
        self.breaker_after.unwrap_or(g.breaker_after)
    }
    pub fn settle(&self, g: &RemediationConfig) -> Duration {
        self.settle.unwrap_or(g.settle)
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(match self.kind {
            ActionType::RestartUnit => Duration::from_secs(90),
            _ => Duration::from_secs(30),
        })
    }
    pub fn dry_run(&self, g: &RemediationConfig) -> bool {
        g.dry_run || self.dry_run
    }
    pub fn matchers(&self) -> Vec<Matcher> {
        self.matchers.iter().filter_map(|m| Matcher::parse(m).ok()).collect()
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let e = |m: &str| Err(format!("action {name:?}: {m}"));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("action name {name:?} must be non-empty [A-Za-z0-9_-]"));
        }
        if self.on.is_empty() {
            return e("`on` must name at least one alert");
        }
        for m in &self.matchers {
            Matcher::parse(m).map_err(|x| format!("action {name:?}: match: {x}"))?;
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return e("timeout must be positive");
        }
        use ActionType::*;
        let set = |present: bool, field: &str, types: &[ActionType]| -> Result<(), String> {
            if present && !types.contains(&self.kind) {
                return Err(format!("action {name:?}: `{field}` does not apply to type {}", self.kind.as_str()));
            }
            Ok(())
        };
        set(self.select.is_some(), "select", &[CloseConnections])?;
        set(!self.command.is_empty(), "command", &[Exec])?;
        set(self.user.is_some(), "user", &[Exec])?;
        let http = self.url.is_some() || self.method.is_some() || self.retries.is_some() || !self.headers.is_empty();
        set(http, "url/method/retries/headers", &[Http])?;
        let secret = self.secret_header.is_some() || self.secret_file.is_some() || self.secret_env.is_some();
        set(secret, "secret_header/secret_file/secret_env", &[Http])?;
        set(self.signal.is_some(), "signal", &[Signal])?;
        set(self.factor.is_some() || self.max.is_some(), "factor/max", &[RaiseFdLimit])?;
        set(self.timeout.is_some(), "timeout", &[Exec, Http, RestartUnit])?;
        match self.kind {
            CloseConnections => {
                let Some(s) = &self.select else { return e("close_connections needs `select`") };
                if s.max_count == 0 {
                    return e("select.max_count must be at least 1");
                }
                if !(s.max_fraction > 0.0 && s.max_fraction <= 1.0) {
                    return e("select.max_fraction must be in (0, 1]");
                }
                if matches!(s.by, SelectBy::Idle | SelectBy::IdleStreams) && s.idle_for.is_zero() {
                    return e("select.idle_for must be positive");
                }
                match (s.by, s.transport()) {
                    (SelectBy::IdleStreams, Transport::Websocket) => {
                        return e("select.by = \"idle_streams\" picks SSE streams; drop select.transport or set it to \"sse\"")
                    }
                    (SelectBy::Stalled, Transport::Sse) => {
                        return e("select.by = \"stalled\" means an unanswered WebSocket ping; SSE streams have none (use \"idle_streams\")")
                    }
                    _ => {}
                }
            }
            Exec => {
                match self.command.first() {
                    None => return e("exec needs `command` (argv)"),
                    Some(p) if !p.starts_with('/') => return e("command[0] must be an absolute path"),
                    _ => {}
                }
                if let Some(u) = &self.user {
                    if u.is_empty() {
                        return e("user must not be empty");
                    }
                }
            }
            Http => {
                let Some(url) = &self.url else { return e("http needs `url`") };
                let parsed = reqwest::Url::parse(url).map_err(|x| format!("action {name:?}: url: {x}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return e("url must be http or https");
                }
                if let Some(m) = &self.method {
                    if !matches!(m.to_ascii_uppercase().as_str(), "POST" | "PUT") {
                        return e("method must be POST or PUT");
                    }
                }
                if self.secret_header.is_some() != (self.secret_file.is_some() || self.secret_env.is_some()) {
                    return e("secret_header needs exactly one of secret_file / secret_env (and they need it)");
                }
                if self.secret_file.is_some() && self.secret_env.is_some() {
                    return e("set secret_file or secret_env, not both");
                }
                for k in self.headers.keys().chain(self.secret_header.iter()) {
                    reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("action {name:?}: invalid header name {k:?}"))?;
                }
            }
            Signal => {
                let Some(s) = &self.signal else { return e("signal needs `signal`") };
                if signal_number(s).is_none() {
                    return e("signal must be one of HUP INT QUIT TERM KILL USR1 USR2");
                }
            }
            RestartUnit => {}
            RaiseFdLimit => {
                if self.factor.is_some_and(|f| !(f > 1.0 && f.is_finite())) {
                    return e("factor must be greater than 1");
                }
            }
        }
        Ok(())
    }
}

impl RemediationConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.settle.is_zero() {
            return Err(("remediation.settle", "must be positive".into()));
        }
        if self.approval_ttl.is_zero() {
            return Err(("remediation.approval_ttl", "must be positive".into()));
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.actions {
            a.validate().map_err(|m| ("remediation.actions", m))?;
            if !names.insert(a.name.as_str()) {
                return Err(("remediation.actions", format!("action name {:?} is used twice", a.name)));
            }
        }
        Ok(())
    }

    pub fn action(&self, name: &str) -> Option<&ActionConfig> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The capabilities the configured actions use when they really act (dry runs and a
    /// disabled `[remediation]` need none): the agent keeps these after attaching and drops the
    /// rest (`privs.rs`); the unit and DaemonSet grant them only in their remediation overlay.
    pub fn capabilities(&self) -> Vec<caps::Capability> {
        use caps::Capability as C;
        let mut out = Vec::new();
        if !self.enabled || self.dry_run {
            return out;
        }
        for a in self.actions.iter().filter(|a| !a.dry_run) {
            let need: &[C] = match a.kind {
                ActionType::CloseConnections => &[C::CAP_NET_ADMIN],
                ActionType::Signal => &[C::CAP_KILL],
                ActionType::RaiseFdLimit => &[C::CAP_SYS_RESOURCE],
                // Another user's command is killed (its process group) at its timeout: KILL too.
                ActionType::Exec if a.user.as_deref() != Some("root") => &[C::CAP_SETUID, C::CAP_SETGID, C::CAP_KILL],
                ActionType::Exec | ActionType::Http | ActionType::RestartUnit => &[],
            };
            for c in need {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct W {
        remediation: RemediationConfig,
    }

    fn parse(s: &str) -> Result<RemediationConfig, String> {
        let w: W = toml::from_str(s).map_err(|e| e.to_string())?;
        w.remediation.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(w.remediation)
    }

    #[test]
    fn parses_every_type_with_defaults() {
        let c = parse(
            r#"
            [remediation]
            cooldown = "5m"
            [[remediation.actions]]
            name = "quota"
            type = "close_connections"
            on = ["ClientConnectionQuota"]
            select = { by = "over_quota", order = "oldest", max_fraction = 0.5 }
            [[remediation.actions]]
            name = "hook"
            type = "exec"
            on = ["FdUsageHigh"]
            command = ["/usr/local/bin/dump", "--pid"]
            timeout = "10s"
            dry_run = false
            [[remediation.actions]]
            name = "page"
            type = "http"
            on = ["FdUsageHigh"]
            url = "https://hooks.example/x"
            secret_header = "Authorization"
            secret_env = "HOOK_TOKEN"
            [[remediation.actions]]
            name = "hup"
            type = "signal"
            on = ["FdUsageHigh"]
            signal = "SIGHUP"
            [[remediation.actions]]
            name = "restart"
            type = "restart_unit"
            on = ["FdUsageHigh"]
            approval = true
            [[remediation.actions]]
            name = "nofile"
            type = "raise_fd_limit"
            on = ["FdUsageHigh"]
            factor = 1.5
            "#,
        )
        .unwrap();
        assert_eq!(c.actions.len(), 6);
        let q = &c.actions[0];
        assert!(q.dry_run, "actions default to dry run");
        assert_eq!(q.cooldown(&c), Duration::from_secs(300));
        let s = q.select.as_ref().unwrap();
        assert_eq!((s.by, s.order, s.max_count, s.max_fraction), (SelectBy::OverQuota, Order::Oldest, 100, 0.5));
        assert!(!c.actions[1].dry_run(&c));
        assert_eq!(c.actions[1].timeout(), Duration::from_secs(10));
        assert_eq!(c.actions[4].timeout(), Duration::from_secs(90));
        assert!(c.actions[4].approval);
        assert_eq!(signal_number(c.actions[3].signal.as_deref().unwrap()), Some(libc::SIGHUP));
    }

    /// `idle_streams` looks at SSE streams by default; any other selector at WebSocket
    /// connections unless `transport = "sse"`.
    #[test]
    fn select_transport_defaults() {
        let one = |sel: &str| {
            let c = parse(&format!(
                "[[remediation.actions]]\nname = \"a\"\ntype = \"close_connections\"\non = [\"X\"]\nselect = {sel}\n"
            ))
            .unwrap();
            c.actions[0].select.as_ref().unwrap().transport()
        };
        assert_eq!(one("{ by = \"idle_streams\", idle_for = \"10m\" }"), Transport::Sse);
        assert_eq!(one("{ by = \"idle\" }"), Transport::Websocket);
        assert_eq!(one("{ by = \"over_quota\", transport = \"sse\" }"), Transport::Sse);
    }

    #[test]
    fn global_dry_run_wins() {
        let c = parse("[remediation]\ndry_run = true\n[[remediation.actions]]\nname = \"a\"\ntype = \"exec\"\non = [\"X\"]\ncommand = [\"/bin/true\"]\ndry_run = false\n").unwrap();
        assert!(c.actions[0].dry_run(&c));
    }

    #[test]
    fn errors_name_the_key_and_action() {
        let base = "[[remediation.actions]]\nname = \"a\"\non = [\"X\"]\n";
        let cases = [
            ("type = \"close_connections\"\n", "needs `select`"),
            ("type = \"exec\"\ncommand = [\"rm\"]\n", "absolute path"),
            ("type = \"exec\"\ncommand = [\"/bin/true\"]\nselect = { by = \"idle\" }\n", "`select` does not apply"),
            ("type = \"http\"\nurl = \"ftp://x\"\n", "http or https"),
            ("type = \"http\"\nurl = \"http://x\"\nsecret_header = \"A\"\n", "secret_header"),
            ("type = \"signal\"\nsignal = \"SIGSEGV\"\n", "signal must be"),
            ("type = \"raise_fd_limit\"\nfactor = 0.5\n", "factor"),
            ("type = \"close_connections\"\nselect = { by = \"idle\", max_fraction = 2.0 }\n", "max_fraction"),
            ("type = \"signal\"\nsignal = \"HUP\"\ntimeout = \"1s\"\n", "`timeout` does not apply"),
            (
                "type = \"close_connections\"\nselect = { by = \"idle_streams\", transport = \"websocket\" }\n",
                "picks SSE streams",
            ),
            ("type = \"close_connections\"\nselect = { by = \"stalled\", transport = \"sse\" }\n", "SSE streams have none"),
            (
                "type = \"close_connections\"\nselect = { by = \"idle_streams\", idle_for = \"0s\" }\n",
                "idle_for must be positive",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(e.contains("remediation.actions") && e.contains("\"a\"") && e.contains(want), "{extra}: {e}");
        }
        let e =
            parse("[[remediation.actions]]\nname = \"a\"\ntype = \"exec\"\non = []\ncommand = [\"/bin/true\"]\n").unwrap_err();
        assert!(e.contains("`on`"), "{e}");
        let twice = format!("{base}type = \"signal\"\nsignal = \"HUP\"\n{base}type = \"signal\"\nsignal = \"HUP\"\n");
        assert!(parse(&twice).unwrap_err().contains("used twice"));
        let e = parse(&format!("{base}type = \"signal\"\nsignal = \"HUP\"\nbogus = 1\n")).unwrap_err();
        assert!(e.contains("unknown field") && e.contains("bogus"), "{e}");
    }
}
