//! Host resources that bound every WebSocket server on the machine: CPU, memory, load, the TCP
//! socket table, accept-queue overflows, conntrack and ephemeral ports. Network figures are read
//! from the agent's own network namespace (/proc/net, /proc/sys/net): run the agent in the host
//! namespace (systemd service, or `hostNetwork: true` in a DaemonSet).

use crate::model::resources::HostResources;
use procfs::{net::TcpState, Current, CurrentSI, KernelStats, LoadAverage, Meminfo};
use tracing::debug;

/// Cumulative counters the sampler keeps to compute deltas.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Marks {
    /// (busy, total) ticks of the aggregate cpu line.
    pub cpu: Option<(u64, u64)>,
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
}

/// Samples the host and updates `marks` with the new counters. `ephemeral_in_use`: already
/// counted by the caller (else /proc/net/tcp{,6} are read for it).
pub(super) fn read(marks: &mut Marks, ephemeral_in_use: Option<u64>) -> HostResources {
    let mut h = HostResources::default();

    match KernelStats::current() {
        Ok(ks) => {
            h.cpus = Some(ks.cpu_time.len() as u64);
            let t = &ks.total;
            let idle = t.idle + t.iowait.unwrap_or(0);
            // guest time is already part of user time.
            let total = t.user + t.nice + t.system + idle + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + t.steal.unwrap_or(0);
            let now = (total - idle, total);
            h.cpu_percent = marks.cpu.and_then(|prev| cpu_percent(prev, now));
            marks.cpu = Some(now);
        }
        Err(e) => debug!("/proc/stat: {e}"),
    }

    match Meminfo::current() {
        Ok(m) => {
            // MemAvailable exists since 3.14; before, free + page cache is the usual estimate.
            let avail = m.mem_available.unwrap_or(m.mem_free + m.buffers + m.cached);
            h.memory_total_bytes = Some(m.mem_total);
            h.memory_available_bytes = Some(avail);
            h.memory_used_ratio = (m.mem_total > 0).then(|| 1.0 - avail as f64 / m.mem_total as f64);
        }
        Err(e) => debug!("/proc/meminfo: {e}"),
    }

    match LoadAverage::current() {
        Ok(l) => {
            // The kernel keeps two decimals; f32 → f64 would show 8.930000305175781.
            let two = |v: f32| Some((f64::from(v) * 100.0).round() / 100.0);
            (h.load_1, h.load_5, h.load_15) = (two(l.one), two(l.five), two(l.fifteen));
        }
        Err(e) => debug!("/proc/loadavg: {e}"),
    }

    if let Some(s) = read_text("/proc/net/sockstat") {
        let v6 = read_text("/proc/net/sockstat6").and_then(|t| sockstat_value(&t, "TCP6", "inuse"));
        h.tcp_sockets_inuse = sockstat_value(&s, "TCP", "inuse").map(|v4| v4 + v6.unwrap_or(0));
        h.tcp_sockets_orphan = sockstat_value(&s, "TCP", "orphan");
        h.tcp_sockets_tw = sockstat_value(&s, "TCP", "tw");
    }

    if let Some(t) = read_text("/proc/net/netstat") {
        let ext = parse_netstat(&t, "TcpExt");
        h.listen_overflows_total = ext.get("ListenOverflows").copied();
        h.listen_drops_total = ext.get("ListenDrops").copied();
    }
    h.listen_overflows_delta = delta(marks.listen_overflows, h.listen_overflows_total);
    h.listen_drops_delta = delta(marks.listen_drops, h.listen_drops_total);
    marks.listen_overflows = h.listen_overflows_total;
    marks.listen_drops = h.listen_drops_total;

    // Missing when the nf_conntrack module is not loaded: no conntrack table to fill up.
    h.conntrack_count = read_text("/proc/sys/net/netfilter/nf_conntrack_count").and_then(|t| t.trim().parse().ok());
    h.conntrack_max = read_text("/proc/sys/net/netfilter/nf_conntrack_max").and_then(|t| t.trim().parse().ok());

    h.ephemeral_ports_range = read_text("/proc/sys/net/ipv4/ip_local_port_range").and_then(|t| parse_port_range(&t));
    if let (Some((low, high)), Some(in_use)) = (h.ephemeral_ports_range, ephemeral_in_use) {
        h.ephemeral_ports_in_use = Some(in_use);
        h.ephemeral_ports_usage_ratio = Some(in_use as f64 / (f64::from(high) - f64::from(low) + 1.0));
    } else if let Some((low, high)) = h.ephemeral_ports_range {
        let tables: Vec<_> = [procfs::net::tcp(), procfs::net::tcp6()]
            .into_iter()
            .filter_map(|t| t.map_err(|e| debug!("/proc/net/tcp: {e}")).ok())
            .collect();
        if !tables.is_empty() {
            let in_use = tables
                .iter()
                .flatten()
                .filter(|e| e.state != TcpState::Listen && (low..=high).contains(&e.local_address.port()))
                .count() as u64;
            h.ephemeral_ports_in_use = Some(in_use);
            h.ephemeral_ports_usage_ratio = Some(in_use as f64 / (f64::from(high) - f64::from(low) + 1.0));
        }
    }
    h
}

/// Busy share of all CPUs between two (busy, total) tick marks.
fn cpu_percent(prev: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let total = now.1.checked_sub(prev.1).filter(|&t| t > 0)?;
    let busy = now.0.saturating_sub(prev.0);
    Some((busy as f64 / total as f64 * 100.0).min(100.0))
}

/// Growth of a cumulative counter. A counter that went backwards was reset (network namespace
/// recreated), so its whole current value is new.
fn delta(prev: Option<u64>, now: Option<u64>) -> Option<u64> {
    let (prev, now) = (prev?, now?);
    Some(if now >= prev { now - prev } else { now })
}

fn read_text(path: &str) -> Option<String> {
    std::fs::read_to_string(path).map_err(|e| debug!("{path}: {e}")).ok()
}

/// A value of /proc/net/sockstat{,6}: lines `PROTO: key value key value ...`.
pub fn sockstat_value(text: &str, proto: &str, key: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(proto)?.strip_prefix(':'))?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    words.chunks_exact(2).find(|kv| kv[0] == key)?[1].parse().ok()
}

/// One section of /proc/net/netstat or /proc/net/snmp: pairs of lines `Section: names...` and
/// `Section: values...`. Unknown or unparsable values are left out.
pub fn parse_netstat(text: &str, section: &str) -> std::collections::HashMap<String, u64> {
    let prefix = format!("{section}:");
    let mut rows = text.lines().filter_map(|l| l.strip_prefix(prefix.as_str()));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else { return Default::default() };
    names.split_whitespace().zip(values.split_whitespace()).filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?))).collect()
}

/// The ephemeral port range now (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    read_text("/proc/sys/net/ipv4/ip_local_port_range").and_then(|t| parse_port_range(&t))
}

/// `net.ipv4.ip_local_port_range`: "low<TAB>high".
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut w = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (w.next()?.ok()?, w.next()?.ok()?);
    (low <= high).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_fixture() {
        let t = "sockets: used 2113\n\
                 TCP: inuse 1542 orphan 3 tw 87 alloc 1601 mem 412\n\
                 UDP: inuse 12 mem 8\n\
                 UDPLITE: inuse 0\n";
        assert_eq!(sockstat_value(t, "TCP", "inuse"), Some(1542));
        assert_eq!(sockstat_value(t, "TCP", "orphan"), Some(3));
        assert_eq!(sockstat_value(t, "TCP", "tw"), Some(87));
        assert_eq!(sockstat_value(t, "TCP", "used"), None);
        assert_eq!(sockstat_value(t, "UDP", "mem"), Some(8));
        // "TCP6" must not match "TCP".
        let t6 = "TCP6: inuse 40\nUDP6: inuse 2\n";
        assert_eq!(sockstat_value(t6, "TCP", "inuse"), None);
        assert_eq!(sockstat_value(t6, "TCP6", "inuse"), Some(40));
    }

    #[test]
    fn netstat_fixture() {
        let t = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeouts\n\
                 TcpExt: 0 0 17 21 3044\n\
                 IpExt: InNoRoutes InTruncatedPkts\n\
                 IpExt: 0 0\n";
        let ext = parse_netstat(t, "TcpExt");
        assert_eq!(ext.get("ListenOverflows"), Some(&17));
        assert_eq!(ext.get("ListenDrops"), Some(&21));
        assert_eq!(ext.len(), 5);
        assert_eq!(parse_netstat(t, "IpExt").get("InNoRoutes"), Some(&0));
        assert!(parse_netstat(t, "Tcp").is_empty());
    }

    #[test]
    fn port_range_fixture() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
    }

    #[test]
    fn deltas() {
        assert_eq!(delta(None, Some(5)), None);
        assert_eq!(delta(Some(5), Some(9)), Some(4));
        assert_eq!(delta(Some(9), Some(2)), Some(2));
        assert_eq!(cpu_percent((100, 1000), (150, 1100)), Some(50.0));
        assert_eq!(cpu_percent((100, 1000), (100, 1000)), None);
    }
}
