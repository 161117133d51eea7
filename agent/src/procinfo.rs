//! Process identity and sockets from /proc (procfs crate: typed, maintained parsers of
//! /proc/<pid>/{stat,cmdline,fd} and /proc/net/tcp{,6}).

use std::collections::{HashMap, HashSet};

use procfs::{
    net::TcpState,
    process::{FDTarget, Process},
};

/// Who a process is. `start_time` (clock ticks since boot) tells a reused pid apart.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub comm: String,
    pub cmdline: Vec<String>,
    pub start_time: u64,
}

/// Identity of a live process, or None if it is gone.
pub fn identity(pid: u32) -> Option<Identity> {
    let p = Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    Some(Identity {
        comm: stat.comm,
        cmdline: p.cmdline().unwrap_or_default(),
        start_time: stat.starttime,
    })
}

/// Socket inodes a process holds open.
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(p) = Process::new(pid as i32) else { return HashSet::new() };
    let Ok(fds) = p.fd() else { return HashSet::new() };
    fds.filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect()
}

/// TCP sockets of the host (v4 and v6): inode → (state, local port).
pub fn tcp_sockets() -> HashMap<u64, (TcpState, u16)> {
    let mut out = HashMap::new();
    for table in [procfs::net::tcp(), procfs::net::tcp6()].into_iter().flatten() {
        for e in table {
            out.insert(e.inode, (e.state, e.local_address.port()));
        }
    }
    out
}

/// Inbound established TCP connections of each process that listens: connections whose local
/// port is one the same process listens on. Used to report connections that existed before the
/// probe attached (they are not followed: their handshake was never seen).
pub fn inbound_connections() -> HashMap<u32, HashSet<u64>> {
    let sockets = tcp_sockets();
    let mut out = HashMap::new();
    let Ok(all) = procfs::process::all_processes() else { return out };
    for p in all.filter_map(Result::ok) {
        let inodes = socket_inodes(p.pid as u32);
        let listening: HashSet<u16> = inodes
            .iter()
            .filter_map(|i| sockets.get(i))
            .filter(|(s, _)| *s == TcpState::Listen)
            .map(|(_, port)| *port)
            .collect();
        if listening.is_empty() {
            continue;
        }
        let inbound: HashSet<u64> = inodes
            .into_iter()
            .filter(|i| matches!(sockets.get(i), Some((TcpState::Established, port)) if listening.contains(port)))
            .collect();
        if !inbound.is_empty() {
            out.insert(p.pid as u32, inbound);
        }
    }
    out
}

/// Processes holding a listening TCP socket.
pub fn listening_pids() -> Vec<u32> {
    let sockets = tcp_sockets();
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(Result::ok)
        .filter(|p| {
            socket_inodes(p.pid as u32)
                .iter()
                .any(|i| matches!(sockets.get(i), Some((TcpState::Listen, _))))
        })
        .map(|p| p.pid as u32)
        .collect()
}

/// TCP ports a process listens on.
pub fn listening_ports(pid: u32, sockets: &HashMap<u64, (TcpState, u16)>) -> Vec<u16> {
    let mut ports: Vec<u16> = socket_inodes(pid)
        .iter()
        .filter_map(|i| sockets.get(i))
        .filter(|(s, _)| *s == TcpState::Listen)
        .map(|(_, p)| *p)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
