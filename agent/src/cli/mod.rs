//! Command line (clap derive).

pub mod alerts;
pub mod client;
pub mod completions;
pub mod config_cmd;
pub mod detach;
#[cfg(test)]
mod docs_truth;
pub mod doctor;
pub mod remediation;
pub mod replay;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `[api] listen` of the `-c FILE` a client command names (None without one). Client commands
/// load their config here, at the command line, and hand `client.rs` what it needs.
pub fn listen_of(config: Option<&std::path::Path>) -> anyhow::Result<Option<std::net::SocketAddr>> {
    Ok(config.map(|p| crate::app::config::Config::load(Some(p))).transpose()?.map(|c| c.api.listen))
}

/// The API token file of `-c FILE` (of the default config without one).
pub fn token_file_of(config: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    Ok(crate::app::config::Config::load(config)?.token_file())
}

#[derive(Parser)]
#[command(
    name = "wsguard",
    version,
    about = "Watches unmodified WebSocket servers with eBPF",
    after_help = "Exit status: 0 ok; 1 a check failed (status UNHEALTHY, doctor, config check); 2 error \
                  (bad usage, agent unreachable, unreadable file). Read commands take --json."
)]
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
        /// On a clean stop, leave the probe attached and counting so the next start resumes
        /// it (as `[probe] keep_on_stop = true`; by default a stop detaches it).
        #[arg(long)]
        keep_probe: bool,
    },
    /// Print the running agent's latest snapshot.
    Snapshot {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The agent's API: [http://]HOST:PORT, or unix:PATH for its `[api] socket` (default:
        /// `[api] listen` of `-c FILE`, else http://127.0.0.1:9595).
        #[arg(long, env = "WSGUARD_API")]
        api: Option<String>,
        /// Config whose `[api] listen` is the agent's address when --api is not given.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// One-screen summary of the running agent: health, totals, busiest processes.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The agent's API: [http://]HOST:PORT, or unix:PATH for its `[api] socket` (default:
        /// `[api] listen` of `-c FILE`, else http://127.0.0.1:9595).
        #[arg(long, env = "WSGUARD_API")]
        api: Option<String>,
        /// Config whose `[api] listen` is the agent's address when --api is not given.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Live terminal dashboard of the running agent: summary, processes, connections, alerts,
    /// predictions (q quits, ? lists the keys).
    Top {
        /// The agent's API: [http://]HOST:PORT, or unix:PATH for its `[api] socket` (default:
        /// `[api] listen` of `-c FILE`, else http://127.0.0.1:9595).
        #[arg(long, env = "WSGUARD_API")]
        api: Option<String>,
        /// Refresh interval.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// View to start in.
        #[arg(long, value_enum, default_value = "summary")]
        view: crate::top::app::View,
        /// Print one frame as text and exit (scripts, bug reports); exit status 2 if the agent
        /// is unreachable.
        #[arg(long)]
        once: bool,
        /// Frame width for --once.
        #[arg(long, default_value_t = 120)]
        width: u16,
        /// Frame height for --once.
        #[arg(long, default_value_t = 40)]
        height: u16,
        /// Process whose connections the Connections view opens (default: the busiest).
        #[arg(long)]
        pid: Option<u32>,
        /// API token file, to acknowledge alerts (default: the one the config names, when
        /// readable; without a token the dashboard is read-only).
        #[arg(long, env = "WSGUARD_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Config whose `[api] listen` is the agent's address (when --api is not given) and
        /// whose `[api] token_file` / `state_dir` locate the token (default /etc/wsguard/wsguard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Summarise a period of history: peaks, totals, worst processes.
    Report {
        /// Hours back from now.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: crate::history::Format,
        /// Same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Read the agent's history store in this state dir directly (works while the agent is
        /// down) instead of asking its API.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The agent's API: [http://]HOST:PORT, or unix:PATH for its `[api] socket` (default:
        /// `[api] listen` of `-c FILE`, else http://127.0.0.1:9595).
        #[arg(long, env = "WSGUARD_API")]
        api: Option<String>,
        /// Config whose `[api] listen` is the agent's address when --api is not given.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check that this host can run the probe, and say how to fix what is missing.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Detach the probe and remove its pinned state (counts are lost). Refused while an agent
    /// uses it (stop the agent: a clean stop detaches).
    Detach {
        /// Detach the probe at this config's `[probe] pin_path`.
        #[arg(long, short, conflicts_with = "pin")]
        config: Option<PathBuf>,
        /// Detach the probe pinned in this bpffs directory.
        #[arg(long)]
        pin: Option<PathBuf>,
        /// Without -c or --pin: detach the default installation's probe
        /// (/etc/wsguard/wsguard.toml) without asking.
        #[arg(long, short)]
        yes: bool,
    },
    /// Run recorded snapshots (JSON lines, as `history export` writes) through the forecasts and
    /// alert rules; print what would have fired and when, and the forecast scores.
    Replay {
        /// JSON lines file, one snapshot per line ("-": stdin).
        file: PathBuf,
        /// N times real time (sleeps between snapshots); default: as fast as possible.
        #[arg(long)]
        speed: Option<f64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Take `[predict]` from this config file (default: built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Alerts of the running agent: list, show, ack, silence, fire… (changes need the API token).
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
        #[command(flatten)]
        api: alerts::ApiArgs,
    },
    /// History commands.
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Remediation: audit log, approvals, kill switch.
    Remediation {
        #[command(subcommand)]
        command: remediation::RemediationCommand,
        #[command(flatten)]
        at: remediation::Where,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script, e.g. `wsguard completions bash > /etc/bash_completion.d/wsguard`.
    Completions {
        /// Shell to print the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (errors name the key and line) and warn about settings that are
    /// risky in production. Exit 1 when invalid (or, with --strict, when warned).
    Check {
        /// Config file to check (default /etc/wsguard/wsguard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Warnings fail the check too.
        #[arg(long)]
        strict: bool,
    },
    /// Print the config file as TOML, or with --effective every setting the agent would use
    /// (file merged with defaults). Inline secrets are redacted.
    Show {
        /// Config file to show (default /etc/wsguard/wsguard.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Every setting in effect (the file merged with defaults), not only the file.
        #[arg(long)]
        effective: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
        /// The agent's API: [http://]HOST:PORT, or unix:PATH for its `[api] socket` (default:
        /// `[api] listen` of `-c FILE`, else http://127.0.0.1:9595).
        #[arg(long, env = "WSGUARD_API")]
        api: Option<String>,
        /// Config whose `[api] listen` is the agent's address when --api is not given.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "wsguard", &mut missing);
        assert!(missing.is_empty(), "flags without help text: {missing:#?}");
    }
}
