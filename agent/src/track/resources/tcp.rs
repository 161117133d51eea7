//! The TCP sockets of a network namespace, read once per snapshot with a NETLINK_SOCK_DIAG dump
//! (what `ss` uses): binary records with inode, state, addresses and queues, produced by the
//! kernel without formatting text. At 100k sockets a dump takes tens of milliseconds, where
//! formatting and parsing `/proc/net/tcp{,6}` took hundreds; and it replaces three reads of those
//! tables per snapshot (host sockets, each process's sockets, ephemeral ports).
//!
//! Why `netlink-packet-sock-diag` + `netlink-sys` (rust-netlink): maintained, typed encoders and
//! decoders of `inet_diag_req_v2` / `inet_diag_msg` and a plain blocking netlink socket; no C.
//! A namespace other than the agent's is dumped from a short-lived thread that joins it
//! (`setns`); where netlink or `setns` is not allowed (the systemd unit restricts both unless
//! AF_NETLINK is added), `/proc/<pid>/net/tcp{,6}` are parsed instead, once per namespace.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
};

use tracing::debug;

pub use crate::util::sock_diag::netns;
use crate::util::sock_diag::{dump_tcp, in_netns_of};

/// `TCP_LISTEN` in the kernel's state numbering.
pub const LISTEN: u8 = 10;

/// What a snapshot needs of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock {
    pub state: u8,
    pub local_port: u16,
    pub remote: SocketAddr,
    /// Bytes not yet read by the process (rx_queue).
    pub recv_queue: u32,
    /// Bytes written and not yet acknowledged (tx_queue).
    pub send_queue: u32,
}

/// The sockets of one namespace that a snapshot can use: listeners, and sockets whose local port
/// is a listening port (the server side of accepted connections). Client-side sockets of the
/// same host (ephemeral local ports) are only counted.
#[derive(Debug, Default)]
pub struct Table {
    pub by_inode: HashMap<u32, Sock>,
    /// Non-listening sockets whose local port is in the ephemeral range given to [`Table::read`].
    pub ephemeral_in_use: u64,
}

impl Table {
    fn add(&mut self, inode: u32, s: Sock, ports: &mut HashSet<u16>, eph: Option<(u16, u16)>) {
        if s.state == LISTEN {
            ports.insert(s.local_port);
        } else if eph.is_some_and(|(lo, hi)| (lo..=hi).contains(&s.local_port)) {
            self.ephemeral_in_use += 1;
        }
        // The kernel lists a family's listeners before its other sockets (inet_diag_dump_icsk),
        // and IPv4 is dumped before IPv6, so `ports` is complete when a port is tested.
        if inode != 0 && (s.state == LISTEN || ports.contains(&s.local_port)) {
            self.by_inode.insert(inode, s);
        }
    }

    /// The agent's own network namespace: by sock_diag, else (netlink not allowed, e.g. by a
    /// systemd `RestrictAddressFamilies=` without AF_NETLINK) from /proc/self/net/tcp{,6}.
    pub fn read(ephemeral: Option<(u16, u16)>) -> io::Result<Table> {
        match Table::dump(ephemeral) {
            Ok(t) => Ok(t),
            Err(e) => {
                debug!("sock_diag: {e}; reading /proc/net/tcp instead");
                Table::read_proc(std::process::id(), ephemeral)
            }
        }
    }

    fn dump(ephemeral: Option<(u16, u16)>) -> io::Result<Table> {
        let mut t = Table::default();
        let mut ports = HashSet::new();
        dump(|inode, s| t.add(inode, s, &mut ports, ephemeral))?;
        Ok(t)
    }

    /// The namespace of `pid`: sock_diag from a thread that joins it, else its /proc tables.
    pub fn read_for(pid: u32) -> io::Result<Table> {
        match in_netns_of(pid, || Table::dump(None)) {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) | Err(e) => {
                debug!(pid, "sock_diag in the process's namespace: {e}; reading /proc/{pid}/net/tcp");
                Table::read_proc(pid, None)
            }
        }
    }

    /// `/proc/<pid>/net/tcp{,6}`, the fallback.
    fn read_proc(pid: u32, ephemeral: Option<(u16, u16)>) -> io::Result<Table> {
        let p = procfs::process::Process::new(pid as i32).map_err(io::Error::other)?;
        let mut t = Table::default();
        let mut ports = HashSet::new();
        let mut any = false;
        for table in [p.tcp(), p.tcp6()].into_iter().flatten() {
            any = true;
            // /proc lists sockets in hash order, not listeners first: find the ports first.
            ports.extend(table.iter().filter(|e| e.state == procfs::net::TcpState::Listen).map(|e| e.local_address.port()));
            for e in table {
                let s = Sock {
                    state: e.state.to_u8(),
                    local_port: e.local_address.port(),
                    remote: e.remote_address,
                    recv_queue: e.rx_queue,
                    send_queue: e.tx_queue,
                };
                t.add(e.inode as u32, s, &mut ports, ephemeral);
            }
        }
        if !any {
            return Err(io::Error::other(format!("no TCP table readable for pid {pid}")));
        }
        Ok(t)
    }
}

/// Every TCP socket of the calling thread's namespace, IPv4 then IPv6: `f(inode, socket)`.
pub fn dump(mut f: impl FnMut(u32, Sock)) -> io::Result<()> {
    dump_tcp(|r| {
        let h = &r.header;
        f(
            h.inode,
            Sock {
                state: h.state,
                local_port: h.socket_id.source_port,
                remote: SocketAddr::new(h.socket_id.destination_address, h.socket_id.destination_port),
                recv_queue: h.recv_queue,
                send_queue: h.send_queue,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A real dump (no privilege needed) agrees with /proc/net/tcp on our own connection: the
    /// server side is kept (its local port listens), with its peer and queues.
    #[test]
    fn dump_agrees_with_proc() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(&[1u8; 100]).unwrap();
        let ino = |fd: i32| std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
        let t = match Table::read(Some((port, port))) {
            Ok(t) => t,
            Err(e) => {
                crate::util::test_skip(&format!("no NETLINK_SOCK_DIAG here: {e}"));
                return;
            }
        };
        let listener = t.by_inode[&ino(l.as_raw_fd())];
        assert_eq!((listener.state, listener.local_port), (LISTEN, port));
        let mut server = t.by_inode[&ino(s.as_raw_fd())];
        for _ in 0..50 {
            if server.recv_queue == 100 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            server = Table::read(None).unwrap().by_inode[&ino(s.as_raw_fd())];
        }
        assert_eq!(server.remote, c.local_addr().unwrap());
        assert_eq!((server.state, server.local_port, server.recv_queue), (1, port, 100));
        // The client side has an ephemeral local port: counted in the range only if it is in it.
        assert!(!t.by_inode.contains_key(&ino(c.as_raw_fd())) || c.local_addr().unwrap().port() == port);
        // The client's port counts as an ephemeral port in use when the range covers it.
        let cport = c.local_addr().unwrap().port();
        assert!(Table::read(Some((cport, cport))).unwrap().ephemeral_in_use >= 1);
        // The same from /proc (the fallback where netlink or setns is not allowed).
        let p = Table::read_proc(std::process::id(), Some((cport, cport))).unwrap();
        assert_eq!(p.by_inode[&ino(l.as_raw_fd())].state, LISTEN);
        assert_eq!(p.by_inode[&ino(s.as_raw_fd())].remote, c.local_addr().unwrap());
        assert!(p.ephemeral_in_use >= 1);
    }
}
