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
async fn a_reused_id_is_accepted_and_stands_for_its_latest_occurrence() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        log.append(update("a")).await.unwrap();
        log.append(update("b")).await.unwrap();
        let mut again = update("a");
        again.data = "other".into();
        assert_eq!(log.append(again).await.unwrap().position, 3, "{name}");
        log.append(update("c")).await.unwrap();
        assert_eq!(log.position_of("a").await.unwrap(), Some(3), "{name}");
        // Resuming from the reused id resumes after its latest occurrence.
        let seen = log.position_of("a").await.unwrap().unwrap();
        assert_eq!(
            ids(&log, Cursor::Position(seen)).await,
            pairs(&[(4, "c")]),
            "{name}"
        );
        // Both occurrences are in the history, each with its own data.
        let all = log.read_after(Cursor::Earliest, 10).await.unwrap();
        let data: Vec<_> = all.iter().map(|s| s.update.data.as_str()).collect();
        assert_eq!(
            data,
            ["data of a", "data of b", "other", "data of c"],
            "{name}"
        );
        assert_eq!(log.stats().appended, 4, "{name}");
    }
}

#[tokio::test]
async fn simultaneous_appends_of_one_id_all_get_positions() {
    for Fixture { name, log, .. } in fixtures(Retention::default()).await {
        // Queued together, these usually reach the file writer as one batch;
        // the outcome must not depend on whether they do.
        let (a, b, c) = tokio::join!(
            log.append(update("same")),
            log.append(update("same")),
            log.append(update("other")),
        );
        let mut positions = [a.unwrap(), b.unwrap(), c.unwrap()].map(|s| s.position);
        positions.sort_unstable();
        assert_eq!(positions, [1, 2, 3], "{name}");
        let latest = ids(&log, Cursor::Earliest)
            .await
            .into_iter()
            .filter(|(_, id)| id == "same")
            .map(|(p, _)| p)
            .max();
        assert_eq!(log.position_of("same").await.unwrap(), latest, "{name}");
    }
}

#[tokio::test]
async fn pruning_an_old_occurrence_keeps_the_id_of_the_newer_one() {
    let retention = Retention {
        max_updates: Some(2),
        ..Retention::UNLIMITED
    };
    for Fixture { name, log, .. } in fixtures(retention).await {
        log.append(update("a")).await.unwrap();
        log.append(update("a")).await.unwrap();
        // Position 1 goes: "a" still names position 2.
        log.append(update("b")).await.unwrap();
        assert_eq!(log.position_of("a").await.unwrap(), Some(2), "{name}");
        // Position 2 goes: now "a" is forgotten.
        log.append(update("c")).await.unwrap();
        assert_eq!(log.position_of("a").await.unwrap(), None, "{name}");
        assert_eq!(log.position_of("b").await.unwrap(), Some(3), "{name}");
    }
}

#[tokio::test]
async fn retention_by_bytes_keeps_the_newest_that_fit() {
    // Each update of this size takes a little over 100 bytes.
    let sized = |id: &str| Update::new(id, "/t", "x".repeat(100));
    let one = record::encoded_len(&sized("a"), 1_000_000) as u64;
    let retention = Retention {
        max_bytes: Some(3 * one + one / 2),
        ..Retention::UNLIMITED
    };
    for Fixture { name, log, .. } in fixtures(retention).await {
        assert_eq!(log.bytes(), 0, "{name}");
        for id in ["a", "b", "c"] {
            log.append(sized(id)).await.unwrap();
        }
        // The memory log measures with the wall clock, the file's with the
        // test's: their varint may differ by a few bytes.
        let three = log.bytes();
        assert!(three.abs_diff(3 * one) <= 9, "{name}: {three}");
        for id in ["d", "e"] {
            log.append(sized(id)).await.unwrap();
        }
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(3, "c"), (4, "d"), (5, "e")]),
            "{name}"
        );
        assert_eq!(log.bytes(), three, "{name}");
        assert_eq!(log.position_of("b").await.unwrap(), None, "{name}");

        // One update larger than the bound is kept, alone.
        let big = Update::new("big", "/t", "y".repeat(1000));
        log.append(big).await.unwrap();
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(6, "big")]),
            "{name}"
        );
        assert!(log.bytes() > 1000, "{name}: {}", log.bytes());
        log.append(sized("f")).await.unwrap();
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(7, "f")]),
            "{name}"
        );
        assert!(log.bytes() <= one + 9, "{name}: {}", log.bytes());
    }
}

#[tokio::test]
async fn the_byte_total_survives_a_reopen_and_follows_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        ..Retention::UNLIMITED
    };
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    let a = update("a");
    let size = record::encoded_len(&a, 1_000_000) as u64;
    log.append(a).await.unwrap();
    clock.fetch_add(30_000, Ordering::SeqCst);
    let b = update("b");
    let size_b = record::encoded_len(&b, 1_030_000) as u64;
    log.append(b).await.unwrap();
    assert_eq!(log.bytes(), size + size_b);
    log.close().await;

    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    assert_eq!(log.bytes(), size + size_b);
    clock.fetch_add(30_000, Ordering::SeqCst);
    // "a" expires with the next commit, "c" comes in.
    let c = update("c");
    let size_c = record::encoded_len(&c, 1_060_000) as u64;
    log.append(c).await.unwrap();
    assert_eq!(log.bytes(), size_b + size_c);
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
        ..Retention::UNLIMITED
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
        ..Retention::UNLIMITED
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
        ..Retention::UNLIMITED
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
        ..Retention::UNLIMITED
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
        ..Retention::UNLIMITED
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
    assert_eq!(log.append(update("a")).await.unwrap().position, 3);
    assert_eq!(log.append(update("c")).await.unwrap().position, 4);
    assert_eq!(
        ids(&log, Cursor::Earliest).await,
        pairs(&[(1, "a"), (2, "b"), (3, "a"), (4, "c")])
    );
    drop(log); // dropping the last clone also releases the file

    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(log.last_position(), 4);
    assert_eq!(log.position_of("a").await.unwrap(), Some(3));
}

#[tokio::test]
async fn positions_keep_growing_after_everything_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let retention = Retention {
        max_updates: None,
        max_age: Some(Duration::from_secs(1)),
        ..Retention::UNLIMITED
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
    assert!(
        matches!(error, LogError::Open { .. } | LogError::Damaged { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("notes.txt"), "{error}");
    let missing = dir.path().join("no/such/dir/log.db");
    let error = Log::open(&missing, Retention::default()).await.unwrap_err();
    assert!(error.to_string().contains("no/such/dir"), "{error}");
}

#[tokio::test]
async fn an_unparsable_record_is_skipped_logged_once_and_counted() {
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
            .insert(2, [1u8, 9, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(log.append(update("c")).await.unwrap().position, 3);
    assert_eq!(ids(&log, Cursor::Position(1)).await, pairs(&[(3, "c")]));
    for _ in 0..3 {
        assert_eq!(
            ids(&log, Cursor::Earliest).await,
            pairs(&[(1, "a"), (3, "c")])
        );
    }
    // Skipped records do not count against `max`.
    let one = log.read_after(Cursor::Position(1), 1).await.unwrap();
    assert_eq!(one[0].position, 3);
    assert_eq!(log.id_before(3).await.unwrap().as_deref(), Some("a"));
    assert_eq!(
        log.stats().corrupt_records,
        1,
        "counted once, read many times"
    );
}

/// Flips one byte in every copy of `needle` in the file (redb's copy on
/// write may leave stale copies of a page), as a failing disk would.
fn damage(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let offset = at + offset;
        bytes[offset + needle.len() - 1] ^= 0x01;
        found += 1;
        at = offset + needle.len();
    }
    assert!(found > 0, "{needle:?} not in the file");
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_changed_record_is_detected_and_replay_goes_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    for id in ["a", "b", "c"] {
        log.append(Update::new(id, "/t", format!("payload-of-{id}")))
            .await
            .unwrap();
    }
    log.close().await;
    damage(&path, b"payload-of-b");

    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(
        ids(&log, Cursor::Earliest).await,
        pairs(&[(1, "a"), (3, "c")])
    );
    assert_eq!(log.id_before(3).await.unwrap().as_deref(), Some("a"));
    assert_eq!(log.stats().corrupt_records, 1);
    // The log goes on.
    assert_eq!(log.append(update("d")).await.unwrap().position, 4);
}

#[tokio::test]
async fn a_truncated_file_gives_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    for n in 0..500 {
        log.append(Update::new(format!("u{n}"), "/t", "x".repeat(200)))
            .await
            .unwrap();
    }
    log.close().await;
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);

    let error = Log::open(&path, Retention::default()).await.unwrap_err();
    assert!(matches!(error, LogError::Damaged { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("move it away"), "{message}");
    // Nothing holds the file: once moved away, a new history starts.
    std::fs::rename(&path, dir.path().join("log.db.damaged")).unwrap();
    let log = Log::open(&path, Retention::default()).await.unwrap();
    assert_eq!(log.last_position(), 0);
}

#[tokio::test]
async fn records_of_format_version_1_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    Log::open(&path, Retention::default())
        .await
        .unwrap()
        .close()
        .await;
    {
        // As an older hub wrote them: version 1 records, no byte total.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut updates = txn.open_table(file::UPDATES).unwrap();
            for (position, id) in [(1u64, "old-1"), (2, "old-2")] {
                let mut record = record::encode(&update(id), 1_000);
                record.truncate(record.len() - 4);
                record[0] = 1;
                updates.insert(position, record.as_slice()).unwrap();
            }
            let mut ids = txn.open_table(file::IDS).unwrap();
            ids.insert("old-1", 1).unwrap();
            ids.insert("old-2", 2).unwrap();
            txn.open_table(file::META)
                .unwrap()
                .remove(file::RETAINED_BYTES)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let log = Log::open(&path, Retention::UNLIMITED).await.unwrap();
    assert_eq!(log.last_position(), 2);
    let old = log.read_after(Cursor::Earliest, 10).await.unwrap();
    assert_eq!(*old[1].update, update("old-2"));
    // The byte total was counted once at open.
    let expected = 2 * (record::encoded_len(&update("old-1"), 1_000) as u64 - 4);
    assert_eq!(log.bytes(), expected);
    log.append(update("new")).await.unwrap();
    assert_eq!(
        ids(&log, Cursor::Position(1)).await,
        pairs(&[(2, "old-2"), (3, "new")])
    );
    assert_eq!(log.stats().corrupt_records, 0);
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
        let waiting = tokio::spawn({
            let mut watch = watch.clone();
            async move { watch.wait_past(1).await }
        });
        log.append(update("b")).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(2), "{name}");
        assert!(log.health().is_writable(), "{name}");
        let waiting = tokio::spawn(async move { watch.wait_past(2).await });
        log.clone().close().await;
        assert_eq!(waiting.await.unwrap(), None, "{name}");
        assert!(
            matches!(log.health(), LogHealth::Closed),
            "{name}: {:?}",
            log.health()
        );
        assert_eq!(
            log.watch().wait_past(2).await,
            None,
            "{name}: a watch made after close"
        );
    }
}

fn payload(id: &str) -> Update {
    Update::new(id, "/t", format!("payload-of-{id}"))
}

/// Writes `records` at their positions straight into the file, as a damaged
/// disk or another version of tidings would have left them.
fn overwrite(path: &Path, records: &[(u64, Vec<u8>)]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut updates = txn.open_table(file::UPDATES).unwrap();
        for (position, record) in records {
            updates.insert(*position, record.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// The positions in the file, and what its id table holds, read straight
/// from the file once the log is closed.
fn file_contents(path: &Path) -> (Vec<u64>, Vec<(String, u64)>) {
    use redb::ReadableTable;
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let updates = txn.open_table(file::UPDATES).unwrap();
    let positions = updates
        .iter()
        .unwrap()
        .map(|entry| entry.unwrap().0.value())
        .collect();
    let ids = txn.open_table(file::IDS).unwrap();
    let ids = ids
        .iter()
        .unwrap()
        .map(|entry| {
            let (id, position) = entry.unwrap();
            (id.value().to_owned(), position.value())
        })
        .collect();
    (positions, ids)
}

#[tokio::test]
async fn a_damaged_oldest_record_outlives_the_age_limit_but_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        ..Retention::UNLIMITED
    };
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    for id in ["a", "b", "c"] {
        log.append(payload(id)).await.unwrap();
    }
    log.close().await;
    damage(&path, b"payload-of-a");

    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    clock.fetch_add(61_000, Ordering::SeqCst);
    // "b" and "c" expire with this commit; the damaged record's age cannot
    // be known, so it stays.
    log.append(payload("d")).await.unwrap();
    assert_eq!(ids(&log, Cursor::Earliest).await, pairs(&[(4, "d")]));
    assert_eq!(log.len().await.unwrap(), 2);
    assert_eq!(log.position_of("b").await.unwrap(), None);
    assert_eq!(log.position_of("a").await.unwrap(), Some(1));
    assert_eq!(log.stats().corrupt_records, 1);

    // The idle writer expires "d" behind it, and still not the damaged one.
    clock.fetch_add(61_000, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.len().await.unwrap() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not expired after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.position_of("d").await.unwrap(), None);
    assert_eq!(ids(&log, Cursor::Earliest).await, []);
    assert_eq!(log.stats().corrupt_records, 1, "counted once");
    assert!(log.health().is_writable());
    log.close().await;
    assert_eq!(file_contents(&path).0, [1]);
}

#[tokio::test]
async fn a_damaged_record_goes_only_when_the_count_limit_pushes_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let log = open_with_clock(&path, Retention::UNLIMITED, &clock)
        .await
        .unwrap();
    for id in ["a", "b", "c", "d"] {
        log.append(payload(id)).await.unwrap();
    }
    log.close().await;
    let size = record::encoded_len(&payload("a"), 1_000_000);
    // Record 1 so damaged that its id cannot be read either; record 2 with
    // its data damaged. Both keep their length.
    let mut garbage = vec![0xff; size];
    garbage[0] = 2;
    overwrite(&path, &[(1, garbage)]);
    damage(&path, b"payload-of-b");

    let retention = Retention {
        max_updates: Some(4),
        ..Retention::UNLIMITED
    };
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    assert_eq!(
        ids(&log, Cursor::Earliest).await,
        pairs(&[(3, "c"), (4, "d")])
    );
    assert_eq!(log.stats().corrupt_records, 2);
    assert_eq!(log.len().await.unwrap(), 4);
    assert_eq!(log.bytes(), 4 * size as u64);

    // Over the limit by one: the damaged record 1 goes. Its id entry could
    // not be found by its id, but names nothing now.
    log.append(payload("e")).await.unwrap();
    assert_eq!(log.len().await.unwrap(), 4);
    assert_eq!(log.position_of("a").await.unwrap(), None);
    assert_eq!(log.position_of("b").await.unwrap(), Some(2));
    log.append(payload("f")).await.unwrap();
    assert_eq!(log.position_of("b").await.unwrap(), None);
    assert_eq!(
        ids(&log, Cursor::Earliest).await,
        pairs(&[(3, "c"), (4, "d"), (5, "e"), (6, "f")])
    );
    assert_eq!(log.bytes(), 4 * size as u64);
    assert_eq!(
        log.stats().corrupt_records,
        2,
        "each counted once, read or removed"
    );
    log.close().await;
    let (positions, ids) = file_contents(&path);
    assert_eq!(positions, [3, 4, 5, 6]);
    // The damaged record's readable id went with it; the unreadable one's
    // entry is left behind, harmless.
    assert!(!ids.iter().any(|(id, _)| id == "b"), "{ids:?}");
    assert!(ids.contains(&("a".to_owned(), 1)), "{ids:?}");
}

/// A record of a format this build does not know, as a newer tidings might
/// write it.
fn version_3() -> Vec<u8> {
    let mut record = vec![3, 0x80, 0x01];
    record.extend_from_slice(b"a layout of the future");
    record
}

#[tokio::test]
async fn a_file_written_by_a_newer_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    for id in ["a", "b"] {
        log.append(payload(id)).await.unwrap();
    }
    log.close().await;
    overwrite(&path, &[(3, version_3()), (4, version_3())]);

    for _ in 0..2 {
        let error = Log::open(&path, Retention::default()).await.unwrap_err();
        assert!(
            matches!(error, LogError::NewerFormat { version: 3, .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "history file {} was written by a newer tidings (record format 3); this version reads formats 1 and 2",
                path.display()
            )
        );
    }
    assert_eq!(file_contents(&path).0, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_record_of_a_newer_format_is_never_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    for id in ["a", "b", "c"] {
        log.append(payload(id)).await.unwrap();
    }
    log.close().await;
    // Not at either end, where opening looks.
    overwrite(&path, &[(2, version_3())]);

    let retention = Retention {
        max_updates: Some(2),
        ..Retention::UNLIMITED
    };
    let log = Log::open(&path, retention).await.unwrap();
    let error = log.append(payload("d")).await.unwrap_err();
    assert!(
        matches!(error, LogError::NewerFormat { version: 3, .. }),
        "{error:?}"
    );
    assert!(
        matches!(
            &log.health(),
            LogHealth::Failing {
                error: LogError::NewerFormat { .. },
                ..
            }
        ),
        "{:?}",
        log.health()
    );
    log.close().await;
    // The whole commit was refused: nothing removed, nothing added.
    assert_eq!(file_contents(&path).0, [1, 2, 3]);
}

#[tokio::test]
async fn a_writer_that_panics_says_so_and_appends_fail_with_why() {
    let fixture = fixtures(Retention::default()).await.pop().unwrap();
    let log = &fixture.log;
    log.append(update("a")).await.unwrap();
    let Backend::File(file) = &log.backend else {
        unreachable!("the file fixture")
    };
    file.inject_commit_panic();
    let error = log.append(update("b")).await.unwrap_err();
    assert!(matches!(error, LogError::WriterStopped { .. }), "{error:?}");
    // The panic's message is recorded as the writer's unwinding ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let LogHealth::Failing {
            error: LogError::WriterStopped { reason },
            ..
        } = log.health()
        {
            assert_eq!(reason, "a panic injected by a test");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", log.health());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!log.health().is_writable());
    let error = log.append(update("c")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the history writer thread stopped: a panic injected by a test"
    );
    // Reads go on.
    assert_eq!(ids(log, Cursor::Earliest).await, pairs(&[(1, "a")]));
    log.clone().close().await;
}

#[tokio::test]
async fn a_byte_total_that_would_go_below_zero_stays_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let log = open_with_clock(&path, Retention::UNLIMITED, &clock)
        .await
        .unwrap();
    for id in ["a", "b"] {
        log.append(payload(id)).await.unwrap();
    }
    log.close().await;
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(file::META)
            .unwrap()
            .insert(file::RETAINED_BYTES, 0)
            .unwrap();
        txn.commit().unwrap();
    }
    let retention = Retention {
        max_updates: Some(1),
        ..Retention::UNLIMITED
    };
    let log = open_with_clock(&path, retention, &clock).await.unwrap();
    assert_eq!(log.bytes(), 0);
    log.append(payload("c")).await.unwrap();
    assert_eq!(ids(&log, Cursor::Earliest).await, pairs(&[(3, "c")]));
    assert_eq!(log.bytes(), 0);
    assert!(log.health().is_writable());
}
