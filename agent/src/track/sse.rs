//! The per-process gauges of open Server-Sent Events streams (`ProcessSnapshot.sse_streams`),
//! folded from the per-connection view: idle streams, the quietest stream, streams per client.
//! Counters come from the probe; these need each stream's own state, which only the
//! connection list holds. Pure: the caller passes the connections and the limits.

use super::conns::{clients, ConnectionSnapshot, Limits};
use crate::model::sse::{SseStreams, Transport};

/// The open SSE streams among `conns` (transport `sse`), with the same client keys, quota and
/// `idle_after` as WebSocket connections.
pub fn streams(conns: &[ConnectionSnapshot], limits: &Limits) -> SseStreams {
    let mut out = SseStreams::default();
    let open = || conns.iter().filter(|c| c.transport == Transport::Sse);
    for c in open() {
        let quiet = c.sse.as_ref().map_or(c.idle_seconds, |s| s.seconds_since_last_event);
        out.idle += u64::from(quiet >= limits.idle_after_s);
        out.max_seconds_since_last_event = out.max_seconds_since_last_event.max(quiet);
    }
    out.clients = clients(open().map(|c| c.client_key.as_str()), limits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        clients::{ClientCount, ClientsSnapshot},
        sse::SseConnStats,
    };

    fn limits() -> Limits {
        let key_hasher = crate::track::keyhash::KeyHasher::new([7; 16]);
        Limits { quota: 2, idle_after_s: 60.0, stall_after_s: 30.0, key_source: "remote_ip".into(), hash_keys: false, key_hasher }
    }

    fn stream(key: &str, quiet: f64) -> ConnectionSnapshot {
        ConnectionSnapshot {
            transport: Transport::Sse,
            client_key: key.into(),
            idle_seconds: 1.0,
            sse: Some(SseConnStats { seconds_since_last_event: quiet, ..Default::default() }),
            ..Default::default()
        }
    }

    /// Only SSE streams count; idle is judged by the time since the last *event* (not since the
    /// last byte: keep-alives move bytes); clients are counted against the shared quota.
    #[test]
    fn idle_quietest_and_clients_of_streams_only() {
        let ws = ConnectionSnapshot { client_key: "10.0.0.9".into(), idle_seconds: 500.0, ..Default::default() };
        let conns = [stream("10.0.0.1", 61.0), stream("10.0.0.1", 5.0), stream("10.0.0.2", 120.5), ws];
        let s = streams(&conns, &limits());
        assert_eq!(s.idle, 2);
        assert_eq!(s.max_seconds_since_last_event, 120.5);
        assert_eq!(s.clients.distinct, 2);
        assert_eq!(s.clients.at_or_over_quota, 1);
        assert_eq!(s.clients.quota, 2);
        assert_eq!(s.clients.top[0], ClientCount { key: "10.0.0.1".into(), connections: 2 });
        assert_eq!(
            streams(&conns[3..], &limits()),
            SseStreams {
                clients: ClientsSnapshot { key_source: "remote_ip".into(), quota: 2, ..Default::default() },
                ..Default::default()
            }
        );
    }
}
