//! Turns map readings into snapshots, and keeps what must persist between intervals: process
//! identities (to tell an exit or a reused pid), connections that predate the probe, and the
//! final numbers of processes that exited.

pub mod config;
pub mod conns;
pub mod k8s;
pub mod keyhash;
pub mod redact;
pub mod resources;
pub mod sse;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use procfs::process::Process;

use crate::util::procinfo::{self, Identity};
use crate::{
    model::probe::ProbeHealth,
    model::snapshot::{AgentInfo, Latencies, ProbeInfo, ProcessSnapshot, Quantiles, Rates, Snapshot, WebSocketStats},
    model::sse::SseStats,
    probe::{maps, Probe},
};
use config::TrackConfig;
use conns::{ConnectionSnapshot, Limits};
use resources::{host, Sampler};
use wsguard_common::{
    conn::{phase, ConnKey, ConnState},
    hist::which,
    sse::SseProcStats,
};

/// How long an exited process stays in snapshots with its final numbers.
const EXITED_RETENTION: Duration = Duration::from_secs(300);
const PREEXISTING_FILE: &str = "preexisting.json";

/// Connections a process held when the probe attached, by socket inode.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Preexisting {
    start_time: u64,
    inodes: HashSet<u64>,
    /// How many there were at attach (`inodes` is the same set; kept as a number so a record
    /// saved by an older agent, which lacks it, reads as 0 rather than guessing).
    #[serde(default)]
    at_attach: u64,
}

struct Known {
    id: Identity,
    exited_at: Option<Instant>,
    /// Cumulative numbers at the previous snapshot, for rates.
    prev: Option<(Instant, WebSocketStats)>,
    /// Listening ports at the last snapshot while alive: an exited process keeps them, so its
    /// final numbers stay under the same metric labels.
    ports: Vec<u16>,
    /// fd → (connection id, socket inode) of its WebSocket connections at the last snapshot: the
    /// fd walk does not resolve these again, and a connection's inode is looked up once.
    conn_fds: HashMap<u32, (u64, u64)>,
}

/// What a snapshot gathers about a live process before and during the connection pass.
#[derive(Default)]
struct Live {
    netns: Option<u64>,
    /// Socket fds that were not known WebSocket connections: fd → inode (listeners, connections
    /// from before the probe, new connections).
    sockets: HashMap<u32, u64>,
    conns: conns::ProcessConns,
    /// The next `Known::conn_fds`.
    conn_fds: HashMap<u32, (u64, u64)>,
    resources: Option<crate::model::resources::ProcessResources>,
}

/// A snapshot plus each process's connection list (served separately: it can be large).
pub struct Built {
    pub snapshot: Snapshot,
    pub connections: HashMap<u32, Vec<ConnectionSnapshot>>,
}

pub struct Tracker {
    cfg: TrackConfig,
    started_at: SystemTime,
    known: HashMap<u32, Known>,
    preexisting: HashMap<u32, Preexisting>,
    sampler: Sampler,
    limits: Limits,
    reader: maps::Reader,
    fds: procinfo::FdWalker,
    redact: redact::Redactor,
}

impl Tracker {
    /// A new tracker. On a fresh attach it records the inbound connections already open (and
    /// saves them, so a resumed agent keeps reporting them); on resume it loads that record.
    /// `key_hasher` hashes the client keys it shows (`keyhash.rs`).
    pub fn new(
        cfg: &TrackConfig,
        scan: Option<HashMap<u32, HashSet<u64>>>,
        key_hasher: crate::track::keyhash::KeyHasher,
    ) -> Self {
        return_large_buffers_to_the_os();
        let state_file = cfg.state_dir.join(PREEXISTING_FILE);
        let preexisting = match scan {
            None => std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default(),
            Some(scan) => {
                let found: HashMap<u32, Preexisting> = scan
                    .into_iter()
                    .filter_map(|(pid, inodes)| {
                        let id = procinfo::identity(pid)?;
                        let at_attach = inodes.len() as u64;
                        Some((pid, Preexisting { start_time: id.start_time, inodes, at_attach }))
                    })
                    .collect();
                match serde_json::to_vec(&found) {
                    Ok(b) => {
                        if let Err(e) = std::fs::write(&state_file, b) {
                            warn!("cannot save {}: {e}", state_file.display());
                        }
                    }
                    Err(e) => warn!("cannot encode pre-existing connections: {e}"),
                }
                found
            }
        };
        Tracker {
            cfg: cfg.clone(),
            started_at: SystemTime::now(),
            known: HashMap::new(),
            preexisting,
            sampler: Sampler::new(),
            reader: maps::Reader::default(),
            fds: procinfo::FdWalker::default(),
            limits: limits(cfg, key_hasher),
            redact: redactor(cfg),
        }
    }

    /// A reloaded config (SIGHUP, `reload.rs`): limits and process filters apply from the
    /// next snapshot. Keys that need a restart arrive unchanged.
    pub fn reconfigure(&mut self, cfg: &TrackConfig) {
        self.limits = limits(cfg, self.limits.key_hasher.clone());
        self.redact = redactor(cfg);
        self.cfg = cfg.clone();
    }

    /// Build a snapshot from the probe's maps and /proc. Per interval: the small maps once, one
    /// batched pass over the connection map, one stat read and one fd-directory listing per
    /// process, one TCP socket dump per network namespace; per connection only what changed
    /// since the previous snapshot is resolved (a new connection's socket inode).
    pub fn snapshot(&mut self, probe: &mut Probe, events_received: u64) -> anyhow::Result<Built> {
        let (t0, cpu0) = (Instant::now(), thread_cpu_ns());
        // The socket mode's per-socket storage has no fixed capacity (0: none to fill).
        let capacity = if probe.mode == crate::probe::Mode::Syscall { self.cfg.probe.max_connections } else { 0 };
        let mut reading = self.reader.read(&probe.ebpf, capacity)?;

        // 1. Who is alive (stat: identity, CPU), exits, fd directories.
        let mut live: HashMap<u32, Live> = HashMap::new();
        let mut exiting: HashSet<u32> = HashSet::new();
        for &tgid in reading.procs.keys() {
            let p = Process::new(tgid as i32).ok();
            let stat = p.as_ref().and_then(|p| p.stat().ok());
            let known = self.known.entry(tgid).or_insert_with(|| Known {
                id: p.as_ref().zip(stat.as_ref()).map(|(p, s)| procinfo::identity_of(p, s)).unwrap_or_default(),
                exited_at: None,
                prev: None,
                ports: Vec::new(),
                conn_fds: HashMap::new(),
            });
            let alive = matches!(&stat, Some(s) if s.starttime == known.id.start_time);
            if !alive && known.exited_at.is_none() {
                exiting.insert(tgid);
            }
            let (Some(p), Some(stat), true) = (p, stat, alive) else { continue };
            // `[probe] processes` is known from the identity: skip the fd and resource work of
            // processes that will not be reported. (`ports` needs that work to be known.)
            let wanted = &self.cfg.probe.processes;
            if !wanted.is_empty() && !wanted.contains(&known.id.comm) {
                continue;
            }
            let mut l = Live { netns: resources::tcp::netns(tgid), ..Default::default() };
            // Sized from the last snapshot: no doubling growth of the biggest buffers.
            l.conns.connections.reserve_exact(known.conn_fds.len());
            l.conn_fds.reserve(known.conn_fds.len());
            let cached = &known.conn_fds;
            let open_fds = self.fds.walk(tgid, |dir, fd| {
                if !cached.contains_key(&fd) {
                    if let Some(inode) = dir.socket_inode(fd) {
                        l.sockets.insert(fd, inode);
                    }
                }
            });
            l.resources = Some(self.sampler.process_with(&p, &stat, open_fds));
            live.insert(tgid, l);
        }

        // 2. TCP sockets: the agent's namespace (also the host's ephemeral ports), then any other
        // namespace a live process is in.
        let mine = resources::tcp::netns(std::process::id());
        let (host_table, ephemeral) = match resources::tcp::Table::read(host::ephemeral_range()) {
            Ok(t) => {
                let e = t.ephemeral_in_use;
                (t, Some(e))
            }
            Err(e) => {
                debug!("sock_diag dump: {e}");
                (resources::tcp::Table::default(), None)
            }
        };
        let mut tables: HashMap<u64, resources::tcp::Table> = HashMap::new();
        for (&pid, l) in &live {
            if let Some(ns) = l.netns.filter(|ns| Some(*ns) != mine) {
                tables.entry(ns).or_insert_with(|| resources::tcp::Table::read_for(pid).unwrap_or_default());
            }
        }
        let table_of = |ns: Option<u64>| match ns {
            Some(ns) if Some(ns) != mine => tables.get(&ns).unwrap_or(&host_table),
            _ => &host_table,
        };

        // 3. One pass over the connection map: per-connection views of live processes; the
        // connections of processes that just exited are kept to be reaped.
        let now_ns = conns::monotonic_ns();
        let mut reap: Vec<(ConnKey, ConnState)> = Vec::new();
        let (known, limits) = (&self.known, &self.limits);
        reading.health.conn_map_entries = self.reader.for_each_conn(probe, |k, c| {
            if exiting.contains(&k.tgid) {
                reap.push((*k, *c));
                return;
            }
            let Some(l) = live.get_mut(&k.tgid) else { return };
            if c.phase != phase::WEBSOCKET && c.phase != phase::SSE {
                return;
            }
            let cached = known.get(&k.tgid).and_then(|kn| kn.conn_fds.get(&k.fd)).filter(|(id, _)| *id == c.id);
            let inode = match cached {
                Some((_, inode)) => Some(*inode),
                None => l.sockets.remove(&k.fd).or_else(|| procinfo::socket_inode(k.tgid, k.fd)),
            };
            if let Some(inode) = inode {
                l.conn_fds.insert(k.fd, (c.id, inode));
            }
            let sock = inode.and_then(|i| table_of(l.netns).by_inode.get(&(i as u32)));
            l.conns.push(k.fd, c, sock, limits, now_ns);
        })?;

        // 4. Processes: numbers, exits, listening ports, resources.
        let mut processes = Vec::new();
        let mut connections = HashMap::new();
        let mut gone = Vec::new();
        for (&tgid, stats) in &reading.procs {
            let known = self.known.get_mut(&tgid).expect("entry made in step 1");
            if exiting.contains(&tgid) {
                // Its remaining connections ended with it; no close was seen for them.
                let mine: Vec<_> = reap.iter().filter(|(k, _)| k.tgid == tgid).copied().collect();
                if let Err(e) = maps::reap_exited(&mut probe.ebpf, tgid, &mine) {
                    warn!("cannot reap exited process {tgid}: {e:#}");
                }
                known.exited_at = Some(Instant::now());
                debug!(pid = tgid, comm = %known.id.comm, "process exited");
            }
            if let Some(at) = known.exited_at {
                if at.elapsed() > EXITED_RETENTION {
                    gone.push(tgid);
                    continue;
                }
            }
            let (id, exited) = (known.id.clone(), known.exited_at.is_some());
            let mut ws = WebSocketStats::from_probe(stats, reading.close_codes.get(&tgid));
            let mut sse_counts = sse_stats(&stats.sse);
            if exited {
                // The reap above updated the map after this reading; report the final numbers.
                if let Ok(fin) = maps::read_proc(&probe.ebpf, tgid) {
                    ws = WebSocketStats::from_probe(&fin, reading.close_codes.get(&tgid));
                    sse_counts = sse_stats(&fin.sse);
                }
            }
            let mut l = live.remove(&tgid).unwrap_or_default();
            if !exited {
                let table = table_of(l.netns);
                known.ports = listening_ports(l.sockets.values(), table);
                // The connection inodes resolved this time; the old map's storage is reused.
                std::mem::swap(&mut known.conn_fds, &mut l.conn_fds);
            }
            let ports = known.ports.clone();
            let now = Instant::now();
            let rates = known.prev.as_ref().map(|(t, p)| Rates::between(p, &ws, now.duration_since(*t).as_secs_f64()));
            known.prev = Some((now, ws.clone()));
            let pre = match self.preexisting.get(&tgid) {
                Some(pre) if !exited && pre.start_time == id.start_time => {
                    l.sockets.values().filter(|i| pre.inodes.contains(i)).count() as u64
                }
                _ => 0,
            };
            let unfollowed = match self.preexisting.get(&tgid) {
                Some(p) if p.start_time == id.start_time => p.at_attach,
                _ => 0,
            } + stats.closed_unread;
            let latency = reading.hists.get(&tgid).map(|h| Latencies {
                handshake: Quantiles::from_hist(&h.h[which::HANDSHAKE], stats.handshake_ns_sum),
                ping_rtt: Quantiles::from_hist(&h.h[which::PING_RTT], stats.ping_rtt_ns_sum),
                response: Quantiles::from_hist(&h.h[which::RESPONSE], stats.response_ns_sum),
            });
            let mut pc = l.conns;
            pc.finish(&self.limits);
            let ps = ProcessSnapshot {
                pid: tgid,
                comm: id.comm,
                cmdline: self.redact.command_line(&id.cmdline),
                listening_ports: ports,
                exited,
                preexisting_connections: pre,
                unfollowed_connections: unfollowed,
                closed_unread: stats.closed_unread,
                tcp_accepted: stats.accepted,
                not_websocket: stats.not_websocket,
                websocket: ws,
                sse: sse_counts,
                sse_streams: sse::streams(&pc.connections, &self.limits),
                rates,
                latency: latency.unwrap_or_default(),
                clients: pc.clients,
                connection_ages: pc.ages,
                connections_idle: pc.idle,
                connections_stalled: pc.stalled,
                send_queue_bytes: pc.send_queue_bytes,
                recv_queue_bytes: pc.recv_queue_bytes,
                kubernetes: crate::track::k8s::pod_of(l.resources.as_ref()),
                resources: l.resources,
            };
            if self.selected(&ps) {
                connections.insert(tgid, pc.connections);
                processes.push(ps);
            }
        }
        // Processes with connections from before the probe that have not accepted since.
        for (pid, pre) in &self.preexisting {
            if reading.procs.contains_key(pid) {
                continue;
            }
            let Some(id) = procinfo::identity(*pid) else { continue };
            if id.start_time != pre.start_time {
                continue;
            }
            let mut inodes = Vec::new();
            self.fds.walk(*pid, |dir, fd| inodes.extend(dir.socket_inode(fd)));
            let open = inodes.iter().filter(|i| pre.inodes.contains(i)).count() as u64;
            let table = match resources::tcp::netns(*pid) {
                Some(ns) if Some(ns) != mine => tables.get(&ns).unwrap_or(&host_table),
                _ => &host_table,
            };
            let resources = self.sampler.process(*pid);
            let ps = ProcessSnapshot {
                pid: *pid,
                comm: id.comm.clone(),
                cmdline: self.redact.command_line(&id.cmdline),
                listening_ports: listening_ports(inodes.iter(), table),
                preexisting_connections: open,
                unfollowed_connections: pre.at_attach,
                kubernetes: crate::track::k8s::pod_of(resources.as_ref()),
                resources,
                ..Default::default()
            };
            if (open > 0 || pre.at_attach > 0) && self.selected_by_filter(&ps) {
                processes.push(ps);
            }
        }
        for tgid in gone {
            self.sampler.forget(tgid);
            self.known.remove(&tgid);
            self.preexisting.remove(&tgid);
            if let Err(e) = maps::forget(&mut probe.ebpf, tgid) {
                warn!("cannot drop counters of exited process {tgid}: {e:#}");
            }
        }
        processes.sort_by_key(|p| p.pid);
        let mut totals = WebSocketStats::default();
        let mut sse_totals = SseStats::default();
        for p in &processes {
            totals.add(&p.websocket);
            sse_totals.add(&p.sse);
        }
        let host = self.sampler.host_with(ephemeral);
        let snapshot = Snapshot {
            timestamp: crate::util::time::rfc3339_millis(SystemTime::now()),
            agent: AgentInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()).unwrap_or_default(),
                started_at: crate::util::time::rfc3339(self.started_at),
                interval_seconds: self.cfg.interval.as_secs_f64(),
                snapshot_ms: t0.elapsed().as_secs_f64() * 1e3,
                snapshot_cpu_ms: thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e6,
            },
            sse_totals,
            probe: ProbeInfo {
                mode: probe.mode.as_str().into(),
                mode_reason: probe.reason.clone(),
                attached: probe.attached(),
                resumed: probe.resumed,
                pin_path: probe.pin_path.display().to_string(),
                events_received,
                health: ProbeHealth {
                    unfollowed_connections: processes.iter().map(|p| p.unfollowed_connections).sum(),
                    ..reading.health
                },
                bpf_stats_enabled: std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1"),
                programs: probe.program_stats(),
            },
            totals,
            host,
            processes,
        };
        Ok(Built { snapshot, connections })
    }

    /// Listed: processes with any WebSocket activity, pre-existing connections, or connections
    /// the probe saw but could not follow or parse (`closed_unread`, `unparsed_connections`: a
    /// miss is shown, never silent), within the configured port/process filters.
    fn selected(&self, p: &ProcessSnapshot) -> bool {
        let ws = &p.websocket;
        let active = ws.connections_opened > 0
            || ws.handshakes_failed > 0
            || p.preexisting_connections > 0
            || p.closed_unread > 0
            || ws.unparsed_connections > 0
            || p.sse.streams_opened > 0;
        active && self.selected_by_filter(p)
    }

    fn selected_by_filter(&self, p: &ProcessSnapshot) -> bool {
        let f = &self.cfg.probe;
        (f.processes.is_empty() || f.processes.contains(&p.comm))
            && (f.ports.is_empty() || p.exited || p.listening_ports.iter().any(|x| f.ports.contains(x)))
    }
}

/// A process's SSE counters as the snapshot shows them (`streams_active` = opened - closed).
fn sse_stats(p: &SseProcStats) -> SseStats {
    SseStats {
        streams_opened: p.opened,
        streams_active: p.opened.saturating_sub(p.closed),
        streams_closed: p.closed,
        events_sent: p.events,
        comments_sent: p.comments,
        payload_bytes_sent: p.payload_bytes,
        resumed_streams: p.resumed,
        closed_by_client: p.closed_by_client,
        closed_by_server: p.closed_by_server,
        unparseable_streams: p.unparseable,
        out_of_sync: p.out_of_sync,
    }
}

fn redactor(cfg: &TrackConfig) -> redact::Redactor {
    redact::Redactor::new(&cfg.privacy).unwrap_or_else(|_| {
        redact::Redactor::new(&redact::PrivacyConfig { redact_arguments: vec![".".into()] }).expect("valid regex")
    })
}

/// The limits of `cfg`; the key hasher stays for the agent's lifetime.
/// `[privacy]` was validated with the config; an invalid one (never loaded) keeps nothing.
fn limits(cfg: &TrackConfig, key_hasher: crate::track::keyhash::KeyHasher) -> Limits {
    Limits {
        quota: cfg.limits.per_client_connections,
        idle_after_s: cfg.limits.idle_after.as_secs_f64(),
        stall_after_s: cfg.limits.stall_after.as_secs_f64(),
        key_source: cfg.probe.client_key.source(),
        hash_keys: cfg.probe.client_key.hash,
        key_hasher,
    }
}

/// TCP ports a process listens on: its socket inodes that are listeners in its namespace's table.
fn listening_ports<'a>(inodes: impl Iterator<Item = &'a u64>, table: &resources::tcp::Table) -> Vec<u16> {
    let mut ports: Vec<u16> = inodes
        .filter_map(|i| table.by_inode.get(&(*i as u32)))
        .filter(|s| s.state == resources::tcp::LISTEN)
        .map(|s| s.local_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// CPU time of the calling thread (a snapshot is built on one thread).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every snapshot builds the per-connection views anew (tens of MiB at 50k connections) while
/// the API still serves the previous ones. glibc's malloc raises its mmap threshold dynamically
/// after such buffers are freed, and then keeps later ones on the heap, where freed memory stays
/// resident: measured at 19k idle connections, 39 MiB RSS with the default, 22 MiB with a fixed
/// 64 KiB threshold (big buffers are mmapped and returned to the OS when dropped). Process-wide;
/// called once when the tracker is made.
fn return_large_buffers_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}
