//! Agent configuration: TOML with defaults for every key, so an empty file is a valid config.
//! Errors name the file, key and line (the `toml` crate reports spans).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Default config location for `wsguard run`.
pub const DEFAULT_PATH: &str = "/etc/wsguard/wsguard.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is in the message and not a `source`, so `{:#}` chains print it once.
    #[error("cannot read config {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {key}: {message}")]
    Value { path: PathBuf, key: &'static str, message: String },
    #[error("refusing config {path}: {message}")]
    Insecure { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: crate::api::config::ApiConfig,
    pub probe: crate::probe::config::ProbeConfig,
    pub limits: crate::track::config::LimitsConfig,
    pub history: crate::history::HistoryConfig,
    pub metrics: crate::export::metrics::MetricsConfig,
    pub predict: crate::predict::PredictConfig,
    pub alert: crate::alert::AlertConfig,
    pub notify: crate::notify::NotifyConfig,
    pub remediation: crate::remediate::RemediationConfig,
    pub privacy: crate::track::redact::PrivacyConfig,
    pub health: crate::export::health::HealthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// How often a snapshot is built.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where state that must survive a restart lives.
    pub state_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log_level: String,
    /// `text` (colour only when stderr is a terminal) or `json` (one object per line);
    /// `WSGUARD_LOG_FORMAT` wins when set. Needs a restart.
    pub log_format: LogFormat,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            state_dir: PathBuf::from("/var/lib/wsguard"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// `WSGUARD_LOG_FORMAT` when set (an unknown value is an error), else `configured`.
    pub fn from_env_or(configured: LogFormat) -> Result<LogFormat, String> {
        match std::env::var("WSGUARD_LOG_FORMAT") {
            Ok(v) => match v.trim() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("WSGUARD_LOG_FORMAT={other:?}: expected `text` or `json`")),
            },
            Err(_) => Ok(configured),
        }
    }
}

/// Where and what, without the quoted source line `toml` adds to its errors: that line may
/// hold a secret (an `auth_header`, a password) and errors end up in logs (docs/security.md).
fn parse_message(e: &toml::de::Error, text: &str) -> String {
    let what = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // The key (never its value), under the table it is in.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c)));
            let table = text.lines().take(line - 1).filter_map(|l| {
                let t = l.trim();
                t.strip_prefix("[[")
                    .and_then(|x| x.strip_suffix("]]"))
                    .or_else(|| t.strip_prefix('[').and_then(|x| x.strip_suffix(']')))
            });
            let key = match (table.last(), key) {
                (Some(t), Some(k)) => format!(" (key `{}.{k}`)", t.trim()),
                (None, Some(k)) => format!(" (key `{k}`)"),
                _ => String::new(),
            };
            format!("TOML parse error at line {line}, column {column}{key}: {what}")
        }
        None => format!("TOML parse error: {what}"),
    }
}

impl Config {
    /// The API token file in effect.
    /// What the tracker reads: its own `[limits]`, `[probe]`, the state directory and interval.
    pub fn track(&self) -> crate::track::config::TrackConfig {
        crate::track::config::TrackConfig {
            limits: self.limits.clone(),
            probe: self.probe.clone(),
            state_dir: self.agent.state_dir.clone(),
            interval: self.agent.interval,
            privacy: self.privacy.clone(),
        }
    }

    pub fn token_file(&self) -> PathBuf {
        self.api.token_file(&self.agent.state_dir)
    }

    /// The API's Unix socket, if any (`[api] socket`; empty: none).
    pub fn api_socket(&self) -> Option<PathBuf> {
        self.api.socket_path(&self.agent.state_dir)
    }

    /// Load from `path`; a missing file at the default location means "all defaults".
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::File::open(&path) {
            Ok(mut f) => {
                // As root, a config others can write is a way to run their commands as root.
                crate::app::privs::check_config_file(&path, &f)
                    .map_err(|message| ConfigError::Insecure { path: path.clone(), message })?;
                let mut t = String::new();
                std::io::Read::read_to_string(&mut f, &mut t).map_err(|cause| ConfigError::Read { path: path.clone(), cause })?;
                t
            }
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(cause) => return Err(ConfigError::Read { path, cause }),
        };
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: parse_message(&e, text) })?;
        cfg.validate(path).map_err(|e| with_line(e, text))?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, message: &str| ConfigError::Value { path: path.into(), key, message: message.into() };
        if self.agent.interval < Duration::from_millis(100) {
            return Err(bad("agent.interval", "must be at least 100ms"));
        }
        let ring = self.probe.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(bad("probe.ring_buffer_bytes", "must be a power of two of at least 4096"));
        }
        if self.probe.max_connections == 0 {
            return Err(bad("probe.max_connections", "must be at least 1"));
        }
        if self.probe.max_processes == 0 {
            return Err(bad("probe.max_processes", "must be at least 1"));
        }
        let ck = &self.probe.client_key;
        let too_long = |v: &Option<String>| v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 30);
        if too_long(&ck.header) || too_long(&ck.query) {
            return Err(bad("probe.client_key", "header and query names must be 1 to 30 bytes"));
        }
        if self.limits.per_client_connections == 0 {
            return Err(bad("limits.per_client_connections", "must be at least 1"));
        }
        if let Err((key, message)) = self.history.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Err((key, message)) = self.predict.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Err((key, message)) = self.alert.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Err((key, message)) = self.notify.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Err((key, message)) = self.remediation.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Err((key, message)) = self.privacy.validate() {
            return Err(ConfigError::Value { path: path.into(), key, message });
        }
        if let Some(sock) = self.api_socket() {
            if sock.as_os_str().len() > crate::api::socket::PATH_MAX {
                let msg = format!("must be at most {} bytes (\"\" turns the socket off)", crate::api::socket::PATH_MAX);
                return Err(bad("api.socket", &msg));
            }
        }
        if self.api.socket_group.as_deref().is_some_and(|g| g.is_empty()) {
            return Err(bad("api.socket_group", "must be a group name or gid"));
        }
        if self.api.tls_cert_file.is_some() != self.api.tls_key_file.is_some() {
            let key = if self.api.tls_cert_file.is_some() { "api.tls_key_file" } else { "api.tls_cert_file" };
            return Err(bad(key, "tls_cert_file and tls_key_file go together"));
        }
        if self.api.tls_client_ca_file.is_some() && self.api.tls_cert_file.is_none() {
            return Err(bad(
                "api.tls_client_ca_file",
                "needs tls_cert_file and tls_key_file (client certificates are a TLS matter)",
            ));
        }
        if let Err(message) = self.api.basic_auth_users.validate() {
            return Err(bad("api.basic_auth_users", &message));
        }
        if !self.probe.pin_path.is_absolute() {
            return Err(bad("probe.pin_path", "must be an absolute path under a bpffs mount"));
        }
        Ok(())
    }
}

/// 1-based line where a dotted key (`probe.ring_buffer_bytes`) or table (`probe.client_key`)
/// is set in `text`, if it is set there.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[').filter(|h| !h.starts_with('[')) {
            table = h.split(']').next().unwrap_or("").split('.').map(str::trim).collect::<Vec<_>>().join(".");
            if table == key {
                return Some(n + 1);
            }
            continue;
        }
        let Some((lhs, _)) = l.split_once('=') else { continue };
        let lhs: Vec<&str> = lhs.split('.').map(|p| p.trim().trim_matches('"')).collect();
        let full: Vec<&str> = table.split('.').filter(|p| !p.is_empty()).chain(lhs.iter().copied()).collect();
        if full.len() >= parts.len() && full[..parts.len()] == parts[..] {
            return Some(n + 1);
        }
    }
    None
}

/// A validation error with the line of its key appended, when the key is in the text.
fn with_line(e: ConfigError, text: &str) -> ConfigError {
    match e {
        ConfigError::Value { path, key, message } => {
            let message = match key_line(text, key) {
                Some(n) => format!("{message} (line {n})"),
                None => message,
            };
            ConfigError::Value { path, key, message }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.agent.interval, Duration::from_secs(5));
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:9595");
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/wsguard"));
    }

    #[test]
    fn durations_and_keys() {
        let c = Config::parse("[agent]\ninterval = \"2s\"\n[probe]\nports = [8080]\n", Path::new("x")).unwrap();
        assert_eq!(c.agent.interval, Duration::from_secs(2));
        assert_eq!(c.probe.ports, vec![8080]);
    }

    #[test]
    fn client_key_and_limits() {
        let c = Config::parse(
            "[probe.client_key]\nheader = \"X-User-Id\"\nhash = true\n[limits]\nper_client_connections = 5\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.probe.client_key.source(), "header:X-User-Id");
        assert!(c.probe.client_key.hash);
        assert_eq!(c.limits.per_client_connections, 5);
        let e = Config::parse("[probe.client_key]\nheader = \"\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("probe.client_key"), "{e}");
    }

    #[test]
    fn api_tls_and_basic_auth_keys() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text =
            format!("[api]\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\n[api.basic_auth_users]\nprom = \"{hash}\"\n");
        let c = Config::parse(&text, Path::new("x")).unwrap();
        let tls = c.api.tls().unwrap();
        assert_eq!((tls.cert_file, tls.client_ca_file), (PathBuf::from("/c.pem"), None));
        assert_eq!(c.api.basic_auth_users.0.len(), 1);
        // Debug (what a log of the config would show) names users, not hashes.
        assert!(!format!("{:?}", c.api).contains(&hash));
        let e = Config::parse("[api]\ntls_cert_file = \"/c.pem\"\n", Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("api.tls_key_file"), "{e}");
        let e = Config::parse("[api]\ntls_client_ca_file = \"/ca.pem\"\n", Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("api.tls_client_ca_file"), "{e}");
        let e = Config::parse("[api.basic_auth_users]\nprom = \"hunter2\"\n", Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("api.basic_auth_users") && !e.contains("hunter2"), "{e}");
        assert!(Config::parse("", Path::new("x")).unwrap().api.tls().is_none());
    }

    #[test]
    fn api_socket_default_off_and_limits() {
        let c = Config::parse("[agent]\nstate_dir = \"/s\"\n", Path::new("x")).unwrap();
        assert_eq!(c.api_socket(), Some(PathBuf::from("/s/api.sock")));
        let c = Config::parse("[api]\nsocket = \"\"\n", Path::new("x")).unwrap();
        assert_eq!(c.api_socket(), None);
        let c = Config::parse(
            "[api]\nsocket = \"/run/wsguard/api.sock\"\nsocket_group = \"ops\"\nsocket_uids = [1000]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!((c.api_socket(), c.api.socket_uids), (Some(PathBuf::from("/run/wsguard/api.sock")), vec![1000]));
        let long = format!("[api]\nsocket = \"/{}\"\n", "a".repeat(120));
        assert!(Config::parse(&long, Path::new("x")).unwrap_err().to_string().contains("api.socket"));
        assert!(Config::parse("[api]\nsocket_group = \"\"\n", Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("api.socket_group"));
    }

    #[test]
    fn a_missing_file_says_why_once() {
        let e = anyhow::Error::from(Config::load(Some(Path::new("/nonexistent/w.toml"))).unwrap_err());
        let text = format!("{e:#}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = Config::parse("[agent]\n\ninterval = 5\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("w.toml") && e.contains("line 3") && e.contains("interval"), "{e}");
        let e = Config::parse("[agnt]\n", Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("agnt"), "{e}");
        let e = Config::parse("[probe]\nring_buffer_bytes = 5000\n", Path::new("w")).unwrap_err().to_string();
        assert!(e.contains("probe.ring_buffer_bytes"), "{e}");
        // The offending line is located, never quoted: it may hold a secret.
        let e = Config::parse("[agent]\nlog_level = \"S3CRET\" oops\n", Path::new("w")).unwrap_err().to_string();
        assert!(e.contains("line 2, column 22") && !e.contains("S3CRET"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_line() {
        let text = "[agent]\ninterval = \"1s\"\n\n[probe]\nports = []\nring_buffer_bytes = 5000\n";
        assert_eq!(key_line(text, "probe.ring_buffer_bytes"), Some(6));
        assert_eq!(key_line(text, "agent.interval"), Some(2));
        assert_eq!(key_line(text, "limits.idle_after"), None);
        assert_eq!(key_line("[probe.client_key]\nheader = \"\"\n", "probe.client_key"), Some(1));
        assert_eq!(key_line("probe.max_processes = 0\n", "probe.max_processes"), Some(1));
        let e = Config::parse(text, Path::new("w.toml")).unwrap_err().to_string();
        assert!(e.contains("probe.ring_buffer_bytes") && e.ends_with("(line 6)"), "{e}");
    }
}
