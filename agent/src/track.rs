//! Turns map readings into snapshots, and keeps what must persist between intervals: process
//! identities (to tell an exit or a reused pid), connections that predate the probe, and the
//! final numbers of processes that exited.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::{
    config::Config,
    conns::{self, ConnectionSnapshot, Limits},
    probe::{maps, Probe},
    procinfo::{self, Identity},
    resources::Sampler,
    snapshot::{AgentInfo, Latencies, ProbeInfo, ProcessSnapshot, Quantiles, Rates, Snapshot, WebSocketStats},
};
use wsguard_common::hist::which;

/// How long an exited process stays in snapshots with its final numbers.
const EXITED_RETENTION: Duration = Duration::from_secs(300);
const PREEXISTING_FILE: &str = "preexisting.json";

/// Connections a process held when the probe attached, by socket inode.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Preexisting {
    start_time: u64,
    inodes: HashSet<u64>,
}

struct Known {
    id: Identity,
    exited_at: Option<Instant>,
    /// Cumulative numbers at the previous snapshot, for rates.
    prev: Option<(Instant, WebSocketStats)>,
    /// Listening ports at the last snapshot while alive: an exited process keeps them, so its
    /// final numbers stay under the same metric labels.
    ports: Vec<u16>,
}

/// A snapshot plus each process's connection list (served separately: it can be large).
pub struct Built {
    pub snapshot: Snapshot,
    pub connections: HashMap<u32, Vec<ConnectionSnapshot>>,
}

pub struct Tracker {
    cfg: Config,
    started_at: SystemTime,
    known: HashMap<u32, Known>,
    preexisting: HashMap<u32, Preexisting>,
    sampler: Sampler,
    limits: Limits,
}

impl Tracker {
    /// A new tracker. On a fresh attach it records the inbound connections already open (and
    /// saves them, so a resumed agent keeps reporting them); on resume it loads that record.
    pub fn new(cfg: &Config, scan: Option<HashMap<u32, HashSet<u64>>>) -> Self {
        let state_file = cfg.agent.state_dir.join(PREEXISTING_FILE);
        let preexisting = match scan {
            None => std::fs::read(&state_file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            Some(scan) => {
            let found: HashMap<u32, Preexisting> = scan
                .into_iter()
                .filter_map(|(pid, inodes)| {
                    let id = procinfo::identity(pid)?;
                    Some((pid, Preexisting { start_time: id.start_time, inodes }))
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
            limits: Limits {
                quota: cfg.limits.per_client_connections,
                idle_after_s: cfg.limits.idle_after.as_secs_f64(),
                stall_after_s: cfg.limits.stall_after.as_secs_f64(),
                key_source: cfg.probe.client_key.source(),
                hash_keys: cfg.probe.client_key.hash,
            },
        }
    }

    /// A reloaded config (SIGHUP, `reload.rs`): limits and process filters apply from the
    /// next snapshot. Keys that need a restart arrive unchanged.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.limits = limits(cfg);
        self.cfg = cfg.clone();
    }

    /// Build a snapshot from the probe's maps and /proc.
    pub fn snapshot(&mut self, probe: &mut Probe, events_received: u64) -> anyhow::Result<Built> {
        let t0 = Instant::now();
        let reading = maps::read(&probe.ebpf, self.cfg.probe.max_connections)?;
        let sockets = procinfo::tcp_sockets();
        let mut processes = Vec::new();
        let mut connections = HashMap::new();
        let mut gone = Vec::new();
        let mut by_pid: HashMap<u32, Vec<(u32, &wsguard_common::conn::ConnState)>> = HashMap::new();
        for (k, c) in &reading.conns {
            by_pid.entry(k.tgid).or_default().push((k.fd, c));
        }

        for (tgid, stats) in &reading.procs {
            let tgid = *tgid;
            let live = procinfo::identity(tgid);
            let known = self.known.entry(tgid).or_insert_with(|| Known {
                id: live.clone().unwrap_or_default(),
                exited_at: None,
                prev: None,
                ports: Vec::new(),
            });
            let alive = matches!(&live, Some(id) if id.start_time == known.id.start_time);
            if !alive && known.exited_at.is_none() {
                // Its remaining connections ended with it; no close was seen for them.
                if let Err(e) = maps::reap_exited(&mut probe.ebpf, tgid) {
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
            if exited {
                // The reap above updated the map after this reading; report the final numbers.
                if let Ok(fin) = maps::read_proc(&probe.ebpf, tgid) {
                    ws = WebSocketStats::from_probe(&fin, reading.close_codes.get(&tgid));
                }
            }
            if !exited {
                known.ports = procinfo::listening_ports(tgid, &sockets);
            }
            let ports = known.ports.clone();
            let now = Instant::now();
            let rates = known.prev.as_ref().map(|(t, p)| Rates::between(p, &ws, now.duration_since(*t).as_secs_f64()));
            known.prev = Some((now, ws.clone()));
            let pre = self.preexisting_open(tgid, id.start_time, !exited);
            let latency = reading.hists.get(&tgid).map(|h| Latencies {
                handshake: Quantiles::from_hist(&h.h[which::HANDSHAKE]),
                ping_rtt: Quantiles::from_hist(&h.h[which::PING_RTT]),
                response: Quantiles::from_hist(&h.h[which::RESPONSE]),
            });
            let pc = if exited {
                conns::ProcessConns::default()
            } else {
                conns::process_conns(tgid, by_pid.get(&tgid).map(Vec::as_slice).unwrap_or(&[]), &self.limits)
            };
            let resources = if exited { None } else { self.sampler.process(tgid) };
            let ps = ProcessSnapshot {
                pid: tgid,
                comm: id.comm,
                cmdline: id.cmdline.join(" "),
                listening_ports: ports,
                exited,
                preexisting_connections: pre,
                tcp_accepted: stats.accepted,
                not_websocket: stats.not_websocket,
                websocket: ws,
                rates,
                latency: latency.unwrap_or_default(),
                clients: pc.clients,
                connection_ages: pc.ages,
                connections_idle: pc.idle,
                connections_stalled: pc.stalled,
                send_queue_bytes: pc.send_queue_bytes,
                recv_queue_bytes: pc.recv_queue_bytes,
                kubernetes: crate::k8s::pod_of(resources.as_ref()),
                resources,
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
            let open = procinfo::socket_inodes(*pid).intersection(&pre.inodes).count() as u64;
            let resources = self.sampler.process(*pid);
            let ps = ProcessSnapshot {
                pid: *pid,
                comm: id.comm.clone(),
                cmdline: id.cmdline.join(" "),
                listening_ports: procinfo::listening_ports(*pid, &sockets),
                preexisting_connections: open,
                kubernetes: crate::k8s::pod_of(resources.as_ref()),
                resources,
                ..Default::default()
            };
            if open > 0 && self.selected_by_filter(&ps) {
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
        for p in &processes {
            totals.add(&p.websocket);
        }
        let host = self.sampler.host();
        let snapshot = Snapshot {
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            agent: AgentInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
                interval_seconds: self.cfg.agent.interval.as_secs_f64(),
                snapshot_ms: t0.elapsed().as_secs_f64() * 1e3,
            },
            probe: ProbeInfo {
                attached: probe.attached(),
                resumed: probe.resumed,
                pin_path: probe.pin_path.display().to_string(),
                events_received,
                health: reading.health,
                bpf_stats_enabled: std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                    .is_ok_and(|s| s.trim() == "1"),
                programs: probe.program_stats(),
            },
            totals,
            host,
            processes,
        };
        Ok(Built { snapshot, connections })
    }

    fn preexisting_open(&self, pid: u32, start_time: u64, alive: bool) -> u64 {
        match self.preexisting.get(&pid) {
            Some(pre) if alive && pre.start_time == start_time => {
                procinfo::socket_inodes(pid).intersection(&pre.inodes).count() as u64
            }
            _ => 0,
        }
    }

    /// Listed: processes with any WebSocket activity (or pre-existing connections), within the
    /// configured port/process filters.
    fn selected(&self, p: &ProcessSnapshot) -> bool {
        let ws = &p.websocket;
        let active = ws.connections_opened > 0 || ws.handshakes_failed > 0 || p.preexisting_connections > 0;
        active && self.selected_by_filter(p)
    }

    fn selected_by_filter(&self, p: &ProcessSnapshot) -> bool {
        let f = &self.cfg.probe;
        (f.processes.is_empty() || f.processes.contains(&p.comm))
            && (f.ports.is_empty() || p.exited || p.listening_ports.iter().any(|x| f.ports.contains(x)))
    }
}

/// The limits of `cfg` (as `Tracker::new` builds them).
fn limits(cfg: &Config) -> Limits {
    Limits {
        quota: cfg.limits.per_client_connections,
        idle_after_s: cfg.limits.idle_after.as_secs_f64(),
        stall_after_s: cfg.limits.stall_after.as_secs_f64(),
        key_source: cfg.probe.client_key.source(),
        hash_keys: cfg.probe.client_key.hash,
    }
}
