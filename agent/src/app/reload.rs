//! Config reload on SIGHUP: re-read and validate the file; on error keep the running config and
//! log the error (it names the key and line); otherwise apply what can change live and log
//! what needs a restart.
//!
//! Changes are found by flattening both configs to dotted keys (`limits.idle_after`) and
//! comparing values, so a new config section is covered without code here: its keys count as
//! "needs a restart" until they are listed in [`LIVE`] and applied in [`apply_reload`].

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;
use tracing::{error, info, warn};
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::{app::config::Config, predict::Predictor, track::Tracker};

/// Keys (or key prefixes ending in `.`) that take effect without a restart. Extend it together
/// with [`apply_reload`], e.g. `"alert."` once the alert engine takes new rules.
pub const LIVE: &[&str] = &[
    "agent.interval",
    "agent.log_level",
    "limits.",
    "probe.ports",
    "probe.processes",
    "probe.keep_on_stop",
    "predict.",
    "alert.",
];

fn is_live(key: &str) -> bool {
    LIVE.iter().any(|l| if l.ends_with('.') { key.starts_with(l) } else { key == *l })
}

/// Changing the log filter of the running subscriber.
pub struct Logs(reload::Handle<EnvFilter, Registry>);

impl Logs {
    /// Install the global subscriber with a reloadable filter (`RUST_LOG` wins over `level`).
    pub fn init(level: &str) -> Logs {
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        let (layer, handle) = reload::Layer::new(filter);
        tracing_subscriber::registry().with(layer).with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).init();
        Logs(handle)
    }

    fn set(&self, level: &str) -> Result<(), String> {
        if std::env::var_os("RUST_LOG").is_some() {
            return Err("RUST_LOG is set and wins over agent.log_level".into());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("agent.log_level: {e}"))?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// What the run loop lets a reload change.
pub struct Live<'a> {
    pub tracker: &'a mut Tracker,
    pub predictor: &'a mut Option<Predictor>,
    pub tick: &'a mut tokio::time::Interval,
    pub logs: &'a Logs,
    pub alerts: &'a crate::alert::service::AlertService,
}

/// Dotted key → value of every leaf of `cfg`.
fn flatten(cfg: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &serde_json::to_value(cfg).unwrap_or(Value::Null), &mut out);
    out
}

/// What a reload does: the config to run with (live keys from `new`, the rest kept from
/// `old`), the keys applied and the keys that wait for a restart.
#[derive(Debug)]
pub struct Plan {
    pub config: Config,
    pub applied: Vec<String>,
    pub restart: Vec<String>,
}

pub fn plan(old: &Config, new: &Config) -> Plan {
    let (a, b) = (flatten(old), flatten(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut merged = serde_json::to_value(old).unwrap_or(Value::Null);
    let (mut applied, mut restart) = (Vec::new(), Vec::new());
    for k in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
        let show = |v: Option<&Value>| v.map_or("unset".to_string(), Value::to_string);
        let line = format!("{k}: {} → {}", show(a.get(k)), show(b.get(k)));
        if is_live(k) {
            set(&mut merged, k, b.get(k).cloned().unwrap_or(Value::Null));
            applied.push(line);
        } else {
            restart.push(line);
        }
    }
    // Every value in `merged` came from one of two valid configs of the same shape.
    let config = serde_json::from_value(merged).unwrap_or_else(|_| new.clone());
    Plan { config, applied, restart }
}

fn set(root: &mut Value, dotted: &str, v: Value) {
    let mut cur = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur[p] = v;
            return;
        }
        cur = &mut cur[p];
    }
}

/// SIGHUP: reload `path` (None: the default path) into `current`.
pub fn on_sighup(path: Option<&Path>, current: &mut Config, live: Live) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("reload failed, keeping the running config: {e}");
            return;
        }
    };
    let plan = plan(current, &new);
    if plan.applied.is_empty() && plan.restart.is_empty() {
        info!("config reloaded: no change");
        return;
    }
    apply_reload(current, &plan.config, live);
    *current = plan.config;
    if !plan.applied.is_empty() {
        info!("config reloaded; applied: {}", plan.applied.join(", "));
    }
    if !plan.restart.is_empty() {
        warn!("config reloaded; these changes need a restart (`systemctl restart wsguard`): {}", plan.restart.join(", "));
    }
}

/// Apply a validated config whose restart-only keys equal `old`'s. Hook for new live settings:
/// add the keys to [`LIVE`] and hand `new` to the component here.
pub fn apply_reload(old: &Config, new: &Config, live: Live) {
    if old.agent.log_level != new.agent.log_level {
        if let Err(e) = live.logs.set(&new.agent.log_level) {
            warn!("log level not changed: {e}");
        }
    }
    if old.agent.interval != new.agent.interval {
        *live.tick = tokio::time::interval(new.agent.interval);
    }
    if json(&old.predict) != json(&new.predict) {
        *live.predictor = new.predict.enabled.then(|| Predictor::new(new.predict.clone()));
        if new.predict.enabled {
            info!("forecast settings changed: forecasts start over with fresh windows");
        }
    }
    live.tracker.reconfigure(&new.track());
    // Rules, escalation and flap settings; the quota rule follows `limits`. Alert state (firing,
    // acks, silences) is kept.
    if json(&old.alert) != json(&new.alert) || old.limits.per_client_connections != new.limits.per_client_connections {
        live.alerts.reconfigure(new.alert.clone(), new.limits.per_client_connections);
    }
}

fn json<T: serde::Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: &str) -> Config {
        Config::parse(t, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn live_keys_apply_restart_keys_wait() {
        let old = cfg("[limits]\nper_client_connections = 20\n");
        let new = cfg("[limits]\nper_client_connections = 5\n[agent]\ninterval = \"1s\"\n[api]\nlisten = \"127.0.0.1:9999\"\n\
             [probe]\nmax_connections = 10\nports = [8080]\n");
        let p = plan(&old, &new);
        assert_eq!(p.config.limits.per_client_connections, 5);
        assert_eq!(p.config.agent.interval, std::time::Duration::from_secs(1));
        assert_eq!(p.config.probe.ports, vec![8080]);
        // Kept until a restart.
        assert_eq!(p.config.api.listen.to_string(), "127.0.0.1:9595");
        assert_eq!(p.config.probe.max_connections, 65536);
        assert_eq!(p.applied.len(), 3, "{:?}", p.applied);
        assert!(p.applied.contains(&"limits.per_client_connections: 20 → 5".to_string()), "{:?}", p.applied);
        assert_eq!(p.restart, ["api.listen: \"127.0.0.1:9595\" → \"127.0.0.1:9999\"", "probe.max_connections: 65536 → 10"]);
    }

    #[test]
    fn alert_settings_are_live() {
        let p = plan(&cfg(""), &cfg("[alert]\nresolved_retention = \"2h\"\n"));
        assert_eq!(p.applied, ["alert.resolved_retention: \"1h\" → \"2h\""]);
        assert!(p.restart.is_empty());
        assert_eq!(p.config.alert.resolved_retention, std::time::Duration::from_secs(7200));
    }

    #[test]
    fn optional_keys_set_and_unset() {
        let old = cfg("");
        let new = cfg("[predict]\nmax_connections_per_process = 100\n");
        let p = plan(&old, &new);
        assert_eq!(p.config.predict.max_connections_per_process, Some(100));
        assert_eq!(p.applied, ["predict.max_connections_per_process: null → 100"]);
        let back = plan(&new, &old);
        assert_eq!(back.config.predict.max_connections_per_process, None);
        assert!(plan(&old, &old).applied.is_empty());
    }
}
