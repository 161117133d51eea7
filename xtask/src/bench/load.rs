//! The load generator: open-loop fixed rate (like wrk2), closed-loop saturation, idle
//! connections. Runs on a tokio current-thread runtime pinned to its own CPU.

use super::ws::{self, Decoder};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Handshakes in flight at once while opening connections.
const CONNECT_CONCURRENCY: usize = 256;

/// Open `n` WebSocket connections to `server`.
pub async fn open(server: SocketAddr, n: usize) -> Result<Vec<(TcpStream, Vec<u8>)>> {
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(20), ws::connect(server)).await;
            drop(permit);
            r.context("handshake timed out")?
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

/// Result of one open-loop run.
#[derive(Debug)]
pub struct OpenLoop {
    /// Latency in µs from each message's intended send time to its echo, for messages whose
    /// intended send time fell in the measurement window.
    pub hist: Histogram<u64>,
    /// Echoes received for messages intended in the window.
    pub window_msgs: u64,
    /// Messages intended over the whole run, and their echoes received.
    pub expected: u64,
    pub received: u64,
    pub window_s: f64,
}

/// Fixed aggregate `rate` over `conns` connections, open loop: message k of connection i is
/// due at `i/rate + k*conns/rate`; a late sender sends at once but keeps the intended time, so a
/// stalled server shows up as latency (no coordinated omission). `marks` are offsets from the
/// start; `sample(j)` runs (on a blocking thread) at mark j. Latency and the message count
/// cover `[marks[0], marks[1])`; the load stops at the last mark.
pub async fn open_loop<S, F>(
    server: SocketAddr,
    conns: usize,
    rate: f64,
    marks: &[Duration],
    sample: F,
) -> Result<(OpenLoop, Vec<S>)>
where
    S: Send + 'static,
    F: Fn(usize) -> S + Send + Sync + 'static,
{
    let streams = open(server, conns).await?;
    let interval_ns = conns as f64 * 1e9 / rate;
    let win = (marks[0].as_nanos() as u64, marks[1].as_nanos() as u64);
    let end_ns = marks.last().unwrap().as_nanos() as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let drain = Duration::from_secs(3);
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    for (i, (stream, rest)) in streams.into_iter().enumerate() {
        let offset = i as f64 * 1e9 / rate;
        let expected = ((end_ns as f64 - offset) / interval_ns).ceil().max(0.0) as u64;
        let (mut rd, mut wr) = stream.into_split();
        let mask = (i as u32).wrapping_mul(2654435761).to_le_bytes();
        writers.spawn(async move {
            for k in 0..expected {
                let t = (offset + k as f64 * interval_ns) as u64;
                tokio::time::sleep_until(start + Duration::from_nanos(t)).await;
                if wr.write_all(&ws::encode_text(t, mask)).await.is_err() {
                    break;
                }
            }
            // Returned so the connection stays open until its reader is done.
            wr
        });
        readers.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let (mut got, mut in_win) = (0u64, 0u64);
            let mut dec = Decoder::default();
            dec.feed(&rest);
            let deadline = start + Duration::from_nanos(end_ns) + drain;
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                while let Ok(Some(f)) = dec.next_frame() {
                    let now = start.elapsed().as_nanos() as u64;
                    if let Some(t) = ws::stamp_of(&f.payload) {
                        got += 1;
                        if t >= win.0 && t < win.1 {
                            in_win += 1;
                            let _ = hist.record((now.saturating_sub(t) / 1000).max(1));
                        }
                    }
                }
                if got >= expected {
                    break;
                }
                match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => dec.feed(&buf[..n]),
                    _ => break,
                }
            }
            (rd, hist, got, in_win, expected)
        });
    }
    let sample = Arc::new(sample);
    let mut samples = Vec::with_capacity(marks.len());
    for (j, m) in marks.iter().enumerate() {
        tokio::time::sleep_until(start + *m).await;
        let s = sample.clone();
        samples.push(tokio::task::spawn_blocking(move || s(j)).await?);
    }
    let mut out = OpenLoop {
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        window_msgs: 0,
        expected: 0,
        received: 0,
        window_s: (marks[1] - marks[0]).as_secs_f64(),
    };
    let mut halves = Vec::new();
    while let Some(r) = readers.join_next().await {
        let (rd, hist, got, in_win, expected) = r?;
        out.hist.add(&hist).ok();
        out.received += got;
        out.window_msgs += in_win;
        out.expected += expected;
        halves.push(rd);
    }
    while let Some(w) = writers.join_next().await {
        drop(w?);
    }
    drop(halves);
    Ok((out, samples))
}

/// Closed loop, as fast as the server goes: every connection keeps `depth` messages in flight
/// and sends one more per echo. Returns the echoes received in `[warm, warm+measure)` per second.
pub async fn saturate(server: SocketAddr, conns: usize, depth: usize, warm: Duration, measure: Duration) -> Result<f64> {
    let streams = open(server, conns).await?;
    let start = Instant::now();
    let (w0, w1) = (start + warm, start + warm + measure);
    let mut set = JoinSet::new();
    for (i, (mut s, rest)) in streams.into_iter().enumerate() {
        let mask = (i as u32).wrapping_mul(2654435761).to_le_bytes();
        set.spawn(async move {
            let frame = ws::encode_text(0, mask);
            let mut out = Vec::with_capacity(frame.len() * depth);
            for _ in 0..depth {
                out.extend_from_slice(&frame);
            }
            if s.write_all(&out).await.is_err() {
                return 0u64;
            }
            let mut dec = Decoder::default();
            dec.feed(&rest);
            let mut buf = vec![0u8; 16 * 1024];
            let mut in_win = 0u64;
            loop {
                let mut n = 0usize;
                while let Ok(Some(_)) = dec.next_frame() {
                    n += 1;
                }
                let now = Instant::now();
                if now >= w0 && now < w1 {
                    in_win += n as u64;
                }
                if now >= w1 {
                    break;
                }
                if n > 0 {
                    out.clear();
                    for _ in 0..n {
                        out.extend_from_slice(&frame);
                    }
                    if s.write_all(&out).await.is_err() {
                        break;
                    }
                }
                match tokio::time::timeout_at(w1, s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => dec.feed(&buf[..n]),
                    _ => break,
                }
            }
            in_win
        });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r?;
    }
    Ok(total as f64 / measure.as_secs_f64())
}
