//! The one way the agent opens its SQLite files (history, alert store, notification outbox,
//! remediation audit log), so all four get the same settings and the same file mode.
//!
//! Why SQLite through `rusqlite` with the `bundled` feature: SQLite is compiled into the binary,
//! so hosts need no system library; each store is one inspectable file under `state_dir`.
//!
//! The pragmas, the same for every store:
//! - `busy_timeout = 5 s`: the CLI (`wsguard report`, `replay`, `remediation pause`) opens the
//!   same files beside the running agent; a writer briefly holding the lock makes it wait, not
//!   fail.
//! - `journal_mode = WAL`, required (the open fails otherwise): readers never block the agent's
//!   writes, and a crash mid-write leaves the last committed state.
//! - `synchronous = FULL`: every committed transaction is on disk before the commit returns, so
//!   a power cut loses no notice, audit row or alert transition. Commits are few (one per
//!   snapshot interval for the history, one per change elsewhere), so one WAL fsync each costs
//!   nothing measurable.
//! - `user_version`: the schema version; a file from a newer wsguard is refused, not rewritten.
//!
//! Files are created 0600 and group/other access is taken away from an existing one before
//! SQLite opens it; SQLite gives the `-wal` and `-shm` files the database file's mode. Whatever
//! the umask of the process (the CLI does not set one), the stores stay root's alone.

use std::{
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Open or create the store at `path` read-write and bring it to `schema` (idempotent SQL:
/// `CREATE … IF NOT EXISTS`) at `version`. `what` names the store in errors.
pub(crate) fn open(path: &Path, what: &str, schema: &str, version: i64) -> Result<Connection> {
    open_migrating(path, what, schema, version, &[])
}

/// [`open`] for a store whose schema grew: `migrations` are `(version, sql)` in ascending
/// order, and a file at an older `user_version` (but not a new, empty one: 0) runs the SQL of
/// every later version in one transaction before `schema`. `schema` always describes the
/// latest version, so a new file needs no migration.
pub(crate) fn open_migrating(
    path: &Path,
    what: &str,
    schema: &str,
    version: i64,
    migrations: &[(i64, &str)],
) -> Result<Connection> {
    let ctx = || format!("{what} {}", path.display());
    private(path).with_context(ctx)?;
    let conn = Connection::open(path).with_context(ctx)?;
    conn.busy_timeout(BUSY_TIMEOUT).with_context(ctx)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).with_context(ctx)?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{}: journal_mode is {mode}, not WAL", ctx());
    }
    conn.pragma_update(None, "synchronous", "FULL").with_context(ctx)?;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).with_context(ctx)?;
    if found > version {
        bail!("{}: schema version {found} is newer than this wsguard ({version})", ctx());
    }
    if found > 0 {
        let pending: Vec<&(i64, &str)> = migrations.iter().filter(|(v, _)| *v > found && *v <= version).collect();
        if !pending.is_empty() {
            let tx = conn.unchecked_transaction().with_context(ctx)?;
            for (v, sql) in pending {
                tx.execute_batch(sql).with_context(|| format!("{}: migration to schema version {v}", ctx()))?;
            }
            tx.commit().with_context(ctx)?;
        }
    }
    conn.execute_batch(schema).with_context(ctx)?;
    conn.pragma_update(None, "user_version", version).with_context(ctx)?;
    Ok(conn)
}

/// Open an existing store read-only (the CLI beside a running agent).
pub(crate) fn open_read_only(path: &Path, what: &str) -> Result<Connection> {
    let ctx = || format!("{what} {}", path.display());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(ctx)?;
    conn.busy_timeout(BUSY_TIMEOUT).with_context(ctx)?;
    Ok(conn)
}

/// Create `path` 0600 if it is missing (an empty file is a new database to SQLite) and take
/// group and other access away from it if it has any.
fn private(path: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    let mode = f.metadata()?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))
            .with_context(|| format!("cannot make it 0600 (mode {mode:o})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_wal_full_sync_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = open(&path, "test store", "CREATE TABLE IF NOT EXISTS t (x INTEGER);", 3).unwrap();
        let q = |sql: &str| -> String {
            c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0)).map(|v| format!("{v:?}")).unwrap()
        };
        assert_eq!(q("PRAGMA journal_mode"), "Text(\"wal\")");
        assert_eq!(q("PRAGMA synchronous"), "Integer(2)", "FULL");
        assert_eq!(q("PRAGMA user_version"), "Integer(3)");
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        for f in ["s.sqlite", "s.sqlite-wal", "s.sqlite-shm"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        drop(c);
        let err = open(&path, "test store", "", 2).unwrap_err();
        assert!(format!("{err:#}").contains("schema version 3 is newer than this wsguard (2)"), "{err:#}");
        let ro = open_read_only(&path, "test store").unwrap();
        assert!(ro.execute("INSERT INTO t VALUES (2)", []).is_err());
    }
}
