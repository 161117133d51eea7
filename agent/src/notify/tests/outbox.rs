//! Outbox: order, persistence across reopen, memory fallback and recovery.

use std::time::Duration;

use crate::notify::{notice::Notice, outbox::Outbox};

fn n(ch: &str, i: u32) -> Notice {
    Notice {
        id: format!("{ch}-{i}"),
        channel: ch.into(),
        group_key: String::new(),
        group_labels: Default::default(),
        created_ms: 1000 + i as u64,
        entries: Vec::new(),
    }
}

fn drain(o: &mut Outbox, ch: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(r) = o.head(ch) {
        out.push(r.notice.id.clone());
        o.remove(&r.notice);
    }
    out
}

#[test]
fn per_channel_order_and_persistence_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.db");
    {
        let (mut o, state) = Outbox::open(&path);
        assert!(state.is_none());
        o.append(vec![n("a", 1), n("b", 1), n("a", 2)], "{\"s\":1}".into());
        o.append(vec![n("a", 3)], "{\"s\":2}".into());
        assert_eq!(o.storage(), ("sqlite", None));
        let head = o.head("a").unwrap();
        assert_eq!(head.notice.id, "a-1");
        o.remove(&head.notice);
        let p = o.pending();
        assert_eq!((p["a"].count, p["a"].oldest_created_ms, p["b"].count), (2, 1002, 1));
    }
    let (mut o, state) = Outbox::open(&path);
    assert_eq!(state.as_deref(), Some("{\"s\":2}"));
    o.append(vec![n("a", 4)], "{}".into());
    assert_eq!(drain(&mut o, "a"), ["a-2", "a-3", "a-4"]);
    assert_eq!(drain(&mut o, "b"), ["b-1"]);
    assert!(o.pending().is_empty());
}

#[test]
fn unusable_file_falls_back_to_memory_and_recovers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The state dir is a regular file: nothing can be created under it (even as root).
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, "").unwrap();
    let path = blocker.join("notify.db");
    let (mut o, _) = Outbox::open(&path);
    o.retry_every(Duration::ZERO);
    assert_eq!(o.storage().0, "memory");
    assert!(o.storage().1.unwrap().contains("cannot open"));
    o.append(vec![n("a", 1), n("a", 2)], "{}".into());
    assert_eq!(o.head("a").unwrap().notice.id, "a-1", "memory outbox still delivers");
    let first = o.head("a").unwrap().notice;
    o.remove(&first);
    // The directory appears: the next append writes the backlog through, in order.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    o.append(vec![n("a", 3)], "{\"ok\":1}".into());
    assert_eq!(o.storage(), ("sqlite", None));
    drop(o);
    let (mut o, state) = Outbox::open(&path);
    assert_eq!(state.as_deref(), Some("{\"ok\":1}"));
    assert_eq!(drain(&mut o, "a"), ["a-2", "a-3"]);
}

#[test]
fn failing_writes_keep_notices_in_memory_until_the_file_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.db");
    let (mut o, _) = Outbox::open(&path);
    o.retry_every(Duration::ZERO);
    o.append(vec![n("a", 1)], "{}".into());
    // Break writes from outside (as a full disk would): the table disappears.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("ALTER TABLE outbox RENAME TO hidden;").unwrap();
    o.append(vec![n("a", 2)], "{}".into());
    assert_eq!(o.storage().0, "memory");
    assert_eq!(o.head("a").unwrap().notice.id, "a-2", "the file's rows are unreadable; memory still serves");
    other.execute_batch("ALTER TABLE hidden RENAME TO outbox;").unwrap();
    o.append(vec![n("a", 3)], "{}".into());
    assert_eq!(o.storage(), ("sqlite", None));
    assert_eq!(drain(&mut o, "a"), ["a-1", "a-2", "a-3"]);
}
