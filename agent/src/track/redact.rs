//! Command lines of watched processes without their secrets. Servers are started with API
//! keys, passwords and tokens on their command line (`--api-key=sk_live_…`, `--password x`,
//! `postgres://user:pw@db/app`); the snapshot (and so the API, `/metrics` labels, the history
//! store and `top`) only ever sees the redacted form, built here from `[privacy]`.
//!
//! Rules, with NAME matched case-insensitively against `[privacy] redact_arguments`:
//! - `NAME=VALUE`, `--NAME=VALUE` → `--NAME=<redacted>`;
//! - `--NAME VALUE` (a flag without `=`) → the next argument becomes `<redacted>`;
//! - `k=v` pairs inside an argument after `?`, `&` or `;` (query strings, DSNs) likewise;
//! - always: the user info of a URL (`scheme://user:pw@host`) → `scheme://<redacted>@host`.
//!
//! `argv[0]` (the program) is kept as it is apart from URL user info.

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// `[privacy]`: what of a watched process the agent keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Regexes (case-insensitive, matched anywhere in an argument's name) naming secret
    /// arguments; `[]` keeps every argument apart from URL user info.
    pub redact_arguments: Vec<String>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        let names =
            ["pass", "pwd", "secret", "token", "key", "auth", "credential", "cookie", "session", "signature", "private", "dsn"];
        Self { redact_arguments: names.iter().map(|s| s.to_string()).collect() }
    }
}

impl PrivacyConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Redactor::new(self).map(|_| ()).map_err(|e| ("privacy.redact_arguments", e))
    }
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Redactor {
    names: Option<Regex>,
    userinfo: Regex,
}

impl Redactor {
    pub fn new(cfg: &PrivacyConfig) -> Result<Redactor, String> {
        for p in &cfg.redact_arguments {
            Regex::new(p).map_err(|e| format!("{p:?} is not a regex: {e}"))?;
        }
        let names = match cfg.redact_arguments.is_empty() {
            true => None,
            false => {
                let alt: Vec<String> = cfg.redact_arguments.iter().map(|p| format!("(?:{p})")).collect();
                Some(Regex::new(&format!("(?i){}", alt.join("|"))).map_err(|e| e.to_string())?)
            }
        };
        let userinfo = Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@").expect("valid regex");
        Ok(Redactor { names, userinfo })
    }

    fn secret_name(&self, name: &str) -> bool {
        let name = name.trim_start_matches('-');
        !name.is_empty() && self.names.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// `k=v` pairs separated by `?`, `&` or `;` whose key is secret get their value replaced.
    fn pairs(&self, arg: &str) -> String {
        let mut out = String::with_capacity(arg.len());
        let mut rest = arg;
        loop {
            let end = rest.find(['?', '&', ';']).unwrap_or(rest.len());
            let (part, tail) = rest.split_at(end);
            match part.split_once('=') {
                Some((k, _)) if self.secret_name(k) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(part),
            }
            let mut chars = tail.chars();
            match chars.next() {
                Some(sep) => {
                    out.push(sep);
                    rest = chars.as_str();
                }
                None => return out,
            }
        }
    }

    /// The command line as it may be shown: arguments joined by spaces, secrets replaced.
    pub fn command_line(&self, argv: &[String]) -> String {
        let mut out: Vec<String> = Vec::with_capacity(argv.len());
        let mut hide_next = false;
        for (i, arg) in argv.iter().enumerate() {
            let arg = self.userinfo.replace_all(arg, format!("${{1}}{REDACTED}@")).into_owned();
            if i == 0 {
                out.push(arg);
                continue;
            }
            if std::mem::take(&mut hide_next) && !arg.starts_with('-') {
                out.push(REDACTED.into());
                continue;
            }
            if arg.starts_with('-') && !arg.contains('=') {
                hide_next = self.secret_name(&arg);
                out.push(arg);
                continue;
            }
            out.push(self.pairs(&arg));
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(args: &[&str]) -> String {
        let r = Redactor::new(&PrivacyConfig::default()).unwrap();
        r.command_line(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn secrets_are_replaced_and_the_rest_kept() {
        assert_eq!(
            shown(&["node", "server.js", "--api-key=sk_live_123", "--port", "8080", "--password", "hunter2", "-v"]),
            "node server.js --api-key=<redacted> --port 8080 --password <redacted> -v"
        );
        assert_eq!(shown(&["app", "TOKEN=abc", "mode=fast"]), "app TOKEN=<redacted> mode=fast");
        assert_eq!(
            shown(&["app", "--db", "postgres://alice:pw@db:5432/app?sslmode=require&password=x"]),
            "app --db postgres://<redacted>@db:5432/app?sslmode=require&password=<redacted>"
        );
        assert_eq!(shown(&["app", "--client-secret", "--verbose"]), "app --client-secret --verbose");
        assert_eq!(
            shown(&["/usr/bin/python3", "-m", "app", "--Auth-Header=Bearer x"]),
            "/usr/bin/python3 -m app --Auth-Header=<redacted>"
        );
    }

    #[test]
    fn patterns_are_configurable() {
        let none = Redactor::new(&PrivacyConfig { redact_arguments: vec![] }).unwrap();
        let args: Vec<String> = ["a", "--password=x", "https://u:p@h/"].iter().map(|s| s.to_string()).collect();
        assert_eq!(none.command_line(&args), "a --password=x https://<redacted>@h/");
        let own = Redactor::new(&PrivacyConfig { redact_arguments: vec!["^lic".into()] }).unwrap();
        let args: Vec<String> = ["a", "--license=L", "--password=x"].iter().map(|s| s.to_string()).collect();
        assert_eq!(own.command_line(&args), "a --license=<redacted> --password=x");
        let e = PrivacyConfig { redact_arguments: vec!["(".into()] }.validate().unwrap_err();
        assert_eq!(e.0, "privacy.redact_arguments");
    }
}
