//! Kubernetes attribution without the Kubernetes API: a process's cgroup names its pod UID and
//! container id (`resources/process.rs`); the kubelet's log directories on the node name the
//! rest:
//!
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/` (one directory per pod, the CRI log
//!   layout every kubelet writes), and
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log` (symlinks, one per
//!   container), which tie a container id to its container name.
//!
//! Namespace, pod and container names are DNS labels/subdomains (no `_`), so the `_` separators
//! are unambiguous. The DaemonSet mounts both directories read-only. Reading them needs no
//! ServiceAccount token or RBAC, works while the API server is down, and costs two directory
//! listings when an unknown pod appears (at most every [`RESCAN`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::model::resources::Pod;

/// An unknown pod UID or container id triggers a rescan at most this often.
pub const RESCAN: Duration = Duration::from_secs(10);

/// `<namespace>_<pod>_<uid>` → (namespace, pod, uid).
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    let uid_ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (!ns.is_empty() && !pod.is_empty() && uid_ok).then_some((ns, pod, uid))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (container id, container name).
pub fn parse_container_log(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.splitn(3, '_');
    let (_pod, _ns, container) = (it.next()?, it.next()?, it.next()?);
    (!container.is_empty()).then_some((id, container))
}

/// Cached view of the node's kubelet log directories.
pub struct Resolver {
    root: PathBuf,
    /// Pod UID → (namespace, pod, container directory names).
    pods: HashMap<String, (String, String, Vec<String>)>,
    /// Container id → container name.
    containers: HashMap<String, String>,
    scanned: Option<Instant>,
}

impl Resolver {
    /// `root` holds `pods/` and `containers/` (on a node: `/var/log`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Resolver { root: root.into(), pods: HashMap::new(), containers: HashMap::new(), scanned: None }
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        self.pods.clear();
        self.containers.clear();
        for name in list(&self.root.join("pods")) {
            if let Some((ns, pod, uid)) = parse_pod_dir(&name) {
                let containers = list(&self.root.join("pods").join(&name));
                self.pods.insert(uid.to_ascii_lowercase(), (ns.into(), pod.into(), containers));
            }
        }
        for name in list(&self.root.join("containers")) {
            if let Some((id, container)) = parse_container_log(&name) {
                self.containers.insert(id.to_ascii_lowercase(), container.into());
            }
        }
    }

    /// The pod of a process with this pod UID (dashed) and container id (64 hex), if known.
    pub fn lookup(&mut self, pod_uid: &str, container_id: Option<&str>) -> Option<Pod> {
        let known = self.pods.contains_key(pod_uid) && container_id.is_none_or(|id| self.containers.contains_key(id));
        if !known && self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scan();
        }
        let (ns, pod, dirs) = self.pods.get(pod_uid)?;
        let container =
            container_id.and_then(|id| self.containers.get(id).cloned()).or_else(|| (dirs.len() == 1).then(|| dirs[0].clone()));
        Some(Pod { namespace: ns.clone(), pod: pod.clone(), container })
    }
}

fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default()
}

static NODE: Mutex<Option<Resolver>> = Mutex::new(None);

/// The pod of a process from its sampled resources, resolved against this node's `/var/log`.
/// None off Kubernetes (no pod UID in the cgroup) or when the pod's log directory is not
/// visible (not mounted into the agent's container).
pub fn pod_of(r: Option<&crate::model::resources::ProcessResources>) -> Option<Pod> {
    let r = r?;
    let uid = r.pod_uid.as_deref()?;
    let mut node = NODE.lock().ok()?;
    node.get_or_insert_with(|| Resolver::new("/var/log")).lookup(uid, r.container_id.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::resources::process::{container_id, parse_cgroup, pod_uid};

    const UID: &str = "8a3c6f12-4b1e-4c9a-9f0d-2e7b5c1a9d44";
    const ID: &str = "3f1e0c5b9d7a24e8c6b1f0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9";
    const SIDECAR: &str = "0000000000000000000000000000000000000000000000000000000000000abc";

    /// A node's /var/log with one two-container pod and one single-container pod.
    fn node() -> (tempfile::TempDir, Resolver) {
        let d = tempfile::tempdir().unwrap();
        let pods = d.path().join("pods");
        for c in ["chat", "envoy"] {
            std::fs::create_dir_all(pods.join(format!("prod_chat-7d9f8b6c5-x2kqz_{UID}")).join(c)).unwrap();
        }
        std::fs::create_dir_all(pods.join("kube-system_ws-gw-0_11111111-2222-3333-4444-555555555555/gw")).unwrap();
        std::fs::create_dir_all(pods.join("not-a-pod")).unwrap();
        let containers = d.path().join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        for (c, id) in [("chat", ID), ("envoy", SIDECAR)] {
            let name = format!("chat-7d9f8b6c5-x2kqz_prod_{c}-{id}.log");
            std::os::unix::fs::symlink("/nonexistent", containers.join(name)).unwrap();
        }
        let r = Resolver::new(d.path());
        (d, r)
    }

    fn ids(cgroup: &str) -> (Option<String>, Option<String>) {
        let lines = parse_cgroup(cgroup);
        (lines.iter().find_map(|l| pod_uid(&l.path)), lines.iter().find_map(|l| container_id(&l.path)))
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_pod_dir(&format!("prod_chat-0_{UID}")), Some(("prod", "chat-0", UID)));
        assert_eq!(parse_pod_dir("prod_chat-0_not-a-uid"), None);
        assert_eq!(parse_pod_dir("prod_chat"), None);
        let log = format!("chat-7d9f8b6c5-x2kqz_prod_chat-server-{ID}.log");
        assert_eq!(parse_container_log(&log), Some((ID, "chat-server")));
        assert_eq!(parse_container_log("chat_prod_x-123.log"), None);
        assert_eq!(parse_container_log(&format!("chat_prod_x-{ID}")), None);
    }

    /// cgroup v2, systemd driver, containerd (the common case on current distributions).
    #[test]
    fn systemd_driver_containerd() {
        let uid_ = UID.replace('-', "_");
        let cg =
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope\n");
        let (uid, id) = ids(&cg);
        let (_d, mut r) = node();
        let pod = r.lookup(&uid.unwrap(), id.as_deref()).unwrap();
        assert_eq!(pod, Pod { namespace: "prod".into(), pod: "chat-7d9f8b6c5-x2kqz".into(), container: Some("chat".into()) });
    }

    /// cgroup v1, cgroupfs driver, docker/cri-dockerd ids as bare path components.
    #[test]
    fn cgroupfs_driver_v1() {
        let cg = format!(
            "12:memory:/kubepods/besteffort/pod{UID}/{SIDECAR}\n11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{SIDECAR}\n"
        );
        let (uid, id) = ids(&cg);
        assert_eq!(uid.as_deref(), Some(UID));
        let (_d, mut r) = node();
        assert_eq!(r.lookup(UID, id.as_deref()).unwrap().container.as_deref(), Some("envoy"));
    }

    /// CRI-O, and a pod whose container log link is missing: a single container directory
    /// still names it; several do not.
    #[test]
    fn crio_and_fallback_to_the_only_container() {
        let cg = "0::/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/crio-\
                  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.scope\n";
        let (uid, id) = ids(cg);
        let (_d, mut r) = node();
        let pod = r.lookup(&uid.unwrap(), id.as_deref()).unwrap();
        assert_eq!((pod.namespace.as_str(), pod.pod.as_str(), pod.container.as_deref()), ("kube-system", "ws-gw-0", Some("gw")));
        let unknown = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        assert_eq!(r.lookup(UID, Some(unknown)).unwrap().container, None, "two containers: not guessed");
    }

    #[test]
    fn off_kubernetes_nothing() {
        assert_eq!(ids("0::/system.slice/chat.service\n").0, None);
        assert_eq!(ids(&format!("0::/system.slice/docker-{ID}.scope\n")).0, None);
        let (_d, mut r) = node();
        assert_eq!(r.lookup("99999999-9999-9999-9999-999999999999", None), None);
        let mut empty = Resolver::new("/nonexistent");
        assert_eq!(empty.lookup(UID, Some(ID)), None);
    }

    /// The snapshot carries `kubernetes` only for processes in a pod.
    #[test]
    fn snapshot_field_absent_off_kubernetes() {
        let mut p = crate::model::snapshot::ProcessSnapshot { pid: 1, ..Default::default() };
        let v = serde_json::to_value(&p).unwrap();
        assert!(v.get("kubernetes").is_none(), "{v}");
        p.kubernetes = Some(Pod { namespace: "prod".into(), pod: "chat-0".into(), container: None });
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["kubernetes"], serde_json::json!({"namespace": "prod", "pod": "chat-0", "container": null}));
        let back: crate::model::snapshot::ProcessSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(back.kubernetes.unwrap().pod, "chat-0");
    }

    /// A pod that appears after the first scan is found at the next rescan, not before.
    #[test]
    fn new_pods_after_the_rescan_interval() {
        let (d, mut r) = node();
        let late = "99999999-9999-9999-9999-999999999999";
        assert_eq!(r.lookup(late, None), None);
        std::fs::create_dir_all(d.path().join(format!("pods/dev_late-0_{late}/app"))).unwrap();
        assert_eq!(r.lookup(late, None), None, "rate-limited");
        r.scanned = Some(Instant::now() - RESCAN);
        assert_eq!(r.lookup(late, None).unwrap().pod, "late-0");
    }
}
