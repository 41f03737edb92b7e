//! Tests of the behaviour both backends share, run against each, and of what
//! is particular to the file.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use super::*;

/// A log of each backend; the file one lives in its own directory and reads
/// the time from a clock the test sets.
struct Fixture {
    name: &'static str,
    log: Log,
    clock: Arc<AtomicU64>,
    _dir: Option<tempfile::TempDir>,
}

async fn fixtures(retention: Retention) -> Vec<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let file = open_with_clock(&dir.path().join("log.db"), retention, &clock)
        .await
        .unwrap();
    vec![
        Fixture {
            name: "memory",
            log: Log::memory(retention),
            clock: Arc::new(AtomicU64::new(0)),
            _dir: None,
        },
        Fixture {
            name: "file",
            log: file,
            clock,
            _dir: Some(dir),
        },
    ]
}

async fn open_with_clock(
    path: &Path,
    retention: Retention,
    clock: &Arc<AtomicU64>,
) -> Result<Log, LogError> {
    let clock = Arc::clone(clock);
    let log = file::FileLog::open(
        path.to_path_buf(),
        retention,
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .await?;
    Ok(Log {
        backend: Backend::File(Arc::new(log)),
    })
}

fn update(id: &str) -> Update {
    Update::new(id, "/topic", format!("data of {id}"))
}

async fn ids(log: &Log, after: Cursor) -> Vec<(u64, String)> {
    log.read_after(after, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.position, s.update.id.clone()))
        .collect()
}

fn pairs(items: &[(u64, &str)]) -> Vec<(u64, String)> {
    items.iter().map(|&(p, id)| (p, id.to_owned())).collect()
}

#[tokio::test]
async fn an_empty_log_has_nothing() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        assert_eq!(log.len().await.unwrap(), 0, "{name}");
        assert!(log.is_empty().await.unwrap(), "{name}");
        assert_eq!(log.last_position(), 0, "{name}");
        assert!(
            log.read_after(Cursor::Earliest, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert!(
            log.read_after(Cursor::Position(5), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        assert_eq!(log.position_of("x").await.unwrap(), None, "{name}");
        assert_eq!(log.id_before(1).await.unwrap(), None, "{name}");
        assert_eq!(log.last_id().await.unwrap(), None, "{name}");
        assert_eq!(log.stats().appended, 0, "{name}");
    }
}

#[tokio::test]
async fn appends_get_increasing_positions_and_read_back_whole() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        let full = Update {
            id: "full".into(),
            topics: vec!["/a".into(), "/b/{x}".into()],
            data: "multi\nline".into(),
            private: true,
            event_type: Some("changed".into()),
            retry: Some(1500),
        };
        let first = log.append(full.clone()).await.unwrap();
        assert_eq!(first.position, 1, "{name}");
        assert_eq!(*first.update, full, "{name}");
        for (n, id) in ["b", "c"].into_iter().enumerate() {
            let stored = log.append(update(id)).await.unwrap();
            assert_eq!(stored.position, n as u64 + 2, "{name}");
        }
        assert_eq!(log.last_position(), 3, "{name}");
        assert_eq!(log.len().await.unwrap(), 3, "{name}");
        assert_eq!(log.stats().appended, 3, "{name}");

        let all = log.read_after(Cursor::Earliest, 10).await.unwrap();
        assert_eq!(all[0], first, "{name}");
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(1, "full"), (2, "b"), (3, "c")])
        );
        assert_eq!(
            ids(&log, Cursor::Position(0)).await,
            pairs(&[(1, "full"), (2, "b"), (3, "c")])
        );
        assert_eq!(
            ids(&log, Cursor::Position(1)).await,
            pairs(&[(2, "b"), (3, "c")]),
            "{name}"
        );
        assert_eq!(ids(&log, Cursor::Position(3)).await, [], "{name}");
        assert_eq!(ids(&log, Cursor::Position(u64::MAX)).await, [], "{name}");

        let two = log.read_after(Cursor::Earliest, 2).await.unwrap();
        assert_eq!(
            two.iter().map(|s| s.position).collect::<Vec<_>>(),
            [1, 2],
            "{name}"
        );
        assert!(
            log.read_after(Cursor::Earliest, 0)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn ids_map_to_positions_and_back() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        for id in ["a", "b", "c"] {
            log.append(update(id)).await.unwrap();
        }
        assert_eq!(log.position_of("b").await.unwrap(), Some(2), "{name}");
        assert_eq!(log.position_of("nope").await.unwrap(), None, "{name}");
        assert_eq!(log.id_before(1).await.unwrap(), None, "{name}");
        assert_eq!(
            log.id_before(2).await.unwrap().as_deref(),
            Some("a"),
            "{name}"
        );
        assert_eq!(
            log.id_before(3).await.unwrap().as_deref(),
            Some("b"),
            "{name}"
        );
        assert_eq!(
            log.id_before(99).await.unwrap().as_deref(),
            Some("c"),
            "{name}"
        );
        assert_eq!(log.last_id().await.unwrap().as_deref(), Some("c"), "{name}");
    }
}

#[tokio::test]
async fn a_duplicate_id_is_refused_without_using_a_position() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        log.append(update("a")).await.unwrap();
        let mut again = update("a");
        again.data = "other".into();
        match log.append(again).await {
            Err(LogError::DuplicateId(id)) => assert_eq!(id, "a", "{name}"),
            other => panic!("{name}: expected a duplicate, got {other:?}"),
        }
        assert_eq!(log.append(update("b")).await.unwrap().position, 2, "{name}");
        let all = log.read_after(Cursor::Earliest, 10).await.unwrap();
        assert_eq!(
            all[0].update.data, "data of a",
            "{name}: the first one stays"
        );
        assert_eq!(log.stats().appended, 2, "{name}");
    }
}

#[tokio::test]
async fn duplicates_within_one_batch_are_refused_alone() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        // Queued together, these reach the file writer as one batch.
        let (a, b, c) = tokio::join!(
            log.append(update("same")),
            log.append(update("same")),
            log.append(update("other")),
        );
        assert_eq!(a.unwrap().position, 1, "{name}");
        assert!(matches!(b, Err(LogError::DuplicateId(_))), "{name}: {b:?}");
        assert_eq!(c.unwrap().position, 2, "{name}");
    }
}

#[tokio::test]
async fn an_empty_id_is_generated() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        let first = log.append(update("")).await.unwrap();
        let second = log.append(update("")).await.unwrap();
        assert!(
            first.update.id.starts_with("urn:uuid:"),
            "{name}: {}",
            first.update.id
        );
        assert_ne!(first.update.id, second.update.id, "{name}");
        assert_eq!(
            log.position_of(&first.update.id).await.unwrap(),
            Some(1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest() {
    let retention = Retention {
        max_updates: Some(3),
        max_age: None,
    };
    for Fixture { name, log, .. } in fixtures(retention).await {
        for id in ["a", "b", "c", "d", "e"] {
            log.append(update(id)).await.unwrap();
        }
        assert_eq!(log.len().await.unwrap(), 3, "{name}");
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(3, "c"), (4, "d"), (5, "e")])
        );
        // A cursor before the oldest retained reads from the oldest.
        assert_eq!(ids(&log, Cursor::Position(1)).await.len(), 3, "{name}");
        assert_eq!(log.position_of("a").await.unwrap(), None, "{name}");
        assert_eq!(log.position_of("c").await.unwrap(), Some(3), "{name}");
        assert_eq!(log.id_before(3).await.unwrap(), None, "{name}");
        // An expired id is unknown, so it may be used again.
        assert_eq!(log.append(update("a")).await.unwrap().position, 6, "{name}");
        assert_eq!(log.position_of("c").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn retention_of_zero_keeps_nothing_but_counts_on() {
    let retention = Retention {
        max_updates: Some(0),
        max_age: None,
    };
    for Fixture { name, log, .. } in fixtures(retention).await {
        assert_eq!(log.append(update("a")).await.unwrap().position, 1, "{name}");
        assert_eq!(log.append(update("a")).await.unwrap().position, 2, "{name}");
        assert_eq!(log.len().await.unwrap(), 0, "{name}");
        assert_eq!(log.last_position(), 2, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn memory_retention_by_age_forgets_old_updates() {
    let log = Log::memory(Retention {
        max_updates: None,
        max_age: Some(Duration::from_secs(60)),
    });
    log.append(update("old")).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    log.append(update("new")).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    // Nothing appended since, yet the old one is gone.
    assert_eq!(ids(&log, Cursor::Earliest).await, pairs(&[(2, "new")]));
    assert_eq!(log.position_of("old").await.unwrap(), None);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(log.len().await.unwrap(), 0);
    assert_eq!(log.last_position(), 2);
}

#[tokio::test]
async fn file_retention_by_age_prunes_on_append() {
    let retention = Retention {
        max_updates: None,
        max_age: Some(Duration::from_secs(60)),
    };
    let fixture = fixtures(retention).await.pop().unwrap();
    let (log, clock) = (&fixture.log, &fixture.clock);
    log.append(update("old")).await.unwrap();
    clock.fetch_add(30_000, Ordering::SeqCst);
    log.append(update("new")).await.unwrap();
    clock.fetch_add(30_000, Ordering::SeqCst);
    log.append(update("newest")).await.unwrap();
    assert_eq!(
        ids(log, Cursor::Earliest).await,
        pairs(&[(2, "new"), (3, "newest")])
    );
    assert_eq!(log.position_of("old").await.unwrap(), None);
}

#[tokio::test]
async fn an_idle_file_log_still_expires() {
    let retention = Retention {
        max_updates: None,
        max_age: Some(Duration::from_secs(60)),
    };
    let fixture = fixtures(retention).await.pop().unwrap();
    let log = &fixture.log;
    log.append(update("a")).await.unwrap();
    fixture.clock.fetch_add(60_000, Ordering::SeqCst);
    // The writer looks for expired updates once per EXPIRY_INTERVAL (1 s) of
    // idleness: wait for that, with a generous bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.len().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not expired after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.position_of("a").await.unwrap(), None);
    assert!(
        log.stats().commits >= 2,
        "the expiry is a commit of its own"
    );
}

#[tokio::test]
async fn close_refuses_later_appends_but_keeps_earlier_ones() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        let other = log.clone();
        log.append(update("a")).await.unwrap();
        log.close().await;
        assert!(
            matches!(other.append(update("b")).await, Err(LogError::Closed)),
            "{name}"
        );
        assert_eq!(
            ids(&other, Cursor::Earliest).await,
            pairs(&[(1, "a")]),
            "{name}"
        );
        // Closing twice is harmless.
        other.close().await;
    }
}

#[tokio::test]
async fn a_dropped_append_is_written_whole_or_not_at_all() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        let mut append = Box::pin(log.append(update("gone")));
        // Poll once, so the writer has it, then drop it like a client that
        // went away.
        std::future::poll_fn(|cx| {
            let _ = append.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        drop(append);
        // Never polled: never sent.
        drop(log.append(update("never")));
        let after = log.append(update("after")).await.unwrap();
        assert_eq!(after.position, 2, "{name}");
        let all = log.read_after(Cursor::Earliest, 10).await.unwrap();
        assert_eq!(all[0].update.id, "gone", "{name}");
        assert_eq!(all[0].update.data, "data of gone", "{name}");
        assert_eq!(log.position_of("never").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn reopening_continues_positions_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    for id in ["a", "b"] {
        log.append(update(id)).await.unwrap();
    }
    log.close().await;

    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(log.last_position(), 2);
    assert_eq!(log.position_of("b").await.unwrap(), Some(2));
    assert!(matches!(
        log.append(update("a")).await,
        Err(LogError::DuplicateId(_))
    ));
    assert_eq!(log.append(update("c")).await.unwrap().position, 3);
    assert_eq!(
        ids(&log, Cursor::Earliest).await,
        pairs(&[(1, "a"), (2, "b"), (3, "c")])
    );
    drop(log); // dropping the last clone also releases the file

    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(log.last_position(), 3);
}

#[tokio::test]
async fn positions_keep_growing_after_everything_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let retention = Retention {
        max_updates: None,
        max_age: Some(Duration::from_secs(1)),
    };
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    log.append(update("a")).await.unwrap();
    log.append(update("b")).await.unwrap();
    log.close().await;

    clock.fetch_add(5_000, Ordering::SeqCst);
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    assert_eq!(log.last_position(), 2);
    assert_eq!(log.append(update("c")).await.unwrap().position, 3);
    assert_eq!(ids(&log, Cursor::Earliest).await, pairs(&[(3, "c")]));
}

#[tokio::test]
async fn a_file_open_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let _log = Log::open(&path, Retention::default()).await.unwrap();
    let error = Log::open(&path, Retention::default()).await.unwrap_err();
    assert!(matches!(error, LogError::Open { .. }), "{error:?}");
}

#[tokio::test]
async fn a_file_that_is_not_a_log_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "not a database, but long enough to look at".repeat(100),
    )
    .unwrap();
    let error = Log::open(&path, Retention::default()).await.unwrap_err();
    assert!(matches!(error, LogError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("notes.txt"), "{error}");
    let missing = dir.path().join("no/such/dir/log.db");
    let error = Log::open(&missing, Retention::default()).await.unwrap_err();
    assert!(error.to_string().contains("no/such/dir"), "{error}");
}

#[tokio::test]
async fn an_unreadable_record_is_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    log.append(update("a")).await.unwrap();
    log.close().await;
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(file::UPDATES)
            .unwrap()
            .insert(2, [9u8, 9, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(ids(&log, Cursor::Position(2)).await.len(), 0);
    assert_eq!(log.position_of("a").await.unwrap(), Some(1));
    let error = log.read_after(Cursor::Earliest, 10).await.unwrap_err();
    assert!(
        matches!(error, LogError::Corrupt { position: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("position 2"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log.db"), Retention::default())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(update(&format!("u{n}"))).await })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.unwrap().unwrap().position);
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=1000).collect::<Vec<_>>());
    let stats = log.stats();
    assert_eq!(stats.appended, 1000);
    assert!(
        stats.commits < stats.appended,
        "1000 concurrent appends took {} commits",
        stats.commits
    );
}

#[tokio::test]
async fn a_watch_wakes_on_appends_and_ends_on_close() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        let mut watch = log.watch();
        let waiting = tokio::spawn({
            let mut watch = watch.clone();
            async move { watch.wait_past(0).await }
        });
        log.append(update("a")).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(1), "{name}");
        // Already past: answers at once.
        assert_eq!(watch.wait_past(0).await, Some(1), "{name}");
        // A refused duplicate does not wake anyone.
        let _ = log.append(update("a")).await;
        let waiting = tokio::spawn({
            let mut watch = watch.clone();
            async move { watch.wait_past(1).await }
        });
        log.append(update("b")).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(2), "{name}");
        let waiting = tokio::spawn(async move { watch.wait_past(2).await });
        log.clone().close().await;
        assert_eq!(waiting.await.unwrap(), None, "{name}");
        assert_eq!(
            log.watch().wait_past(2).await,
            None,
            "{name}: a watch made after close"
        );
    }
}
