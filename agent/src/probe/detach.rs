//! Detaching a pinned probe, whatever programs and maps it holds: everything under the pin
//! directory goes (links first, so the programs stop running before their maps disappear).
//! Removing a link's last pin detaches it once no process holds a descriptor to it, and the agent
//! closes its link descriptors right after pinning them, so this works by directory, not by a
//! list of program names, for every probe mode.
//!
//! `holders` finds processes (a running agent) that use the pinned maps, so `wsguard detach`
//! can refuse to pull the probe from under a running agent.

use std::path::{Path, PathBuf};

use aya::maps::MapInfo;

/// What a detach removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detached {
    /// Pinned links removed (programs detached).
    pub links: usize,
    /// Other pinned objects removed (programs, maps).
    pub objects: usize,
}

impl Detached {
    pub fn nothing(&self) -> bool {
        self.links == 0 && self.objects == 0
    }
}

impl std::fmt::Display for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} program link(s) detached, {} pinned map(s)/program(s) removed", self.links, self.objects)
    }
}

fn entries(pin: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(pin) {
        Ok(rd) => rd.map(|e| e.map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn is_link(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("link_"))
}

/// Remove every pin under `pin` (links first), then the directory. A missing directory is
/// nothing to do (`Detached::nothing`), not an error.
pub fn detach(pin: &Path) -> std::io::Result<Detached> {
    let mut all = entries(pin)?;
    all.sort_by_key(|p| !is_link(p));
    let mut done = Detached::default();
    for p in all {
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
            done.objects += 1;
            continue;
        }
        std::fs::remove_file(&p)?;
        if is_link(&p) {
            done.links += 1;
        } else {
            done.objects += 1;
        }
    }
    match std::fs::remove_dir(pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(done),
    }
}

/// A process that holds one of the pinned maps open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

/// Processes other than this one holding a descriptor to a map pinned under `pin` (found by map
/// id in `/proc/PID/fdinfo`). A running agent always does: it reads its maps through them.
pub fn holders(pin: &Path) -> Vec<Holder> {
    let ids: Vec<u32> = entries(pin)
        .unwrap_or_default()
        .iter()
        .filter(|p| !is_link(p))
        .filter_map(|p| MapInfo::from_pin(p).ok())
        .map(|m| m.id())
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fdinfo")) else { continue };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|t| map_id(&t).is_some_and(|id| ids.contains(&id))));
        if holds {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default().trim().to_string();
            found.push(Holder { pid, comm });
        }
    }
    found
}

/// The `map_id:` of a BPF map descriptor's fdinfo text.
fn map_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_id_from_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t8\nmap_id:\t42\n";
        assert_eq!(map_id(t), Some(42));
        assert_eq!(map_id("pos:\t0\nprog_id:\t7\n"), None);
    }

    /// A missing directory: nothing detached, no error (a second `wsguard detach`).
    #[test]
    fn detach_missing_is_nothing() {
        let d = detach(Path::new("/nonexistent/wsguard-pin")).unwrap();
        assert!(d.nothing());
        assert!(holders(Path::new("/nonexistent/wsguard-pin")).is_empty());
    }

    /// Links go before everything else, and every entry counts (on a plain directory here: the
    /// order and counting do not depend on bpffs).
    #[test]
    fn detach_counts_links_and_objects() {
        let dir = std::env::temp_dir().join(format!("wsguard-detach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["link_wsg_a", "link_wsg_b", "prog_wsg_a", "WSG_CONNS"] {
            std::fs::write(dir.join(n), "").unwrap();
        }
        assert_eq!(detach(&dir).unwrap(), Detached { links: 2, objects: 2 });
        assert!(!dir.exists());
        assert!(detach(&dir).unwrap().nothing());
    }
}
