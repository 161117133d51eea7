//! `wsguard detach`: remove a pinned probe by hand. It must never surprise: it names the probe
//! it targets, asks before taking the default installation's (or needs `--yes` in a script),
//! refuses while an agent is using the probe (the agent would serve frozen numbers), and says
//! "nothing attached" when there is nothing to remove.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::{app::config::Config, probe::detach};

/// Run the command; `Ok(())` also when nothing was attached (detach is idempotent).
pub fn run(config: Option<&Path>, pin: Option<&Path>, yes: bool) -> anyhow::Result<()> {
    let (pin, explicit): (PathBuf, bool) = match (config, pin) {
        (_, Some(p)) => (p.to_path_buf(), true),
        (Some(c), None) => (Config::load(Some(c))?.probe.pin_path, true),
        (None, None) => (Config::load(None)?.probe.pin_path, false),
    };
    if !explicit && !yes && !confirm(&pin)? {
        bail!("not detached; say which probe with -c FILE or --pin DIR, or pass --yes");
    }
    if !pin.exists() {
        println!("nothing attached at {}", pin.display());
        return Ok(());
    }
    let holders = detach::holders(&pin);
    if !holders.is_empty() {
        let who: Vec<String> = holders.iter().map(|h| format!("pid {} ({})", h.pid, h.comm)).collect();
        bail!(
            "the probe at {} is in use by {}: detaching it would leave that agent serving frozen \
             counts. Stop the agent instead (`systemctl stop wsguard`: a clean stop detaches)",
            pin.display(),
            who.join(", ")
        );
    }
    let done = detach::detach(&pin).with_context(|| format!("detaching {}", pin.display()))?;
    if done.nothing() {
        println!("nothing attached at {} (removed the empty directory)", pin.display());
    } else {
        println!("detached the probe at {}: {done}", pin.display());
    }
    Ok(())
}

/// Ask on a terminal; refuse (false) when stdin is not one, so a script never detaches the
/// production probe by omission.
fn confirm(pin: &Path) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprintln!("wsguard detach without -c/--pin targets the default installation's probe at {}", pin.display());
        return Ok(false);
    }
    eprint!("Detach the probe at {} (default config; its counts are lost)? [y/N] ", pin.display());
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
