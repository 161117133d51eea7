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
    Some(identity_of(&p, &stat))
}

/// Identity from a stat already read (the command line is read here).
pub fn identity_of(p: &Process, stat: &procfs::process::Stat) -> Identity {
    Identity { comm: stat.comm.clone(), cmdline: p.cmdline().unwrap_or_default(), start_time: stat.starttime }
}

/// The socket inode behind one fd of a process (None for other files or a closed fd).
pub fn socket_inode(pid: u32, fd: u32) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    parse_socket_link(link.as_os_str().as_bytes())
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
/// port is one the same process listens on, each with the fd it is held at (inode → fd). Used by
/// the syscall mode to report connections that existed before the probe attached.
pub fn inbound_connection_fds() -> HashMap<u32, HashMap<u64, u32>> {
    let sockets = tcp_sockets();
    let mut out = HashMap::new();
    let Ok(all) = procfs::process::all_processes() else { return out };
    for p in all.filter_map(Result::ok) {
        let fds = socket_fds(&p);
        let listening: HashSet<u16> =
            fds.keys().filter_map(|i| sockets.get(i)).filter(|(s, _)| *s == TcpState::Listen).map(|(_, port)| *port).collect();
        if listening.is_empty() {
            continue;
        }
        let inbound: HashMap<u64, u32> = fds
            .into_iter()
            .filter(|(i, _)| matches!(sockets.get(i), Some((TcpState::Established, port)) if listening.contains(port)))
            .collect();
        if !inbound.is_empty() {
            out.insert(p.pid as u32, inbound);
        }
    }
    out
}

/// Every socket inode held open by some process, with one process holding it (the youngest by
/// pid when several do: a worker rather than the parent it was forked from).
pub fn socket_holders() -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    let Ok(all) = procfs::process::all_processes() else { return out };
    for p in all.filter_map(Result::ok) {
        let pid = p.pid as u32;
        for inode in socket_fds(&p).into_keys() {
            let holder = out.entry(inode).or_insert(pid);
            *holder = (*holder).max(pid);
        }
    }
    out
}

/// Socket inodes a process holds open, each with (one of) the fds it is held at.
fn socket_fds(p: &Process) -> HashMap<u64, u32> {
    let Ok(fds) = p.fd() else { return HashMap::new() };
    fds.filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some((inode, fd.fd as u32)),
            _ => None,
        })
        .collect()
}

/// Processes holding a listening TCP socket.
pub fn listening_pids() -> Vec<u32> {
    let sockets = tcp_sockets();
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.filter_map(Result::ok)
        .filter(|p| socket_inodes(p.pid as u32).iter().any(|i| matches!(sockets.get(i), Some((TcpState::Listen, _)))))
        .map(|p| p.pid as u32)
        .collect()
}

/// Lists `/proc/<pid>/fd` with `getdents64` into a buffer kept between calls (no allocation per
/// entry, unlike `read_dir`), and resolves the fds the caller asks for with `readlinkat`. A
/// snapshot walks each process's fd directory once; fds of connections already known from the
/// previous snapshot are not resolved again.
#[derive(Default)]
pub struct FdWalker {
    buf: Vec<u8>,
}

/// The open fd directory of one process during a walk.
pub struct FdDir {
    fd: libc::c_int,
}

impl Drop for FdDir {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl FdDir {
    /// The socket inode `fd` refers to (None for other files or if it was closed meanwhile).
    pub fn socket_inode(&self, fd: u32) -> Option<u64> {
        let mut name = [0u8; 12];
        let n = write_decimal(&mut name, fd);
        let mut target = [0u8; 64];
        // SAFETY: NUL-terminated name (write_decimal leaves room), output buffer of its size.
        let len = unsafe {
            libc::readlinkat(
                self.fd,
                name[..=n].as_ptr() as *const libc::c_char,
                target.as_mut_ptr() as *mut libc::c_char,
                target.len(),
            )
        };
        if len <= 0 {
            return None;
        }
        parse_socket_link(&target[..len as usize])
    }
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Writes `v` in decimal followed by a NUL; returns the digit count.
fn write_decimal(out: &mut [u8; 12], mut v: u32) -> usize {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = 0;
    n
}

impl FdWalker {
    /// Calls `f(dir, fd)` for every open fd of `pid`; returns how many there are, or None if the
    /// directory cannot be read (process gone, or no permission).
    pub fn walk(&mut self, pid: u32, mut f: impl FnMut(&FdDir, u32)) -> Option<u64> {
        let path = std::ffi::CString::new(format!("/proc/{pid}/fd")).ok()?;
        // SAFETY: valid NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let dir = FdDir { fd };
        if self.buf.len() < 1 << 16 {
            self.buf.resize(1 << 16, 0);
        }
        let mut count = 0u64;
        loop {
            // SAFETY: getdents64 into our buffer of that length.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.fd, self.buf.as_mut_ptr(), self.buf.len()) };
            if n < 0 {
                return None;
            }
            if n == 0 {
                return Some(count);
            }
            let mut off = 0usize;
            while off + 19 <= n as usize {
                // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
                let reclen = u16::from_ne_bytes([self.buf[off + 16], self.buf[off + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let name = &self.buf[off + 19..(off + reclen).min(n as usize)];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if let Some(fd) = std::str::from_utf8(name).ok().and_then(|s| s.parse::<u32>().ok()) {
                    count += 1;
                    f(&dir, fd);
                }
                off += reclen;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt};

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        let mut b = [0u8; 12];
        assert_eq!(write_decimal(&mut b, 0), 1);
        assert_eq!(&b[..2], b"0\0");
        assert_eq!(write_decimal(&mut b, 4294967295), 10);
        assert_eq!(&b[..11], b"4294967295\0");
    }

    /// Against read_dir and metadata: every fd is seen, sockets resolve to their inodes.
    #[test]
    fn walk_matches_read_dir() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut w = FdWalker::default();
        let mut seen = Vec::new();
        let mut inode = None;
        let n = w
            .walk(std::process::id(), |dir, fd| {
                seen.push(fd);
                if fd == l.as_raw_fd() as u32 {
                    inode = dir.socket_inode(fd);
                }
            })
            .unwrap();
        assert_eq!(n as usize, seen.len());
        assert!(seen.contains(&(l.as_raw_fd() as u32)));
        let expect = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap().ino();
        assert_eq!(inode, Some(expect));
        // Other threads of the test binary open and close files: compare loosely.
        let listed = std::fs::read_dir("/proc/self/fd").unwrap().count();
        assert!(listed.abs_diff(seen.len()) <= 8, "{listed} vs {}", seen.len());
        assert!(w.walk(u32::MAX, |_, _| {}).is_none());
    }
}
