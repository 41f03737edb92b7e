//! The durable log: a redb file written by one writer thread with group
//! commit.
//!
//! Tables:
//! - `updates`: position → encoded record ([`super::record`]), which carries
//!   the append time used for expiry;
//! - `ids`: update id → position, for `Last-Event-ID` and duplicate checks;
//! - `meta`: `last_position` → the highest position ever given, so that
//!   positions keep growing after a restart even when expiry emptied the log.
//!
//! Appends travel over a channel to the writer thread. It blocks for the
//! first request, then takes every request already queued (up to
//! [`MAX_BATCH`]), writes them all in one write transaction with
//! `Durability::Immediate` — one `fsync` — and only then answers each caller.
//! One thread, because redb allows one write transaction at a time anyway;
//! a dedicated OS thread rather than `spawn_blocking`, because it lives as
//! long as the log and would otherwise pin a pool thread. Readers use redb's
//! MVCC read transactions on blocking-pool threads and never wait for the
//! writer.
//!
//! The channel is unbounded, but each request belongs to a caller that waits
//! for its answer, so the queue never holds more than the number of appends
//! in flight.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::record;
use super::{LogError, LogStats, Retention, StorageError, Stored, Update};

pub(super) const UPDATES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("updates");
const IDS: TableDefinition<'_, &str, u64> = TableDefinition::new("ids");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const LAST_POSITION: &str = "last_position";

/// The most appends one transaction takes: bounds the latency of the first
/// caller of a batch and the size of one transaction.
const MAX_BATCH: usize = 4096;

/// How often an idle writer looks for expired updates when retention has a
/// maximum age. Updates outlive their age by at most this much.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// The wall clock in milliseconds since the Unix epoch: the append time must
/// survive restarts, so a monotonic clock would not do. Tests substitute
/// their own.
pub(super) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub(super) fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

pub(super) struct FileLog {
    path: PathBuf,
    db: Arc<Database>,
    requests: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    /// Follows the writer's announcements; closed when the writer stops.
    positions: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    last_position: AtomicU64,
    appended: AtomicU64,
    commits: AtomicU64,
}

enum Request {
    Append {
        update: Update,
        reply: oneshot::Sender<Result<Stored, LogError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

impl FileLog {
    pub(super) async fn open(
        path: PathBuf,
        retention: Retention,
        clock: Clock,
    ) -> Result<FileLog, LogError> {
        let opening = path.clone();
        let (db, last_position) =
            blocking(move || initialise(&opening))
                .await?
                .map_err(|source| LogError::Open {
                    path: path.clone(),
                    source,
                })?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters::default());
        counters
            .last_position
            .store(last_position, Ordering::Release);
        let (requests, queue) = mpsc::channel();
        let (announce, positions) = watch::channel(last_position);
        let writer = Writer {
            announce,
            db: Arc::clone(&db),
            retention,
            clock,
            counters: Arc::clone(&counters),
            last_position,
        };
        let writer = std::thread::Builder::new()
            .name("tidings-log-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|error| LogError::Open {
                path: path.clone(),
                source: StorageError::new(error),
            })?;
        tracing::debug!(path = %path.display(), last_position, "history file opened");
        Ok(FileLog {
            path,
            db,
            requests,
            counters,
            positions,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn append(&self, update: Update) -> Result<Stored, LogError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Append { update, reply })
            .map_err(|_| LogError::Closed)?;
        // The writer drops the reply unanswered only when it stops.
        answer.await.unwrap_or(Err(LogError::Closed))
    }

    pub(super) async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Stored>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.read(move |db| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let mut out = Vec::with_capacity(max.min(1024));
            for entry in updates
                .range(after.saturating_add(1)..)
                .map_err(LogError::storage)?
                .take(max)
            {
                let (position, bytes) = entry.map_err(LogError::storage)?;
                let position = position.value();
                let update = decode(position, bytes.value())?;
                out.push(Stored {
                    position,
                    update: Arc::new(update),
                });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn position_of(&self, id: &str) -> Result<Option<u64>, LogError> {
        let id = id.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let ids = txn.open_table(IDS).map_err(LogError::storage)?;
            let position = ids.get(id.as_str()).map_err(LogError::storage)?;
            Ok(position.map(|p| p.value()))
        })
        .await
    }

    pub(super) async fn id_before(&self, position: u64) -> Result<Option<String>, LogError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let before = updates
                .range(..position)
                .map_err(LogError::storage)?
                .next_back();
            match before {
                None => Ok(None),
                Some(entry) => {
                    let (position, bytes) = entry.map_err(LogError::storage)?;
                    let position = position.value();
                    let head = record::decode_head(bytes.value())
                        .map_err(|reason| LogError::Corrupt { position, reason })?;
                    Ok(Some(head.id))
                }
            }
        })
        .await
    }

    pub(super) fn last_position(&self) -> u64 {
        self.counters.last_position.load(Ordering::Acquire)
    }

    pub(super) async fn len(&self) -> Result<u64, LogError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            updates.len().map_err(LogError::storage)
        })
        .await
    }

    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.positions.clone()
    }

    pub(super) fn stats(&self) -> LogStats {
        LogStats {
            appended: self.counters.appended.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }

    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.requests.send(Request::Close { done }).is_ok() {
            // An error means the writer already stopped: closed either way.
            let _ = closed.await;
        }
    }

    /// Runs a read on the blocking pool: redb reads may touch the disk.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let db = Arc::clone(&self.db);
        blocking(move || read(&db)).await?
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        let (done, _) = oneshot::channel();
        let _ = self.requests.send(Request::Close { done });
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            // Waits for at most the batch in progress, so that the file is
            // unlocked when the log is gone.
            if writer.join().is_err() {
                tracing::error!("the history writer thread panicked");
            }
        }
    }
}

/// Runs `work` on tokio's blocking pool. A panic in it is a bug and goes on
/// unwinding in the caller; the only other failure is a runtime shutting
/// down, which closes the log.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LogError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(LogError::Closed),
    }
}

/// Opens or creates the file, makes sure the tables exist and reads the last
/// position.
fn initialise(path: &Path) -> Result<(Database, u64), StorageError> {
    let db = Database::create(path).map_err(StorageError::new)?;
    let txn = db.begin_write().map_err(StorageError::new)?;
    let last_position = {
        let updates = txn.open_table(UPDATES).map_err(StorageError::new)?;
        txn.open_table(IDS).map_err(StorageError::new)?;
        let meta = txn.open_table(META).map_err(StorageError::new)?;
        let recorded = meta
            .get(LAST_POSITION)
            .map_err(StorageError::new)?
            .map_or(0, |p| p.value());
        let newest = updates
            .last()
            .map_err(StorageError::new)?
            .map_or(0, |(p, _)| p.value());
        recorded.max(newest)
    };
    txn.commit().map_err(StorageError::new)?;
    Ok((db, last_position))
}

fn decode(position: u64, bytes: &[u8]) -> Result<Update, LogError> {
    record::decode(bytes).map_err(|reason| LogError::Corrupt { position, reason })
}

struct Writer {
    db: Arc<Database>,
    retention: Retention,
    clock: Clock,
    counters: Arc<Counters>,
    /// Dropped with the writer, which tells watchers the log is closed.
    announce: watch::Sender<u64>,
    last_position: u64,
}

type Pending = (Update, oneshot::Sender<Result<Stored, LogError>>);

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Request>) {
        self.expire();
        loop {
            let first = if self.retention.max_age.is_some() {
                match queue.recv_timeout(EXPIRY_INTERVAL) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        self.expire();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match queue.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            let mut close = None;
            match first {
                Request::Append { update, reply } => batch.push((update, reply)),
                Request::Close { done } => close = Some(done),
            }
            while close.is_none() && batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(Request::Append { update, reply }) => batch.push((update, reply)),
                    Ok(Request::Close { done }) => close = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            if let Some(done) = close {
                // Appends queued after the close are dropped with the queue;
                // their callers get `Closed`.
                drop(queue);
                let _ = done.send(());
                tracing::debug!("history writer stopped");
                return;
            }
        }
        tracing::debug!("history writer stopped");
    }

    /// Writes one batch in one durable transaction, then answers every
    /// caller: nobody hears "appended" before the `fsync` returned.
    fn commit(&mut self, batch: Vec<Pending>) {
        let size = batch.len();
        let now = (self.clock)();
        let (updates, replies): (Vec<Update>, Vec<_>) = batch.into_iter().unzip();
        match self.write(updates, now) {
            Ok((outcomes, appended)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .appended
                    .fetch_add(appended, Ordering::Relaxed);
                self.counters
                    .last_position
                    .store(self.last_position, Ordering::Release);
                if appended > 0 {
                    self.announce.send_replace(self.last_position);
                }
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    // A caller that went away still had its update written.
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(cause = %error, size, "history write failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The transaction of one batch: each update is either a duplicate
    /// (refused alone) or gets the next position; expired updates go in the
    /// same transaction. Positions are committed to `self` only on success.
    fn write(
        &mut self,
        updates: Vec<Update>,
        now: u64,
    ) -> Result<(Vec<Result<Stored, LogError>>, u64), LogError> {
        let mut txn = self.db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate);
        let mut next = self.last_position;
        let mut outcomes = Vec::with_capacity(updates.len());
        let mut appended = 0;
        {
            let mut positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let mut ids = txn.open_table(IDS).map_err(LogError::storage)?;
            for update in updates {
                // Ids inserted earlier in this batch are visible here too.
                if ids
                    .get(update.id.as_str())
                    .map_err(LogError::storage)?
                    .is_some()
                {
                    outcomes.push(Err(LogError::DuplicateId(update.id)));
                    continue;
                }
                next += 1;
                appended += 1;
                positions
                    .insert(next, record::encode(&update, now).as_slice())
                    .map_err(LogError::storage)?;
                ids.insert(update.id.as_str(), next)
                    .map_err(LogError::storage)?;
                outcomes.push(Ok(Stored {
                    position: next,
                    update: Arc::new(update),
                }));
            }
            if appended > 0 {
                txn.open_table(META)
                    .map_err(LogError::storage)?
                    .insert(LAST_POSITION, next)
                    .map_err(LogError::storage)?;
            }
            prune(&self.retention, &mut positions, &mut ids, now)?;
        }
        txn.commit().map_err(LogError::storage)?;
        self.last_position = next;
        Ok((outcomes, appended))
    }

    /// Removes expired updates while the writer is idle. Cheap when nothing
    /// expired: one read of the oldest record, no write.
    fn expire(&mut self) {
        let Some(max_age) = self.retention.max_age else {
            return;
        };
        let now = (self.clock)();
        match self.oldest_expired(now, max_age) {
            Ok(false) => {}
            Ok(true) => {
                let removed = (|| {
                    let mut txn = self.db.begin_write().map_err(LogError::storage)?;
                    txn.set_durability(Durability::Immediate);
                    let removed = {
                        let mut positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
                        let mut ids = txn.open_table(IDS).map_err(LogError::storage)?;
                        prune(&self.retention, &mut positions, &mut ids, now)?
                    };
                    txn.commit().map_err(LogError::storage)?;
                    Ok::<_, LogError>(removed)
                })();
                match removed {
                    Ok(removed) => {
                        self.counters.commits.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(removed, "expired history removed");
                    }
                    Err(error) => tracing::error!(cause = %error, "history expiry failed"),
                }
            }
            Err(error) => tracing::error!(cause = %error, "history expiry check failed"),
        }
    }

    fn oldest_expired(&self, now: u64, max_age: Duration) -> Result<bool, LogError> {
        let txn = self.db.begin_read().map_err(LogError::storage)?;
        let positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
        let oldest = positions.first().map_err(LogError::storage)?;
        Ok(match oldest {
            None => false,
            Some((_, bytes)) => match record::decode_head(bytes.value()) {
                Ok(head) => expired(head.appended_at_ms, now, max_age),
                Err(_) => true,
            },
        })
    }
}

fn expired(appended_at_ms: u64, now: u64, max_age: Duration) -> bool {
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    now.saturating_sub(appended_at_ms) >= max_age_ms
}

/// Removes the oldest updates beyond the retention limits from both tables;
/// returns how many went. An undecodable oldest record is removed too (with
/// a warning) rather than blocking expiry forever.
fn prune(
    retention: &Retention,
    positions: &mut redb::Table<'_, u64, &[u8]>,
    ids: &mut redb::Table<'_, &str, u64>,
    now: u64,
) -> Result<u64, LogError> {
    let max_updates = retention.max_updates.unwrap_or(u64::MAX);
    let mut len = positions.len().map_err(LogError::storage)?;
    let mut removed = 0;
    loop {
        let (position, id) = {
            let Some((position, bytes)) = positions.first().map_err(LogError::storage)? else {
                break;
            };
            let position = position.value();
            match record::decode_head(bytes.value()) {
                Ok(head) => {
                    let too_old = retention
                        .max_age
                        .is_some_and(|age| expired(head.appended_at_ms, now, age));
                    if !too_old && len <= max_updates {
                        break;
                    }
                    (position, Some(head.id))
                }
                Err(reason) => {
                    tracing::warn!(position, reason, "removing an unreadable history record");
                    (position, None)
                }
            }
        };
        positions.remove(position).map_err(LogError::storage)?;
        if let Some(id) = id {
            ids.remove(id.as_str()).map_err(LogError::storage)?;
        }
        len -= 1;
        removed += 1;
    }
    Ok(removed)
}
