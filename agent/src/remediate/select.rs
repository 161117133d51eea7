//! Which connections `close_connections` picks: pure functions over the tracker's per-connection
//! view, so the choice is unit-tested without a kernel. The bounds (`max_count`,
//! `max_fraction`) apply after the selector, whatever it chose.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{Order, SelectBy, SelectConfig};
use crate::{model::sse::Transport, track::conns::ConnectionSnapshot};

/// One connection chosen to be closed: enough to find its socket again and to tell whether it
/// is still the same connection when the action runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    pub fd: u32,
    /// The probe's connection id.
    pub id: u64,
    /// Remote address as the tracker saw it (`ip:port`).
    pub peer: Option<String>,
    pub client: String,
    pub idle_seconds: f64,
    pub age_seconds: f64,
    /// `websocket`, or `sse` for a Server-Sent Events stream.
    #[serde(default)]
    pub transport: Transport,
    /// SSE streams: seconds since their last event when chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_since_last_event: Option<f64>,
}

/// Seconds since an SSE stream's last event (since it began if none yet); None for WebSocket.
fn quiet_seconds(c: &ConnectionSnapshot) -> Option<f64> {
    (c.transport == Transport::Sse).then(|| c.sse.as_ref().map_or(c.idle_seconds, |s| s.seconds_since_last_event))
}

impl From<&ConnectionSnapshot> for Chosen {
    fn from(c: &ConnectionSnapshot) -> Self {
        Chosen {
            fd: c.fd,
            id: c.id,
            peer: c.peer.clone(),
            client: c.client_key.clone(),
            idle_seconds: c.idle_seconds,
            age_seconds: c.age_seconds,
            transport: c.transport,
            seconds_since_last_event: quiet_seconds(c),
        }
    }
}

/// The selection and how the bounds cut it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub chosen: Vec<Chosen>,
    /// Matched by the selector before the bounds.
    pub matched: usize,
    /// The process's connections of the selected transport.
    pub total: usize,
    /// The bound that applied: min(max_count, floor(max_fraction × total)).
    pub limit: usize,
}

/// Connections to close among `conns` (all of one process), only those of the selector's
/// transport. `client`: the alert's `client` label (over_quota then looks only at that
/// client); `quota`: the process's per-client quota.
pub fn select(cfg: &SelectConfig, conns: &[ConnectionSnapshot], client: Option<&str>, quota: u64) -> Selection {
    let transport = cfg.transport();
    let owned: Vec<ConnectionSnapshot>;
    let conns: &[ConnectionSnapshot] = if conns.iter().all(|c| c.transport == transport) {
        conns
    } else {
        owned = conns.iter().filter(|c| c.transport == transport).cloned().collect();
        &owned
    };
    let mut picked: Vec<&ConnectionSnapshot> = match cfg.by {
        SelectBy::IdleStreams => {
            let min = cfg.idle_for.as_secs_f64();
            let mut v: Vec<(f64, &ConnectionSnapshot)> =
                conns.iter().filter_map(|c| Some((quiet_seconds(c)?, c))).filter(|(q, _)| *q >= min).collect();
            // Quietest first.
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.fd.cmp(&b.1.fd)));
            v.into_iter().map(|(_, c)| c).collect()
        }
        SelectBy::Idle => {
            let min = cfg.idle_for.as_secs_f64();
            let mut v: Vec<_> = conns.iter().filter(|c| c.idle_seconds >= min).collect();
            // Most idle first.
            v.sort_by(|a, b| b.idle_seconds.total_cmp(&a.idle_seconds).then(a.fd.cmp(&b.fd)));
            v
        }
        SelectBy::Stalled => {
            let mut v: Vec<_> = conns.iter().filter(|c| c.stalled).collect();
            v.sort_by(|a, b| b.idle_seconds.total_cmp(&a.idle_seconds).then(a.fd.cmp(&b.fd)));
            v
        }
        SelectBy::Oldest => {
            let mut v: Vec<_> = conns.iter().collect();
            v.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds).then(a.fd.cmp(&b.fd)));
            v
        }
        SelectBy::OverQuota => over_quota(cfg, conns, client, quota),
    };
    let total = conns.len();
    let by_fraction = (cfg.max_fraction * total as f64 + 1e-9).floor() as usize;
    let limit = (cfg.max_count as usize).min(by_fraction);
    let matched = picked.len();
    picked.truncate(limit);
    Selection { chosen: picked.into_iter().map(Chosen::from).collect(), matched, total, limit }
}

/// Each client's connections beyond `keep` (default `quota`), newest or oldest first; clients
/// with the most extra connections first.
fn over_quota<'a>(
    cfg: &SelectConfig,
    conns: &'a [ConnectionSnapshot],
    client: Option<&str>,
    quota: u64,
) -> Vec<&'a ConnectionSnapshot> {
    let keep = cfg.keep.unwrap_or(quota) as usize;
    let mut by_client: BTreeMap<&str, Vec<&ConnectionSnapshot>> = BTreeMap::new();
    for c in conns.iter().filter(|c| client.is_none_or(|k| c.client_key == k)) {
        by_client.entry(c.client_key.as_str()).or_default().push(c);
    }
    let mut groups: Vec<Vec<&ConnectionSnapshot>> = by_client
        .into_values()
        .filter(|v| v.len() > keep)
        .map(|mut v| {
            match cfg.order {
                Order::Newest => v.sort_by(|a, b| a.age_seconds.total_cmp(&b.age_seconds).then(b.fd.cmp(&a.fd))),
                Order::Oldest => v.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds).then(a.fd.cmp(&b.fd))),
            }
            let extra = v.len() - keep;
            v.truncate(extra);
            v
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    groups.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn conn(fd: u32, client: &str, age: f64, idle: f64, stalled: bool) -> ConnectionSnapshot {
        ConnectionSnapshot {
            fd,
            id: fd as u64 * 10,
            peer: Some(format!("127.0.0.1:{}", 40000 + fd)),
            client_key: client.into(),
            age_seconds: age,
            idle_seconds: idle,
            stalled,
            ..Default::default()
        }
    }

    fn cfg(by: SelectBy) -> SelectConfig {
        SelectConfig {
            by,
            transport: None,
            idle_for: Duration::from_secs(120),
            order: Order::Newest,
            keep: None,
            max_count: 100,
            max_fraction: 1.0,
        }
    }

    fn fds(s: &Selection) -> Vec<u32> {
        s.chosen.iter().map(|c| c.fd).collect()
    }

    #[test]
    fn idle_never_picks_a_busy_connection() {
        let conns = [
            conn(10, "a", 500.0, 0.2, false),
            conn(11, "a", 500.0, 300.0, false),
            conn(12, "b", 50.0, 119.9, false),
            conn(13, "b", 900.0, 600.0, false),
        ];
        let s = select(&cfg(SelectBy::Idle), &conns, None, 20);
        assert_eq!(fds(&s), vec![13, 11], "most idle first, only past idle_for");
        assert_eq!((s.matched, s.total), (2, 4));
    }

    #[test]
    fn over_quota_takes_exactly_the_extra_newest_first() {
        // Client a holds 5 (quota 3): its 2 newest go; b holds 3: untouched.
        let conns = [
            conn(10, "a", 50.0, 1.0, false),
            conn(11, "a", 40.0, 1.0, false),
            conn(12, "a", 30.0, 1.0, false),
            conn(13, "a", 20.0, 1.0, false),
            conn(14, "a", 10.0, 1.0, false),
            conn(15, "b", 5.0, 1.0, false),
            conn(16, "b", 4.0, 1.0, false),
            conn(17, "b", 3.0, 1.0, false),
        ];
        let s = select(&cfg(SelectBy::OverQuota), &conns, Some("a"), 3);
        assert_eq!(fds(&s), vec![14, 13]);
        let oldest = SelectConfig { order: Order::Oldest, ..cfg(SelectBy::OverQuota) };
        assert_eq!(fds(&select(&oldest, &conns, Some("a"), 3)), vec![10, 11]);
        // Without a client label: every client over its quota; `keep` overrides the quota.
        let keep2 = SelectConfig { keep: Some(2), ..cfg(SelectBy::OverQuota) };
        assert_eq!(fds(&select(&keep2, &conns, None, 3)), vec![14, 13, 12, 17]);
        // A client at its quota loses nothing.
        assert!(select(&cfg(SelectBy::OverQuota), &conns, Some("b"), 3).chosen.is_empty());
    }

    #[test]
    fn stalled_and_oldest() {
        let conns = [conn(10, "a", 10.0, 40.0, true), conn(11, "a", 99.0, 1.0, false), conn(12, "a", 50.0, 80.0, true)];
        assert_eq!(fds(&select(&cfg(SelectBy::Stalled), &conns, None, 20)), vec![12, 10]);
        assert_eq!(fds(&select(&cfg(SelectBy::Oldest), &conns, None, 20)), vec![11, 12, 10]);
    }

    #[test]
    fn bounded_by_count_and_fraction() {
        let conns: Vec<_> = (0..10).map(|i| conn(i, "a", i as f64, 1000.0, false)).collect();
        let c = SelectConfig { max_count: 3, ..cfg(SelectBy::Idle) };
        let s = select(&c, &conns, None, 20);
        assert_eq!((s.chosen.len(), s.matched, s.limit), (3, 10, 3));
        let c = SelectConfig { max_fraction: 0.25, ..cfg(SelectBy::Idle) };
        assert_eq!(select(&c, &conns, None, 20).chosen.len(), 2, "floor(0.25 × 10)");
        let c = SelectConfig { max_fraction: 0.3, ..cfg(SelectBy::Idle) };
        assert_eq!(select(&c, &conns, None, 20).chosen.len(), 3, "0.3 × 10 is 3 despite float rounding");
        let one = [conn(1, "a", 1.0, 1000.0, false)];
        let c = SelectConfig { max_fraction: 0.5, ..cfg(SelectBy::Idle) };
        assert!(select(&c, &one, None, 20).chosen.is_empty(), "half of one connection is none");
    }

    fn stream(fd: u32, client: &str, quiet: f64, tcp_idle: f64) -> ConnectionSnapshot {
        ConnectionSnapshot {
            transport: Transport::Sse,
            sse: Some(crate::model::sse::SseConnStats { seconds_since_last_event: quiet, ..Default::default() }),
            ..conn(fd, client, 1000.0, tcp_idle, false)
        }
    }

    /// `idle_streams` picks SSE streams by time since their last *event*, even when keep-alives
    /// keep the socket busy, never a WebSocket connection; the bounds count streams only.
    #[test]
    fn idle_streams_pick_quiet_streams_only() {
        let conns = [
            conn(10, "a", 500.0, 900.0, false),
            stream(11, "a", 400.0, 2.0),
            stream(12, "b", 100.0, 1.0),
            stream(13, "b", 800.0, 0.5),
            stream(14, "c", 130.0, 0.1),
        ];
        let s = select(&cfg(SelectBy::IdleStreams), &conns, None, 20);
        assert_eq!(fds(&s), vec![13, 11, 14], "quietest first, only past idle_for, no WebSocket");
        assert_eq!((s.matched, s.total), (3, 4));
        assert_eq!(s.chosen[0].transport, Transport::Sse);
        assert_eq!(s.chosen[0].seconds_since_last_event, Some(800.0));
        let c = SelectConfig { max_fraction: 0.5, ..cfg(SelectBy::IdleStreams) };
        assert_eq!(fds(&select(&c, &conns, None, 20)), vec![13, 11], "half of 4 streams");
    }

    /// The other selectors keep today's behaviour (WebSocket only) unless told `transport =
    /// "sse"`; then they work on streams: a client's streams over its quota.
    #[test]
    fn selectors_stay_on_their_transport() {
        let conns = [conn(10, "a", 500.0, 900.0, false), stream(11, "a", 1.0, 900.0), stream(12, "a", 1.0, 900.0)];
        assert_eq!(fds(&select(&cfg(SelectBy::Idle), &conns, None, 20)), vec![10]);
        let sse = |by| SelectConfig { transport: Some(Transport::Sse), ..cfg(by) };
        assert_eq!(fds(&select(&sse(SelectBy::Idle), &conns, None, 20)), vec![11, 12]);
        let s = select(&sse(SelectBy::OverQuota), &conns, Some("a"), 1);
        assert_eq!((fds(&s), s.total), (vec![12], 2), "the newest of a's two streams");
    }
}
