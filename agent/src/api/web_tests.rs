//! TLS and basic auth against the real router over real TCP, with certificates made in the test
//! (rcgen) and a real TLS client (reqwest on rustls); the log is captured to show that no secret
//! reaches it.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use reqwest::StatusCode;

use super::{
    web::{self, BasicAuthUsers, TlsFiles},
    Shared,
};
use crate::history::{History, HistoryConfig};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_pem: String,
    key_pem: String,
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, in files.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &ca).unwrap();
    let mut client = CertificateParams::new(vec!["prometheus".to_string()]).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), server_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_pem: format!("{}{}", client_cert.pem(), client_key.serialize_pem()),
        key_pem: server_key.serialize_pem(),
        dir,
    }
}

fn files(p: &Pki, mtls: bool) -> TlsFiles {
    TlsFiles {
        cert_file: p.dir.path().join("cert.pem"),
        key_file: p.dir.path().join("key.pem"),
        client_ca_file: mtls.then(|| p.dir.path().join("ca.pem")),
    }
}

/// A log writer into a buffer (the test's runtime is single-threaded, so the agent's log
/// lines of the server tasks land here).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serve the real router as `run` does; returns the port.
async fn serve(tls: Option<TlsFiles>, users: BasicAuthUsers, token: &str) -> u16 {
    let mut shared = Shared::new(Arc::new(History::memory_only(HistoryConfig::default())), Default::default());
    shared.token = Ok(crate::api::token::Token::from_secret(token));
    let shared = Arc::new(shared);
    let app = web::protect(super::router(shared.clone()), users, shared);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let tls = tls.map(|f| {
        let c = web::server_config(&f).unwrap();
        (f, c)
    });
    tokio::spawn(web::serve(tcp, tls, app));
    port
}

fn client(ca: Option<&str>, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
    if let Some(ca) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn users(password: &str) -> (BasicAuthUsers, String) {
    // Cost 4 (the least bcrypt allows) keeps the test fast; operators use 10 or more.
    let hash = bcrypt::hash(password, 4).unwrap();
    let u = BasicAuthUsers([("prometheus".to_string(), hash.clone())].into());
    u.validate().unwrap();
    (u, hash)
}

#[test]
fn tls_and_basic_auth_refuse_what_they_should_and_log_no_secret() {
    let log = Log::default();
    let sub = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer({
        let log = log.clone();
        move || log.clone()
    });
    let _guard = tracing::subscriber::set_default(sub.finish());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let p = pki();
    let (auth_users, hash) = users("correct horse");
    rt.block_on(async {
        let port = serve(Some(files(&p, false)), auth_users, "tok-3f9a").await;
        let url = |path: &str| format!("https://localhost:{port}{path}");
        let trusting = client(Some(&p.ca_pem), None);

        // A real TLS client that trusts the CA: /health is open, the rest needs a user.
        let r = trusting.get(url("/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = trusting.get(url("/api/v1/snapshot")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"wsguard\"");
        // Wrong password, unknown user: 401.
        let r = trusting.get(url("/metrics")).basic_auth("prometheus", Some("wrong-pass-77")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = trusting.get(url("/metrics")).basic_auth("nobody", Some("correct horse")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The right one passes auth (no snapshot yet in this test: 503 from the handler).
        let r = trusting.get(url("/metrics")).basic_auth("prometheus", Some("correct horse")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        // The API token (mutations send it) passes too; a wrong one does not.
        let r = trusting.get(url("/api/v1/snapshot")).bearer_auth("tok-3f9a").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = trusting.get(url("/api/v1/snapshot")).bearer_auth("tok-wrong").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        // No TLS: plain HTTP gets no answer. A client that does not trust the CA: refused.
        let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/health")).send().await;
        assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
        let untrusting = client(None, None).get(url("/health")).send().await;
        assert!(untrusting.is_err(), "{untrusting:?}");
        // The server's side of the refused handshakes ends in its own tasks: let them log.
        for _ in 0..50 {
            if String::from_utf8_lossy(&log.0.lock().unwrap()).contains("API TLS handshake") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    drop(rt);
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("API TLS handshake"), "the refused handshakes are logged (debug): {text}");
    for secret in ["correct horse", "wrong-pass-77", "tok-3f9a", "tok-wrong", hash.as_str(), &p.key_pem[40..80]] {
        assert!(!text.contains(secret), "{secret:?} in the log:\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    // Debug of the config shows users, never hashes.
    let (u, hash) = users("x");
    assert!(!format!("{u:?}").contains(&hash) && format!("{u:?}").contains("prometheus"));
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let p = pki();
    let port = serve(Some(files(&p, true)), BasicAuthUsers::default(), "t").await;
    let url = format!("https://localhost:{port}/health");
    let without = client(Some(&p.ca_pem), None).get(&url).send().await;
    assert!(without.is_err(), "no client certificate, yet: {without:?}");
    let with = client(Some(&p.ca_pem), Some(&p.client_pem)).get(&url).send().await.unwrap();
    assert_eq!(with.status(), StatusCode::OK);
}

#[tokio::test]
async fn basic_auth_without_tls_and_plain_when_neither() {
    let (users, _) = users("pw");
    let port = serve(None, users, "t").await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/snapshot")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let port = serve(None, BasicAuthUsers::default(), "t").await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/snapshot")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "no auth configured: today's behaviour");
}

#[test]
fn bad_files_and_hashes_are_clear_errors_naming_the_key() {
    let p = pki();
    let mut f = files(&p, false);
    f.key_file = p.dir.path().join("missing.pem");
    let e = format!("{:#}", web::server_config(&f).unwrap_err());
    assert!(e.contains("tls_key_file") && e.contains("missing.pem"), "{e}");
    let mut f = files(&p, false);
    f.cert_file = p.dir.path().join("key.pem");
    let e = format!("{:#}", web::server_config(&f).unwrap_err());
    assert!(e.contains("tls_cert_file"), "{e}");
    assert!(!e.contains(&p.key_pem[40..80]), "{e}");
    let bad = BasicAuthUsers([("prometheus".to_string(), "plaintext-password".to_string())].into());
    let e = bad.validate().unwrap_err();
    assert!(e.contains("bcrypt") && !e.contains("plaintext-password"), "{e}");
    let bad = BasicAuthUsers([("a:b".to_string(), bcrypt::hash("x", 4).unwrap())].into());
    assert!(bad.validate().is_err());
}
