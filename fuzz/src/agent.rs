//! Checks for the agent's own inputs: the config loader and the HTTP API (`config_parse` and
//! `api_inputs` targets). Whatever the bytes, the answer is a value or an error, never a panic
//! (the targets build with overflow checks and debug assertions on).

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, OnceLock},
};

use axum::{body::Body, http::Request, Router};
use tower::ServiceExt;
use wsguard::{
    alert::{service::AlertService, silence::MatchOp, silence::Matcher, AlertConfig, Labels},
    api,
    app::config::Config,
    export::metrics::MetricsConfig,
    history::{History, HistoryConfig},
    model::snapshot::Snapshot,
    track::conns::ConnectionSnapshot,
};

const CONFIG_PATH: &str = "/fuzz/wsguard.toml";

/// `config_parse`: text → `Config::parse` gives a config or an error that names the file. A
/// config that parses, written back as TOML, parses again to the same config.
pub fn check_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(CONFIG_PATH);
    match Config::parse(&text, path) {
        Ok(cfg) => {
            let again = toml::to_string(&cfg).expect("a parsed config serializes to TOML");
            let back = Config::parse(&again, path).unwrap_or_else(|e| panic!("written back, it fails: {e}\n{again}"));
            assert_eq!(
                serde_json::to_value(&cfg).expect("json"),
                serde_json::to_value(&back).expect("json"),
                "round trip changed the config:\n{again}"
            );
        }
        Err(e) => assert!(e.to_string().contains(CONFIG_PATH), "error does not name the file: {e}"),
    }
}

/// PID of the one process the fuzzed API serves.
pub const PID: u32 = 4242;

/// `api_inputs`: byte 0 picks what to feed (`% 4`: 0 `since`, 1 a silence matcher, 2–3 an HTTP
/// request whose method is `((b0 >> 2) & 31) % 5`, carrying the API token when bit 7 is set, so
/// the mutations' JSON bodies are parsed too; its first line is the URI, the rest the body).
pub fn check_api(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel % 4 {
        0 => {
            let _ = wsguard::history::parse_since(&String::from_utf8_lossy(rest));
        }
        1 => check_matcher(&String::from_utf8_lossy(rest)),
        _ => check_request((sel >> 2) & 31, sel & 0x80 != 0, rest),
    }
}

fn check_matcher(s: &str) {
    let Ok(m) = Matcher::parse(s) else { return };
    assert!(!m.name.is_empty(), "{s:?}: empty label name accepted");
    let labels: Labels = [(m.name.clone(), m.value.clone())].into();
    let hit = m.matches(&labels);
    match m.op {
        MatchOp::Eq => assert!(hit, "{s:?}: = does not match its own value"),
        MatchOp::Ne => assert!(!hit, "{s:?}: != matches its own value"),
        MatchOp::Re | MatchOp::NotRe => {}
    }
}

fn check_request(method: u8, auth: bool, rest: &[u8]) {
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(uri) = std::str::from_utf8(line) else { return };
    let mut req =
        Request::builder().method(methods[method as usize % methods.len()]).uri(uri).header("content-type", "application/json");
    let (router, token) = api_router();
    if auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let Ok(req) = req.body(Body::from(body.to_vec())) else {
        return; // not a request hyper would have accepted either
    };
    let (status, json, body) = runtime().block_on(async {
        let resp = router.clone().oneshot(req).await.expect("the router is infallible");
        let json = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (resp.status(), json, axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("body"))
    });
    assert!(!status.is_server_error() || status.as_u16() == 503, "{uri:?}: {status}: {}", String::from_utf8_lossy(&body));
    // wsguard's own errors are `{"error": "..."}`; axum's extractor rejections (405 with an
    // empty body, a query string that does not deserialize) are plain text (docs/api.md).
    if json {
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri:?}: {status}: invalid JSON: {e}"));
        if !status.is_success() {
            assert!(v["error"].is_string(), "{uri:?}: {status} without an error message: {v}");
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// The scratch directory of `api_router` (token and alert state).
pub fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wsguard-fuzz-api-{}", std::process::id()))
}

/// The API over one snapshot with one process and one connection, with alerting running and a
/// token (files under `$TMPDIR`), and that token.
fn api_router() -> &'static (Router, String) {
    static R: OnceLock<(Router, String)> = OnceLock::new();
    R.get_or_init(|| {
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("state dir");
        let history = Arc::new(History::memory_only(HistoryConfig::default()));
        let mut shared = api::Shared::new(history.clone(), MetricsConfig::default());
        let token = wsguard::api::token::load_or_create(&dir.join("api-token")).expect("token");
        let secret = token.as_str().to_owned();
        shared.token = Ok(token);
        shared.alerts = Some(Arc::new(AlertService::open(AlertConfig::default(), 20, &dir)));
        let shared = Arc::new(shared);
        let mut snap: Snapshot = serde_json::from_value(serde_json::json!({
            "timestamp": "2026-01-02T03:04:05Z",
            "processes": [{"pid": PID, "comm": "node"}],
        }))
        .expect("snapshot");
        snap.probe.attached = true;
        let snap = Arc::new(snap);
        history.append(snap.clone()).expect("memory history");
        shared.publish(snap, HashMap::from([(PID, vec![ConnectionSnapshot::default()])]));
        (api::router(shared), secret)
    })
}
