//! `close_connections`: destroy the chosen sockets of one process with SOCK_DESTROY, then ask
//! the kernel again which of them still exist (it can refuse without an error the process would
//! see). Blocking; runs on the blocking pool.
//!
//! Between the snapshot that chose them and now, a connection may have closed and its fd been
//! reused, or it may have become busy. So each chosen fd is resolved afresh
//! (`/proc/<pid>/fd/<fd>` → socket inode → the kernel's socket with that inode), its peer must
//! still be the peer the tracker saw, and for `idle` the kernel's own tcp_info must show no data
//! either way for `idle_for`. Anything that fails a check is left alone and reported.
//!
//! SOCK_DESTROY works on any TCP socket, so SSE streams are closed the same way (the client's
//! `EventSource` sees the stream end and reconnects, with `Last-Event-ID` if it had one).
//! `idle_streams` passes no `idle_ms`: a quiet stream's keep-alive comments move bytes, so
//! tcp_info would call it busy; the probe's time since its last event chose it.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use super::RunResult;
use crate::{
    remediate::{
        select::Chosen,
        sockdiag::{unmap, SockDiag, TcpSock, VERIFY_DELAY},
        target::Target,
    },
    util::sock_diag::in_netns_of,
};

#[derive(Debug, Default, Serialize)]
pub struct CloseReport {
    pub selected: usize,
    pub destroyed: usize,
    /// Destroyed and no longer found by the kernel.
    pub verified: usize,
    /// fd → why it was left alone or what failed.
    pub skipped: Vec<(u32, String)>,
    pub closed_fds: Vec<u32>,
}

fn socket_inode(pid: u32, fd: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

fn same_peer(sock: &TcpSock, seen: Option<&str>) -> bool {
    let Some(seen) = seen.and_then(|p| p.parse::<std::net::SocketAddr>().ok()) else { return true };
    let r = sock.remote();
    unmap(seen.ip()) == r.ip() && seen.port() == r.port()
}

/// Close `chosen` connections of `target`. `idle_ms`: required idle time (for `idle`).
pub fn close(target: &Target, chosen: &[Chosen], idle_ms: Option<u64>) -> RunResult {
    let before_fds = target.open_fds();
    let mut rep = CloseReport { selected: chosen.len(), ..Default::default() };
    let fail =
        |rep: CloseReport, why: String| RunResult { result: "failed".into(), detail: why, after: json!({ "report": rep }) };
    if let Err(e) = target.check() {
        return fail(rep, e.to_string());
    }
    let inodes: Vec<(Chosen, Option<u32>)> = chosen.iter().map(|c| (c.clone(), socket_inode(target.pid, c.fd))).collect();
    // The inodes were read from this process only if it is still the same one now.
    if let Err(e) = target.check() {
        return fail(rep, e.to_string());
    }
    let pid = target.pid;
    let work = move || -> std::io::Result<CloseReport> {
        let mut d = SockDiag::open()?;
        let by_inode: HashMap<u32, TcpSock> = d.dump(idle_ms.is_some())?.into_iter().map(|s| (s.inode, s)).collect();
        let mut destroyed = Vec::new();
        for (c, inode) in &inodes {
            let Some(sock) = inode.and_then(|i| by_inode.get(&i)) else {
                rep.skipped.push((c.fd, "gone (fd closed or no longer a TCP socket)".into()));
                continue;
            };
            if !same_peer(sock, c.peer.as_deref()) {
                rep.skipped.push((c.fd, format!("fd now holds another connection ({})", sock.remote())));
                continue;
            }
            if let Some(min) = idle_ms {
                match sock.idle_ms() {
                    Some(ms) if ms as u64 >= min => {}
                    Some(ms) => {
                        rep.skipped.push((c.fd, format!("busy: data {ms} ms ago (kernel tcp_info)")));
                        continue;
                    }
                    None => {
                        rep.skipped.push((c.fd, "no tcp_info to confirm idleness".into()));
                        continue;
                    }
                }
            }
            match d.destroy(sock) {
                Ok(()) => destroyed.push((c.fd, sock.inode)),
                Err(e) => rep.skipped.push((c.fd, format!("SOCK_DESTROY refused: {e}"))),
            }
        }
        rep.destroyed = destroyed.len();
        std::thread::sleep(VERIFY_DELAY);
        let still: std::collections::HashSet<u32> = d.dump(false)?.into_iter().map(|s| s.inode).collect();
        for (fd, inode) in destroyed {
            if still.contains(&inode) {
                rep.skipped.push((fd, "destroyed but the kernel still lists the socket".into()));
            } else {
                rep.verified += 1;
                rep.closed_fds.push(fd);
            }
        }
        Ok(rep)
    };
    let rep = match in_netns_of(pid, work) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) | Err(e) => {
            return fail(CloseReport { selected: chosen.len(), ..Default::default() }, format!("sock_diag: {e}"))
        }
    };
    let result = match (rep.verified, rep.selected) {
        (v, s) if v == s => "ok",
        (0, _) => "failed",
        _ => "partial",
    };
    let detail = format!(
        "closed {} of {} selected connections (verified by re-query){}",
        rep.verified,
        rep.selected,
        if rep.skipped.is_empty() {
            String::new()
        } else {
            format!("; left: {}", rep.skipped.iter().map(|(fd, w)| format!("fd {fd}: {w}")).collect::<Vec<_>>().join("; "))
        }
    );
    RunResult {
        result: result.into(),
        detail,
        after: json!({
            "closed": rep.verified,
            "selected": rep.selected,
            "closed_fds": rep.closed_fds,
            "open_fds_before": before_fds,
            "open_fds": target.open_fds(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
        time::Duration,
    };

    use super::*;

    /// SOCK_DESTROY on sockets of this very process: the idle ones are destroyed and their
    /// peers see a reset; the busy one (data within idle_for, per the kernel's tcp_info) stays.
    #[test]
    fn destroys_idle_sockets_and_spares_a_busy_one() {
        if unsafe { libc::geteuid() } != 0 {
            crate::util::test_skip("SOCK_DESTROY needs CAP_NET_ADMIN (run as root)");
            return;
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut pairs: Vec<(TcpStream, TcpStream)> = (0..3)
            .map(|_| {
                let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                (c, s)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1300));
        // Connection 1 becomes busy.
        pairs[1].0.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        pairs[1].1.read_exact(&mut buf).unwrap();
        let me = std::process::id();
        let id = crate::util::procinfo::identity(me).unwrap();
        let target = Target { pid: me, comm: id.comm, start_ticks: id.start_time };
        let chosen: Vec<Chosen> = pairs
            .iter()
            .map(|(c, s)| Chosen {
                fd: s.as_raw_fd() as u32,
                id: 0,
                peer: Some(c.local_addr().unwrap().to_string()),
                client: "127.0.0.1".into(),
                idle_seconds: 1.3,
                age_seconds: 1.3,
                transport: Default::default(),
                seconds_since_last_event: None,
            })
            .collect();
        let r = close(&target, &chosen, Some(1000));
        assert_eq!(r.result, "partial", "{}", r.detail);
        assert_eq!(r.after["closed"], 2, "{}", r.detail);
        assert!(r.detail.contains("busy"), "{}", r.detail);
        let fds: Vec<u32> = serde_json::from_value(r.after["closed_fds"].clone()).unwrap();
        assert_eq!(fds, vec![chosen[0].fd, chosen[2].fd]);
        for (i, (c, _)) in pairs.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let got = c.read(&mut buf);
            if i == 1 {
                assert!(matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "busy one stays open: {got:?}");
            } else {
                assert!(
                    matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
                    "peer of a destroyed socket: {got:?}"
                );
            }
        }
        // A wrong peer (the fd now holds another connection) is left alone.
        let mut other = chosen[1].clone();
        other.peer = Some("127.0.0.1:1".into());
        let r = close(&target, &[other], None);
        assert_eq!(r.result, "failed");
        assert!(r.detail.contains("another connection"), "{}", r.detail);
    }
}
