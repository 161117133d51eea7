//! The process an action may touch: named by the alert's `pid` label, listed (alive, same
//! `comm`) in the snapshot the alert came from, and still the same process when the action runs
//! (pid and start time, so a reused pid is never hit).

use std::{io, os::fd::OwnedFd};

use serde::Serialize;

use crate::{alert::Alert, model::snapshot::Snapshot, util::procinfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the alert names no process (no pid label)")]
    NoPid,
    #[error("pid label {0:?} is not a number")]
    BadPid(String),
    #[error("process {0} is not a live process of the snapshot with comm {1:?}")]
    NotInSnapshot(u32, String),
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("pid {0} is now another process (comm or start time changed)")]
    Replaced(u32),
}

/// RFC 3339 (seconds) of a start time in ticks, as the snapshot's `resources.start_time` shows it.
fn start_rfc3339(ticks: u64) -> Option<String> {
    let tps = procfs::ticks_per_second().max(1);
    let boot = procfs::boot_time_secs().ok()?;
    let since_boot = std::time::Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / tps);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(boot) + since_boot;
    Some(crate::util::time::rfc3339(t))
}

impl Target {
    /// The process an alert names, checked against the snapshot and /proc.
    pub fn from_alert(alert: &Alert, snap: &Snapshot) -> Result<Target, TargetError> {
        let pid_s = alert.labels.get("pid").ok_or(TargetError::NoPid)?;
        let pid: u32 = pid_s.parse().map_err(|_| TargetError::BadPid(pid_s.clone()))?;
        let comm = alert.labels.get("comm").cloned().unwrap_or_default();
        let p = snap
            .processes
            .iter()
            .find(|p| p.pid == pid && !p.exited && p.comm == comm)
            .ok_or_else(|| TargetError::NotInSnapshot(pid, comm.clone()))?;
        let id = procinfo::identity(pid).ok_or(TargetError::Gone(pid))?;
        if id.comm != comm {
            return Err(TargetError::Replaced(pid));
        }
        // The snapshot knows the start time to the second: a pid reused since it was built shows.
        let snap_start = p.resources.as_ref().and_then(|r| r.start_time.clone());
        if let (Some(s), Some(now)) = (snap_start, start_rfc3339(id.start_time)) {
            if s != now {
                return Err(TargetError::Replaced(pid));
            }
        }
        Ok(Target { pid, comm, start_ticks: id.start_time })
    }

    /// The process lock and cooldown key part: pid and start time.
    pub fn key(&self) -> String {
        format!("pid:{}:{}", self.pid, self.start_ticks)
    }

    /// Still the same process?
    pub fn check(&self) -> Result<(), TargetError> {
        let id = procinfo::identity(self.pid).ok_or(TargetError::Gone(self.pid))?;
        if id.start_time != self.start_ticks || id.comm != self.comm {
            return Err(TargetError::Replaced(self.pid));
        }
        Ok(())
    }

    /// A pidfd of the process, taken and then checked: the pidfd refers to this process for
    /// its whole life, so a signal through it cannot hit a reused pid.
    pub fn pidfd(&self) -> Result<OwnedFd, String> {
        // SAFETY: pidfd_open(pid, flags) has no memory arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::c_int, 0 as libc::c_uint) };
        if fd < 0 {
            return Err(format!("pidfd_open({}): {}", self.pid, io::Error::last_os_error()));
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        self.check().map_err(|e| e.to_string())?;
        Ok(fd)
    }

    pub fn open_fds(&self) -> Option<u64> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok().map(|d| d.count() as u64)
    }
}

/// RLIMIT_NOFILE (soft, hard) of a process; `RLIM_INFINITY` as u64::MAX.
pub fn nofile(pid: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer; a null new-limit pointer only reads.
    let r = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// Set the soft RLIMIT_NOFILE of a process, keeping its hard limit.
pub fn set_nofile_soft(pid: u32, soft: u64, hard: u64) -> io::Result<()> {
    let new = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: valid in-pointer; null out-pointer.
    let r = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The systemd unit that `systemctl restart` would restart: the innermost `*.service` of the
/// process's cgroup (v2 line, else v1 `name=systemd`). A `*.scope` cannot be restarted.
pub fn unit_of(cgroup: &str) -> Result<String, String> {
    use crate::track::resources::process::{parse_cgroup, systemd_unit};
    let lines = parse_cgroup(cgroup);
    let v2 = lines.iter().find(|c| c.hierarchy == 0 && c.controllers.is_empty() && c.path != "/");
    let v1 = lines.iter().find(|c| c.controllers.iter().any(|n| n == "name=systemd"));
    let path = v2.or(v1).map(|c| c.path.as_str()).ok_or("no systemd cgroup line")?;
    match systemd_unit(path) {
        Some(u) if u.ends_with(".service") => Ok(u),
        Some(u) => Err(format!("the process runs in {u}, which is not a service (cannot be restarted)")),
        None => Err(format!("cgroup {path} names no systemd unit")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_from_cgroup() {
        let v1 = "12:pids:/system.slice/ws.service\n1:name=systemd:/system.slice/ws.service\n0::/\n";
        assert_eq!(unit_of(v1).unwrap(), "ws.service");
        let v2 = "0::/system.slice/chat.service\n";
        assert_eq!(unit_of(v2).unwrap(), "chat.service");
        let nested = "0::/system.slice/app.service/worker\n";
        assert_eq!(unit_of(nested).unwrap(), "app.service");
        let scope = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert!(unit_of(scope).unwrap_err().contains("not a service"));
        assert!(unit_of("0::/\n").is_err());
        assert!(unit_of("0::/kubepods/pod1/abc\n").unwrap_err().contains("names no systemd unit"));
    }

    #[test]
    fn own_process_checks_and_limits() {
        let me = std::process::id();
        let id = procinfo::identity(me).unwrap();
        let t = Target { pid: me, comm: id.comm.clone(), start_ticks: id.start_time };
        t.check().unwrap();
        assert!(t.pidfd().is_ok());
        let other = Target { start_ticks: id.start_time + 1, ..t.clone() };
        assert_eq!(other.check(), Err(TargetError::Replaced(me)));
        let (soft, hard) = nofile(me).unwrap();
        assert!(soft <= hard);
        assert!(t.open_fds().unwrap() >= 3);
    }
}
