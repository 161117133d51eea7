//! HTTP API (axum): snapshots, processes, connections, history, liveness and readiness.
//! Documented in docs/api.md. Reads are open (loopback by default); mutations need the token,
//! or, on the Unix socket (`socket.rs`), a peer uid the config trusts.

pub mod alerts;
pub mod config;
pub mod endpoint;
pub mod remediation;
pub mod socket;
pub mod token;
pub mod web;
#[cfg(test)]
mod web_tests;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    export::health,
    export::keep::Kept,
    export::metrics::{render_with, Activity, AlertActivity, ChannelActivity, Extras, MetricsConfig, CONTENT_TYPE},
    history::History,
    model::snapshot::Snapshot,
    track::conns::ConnectionSnapshot,
};

/// What the API serves; the run loop publishes into it.
pub struct Shared {
    latest: RwLock<Option<Arc<Snapshot>>>,
    connections: RwLock<Arc<HashMap<u32, Vec<ConnectionSnapshot>>>>,
    pub history: Arc<History>,
    pub metrics: MetricsConfig,
    /// What `/metrics` remembers between snapshots (monotonic counters, `export/keep.rs`).
    kept: std::sync::Mutex<Kept>,
    predictions: RwLock<Option<Arc<crate::predict::Predictions>>>,
    pub alerts: Option<Arc<crate::alert::service::AlertService>>,
    pub remediation: Option<Arc<crate::remediate::Shared>>,
    /// Bearer token for mutating calls; `Err` says why there is none (mutations are refused).
    pub token: Result<crate::api::token::Token, String>,
    /// Peers on the Unix socket that may mutate without the token, besides root (`[api] socket_uids`).
    pub socket_uids: Vec<u32>,
    /// `[health]`: when the workload checks of `/health/detailed` judge.
    pub health: crate::export::health::HealthConfig,
}

impl Shared {
    pub fn new(history: Arc<History>, metrics: MetricsConfig) -> Self {
        Shared {
            latest: RwLock::default(),
            connections: RwLock::default(),
            history,
            metrics,
            kept: Default::default(),
            predictions: RwLock::default(),
            alerts: None,
            remediation: None,
            token: Err("no API token configured".into()),
            socket_uids: Vec::new(),
            health: Default::default(),
        }
    }
    pub fn publish(&self, s: Arc<Snapshot>, connections: HashMap<u32, Vec<ConnectionSnapshot>>) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.kept.lock().expect("kept lock").observe(&s, &self.metrics, now);
        *self.latest.write().expect("snapshot lock") = Some(s);
        *self.connections.write().expect("connections lock") = Arc::new(connections);
    }
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.read().expect("snapshot lock").clone()
    }
    pub fn publish_predictions(&self, p: crate::predict::Predictions) {
        *self.predictions.write().expect("predictions lock") = Some(Arc::new(p));
    }
    pub fn predictions(&self) -> Option<Arc<crate::predict::Predictions>> {
        self.predictions.read().expect("predictions lock").clone()
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/processes/{pid}/connections", get(connections))
        .route("/api/v1/history", get(history))
        .route("/api/v1/predictions", get(predictions))
        .merge(alerts::routes())
        .merge(remediation::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .with_state(shared)
}

/// An error answer: `{"error": "…"}` with a status (a 401 also asks for a bearer token).
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = error(self.code, &self.message);
        if self.code == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Who called: the request's headers and, on the Unix socket, the peer's credentials.
pub struct Caller {
    headers: axum::http::HeaderMap,
    peer: Option<crate::api::socket::Peer>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only the socket listener records connect info (run.rs), so TCP callers have no peer.
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<crate::api::socket::Peer>>().map(|c| c.0);
        Ok(Caller { headers: parts.headers.clone(), peer })
    }
}

impl Caller {
    /// Who an authorized change came from, as the agent knows it (not as the caller claims):
    /// the peer's uid on the Unix socket, else the holder of the API token.
    pub fn principal(&self) -> String {
        match self.peer.and_then(|p| p.uid) {
            Some(uid) => format!("uid {uid} via socket"),
            None if self.peer.is_some() => "socket peer".into(),
            None => "token".into(),
        }
    }
}

/// Mutating calls: `Authorization: Bearer <token>` must match the agent's token; on the Unix
/// socket, a peer with uid 0 or one of `[api] socket_uids` needs no token, and any other peer
/// without the token gets 403 (it is known, and not allowed).
pub fn authorize(s: &Shared, caller: &Caller) -> Result<(), ApiError> {
    let presented = caller
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(peer) = caller.peer {
        if peer.uid.is_some_and(|u| u == 0 || s.socket_uids.contains(&u)) {
            return Ok(());
        }
        return match (s.token.as_ref(), presented) {
            (Ok(token), Some(p)) if token.matches(p.trim()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not change state over the API socket: root and [api] socket_uids may (or send the API token)",
                    peer.uid.map_or("a peer of unknown uid".to_string(), |u| format!("uid {u}"))
                ),
            )),
        };
    }
    let token = s.token.as_ref().map_err(|why| ApiError::new(StatusCode::FORBIDDEN, format!("mutations are disabled: {why}")))?;
    match presented {
        Some(p) if token.matches(p.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong API token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this call changes state: send `Authorization: Bearer <token>` (the token is in [api] token_file, default <state_dir>/api-token)",
        )),
    }
}

pub fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({"error": msg}))).into_response()
}

fn no_snapshot() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet; the first one is built right after the probe attaches")
}

async fn snapshot(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) => Json(snap.as_ref().clone()).into_response(),
        None => no_snapshot(),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) => {
            let preds = s.predictions();
            let activity = activity(&s);
            let kept = s.kept.lock().expect("kept lock");
            let extras = Extras { predictions: preds.as_deref(), kept: Some(&kept), activity: Some(&activity) };
            let text = render_with(&snap, &extras, &s.metrics);
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        None => no_snapshot(),
    }
}

/// The agent's own alert, notification and remediation numbers for `/metrics`.
fn activity(s: &Shared) -> Activity {
    let mut a = Activity::default();
    if let Some(alerts) = &s.alerts {
        let st = alerts.stats();
        let firing = [
            ("info", st.firing.saturating_sub(st.firing_critical + st.firing_warning)),
            ("warning", st.firing_warning),
            ("critical", st.firing_critical),
        ];
        a.alerts = Some(AlertActivity {
            firing: firing.into_iter().map(|(k, n)| (k.to_owned(), n)).collect(),
            pending: st.pending,
            transitions: alerts.transitions(),
        });
        let n = |c: &serde_json::Value, k: &str| c.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let text = |c: &serde_json::Value, k: &str| c.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        for sink in &st.notifications {
            for c in sink.get("channels").and_then(serde_json::Value::as_array).into_iter().flatten() {
                a.notifications.push(ChannelActivity {
                    channel: text(c, "name"),
                    kind: text(c, "kind"),
                    sent: n(c, "sent"),
                    failed: n(c, "failed"),
                    dropped: n(c, "dropped"),
                    queued: n(c, "pending"),
                });
            }
        }
    }
    if let Some(r) = &s.remediation {
        a.remediation = Some(r.runs());
    }
    a
}

async fn predictions(State(s): State<Arc<Shared>>) -> Response {
    match s.predictions() {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no predictions yet (or [predict] enabled = false)"),
    }
}

async fn processes(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) => Json(&snap.processes).into_response(),
        None => no_snapshot(),
    }
}

async fn connections(State(s): State<Arc<Shared>>, Path(pid): Path<String>) -> Response {
    let Ok(pid) = pid.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "pid must be a number");
    };
    let all = s.connections.read().expect("connections lock").clone();
    match all.get(&pid) {
        Some(list) => Json(list).into_response(),
        None => error(StatusCode::NOT_FOUND, "no WebSocket process with that pid in the latest snapshot"),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    since: Option<String>,
}

async fn history(State(s): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> Response {
    let since = q.since.as_deref().unwrap_or("15m");
    match crate::history::parse_since(since) {
        Ok(t) => {
            let list = s.history.since(t);
            Json(list.iter().map(|a| a.as_ref()).collect::<Vec<&Snapshot>>()).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &format!("since: {e:#}")),
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) if snap.probe.attached => Json(json!({"status": "ready"})).into_response(),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "probe not attached or no snapshot yet"),
    }
}

async fn detailed(State(s): State<Arc<Shared>>) -> Response {
    let Some(snap) = s.latest() else { return no_snapshot() };
    let report = health::evaluate(&snap, &s.history.health(), &s.health);
    let code = if report.status == health::Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(report)).into_response()
}
