//! wsguard: a host agent that watches unmodified WebSocket servers with eBPF. This file is the
//! command line; the modules are in the library (`src/lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use wsguard::{
    app::config::{Config, LogFormat},
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
    if !matches!(cli.command, Command::Run { .. }) {
        // A read command whose reader went away (`wsguard report | head -2`) ends quietly, as
        // Unix tools do, instead of panicking on EPIPE. The agent keeps Rust's default (ignored,
        // so a closed socket is an error it handles), and TCP writes never raise SIGPIPE.
        // SAFETY: called before any thread of ours writes; restores the default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run { config, fresh, keep_probe } => match Config::load(config.as_deref()) {
            Ok(cfg) => match LogFormat::from_env_or(cfg.agent.log_format) {
                Ok(format) => {
                    let logs = reload::Logs::init(&cfg.agent.log_level, format);
                    run::run(cfg, config.as_deref(), run::Start { fresh, keep_probe }, logs).await
                }
                Err(e) => Err(anyhow::anyhow!(e)),
            },
            Err(e) => Err(e.into()),
        },
        Command::Snapshot { json, api, config } => {
            match client::api_url(api.as_deref(), || wsguard::cli::listen_of(config.as_deref())) {
                Ok(api) => client::snapshot(&api, json).await,
                Err(e) => Err(e),
            }
        }
        Command::Status { json, api, config } => {
            match client::api_url(api.as_deref(), || wsguard::cli::listen_of(config.as_deref())) {
                Ok(api) => match client::status(&api, json).await {
                    Ok(true) => Ok(()),
                    Ok(false) => return ExitCode::from(1),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Command::Top { api, interval, view, once, width, height, pid, token_file, config } => {
            match (
                client::api_url(api.as_deref(), || wsguard::cli::listen_of(config.as_deref())),
                client::optional_token(token_file.as_deref(), || Config::load(config.as_deref()).ok().map(|c| c.token_file())),
            ) {
                (Ok(api), Ok(token)) => top::run(top::Options { api, interval, view, once, width, height, pid, token }).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Command::Report { hours, format, json, state_dir, api, config } => {
            let format = if json { history::Format::Json } else { format };
            match client::api_url(api.as_deref(), || wsguard::cli::listen_of(config.as_deref())) {
                Ok(api) => client::report(&api, state_dir.as_deref(), hours, format).await,
                Err(e) => Err(e),
            }
        }
        Command::Doctor { json } => match doctor::run(json) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Detach { config, pin, yes } => detach::run(config.as_deref(), pin.as_deref(), yes),
        Command::Replay { file, speed, json, config } => match config.as_deref().map(|c| Config::load(Some(c))).transpose() {
            Ok(cfg) => {
                let (predict, alert) = cfg.map(|c| (c.predict, c.alert)).unwrap_or_default();
                replay::run(&file, predict, &alert, speed, json)
            }
            Err(e) => Err(e.into()),
        },
        Command::Alerts { command, api } => alerts::run(command, api).await,
        Command::Remediation { command, at } => remediation::run(command, at).await,
        Command::History { command: HistoryCommand::Export { since, state_dir, api, config } } => {
            match client::api_url(api.as_deref(), || wsguard::cli::listen_of(config.as_deref())) {
                Ok(api) => replay::history_export(&api, state_dir.as_deref(), &since).await,
                Err(e) => Err(e),
            }
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
            if e.downcast_ref::<run::Refused>().is_some() {
                ExitCode::from(run::EXIT_REFUSED)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
