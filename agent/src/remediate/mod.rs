//! Remediation hooks with guardrails (`docs/remediation.md`): firing alerts trigger configured
//! actions (close connections through the kernel, run a command, call a URL, signal or restart
//! the process's service, raise its fd limit) within cooldowns, hourly caps, one run at a time
//! per process, a circuit breaker, optional approval and a persisted kill switch. Everything
//! that is done, would be done (dry run) or is refused is appended to an audit log.
//!
//! ```ignore
//! let mut rem = Remediator::open(cfg.remediation.clone(), &cfg.agent.state_dir)?;
//! // after each alert evaluation:
//! rem.handle(&events, &firing, &snapshot, &connections, SystemTime::now());
//! ```

pub mod actions;
pub mod audit;
pub mod config;
pub mod guard;
pub mod judge;
pub mod runner;
pub mod select;
pub mod shared;
pub mod sockdiag;
pub mod target;

#[cfg(test)]
mod tests;

pub use config::RemediationConfig;
pub use runner::Remediator;
pub use shared::Shared;
