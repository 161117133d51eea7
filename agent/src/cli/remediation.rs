//! `wsguard remediation history|approve|pause|resume`: over the agent's API, or with
//! `--state-dir` straight on the audit log (works while the agent is down; the running agent
//! reads the kill switch and approvals from the same file at every interval).

use std::{path::PathBuf, time::SystemTime};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::cli::alerts::ApiArgs;
use crate::remediate::audit::{Audit, Entry};

#[derive(Subcommand)]
pub enum RemediationCommand {
    /// The audit log: what was done, would have been done (dry run) or was refused, and why.
    History {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Newest rows shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Approve a run that waits for approval (its id is in `history`).
    Approve {
        /// The run's id (see `history`).
        id: i64,
        /// Recorded as who approved.
        #[arg(long)]
        by: Option<String>,
    },
    /// Kill switch: no action runs until `resume` (persisted across restarts).
    Pause {
        /// Recorded as who paused (default: $SUDO_USER or $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Lift the kill switch, or with --action re-enable an action whose circuit breaker tripped.
    Resume {
        /// Re-enable this action (its circuit breaker tripped) instead of lifting the kill switch.
        #[arg(long)]
        action: Option<String>,
        /// Recorded as who resumed (default: $SUDO_USER or $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// Where the audit log is: the agent's API (default), or a state dir read directly.
#[derive(clap::Args)]
pub struct Where {
    /// Use the audit log in this state dir directly instead of the API.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
}

fn user() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into())
}

fn open(dir: &std::path::Path) -> Result<Audit> {
    if !dir.join("remediation.db").exists() {
        bail!("no remediation audit log in {}", dir.display());
    }
    Audit::open(dir)
}

async fn post(w: &Where, path: &str, body: Value) -> Result<Value> {
    let (client, base) = crate::api::endpoint::endpoint(&w.api.api, reqwest::Client::builder())?;
    let mut req = client.post(format!("{base}{path}")).json(&body);
    if let Some(t) = crate::cli::client::change_token(&w.api.api, w.api.token_file.as_deref(), || {
        super::token_file_of(w.api.config.as_deref())
    })? {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("cannot reach the agent at {} (or use --state-dir)", w.api.api))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("agent answered {status}: {}", v["error"].as_str().unwrap_or(""));
    }
    Ok(v)
}

pub async fn run(cmd: RemediationCommand, mut at: Where) -> Result<()> {
    at.api = at.api.resolved()?;
    let now = SystemTime::now();
    match cmd {
        RemediationCommand::History { json, limit } => {
            let rows: Vec<Entry> = match &at.state_dir {
                Some(d) => open(d)?.list(limit, None)?,
                None => {
                    let r = crate::cli::client::get(&at.api.api, &format!("/api/v1/remediation?limit={limit}"))
                        .await
                        .context("(or use --state-dir)")?;
                    if !r.status().is_success() {
                        bail!("agent answered {}", r.status());
                    }
                    let v: Value = r.json().await?;
                    serde_json::from_value(v["history"].clone()).context("unexpected answer")?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", text(&rows));
            }
        }
        RemediationCommand::Approve { id, by } => {
            let by = by.unwrap_or_else(user);
            let e = match &at.state_dir {
                Some(d) => serde_json::to_value(open(d)?.approve(id, &by, now)?)?,
                None => post(&at, &format!("/api/v1/remediation/{id}/approve"), json!({ "by": by })).await?,
            };
            println!(
                "approved request {id} ({} on {}); it runs at the next interval if its alert still fires",
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or("")
            );
        }
        RemediationCommand::Pause { by } => {
            let by = by.unwrap_or_else(user);
            match &at.state_dir {
                Some(d) => {
                    open(d)?.set_paused(true, &by, now)?;
                }
                None => {
                    post(&at, "/api/v1/remediation/pause", json!({ "by": by })).await?;
                }
            }
            println!("remediation paused: no action runs until `wsguard remediation resume`");
        }
        RemediationCommand::Resume { action, by } => {
            let by = by.unwrap_or_else(user);
            match (&at.state_dir, &action) {
                (Some(d), Some(a)) => {
                    open(d)?.reset_breaker(a, &by, now)?;
                }
                (Some(d), None) => {
                    open(d)?.set_paused(false, &by, now)?;
                }
                (None, _) => {
                    post(&at, "/api/v1/remediation/resume", json!({ "by": by, "action": action })).await?;
                }
            }
            match action {
                Some(a) => println!("action {a} re-enabled (circuit breaker reset)"),
                None => println!("remediation resumed"),
            }
        }
    }
    Ok(())
}

/// One line per audit row, oldest first.
pub fn text(rows: &[Entry]) -> String {
    if rows.is_empty() {
        return "no remediation activity recorded\n".into();
    }
    let mut s = String::new();
    for r in rows.iter().rev() {
        let mut line = format!("{:>5} {} {:<17}", r.id, r.at, r.event);
        for (k, v) in [("action", &r.action), ("alert", &r.alertname), ("target", &r.target), ("by", &r.by)] {
            if !v.is_empty() {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        if let Some(id) = r.ref_id {
            line.push_str(&format!(" ref={id}"));
        }
        if r.dry_run {
            line.push_str(" [dry run]");
        }
        if !r.result.is_empty() {
            line.push_str(&format!(" → {}", r.result));
        }
        s.push_str(&line);
        s.push('\n');
        if !r.detail.is_empty() {
            for l in r.detail.lines() {
                s.push_str(&format!("        {l}\n"));
            }
        }
        for (k, v) in [("before", &r.before), ("after", &r.after)] {
            if let Some(v) = v.as_ref().filter(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
                s.push_str(&format!("        {k}: {v}\n"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn parses() {
        let c = Cli::try_parse_from(["wsguard", "remediation", "resume", "--action", "hook", "--state-dir", "/x"]).unwrap();
        let Command::Remediation { command: super::RemediationCommand::Resume { action, .. }, at } = c.command else { panic!() };
        assert_eq!((action.as_deref(), at.state_dir.as_deref()), (Some("hook"), Some(std::path::Path::new("/x"))));
        let c = Cli::try_parse_from(["wsguard", "remediation", "history", "--json", "--api", "http://127.0.0.1:1"]).unwrap();
        let Command::Remediation { command: super::RemediationCommand::History { json, limit }, at } = c.command else {
            panic!()
        };
        let api = at.api.resolved().unwrap().api;
        assert_eq!((json, limit, api.as_str()), (true, 50, "http://127.0.0.1:1"));
        assert!(Cli::try_parse_from(["wsguard", "remediation", "approve"]).is_err(), "approve needs an id");
    }

    #[test]
    fn text_shows_one_line_per_row_with_details() {
        let rows = vec![super::Entry {
            id: 7,
            at: "2026-01-01T00:00:00.000Z".into(),
            event: "result".into(),
            action: "quota".into(),
            result: "ok".into(),
            detail: "closed 2 of 2".into(),
            ref_id: Some(6),
            after: Some(serde_json::json!({"closed": 2})),
            ..Default::default()
        }];
        let t = super::text(&rows);
        assert!(t.starts_with("    7 2026-01-01T00:00:00.000Z result            action=quota ref=6 → ok\n"), "{t}");
        assert!(t.contains("        closed 2 of 2\n        after: {\"closed\":2}\n"), "{t}");
        assert_eq!(super::text(&[]), "no remediation activity recorded\n");
    }
}
