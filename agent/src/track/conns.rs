//! Per-connection detail and per-client aggregation, built from the probe's connection map and
//! the process's TCP sockets (peer address, queues; `resources::tcp`).

use std::{collections::HashMap, net::SocketAddr};

use serde::{Deserialize, Serialize};
use wsguard_common::{
    conn::{phase, ConnState},
    frame::DirCounters,
    sse::conn_flags,
};

use crate::{
    model::clients::{AgeBuckets, ClientCount, ClientsSnapshot},
    model::snapshot::Frames,
    model::sse::{SseConnStats, Transport},
    track::resources::tcp::Sock,
};

/// One WebSocket connection, as `GET /api/v1/processes/{pid}/connections` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionSnapshot {
    /// `websocket`, or `sse` for a Server-Sent Events stream (then `sse` says what it carried
    /// and the WebSocket fields stay zero).
    pub transport: Transport,
    pub fd: u32,
    pub id: u64,
    pub peer: Option<String>,
    pub client_key: String,
    pub age_seconds: f64,
    pub idle_seconds: f64,
    pub idle: bool,
    /// A ping the process sent has gone unanswered past `limits.stall_after`.
    pub stalled: bool,
    pub handshake_latency_ms: f64,
    pub ping_rtt_last_ms: Option<f64>,
    pub frames_received: Frames,
    pub frames_sent: Frames,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub payload_bytes_received: u64,
    pub payload_bytes_sent: u64,
    pub send_queue_bytes: u64,
    pub recv_queue_bytes: u64,
    pub out_of_sync: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseConnStats>,
}

/// What the per-connection pass yields for one process.
#[derive(Debug, Default)]
pub struct ProcessConns {
    pub connections: Vec<ConnectionSnapshot>,
    pub clients: ClientsSnapshot,
    pub ages: AgeBuckets,
    pub idle: u64,
    pub stalled: u64,
    pub send_queue_bytes: u64,
    pub recv_queue_bytes: u64,
}

/// Limits that classify connections.
pub struct Limits {
    pub quota: u64,
    pub idle_after_s: f64,
    pub stall_after_s: f64,
    pub key_source: String,
    pub hash_keys: bool,
    /// Keyed hash shown instead of a value (`keyhash.rs`).
    pub key_hasher: crate::track::keyhash::KeyHasher,
}

/// Current CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn client_key(c: &ConnState, peer: Option<&SocketAddr>, limits: &Limits) -> String {
    let k = &c.key;
    if k.found() {
        let raw_fits = k.key_len as u16 == k.total_len && k.total_len > 0;
        if raw_fits && !limits.hash_keys {
            return String::from_utf8_lossy(&k.key[..k.key_len as usize]).into_owned();
        }
        // Never the kernel's unkeyed FNV: it can be reversed by hashing guesses.
        return limits.key_hasher.shown(k.hash);
    }
    peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl ProcessConns {
    /// Add one tracked connection of the process; `sock` is its socket in the process's TCP
    /// table, when found. WebSocket connections and open SSE streams are both listed; the
    /// aggregates here (ages, idle, stalled, queues, clients) are WebSocket's alone, as their
    /// names in the API and `/metrics` say: streams have theirs in `sse.rs` (per-client counts
    /// with the same keys and the same quota, counted per transport).
    pub fn push(&mut self, fd: u32, c: &ConnState, sock: Option<&Sock>, limits: &Limits, now: u64) {
        if c.phase != phase::WEBSOCKET && c.phase != phase::SSE {
            return;
        }
        let peer = sock.map(|s| s.remote);
        let key = client_key(c, peer.as_ref(), limits);
        let age = ns_to_s(now.saturating_sub(c.upgraded_ns));
        let idle_s = ns_to_s(now.saturating_sub(c.last_rx_ns.max(c.last_tx_ns)));
        let idle = idle_s >= limits.idle_after_s;
        let stalled = c.ping_ns != 0 && ns_to_s(now.saturating_sub(c.ping_ns)) >= limits.stall_after_s;
        let (sq, rq) = sock.map(|s| (u64::from(s.send_queue), u64::from(s.recv_queue))).unwrap_or_default();
        let view = conn_view(fd, c, peer, key, age, idle_s, idle, stalled, sq, rq, now);
        self.connections.push(view);
        if c.phase != phase::WEBSOCKET {
            return;
        }
        match age {
            a if a < 300.0 => self.ages.under_5m += 1,
            a if a < 1800.0 => self.ages.from_5m_to_30m += 1,
            a if a < 7200.0 => self.ages.from_30m_to_2h += 1,
            _ => self.ages.over_2h += 1,
        }
        self.idle += idle as u64;
        self.stalled += stalled as u64;
        self.send_queue_bytes += sq;
        self.recv_queue_bytes += rq;
    }

    /// Clients (counted without copying a key per connection) and the order by fd.
    pub fn finish(&mut self, limits: &Limits) {
        let ws = self.connections.iter().filter(|c| c.transport == Transport::Websocket);
        self.clients = clients(ws.map(|c| c.client_key.as_str()), limits);
        self.connections.sort_by_key(|c| c.fd);
    }
}

/// Connections per client key (one key per connection), against `limits.quota`; the 10 with
/// the most connections in `top`. Shared by WebSocket connections and SSE streams (`sse.rs`).
pub fn clients<'a>(keys: impl Iterator<Item = &'a str>, limits: &Limits) -> ClientsSnapshot {
    let mut per_client: HashMap<&str, u64> = HashMap::new();
    for k in keys {
        *per_client.entry(k).or_default() += 1;
    }
    let mut top: Vec<(&str, u64)> = per_client.iter().map(|(k, n)| (*k, *n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ClientsSnapshot {
        key_source: limits.key_source.clone(),
        distinct: per_client.len() as u64,
        quota: limits.quota,
        at_or_over_quota: per_client.values().filter(|n| **n >= limits.quota).count() as u64,
        top: top.into_iter().take(10).map(|(k, n)| ClientCount { key: k.to_string(), connections: n }).collect(),
    }
}

/// Build the per-connection view of a process from its tracked connections: `(fd, state,
/// socket)` at monotonic time `now`. (The snapshot builds it incrementally with
/// [`ProcessConns::push`].)
#[cfg(test)]
pub fn process_conns(conns: &[(u32, &ConnState, Option<&Sock>)], limits: &Limits, now: u64) -> ProcessConns {
    let mut out = ProcessConns::default();
    for (fd, c, s) in conns {
        out.push(*fd, c, *s, limits, now);
    }
    out.finish(limits);
    out
}

#[allow(clippy::too_many_arguments)]
fn conn_view(
    fd: u32,
    c: &ConnState,
    peer: Option<SocketAddr>,
    client_key: String,
    age: f64,
    idle_s: f64,
    idle: bool,
    stalled: bool,
    sq: u64,
    rq: u64,
    now: u64,
) -> ConnectionSnapshot {
    let d = |x: &DirCounters| Frames::from(x);
    let (rx, tx) = (c.rx_counts(), c.tx_counts());
    ConnectionSnapshot {
        fd,
        id: c.id,
        peer: peer.map(|p| p.to_string()),
        client_key,
        age_seconds: age,
        idle_seconds: idle_s,
        idle,
        stalled,
        handshake_latency_ms: c.upgraded_ns.saturating_sub(c.request_ns) as f64 / 1e6,
        ping_rtt_last_ms: (c.rtt_count > 0).then(|| c.rtt_last_ns as f64 / 1e6),
        frames_received: d(&rx),
        frames_sent: d(&tx),
        messages_received: rx.messages,
        messages_sent: tx.messages,
        payload_bytes_received: rx.payload_bytes,
        payload_bytes_sent: tx.payload_bytes,
        send_queue_bytes: sq,
        recv_queue_bytes: rq,
        out_of_sync: c.out_of_sync != 0,
        transport: if c.phase == phase::SSE { Transport::Sse } else { Transport::Websocket },
        sse: (c.phase == phase::SSE).then(|| sse_view(c, now)),
    }
}

/// An open SSE stream's counters (`transport = sse`).
fn sse_view(c: &ConnState, now: u64) -> SseConnStats {
    let s = &c.sse;
    SseConnStats {
        events_sent: s.events,
        comments_sent: s.comments,
        payload_bytes_sent: s.payload_bytes,
        resumed: s.flags & conn_flags::RESUMED != 0,
        seconds_since_last_event: ns_to_s(now.saturating_sub(s.last_event_ns)),
        unparseable: s.flags & conn_flags::UNPARSEABLE != 0,
        out_of_sync: c.out_of_sync != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsguard_common::clientkey::KeyScan;

    fn limits(hash_keys: bool) -> Limits {
        let key_hasher = crate::track::keyhash::KeyHasher::new([7; 16]);
        Limits { quota: 2, idle_after_s: 60.0, stall_after_s: 30.0, key_source: "remote_ip".into(), hash_keys, key_hasher }
    }

    const S: u64 = 1_000_000_000;

    /// A WebSocket connection `age_s` old and idle for `idle_s` at `now`. The tests pick `now`
    /// themselves: the machine's monotonic clock starts at boot, so a real `now` can be smaller
    /// than any age a test wants (CI runs on machines up for minutes).
    fn ws(now: u64, age_s: u64, idle_s: u64) -> ConnState {
        ConnState {
            phase: phase::WEBSOCKET,
            upgraded_ns: now.checked_sub(age_s * S).expect("the test picks now > age"),
            last_rx_ns: now - idle_s * S,
            last_tx_ns: now - idle_s * S,
            ..Default::default()
        }
    }

    fn sock(peer: &str, sq: u32, rq: u32) -> Sock {
        Sock { state: 1, local_port: 8080, remote: peer.parse().unwrap(), send_queue: sq, recv_queue: rq }
    }

    /// Views, per-client counts and totals from the probe's states and the socket table; only
    /// WebSocket connections are listed, sorted by fd; clients are counted by key.
    #[test]
    fn views_and_clients() {
        let now = 3 * 3600 * S;
        let a = ws(now, 10, 100);
        let mut b = ws(now, 400, 1);
        b.ping_ns = now - 31 * S;
        let c = ws(now, 8000, 2);
        let handshaking = ConnState { phase: phase::UPGRADE_REQUESTED, ..Default::default() };
        let (sa, sb, sc) = (sock("10.0.0.1:1000", 5, 7), sock("10.0.0.1:1001", 1, 0), sock("10.0.0.2:1000", 0, 0));
        let pc = process_conns(
            &[(9, &c, Some(&sc)), (7, &a, Some(&sa)), (3, &handshaking, None), (8, &b, Some(&sb)), (5, &a, None)],
            &limits(false),
            now,
        );
        assert_eq!(pc.connections.iter().map(|c| c.fd).collect::<Vec<_>>(), vec![5, 7, 8, 9]);
        assert_eq!(pc.connections[1].peer.as_deref(), Some("10.0.0.1:1000"));
        assert_eq!(pc.connections[0].peer, None);
        assert_eq!(pc.connections[0].client_key, "unknown");
        assert_eq!((pc.idle, pc.stalled), (2, 1));
        assert_eq!((pc.send_queue_bytes, pc.recv_queue_bytes), (6, 7));
        assert_eq!(pc.ages, AgeBuckets { under_5m: 2, from_5m_to_30m: 1, from_30m_to_2h: 0, over_2h: 1 });
        assert_eq!(pc.clients.distinct, 3);
        assert_eq!(pc.clients.at_or_over_quota, 1);
        assert_eq!(
            pc.clients.top,
            vec![
                ClientCount { key: "10.0.0.1".into(), connections: 2 },
                ClientCount { key: "10.0.0.2".into(), connections: 1 },
                ClientCount { key: "unknown".into(), connections: 1 },
            ]
        );
    }

    /// An open SSE stream is listed (transport `sse`) but is not a WebSocket connection: the
    /// WebSocket aggregates (idle, ages, queues, clients) leave it to `sse.rs`.
    #[test]
    fn streams_are_listed_but_not_in_websocket_aggregates() {
        let now = 3 * 3600 * S;
        let a = ws(now, 10, 100);
        let stream = ConnState { phase: phase::SSE, ..ws(now, 10, 100) };
        let (sa, ss) = (sock("10.0.0.1:1000", 5, 7), sock("10.0.0.1:1001", 100, 200));
        let pc = process_conns(&[(4, &a, Some(&sa)), (6, &stream, Some(&ss))], &limits(false), now);
        let t: Vec<_> = pc.connections.iter().map(|c| (c.fd, c.transport, c.sse.is_some())).collect();
        assert_eq!(t, vec![(4, Transport::Websocket, false), (6, Transport::Sse, true)]);
        assert_eq!((pc.idle, pc.send_queue_bytes, pc.recv_queue_bytes), (1, 5, 7));
        assert_eq!(pc.ages, AgeBuckets { under_5m: 1, ..Default::default() });
        assert_eq!(pc.clients.top, vec![ClientCount { key: "10.0.0.1".into(), connections: 1 }]);
    }

    /// Shortly after boot `now` is smaller than the ages a long-running host sees, and the
    /// kernel may stamp a connection after the snapshot read the clock (it runs concurrently):
    /// neither underflows, ages and idle times clamp at zero.
    #[test]
    fn clock_near_boot_and_stamps_after_now() {
        let now = 5 * S;
        let boot = ConnState { phase: phase::WEBSOCKET, ..Default::default() };
        let ahead = ConnState {
            phase: phase::WEBSOCKET,
            upgraded_ns: now + S,
            last_rx_ns: now + 2 * S,
            ping_ns: now + S,
            ..Default::default()
        };
        let pc = process_conns(&[(4, &boot, None), (6, &ahead, None)], &limits(false), now);
        assert_eq!(pc.connections[0].age_seconds, 5.0);
        assert_eq!(pc.connections[0].idle_seconds, 5.0);
        assert_eq!((pc.connections[1].age_seconds, pc.connections[1].idle_seconds), (0.0, 0.0));
        assert_eq!((pc.idle, pc.stalled), (0, 0));
        assert_eq!(pc.ages.under_5m, 2);
        // The age buckets of `views_and_clients` hold for any `now` past the oldest age, even
        // one just past it, and whatever the machine's uptime is.
        let old = ws(8001 * S, 8000, 0);
        let pc = process_conns(&[(1, &old, None)], &limits(false), 8001 * S);
        assert_eq!(pc.ages.over_2h, 1);
    }

    /// A captured key wins over the peer address; hashed when asked or when it did not fit.
    #[test]
    fn client_keys() {
        let mut c = ConnState::default();
        let peer: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        let (raw, hashed) = (limits(false), limits(true));
        assert_eq!(client_key(&c, Some(&peer), &raw), "::ffff:127.0.0.1");
        let mut k = KeyScan { hash: 0xabc, key_len: 3, total_len: 3, state: 4, ..Default::default() };
        k.key[..3].copy_from_slice(b"bob");
        c.key = k;
        assert!(c.key.found());
        assert_eq!(client_key(&c, Some(&peer), &raw), "bob");
        // The keyed hash of the kernel's hash, never the kernel's hash itself.
        let shown = raw.key_hasher.shown(0xabc);
        assert_eq!(client_key(&c, Some(&peer), &hashed), shown);
        assert!(shown.starts_with("h:") && shown.len() == 18 && shown != "h:0000000000000abc", "{shown}");
        c.key.total_len = 40;
        assert_eq!(client_key(&c, None, &raw), shown);
    }
}
