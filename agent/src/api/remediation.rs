//! HTTP routes: `GET /api/v1/remediation` (status, pending approvals, audit rows) and the
//! mutations `POST /api/v1/remediation/{id}/approve`, `/pause`, `/resume`, which need the API
//! token (`crate::api::authorize`).

use std::{sync::Arc, time::SystemTime};

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::api::{authorize, ApiError, Caller, Shared as Api};

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/remediation", get(status))
        .route("/api/v1/remediation/pause", post(pause))
        .route("/api/v1/remediation/resume", post(resume))
        .route("/api/v1/remediation/{id}/approve", post(approve))
}

type Answer = Result<Response, ApiError>;

fn shared(s: &Api) -> Result<&Arc<crate::remediate::Shared>, ApiError> {
    s.remediation
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "remediation is not running (audit log unavailable)"))
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

async fn status(State(s): State<Arc<Api>>, Query(q): Query<ListQuery>) -> Answer {
    let st = shared(&s)?.status(q.limit.unwrap_or(100).min(10_000)).map_err(internal)?;
    Ok(Json(st).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Body {
    /// Who (recorded in the audit log).
    #[serde(default)]
    by: Option<String>,
    /// resume: reset this action's circuit breaker instead of lifting the kill switch.
    #[serde(default)]
    action: Option<String>,
}

/// An optional JSON body: none (or empty) is fine, a malformed one is a 400.
fn body(b: Result<Json<Body>, JsonRejection>) -> Result<Body, ApiError> {
    match b {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(Body::default()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{}; expected {{\"by\": \"name\"}}", e.body_text()))),
    }
}

fn who(b: &Body) -> String {
    b.by.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "api".into())
}

async fn pause(State(s): State<Arc<Api>>, h: Caller, b: Result<Json<Body>, JsonRejection>) -> Answer {
    authorize(&s, &h)?;
    let b = body(b)?;
    let changed = shared(&s)?.with(|a| a.set_paused(true, &who(&b), SystemTime::now())).map_err(internal)?;
    Ok(Json(json!({ "paused": true, "changed": changed })).into_response())
}

async fn resume(State(s): State<Arc<Api>>, h: Caller, b: Result<Json<Body>, JsonRejection>) -> Answer {
    authorize(&s, &h)?;
    let b = body(b)?;
    let now = SystemTime::now();
    let r = shared(&s)?;
    let v = match &b.action {
        Some(a) => json!({ "action": a, "breaker_reset": r.with(|x| x.reset_breaker(a, &who(&b), now)).map_err(internal)? }),
        None => json!({ "paused": false, "changed": r.with(|x| x.set_paused(false, &who(&b), now)).map_err(internal)? }),
    };
    Ok(Json(v).into_response())
}

async fn approve(State(s): State<Arc<Api>>, h: Caller, Path(id): Path<String>, b: Result<Json<Body>, JsonRejection>) -> Answer {
    authorize(&s, &h)?;
    let id: i64 = id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "id must be a number"))?;
    let b = body(b)?;
    let e = shared(&s)?
        .with(|a| a.approve(id, &who(&b), SystemTime::now()))
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(Json(e).into_response())
}
