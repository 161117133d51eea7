//! A recording HTTP receiver: every request's path, notification-id and auth headers and JSON
//! body, answered with a status chosen per body, optionally after a delay. Down = not
//! listening and no open connection.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    Router,
};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub id_header: Option<String>,
    pub auth: Option<String>,
    pub body: Value,
}

type Status = Arc<dyn Fn(&Value) -> u16 + Send + Sync>;

#[derive(Clone)]
struct Shared {
    reqs: Arc<Mutex<Vec<Req>>>,
    status: Status,
    delay_ms: Arc<AtomicU64>,
}

pub struct Receiver {
    shared: Shared,
    task: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    pub port: u16,
}

async fn record(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(String::from);
    let code = (s.status)(&body);
    s.reqs.lock().unwrap().push(Req {
        path: uri.path().to_string(),
        id_header: h("x-wsguard-notification-id"),
        auth: h("authorization"),
        body,
    });
    let d = s.delay_ms.load(Ordering::Relaxed);
    if d > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(d)).await;
    }
    StatusCode::from_u16(code).unwrap()
}

impl Receiver {
    /// A receiver for `port`, answering 200, not listening yet.
    pub fn new(port: u16) -> Self {
        Receiver {
            shared: Shared { reqs: Default::default(), status: Arc::new(|_| 200), delay_ms: Default::default() },
            task: None,
            port,
        }
    }

    pub fn with_status(mut self, f: impl Fn(&Value) -> u16 + Send + Sync + 'static) -> Self {
        self.shared.status = Arc::new(f);
        self
    }

    pub fn delay_ms(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }

    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind receiver port");
        let app = Router::new().fallback(record).with_state(self.shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Graceful: also closes idle keep-alive connections, so "down" really is down.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.task = Some((tx, task));
    }

    pub async fn down(&mut self) {
        if let Some((tx, t)) = self.task.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }

    pub fn reqs(&self) -> Vec<Req> {
        self.shared.reqs.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.reqs.lock().unwrap().len()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((tx, t)) = self.task.take() {
            let _ = tx.send(());
            t.abort();
        }
    }
}
