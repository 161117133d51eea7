//! package-check's upgrade and removal leg: the `.deb`'s maintainer scripts run by dpkg against
//! a running agent, in a chroot of the clean Debian 12 root that shares the host's PID namespace.
//!
//! Why a chroot and a stand-in `systemctl`: the agent must run in the host's PID namespace (the
//! probe reports host pids; `wsguard run` refuses any other), and `systemd-nspawn` always makes
//! its own, so the unit cannot run under a real systemd on this machine (whose PID 1 is not
//! systemd either). The stand-in does for `wsguard.service` what systemd would with the
//! maintainer scripts' calls (`start` runs the unit's ExecStartPre and ExecStart, `kill
//! --signal=`, `stop` = SIGTERM and wait, `is-active`), so prerm/postinst run unchanged:
//! install v1, start, load a host server; `dpkg -i` of v2 (the next patch version) in the middle
//! of that load: prerm stops the agent with SIGUSR2 (probe kept), postinst starts the new one,
//! which resumes it, and the counts over the whole load are exact; `dpkg -r` stops the agent,
//! which detaches; `dpkg --purge` removes the state.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    package_check::{count_host_server, snapshot, test_config, wait_for},
    util::{self, step},
};

const PORT: u16 = 19583;

/// `systemctl` for the chroot: only what the maintainer scripts call, for `wsguard.service`.
const SYSTEMCTL_STANDIN: &str = r#"#!/bin/sh
# package-check's stand-in for systemctl (xtask/src/package_upgrade.rs): wsguard.service only.
unit=/usr/lib/systemd/system/wsguard.service
pidf=/run/wsguard.standin.pid
log=/var/log/wsguard.standin.log
running() {
    p=$(cat $pidf 2>/dev/null) && [ -n "$p" ] && [ -d /proc/$p ] && ! grep -q ') Z ' /proc/$p/stat
}
echo "systemctl $*" >>$log
cmd=$1; shift
case "$cmd" in
daemon-reload|enable|disable) exit 0 ;;
is-active) running ;;
start)
    running && exit 0
    pre=$(sed -n 's/^ExecStartPre=//p' $unit); start=$(sed -n 's/^ExecStart=//p' $unit)
    $pre >>$log 2>&1 || exit 1
    setsid $start >>$log 2>&1 </dev/null &
    echo $! >$pidf ;;
stop)
    running || exit 0
    kill -TERM "$(cat $pidf)"
    i=0; while running && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
    ! running ;;
kill)
    sig=TERM
    for a; do case "$a" in --signal=*) sig=${a#--signal=}; sig=${sig#SIG} ;; esac; done
    running && kill -s "$sig" "$(cat $pidf)" ;;
*) echo "systemctl stand-in: '$cmd' not supported" >&2; exit 1 ;;
esac
"#;

/// Mounts into the chroot, undone (lazily, innermost first) when dropped.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn add(&mut self, args: &[&str], target: PathBuf) -> Result<()> {
        fs::create_dir_all(&target)?;
        util::run(util::cmd("mount", args).arg(&target))?;
        self.0.push(target);
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for t in self.0.iter().rev() {
            let _ = util::cmd("umount", ["-R", "-l"]).arg(t).status();
        }
    }
}

/// Mount points at or under `dir` (from /proc/self/mountinfo).
fn mounted_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == d || m.starts_with(&format!("{d}/")))
        .map(str::to_owned)
        .collect()
}

/// Remove a copy of the root, never through a mount (a chroot's /sys holds everyone's pins).
pub(crate) fn remove_root(root: &Path) -> Result<()> {
    if !mounted_under(root).is_empty() {
        let _ = util::cmd("umount", ["-R", "-l"]).args(mounted_under(root)).status();
    }
    let left = mounted_under(root);
    if !left.is_empty() {
        bail!("still mounted under {}: {left:?}; not removing it", root.display());
    }
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    Ok(())
}

fn chroot(root: &Path, args: &[&str]) -> Result<String> {
    let out = util::cmd("chroot", [root.to_str().context("root path")?])
        .args(args)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("chroot {args:?}: {text}");
    }
    Ok(text)
}

/// The upgrade and removal leg (see the module doc). `base` is the clean root, `v1` the package
/// of `bin` with the workspace's version; v2 is built here.
pub fn check(base: &Path, bin: &Path, v1: &Path, work: &Path) -> Result<()> {
    step("dpkg upgrade and removal against a running agent (chroot in the host's PID namespace)");
    let out = work.join("debs");
    let next = crate::deb::next_patch_version();
    let v2 = crate::deb::build_version(bin, &out, &next)?;
    let root = work.join("root-upgrade");
    remove_root(&root)?;
    util::run(util::cmd("cp", ["-a"]).arg(base).arg(&root))?;
    let pin = format!("/sys/fs/bpf/wsguard-pkgcheck-upgrade-{}", std::process::id());
    let mut mounts = Mounts(Vec::new());
    let result = (|| -> Result<()> {
        // The host's /proc (a new procfs of the host's PID namespace), /sys (bpffs, tracefs, BTF).
        mounts.add(&["-t", "proc", "proc"], root.join("proc"))?;
        mounts.add(&["--rbind", "/sys"], root.join("sys"))?;
        util::run(util::cmd("mount", ["--make-rslave"]).arg(root.join("sys")))?;
        fs::create_dir_all(root.join("run/systemd/system"))?;
        let standin = root.join("usr/local/sbin/systemctl");
        fs::write(&standin, SYSTEMCTL_STANDIN)?;
        fs::set_permissions(&standin, fs::Permissions::from_mode(0o755))?;

        fs::copy(v1, root.join("tmp/v1.deb"))?;
        fs::copy(&v2, root.join("tmp/v2.deb"))?;
        chroot(&root, &["dpkg", "-i", "/tmp/v1.deb"])?;
        let cfg = root.join("etc/wsguard/wsguard.toml");
        let test = test_config(
            &fs::read_to_string(&cfg)?,
            PORT,
            ("pin_path = \"/sys/fs/bpf/wsguard\"", &format!("pin_path = \"{pin}\"")),
        )?;
        fs::write(&cfg, test)?;
        chroot(&root, &["systemctl", "start", "wsguard"])?;
        wait_for("v1's agent serves a snapshot with the probe attached", Duration::from_secs(60), || {
            snapshot(PORT).is_some_and(|s| s["probe"]["attached"] == true && s["probe"]["resumed"] == false)
        })?;
        let old_pid = fs::read_to_string(root.join("run/wsguard.standin.pid"))?;

        // The upgrade, 4 s into 14 s of load on a host server: the counts over all of it must be
        // exact, so the kept probe counted while no agent ran and the new agent resumed it.
        count_host_server(PORT, 14, || {
            std::thread::sleep(Duration::from_secs(4));
            let out = chroot(&root, &["dpkg", "--force-confold", "-i", "/tmp/v2.deb"])?;
            println!(
                "    dpkg -i v2 during the load: {}",
                out.lines().filter(|l| l.contains("wsguard")).collect::<Vec<_>>().join(" / ")
            );
            wait_for("the new agent resumed the kept probe", Duration::from_secs(30), || {
                snapshot(PORT).is_some_and(|s| s["probe"]["attached"] == true && s["probe"]["resumed"] == true)
            })
        })?;
        let new_pid = fs::read_to_string(root.join("run/wsguard.standin.pid"))?;
        let version = chroot(&root, &["dpkg-query", "-W", "-f", "${Version}", "wsguard"])?;
        if version.trim() != next || new_pid == old_pid {
            bail!("after the upgrade: version {version:?} (want {next}), agent pid {old_pid:?} -> {new_pid:?}");
        }
        let log = fs::read_to_string(root.join("var/log/wsguard.standin.log"))?;
        if !log.contains("systemctl kill --kill-who=main --signal=SIGUSR2 wsguard") || !log.contains("(SIGUSR2)") {
            bail!("prerm upgrade did not stop the agent with SIGUSR2, keeping the probe:\n{log}");
        }
        println!("    ok: prerm stopped v1's agent with SIGUSR2 (\"the probe stays attached\"), postinst started v2's");

        chroot(&root, &["dpkg", "-r", "wsguard"])?;
        if Path::new(&pin).exists() {
            bail!("dpkg -r left {pin} pinned");
        }
        let log = fs::read_to_string(root.join("var/log/wsguard.standin.log"))?;
        let detached = log.lines().rev().find(|l| l.contains("stopping;")).unwrap_or_default();
        if !detached.contains("probe detached") {
            bail!("dpkg -r: the agent's last stop did not detach: {detached:?}");
        }
        if !root.join("etc/wsguard/wsguard.toml").exists() || !root.join("var/lib/wsguard").is_dir() {
            bail!("dpkg -r removed the config or the state (purge should)");
        }
        println!("    ok: dpkg -r stopped the agent, which detached the probe ({pin} gone); config and state kept");
        chroot(&root, &["dpkg", "--purge", "wsguard"])?;
        if root.join("etc/wsguard").exists() || root.join("var/lib/wsguard").exists() {
            bail!("dpkg --purge left /etc/wsguard or /var/lib/wsguard");
        }
        println!("    ok: dpkg --purge removed /etc/wsguard and /var/lib/wsguard");
        Ok(())
    })();
    // Whatever happened: no agent left running, nothing pinned, no mounts, no copy.
    if let Ok(pid) = fs::read_to_string(root.join("run/wsguard.standin.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            if Path::new(&format!("/proc/{pid}")).exists() {
                crate::sys::terminate(pid);
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }
    if Path::new(&pin).exists() {
        let _ = fs::remove_dir_all(&pin);
    }
    drop(mounts);
    if result.is_ok() {
        remove_root(&root)?;
        let _ = fs::remove_dir_all(&out);
    } else {
        println!("    kept for a look: {} (var/log/wsguard.standin.log)", root.display());
    }
    result
}
