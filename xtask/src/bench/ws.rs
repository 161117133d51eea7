//! A minimal RFC 6455 client: the opening handshake, masked text frames out, frame headers in.
//! Just enough for an echo load: no fragmentation, no extensions, no close handshake.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Payload size of every message (text, ASCII).
pub const PAYLOAD: usize = 64;
/// Size of a client frame on the wire: 2-byte header, 4-byte mask, payload.
pub const CLIENT_FRAME: usize = 2 + 4 + PAYLOAD;

/// A masked text frame carrying `stamp` (the message's intended send time, ns since the load
/// started) as 16 hex digits followed by padding, so the echo tells us which message it was.
pub fn encode_text(stamp: u64, mask: [u8; 4]) -> [u8; CLIENT_FRAME] {
    let mut f = [0u8; CLIENT_FRAME];
    f[0] = 0x81; // FIN + text
    f[1] = 0x80 | PAYLOAD as u8; // masked, 7-bit length
    f[2..6].copy_from_slice(&mask);
    let mut payload = [b'.'; PAYLOAD];
    let hex = format!("{stamp:016x}");
    payload[..16].copy_from_slice(hex.as_bytes());
    for (i, b) in payload.iter().enumerate() {
        f[6 + i] = b ^ mask[i % 4];
    }
    f
}

/// One frame read from the server (servers do not mask).
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Incremental frame decoder: feed bytes, take whole frames.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if len > 1 << 24 {
            bail!("frame of {len} bytes: out of sync");
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return Ok(None);
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(m) = mask {
            for (i, x) in payload.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        let opcode = b[0] & 0x0f;
        self.buf.drain(..at + len);
        Ok(Some(Frame { opcode, payload }))
    }
}

/// The stamp written by [`encode_text`], read back from an echoed payload.
pub fn stamp_of(payload: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(payload.get(..16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// Source addresses rotate over 127.0.0.2..=127.0.0.254 so that tens of thousands of
/// connections never run out of ephemeral ports (28k per source address and destination).
fn next_source() -> Ipv4Addr {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % 253;
    Ipv4Addr::new(127, 0, 0, 2 + n as u8)
}

const IPPROTO_IP: i32 = 0;
const IP_BIND_ADDRESS_NO_PORT: i32 = 24;

extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const core::ffi::c_void, len: u32) -> i32;
}

/// Connect and complete the opening handshake; returns the stream and any bytes that followed
/// the 101 response.
pub async fn connect(server: SocketAddr) -> Result<(TcpStream, Vec<u8>)> {
    let sock = TcpSocket::new_v4()?;
    let one: i32 = 1;
    // SAFETY: valid fd and a 4-byte int option; failure only means the port is chosen at bind.
    unsafe {
        setsockopt(sock.as_raw_fd(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one as *const i32 as *const _, 4);
    }
    sock.bind(SocketAddr::V4(SocketAddrV4::new(next_source(), 0)))?;
    let mut s = sock.connect(server).await.context("connect")?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                bail!("handshake refused: {}", String::from_utf8_lossy(&buf[..end.min(80)]));
            }
            return Ok((s, buf[end + 4..].to_vec()));
        }
        if buf.len() > 8192 {
            bail!("handshake response too long");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frame_round_trips_through_the_decoder() {
        let f = encode_text(0x1234_5678_9abc, [1, 2, 3, 4]);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 64);
        assert_eq!(f.len(), 70);
        let mut d = Decoder::default();
        // Split mid-header and mid-payload.
        d.feed(&f[..1]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&f[1..30]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.feed(&f[30..]);
        let fr = d.next_frame().unwrap().unwrap();
        assert_eq!(fr.opcode, 1);
        assert_eq!(fr.payload.len(), PAYLOAD);
        assert!(fr.payload.is_ascii());
        assert_eq!(stamp_of(&fr.payload), Some(0x1234_5678_9abc));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn decoder_reads_unmasked_and_extended_lengths() {
        let mut d = Decoder::default();
        let mut bytes = vec![0x81, 3, b'a', b'b', b'c', 0x82, 126, 0, 200];
        bytes.extend(std::iter::repeat_n(7u8, 200));
        d.feed(&bytes);
        assert_eq!(d.next_frame().unwrap().unwrap().payload, b"abc");
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.opcode, f.payload.len()), (2, 200));
    }
}
