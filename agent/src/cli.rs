//! Command line (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client::DEFAULT_API;

#[derive(Parser)]
#[command(name = "wsguard", version, about = "Watches unmodified WebSocket servers with eBPF")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent: attach the probe, serve the API, snapshot every interval (root).
    Run {
        /// Config file (default /etc/wsguard/wsguard.toml; built-in defaults if it is missing).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Discard the pinned probe and its counts, and attach a new one.
        #[arg(long)]
        fresh: bool,
    },
    /// Print the running agent's latest snapshot.
    Snapshot {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_API, env = "WSGUARD_API")]
        api: String,
    },
    /// One-screen summary of the running agent: health, totals, busiest processes.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_API, env = "WSGUARD_API")]
        api: String,
    },
    /// Summarise a period of history: peaks, totals, worst processes.
    Report {
        /// Hours back from now.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        #[arg(long, value_enum, default_value = "text")]
        format: crate::history::Format,
        /// Read the agent's history store in this state dir directly (works while the agent is
        /// down) instead of asking its API.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_API, env = "WSGUARD_API")]
        api: String,
    },
    /// Check that this host can run the probe, and say how to fix what is missing.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Detach the probe and remove its pinned state (counts are lost).
    Detach {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run recorded snapshots (JSON lines, as `history export` writes) through the forecasts and
    /// alert rules; print what would have fired and when, and the forecast scores.
    Replay {
        /// JSON lines file, one snapshot per line ("-": stdin).
        file: PathBuf,
        /// N times real time (sleeps between snapshots); default: as fast as possible.
        #[arg(long)]
        speed: Option<f64>,
        #[arg(long)]
        json: bool,
        /// Take `[predict]` from this config file (default: built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Alerts of the running agent: list, show, ack, silence, fire… (changes need the API token).
    Alerts {
        #[command(subcommand)]
        command: crate::alert::cli::AlertsCommand,
        #[command(flatten)]
        api: crate::alert::cli::ApiArgs,
    },
    /// History commands.
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Remediation: audit log, approvals, kill switch.
    Remediation {
        #[command(subcommand)]
        command: crate::remediate::cli::RemediationCommand,
        #[command(flatten)]
        at: crate::remediate::cli::Where,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; errors name the key and line.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// Write snapshots as JSON lines (one per line, oldest first), the input of `replay`.
    Export {
        /// How far back: a duration (`2h`, `30m`) or an RFC 3339 time.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Read the history store in this state dir directly (works while the agent is down).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_API, env = "WSGUARD_API")]
        api: String,
    },
}
