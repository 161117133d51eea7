//! Reading the probe's maps into plain userspace values, once per snapshot.

use std::collections::HashMap;

use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    Ebpf,
};
use wsguard_common::{
    clientkey::KeyConfig,
    conn::{owed, ConnKey, ConnState},
    hist::Hists,
    names,
    stats::{global, CloseCodeKey, ProcStats},
};

use crate::model::probe::{CloseCodes, ProbeHealth};

/// The small maps, read at one instant (each once, in order). The connection map is read
/// separately, entry by entry into the caller ([`Reader::for_each_conn`]): it is never copied
/// whole into one buffer.
#[derive(Default)]
pub struct Reading {
    pub procs: HashMap<u32, ProcStats>,
    pub close_codes: HashMap<u32, CloseCodes>,
    pub hists: HashMap<u32, Hists>,
    pub health: ProbeHealth,
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<BpfHashMap<&'a MapData, K, V>> {
    let map = ebpf.map(name).with_context(|| format!("map {name} missing"))?;
    BpfHashMap::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn per_cpu_procs(ebpf: &Ebpf) -> anyhow::Result<PerCpuHashMap<&MapData, u32, ProcStats>> {
    let map = ebpf.map(names::PROCS).context("map WSG_PROCS missing")?;
    PerCpuHashMap::try_from(map).context("map WSG_PROCS has an unexpected type")
}

/// The process record: the sum of its per-CPU copies.
fn sum(values: &PerCpuValues<ProcStats>) -> ProcStats {
    let mut total = ProcStats::default();
    for v in values.iter() {
        total.merge(v);
    }
    total
}

/// Reads the maps; keeps its buffers between snapshots.
pub struct Reader {
    conns: super::batch::Batch<ConnKey, ConnState>,
}

impl Default for Reader {
    fn default() -> Self {
        // 1024 entries (~380 KiB) per syscall.
        Reader { conns: super::batch::Batch::new(1024) }
    }
}

impl Reader {
    pub fn read(&mut self, ebpf: &Ebpf, conn_capacity: u32) -> anyhow::Result<Reading> {
        let mut r = Reading::default();
        for item in per_cpu_procs(ebpf)?.iter() {
            let (tgid, per_cpu) = item?;
            r.procs.insert(tgid, sum(&per_cpu));
        }
        let codes: BpfHashMap<_, CloseCodeKey, u64> = hash_map(ebpf, names::CLOSE_CODES)?;
        for item in codes.iter() {
            let (k, n) = item?;
            let e = r.close_codes.entry(k.tgid).or_default();
            let side = if k.dir == 0 { &mut e.received } else { &mut e.sent };
            side.insert(k.code, n);
        }
        let hists: BpfHashMap<_, u32, Hists> = hash_map(ebpf, names::HISTS)?;
        for (tgid, h) in hists.iter().flatten() {
            r.hists.insert(tgid, h);
        }
        let g: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map(names::GLOBAL).context("map WSG_GLOBAL missing")?)?;
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(g.get(&i, 0)?.iter().sum()) };
        r.health = ProbeHealth {
            conn_map_full: sum(global::CONN_MAP_FULL)?,
            proc_map_full: sum(global::PROC_MAP_FULL)?,
            ring_drops: sum(global::RING_DROPS)?,
            walk_budget_exceeded: sum(global::WALK_BUDGET)?,
            read_faults: sum(global::READ_FAULTS)?,
            close_code_map_full: sum(global::CLOSE_CODE_MAP_FULL)?,
            sk_storage_full: sum(global::SK_STORAGE_FULL)?,
            ended_unattributed: sum(global::ENDED_UNATTRIBUTED)?,
            tls_map_full: sum(global::TLS_MAP_FULL)?,
            tls_unlinked: sum(global::TLS_UNLINKED)?,
            tls_unseen: sum(global::TLS_UNSEEN)?,
            conn_map_entries: 0,
            conn_map_capacity: conn_capacity as u64,
            unfollowed_connections: 0,
        };
        Ok(r)
    }

    /// Every followed connection: in the syscall mode every entry of the connection map, in
    /// batches of 1024 (a few syscalls, a fixed buffer); in the socket mode one pass of the
    /// socket iterator. Returns how many there were.
    pub fn for_each_conn(&mut self, probe: &super::Probe, mut f: impl FnMut(&ConnKey, &ConnState)) -> anyhow::Result<u64> {
        if probe.mode == super::Mode::Socket {
            return super::sock::for_each_conn(&probe.pin_path, f);
        }
        let conns: BpfHashMap<_, ConnKey, ConnState> = hash_map(&probe.ebpf, names::CONNS)?;
        let fd = conns.map().fd().as_fd().as_raw_fd();
        let mut n = 0u64;
        self.conns
            .read(fd, |k, c| {
                n += 1;
                f(k, c)
            })
            .context("batched read of WSG_CONNS (BPF_MAP_LOOKUP_BATCH needs Linux 5.6)")?;
        Ok(n)
    }
}

/// A process that exited with connections still tracked never called `close` on them: end them
/// in the maps (counted closed, and abnormal unless a close frame had been received; payload
/// bytes the process was still owed are credited, as the probe's close does) and drop their
/// entries. `mine`: its entries, read in the snapshot's pass over the connection map. Only
/// called for processes that are gone, so no kernel writer races with it.
///
/// The socket mode has nothing to do here: the kernel closes an exited process's sockets and the
/// probe counts their end itself (at `TCP_CLOSE`, for the last process that used them).
pub fn reap_exited(ebpf: &mut Ebpf, tgid: u32, mine: &[(ConnKey, ConnState)]) -> anyhow::Result<()> {
    if ebpf.map(names::CONNS).is_none() {
        return Ok(());
    }
    let mut conns: BpfHashMap<_, ConnKey, ConnState> =
        BpfHashMap::try_from(ebpf.map_mut(names::CONNS).context("map WSG_CONNS missing")?)?;
    for (k, _) in mine {
        let _ = conns.remove(k);
    }
    let (mut closed, mut abnormal, mut failed, mut owed_rx, mut owed_tx, mut sse_closed) = (0, 0, 0, 0, 0, 0);
    for (_, c) in mine {
        match c.phase {
            wsguard_common::conn::phase::WEBSOCKET => {
                closed += 1;
                owed_rx += owed(&c.rx, &c.rx_data, &c.rx_owed_from);
                owed_tx += owed(&c.tx, &c.tx_data, &c.tx_owed_from);
                if c.close_rx_seen == 0 && c.out_of_sync == 0 {
                    abnormal += 1;
                }
            }
            wsguard_common::conn::phase::UPGRADE_REQUESTED => failed += 1,
            // An SSE stream of an exited process: closed, by nobody this mode can tell.
            wsguard_common::conn::phase::SSE => sse_closed += 1,
            _ => {}
        }
    }
    let mut procs: PerCpuHashMap<_, u32, ProcStats> =
        PerCpuHashMap::try_from(ebpf.map_mut(names::PROCS).context("map WSG_PROCS missing")?)?;
    if let Ok(per_cpu) = procs.get(&tgid, 0) {
        // Added to the first CPU's copy; the process's numbers are the sum of all copies.
        let mut v: Vec<ProcStats> = per_cpu.to_vec();
        if let Some(p) = v.first_mut() {
            p.closed += closed;
            p.abnormal_closes += abnormal;
            p.handshakes_failed += failed;
            p.sse.closed += sse_closed;
            p.rx.payload(owed_rx);
            p.tx.payload(owed_tx);
        }
        procs.insert(tgid, PerCpuValues::try_from(v)?, 0)?;
    }
    Ok(())
}

/// Forget a process's counters (after it exited and its last numbers were reported).
pub fn forget(ebpf: &mut Ebpf, tgid: u32) -> anyhow::Result<()> {
    let mut procs: PerCpuHashMap<_, u32, ProcStats> =
        PerCpuHashMap::try_from(ebpf.map_mut(names::PROCS).context("map WSG_PROCS missing")?)?;
    let _ = procs.remove(&tgid);
    let mut hists: BpfHashMap<_, u32, Hists> =
        BpfHashMap::try_from(ebpf.map_mut(names::HISTS).context("map WSG_HISTS missing")?)?;
    let _ = hists.remove(&tgid);
    let mut codes: BpfHashMap<_, CloseCodeKey, u64> =
        BpfHashMap::try_from(ebpf.map_mut(names::CLOSE_CODES).context("map WSG_CLOSE_CODES missing")?)?;
    let keys: Vec<CloseCodeKey> = codes.keys().filter_map(Result::ok).filter(|k| k.tgid == tgid).collect();
    for k in keys {
        let _ = codes.remove(&k);
    }
    Ok(())
}

/// One process's counters, read now.
/// The probe has a connection-map entry for `(tgid, fd)` (it saw the accept; the entry lasts
/// until the close, or until the connection turned out not to be WebSocket).
pub fn conn_tracked(ebpf: &Ebpf, tgid: u32, fd: u32) -> bool {
    hash_map::<ConnKey, ConnState>(ebpf, names::CONNS).is_ok_and(|m| m.get(&ConnKey { tgid, fd }, 0).is_ok())
}

pub fn read_proc(ebpf: &Ebpf, tgid: u32) -> anyhow::Result<ProcStats> {
    Ok(sum(&per_cpu_procs(ebpf)?.get(&tgid, 0)?))
}

/// Set the watched bit of `pids` (only safe while the programs are not attached yet).
pub fn mark_watched(ebpf: &mut Ebpf, pids: &[u32]) -> anyhow::Result<()> {
    let mut words: Array<_, u64> = Array::try_from(ebpf.map_mut(names::WATCHED).context("map WSG_WATCHED missing")?)?;
    for &pid in pids {
        if pid >= wsguard_common::PID_MAX_LIMIT {
            continue;
        }
        let i = pid >> 6;
        let w = words.get(&i, 0)?;
        words.set(i, w | (1u64 << (pid & 63)), 0)?;
    }
    Ok(())
}

/// Record the layout version in the pinned maps (at a fresh attach).
pub fn set_layout(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let mut a: Array<_, u32> = Array::try_from(ebpf.map_mut(names::LAYOUT).context("map WSG_LAYOUT missing")?)?;
    a.set(0, wsguard_common::LAYOUT_VERSION, 0)?;
    Ok(())
}

/// Tell the probe which client key to capture from upgrade requests.
pub fn set_key_config(ebpf: &mut Ebpf, cfg: &crate::probe::config::ClientKeyConfig) -> anyhow::Result<()> {
    let kc = KeyConfig::new(cfg.header.as_deref(), cfg.query.as_deref(), cfg.hash)
        .context("probe.client_key: header/query name too long")?;
    let mut a: Array<_, KeyConfig> = Array::try_from(ebpf.map_mut(names::KEY_CONFIG).context("map WSG_KEY_CONFIG missing")?)?;
    a.set(0, kc, 0)?;
    Ok(())
}
