//! Secrets (channel URLs, auth headers, SMTP passwords) from the config, a file or the
//! environment, and redaction: a secret never reaches a log line, an error or the stats.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Read a secret given as a value, a file (trailing newline trimmed) or an environment
/// variable; `what` names the config key in errors (the value never appears).
pub fn resolve(what: &str, value: Option<&str>, file: Option<&Path>, env: Option<&str>) -> Result<Option<String>> {
    let v = match (value, file, env) {
        (Some(v), _, _) => v.to_string(),
        (None, Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("{what}_file {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None, Some(e)) => match std::env::var(e) {
            Ok(v) => v,
            Err(_) => bail!("{what}_env: environment variable {e} is not set (or not UTF-8)"),
        },
        (None, None, None) => return Ok(None),
    };
    if v.is_empty() {
        bail!("{what} is empty");
    }
    Ok(Some(v))
}

/// `http(s)://host[:port]/…` or an error that does not repeat the URL.
pub fn check_http_url(u: &str) -> Result<(), String> {
    match reqwest::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => Ok(()),
        Ok(_) => Err("must be an http:// or https:// URL with a host".into()),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

/// Scheme, host and port of a URL: what logs and stats may show of it.
pub fn redact_url(u: &str) -> String {
    match reqwest::Url::parse(u) {
        Ok(p) => match (p.host_str(), p.port()) {
            (Some(h), Some(port)) => format!("{}://{h}:{port}", p.scheme()),
            (Some(h), None) => format!("{}://{h}", p.scheme()),
            _ => "<redacted>".into(),
        },
        Err(_) => "<redacted>".into(),
    }
}

/// Replaces every known secret (and the path and query of secret URLs) in messages.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Very short strings would blank out ordinary words; they are not credentials anyway.
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// A URL: the whole URL and its path and query are secret (Slack keeps its token in the
    /// path), and so is a password in it.
    pub fn add_url(&mut self, u: &str) {
        self.add(u);
        if let Ok(p) = reqwest::Url::parse(u) {
            self.add(p.as_str());
            if p.path().len() > 1 {
                self.add(p.path());
            }
            for seg in p.path_segments().into_iter().flatten() {
                if seg.len() >= 8 {
                    self.add(seg);
                }
            }
            if let Some(q) = p.query() {
                self.add(q);
            }
            if let Some(pw) = p.password() {
                self.add(pw);
            }
        }
    }

    pub fn clean(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }
}
