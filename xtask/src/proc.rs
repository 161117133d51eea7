//! A child process of xtask (echo server, agent, load generator, nginx, bpftrace) in its own
//! process group, so Ctrl-C reaches only xtask, which then stops the children in order.

use crate::{sys, util};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child in its own process group, stopped with SIGTERM then SIGKILL; killed on drop.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc> {
        println!("    $ {}", util::display(cmd));
        let child = cmd.process_group(0).spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the child has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    pub fn stop(&mut self, grace: Duration) {
        if self.exited() {
            return;
        }
        sys::terminate(self.child.id() as i32);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited() {
                println!("    stopped {}", self.name);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("    {} did not stop within {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for a stdout line starting with `prefix`; returns the rest of it.
    pub fn wait_line(&mut self, prefix: &'static str, timeout: Duration) -> Result<String> {
        let stdout = self.child.stdout.take().context("stdout not piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.starts_with(prefix) {
                    let _ = tx.send(line[prefix.len()..].trim().to_string());
                    sent = true;
                }
            }
        });
        rx.recv_timeout(timeout).map_err(|_| anyhow::anyhow!("{} did not print `{prefix}` within {timeout:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
