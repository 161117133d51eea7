//! HTTP API (axum): snapshots, processes, connections, history, liveness and readiness.
//! Documented in docs/api.md. Read-only; everything here is also in the snapshot JSON.

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
    conns::ConnectionSnapshot,
    health,
    history::History,
    metrics::{render, MetricsConfig, CONTENT_TYPE},
    snapshot::Snapshot,
};

/// What the API serves; the run loop publishes into it.
pub struct Shared {
    latest: RwLock<Option<Arc<Snapshot>>>,
    connections: RwLock<Arc<HashMap<u32, Vec<ConnectionSnapshot>>>>,
    pub history: Arc<History>,
    pub metrics: MetricsConfig,
    predictions: RwLock<Option<Arc<crate::predict::Predictions>>>,
}

impl Shared {
    pub fn new(history: Arc<History>, metrics: MetricsConfig) -> Self {
        Shared { latest: RwLock::default(), connections: RwLock::default(), history, metrics, predictions: RwLock::default() }
    }
    pub fn publish(&self, s: Arc<Snapshot>, connections: HashMap<u32, Vec<ConnectionSnapshot>>) {
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
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .with_state(shared)
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
            let mut text = render(&snap, &s.metrics);
            if let Some(p) = s.predictions() {
                text.push_str(&crate::predict::metrics_text(&p));
            }
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        None => no_snapshot(),
    }
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
    let report = health::evaluate(&snap, &s.history.health());
    let code = if report.status == health::Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report)).into_response()
}
