//! Storage faults: the history file on a filesystem that fills up. Publishes fail
//! (never a 200 for an update that was not stored), `/readyz` says why, and once there
//! is room again the hub recovers by itself, without a restart and without losing or
//! repeating an acknowledged update.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{PATIENCE, TestHub};

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted when dropped
/// (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs { dir })
    }

    /// A tmpfs, or `None` (with a note) where it cannot be mounted. Where the
    /// environment variable `CI` is set, tests run as root and can mount:
    /// there, a failure to mount fails the test instead of skipping it.
    fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size) {
            Ok(tmpfs) => Some(tmpfs),
            Err(reason) if std::env::var_os("CI").is_some() => {
                panic!("cannot mount a tmpfs, which CI must be able to: {reason}")
            }
            Err(reason) => {
                eprintln!("skipped: cannot mount tmpfs (not root?): {reason}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        if !unmounted {
            // Still busy (a writer thread of the hub not yet gone): detach it now, the
            // kernel frees it when the last file closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Writes to `path` until the filesystem has no block left.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    for size in [chunk.len(), 4096, 512, 1] {
        while let Ok(n @ 1..) = file.write(&chunk[..size]) {
            written += n as u64;
        }
    }
    written
}

async fn readyz(t: &TestHub) -> (u16, String) {
    let response = t
        .client
        .get(format!("{}/readyz", t.base))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_fails_publishes_then_the_hub_recovers_without_restart() {
    let Some(tmpfs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let history: PathBuf = tmpfs.path().join("history.db");
    let t = TestHub::with(|b| b.history_file(&history).subscriptions(false)).await;
    let data = "d".repeat(1024);
    let form = [("topic", "/fill"), ("data", data.as_str())];

    let first = t.publish(&form).await;
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.push(t.publish(&form).await);
    }
    let (status, body) = readyz(&t).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let filler = tmpfs.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took no space");

    // redb has some room left inside its file: publish until the disk says no. The
    // writer then reopens the file by itself, 50 ms later, and writes to it as a test;
    // a reopened file may have free pages again (the failed commit's), so the hub can be
    // ready again for a few more publishes: go on until it is full and unready.
    let mut unready = None;
    for _ in 0..20_000 {
        let response = t.post(&form).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        if status == 200 {
            acked.push(body);
            continue;
        }
        assert!(status.is_server_error(), "{status}: {body}");
        let (status, body) = readyz(&t).await;
        if status != 200 {
            unready = Some((status, body));
            break;
        }
    }
    let (status, body) = unready.expect("20,000 publishes of 1 KiB fit on a full 4 MiB tmpfs");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("storage cannot write: "), "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    assert!(t.metric("tidings_log_write_errors_total").await >= 1.0);
    // The writer keeps reopening the file, yet does not stay ready on this disk: the
    // write it tries after reopening needs more room than the file has free. A publish
    // the hub accepts meanwhile must be durable (checked at the end).
    let give_up = Instant::now() + PATIENCE;
    for round in 0.. {
        let response = t.post(&form).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        if status == 200 {
            acked.push(body);
        } else {
            assert!(status.is_server_error(), "{status}: {body}");
        }
        if round >= 10 && status != 200 && t.metric("tidings_storage_ready").await == 0.0 {
            break;
        }
        assert!(Instant::now() < give_up, "ready on a full disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::remove_file(&filler).unwrap();
    // The writer retries by itself, at most 5 s apart.
    let give_up = Instant::now() + PATIENCE * 3;
    loop {
        let (status, body) = readyz(&t).await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < give_up, "still unready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        acked.push(t.publish(&form).await);
    }
    assert_eq!(t.metric("tidings_storage_ready").await, 1.0);

    // A subscriber that saw only the first update resumes: every acknowledged update
    // comes, once. (An update answered with an error may be there too, if the error
    // came after it was durable; it is not expected, nor forbidden.)
    let mut stream = t.subscribe_with("topic=/fill", None, Some(&first)).await;
    let last = acked.last().unwrap().clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let event = stream.expect().await;
        let id = event.id.to_string();
        *seen.entry(id.clone()).or_default() += 1;
        if id == last {
            break;
        }
    }
    for id in &acked {
        assert_eq!(seen.get(id), Some(&1), "acknowledged {id}");
    }
    assert!(
        !seen.contains_key(&first),
        "the resumed-from update came again"
    );
    drop(stream);
    drop(t);
    drop(tmpfs);
}

#[tokio::test]
async fn readyz_is_ready_until_shutdown() {
    let t = TestHub::start().await;
    assert_eq!(readyz(&t).await, (200, "ready\n".to_owned()));
    assert_eq!(t.metric("tidings_storage_ready").await, 1.0);
    t.hub.shutdown();
    // The listener may close before it answers: either way, never "ready".
    if let Ok(response) = t.client.get(format!("{}/readyz", t.base)).send().await {
        assert_eq!(response.status(), 503);
        assert_eq!(response.text().await.unwrap(), "shutting down\n");
    }
}

fn builder(path: &Path) -> tidings_hub::HubBuilder {
    tidings_hub::Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(crate::support::KEY))
        .history_file(path)
        .subscriptions(false)
}

/// Writes `n` updates of `data` to a history file and closes it.
async fn history_of(path: &Path, n: usize, data: impl Fn(usize) -> String) -> Vec<String> {
    let log = tidings_hub::log::Log::open(path, tidings_hub::log::Retention::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let update = tidings_hub::log::Update::new(format!("u{i}"), "/t", data(i));
        ids.push(log.append(update).await.unwrap().update.id.clone());
    }
    log.close().await;
    ids
}

#[tokio::test]
async fn a_truncated_history_file_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    history_of(&path, 300, |_| "x".repeat(300)).await;
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let error = builder(&path).build().await.unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("is damaged"), "{error}");
    assert!(error.contains("move it away"), "{error}");
}

#[tokio::test]
async fn a_history_file_of_a_newer_version_stops_the_start_and_is_left_alone() {
    use redb::ReadableTableMetadata;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    history_of(&path, 2, |i| format!("payload-{i}")).await;
    // As a newer tidings, rolled back since, appended it: a record whose format this
    // version does not know. (The table's name is the log's own.)
    let updates = redb::TableDefinition::<u64, &[u8]>::new("updates");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(updates)
            .unwrap()
            .insert(3, [3u8, 0x80, 0x01, b'x'].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let error = builder(&path).build().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "history file {} was written by a newer tidings (record format 3); this version reads formats 1 and 2",
            path.display()
        )),
        "{error}"
    );
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(updates).unwrap();
    assert_eq!(table.len().unwrap(), 3, "nothing was removed");
}

#[tokio::test]
async fn a_changed_record_is_skipped_by_replay_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let ids = history_of(&path, 3, |i| format!("payload-number-{i}")).await;
    // One byte of the middle record's data changes on disk (in every copy redb left).
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"payload-number-1";
    let mut changed = 0;
    for at in 0..bytes.len() - needle.len() {
        if &bytes[at..at + needle.len()] == needle {
            bytes[at + needle.len() - 1] = b'7';
            changed += 1;
        }
    }
    assert!(changed > 0);
    std::fs::write(&path, bytes).unwrap();

    let t = TestHub::serve(builder(&path).build().await.unwrap()).await;
    // Two replays: each goes past the bad record, which is counted once.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = t.subscribe_with("topic=/t", None, Some("earliest")).await;
        assert_eq!(stream.expect().await.id, ids[0].as_str());
        assert_eq!(stream.expect().await.id, ids[2].as_str());
        streams.push(stream);
    }
    let live = t.publish(&[("topic", "/t"), ("data", "live")]).await;
    for stream in &mut streams {
        assert_eq!(stream.expect().await.id, live.as_str());
    }
    assert_eq!(t.metric("tidings_history_corrupt_records_total").await, 1.0);
}

/// The log alone, appended to from many tasks while the disk fills and empties: every
/// append answered `Ok` is in the file, at its position, once the file is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_a_full_disk_lose_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tidings_hub::log::{Log, Retention, Update};

    let Some(tmpfs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let path = tmpfs.path().join("history.db");
    let log = Log::open(&path, Retention::default()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (log, stop) = (log.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), 0);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let update = Update::new(format!("t{task}-{n}"), "/t", "z".repeat(1024));
                    n += 1;
                    match log.append(update).await {
                        Ok(stored) => acked.push((stored.update.id.clone(), stored.position)),
                        Err(_) => failed += 1,
                    }
                    tokio::task::yield_now().await;
                }
                (acked, failed)
            })
        })
        .collect();

    let filler = tmpfs.path().join("filler");
    tokio::time::sleep(Duration::from_millis(100)).await;
    fill(&filler);
    let give_up = Instant::now() + PATIENCE;
    while log.stats().write_errors == 0 {
        assert!(
            Instant::now() < give_up,
            "appends did not fail on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&filler).unwrap();
    let give_up = Instant::now() + PATIENCE * 3;
    while !log.health().is_writable() {
        assert!(
            Instant::now() < give_up,
            "not writable again: {:?}",
            log.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (ok, err) = task.await.unwrap();
        acked.extend(ok);
        failed += err;
    }
    assert!(failed > 0, "no append failed");
    assert!(log.stats().write_errors > 0);
    log.close().await;

    let log = Log::open(&path, Retention::default()).await.unwrap();
    for (id, position) in &acked {
        assert_eq!(
            log.position_of(id).await.unwrap(),
            Some(*position),
            "acknowledged {id} at {position}"
        );
    }
    let all = log
        .read_after(tidings_hub::log::Cursor::Earliest, usize::MAX)
        .await
        .unwrap();
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert!(acked.len() <= all.len());
    log.close().await;
    drop(tmpfs);
}
