//! `email`: one message per notice over SMTP with `lettre` (async on tokio; STARTTLS or implicit
//! TLS through rustls; AUTH when a username is set). Success is the server's 250 after DATA.

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::{
    message::{
        header::{Header, HeaderName, HeaderValue},
        Mailbox,
    },
    transport::smtp::authentication::Credentials,
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};

use super::{webhook::ID_HEADER, SendError};
use crate::notify::{
    config::{ChannelConfig, SmtpTls},
    notice::Notice,
};

/// `host:port` (port required: 25, 587 and 465 all occur).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or("expected host:port")?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() {
        return Err("empty host".into());
    }
    let p: u16 = p.parse().map_err(|_| format!("bad port {p:?}"))?;
    Ok((h.to_string(), p))
}

pub fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>().map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Clone)]
struct NotificationId(String);

impl Header for NotificationId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(ID_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NotificationId(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub fn new(cfg: &ChannelConfig, password: Option<String>, timeout: Duration) -> Result<Self> {
        let (host, port) = parse_host_port(cfg.smtp.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
        let mut b = match cfg.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).context("STARTTLS setup")?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&host).context("TLS setup")?,
        }
        .port(port)
        .timeout(Some(timeout));
        if let Some(user) = &cfg.username {
            b = b.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        let from = parse_mailbox(cfg.from.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
        let to = cfg.to.iter().map(|t| parse_mailbox(t)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
        Ok(Email { transport: b.build(), from, to })
    }

    pub async fn send(&self, n: &Notice) -> Result<(), SendError> {
        let msg = self.message(n).map_err(|e| SendError { message: format!("building the message: {e}"), permanent: true })?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    src = s.source();
                }
                Err(SendError { message: format!("SMTP: {m}"), permanent: e.is_permanent() })
            }
        }
    }

    fn message(&self, n: &Notice) -> Result<Message> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(format!("[wsguard] {}", n.title()))
            .message_id(Some(format!("<{}@wsguard>", n.id)))
            .header(NotificationId(n.id.clone()));
        for t in &self.to {
            b = b.to(t.clone());
        }
        Ok(b.body(body(n))?)
    }
}

/// Plain-text body: one block per alert.
pub fn body(n: &Notice) -> String {
    let mut out = format!("{}\n\n", n.title());
    for e in &n.entries {
        let a = &e.alert;
        out.push_str(&format!(
            "{} — {} ({}, {})\n",
            a.labels.get("alertname").map(String::as_str).unwrap_or(""),
            if e.firing() { "FIRING" } else { "RESOLVED" },
            a.severity.as_str(),
            e.reason.as_str()
        ));
        for (k, v) in &a.annotations {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str("  labels:");
        for (k, v) in &a.labels {
            out.push_str(&format!(" {k}={v}"));
        }
        out.push_str(&format!("\n  since: {}\n", a.starts_at));
        if let Some(end) = &a.ends_at {
            out.push_str(&format!("  resolved: {end}\n"));
        }
        out.push_str(&format!("  fingerprint: {}\n\n", a.fingerprint));
    }
    out.push_str(&format!("Notification id: {}\n", n.id));
    out
}
