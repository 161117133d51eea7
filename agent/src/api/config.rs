//! `[api]`: where the HTTP API listens, its token file and its Unix socket. The section lives
//! with the module that serves it (the root config in `app/config.rs` only holds it).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// HTTP API address. Loopback by default: the API shows what every process on the host does.
    pub listen: SocketAddr,
    /// File holding the bearer token mutating calls need (created 0600 with a random token
    /// when missing). Default: `<state_dir>/api-token`.
    pub token_file: Option<PathBuf>,
    /// Unix socket serving the same API, where the peer's uid (SO_PEERCRED) authorizes
    /// mutations instead of the token. Default: `<state_dir>/api.sock`; `""` turns it off.
    pub socket: Option<PathBuf>,
    /// Group (name or gid) the socket belongs to: set, the socket is 0660 and the group's
    /// members can connect (reads); unset, it is 0600 (root only).
    pub socket_group: Option<String>,
    /// Non-root uids that may call mutating routes over the socket without the token (root
    /// always may). They must be able to connect: see `socket_group`.
    pub socket_uids: Vec<u32>,
    /// PEM certificate (chain) for TLS on `listen`, with `tls_key_file`. Unset: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: set, clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// `[api.basic_auth_users]` user = "bcrypt hash": set, every path on `listen` but /health
    /// and /ready needs one of them (or the API token). The Unix socket is not affected.
    pub basic_auth_users: super::web::BasicAuthUsers,
}

impl ApiConfig {
    /// The TLS files, when TLS is configured.
    pub fn tls(&self) -> Option<super::web::TlsFiles> {
        Some(super::web::TlsFiles {
            cert_file: self.tls_cert_file.clone()?,
            key_file: self.tls_key_file.clone()?,
            client_ca_file: self.tls_client_ca_file.clone(),
        })
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9595".parse().expect("valid default"),
            token_file: None,
            socket: None,
            socket_group: None,
            socket_uids: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            basic_auth_users: Default::default(),
        }
    }
}

impl ApiConfig {
    /// The token file in effect: `token_file`, else `<state_dir>/api-token`.
    pub fn token_file(&self, state_dir: &Path) -> PathBuf {
        super::token::path(self.token_file.as_deref(), state_dir)
    }

    /// The Unix socket, if any: `socket`, else `<state_dir>/api.sock`; `""` turns it off.
    pub fn socket_path(&self, state_dir: &Path) -> Option<PathBuf> {
        match &self.socket {
            None => Some(state_dir.join(super::socket::DEFAULT_FILE)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
        }
    }
}
