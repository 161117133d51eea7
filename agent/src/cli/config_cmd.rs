//! `wsguard config check` and `wsguard config show`: validation with the key and line of
//! every error, production-readiness warnings, and the effective configuration (file merged
//! with defaults) with inline secrets redacted.

use std::{net::IpAddr, path::Path};

use serde::Serialize;

use crate::app::config::{Config, DEFAULT_PATH};

/// A production-readiness finding: the config is valid, but probably not what you want.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    /// The key to change.
    pub key: String,
    pub message: String,
}

/// The readiness checks. Each looks at one concern and returns its findings; add a function
/// here (and to `CHECKS`) when a config section gains something an operator can get wrong
/// in production — e.g. `[remediation]` live without cooldowns.
const CHECKS: &[fn(&Config) -> Vec<Warning>] = &[api_exposed, api_socket, debug_logging, notification_channels];

pub fn readiness(cfg: &Config) -> Vec<Warning> {
    CHECKS.iter().flat_map(|check| check(cfg)).collect()
}

fn warn(key: &str, message: impl Into<String>) -> Warning {
    Warning { key: key.into(), message: message.into() }
}

fn loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// The API shows what every process on the host does (peers, client keys, command lines); only
/// mutations need the token, reads are open: reachable from other hosts, anyone there reads it.
fn api_exposed(cfg: &Config) -> Vec<Warning> {
    let ip = cfg.api.listen.ip();
    if loopback(ip) {
        return Vec::new();
    }
    let api = &cfg.api;
    let mut out = Vec::new();
    if api.tls_client_ca_file.is_none() && api.basic_auth_users.is_empty() {
        out.push(warn(
            "api.listen",
            format!(
                "the API listens on {} (not loopback) and its reads need no credentials: anyone who can reach it reads \
                 every process's connections, peers and command lines; set [api.basic_auth_users] with TLS \
                 (tls_cert_file, tls_key_file), or restrict it with a firewall or network policy",
                api.listen
            ),
        ));
    } else if api.tls_cert_file.is_none() {
        out.push(warn(
            "api.basic_auth_users",
            "basic auth without TLS sends the passwords in clear text on a non-loopback API: set tls_cert_file and tls_key_file",
        ));
    }
    let ck = &cfg.probe.client_key;
    if ck.enabled() && !ck.hash {
        out.push(warn(
            "probe.client_key.hash",
            "raw client keys (the configured header or query value, often a user id) are served on a non-loopback \
             API; set hash = true to serve only their hash",
        ));
    }
    out
}

/// Socket settings that cannot do what they say: trusted uids that cannot connect to a root-only
/// socket, or a group socket in the state dir, which the systemd unit keeps 0700.
fn api_socket(cfg: &Config) -> Vec<Warning> {
    let Some(sock) = cfg.api_socket() else { return Vec::new() };
    let mut out = Vec::new();
    if !cfg.api.socket_uids.is_empty() && cfg.api.socket_group.is_none() {
        out.push(warn(
            "api.socket_uids",
            "without socket_group the socket is 0600 (root only): these uids cannot connect; set socket_group to a \
             group they are in",
        ));
    }
    if cfg.api.socket_group.is_some() && sock.starts_with(&cfg.agent.state_dir) {
        out.push(warn(
            "api.socket",
            format!(
                "the socket is inside state_dir {}, which the systemd unit keeps 0700: socket_group members cannot \
                 reach it; use socket = \"/run/wsguard/api.sock\" (the unit's RuntimeDirectory)",
                cfg.agent.state_dir.display()
            ),
        ));
    }
    out
}

fn debug_logging(cfg: &Config) -> Vec<Warning> {
    let l = cfg.agent.log_level.to_ascii_lowercase();
    if l.contains("debug") || l.contains("trace") {
        return vec![warn(
            "agent.log_level",
            format!("log level \"{}\" logs every WebSocket lifecycle event: noisy at production rates", cfg.agent.log_level),
        )];
    }
    Vec::new()
}

/// Alerts nobody receives, and secrets written into the config file itself.
fn notification_channels(cfg: &Config) -> Vec<Warning> {
    use crate::notify::config::ChannelKind;
    let channels = &cfg.notify.channels;
    let mut out = Vec::new();
    if channels.is_empty() {
        out.push(warn(
            "notify.channels",
            "no notification channel: alerts are only logged and listed by the API; add a [[notify.channels]] \
             (webhook, slack, alertmanager, email)",
        ));
    } else if channels.iter().all(|c| c.kind == ChannelKind::Log) {
        out.push(warn("notify.channels", "only log channels: alerts reach the journal, nobody is notified"));
    }
    for (i, c) in channels.iter().enumerate() {
        for (field, inline) in [("password", c.password.is_some()), ("auth_header", c.auth_header.is_some())] {
            if inline {
                out.push(warn(
                    &format!("notify.channels[{i}].{field}"),
                    format!("channel {:?} has its {field} inline in the config: prefer {field}_file or {field}_env", c.name),
                ));
            }
        }
    }
    out
}

/// Result of `config check`, also its `--json` form.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub path: String,
    /// The file does not exist and defaults are used (only at the default path).
    pub defaults_only: bool,
    pub valid: bool,
    pub error: Option<String>,
    pub warnings: Vec<Warning>,
}

/// `wsguard config check`: Ok(true) when valid (and, with `strict`, without warnings).
pub fn check(path: Option<&Path>, json: bool, strict: bool) -> anyhow::Result<bool> {
    let shown = path.map_or(DEFAULT_PATH.into(), |p| p.display().to_string());
    let defaults_only = path.is_none() && !Path::new(DEFAULT_PATH).exists();
    let report = match Config::load(path) {
        Ok(cfg) => CheckReport { path: shown, defaults_only, valid: true, error: None, warnings: readiness(&cfg) },
        // An unreadable file is not a verdict on the config: exit 2.
        Err(e @ crate::app::config::ConfigError::Read { .. }) => return Err(e.into()),
        Err(e) => CheckReport { path: shown, defaults_only, valid: false, error: Some(e.to_string()), warnings: vec![] },
    };
    let ok = report.valid && (!strict || report.warnings.is_empty());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ok);
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
        return Ok(false);
    }
    for w in &report.warnings {
        println!("warning: {}: {}", w.key, w.message);
    }
    let what = if report.defaults_only { format!("{} (missing: built-in defaults)", report.path) } else { report.path };
    match report.warnings.len() {
        0 => println!("config OK: {what}"),
        n => println!("config OK with {n} warning{}: {what}", if n == 1 { "" } else { "s" }),
    }
    Ok(ok)
}

/// `wsguard config show`: the file as written, or (`effective`) merged with every default.
pub fn show(path: Option<&Path>, effective: bool, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let mut value = if effective {
        serde_json::to_value(&cfg)?
    } else {
        let p = path.unwrap_or(Path::new(DEFAULT_PATH));
        let text = std::fs::read_to_string(p).unwrap_or_default();
        serde_json::to_value(toml::from_str::<toml::Table>(&text)?)?
    };
    redact(&mut value, "");
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        // TOML has no null: unset optional keys are left out.
        strip_nulls(&mut value);
        let table: toml::Table = serde_json::from_value(value)?;
        print!("{}", toml::to_string(&table)?);
    }
    Ok(())
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

const REDACTED: &str = "<redacted>";

/// Is this key's value a secret? Names ending `_file` / `_env` are references to one (a path
/// or a variable name), shown as they are.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_file") || k.ends_with("_env") {
        return false;
    }
    ["token", "password", "passwd", "secret", "api_key", "apikey", "credential", "private_key", "auth_header", "authorization"]
        .iter()
        .any(|s| k.contains(s))
}

/// A URL carrying a credential: userinfo with a password, or a well-known secret-bearing
/// webhook (Slack, Discord: the path is the secret). Returns it with the secret replaced.
fn redact_url(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if let Some((userinfo, host)) = authority.rsplit_once('@') {
        let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
        let slash = if rest.contains('/') { "/" } else { "" };
        return Some(format!("{scheme}://{user}:{REDACTED}@{host}{slash}{path}"));
    }
    let host = authority.to_ascii_lowercase();
    if host == "hooks.slack.com" || ((host == "discord.com" || host == "discordapp.com") && path.starts_with("api/webhooks")) {
        return Some(format!("{scheme}://{authority}/{REDACTED}"));
    }
    // Query parameters that carry a credential (`?token=…`, `&sig=…`).
    let (before, query) = s.split_once('?')?;
    let mut changed = false;
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v))
                if !v.is_empty()
                    && (secret_key(k) || ["key", "sig", "signature", "auth"].contains(&k.to_ascii_lowercase().as_str())) =>
            {
                changed = true;
                format!("{k}={REDACTED}")
            }
            _ => p.to_string(),
        })
        .collect();
    changed.then(|| format!("{before}?{}", params.join("&")))
}

/// Redact secrets in place: values of secret-named keys and credentials in URLs.
pub fn redact(v: &mut serde_json::Value, key: &str) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                redact(x, k);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, key)),
        Value::String(s) if secret_key(key) && !s.is_empty() => *s = REDACTED.into(),
        Value::String(s) => {
            if let Some(r) = redact_url(s) {
                *s = r;
            }
            // A channel's or action's own URL: webhook paths are often the credential (Teams,
            // Mattermost, any `/hooks/<token>`); shown as the notification logs show it.
            let k = key.to_ascii_lowercase();
            if k == "url" || k.ends_with("_url") {
                if let Some((scheme, rest)) = s.split_once("://") {
                    let authority = rest.split(['/', '?']).next().unwrap_or("");
                    let shown = format!("{scheme}://{authority}/{REDACTED}");
                    if rest.len() > authority.len() + 1 && *s != shown {
                        *s = shown;
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    fn keys(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.key.as_str()).collect()
    }

    const WEBHOOK: &str = "[[notify.channels]]\nname = \"ops\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n";

    #[test]
    fn defaults_warn_only_that_nobody_is_notified() {
        assert_eq!(keys(&readiness(&Config::default())), ["notify.channels"]);
        assert!(readiness(&cfg(WEBHOOK)).is_empty(), "{:?}", readiness(&cfg(WEBHOOK)));
    }

    #[test]
    fn notification_channels() {
        let log_only = "[[notify.channels]]\nname = \"j\"\ntype = \"log\"\n";
        let w = readiness(&cfg(log_only));
        assert_eq!(keys(&w), ["notify.channels"]);
        assert!(w[0].message.contains("only log"), "{w:?}");
        let inline = format!("{WEBHOOK}auth_header = \"Bearer abc\"\n");
        assert_eq!(keys(&readiness(&cfg(&inline))), ["notify.channels[0].auth_header"]);
    }

    #[test]
    fn exposed_api_and_raw_client_keys_warn() {
        let w = readiness(&cfg(&format!("[api]\nlisten = \"0.0.0.0:9595\"\n{WEBHOOK}")));
        assert_eq!(keys(&w), ["api.listen"]);
        let w = readiness(&cfg(&format!("[api]\nlisten = \"[::]:9595\"\n[probe.client_key]\nheader = \"X-User\"\n{WEBHOOK}")));
        assert_eq!(keys(&w), ["api.listen", "probe.client_key.hash"]);
        // Credentials on the API: no listen warning; basic auth without TLS: a warning of its own.
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = format!("[api]\nlisten = \"0.0.0.0:9595\"\n[api.basic_auth_users]\nprom = \"{hash}\"\n{WEBHOOK}");
        assert_eq!(keys(&readiness(&cfg(&auth))), ["api.basic_auth_users"]);
        let tls = auth
            .replace("[api.basic_auth_users]", "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n[api.basic_auth_users]");
        assert!(readiness(&cfg(&tls)).is_empty());
        let w = readiness(&cfg(&format!("[api]\nlisten = \"[::1]:9595\"\n[probe.client_key]\nheader = \"X-User\"\n{WEBHOOK}")));
        assert!(w.is_empty(), "{w:?}");
        let w = readiness(&cfg(&format!("[agent]\nlog_level = \"info,wsguard=debug\"\n{WEBHOOK}")));
        assert_eq!(keys(&w), ["agent.log_level"]);
    }

    #[test]
    fn socket_settings_that_cannot_work_warn() {
        let w = readiness(&cfg(&format!("[api]\nsocket_uids = [1000]\n{WEBHOOK}")));
        assert_eq!(keys(&w), ["api.socket_uids"]);
        let w = readiness(&cfg(&format!("[api]\nsocket_uids = [1000]\nsocket_group = \"ops\"\n{WEBHOOK}")));
        assert_eq!(keys(&w), ["api.socket"], "the default socket is in state_dir");
        let w = readiness(&cfg(&format!(
            "[api]\nsocket = \"/run/wsguard/api.sock\"\nsocket_group = \"ops\"\nsocket_uids = [1000]\n{WEBHOOK}"
        )));
        assert!(w.is_empty(), "{w:?}");
        let w = readiness(&cfg(&format!("[api]\nsocket = \"\"\nsocket_uids = [1000]\n{WEBHOOK}")));
        assert!(w.is_empty(), "no socket, nothing to warn about: {w:?}");
    }

    #[test]
    fn secrets_are_redacted_references_are_not() {
        let mut v = serde_json::json!({
            "notify": {
                "token": "abc", "token_file": "/etc/wsguard/token", "password_env": "SMTP_PASS",
                "smtp_password": "hunter2", "empty_token": "",
                "url": "https://user:pw@example.com/hook?x=1",
                "slack": {"webhook_url": "https://hooks.slack.com/services/T0/B0/XYZ"},
                "plain": "https://example.com/ok", "list": ["http://a:b@h"],
                "q": "https://h/x?team=a&token=t0k&sig=s", "auth_header": "Bearer abc",
                "hook": {"url": "https://hooks.example.org/T0k3n/x?key=k", "base": {"url": "http://am:9093/"}}
            },
            "interval": "5s"
        });
        redact(&mut v, "");
        let n = &v["notify"];
        assert_eq!(n["token"], REDACTED);
        assert_eq!(n["smtp_password"], REDACTED);
        assert_eq!(n["token_file"], "/etc/wsguard/token");
        assert_eq!(n["password_env"], "SMTP_PASS");
        assert_eq!(n["empty_token"], "");
        assert_eq!(n["url"], "https://user:<redacted>@example.com/<redacted>");
        assert_eq!(n["slack"]["webhook_url"], "https://hooks.slack.com/<redacted>");
        assert_eq!(n["plain"], "https://example.com/ok");
        assert_eq!(n["list"][0], "http://a:<redacted>@h");
        assert_eq!(n["q"], "https://h/x?team=a&token=<redacted>&sig=<redacted>");
        assert_eq!(n["auth_header"], REDACTED);
        assert_eq!(n["hook"]["url"], "https://hooks.example.org/<redacted>");
        assert_eq!(n["hook"]["base"]["url"], "http://am:9093/", "nothing to hide");
        assert_eq!(v["interval"], "5s");
    }

    /// The effective config is valid TOML that loads back to the same config.
    #[test]
    fn effective_config_round_trips() {
        let c = cfg("[limits]\nper_client_connections = 7\n");
        let mut v = serde_json::to_value(&c).unwrap();
        redact(&mut v, "");
        strip_nulls(&mut v);
        let table: toml::Table = serde_json::from_value(v).unwrap();
        let text = toml::to_string(&table).unwrap();
        let back = Config::parse(&text, Path::new("back.toml")).unwrap();
        assert_eq!(back.limits.per_client_connections, 7);
        assert_eq!(toml::to_string(&back).unwrap(), toml::to_string(&c).unwrap());
        assert!(text.contains("[predict]") && text.contains("interval = \"5s\""), "{text}");
    }
}
