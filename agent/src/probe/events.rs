//! Consumes the probe's lifecycle ring buffer. Counts never depend on it (they live in maps);
//! events feed debug logs and the events counter; latencies come from the maps' histograms. The
//! kernel counts what it could not deliver.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};
use wsguard_common::event::{kind, Event};

pub async fn consume(ring: RingBuf<MapData>, received: Arc<AtomicU64>) {
    // SAFETY: the RingBuf owns its map fd, which stays open for the AsyncFd's lifetime.
    let mut fd = match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("cannot poll the event ring buffer: {e}");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!("event ring buffer: {e}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the probe writes whole `Event`s; read unaligned from the ring's memory.
            let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            received.fetch_add(1, Ordering::Relaxed);
            log(&e);
        }
        guard.clear_ready();
    }
}

fn log(e: &Event) {
    let ms = e.value_ns as f64 / 1e6;
    match e.kind {
        kind::UPGRADED => debug!(pid = e.tgid, fd = e.fd, handshake_ms = ms, "websocket opened"),
        kind::HANDSHAKE_FAILED => debug!(pid = e.tgid, fd = e.fd, status = e.status, "handshake failed"),
        kind::CLOSED => debug!(
            pid = e.tgid,
            fd = e.fd,
            abnormal = e.abnormal != 0,
            close_rx = e.close_rx,
            close_tx = e.close_tx,
            age_ms = ms,
            "websocket closed"
        ),
        kind::PING_RTT => debug!(pid = e.tgid, fd = e.fd, rtt_ms = ms, "ping round trip"),
        other => debug!(kind = other, "unknown event kind"),
    }
}
