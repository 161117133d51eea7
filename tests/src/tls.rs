//! wss:// for the TLS tests: a self-signed certificate made for the test (rcgen), written where a
//! server can load it, and a client that trusts only it (rustls) and cuts its plaintext writes
//! like [`crate::RawClient`] does (each cut becomes its own TLS record).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use rustls::{pki_types::CertificateDer, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::{scaled, upgrade_request, write_split, Split};

/// A certificate for `localhost` and `127.0.0.1`, and its key, as PEM files in `dir`.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    pub fn generate(dir: &Path) -> Result<Certs> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem())?;
        std::fs::write(&key, ck.signing_key.serialize_pem())?;
        Ok(Certs { cert, key, der: ck.cert.der().clone() })
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }
}

/// A WebSocket client over TLS speaking raw frames.
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    /// Plaintext received after the handshake response.
    pub received: Vec<u8>,
}

impl crate::exact::SplitClient for TlsClient {
    fn send(&mut self, frames: &[Vec<u8>], split: Split) -> Result<()> {
        TlsClient::send(self, frames, split)
    }
    fn read_to_end(&mut self, timeout: Duration) -> Result<()> {
        TlsClient::read_to_end(self, timeout)
    }
    fn received(&self) -> &[u8] {
        &self.received
    }
}

impl TlsClient {
    /// Connect, complete TLS and the upgrade; fails unless the server answers 101.
    pub fn connect(port: u16, certs: &Certs) -> Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(scaled(Duration::from_secs(5))))?;
        let conn = ClientConnection::new(certs.client_config()?, "localhost".try_into()?)?;
        let mut c = TlsClient { stream: StreamOwned::new(conn, tcp), received: Vec::new() };
        c.stream.write_all(upgrade_request(port, "13", "").as_bytes())?;
        c.stream.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = c.stream.read(&mut chunk).context("reading the upgrade response")?;
            if n == 0 {
                bail!("connection closed during handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                if !head.starts_with("HTTP/1.1 101") {
                    bail!("expected 101, got {head}");
                }
                c.received.extend_from_slice(&buf[i + 4..]);
                return Ok(c);
            }
        }
    }

    /// Write `frames` cut according to `split`, one TLS record per cut.
    pub fn send(&mut self, frames: &[Vec<u8>], split: Split) -> Result<()> {
        write_split(&mut self.stream, frames, split)
    }

    /// Read plaintext until the server closes (or `timeout`).
    pub fn read_to_end(&mut self, timeout: Duration) -> Result<()> {
        self.stream.sock.set_read_timeout(Some(scaled(timeout)))?;
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(()),
                // A peer that closes without close_notify, or resets: the plaintext is complete.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) => {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// nginx terminating TLS on a free port and proxying WebSocket upgrades to plain
/// `127.0.0.1:backend`: one process (`master_process off`), so its pid serves the connections.
/// Config, logs and temp files live in `dir`.
pub fn nginx(dir: &Path, certs: &Certs, backend: u16) -> Result<crate::Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
    location / {{\n      proxy_pass http://127.0.0.1:{backend};\n      proxy_http_version 1.1;\n\
      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
      proxy_read_timeout 30s;\n    }}\n  }}\n}}\n",
        certs.cert.display(),
        certs.key.display()
    );
    std::fs::create_dir_all(dir.join("tmp"))?;
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!("echo READY {port}; exec nginx -p {d} -c {}", file.display()));
    let server = crate::Server::spawn(cmd)?;
    // READY comes before nginx listens: wait for the port.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(10));
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("nginx did not listen on {port}; see {d}/error.log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}
