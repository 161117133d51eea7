//! wsguard: a host agent that watches unmodified WebSocket servers with eBPF. This file is the
//! command line; the modules are in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsguard::{
    cli::{Cli, Command, ConfigCommand, HistoryCommand},
    client,
    config::Config,
    alert, doctor, predict, probe, remediate, run,
};

fn init_logs(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, fresh } => match Config::load(config.as_deref()) {
            Ok(cfg) => {
                init_logs(&cfg.agent.log_level);
                run::run(cfg, fresh).await
            }
            Err(e) => Err(e.into()),
        },
        Command::Snapshot { json, api } => client::snapshot(&api, json).await,
        Command::Status { json, api } => match client::status(&api, json).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Report { hours, format, state_dir, api } => {
            client::report(&api, state_dir.as_deref(), hours, format).await
        }
        Command::Doctor { json } => match doctor::run(json) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Detach { config } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                probe::remove(&cfg.probe.pin_path)?;
                println!("removed {}", cfg.probe.pin_path.display());
                Ok(())
            }),
        Command::Replay { file, speed, json, config } => predict::replay::run(&file, config.as_deref(), speed, json),
        Command::Alerts { command, api } => alert::cli::run(command, api).await,
        Command::Remediation { command, at } => remediate::cli::run(command, at).await,
        Command::History { command: HistoryCommand::Export { since, state_dir, api } } => {
            predict::replay::history_export(&api, state_dir.as_deref(), &since).await
        }
        Command::Config { command: ConfigCommand::Check { config } } => {
            Config::load(config.as_deref()).map(|_| println!("config OK")).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
