//! Alerting core (`docs/alerts.md`): rules over snapshot values → pending / firing / resolved
//! alerts with Alertmanager's identity (labels only, FNV-1a fingerprint), hysteresis, flap
//! holding, keep_firing_for, inhibition of a gone process's alerts, acknowledgement, silences,
//! escalation through routing tiers and manual alerts.
//!
//! Pure and clock-free: [`Engine::evaluate`] takes the time. `service.rs` wraps the engine for
//! the agent (persistence in `store.rs`); notifications and remediation are its sinks.

pub mod engine;
pub mod replay;
pub mod rule;
pub mod select;
pub mod service;
pub mod silence;
pub mod state;
pub mod store;
pub mod template;

#[cfg(test)]
mod forecast_tests;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

pub use engine::Engine;
pub use rule::{Profile, Rule};
pub use state::{fingerprint, Alert, Status, Transition, TransitionKind};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// `[alert]` in the agent config (not read by the agent yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Which numbers the default rules use.
    pub profile: Profile,
    /// Include the default rules (a configured rule with the same name replaces the default).
    pub default_rules: bool,
    pub rules: Vec<Rule>,
    pub escalation: EscalationConfig,
    pub flap: FlapConfig,
    /// Resolved alerts stay listed (and remembered for flap detection) this long.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            default_rules: true,
            rules: Vec::new(),
            escalation: EscalationConfig::default(),
            flap: FlapConfig::default(),
            resolved_retention: Duration::from_secs(3600),
        }
    }
}

/// A firing alert nobody acknowledged for `escalate_after` moves to the next tier (and a
/// warning becomes critical on the first step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    pub tiers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            tiers: vec!["operations".into(), "engineering".into(), "management".into()],
            escalate_after: Duration::from_secs(15 * 60),
        }
    }
}

/// An alert that started firing more than `threshold` times within `window` is flapping: it is
/// held firing until its condition has been clear for `hold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlapConfig {
    pub threshold: usize,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for FlapConfig {
    fn default() -> Self {
        Self { threshold: 3, window: Duration::from_secs(30 * 60), hold: Duration::from_secs(10 * 60) }
    }
}

impl AlertConfig {
    /// The rules in effect: defaults (unless disabled) with configured rules replacing or
    /// adding to them.
    pub fn effective_rules(&self, per_client_connections: u64) -> Vec<Rule> {
        let mut rules = if self.default_rules { rule::defaults(self.profile, per_client_connections) } else { Vec::new() };
        for r in &self.rules {
            match rules.iter_mut().find(|d| d.name == r.name) {
                Some(d) => *d = r.clone(),
                None => rules.push(r.clone()),
            }
        }
        rules
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for r in &self.rules {
            r.validate().map_err(|e| ("alert.rules", e))?;
        }
        if self.escalation.escalate_after.is_zero() {
            return Err(("alert.escalation.escalate_after", "must be positive".into()));
        }
        Ok(())
    }
}
