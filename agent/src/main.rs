//! wsguard: a host agent that watches unmodified WebSocket servers with eBPF. This file is the
//! command line; the modules are in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use wsguard::{
    app::config::Config,
    app::reload,
    app::run,
    cli::alerts,
    cli::client,
    cli::completions,
    cli::config_cmd,
    cli::detach,
    cli::doctor,
    cli::remediation,
    cli::replay,
    cli::{Cli, Command, ConfigCommand, HistoryCommand},
    history, top,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, fresh, keep_probe } => match Config::load(config.as_deref()) {
            Ok(cfg) => {
                let logs = reload::Logs::init(&cfg.agent.log_level);
                run::run(cfg, config.as_deref(), run::Start { fresh, keep_probe }, logs).await
            }
            Err(e) => Err(e.into()),
        },
        Command::Snapshot { json, api } => client::snapshot(&api, json).await,
        Command::Status { json, api } => match client::status(&api, json).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Top { api, interval, view, once, width, height, pid, token_file, config } => {
            match client::optional_token(token_file.as_deref(), config.as_deref()) {
                Ok(token) => top::run(top::Options { api, interval, view, once, width, height, pid, token }).await,
                Err(e) => Err(e),
            }
        }
        Command::Report { hours, format, json, state_dir, api } => {
            let format = if json { history::Format::Json } else { format };
            client::report(&api, state_dir.as_deref(), hours, format).await
        }
        Command::Doctor { json } => match doctor::run(json) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Detach { config, pin, yes } => detach::run(config.as_deref(), pin.as_deref(), yes),
        Command::Replay { file, speed, json, config } => replay::run(&file, config.as_deref(), speed, json),
        Command::Alerts { command, api } => alerts::run(command, api).await,
        Command::Remediation { command, at } => remediation::run(command, at).await,
        Command::History { command: HistoryCommand::Export { since, state_dir, api } } => {
            replay::history_export(&api, state_dir.as_deref(), &since).await
        }
        Command::Config { command: ConfigCommand::Check { config, json, strict } } => {
            match config_cmd::check(config.as_deref(), json, strict) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Command::Config { command: ConfigCommand::Show { config, effective, json } } => {
            config_cmd::show(config.as_deref(), effective, json)
        }
        Command::Completions { shell } => {
            completions::print(shell);
            Ok(())
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
