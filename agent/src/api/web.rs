//! TLS and basic auth on the HTTP listener, for an API that must leave loopback (a Prometheus
//! on another host, `hostNetwork` pods): node_exporter's web-config (`tls_server_config`,
//! `basic_auth_users` with bcrypt hashes) as `[api]` keys. docs/security.md says how to use it.
//!
//! TLS is rustls through tokio-rustls (the rustls project's own tokio adapter, already in the
//! tree for reqwest and the SMTP client: no OpenSSL on the host, no second TLS stack) behind
//! axum's `Listener` trait, so the same router serves plain and TLS connections. Handshakes run
//! in their own tasks with a deadline: a client that stalls its handshake holds no one up.
//! Certificate files are re-read when they change (cert-manager, certbot rotate them).
//! Passwords are checked with the `bcrypt` crate (the maintained Rust implementation,
//! constant-time compare), off the async threads, and never logged.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tracing::{debug, warn};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more connections wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 64;
/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(30);
/// Paths that answer without basic auth: they show nothing but "up"/"ready", and kubelet
/// probes cannot send a password without putting it in the manifest.
pub const OPEN_PATHS: [&str; 2] = ["/health", "/ready"];

/// `[api]` TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set: clients must present a certificate signed by one of these CAs (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config from the files; every error names the file (never its content).
pub fn server_config(f: &TlsFiles) -> Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("[api] tls_cert_file {}", f.cert_file.display()))?;
    if certs.is_empty() {
        bail!("[api] tls_cert_file {}: no CERTIFICATE in it", f.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&f.key_file)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("[api] tls_key_file {}: no readable private key", f.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &f.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("[api] tls_client_ca_file {}", ca.display()))?;
            for c in cas {
                roots.add(c).with_context(|| format!("[api] tls_client_ca_file {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("[api] tls_client_ca_file {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("[api] tls_cert_file / tls_key_file ({}): they do not match", f.cert_file.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(f: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&f.cert_file), Some(&f.key_file), f.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TCP listener that hands axum only connections whose TLS handshake succeeded.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `tcp` (the config is loaded by the caller first, so a bad file fails
    /// the start before anything is attached).
    pub fn new(tcp: TcpListener, files: TlsFiles, config: rustls::ServerConfig) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(accept_loop(tcp, files, config, tx));
        Ok(TlsListener { rx, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    files: TlsFiles,
    config: rustls::ServerConfig,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut acceptor = TlsAcceptor::from(Arc::new(config));
    let mut stamp = modified(&files);
    let mut checked = tokio::time::Instant::now();
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning (as axum's TcpListener does).
                debug!("API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        if checked.elapsed() >= RELOAD_CHECK {
            checked = tokio::time::Instant::now();
            let now = modified(&files);
            if now != stamp {
                stamp = now;
                match server_config(&files) {
                    Ok(c) => {
                        acceptor = TlsAcceptor::from(Arc::new(c));
                        tracing::info!("API TLS: certificate files changed, reloaded");
                    }
                    Err(e) => warn!("API TLS: certificate files changed but do not load, keeping the old ones: {e:#}"),
                }
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!("API TLS handshake from {peer} failed: {e}"),
                Err(_) => debug!("API TLS handshake from {peer} timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// `[api.basic_auth_users]`: user name → bcrypt hash. Debug never shows the hashes.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BasicAuthUsers(pub BTreeMap<String, String>);

impl std::fmt::Debug for BasicAuthUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys().map(|u| format!("{u}: <bcrypt hash>"))).finish()
    }
}

/// A hash that costs what a real one costs, for unknown users (no timing tells which exist).
fn unknown_user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("not a password", bcrypt::DEFAULT_COST).unwrap_or_default())
}

impl BasicAuthUsers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each entry: a user name without `:` and a bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (user, hash) in &self.0 {
            if user.is_empty() || user.contains(':') {
                return Err(format!("user {user:?}: a name, without ':'"));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "user {user:?}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}` and keep the part after ':')"
                ));
            }
        }
        Ok(())
    }

    /// Whether `user:password` is one of ours (bcrypt's work, on a blocking thread).
    pub async fn check(self: &Arc<Self>, user: String, password: String) -> bool {
        let users = self.clone();
        tokio::task::spawn_blocking(move || {
            let (known, hash) = match users.0.get(&user) {
                Some(h) => (true, h.as_str()),
                None => (false, unknown_user_hash()),
            };
            bcrypt::verify(password.as_bytes(), hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false)
    }
}

/// `Authorization: Basic …` as (user, password).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Middleware: every path but [`OPEN_PATHS`] needs a basic-auth user, or the API token as
/// `Authorization: Bearer` (the one header carries either; the token already allows more).
pub async fn require_basic_auth(users: Arc<BasicAuthUsers>, shared: Arc<super::Shared>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req.headers().get(header::AUTHORIZATION);
    let ok = match presented {
        Some(v) if v.to_str().is_ok_and(|s| s.starts_with("Bearer ")) => {
            let t = v.to_str().unwrap_or_default().trim_start_matches("Bearer ").trim();
            shared.token.as_ref().is_ok_and(|token| token.matches(t))
        }
        Some(v) => match basic_credentials(v) {
            Some((user, password)) => users.check(user, password).await,
            None => false,
        },
        None => false,
    };
    if ok {
        return next.run(req).await;
    }
    let mut r = super::error(StatusCode::UNAUTHORIZED, "this API needs a user and password (basic auth) or the API token");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"wsguard\""));
    r.into_response()
}

/// The router with basic auth in front when users are configured (else as it is).
pub fn protect(app: axum::Router, users: BasicAuthUsers, shared: Arc<super::Shared>) -> axum::Router {
    if users.is_empty() {
        return app;
    }
    let users = Arc::new(users);
    app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        require_basic_auth(users.clone(), shared.clone(), req, next)
    }))
}

/// Serve `app` on `tcp`, over TLS when configured, until the process ends.
pub async fn serve(tcp: TcpListener, tls: Option<(TlsFiles, rustls::ServerConfig)>, app: axum::Router) {
    let result = match tls {
        Some((files, config)) => match TlsListener::new(tcp, files, config) {
            Ok(l) => axum::serve(l, app).await,
            Err(e) => Err(e),
        },
        None => axum::serve(tcp, app).await,
    };
    if let Err(e) = result {
        tracing::error!("API server stopped: {e}");
    }
}

/// Whether an address is only reachable from this host.
pub fn loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
