//! `slack`: an incoming-webhook message: `text` (the fallback shown in notifications) and Block
//! Kit blocks, one section per alert (at most 20; Slack allows 50 blocks per message).

use serde_json::{json, Value};

use super::{post_json, Common, SendError};
use crate::notify::notice::{Notice, Reason};

const MAX_SECTIONS: usize = 20;

pub struct Slack {
    url: String,
    common: Common,
}

impl Slack {
    pub fn new(url: String, common: Common) -> Self {
        Slack { url, common }
    }

    pub async fn send(&self, n: &Notice) -> Result<(), SendError> {
        post_json(&self.common, &self.url, &[], &render(n)).await
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn render(n: &Notice) -> Value {
    let title = n.title();
    let first_summary = n.entries.first().and_then(|e| e.alert.annotations.get("summary")).cloned().unwrap_or_default();
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, 150)}})];
    for e in n.entries.iter().take(MAX_SECTIONS) {
        let a = &e.alert;
        let icon = match e.reason {
            Reason::Resolved => ":large_green_circle:",
            _ if a.severity == crate::alert::Severity::Critical => ":red_circle:",
            _ => ":large_orange_circle:",
        };
        let mut text = format!(
            "{icon} *{}* — {} ({})\n",
            esc(a.labels.get("alertname").map(String::as_str).unwrap_or("")),
            a.severity.as_str(),
            e.reason.as_str()
        );
        for k in ["summary", "action"] {
            if let Some(v) = a.annotations.get(k) {
                text.push_str(&format!("{}{}\n", if k == "action" { "*Action:* " } else { "" }, esc(v)));
            }
        }
        let labels: Vec<String> =
            a.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("`{}={}`", esc(k), esc(v))).collect();
        text.push_str(&labels.join(" "));
        text.push_str(&format!("\nSince {}", a.starts_at));
        if let Some(end) = &a.ends_at {
            text.push_str(&format!(", resolved {end}"));
        }
        if let Some(url) = a.annotations.get("runbook_url") {
            text.push_str(&format!(" · <{}|runbook>", esc(url)));
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, 3000)}}));
    }
    if n.entries.len() > MAX_SECTIONS {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("…and {} more", n.entries.len() - MAX_SECTIONS)}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("wsguard notification {}", n.id)}]}));
    let text = if first_summary.is_empty() { title } else { format!("{title}: {first_summary}") };
    json!({"text": cut(&text, 3000), "blocks": blocks})
}
