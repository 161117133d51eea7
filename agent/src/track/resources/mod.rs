//! Process and host resources for the snapshot: the limits a WebSocket server runs into
//! (RLIMIT_NOFILE, cgroup memory, CPU, socket queues, accept-queue overflows, ephemeral ports,
//! conntrack). Read from /proc and /sys with the procfs crate; the text formats procfs does not
//! cover are parsed by small pure functions tested on fixtures. Rates (CPU) and deltas (listen
//! overflows) need the previous sample, which [`Sampler`] keeps. Field reference: docs/resources.md.

pub mod host;
pub mod process;
pub mod tcp;

use std::{collections::HashMap, time::Instant};

use procfs::process::{Process, Stat};
use tracing::debug;

pub use process::{socket_queues, SocketQueues};

use crate::model::resources::{HostResources, ProcessResources};

/// Where the cgroup hierarchy is mounted (v2 directly, v1 controllers below it).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Keeps the counters of the previous sample so that CPU usage and counter growth can be
/// computed between two snapshots. One per agent; not thread-safe by itself (wrap in a Mutex).
#[derive(Debug, Default)]
pub struct Sampler {
    procs: HashMap<u32, process::CpuMark>,
    host: host::Marks,
}

impl Sampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resources of `pid`, or None if the process is gone. `cpu_percent` is None on the first
    /// sample of a pid (and of a reused pid: the start time tells them apart).
    pub fn process(&mut self, pid: u32) -> Option<ProcessResources> {
        let stat = Process::new(pid as i32).and_then(|p| Ok((p.stat()?, p)));
        let (stat, p) = match stat {
            Ok(s) => s,
            Err(e) => {
                debug!(pid, "process resources: {e}");
                self.forget(pid);
                return None;
            }
        };
        Some(self.process_with(&p, &stat, None))
    }

    /// Like [`Sampler::process`] with what the caller already read this interval: the process's
    /// stat and, when it listed its fd directory, the number of open fds.
    pub fn process_with(&mut self, p: &Process, stat: &Stat, open_fds: Option<u64>) -> ProcessResources {
        let pid = p.pid() as u32;
        let mark = process::CpuMark { starttime: stat.starttime, cpu_ticks: stat.utime + stat.stime, at: Instant::now() };
        let mut r = process::read(p, stat, open_fds);
        r.cpu_percent = self.procs.insert(pid, mark).and_then(|prev| process::cpu_percent(&prev, &mark));
        r
    }

    /// Host resources; CPU and listen deltas are None on the first call.
    pub fn host(&mut self) -> HostResources {
        host::read(&mut self.host, None)
    }

    /// Host resources with the ephemeral ports in use already counted (from the snapshot's TCP
    /// table of the agent's namespace), so /proc/net/tcp is not read again.
    pub fn host_with(&mut self, ephemeral_in_use: Option<u64>) -> HostResources {
        host::read(&mut self.host, ephemeral_in_use)
    }

    /// Drops the state of an exited process.
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        io::Write,
        net::{TcpListener, TcpStream},
        os::{fd::AsRawFd, unix::fs::MetadataExt},
        time::Duration,
    };

    use super::*;

    /// Retries a comparison between a sampled and an independently read value: other tests in
    /// this binary open files and spawn threads concurrently.
    fn settles(mut check: impl FnMut() -> (u64, u64)) {
        let mut last = (0, 0);
        for _ in 0..50 {
            last = check();
            if last.0 == last.1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sampled {} != independent {}", last.0, last.1);
    }

    fn me() -> u32 {
        std::process::id()
    }

    #[test]
    fn self_fds_and_limits() {
        let mut s = Sampler::new();
        settles(|| {
            let sampled = s.process(me()).unwrap().open_fds.unwrap();
            let counted = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
            (sampled, counted)
        });
        let r = s.process(me()).unwrap();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let expect = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        assert_eq!(r.fd_limit_soft, expect(lim.rlim_cur));
        assert_eq!(r.fd_limit_hard, expect(lim.rlim_max));
        if let (Some(n), Some(l)) = (r.open_fds, r.fd_limit_soft) {
            assert!((r.fd_usage_ratio.unwrap() - n as f64 / l as f64).abs() < 1e-3);
        }
    }

    #[test]
    fn self_threads_rss_exe_start() {
        let mut s = Sampler::new();
        settles(|| {
            let sampled = s.process(me()).unwrap().threads;
            (sampled, std::fs::read_dir("/proc/self/task").unwrap().count() as u64)
        });
        let r = s.process(me()).unwrap();
        assert_eq!(r.pid, me());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(r.exe.as_deref(), Some(exe.to_str().unwrap()));

        // RSS against VmRSS of /proc/self/status (allocations in between move it a little).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kb: u64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim_end_matches("kB").trim().parse().unwrap();
        assert!(r.rss_bytes > 0);
        assert!(r.rss_bytes.abs_diff(vm_rss_kb * 1024) < 16 << 20, "{} vs {} kB", r.rss_bytes, vm_rss_kb);

        // Start time from field 22 of /proc/self/stat and btime of /proc/stat.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let starttime: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
        let btime: u64 = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .unwrap()
            .parse()
            .unwrap();
        let tps = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let start = std::time::UNIX_EPOCH + Duration::from_secs(btime) + Duration::from_nanos(starttime * 1_000_000_000 / tps);
        assert_eq!(r.start_time, Some(humantime::format_rfc3339_seconds(start).to_string()));
        assert!(r.start_time.as_deref().unwrap().ends_with('Z'));
        let up: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let expect_up = up - starttime as f64 / tps as f64;
        assert!((r.uptime_seconds.unwrap() as f64 - expect_up).abs() <= 2.0);
    }

    #[test]
    fn self_memory_limit_matches_cgroup_files() {
        let r = Sampler::new().process(me()).unwrap();
        // Independent read of the leaf cgroup's limit (v2, else v1 memory controller).
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let leaf = cg.lines().find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrl, path) = rest.split_once(':')?;
            let file = match ctrl {
                "" => format!("{CGROUP_ROOT}{path}/memory.max"),
                c if c.split(',').any(|c| c == "memory") => format!("{CGROUP_ROOT}/memory{path}/memory.limit_in_bytes"),
                _ => return None,
            };
            std::fs::read_to_string(file).ok()
        });
        let leaf = leaf.and_then(|t| t.trim().parse::<u64>().ok()).filter(|&v| v < 1 << 62);
        match (leaf, r.memory_limit_bytes) {
            (Some(leaf), Some(limit)) => assert!(limit <= leaf, "an ancestor can only be tighter"),
            (Some(leaf), None) => panic!("leaf limit {leaf} not reported"),
            (None, Some(limit)) => assert!(limit > 0),
            (None, None) => {}
        }
    }

    #[test]
    fn self_cpu_percent() {
        let mut s = Sampler::new();
        assert_eq!(s.process(me()).unwrap().cpu_percent, None, "first sample has no rate");
        // Busy until this thread has run 300 ms on a CPU, however long a loaded machine takes
        // to give it that; the process (other test threads too) used at least as much.
        let (wall0, cpu0) = (Instant::now(), crate::track::thread_cpu_ns());
        let mut x = 0u64;
        while crate::track::thread_cpu_ns() - cpu0 < 300_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let ours = (crate::track::thread_cpu_ns() - cpu0) as f64 / wall0.elapsed().as_nanos() as f64 * 100.0;
        let cpu = s.process(me()).unwrap().cpu_percent.unwrap();
        // /proc counts CPU in 10 ms ticks: allow a few of them.
        assert!(cpu > 0.0 && cpu >= ours * 0.9 - 5.0, "busy loop measured at {cpu}%, this thread alone used {ours:.1}%");
        s.forget(me());
        assert_eq!(s.process(me()).unwrap().cpu_percent, None);
        assert!(s.process(u32::MAX).is_none());
    }

    #[test]
    fn socket_queues_of_unread_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 1000]).unwrap();
        let inode = |fd: i32| std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let inodes = HashSet::from([inode(server.as_raw_fd())]);
        settles(|| (socket_queues(me(), &inodes).unwrap().recv_queue_bytes, 1000));
        let q = socket_queues(me(), &inodes).unwrap();
        assert_eq!(q, SocketQueues { send_queue_bytes: 0, recv_queue_bytes: 1000, sockets: 1 });
        assert_eq!(socket_queues(me(), &HashSet::from([1])).unwrap(), SocketQueues::default());
        assert_eq!(socket_queues(u32::MAX, &inodes), None);
    }

    #[test]
    fn host_against_proc() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut s = Sampler::new();
        let h = s.host();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 =
            meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).unwrap().trim_end_matches("kB").trim().parse().unwrap();
        assert_eq!(h.memory_total_bytes, Some(total_kb * 1024));
        assert!(h.memory_available_bytes.unwrap() <= total_kb * 1024);
        assert!((0.0..=1.0).contains(&h.memory_used_ratio.unwrap()));
        // Online CPUs; the parallelism available to this process can only be smaller (affinity,
        // cgroup CPU quota).
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as u64;
        assert_eq!(h.cpus, Some(online));
        assert!(std::thread::available_parallelism().unwrap().get() as u64 <= online);
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let mut w = range.split_whitespace().map(|v| v.parse::<u16>().unwrap());
        assert_eq!(h.ephemeral_ports_range, Some((w.next().unwrap(), w.next().unwrap())));
        assert!(h.ephemeral_ports_in_use.unwrap() >= 1, "our client's port");
        assert!(h.ephemeral_ports_usage_ratio.unwrap() > 0.0);
        assert!(h.tcp_sockets_inuse.unwrap() >= 3, "listener, client, server side");
        assert!(h.load_1.unwrap() >= 0.0 && h.load_15.unwrap() >= 0.0);
        assert!(h.listen_overflows_total.is_some() && h.listen_drops_total.is_some());
        assert_eq!((h.cpu_percent, h.listen_overflows_delta, h.listen_drops_delta), (None, None, None));
        let conntrack = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists();
        assert_eq!(h.conntrack_max.is_some(), conntrack);
        std::thread::sleep(Duration::from_millis(50));
        let h2 = s.host();
        assert!((0.0..=100.0).contains(&h2.cpu_percent.unwrap()));
        assert!(h2.listen_overflows_delta.is_some() && h2.listen_drops_delta.is_some());
        // Through a Value: serde_json's text float parsing is not exact without float_roundtrip.
        let json = serde_json::to_value(&h2).unwrap();
        assert_eq!(json["ephemeral_ports_range"].as_array().map(Vec::len), Some(2));
        assert_eq!(serde_json::from_value::<HostResources>(json).unwrap(), h2);
    }

    /// A full accept queue drops the next SYN and counts it in ListenOverflows and ListenDrops.
    #[test]
    fn host_listen_overflow_delta() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr = listener.local_addr().unwrap();
        let mut s = Sampler::new();
        let before = s.host();
        let _held: Vec<_> = (0..3).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()).collect();
        let after = s.host();
        assert!(after.listen_overflows_delta.unwrap() >= 1, "{before:?} -> {after:?}");
        assert!(after.listen_drops_delta.unwrap() >= 1);
        assert!(after.listen_overflows_total.unwrap() > before.listen_overflows_total.unwrap());
    }

    #[test]
    fn process_json_round_trip() {
        let r = Sampler::new().process(me()).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "exe",
            "start_time",
            "uptime_seconds",
            "systemd_unit",
            "container_id",
            "pod_uid",
            "open_fds",
            "fd_limit_soft",
            "fd_limit_hard",
            "fd_usage_ratio",
            "rss_bytes",
            "threads",
            "cpu_percent",
            "cpu_seconds_total",
            "memory_limit_bytes",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(serde_json::from_value::<ProcessResources>(v).unwrap(), r);
    }
}
