//! The socket mode's connections that predate its probe. A connection established before
//! `wsg_sock_ops` was attached has no state, so the probe never counts its bytes or its end; the
//! agent reports it instead, once, in `unfollowed_connections` of the process holding it.
//!
//! Attach first, then list, so nothing falls between the two: `WSG_BORN_OPEN` is set before the
//! attach and, while it is, `wsg_sock_ops` records the cookie of every connection it gives state
//! to in `WSG_BORN`. After the attach, sock_diag lists the established sockets whose local port
//! is a listening port, with their cookies; those whose cookie is not in `WSG_BORN` were
//! established before the attach. (A connection born after it may already have lost its state,
//! not being WebSocket: its cookie is still in `WSG_BORN`, so it is never taken for an old one.)
//! Each is then given to the process holding its inode (`/proc/<pid>/fd`); one not yet accepted
//! is looked at again a moment later, then given to a process holding the listener of its port.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData},
    Ebpf,
};
use tracing::{info, warn};
use wsguard_common::names;

use crate::util::{procinfo, sock_diag};

/// `TCP_ESTABLISHED` and `TCP_LISTEN` in the kernel's state numbering.
const ESTABLISHED: u8 = 1;
const LISTEN: u8 = 10;

/// An inode that stands for a connection not yet accepted when it was listed (no fd holds it):
/// counted at attach, never found open later. Real socket inodes are 32-bit.
const UNACCEPTED: u64 = 1 << 63;

/// Open (`true`, before attaching `wsg_sock_ops`) or close the window in which it records the
/// cookies of the connections it sees born.
pub fn set_window(ebpf: &mut Ebpf, open: bool) -> anyhow::Result<()> {
    let mut a: Array<_, u32> = Array::try_from(ebpf.map_mut(names::BORN_OPEN).context("map WSG_BORN_OPEN missing")?)?;
    a.set(0, u32::from(open), 0)?;
    Ok(())
}

/// One established inbound socket: cookie, inode (0 while not accepted), local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inbound {
    cookie: u64,
    inode: u64,
    port: u16,
}

/// The TCP sockets of the agent's namespace: established inbound ones (local port listening)
/// and the inode of a listener of each listening port.
fn list() -> anyhow::Result<(Vec<Inbound>, HashMap<u16, u64>)> {
    let mut est = Vec::new();
    let mut listeners = HashMap::new();
    sock_diag::dump_tcp(|r| {
        let h = &r.header;
        let port = h.socket_id.source_port;
        match h.state {
            LISTEN => {
                listeners.entry(port).or_insert(u64::from(h.inode));
            }
            ESTABLISHED => est.push(Inbound { cookie: sock_diag::cookie(&h.socket_id), inode: u64::from(h.inode), port }),
            _ => {}
        }
    })
    .context("listing TCP sockets (sock_diag)")?;
    est.retain(|c| listeners.contains_key(&c.port));
    Ok((est, listeners))
}

/// Called right after `wsg_sock_ops` is attached (with the window open): the inbound connections
/// it will never follow, per process (inodes), and closes the window.
pub fn after_attach(ebpf: &mut Ebpf) -> anyhow::Result<HashMap<u32, HashSet<u64>>> {
    let listed = list();
    let born: HashSet<u64> = {
        let m: BpfHashMap<&MapData, u64, u8> = BpfHashMap::try_from(ebpf.map(names::BORN).context("map WSG_BORN missing")?)?;
        m.keys().filter_map(Result::ok).collect()
    };
    set_window(ebpf, false)?;
    let (listed, listeners) = listed?;
    let mut old: Vec<Inbound> = listed.into_iter().filter(|c| !born.contains(&c.cookie)).collect();
    if old.iter().any(|c| c.inode == 0) {
        // Established before the attach, still in the accept queue: its accept may be running.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (again, _) = list()?;
        let inode: HashMap<u64, u64> = again.iter().map(|c| (c.cookie, c.inode)).collect();
        for c in old.iter_mut().filter(|c| c.inode == 0) {
            c.inode = inode.get(&c.cookie).copied().unwrap_or(0);
        }
    }
    let holders = procinfo::socket_holders();
    let out = attribute(&old, &listeners, &holders);
    let unheld = old.len() - out.values().map(HashSet::len).sum::<usize>();
    if unheld > 0 {
        warn!("{unheld} connections established before the probe have no process holding them or their listener; not reported");
    }
    info!(
        "{} inbound connections were established before the probe: not followed, reported (unfollowed_connections)",
        old.len() - unheld
    );
    Ok(out)
}

/// Each connection to the process holding it, or (not accepted yet) one holding its listener.
fn attribute(old: &[Inbound], listeners: &HashMap<u16, u64>, holders: &HashMap<u64, u32>) -> HashMap<u32, HashSet<u64>> {
    let mut out: HashMap<u32, HashSet<u64>> = HashMap::new();
    for c in old {
        let (pid, inode) = match holders.get(&c.inode) {
            Some(pid) if c.inode != 0 => (*pid, c.inode),
            _ => match listeners.get(&c.port).and_then(|l| holders.get(l)) {
                Some(pid) => (*pid, UNACCEPTED | c.cookie),
                None => continue,
            },
        };
        out.entry(pid).or_default().insert(inode);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_connections_go_to_their_holder_unaccepted_ones_to_the_listener() {
        let old = [
            Inbound { cookie: 1, inode: 100, port: 80 },
            Inbound { cookie: 2, inode: 0, port: 80 },
            Inbound { cookie: 3, inode: 101, port: 80 }, // closed by its holder meanwhile
            Inbound { cookie: 4, inode: 0, port: 81 },   // no listener holder
        ];
        let listeners = HashMap::from([(80, 50), (81, 51)]);
        let holders = HashMap::from([(100, 7), (50, 3)]);
        let out = attribute(&old, &listeners, &holders);
        assert_eq!(out[&7], HashSet::from([100]));
        assert_eq!(out[&3], HashSet::from([UNACCEPTED | 2, UNACCEPTED | 3]));
        assert_eq!(out.len(), 2);
    }
}
