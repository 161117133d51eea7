//! Snapshot history: an in-memory ring of the last `memory_snapshots` snapshots, backed by an
//! embedded SQLite store at `<state_dir>/history.sqlite` with retention and peak-keeping
//! downsampling (`docs/history.md`).
//!
//! History must never stop monitoring: every store error (disk full, read-only directory,
//! corrupt file) is returned to the caller to log, counted in `errors_total`/`last_error`, and
//! the in-memory ring keeps working. A store that could not be opened is retried at most once a
//! minute.

pub mod report;
pub mod store;

use std::{
    collections::VecDeque,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::snapshot::Snapshot;
pub use report::{parse_since, report, Format, Report};
pub use store::Store;

/// File name of the store inside `state_dir`.
pub const STORE_FILE: &str = "history.sqlite";
/// Pruning (retention + downsampling) runs at most this often.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A store that failed to open is retried at most this often.
const REOPEN_EVERY: Duration = Duration::from_secs(60);

/// `[history]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Snapshots kept in memory (10080 = 14 h at a 5 s interval). 0: memory ring off, queries
    /// go to the store.
    pub memory_snapshots: usize,
    /// How long snapshots are kept on disk.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Every snapshot is kept on disk for this long...
    #[serde(with = "humantime_serde")]
    pub full_resolution: Duration,
    /// ...then one per interval: the one with the most active connections and SSE streams, so peaks survive.
    #[serde(with = "humantime_serde")]
    pub downsample_interval: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            memory_snapshots: 10080,
            retention: Duration::from_secs(7 * 24 * 3600),
            full_resolution: Duration::from_secs(6 * 3600),
            downsample_interval: Duration::from_secs(300),
        }
    }
}

impl HistoryConfig {
    /// Check values; the error names the key (under `history.`) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.downsample_interval < Duration::from_secs(1) {
            return Err(("history.downsample_interval", "must be at least 1s".into()));
        }
        if self.full_resolution > self.retention {
            return Err(("history.full_resolution", "must not be longer than history.retention".into()));
        }
        Ok(())
    }
}

/// History state for the health endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryHealth {
    pub memory_snapshots: usize,
    pub memory_capacity: usize,
    /// Path of the store, if one is configured.
    pub store_path: Option<PathBuf>,
    /// The store is open (false: memory only, retried every minute).
    pub store_open: bool,
    pub errors_total: u64,
    pub last_error: Option<String>,
}

struct StoreState {
    store: Option<Store>,
    path: Option<PathBuf>,
    last_open_attempt: Option<Instant>,
    /// Snapshot time (unix seconds) of the last prune.
    last_prune: Option<i64>,
}

/// The history. `Send + Sync`: share it as `Arc<History>` between the snapshot loop and the API.
/// Store calls block on SQLite (milliseconds per snapshot with WAL).
pub struct History {
    cfg: HistoryConfig,
    ring: RwLock<VecDeque<Arc<Snapshot>>>,
    store: Mutex<StoreState>,
    errors_total: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Snapshot time from its RFC 3339 timestamp.
pub fn snapshot_time(s: &Snapshot) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(&s.timestamp).ok()
}

pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

impl History {
    /// History without a store (tests, or no writable `state_dir`).
    pub fn memory_only(cfg: HistoryConfig) -> Self {
        Self::with_store(cfg, None, None)
    }

    /// Open `<state_dir>/history.sqlite` and load its most recent snapshots into memory. Always
    /// returns a usable history; if the store failed, the error is returned alongside (and
    /// counted) and the history runs from memory, retrying the store every minute.
    pub fn open(cfg: HistoryConfig, state_dir: &Path) -> (Self, Option<anyhow::Error>) {
        let path = state_dir.join(STORE_FILE);
        let opened = Store::open(&path).and_then(|s| {
            let recent = s.recent(cfg.memory_snapshots)?;
            Ok((s, recent))
        });
        match opened {
            Ok((store, recent)) => {
                let h = Self::with_store(cfg, Some(store), Some(path));
                {
                    let mut ring = h.ring.write().expect("ring lock");
                    ring.extend(recent.into_iter().map(Arc::new));
                }
                (h, None)
            }
            Err(e) => {
                let h = Self::with_store(cfg, None, Some(path));
                h.store.lock().expect("store lock").last_open_attempt = Some(Instant::now());
                h.record(&e);
                (h, Some(e))
            }
        }
    }

    fn with_store(cfg: HistoryConfig, store: Option<Store>, path: Option<PathBuf>) -> Self {
        let cap = cfg.memory_snapshots;
        Self {
            ring: RwLock::new(VecDeque::with_capacity(cap.min(16384))),
            cfg,
            store: Mutex::new(StoreState { store, path, last_open_attempt: None, last_prune: None }),
            errors_total: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn record(&self, e: &anyhow::Error) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("error lock") = Some(format!("{e:#}"));
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.cfg
    }

    /// Append a snapshot: into the ring (always), then into the store in one transaction, and
    /// prune the store if the last prune is a minute old. A store error is returned (and
    /// counted); the snapshot is in memory regardless.
    pub fn append(&self, snap: Arc<Snapshot>) -> Result<()> {
        let t = snapshot_time(&snap).unwrap_or_else(SystemTime::now);
        if self.cfg.memory_snapshots > 0 {
            let mut ring = self.ring.write().expect("ring lock");
            while ring.len() >= self.cfg.memory_snapshots {
                ring.pop_front();
            }
            ring.push_back(snap.clone());
        }
        let r = self.store_append(&snap, t);
        match &r {
            Err(e) => self.record(e),
            // The store works again (space returned, remounted writable): no longer degraded.
            Ok(()) => *self.last_error.lock().expect("error lock") = None,
        }
        r
    }

    fn store_append(&self, snap: &Snapshot, t: SystemTime) -> Result<()> {
        let mut st = self.store.lock().expect("store lock");
        if st.store.is_none() {
            let Some(path) = st.path.clone() else { return Ok(()) };
            if st.last_open_attempt.is_some_and(|a| a.elapsed() < REOPEN_EVERY) {
                bail!("history store {} unavailable (retrying every minute)", path.display());
            }
            st.last_open_attempt = Some(Instant::now());
            st.store = Some(Store::open(&path)?);
        }
        let secs = unix_secs(t);
        st.store.as_ref().expect("store present").insert(secs, snap)?;
        if st.last_prune.is_none_or(|p| (secs - p).unsigned_abs() >= PRUNE_EVERY.as_secs()) {
            st.last_prune = Some(secs);
            st.store.as_ref().expect("store present").prune(secs, &self.cfg)?;
        }
        Ok(())
    }

    /// On stop. Every appended snapshot is already committed (one transaction each); this
    /// checkpoints the WAL so the main file holds them all, synced (see `Store::checkpoint`).
    pub fn checkpoint(&self) -> Result<()> {
        let st = self.store.lock().expect("store lock");
        let Some(store) = st.store.as_ref() else { return Ok(()) };
        store.checkpoint()
    }

    /// Prune the store now (retention + downsampling) as of `now`.
    pub fn prune(&self, now: SystemTime) -> Result<store::PruneStats> {
        let mut st = self.store.lock().expect("store lock");
        let secs = unix_secs(now);
        st.last_prune = Some(secs);
        let Some(store) = st.store.as_ref() else { return Ok(Default::default()) };
        let r = store.prune(secs, &self.cfg);
        if let Err(e) = &r {
            self.record(e);
        }
        r
    }

    /// The most recent snapshot.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.ring.read().expect("ring lock").back().cloned()
    }

    /// Everything in the memory ring, oldest first.
    pub fn memory(&self) -> Vec<Arc<Snapshot>> {
        self.ring.read().expect("ring lock").iter().cloned().collect()
    }

    /// Snapshots taken at or after `t`, oldest first: from memory, with the part older than the
    /// ring read from the store. A store error is counted and only the memory part returned.
    pub fn since(&self, t: SystemTime) -> Vec<Arc<Snapshot>> {
        let (oldest, mut recent) = {
            let ring = self.ring.read().expect("ring lock");
            let oldest = ring.front().map(|s| snapshot_time(s).unwrap_or(UNIX_EPOCH));
            let start = ring.partition_point(|s| snapshot_time(s).is_some_and(|st| st < t));
            (oldest, ring.range(start..).cloned().collect::<Vec<_>>())
        };
        if oldest.is_some_and(|o| o <= t) {
            return recent;
        }
        let older = {
            let st = self.store.lock().expect("store lock");
            let Some(store) = st.store.as_ref() else { return recent };
            // Seconds in the store; exact times filtered below.
            let to = oldest.map(|o| unix_secs(o) + 1);
            store.range(unix_secs(t), to)
        };
        match older {
            Ok(older) => {
                let mut out: Vec<Arc<Snapshot>> = older
                    .into_iter()
                    .filter(|s| {
                        let st = snapshot_time(s).unwrap_or(UNIX_EPOCH);
                        st >= t && oldest.is_none_or(|o| st < o)
                    })
                    .map(Arc::new)
                    .collect();
                out.append(&mut recent);
                out
            }
            Err(e) => {
                self.record(&e);
                recent
            }
        }
    }

    /// Write snapshots taken at or after `t` as JSON lines (one snapshot per line, oldest first)
    /// for `wsguard replay`. Reads the store when there is one (all it holds), else memory.
    /// Returns the number of lines written.
    pub fn export_jsonl(&self, t: SystemTime, w: &mut dyn Write) -> Result<u64> {
        {
            let st = self.store.lock().expect("store lock");
            if let Some(store) = st.store.as_ref() {
                return store.export_jsonl(unix_secs(t), None, w);
            }
        }
        let mut n = 0;
        for s in self.since(t) {
            serde_json::to_writer(&mut *w, &*s).context("export history")?;
            w.write_all(b"\n").context("export history")?;
            n += 1;
        }
        Ok(n)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    pub fn health(&self) -> HistoryHealth {
        let st = self.store.lock().expect("store lock");
        HistoryHealth {
            memory_snapshots: self.ring.read().expect("ring lock").len(),
            memory_capacity: self.cfg.memory_snapshots,
            store_path: st.path.clone(),
            store_open: st.store.is_some(),
            errors_total: self.errors_total(),
            last_error: self.last_error(),
        }
    }
}

#[cfg(test)]
mod tests;
