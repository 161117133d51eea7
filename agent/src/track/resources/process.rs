//! Resources of one process: identity in the service/container world (systemd unit, container,
//! pod), file descriptors against RLIMIT_NOFILE, memory against its cgroup limit, CPU, and the
//! kernel queues of its WebSocket sockets. Every field is read on its own so that one failed read
//! (permissions, a kernel without the file) leaves the others intact.

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, SystemTime},
};

use procfs::{
    process::{Process, Stat},
    Current,
};
use serde::{Deserialize, Serialize};

use crate::model::resources::ProcessResources;
use tracing::debug;

/// What the sampler keeps of a process between samples to compute `cpu_percent`.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuMark {
    /// starttime (ticks since boot) tells a reused pid apart.
    pub starttime: u64,
    pub cpu_ticks: u64,
    pub at: std::time::Instant,
}

/// Reads everything but `cpu_percent` (which needs the previous sample) from `stat` and the
/// other files of `p`; `open_fds` when the caller counted them already.
pub(super) fn read(p: &Process, stat: &Stat, open_fds: Option<u64>) -> ProcessResources {
    let pid = p.pid() as u32;
    let tps = procfs::ticks_per_second().max(1);
    let since_boot = Duration::from_nanos(stat.starttime.saturating_mul(1_000_000_000) / tps);
    let start_time = procfs::boot_time_secs()
        .map_err(|e| debug!(pid, "boot time: {e}"))
        .ok()
        .map(|b| SystemTime::UNIX_EPOCH + Duration::from_secs(b) + since_boot)
        .map(crate::util::time::rfc3339);
    // /proc/uptime is monotonic; wall-clock jumps do not skew the uptime.
    let uptime_seconds = procfs::Uptime::current()
        .map_err(|e| debug!(pid, "uptime: {e}"))
        .ok()
        .map(|u| (u.uptime - since_boot.as_secs_f64()).max(0.0) as u64);

    let open_fds = open_fds.or_else(|| p.fd_count().map_err(|e| debug!(pid, "fd count: {e}")).ok().map(|n| n as u64));
    let (fd_limit_soft, fd_limit_hard) =
        read_text(&format!("/proc/{pid}/limits")).and_then(|t| parse_limit(&t, "Max open files")).unwrap_or_default();
    let fd_usage_ratio = match (open_fds, fd_limit_soft) {
        (Some(n), Some(l)) if l > 0 => Some(n as f64 / l as f64),
        _ => None,
    };

    let cgroups = read_text(&format!("/proc/{pid}/cgroup")).map(|t| parse_cgroup(&t)).unwrap_or_default();
    ProcessResources {
        pid,
        exe: p.exe().map_err(|e| debug!(pid, "exe: {e}")).ok().map(|e| e.to_string_lossy().into_owned()),
        start_time,
        uptime_seconds,
        systemd_unit: unit_path(&cgroups).and_then(systemd_unit),
        container_id: cgroups.iter().find_map(|c| container_id(&c.path)),
        pod_uid: cgroups.iter().find_map(|c| pod_uid(&c.path)),
        open_fds,
        fd_limit_soft,
        fd_limit_hard,
        fd_usage_ratio,
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        threads: stat.num_threads.max(0) as u64,
        cpu_percent: None,
        cpu_seconds_total: Some((stat.utime + stat.stime) as f64 / tps as f64),
        memory_limit_bytes: memory_limit(Path::new(super::CGROUP_ROOT), &cgroups),
    }
}

/// CPU percent of one core between two marks of the same process.
pub(super) fn cpu_percent(prev: &CpuMark, now: &CpuMark) -> Option<f64> {
    let wall = now.at.checked_duration_since(prev.at)?.as_secs_f64();
    if prev.starttime != now.starttime || wall <= 0.0 {
        return None;
    }
    let cpu = now.cpu_ticks.saturating_sub(prev.cpu_ticks) as f64 / procfs::ticks_per_second().max(1) as f64;
    Some(cpu / wall * 100.0)
}

fn read_text(path: &str) -> Option<String> {
    std::fs::read_to_string(path).map_err(|e| debug!("{path}: {e}")).ok()
}

/// Soft and hard value of one row of /proc/<pid>/limits (`None` = unlimited). Outer None when the
/// row is missing. Rows are `Name  Soft  Hard  [Units]` with a multi-word name, so the row is
/// found by prefix and the values are the first two words after it.
pub fn parse_limit(text: &str, name: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    let mut words = rest.split_whitespace();
    let mut value = || match words.next()? {
        "unlimited" => Some(None),
        w => w.parse().ok().map(Some),
    };
    Some((value()?, value()?))
}

/// One line of /proc/<pid>/cgroup: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// 0 for the cgroup v2 (unified) line.
    pub hierarchy: u32,
    /// v1 controllers (`memory`, `cpu,cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses /proc/<pid>/cgroup; malformed lines are skipped. The path may contain ':' itself.
pub fn parse_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?.split(',').filter(|c| !c.is_empty()).map(String::from).collect();
            Some(CgroupLine { hierarchy, controllers, path: parts.next()?.to_string() })
        })
        .collect()
}

/// The path systemd manages: the v2 line, else the v1 `name=systemd` line.
fn unit_path(lines: &[CgroupLine]) -> Option<&str> {
    let v2 = lines.iter().find(|c| c.hierarchy == 0 && c.controllers.is_empty());
    let v1 = lines.iter().find(|c| c.controllers.iter().any(|n| n == "name=systemd"));
    v2.filter(|c| c.path != "/").or(v1).map(|c| c.path.as_str())
}

/// Innermost unit (`*.service` or `*.scope`) of a cgroup path: the unit systemd would restart.
pub fn systemd_unit(path: &str) -> Option<String> {
    path.rsplit('/').find(|c| c.ends_with(".service") || c.ends_with(".scope")).map(String::from)
}

/// 64-hex container id in a cgroup path: `/docker/<id>`, `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, `/kubepods/.../<id>`.
/// The innermost match wins.
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|c| {
        let c = c.strip_suffix(".scope").unwrap_or(c);
        let id = c.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
    })
}

/// Kubernetes pod UID from a kubepods cgroup path: systemd driver
/// `kubepods-burstable-pod<uid_with_underscores>.slice`, cgroupfs driver `/kubepods/burstable/pod<uid>/`.
pub fn pod_uid(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(|c| {
        let c = c.strip_suffix(".slice").unwrap_or(c);
        let uid = c.strip_prefix("pod").or_else(|| c.rsplit_once("-pod").map(|(_, u)| u))?;
        let ok = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
        ok.then(|| uid.replace('_', "-").to_ascii_lowercase())
    })
}

/// A cgroup memory limit file: v2 `memory.max` ("max" = unlimited) or v1
/// `memory.limit_in_bytes` (unlimited is a page-rounded i64::MAX, so anything ≥ 2^62 counts as
/// unlimited). None for unlimited or unparsable.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        t => t.parse::<u64>().ok().filter(|&v| v < 1 << 62),
    }
}

/// Tightest limit of the process's cgroup and its ancestors (a pod-level or slice-level limit
/// binds as much as the container's own). Tries cgroup v2 first, then the v1 memory hierarchy.
/// Paths outside the agent's cgroup namespace ("/../..") cannot be resolved and give None.
pub fn memory_limit(root: &Path, lines: &[CgroupLine]) -> Option<u64> {
    let v2 = lines.iter().find(|c| c.hierarchy == 0 && c.controllers.is_empty());
    let v1 = lines.iter().find(|c| c.controllers.iter().any(|n| n == "memory"));
    let candidates = [
        v2.map(|c| (root.to_path_buf(), c.path.as_str(), "memory.max")),
        v1.map(|c| (root.join("memory"), c.path.as_str(), "memory.limit_in_bytes")),
    ];
    for (base, path, file) in candidates.into_iter().flatten() {
        if path.split('/').any(|c| c == "..") {
            debug!("cgroup path {path} is outside our cgroup namespace");
            continue;
        }
        let mut dir = base.join(path.trim_start_matches('/'));
        let mut found = false;
        let mut tightest: Option<u64> = None;
        while dir.starts_with(&base) && dir != base {
            if let Ok(t) = std::fs::read_to_string(dir.join(file)) {
                found = true;
                if let Some(v) = parse_memory_limit(&t) {
                    tightest = Some(tightest.map_or(v, |m| m.min(v)));
                }
            }
            if !dir.pop() {
                break;
            }
        }
        if found {
            return tightest;
        }
    }
    None
}

/// Kernel queues of a set of sockets, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketQueues {
    /// Bytes written by the process and not yet acknowledged by the peer (tx_queue): a slow
    /// or stalled client shows here first.
    pub send_queue_bytes: u64,
    /// Bytes received and not yet read by the process (rx_queue): the server is falling behind.
    pub recv_queue_bytes: u64,
    /// How many of the given inodes were found in the TCP tables.
    pub sockets: u64,
}

/// Totals of tx_queue / rx_queue over the given socket inodes of `pid` (its WebSocket
/// connections). Reads /proc/<pid>/net/tcp{,6}, i.e. the process's own network namespace, so
/// servers in containers work. None when neither table can be read (process gone).
pub fn socket_queues(pid: u32, inodes: &HashSet<u64>) -> Option<SocketQueues> {
    let p = Process::new(pid as i32).map_err(|e| debug!(pid, "socket queues: {e}")).ok()?;
    let tables: Vec<_> =
        [p.tcp(), p.tcp6()].into_iter().filter_map(|t| t.map_err(|e| debug!(pid, "tcp table: {e}")).ok()).collect();
    if tables.is_empty() {
        return None;
    }
    let mut q = SocketQueues::default();
    for e in tables.iter().flatten().filter(|e| inodes.contains(&e.inode)) {
        q.send_queue_bytes += u64::from(e.tx_queue);
        q.recv_queue_bytes += u64::from(e.rx_queue);
        q.sockets += 1;
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3f1c9a2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    #[test]
    fn limits_fixture() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1024                 524288               files     \n\
                 Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_limit(t, "Max open files"), Some((Some(1024), Some(524288))));
        assert_eq!(parse_limit(t, "Max cpu time"), Some((None, None)));
        assert_eq!(parse_limit(t, "Max processes"), None);
        let half = "Max open files            unlimited            1048576              files\n";
        assert_eq!(parse_limit(half, "Max open files"), Some((None, Some(1048576))));
    }

    fn v2(path: &str) -> Vec<CgroupLine> {
        parse_cgroup(&format!("0::{path}\n"))
    }

    #[test]
    fn cgroup_systemd_service() {
        let l = v2("/system.slice/nginx.service");
        assert_eq!(l, vec![CgroupLine { hierarchy: 0, controllers: vec![], path: "/system.slice/nginx.service".into() }]);
        assert_eq!(unit_path(&l).and_then(systemd_unit).as_deref(), Some("nginx.service"));
        assert_eq!(container_id(&l[0].path), None);
        assert_eq!(pod_uid(&l[0].path), None);
        let user = "/user.slice/user-1000.slice/user@1000.service/app.slice/chat.service";
        assert_eq!(systemd_unit(user).as_deref(), Some("chat.service"));
        assert_eq!(systemd_unit("/"), None);
    }

    #[test]
    fn cgroup_docker() {
        let path = format!("/system.slice/docker-{HEX}.scope");
        assert_eq!(container_id(&path).as_deref(), Some(HEX));
        assert_eq!(systemd_unit(&path), Some(format!("docker-{HEX}.scope")));
        assert_eq!(pod_uid(&path), None);
        assert_eq!(container_id(&format!("/docker/{HEX}")).as_deref(), Some(HEX));
        assert_eq!(container_id(&format!("/machine.slice/libpod-{HEX}.scope/container")).as_deref(), Some(HEX));
        assert_eq!(container_id(&format!("/system.slice/crio-{HEX}.scope")).as_deref(), Some(HEX));
        // A 63-hex component is not an id.
        assert_eq!(container_id(&format!("/docker/{}", &HEX[1..])), None);
    }

    #[test]
    fn cgroup_kubernetes_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ef.slice/cri-containerd-{HEX}.scope"
        );
        let l = v2(&path);
        assert_eq!(pod_uid(&l[0].path).as_deref(), Some("1234abcd-5678-90ef"));
        assert_eq!(container_id(&l[0].path).as_deref(), Some(HEX));
        assert_eq!(unit_path(&l).and_then(systemd_unit), Some(format!("cri-containerd-{HEX}.scope")));
        let guaranteed = "/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-conmon-x.scope";
        assert_eq!(pod_uid(guaranteed).as_deref(), Some("0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"));
    }

    #[test]
    fn cgroup_v1_lines() {
        let t = format!(
            "12:memory:/kubepods/besteffort/pod8a7b6c5d-1111-2222-3333-444455556666/{HEX}\n\
             11:cpu,cpuacct:/kubepods/besteffort/pod8a7b6c5d-1111-2222-3333-444455556666/{HEX}\n\
             1:name=systemd:/kubepods/besteffort/pod8a7b6c5d-1111-2222-3333-444455556666/{HEX}\n\
             0::/\n\
             garbage line\n"
        );
        let l = parse_cgroup(&t);
        assert_eq!(l.len(), 4);
        assert_eq!(l[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(l[3], CgroupLine { hierarchy: 0, controllers: vec![], path: "/".into() });
        assert_eq!(l.iter().find_map(|c| container_id(&c.path)).as_deref(), Some(HEX));
        assert_eq!(l.iter().find_map(|c| pod_uid(&c.path)).as_deref(), Some("8a7b6c5d-1111-2222-3333-444455556666"));
        // Hybrid host: the v2 line is "/", the unit comes from name=systemd.
        let hybrid = parse_cgroup("1:name=systemd:/system.slice/redis.service\n0::/\n");
        assert_eq!(unit_path(&hybrid).and_then(systemd_unit).as_deref(), Some("redis.service"));
    }

    #[test]
    fn memory_limit_values() {
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("garbage"), None);
    }

    #[test]
    fn memory_limit_takes_tightest_ancestor() {
        let root = std::env::temp_dir().join(format!("wsguard-res-{}", std::process::id()));
        let leaf = root.join("kubepods.slice/pod.slice/ctr.scope");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.join("kubepods.slice/pod.slice/memory.max"), "536870912\n").unwrap();
        std::fs::write(root.join("kubepods.slice/memory.max"), "1073741824\n").unwrap();
        std::fs::write(root.join("memory.max"), "1\n").unwrap(); // the root itself never counts
        let lines = v2("/kubepods.slice/pod.slice/ctr.scope");
        assert_eq!(memory_limit(&root, &lines), Some(536870912));
        assert_eq!(memory_limit(&root, &v2("/kubepods.slice/../../etc")), None);
        let v1 = parse_cgroup("4:memory:/docker/abc\n0::/\n");
        std::fs::create_dir_all(root.join("memory/docker/abc")).unwrap();
        std::fs::write(root.join("memory/docker/abc/memory.limit_in_bytes"), "268435456\n").unwrap();
        assert_eq!(memory_limit(&root, &v1), Some(268435456));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
