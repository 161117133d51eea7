//! HTTP API (axum): the latest snapshot as JSON, liveness and readiness. Documented in docs/api.md.

use std::sync::{Arc, RwLock};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::snapshot::Snapshot;

/// What the API serves; the run loop publishes into it.
#[derive(Default)]
pub struct Shared {
    latest: RwLock<Option<Arc<Snapshot>>>,
}

impl Shared {
    pub fn publish(&self, s: Snapshot) {
        *self.latest.write().expect("snapshot lock") = Some(Arc::new(s));
    }
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.read().expect("snapshot lock").clone()
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/api/v1/snapshot", get(snapshot))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .with_state(shared)
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({"error": msg}))).into_response()
}

async fn snapshot(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) => Json(snap.as_ref().clone()).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet; the first one comes after one interval"),
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    match s.latest() {
        Some(snap) if snap.probe.attached => Json(json!({"status": "ready"})).into_response(),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "probe not attached or no snapshot yet"),
    }
}
