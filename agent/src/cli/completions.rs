//! `wsguard completions SHELL`: completion scripts generated from the clap definition, so they
//! never drift from the real commands and flags (clap_complete).

use clap::CommandFactory;

pub fn print(shell: clap_complete::Shell) {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "wsguard", &mut std::io::stdout());
}
