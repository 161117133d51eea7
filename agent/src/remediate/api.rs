//! HTTP routes: `GET /api/v1/remediation` (status, pending approvals, audit rows) and the
//! mutations `POST /api/v1/remediation/{id}/approve`, `/pause`, `/resume`, which need the API
//! token (checked by the `authorize` function the agent's API passes in).

use std::{sync::Arc, time::SystemTime};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use super::Shared;

/// Decides whether a request may mutate (the API token check).
pub type Authorize = Arc<dyn Fn(&HeaderMap) -> bool + Send + Sync>;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    authorize: Authorize,
}

pub fn routes(shared: Arc<Shared>, authorize: Authorize) -> Router {
    Router::new()
        .route("/api/v1/remediation", get(status))
        .route("/api/v1/remediation/pause", post(pause))
        .route("/api/v1/remediation/resume", post(resume))
        .route("/api/v1/remediation/{id}/approve", post(approve))
        .with_state(Ctx { shared, authorize })
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

fn denied() -> Response {
    error(StatusCode::UNAUTHORIZED, "this call changes state: send the API token (Authorization: Bearer …)")
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn status(State(c): State<Ctx>, Query(q): Query<ListQuery>) -> Response {
    match c.shared.status(q.limit.unwrap_or(100).min(10_000)) {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// Who (recorded in the audit log).
    #[serde(default)]
    pub by: Option<String>,
    /// resume: reset this action's circuit breaker instead of the kill switch.
    #[serde(default)]
    pub action: Option<String>,
}

fn body(b: Option<Json<Body>>) -> Body {
    b.map(|Json(b)| b).unwrap_or_default()
}

fn who(b: &Body) -> String {
    b.by.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "api".into())
}

async fn pause(State(c): State<Ctx>, h: HeaderMap, b: Option<Json<Body>>) -> Response {
    if !(c.authorize)(&h) {
        return denied();
    }
    let b = body(b);
    match c.shared.with(|a| a.set_paused(true, &who(&b), SystemTime::now())) {
        Ok(changed) => Json(json!({ "paused": true, "changed": changed })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

async fn resume(State(c): State<Ctx>, h: HeaderMap, b: Option<Json<Body>>) -> Response {
    if !(c.authorize)(&h) {
        return denied();
    }
    let b = body(b);
    let now = SystemTime::now();
    let r = match &b.action {
        Some(a) => c.shared.with(|x| x.reset_breaker(a, &who(&b), now)).map(|ch| json!({ "action": a, "breaker_reset": ch })),
        None => c.shared.with(|x| x.set_paused(false, &who(&b), now)).map(|ch| json!({ "paused": false, "changed": ch })),
    };
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

async fn approve(State(c): State<Ctx>, h: HeaderMap, Path(id): Path<String>, b: Option<Json<Body>>) -> Response {
    if !(c.authorize)(&h) {
        return denied();
    }
    let Ok(id) = id.parse::<i64>() else { return error(StatusCode::BAD_REQUEST, "id must be a number") };
    let b = body(b);
    match c.shared.with(|a| a.approve(id, &who(&b), SystemTime::now())) {
        Ok(e) => Json(e).into_response(),
        Err(e) => error(StatusCode::CONFLICT, &format!("{e:#}")),
    }
}
