//! `[notify]` parsing and validation, secrets and redaction.

use super::*;
use crate::notify::{
    channel::{Channel, Common},
    secret::{redact_url, Redactor},
};

const EXAMPLE: &str = r#"
[notify]
group_by = ["alertname", "pid"]
group_wait = "10s"
[[notify.channels]]
name = "ops-hook"
type = "webhook"
url = "http://127.0.0.1:9000/hook"
auth_header_env = "WSGUARD_TEST_HOOK_AUTH"
rate_limit = 30
cooldown = "2s"
[[notify.channels]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:9093"
resend_interval = "30s"
[[notify.channels]]
name = "mail"
type = "email"
smtp = "127.0.0.1:2525"
from = "wsguard <wsguard@example.org>"
to = ["ops@example.org"]
tls = "starttls"
username = "wsguard"
password_file = "/run/secrets/smtp"
[[notify.routes]]
severity = ["critical"]
matchers = ['alertname=~"Client.*"']
channels = ["ops-hook", "am"]
continue = true
[[notify.routes]]
tiers = ["engineering"]
channels = ["mail"]
repeat_interval = "1h"
[notify.delivery]
retry_max = "1m"
"#;

/// The `[notify]` section of a config text, parsed and validated on its own as the root config
/// does (`app/config.rs`; its tests cover the root's error text).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    notify: NotifyConfig,
}

fn parse(toml: &str) -> Result<Section, String> {
    let s: Section = toml::from_str(toml).map_err(|e| e.to_string())?;
    s.notify.validate().map_err(|(key, message)| format!("{key}: {message}"))?;
    Ok(s)
}

#[test]
fn example_parses_and_defaults_hold() {
    let c = parse(EXAMPLE).unwrap().notify;
    assert_eq!(c.channels.len(), 3);
    assert_eq!(c.channels[1].resend_interval, std::time::Duration::from_secs(30));
    assert_eq!(c.routes[0].severity, vec![crate::alert::Severity::Critical]);
    assert!(c.routes[0].continue_);
    assert_eq!(c.delivery.retry_max, std::time::Duration::from_secs(60));
    assert_eq!(c.delivery.max_age, std::time::Duration::from_secs(86400));
    let d = parse("").unwrap().notify;
    assert!(d.channels.is_empty() && d.routes.is_empty());
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[[notify.channels]]\nname = \"a\"\ntype = \"webhook\"\n", "notify.channels: [0] \"a\": needs url"),
        ("[[notify.channels]]\nname = \"a\"\ntype = \"slack\"\nurl = \"x\"\nurl_env = \"Y\"\n", "url: set only one"),
        ("[[notify.channels]]\nname = \"a\"\ntype = \"email\"\nsmtp = \"h:25\"\nfrom = \"a@b\"\n", "at least one address"),
        ("[[notify.channels]]\nname = \"a\"\ntype = \"log\"\n[[notify.channels]]\nname = \"a\"\ntype = \"log\"\n", "duplicate"),
        (
            "[[notify.channels]]\nname = \"a\"\ntype = \"log\"\n[[notify.routes]]\nchannels = [\"b\"]\n",
            "notify.routes: [0]: unknown channel \"b\"",
        ),
        (
            "[[notify.channels]]\nname = \"a\"\ntype = \"log\"\n[[notify.routes]]\nchannels = [\"a\"]\nmatchers = [\"x=~(\"]\n",
            "invalid regex",
        ),
        ("[[notify.channels]]\nname = \"a\"\ntype = \"pager\"\n", "unknown variant"),
        ("[notify.delivery]\nretry_max = \"1ms\"\n", "notify.delivery.retry_max"),
        ("[notify]\nbogus = 1\n", "unknown field"),
    ];
    for (toml, want) in cases {
        let e = parse(toml).unwrap_err();
        assert!(e.contains(want), "{toml:?}: {e}");
    }
}

#[test]
fn debug_output_hides_secret_values() {
    let mut c = ChannelConfig::new("s", ChannelKind::Slack);
    c.url = Some("https://hooks.slack.com/services/T0/B0/DBGSECRET".into());
    c.password = Some("pw-DBGSECRET2".into());
    let cfg = NotifyConfig { channels: vec![c], ..Default::default() };
    let d = format!("{cfg:?}");
    assert!(!d.contains("DBGSECRET") && d.contains("<redacted>"), "{d}");
}

#[test]
fn urls_are_redacted_to_scheme_and_host() {
    assert_eq!(redact_url("https://hooks.slack.com/services/T0/B0/XYZ?x=1"), "https://hooks.slack.com");
    assert_eq!(redact_url("http://user:pw@127.0.0.1:9093/api"), "http://127.0.0.1:9093");
    assert_eq!(redact_url("not a url"), "<redacted>");
    let mut r = Redactor::default();
    r.add_url("https://hooks.slack.com/services/T0AAAA/B0BBBBBB/XYZSECRETXYZ");
    r.add("Bearer tok-123456");
    let msg = "error sending request for url (https://hooks.slack.com/services/T0AAAA/B0BBBBBB/XYZSECRETXYZ): 403 XYZSECRETXYZ, auth Bearer tok-123456";
    let clean = r.clean(msg);
    assert!(!clean.contains("XYZSECRET") && !clean.contains("tok-123456"), "{clean}");
    assert!(clean.contains("https://hooks.slack.com") || clean.contains("<redacted>"));
}

#[test]
fn secrets_come_from_files_and_env_and_errors_omit_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("slack-url");
    std::fs::write(&f, "https://hooks.slack.com/services/T1/B1/FILESECRET1\n").unwrap();
    let common = Common { http: reqwest::Client::new(), external_url: String::new(), timeout: std::time::Duration::from_secs(1) };
    let mut c = ChannelConfig::new("s", ChannelKind::Slack);
    c.url_file = Some(f.clone());
    let ch = Channel::build(&c, &common).unwrap();
    assert_eq!(ch.target, "https://hooks.slack.com");
    assert_eq!(ch.redact("x FILESECRET1 y"), "x <redacted> y");
    // A file holding something that is not a URL: the error names the key, not the content.
    std::fs::write(&f, "FILESECRET2-not-a-url").unwrap();
    let e = format!("{:#}", Channel::build(&c, &common).err().unwrap());
    assert!(e.contains("notify.channels \"s\" url") && !e.contains("FILESECRET2"), "{e}");
    let mut w = ChannelConfig::new("w", ChannelKind::Webhook);
    w.url_env = Some("WSGUARD_TEST_UNSET_VAR_X".into());
    let e = format!("{:#}", Channel::build(&w, &common).err().unwrap());
    assert!(e.contains("WSGUARD_TEST_UNSET_VAR_X is not set"), "{e}");
    std::env::set_var("WSGUARD_TEST_AUTH_ENV", "Bearer ENVSECRET123");
    w.url = Some("http://127.0.0.1:1/x".into());
    w.url_env = None;
    w.auth_header_env = Some("WSGUARD_TEST_AUTH_ENV".into());
    let ch = Channel::build(&w, &common).unwrap();
    assert_eq!(ch.redact("got ENVSECRET123"), "got <redacted>");
}
