//! TCP sockets through NETLINK_SOCK_DIAG: dump them (with inode, cookie and tcp_info) and
//! destroy one (`SOCK_DESTROY`, what `ss -K` does: the kernel aborts the connection, the peer
//! gets a RST and the owning process gets ECONNABORTED on its next call).
//!
//! Why `netlink-packet-sock-diag` + `netlink-sys` (rust-netlink): maintained, typed encoders
//! and decoders of `inet_diag_req_v2` / `inet_diag_msg` and a plain blocking netlink socket,
//! including the `SOCK_DESTROY` message type; no C library. tcp_info is read from the raw
//! attribute (not the crate's `rich_nlas` struct, whose parse fails on kernels with a shorter
//! tcp_info): the fields used sit at fixed UAPI offsets.
//!
//! The destroy request carries the socket's 4-tuple *and* its cookie, so the kernel refuses
//! (ENOENT) if the connection is gone, even when a new one reuses the same addresses.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagDestroy, SockDiagMessage,
};
use netlink_sys::Socket;

use crate::util::sock_diag as tcp;

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSock {
    pub family: u8,
    pub state: u8,
    pub inode: u32,
    pub id: SocketId,
    /// ms since data was last received / sent (tcp_info), when requested.
    pub last_data_recv_ms: Option<u32>,
    pub last_data_sent_ms: Option<u32>,
}

impl TcpSock {
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(unmap(self.id.destination_address), self.id.destination_port)
    }
    /// ms since any data moved either way (None without tcp_info).
    pub fn idle_ms(&self) -> Option<u32> {
        Some(self.last_data_recv_ms?.min(self.last_data_sent_ms?))
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so v4-mapped peers compare equal to /proc's form.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// tcp_info offsets (include/uapi/linux/tcp.h): 8 bytes of u8 fields, then u32s from rto;
/// tcpi_last_data_sent is the 10th u32, tcpi_last_data_recv the 12th.
const LAST_DATA_SENT: usize = 8 + 9 * 4;
const LAST_DATA_RECV: usize = 8 + 11 * 4;

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

pub struct SockDiag {
    sock: Socket,
    seq: u32,
}

const ESTABLISHED_LIKE: u32 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

impl SockDiag {
    /// A NETLINK_SOCK_DIAG socket in the calling thread's network namespace.
    pub fn open() -> io::Result<SockDiag> {
        Ok(SockDiag { sock: tcp::open()?, seq: 0 })
    }

    fn send<T: netlink_packet_core::NetlinkSerializable + std::fmt::Debug>(&mut self, flags: u16, payload: T) -> io::Result<u32> {
        self.seq += 1;
        tcp::request(&self.sock, self.seq, flags, payload)?;
        Ok(self.seq)
    }

    /// Read answers to request `seq` until Done or an ack/error; `f` sees each socket.
    fn recv(&mut self, seq: u32, mut f: impl FnMut(TcpSock)) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        tcp::answers(&self.sock, &mut buf, seq, |r| {
            let mut s = TcpSock {
                family: r.header.family,
                state: r.header.state,
                inode: r.header.inode,
                id: r.header.socket_id.clone(),
                last_data_recv_ms: None,
                last_data_sent_ms: None,
            };
            for nla in &r.nlas {
                if let Nla::TcpInfo(raw) = nla {
                    s.last_data_sent_ms = u32_at(raw, LAST_DATA_SENT);
                    s.last_data_recv_ms = u32_at(raw, LAST_DATA_RECV);
                }
            }
            f(s);
        })
    }

    /// Every TCP socket that is not listening or in TIME_WAIT, IPv4 and IPv6; with tcp_info
    /// when `info`.
    pub fn dump(&mut self, info: bool) -> io::Result<Vec<TcpSock>> {
        let mut out = Vec::new();
        for (family, id) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())] {
            let req = InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: if info { ExtensionFlags::INFO } else { ExtensionFlags::empty() },
                states: StateFlags::from_bits_truncate(ESTABLISHED_LIKE),
                socket_id: id,
            };
            let seq = self.send(NLM_F_REQUEST | NLM_F_DUMP, SockDiagMessage::InetRequest(req))?;
            self.recv(seq, |s| out.push(s))?;
        }
        Ok(out)
    }

    /// Destroy one socket (exact 4-tuple and cookie). The kernel's answer is the result:
    /// ENOENT (gone), EOPNOTSUPP (kernel without CONFIG_INET_DIAG_DESTROY), EPERM.
    pub fn destroy(&mut self, s: &TcpSock) -> io::Result<()> {
        let req = InetRequest {
            family: s.family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: s.id.clone(),
        };
        let seq = self.send(NLM_F_REQUEST | NLM_F_ACK, SockDiagDestroy::new(SockDiagMessage::InetRequest(req)))?;
        self.recv(seq, |_| {})
    }
}

/// Give the kernel a moment between destroy and re-query (the abort is synchronous, the
/// owner's close is not; the re-query looks for the socket, not the fd).
pub const VERIFY_DELAY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn tcp_info_offsets() {
        let mut raw = vec![0u8; 232];
        raw[LAST_DATA_SENT..LAST_DATA_SENT + 4].copy_from_slice(&1234u32.to_ne_bytes());
        raw[LAST_DATA_RECV..LAST_DATA_RECV + 4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!((u32_at(&raw, LAST_DATA_SENT), u32_at(&raw, LAST_DATA_RECV)), (Some(1234), Some(99)));
        assert_eq!(u32_at(&raw[..10], LAST_DATA_RECV), None);
        assert_eq!(unmap("::ffff:127.0.0.2".parse().unwrap()), "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    /// A real dump (no privilege needed): our own loopback connection shows with its inode and
    /// idle times.
    #[test]
    fn dump_finds_own_connection() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", c.as_raw_fd())).unwrap().ino() as u32;
        let mut d = match SockDiag::open() {
            Ok(d) => d,
            Err(e) => {
                crate::util::test_skip(&format!("no NETLINK_SOCK_DIAG here: {e}"));
                return;
            }
        };
        let all = d.dump(true).unwrap();
        let mine = all.iter().find(|s| s.inode == inode).expect("own socket in the dump");
        assert_eq!(mine.remote(), l.local_addr().unwrap());
        assert!(mine.idle_ms().is_some());
    }
}
