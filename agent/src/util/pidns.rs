//! Is this process in the host's PID namespace, reading a `/proc` of that namespace?
//!
//! The probe names processes by the pids the kernel's initial namespace gives them
//! (`bpf_get_current_pid_tgid`), and the agent looks those pids up in `/proc`. In a child PID
//! namespace (a container without the host's PID namespace: `systemd-nspawn` always makes one,
//! Kubernetes without `hostPID: true`, `unshare --pid`) a watched host process is missing from
//! that `/proc` or is another process there, so the agent took it for exited and reaped its
//! open connections (measured under nspawn: 20 abnormal closes for 6, 339 messages for 986).
//!
//! Comparing `/proc/self/ns/pid` with `/proc/1/ns/pid` proves nothing inside a container (its
//! pid 1 shares its namespace). The initial PID namespace has a fixed inode number instead
//! (`PROC_PID_INIT_INO`, include/linux/proc_ns.h, since Linux 3.8), and `/proc/self` names the
//! reader by its pid in the namespace `/proc` was mounted for: both together say whether the
//! probe's pids are the ones `/proc` shows.

use std::os::unix::fs::MetadataExt;

/// `PROC_PID_INIT_INO`: the inode of the kernel's initial PID namespace.
pub const HOST_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// What this process sees of its PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidView {
    /// Inode of `/proc/self/ns/pid` (None: unreadable).
    pub ns_inode: Option<u64>,
    /// The pid `/proc/self` names (None: `/proc` does not show this process).
    pub proc_self: Option<u32>,
    /// `getpid()`.
    pub pid: u32,
}

impl PidView {
    pub fn read() -> PidView {
        PidView {
            ns_inode: std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino()),
            proc_self: std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str()?.parse().ok()),
            pid: std::process::id(),
        }
    }

    /// Why the probe's pids are not this process's `/proc` pids, or None when they are.
    /// An unreadable namespace inode is not judged (old or unusual kernels): only a known
    /// foreign namespace or a `/proc` that does not show this process is.
    pub fn problem(&self) -> Option<String> {
        if let Some(ino) = self.ns_inode.filter(|&i| i != HOST_PID_NS_INODE) {
            return Some(format!(
                "this process is in PID namespace {ino}, not the host's ({HOST_PID_NS_INODE}): the probe reports host pids, \
                 which this namespace's /proc does not show"
            ));
        }
        match self.proc_self {
            Some(p) if p == self.pid => None,
            Some(p) => {
                Some(format!("/proc belongs to another PID namespace (it calls this process {p}, getpid() says {})", self.pid))
            }
            None => Some("/proc does not show this process (a /proc of another PID namespace)".into()),
        }
    }
}

/// What to do about a [`PidView::problem`]: the ways to run in the host's PID namespace.
pub const FIX: &str = "run wsguard in the host's PID namespace: on the host (the systemd unit), in a container with \
                       `--pid=host` (podman/docker) or `hostPID: true` (Kubernetes); systemd-nspawn cannot share it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_namespace_with_its_own_proc_is_fine() {
        let v = PidView { ns_inode: Some(HOST_PID_NS_INODE), proc_self: Some(42), pid: 42 };
        assert_eq!(v.problem(), None);
        // An unreadable inode is not judged.
        assert_eq!(PidView { ns_inode: None, ..v }.problem(), None);
    }

    #[test]
    fn a_child_namespace_or_a_foreign_proc_is_named() {
        let child = PidView { ns_inode: Some(4026532175), proc_self: Some(1), pid: 1 };
        assert!(child.problem().unwrap().contains("PID namespace 4026532175, not the host's (4026531836)"));
        let foreign = PidView { ns_inode: Some(HOST_PID_NS_INODE), proc_self: Some(7), pid: 4242 };
        assert!(foreign.problem().unwrap().contains("calls this process 7, getpid() says 4242"));
        let hidden = PidView { ns_inode: Some(HOST_PID_NS_INODE), proc_self: None, pid: 4242 };
        assert!(hidden.problem().unwrap().contains("does not show this process"));
    }

    /// The test process itself: the host's namespace unless the tests run in a container.
    #[test]
    fn read_matches_this_process() {
        let v = PidView::read();
        assert_eq!(v.pid, std::process::id());
        assert_eq!(v.proc_self, Some(v.pid), "{v:?}");
        assert!(v.ns_inode.is_some(), "{v:?}");
    }
}
