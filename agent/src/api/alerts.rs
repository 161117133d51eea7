//! `/api/v1/alerts` and `/api/v1/silences` (docs/api.md). Reads are open like the rest of the
//! loopback API; every mutation needs the bearer token (`crate::api::authorize`).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;

use crate::alert::{service::AlertService, silence::Matcher, Labels, Severity, Status};
use crate::api::{authorize, ApiError, Caller, Shared};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/alerts", get(list).post(fire))
        .route("/api/v1/alerts/stats", get(stats))
        .route("/api/v1/alerts/history", get(history))
        .route("/api/v1/alerts/{fp}", get(show))
        .route("/api/v1/alerts/{fp}/ack", post(ack))
        .route("/api/v1/alerts/{fp}/resolve", post(resolve))
        .route("/api/v1/silences", get(silences).post(silence))
        .route("/api/v1/silences/{id}", delete(unsilence))
}

type Answer = Result<Response, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// A JSON body or a 400 that says what was wrong and what is expected.
fn parse<T>(body: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| bad(format!("{}; expected a JSON body like {expected}", e.body_text())))
}

fn service(s: &Shared) -> Result<&Arc<AlertService>, ApiError> {
    s.alerts.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "alerting is not running"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `pending`, `firing` or `resolved`; default all.
    status: Option<String>,
}

async fn list(State(s): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Answer {
    let want = match q.status.as_deref() {
        None => None,
        Some("pending") => Some(Status::Pending),
        Some("firing") => Some(Status::Firing),
        Some("resolved") => Some(Status::Resolved),
        Some(other) => return Err(bad(format!("status {other:?}: use pending, firing or resolved"))),
    };
    let alerts: Vec<_> = service(&s)?.alerts().into_iter().filter(|a| want.is_none_or(|w| a.status == w)).collect();
    Ok(Json(alerts).into_response())
}

async fn show(State(s): State<Arc<Shared>>, Path(fp): Path<String>) -> Answer {
    let a = service(&s)?
        .alert(&fp)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no alert with that fingerprint (or the prefix is ambiguous)"))?;
    Ok(Json(a).into_response())
}

async fn stats(State(s): State<Arc<Shared>>) -> Answer {
    Ok(Json(service(&s)?.stats()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(s): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> Answer {
    Ok(Json(service(&s)?.history(q.limit.unwrap_or(100).min(10_000))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    comment: String,
}

async fn ack(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    Path(fp): Path<String>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> Answer {
    authorize(&s, &caller)?;
    let b = parse(body, r#"{"by": "name", "comment": "…"}"#)?;
    if b.by.trim().is_empty() {
        return Err(bad("by: who acknowledges (non-empty)"));
    }
    let a = service(&s)?.acknowledge(&fp, &b.by, &b.comment).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    Ok(Json(a).into_response())
}

async fn resolve(State(s): State<Arc<Shared>>, caller: Caller, Path(fp): Path<String>) -> Answer {
    authorize(&s, &caller)?;
    let svc = service(&s)?;
    if svc.alert(&fp).is_some_and(|a| !a.manual) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "only manual alerts resolve by hand; a rule alert resolves when its condition clears",
        ));
    }
    let a = svc.resolve(&fp).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    Ok(Json(a).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FireBody {
    severity: Severity,
    message: String,
    #[serde(default)]
    labels: Labels,
}

async fn fire(State(s): State<Arc<Shared>>, caller: Caller, body: Result<Json<FireBody>, JsonRejection>) -> Answer {
    authorize(&s, &caller)?;
    let b = parse(body, r#"{"severity": "critical", "message": "…", "labels": {…}}"#)?;
    if b.message.trim().is_empty() {
        return Err(bad("message must not be empty"));
    }
    if let Some(k) = b.labels.keys().find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(bad(format!("label name {k:?} must be [A-Za-z0-9_]+")));
    }
    let a = service(&s)?.fire(b.severity, &b.message, b.labels);
    Ok((StatusCode::CREATED, Json(a)).into_response())
}

async fn silences(State(s): State<Arc<Shared>>) -> Answer {
    Ok(Json(service(&s)?.silences()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    matchers: Vec<String>,
    /// Humantime, e.g. `2h`.
    duration: String,
    created_by: String,
    #[serde(default)]
    comment: String,
}

async fn silence(State(s): State<Arc<Shared>>, caller: Caller, body: Result<Json<SilenceBody>, JsonRejection>) -> Answer {
    authorize(&s, &caller)?;
    let b = parse(body, r#"{"matchers": ["alertname=X"], "duration": "2h", "created_by": "…"}"#)?;
    let matchers = b
        .matchers
        .iter()
        .map(|m| Matcher::parse(m))
        .collect::<Result<Vec<Matcher>, String>>()
        .map_err(|e| bad(format!("matchers: {e}")))?;
    let duration: Duration =
        humantime::parse_duration(&b.duration).map_err(|e| bad(format!("duration {:?}: {e}", b.duration)))?;
    if b.created_by.trim().is_empty() {
        return Err(bad("created_by must not be empty"));
    }
    let sil = service(&s)?.silence(matchers, duration, &b.created_by, &b.comment).map_err(bad)?;
    Ok((StatusCode::CREATED, Json(sil)).into_response())
}

async fn unsilence(State(s): State<Arc<Shared>>, caller: Caller, Path(id): Path<String>) -> Answer {
    authorize(&s, &caller)?;
    if service(&s)?.unsilence(&id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "no silence with that id"))
    }
}
