//! `http`: POST (or PUT) the alert as JSON to a URL, with a timeout per attempt and retries
//! with backoff on connection errors, 429 and 5xx. A secret header's value is read from a file
//! or an environment variable at each call (so it can rotate), marked sensitive, and never
//! logged or recorded; recorded URLs lose their query string.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::RunResult;
use crate::remediate::config::ActionConfig;

/// URL without query and fragment (they may carry tokens), for logs and the audit log.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

fn secret(a: &ActionConfig) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    let Some(name) = &a.secret_header else { return Ok(None) };
    let value = match (&a.secret_file, &a.secret_env) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| format!("secret_file {f}: {}", e.kind()))?,
        (_, Some(v)) => std::env::var(v).map_err(|_| format!("secret_env {v} is not set"))?,
        _ => return Err("secret_header without a source".into()),
    };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid secret_header name".to_string())?;
    let mut v = HeaderValue::from_str(value.trim()).map_err(|_| "the secret is not a valid header value".to_string())?;
    v.set_sensitive(true);
    Ok(Some((name, v)))
}

pub async fn run(a: &ActionConfig, body: &Value) -> RunResult {
    let url = a.url.clone().unwrap_or_default();
    let shown = redact(&url);
    let mut headers = HeaderMap::new();
    for (k, v) in &a.headers {
        match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            (Ok(k), Ok(v)) => {
                headers.insert(k, v);
            }
            _ => return RunResult::failed(format!("invalid header {k:?}")),
        }
    }
    match secret(a) {
        Ok(Some((k, v))) => {
            headers.insert(k, v);
        }
        Ok(None) => {}
        Err(e) => return RunResult::failed(e),
    }
    let client = match reqwest::Client::builder().timeout(a.timeout()).redirect(reqwest::redirect::Policy::none()).build() {
        Ok(c) => c,
        Err(e) => return RunResult::failed(format!("http client: {e}")),
    };
    let method = match a.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("PUT") => reqwest::Method::PUT,
        _ => reqwest::Method::POST,
    };
    let attempts = a.retries.unwrap_or(2) + 1;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let res = client.request(method.clone(), &url).headers(headers.clone()).json(body).send().await;
        match res {
            Ok(r) if r.status().is_success() => {
                return RunResult {
                    result: "ok".into(),
                    detail: format!("{method} {shown} → {} (attempt {attempt})", r.status()),
                    after: json!({ "status": r.status().as_u16(), "attempts": attempt }),
                }
            }
            Ok(r) => {
                last = format!("{method} {shown} → {}", r.status());
                let retry = r.status().is_server_error() || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS;
                if !retry {
                    return RunResult {
                        result: "failed".into(),
                        detail: format!("{last} (attempt {attempt}, not retried)"),
                        after: json!({ "status": r.status().as_u16(), "attempts": attempt }),
                    };
                }
            }
            // Without the URL: reqwest's errors print it, query string included.
            Err(e) => last = format!("{method} {shown}: {}", e.without_url()),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1).min(5))).await;
        }
    }
    RunResult {
        result: "failed".into(),
        detail: format!("{last} (gave up after {attempts} attempts)"),
        after: json!({ "attempts": attempts }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A receiver answering the given statuses in turn; records each request.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=s3cr3t", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            for st in statuses {
                let (mut c, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the head and the body (Content-Length).
                loop {
                    let n = c.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                s2.lock().unwrap().push(String::from_utf8_lossy(&got).to_string());
                let _ =
                    c.write_all(format!("HTTP/1.1 {st} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn action(url: &str, env: &str) -> ActionConfig {
        toml::from_str::<ActionConfig>(&format!(
            "name = \"h\"\ntype = \"http\"\non = [\"X\"]\nurl = \"{url}\"\nsecret_header = \"Authorization\"\nsecret_env = \"{env}\"\nheaders = {{ X-Team = \"ops\" }}\nretries = 2\n"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn retries_then_succeeds_with_the_secret_header_never_recorded() {
        std::env::set_var("WSGUARD_TEST_HOOK_SECRET_1", "Bearer tok-123");
        let (url, seen) = receiver(vec![503, 200]).await;
        let r = run(&action(&url, "WSGUARD_TEST_HOOK_SECRET_1"), &json!({"alert": {"labels": {"alertname": "X"}}})).await;
        assert_eq!(r.result, "ok", "{}", r.detail);
        assert!(r.detail.contains("attempt 2"), "{}", r.detail);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let req = seen[1].to_ascii_lowercase();
        assert!(req.contains("authorization: bearer tok-123") && req.contains("x-team: ops"), "{req}");
        assert!(seen[1].contains("\"alertname\":\"X\""));
        let recorded = format!("{} {}", r.detail, r.after);
        assert!(!recorded.contains("tok-123") && !recorded.contains("s3cr3t"), "{recorded}");
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_unreachable_gives_up() {
        std::env::set_var("WSGUARD_TEST_HOOK_SECRET_2", "x");
        let (url, seen) = receiver(vec![403]).await;
        let r = run(&action(&url, "WSGUARD_TEST_HOOK_SECRET_2"), &json!({})).await;
        assert_eq!(r.result, "failed");
        assert!(r.detail.contains("403") && r.detail.contains("not retried"), "{}", r.detail);
        assert_eq!(seen.lock().unwrap().len(), 1);
        let mut a = action("http://127.0.0.1:9/x?token=s3cr3t", "WSGUARD_TEST_HOOK_SECRET_2");
        a.retries = Some(1);
        let r = run(&a, &json!({})).await;
        assert!(r.detail.contains("gave up after 2 attempts") && !r.detail.contains("s3cr3t"), "{}", r.detail);
    }
}
