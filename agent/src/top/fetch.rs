//! What `wsguard top` reads from the agent's API each refresh, and the one write it makes
//! (acknowledging an alert). The snapshot is required; every other feed is optional, so the
//! dashboard works against agents that lack an endpoint (older versions, `[predict] enabled =
//! false`) and says so instead of failing.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{alert::Alert, export::health, model::snapshot::Snapshot, predict::Predictions, track::conns::ConnectionSnapshot};

/// An optional feed: its data, or why there is none.
#[derive(Debug, Clone)]
pub enum Feed<T> {
    Ok(T),
    Unavailable(String),
}

impl<T> Feed<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Feed::Ok(t) => Some(t),
            Feed::Unavailable(_) => None,
        }
    }
}

/// One refresh worth of data.
#[derive(Debug, Clone)]
pub struct Data {
    pub snapshot: Snapshot,
    pub health: Option<health::Report>,
    pub alerts: Feed<Vec<Alert>>,
    pub predictions: Feed<Predictions>,
    /// Connections of the process the user opened (pid, list).
    pub connections: Option<(u32, Feed<Vec<ConnectionSnapshot>>)>,
}

/// An HTTP client for one agent.
#[derive(Clone)]
pub struct Api {
    /// The agent as the user named it (`--api`).
    shown: String,
    /// What request paths go after (`client::endpoint`).
    prefix: String,
    client: reqwest::Client,
    token: Option<String>,
}

enum Got<T> {
    Ok(T),
    /// The agent answered with this status and message.
    Status(u16, String),
}

impl Api {
    /// `api`: `http://HOST:PORT` or `unix:PATH` (`client::endpoint`).
    pub fn new(api: &str, token: Option<String>) -> anyhow::Result<Self> {
        let (client, prefix) = crate::api::endpoint::endpoint(api, reqwest::Client::builder().timeout(Duration::from_secs(3)))?;
        Ok(Api { shown: api.trim_end_matches('/').to_string(), prefix, client, token })
    }

    pub fn base(&self) -> &str {
        &self.shown
    }

    /// Acknowledging is worth trying: with a token, or on the socket (the agent decides by uid).
    pub fn can_ack(&self) -> bool {
        self.token.is_some() || self.shown.starts_with("unix:")
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Got<T>, String> {
        let resp = self.client.get(format!("{}{path}", self.prefix)).send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| error_chain(&e))?;
        // /health/detailed answers 503 with a full report when unhealthy.
        if status.is_success() || (status.as_u16() == 503 && path == "/health/detailed") {
            return serde_json::from_slice(&body).map(Got::Ok).map_err(|e| format!("{path}: unexpected answer: {e}"));
        }
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Ok(Got::Status(status.as_u16(), msg))
    }

    async fn feed<T: DeserializeOwned>(&self, path: &str, what: &str) -> Feed<T> {
        match self.get::<T>(path).await {
            Ok(Got::Ok(t)) => Feed::Ok(t),
            Ok(Got::Status(404, _)) => Feed::Unavailable(format!("{what}: not available from this agent")),
            Ok(Got::Status(code, msg)) => Feed::Unavailable(format!("{what}: {code} {msg}")),
            Err(e) => Feed::Unavailable(format!("{what}: {e}")),
        }
    }

    /// Everything one refresh shows. Err only when the snapshot cannot be had (agent down).
    pub async fn fetch(&self, connections_of: Option<u32>) -> Result<Data, String> {
        let snapshot = match self.get::<Snapshot>("/api/v1/snapshot").await? {
            Got::Ok(s) => s,
            Got::Status(code, msg) => return Err(format!("agent answered {code}: {msg}")),
        };
        let (health, alerts, predictions, connections) = tokio::join!(
            self.get::<health::Report>("/health/detailed"),
            self.alerts(),
            self.feed::<Predictions>("/api/v1/predictions", "predictions"),
            async {
                match connections_of {
                    Some(pid) => {
                        let path = format!("/api/v1/processes/{pid}/connections");
                        Some((pid, self.feed(&path, "connections").await))
                    }
                    None => None,
                }
            }
        );
        let health = match health {
            Ok(Got::Ok(h)) => Some(h),
            _ => None,
        };
        Ok(Data { snapshot, health, alerts, predictions, connections })
    }

    /// Snapshots of the last `secs` seconds (to draw the sparklines' past at start).
    pub async fn recent(&self, secs: u64) -> Result<Vec<Snapshot>, String> {
        match self.get::<Vec<Snapshot>>(&format!("/api/v1/history?since={secs}s")).await? {
            Got::Ok(list) => Ok(list),
            Got::Status(code, msg) => Err(format!("history: {code} {msg}")),
        }
    }

    /// `/api/v1/alerts`: a list of alerts, bare or as `{"alerts": [...]}`.
    async fn alerts(&self) -> Feed<Vec<Alert>> {
        match self.feed::<serde_json::Value>("/api/v1/alerts", "alerts").await {
            Feed::Ok(v) => {
                let list = if v.is_array() { v } else { v["alerts"].clone() };
                match serde_json::from_value(list) {
                    Ok(a) => Feed::Ok(a),
                    Err(e) => Feed::Unavailable(format!("alerts: unexpected answer: {e}")),
                }
            }
            Feed::Unavailable(why) => Feed::Unavailable(why),
        }
    }

    /// Acknowledge an alert (`POST /api/v1/alerts/{fingerprint}/ack`, bearer token).
    pub async fn ack(&self, fingerprint: &str, by: &str) -> Result<(), String> {
        if !self.can_ack() {
            return Err("no API token: run as root on the agent's host, or pass --token-file".into());
        }
        let url = format!("{}/api/v1/alerts/{fingerprint}/ack", self.prefix);
        let body = serde_json::json!({"by": by, "comment": "acknowledged from wsguard top"});
        let mut req = self.client.post(url).json(&body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        Err(format!("ack refused ({status}): {msg}"))
    }
}

/// The error with its causes ("connection refused" is in a source, not the top message).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
