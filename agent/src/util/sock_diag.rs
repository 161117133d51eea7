//! The NETLINK_SOCK_DIAG plumbing both users share: the snapshot's TCP table
//! (`track/resources/tcp.rs`) and remediation's `SOCK_DESTROY` (`remediate/sockdiag.rs`). One
//! socket opener (with a receive timeout), one request encoder, one receive loop, and the
//! namespace switch that runs a dump inside another process's network namespace.
//!
//! Why `netlink-packet-sock-diag` + `netlink-sys` (rust-netlink): maintained, typed encoders and
//! decoders of `inet_diag_req_v2` / `inet_diag_msg` and a plain blocking netlink socket; no C.

use std::{io, os::fd::AsRawFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

/// The network namespace of a process (inode of /proc/<pid>/ns/net).
pub fn netns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Run `f` in the network namespace of `pid` (a short-lived thread joins it, so no other thread
/// of the agent changes namespace); in our own when it is the same one.
pub fn in_netns_of<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if netns(pid).ok_or_else(|| io::Error::other("process gone"))? == netns(std::process::id()).unwrap_or(0) {
        return Ok(f());
    }
    let file = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; affects only this thread, which ends here.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// A connected NETLINK_SOCK_DIAG socket in the calling thread's network namespace, with a 5 s
/// receive timeout so a kernel that does not answer never blocks a snapshot or an action.
pub fn open() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
    sock.bind_auto()?;
    sock.connect(&NlAddr::new(0, 0))?;
    let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: valid fd and option struct.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(sock)
}

/// Send one sock_diag request (`flags`, sequence number `seq`) on `sock`.
pub fn request<T: NetlinkSerializable + std::fmt::Debug>(sock: &Socket, seq: u32, flags: u16, payload: T) -> io::Result<()> {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h.sequence_number = seq;
    let mut msg = NetlinkMessage::new(h, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0)?;
    Ok(())
}

/// Every TCP socket of the calling thread's network namespace, IPv4 then IPv6, in any state:
/// `f` sees each record (no extensions).
pub fn dump_tcp(mut f: impl FnMut(&InetResponse)) -> io::Result<()> {
    let sock = open()?;
    let mut buf = vec![0u8; 1 << 16];
    for (seq, (family, id)) in [(AF_INET, SocketId::new_v4()), (AF_INET6, SocketId::new_v6())].into_iter().enumerate() {
        let seq = seq as u32 + 1;
        let req = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        };
        request(&sock, seq, NLM_F_REQUEST | NLM_F_DUMP, SockDiagMessage::InetRequest(req))?;
        answers(&sock, &mut buf, seq, &mut f)?;
    }
    Ok(())
}

/// A socket's cookie as the kernel writes it in `inet_diag_sockid` (two host-order u32, low
/// half first): the value `bpf_get_socket_cookie` returns.
pub fn cookie(id: &SocketId) -> u64 {
    u64::from_ne_bytes(id.cookie)
}

/// Read the answers to request `seq` until its Done or ack; `f` sees each socket record. An
/// error answer is the kernel's errno; messages of other sequence numbers (a late answer to an
/// earlier request that timed out) are skipped.
pub fn answers(sock: &Socket, buf: &mut [u8], seq: u32, mut f: impl FnMut(&InetResponse)) -> io::Result<()> {
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "netlink socket closed"));
        }
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag answer: {e}")))?;
            let len = msg.header.length as usize;
            if msg.header.sequence_number == seq {
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(()), // ack
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => f(&r),
                    _ => {}
                }
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}
