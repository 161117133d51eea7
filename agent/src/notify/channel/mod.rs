//! Notification channels: each renders a [`Notice`] in its receiver's format and sends it.
//! Every error message leaving here has been through the channel's [`Redactor`].

pub mod alertmanager;
pub mod email;
pub mod log;
pub mod slack;
pub mod webhook;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::{
    config::{ChannelConfig, ChannelKind},
    notice::Notice,
    secret::{self, Redactor},
};

/// A failed delivery. `permanent`: the receiver rejected this notice (retrying the same bytes
/// will not help), as opposed to being unreachable or overloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub message: String,
    pub permanent: bool,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError { message: message.into(), permanent: false }
    }
}

/// What all channels share.
#[derive(Clone)]
pub struct Common {
    pub http: reqwest::Client,
    /// `[notify] external_url` without a trailing slash.
    pub external_url: String,
    pub timeout: Duration,
}

impl Common {
    /// Link to an alert in this agent's API (empty without `external_url`).
    pub fn generator_url(&self, fingerprint: &str) -> String {
        if self.external_url.is_empty() {
            String::new()
        } else {
            format!("{}/api/v1/alerts/{fingerprint}", self.external_url)
        }
    }
}

enum Sender {
    Log,
    Webhook(webhook::Webhook),
    Slack(slack::Slack),
    Alertmanager(alertmanager::Alertmanager),
    Email(email::Email),
}

pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// Where it delivers, redacted (scheme://host:port, or the SMTP server).
    pub target: String,
    sender: Sender,
    redactor: Redactor,
}

impl Channel {
    /// Resolve the channel's secrets and build its sender. Errors name the key, never a value.
    pub fn build(cfg: &ChannelConfig, common: &Common) -> Result<Channel> {
        let what = |k: &str| format!("notify.channels {:?} {k}", cfg.name);
        let mut redactor = Redactor::default();
        let url = secret::resolve(&what("url"), cfg.url.as_deref(), cfg.url_file.as_deref(), cfg.url_env.as_deref())?;
        if let Some(u) = &url {
            redactor.add_url(u);
            secret::check_http_url(u).map_err(|m| anyhow::anyhow!("{}: {m}", what("url")))?;
        }
        let auth = secret::resolve(
            &what("auth_header"),
            cfg.auth_header.as_deref(),
            cfg.auth_header_file.as_deref(),
            cfg.auth_header_env.as_deref(),
        )?;
        if let Some(a) = &auth {
            redactor.add(a);
            // "Bearer xyz": the token alone must not show either.
            if let Some((_, tok)) = a.split_once(' ') {
                redactor.add(tok.trim());
            }
        }
        let password = secret::resolve(
            &what("password"),
            cfg.password.as_deref(),
            cfg.password_file.as_deref(),
            cfg.password_env.as_deref(),
        )?;
        if let Some(p) = &password {
            redactor.add(p);
        }
        let need_url = || url.clone().with_context(|| format!("{} is required", what("url")));
        let target = url.as_deref().map(secret::redact_url).unwrap_or_default();
        let (sender, target) = match cfg.kind {
            ChannelKind::Log => (Sender::Log, "log".to_string()),
            ChannelKind::Webhook => (Sender::Webhook(webhook::Webhook::new(cfg, need_url()?, auth, common.clone())), target),
            ChannelKind::Slack => (Sender::Slack(slack::Slack::new(need_url()?, common.clone())), target),
            ChannelKind::Alertmanager => {
                (Sender::Alertmanager(alertmanager::Alertmanager::new(cfg, &need_url()?, auth, common.clone())), target)
            }
            ChannelKind::Email => {
                let e = email::Email::new(cfg, password, common.timeout).with_context(|| what("smtp"))?;
                let t = format!("smtp://{}", cfg.smtp.as_deref().unwrap_or(""));
                (Sender::Email(e), t)
            }
        };
        Ok(Channel { name: cfg.name.clone(), kind: cfg.kind, target, sender, redactor })
    }

    /// Deliver one notice; `Ok` only once the receiver accepted it (HTTP 2xx, SMTP 250).
    pub async fn send(&self, n: &Notice, now: SystemTime) -> Result<(), SendError> {
        let r = match &self.sender {
            Sender::Log => {
                log::emit(&self.name, n);
                Ok(())
            }
            Sender::Webhook(w) => w.send(&self.name, n).await,
            Sender::Slack(s) => s.send(n).await,
            Sender::Alertmanager(a) => a.send(n, now).await,
            Sender::Email(e) => e.send(n).await,
        };
        r.map_err(|e| SendError { message: self.redactor.clean(&e.message), permanent: e.permanent })
    }

    pub fn redact(&self, msg: &str) -> String {
        self.redactor.clean(msg)
    }
}

/// An error and its sources on one line, without the request URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// POST a JSON body; 2xx is success, 4xx other than 408/425/429 a rejection.
pub async fn post_json(common: &Common, url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Result<(), SendError> {
    let mut req = common.http.post(url).timeout(common.timeout).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.map_err(|e| SendError::transient(describe(e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    let permanent = status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429);
    Err(SendError { message: format!("HTTP {status}: {}", text.trim()), permanent })
}
