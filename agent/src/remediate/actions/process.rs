//! Actions on the process itself: `signal` (through a pidfd, so a reused pid is never hit),
//! `restart_unit` (`systemctl restart` of the service found in its cgroup) and
//! `raise_fd_limit` (prlimit: soft RLIMIT_NOFILE up toward the hard limit, the reversible step).

use std::{collections::BTreeMap, os::fd::AsRawFd, time::Duration};

use serde_json::json;

use super::RunResult;
use crate::remediate::target::{nofile, set_nofile_soft, unit_of, Target};

pub fn signal(t: &Target, signo: i32, name: &str) -> RunResult {
    let fd = match t.pidfd() {
        Ok(fd) => fd,
        Err(e) => return RunResult::failed(e),
    };
    // SAFETY: pidfd_send_signal(pidfd, sig, info = NULL, flags = 0).
    let r =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signo, std::ptr::null::<libc::siginfo_t>(), 0u32) };
    if r != 0 {
        return RunResult::failed(format!("pidfd_send_signal {name} to {}: {}", t.pid, std::io::Error::last_os_error()));
    }
    RunResult { result: "ok".into(), detail: format!("sent {name} to pid {} ({})", t.pid, t.comm), after: json!({}) }
}

/// The unit a restart would hit (read now from /proc/<pid>/cgroup).
pub fn unit(t: &Target) -> Result<String, String> {
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", t.pid)).map_err(|e| format!("cgroup of {}: {e}", t.pid))?;
    t.check().map_err(|e| e.to_string())?;
    unit_of(&cg)
}

pub async fn restart_unit(t: &Target, timeout: Duration) -> RunResult {
    let unit = match unit(t) {
        Ok(u) => u,
        Err(e) => return RunResult::failed(e),
    };
    let argv = vec!["/usr/bin/env".to_string(), "systemctl".into(), "restart".into(), "--".into(), unit.clone()];
    let mut r = super::exec::run(&argv, None, &BTreeMap::new(), String::new(), timeout).await;
    r.detail = format!("systemctl restart {unit}: {}", r.detail);
    r.after["unit"] = json!(unit);
    r
}

/// The new soft limit: soft × factor (at least +1), capped by the hard limit and `max`.
pub fn raised(soft: u64, hard: u64, factor: f64, max: Option<u64>) -> Option<u64> {
    let want = ((soft as f64 * factor).ceil() as u64).max(soft.saturating_add(1));
    let new = want.min(hard).min(max.unwrap_or(u64::MAX));
    (new > soft).then_some(new)
}

pub fn raise_fd_limit(t: &Target, factor: f64, max: Option<u64>) -> RunResult {
    if let Err(e) = t.check() {
        return RunResult::failed(e.to_string());
    }
    let (soft, hard) = match nofile(t.pid) {
        Ok(l) => l,
        Err(e) => return RunResult::failed(format!("prlimit read {}: {e}", t.pid)),
    };
    let Some(new) = raised(soft, hard, factor, max) else {
        return RunResult::failed(format!("soft limit {soft} is already at the hard limit {hard} (or max)"));
    };
    if let Err(e) = set_nofile_soft(t.pid, new, hard) {
        return RunResult::failed(format!("prlimit {}: {e}", t.pid));
    }
    // The pid could have been reused between check and prlimit: say so rather than claim success.
    if let Err(e) = t.check() {
        return RunResult::failed(format!("limit set, but {e}"));
    }
    let now = nofile(t.pid).map(|l| l.0).ok();
    let ok = now == Some(new);
    RunResult {
        result: if ok { "ok" } else { "failed" }.into(),
        detail: format!(
            "RLIMIT_NOFILE soft {soft} → {new} (hard {hard}){}",
            if ok { "" } else { "; not confirmed by re-reading" }
        ),
        after: json!({ "fd_limit_soft_before": soft, "fd_limit_soft": now, "fd_limit_hard": hard }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_steps() {
        assert_eq!(raised(1024, 4096, 2.0, None), Some(2048));
        assert_eq!(raised(3000, 4096, 2.0, None), Some(4096), "capped by hard");
        assert_eq!(raised(1024, 4096, 2.0, Some(1500)), Some(1500), "capped by max");
        assert_eq!(raised(4096, 4096, 2.0, None), None);
        assert_eq!(raised(10, 100, 1.01, None), Some(11), "at least one more");
        assert_eq!(raised(1024, u64::MAX, 2.0, None), Some(2048), "unlimited hard");
    }
}
