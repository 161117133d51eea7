//! `wsguard alerts …`: the running agent's alerts over its API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::alert::{silence::Silence, store::Event, Alert, Severity};

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The agent's API: http://HOST:PORT, or unix:PATH for its `[api] socket` (changes as root
    /// need no token there).
    /// (default: `[api] listen` of `-c FILE`, else http://127.0.0.1:9595; the scheme is optional).
    #[arg(long = "api", id = "api", value_name = "API", env = "WSGUARD_API", global = true)]
    api_flag: Option<String>,
    /// The address in effect, once `resolved`.
    #[arg(skip)]
    pub api: String,
    /// API token file for changes (default: the one `[api] token_file` of the config names;
    /// over unix:PATH none is sent unless given).
    #[arg(long, env = "WSGUARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Config whose `[api] token_file` / `state_dir` locate the token (default /etc/wsguard/wsguard.toml).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
}

impl ApiArgs {
    /// Fill `api` from `--api`, else the config's `[api] listen`, else the default.
    pub fn resolved(mut self) -> anyhow::Result<Self> {
        self.api = crate::cli::client::api_url(self.api_flag.as_deref(), || super::listen_of(self.config.as_deref()))?;
        Ok(self)
    }
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Pending, firing and recently resolved alerts.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Only `pending`, `firing` or `resolved`.
        #[arg(long)]
        status: Option<String>,
    },
    /// One alert (fingerprint or a unique prefix of at least 4 hex digits).
    Show {
        /// Fingerprint, or a unique prefix of at least 4 hex digits.
        fingerprint: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a firing alert: stops its escalation until it resolves.
    Ack {
        /// Fingerprint, or a unique prefix of at least 4 hex digits.
        fingerprint: String,
        /// Who acknowledges (default: $SUDO_USER or $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded with the change).
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
    },
    /// Silence alerts whose labels match all matchers (`name=value`, `!=`, `=~regex`, `!~`).
    Silence {
        /// Label matchers, all of which must match.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long the silence lasts (humantime: `30m`, `2h`).
        #[arg(long, default_value = "2h")]
        duration: String,
        /// Who silences (default: $SUDO_USER or $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded with the change).
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
    },
    /// Remove a silence by id.
    Unsilence {
        /// The silence's id (see `silences`).
        id: String,
    },
    /// Silences in effect.
    Silences {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Counts, the alert store, notification delivery.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent alert changes (from the alert store), oldest first.
    History {
        /// Newest changes shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Raise a manual alert, notified like any other (resolve it with `resolve`).
    Fire {
        /// Severity of the alert.
        #[arg(long, value_enum, default_value = "critical")]
        severity: SeverityArg,
        /// What happened (the alert's summary).
        #[arg(long, short = 'm')]
        message: String,
        /// Extra labels `name=value` (an `alertname` label names the alert).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Resolve a manual alert.
    Resolve {
        /// Fingerprint, or a unique prefix of at least 4 hex digits.
        fingerprint: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

/// The name a change is made under; empty when nothing names the user: the agent then records
/// who it knows the caller is (socket uid or token holder).
fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok()).or_else(|| std::env::var("USER").ok()).unwrap_or_default()
}

async fn call(a: &ApiArgs, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (client, base) = crate::api::endpoint::endpoint(&a.api, reqwest::Client::builder())?;
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if method != reqwest::Method::GET {
        if let Some(t) =
            crate::cli::client::change_token(&a.api, a.token_file.as_deref(), || super::token_file_of(a.config.as_deref()))?
        {
            req = req.bearer_auth(t);
        }
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the agent at {} (is `wsguard run` running?)", a.api))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"].as_str().map(String::from)).unwrap_or(text);
        bail!("agent answered {status}: {msg}");
    }
    Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text).context("the agent's answer is not JSON")? })
}

fn print_alerts(alerts: &[Alert]) {
    if alerts.is_empty() {
        println!("no alerts");
        return;
    }
    println!("{:<16} {:<9} {:<8} {:<26} {:<20} LABELS", "FINGERPRINT", "STATUS", "SEVERITY", "ALERTNAME", "SINCE");
    for a in alerts {
        let mut flags = String::new();
        for (on, f) in
            [(a.acknowledged, " ack"), (a.silenced, " silenced"), (a.flapping, " flapping"), (a.inhibited, " inhibited")]
        {
            if on {
                flags.push_str(f);
            }
        }
        let labels: Vec<String> = a.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<16} {:<9} {:<8} {:<26} {:<20} {}{flags}",
            a.fingerprint,
            format!("{:?}", a.status).to_lowercase(),
            a.severity.as_str(),
            a.labels.get("alertname").map(String::as_str).unwrap_or(""),
            a.starts_at,
            labels.join(",")
        );
        // The summary (for forecast alerts it carries the ETA), indented under its alert.
        if let Some(summary) = a.annotations.get("summary").filter(|s| !s.is_empty()) {
            println!("{:<16} {summary}", "");
        }
    }
}

pub async fn run(cmd: AlertsCommand, a: ApiArgs) -> anyhow::Result<()> {
    let a = a.resolved()?;
    use reqwest::Method;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map(|s| println!("{s}"));
    match cmd {
        AlertsCommand::List { json, status } => {
            let path = match status {
                Some(s) => format!("/api/v1/alerts?status={s}"),
                None => "/api/v1/alerts".into(),
            };
            let v = call(&a, Method::GET, &path, None).await?;
            if json {
                pretty(&v)?;
            } else {
                print_alerts(&serde_json::from_value::<Vec<Alert>>(v)?);
            }
        }
        AlertsCommand::Show { fingerprint, json } => {
            let v = call(&a, Method::GET, &format!("/api/v1/alerts/{fingerprint}"), None).await?;
            if json {
                pretty(&v)?;
            } else {
                let al: Alert = serde_json::from_value(v.clone())?;
                print_alerts(std::slice::from_ref(&al));
                for (k, val) in &al.annotations {
                    println!("  {k}: {val}");
                }
                println!(
                    "  value {:?}, occurrences {}, first seen {}, last seen {}",
                    al.value, al.occurrences, al.first_seen, al.last_seen
                );
                if let Some(ack) = &al.ack {
                    println!("  acknowledged by {} at {}: {}", ack.by, ack.at, ack.comment);
                }
                if let Some(t) = &al.tier_name {
                    println!("  tier {t}");
                }
            }
        }
        AlertsCommand::Ack { fingerprint, by, comment } => {
            let v = call(
                &a,
                Method::POST,
                &format!("/api/v1/alerts/{fingerprint}/ack"),
                Some(json!({"by": who(by), "comment": comment})),
            )
            .await?;
            println!("acknowledged {}", v["fingerprint"].as_str().unwrap_or(&fingerprint));
        }
        AlertsCommand::Silence { matchers, duration, by, comment } => {
            let v = call(
                &a,
                Method::POST,
                "/api/v1/silences",
                Some(json!({"matchers": matchers, "duration": duration, "created_by": who(by), "comment": comment})),
            )
            .await?;
            println!("silence {} until {}", v["id"].as_str().unwrap_or("?"), v["ends_at"].as_str().unwrap_or("?"));
        }
        AlertsCommand::Unsilence { id } => {
            call(&a, Method::DELETE, &format!("/api/v1/silences/{id}"), None).await?;
            println!("removed silence {id}");
        }
        AlertsCommand::Silences { json } => {
            let v = call(&a, Method::GET, "/api/v1/silences", None).await?;
            if json {
                pretty(&v)?;
            } else {
                let list: Vec<Silence> = serde_json::from_value(v)?;
                for s in &list {
                    let m: Vec<String> = s.matchers.iter().map(|m| m.to_string()).collect();
                    println!("{}  until {}  by {}  {}  {}", s.id, s.ends_at, s.created_by, m.join(","), s.comment);
                }
                if list.is_empty() {
                    println!("no silences");
                }
            }
        }
        AlertsCommand::Stats { json } => {
            let v = call(&a, Method::GET, "/api/v1/alerts/stats", None).await?;
            if json {
                pretty(&v)?;
            } else {
                println!(
                    "firing {} (critical {}, warning {}), pending {}, resolved {}, acknowledged {}, silenced {}, silences {}, rules {}",
                    v["firing"], v["firing_critical"], v["firing_warning"], v["pending"], v["resolved"], v["acknowledged"], v["silenced"], v["silences"], v["rules"]
                );
                println!(
                    "store {}{}",
                    v["store"].as_str().unwrap_or(""),
                    v["store_error"].as_str().map(|e| format!(" (error: {e})")).unwrap_or_default()
                );
                for n in v["notifications"].as_array().into_iter().flatten() {
                    println!("notifications {n}");
                }
            }
        }
        AlertsCommand::History { limit, json } => {
            let v = call(&a, Method::GET, &format!("/api/v1/alerts/history?limit={limit}"), None).await?;
            if json {
                pretty(&v)?;
            } else {
                for e in serde_json::from_value::<Vec<Event>>(v)? {
                    let t = &e.transition;
                    println!(
                        "{}  {:<16} {:<17} {:<8} {}",
                        t.at,
                        t.fingerprint,
                        format!("{:?}", t.kind).to_lowercase(),
                        t.severity.as_str(),
                        t.alertname
                    );
                }
            }
        }
        AlertsCommand::Fire { severity, message, labels } => {
            let mut l = serde_json::Map::new();
            for kv in labels {
                let Some((k, v)) = kv.split_once('=') else { bail!("--label {kv:?}: use name=value") };
                l.insert(k.to_string(), Value::String(v.to_string()));
            }
            let sev: Severity = severity.into();
            let v =
                call(&a, Method::POST, "/api/v1/alerts", Some(json!({"severity": sev, "message": message, "labels": l}))).await?;
            println!("fired {} ({})", v["fingerprint"].as_str().unwrap_or("?"), v["labels"]["alertname"].as_str().unwrap_or(""));
        }
        AlertsCommand::Resolve { fingerprint } => {
            let v = call(&a, Method::POST, &format!("/api/v1/alerts/{fingerprint}/resolve"), None).await?;
            println!("resolved {}", v["fingerprint"].as_str().unwrap_or(&fingerprint));
        }
    }
    Ok(())
}
