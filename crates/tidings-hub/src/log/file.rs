//! The durable log: a redb file written by one writer thread with group
//! commit.
//!
//! Tables:
//! - `updates`: position → encoded record ([`super::record`]), which carries
//!   the append time used for expiry;
//! - `ids`: update id → the position of its latest occurrence, for
//!   `Last-Event-ID`;
//! - `meta`: `last_position` → the highest position ever given, so that
//!   positions keep growing after a restart even when expiry emptied the
//!   log; `retained_bytes` → the sum of the records' lengths, updated in the
//!   transaction that adds or removes them, so that the bound on bytes needs
//!   no scan.
//!
//! The newest updates are also kept in memory ([`super::tail`]) for
//! replays, and the writer's answers reach the runtime through
//! [`super::courier`].
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
//!
//! # After an I/O error
//!
//! redb marks a `Database` whose file I/O failed once and refuses every
//! later operation on it, reads included, with `PreviousIo` ("close and
//! re-open the database"); the failed commit itself was rolled back or, if
//! it failed after its data was durable, may be found by the next open. So
//! the writer, after such an error, drops its `Database`, takes it from the
//! readers too, and opens the file again — which repairs it — retrying with
//! a doubling pause ([`REOPEN_FIRST`] to [`REOPEN_MAX`]) until it works.
//! Appends that arrive meanwhile fail at once with the last error. Once
//! reopened, the writer takes the last position and the byte total from the
//! file again, so a batch that was answered with an error but did become
//! durable is neither overwritten nor counted twice.
//!
//! A panic of the writer thread (a bug) is caught where the thread starts
//! and recorded as the log's failure ([`LogError::WriterStopped`]), so that
//! [`FileLog::health`] does not say writable while every append fails.
//!
//! # Damaged records and newer formats
//!
//! Retention removes an undecodable record only when the count or the byte
//! limit requires a removal (see [`Writer::prune`]). A file whose oldest or
//! newest record has a format version above the ones this build knows was
//! written by a newer tidings: [`initialise`] refuses it, changing nothing.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::courier::Courier;
use super::record;
use super::tail::{TAIL_BYTES, Tail};
use super::{LogError, LogHealth, LogStats, Retention, StorageError, Stored, Update};

pub(super) const UPDATES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("updates");
pub(super) const IDS: TableDefinition<'_, &str, u64> = TableDefinition::new("ids");
pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const LAST_POSITION: &str = "last_position";
pub(super) const RETAINED_BYTES: &str = "retained_bytes";
/// Where the writer tries a write of some size after a failure; empty or
/// absent otherwise.
const PROBE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("probe");
/// The least and the most a probe writes. The least is a margin: a disk
/// with less room than this is as good as full.
const PROBE_SIZES: (usize, usize) = (256 * 1024, 4 * 1024 * 1024);

/// The most appends one transaction takes: bounds the latency of the first
/// caller of a batch and the size of one transaction.
const MAX_BATCH: usize = 4096;

/// How often the writer looks for expired updates when retention has a
/// maximum age: when idle, and in the commits of a busy log (so that a
/// steady stream of appends does not rewrite the oldest pages in every
/// commit to expire one update at a time). Updates outlive their age by at
/// most this much.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// The count and byte limits, when a commit goes over one, prune down to
/// 1/`PRUNE_STEP` of it below: at the default 100,000 updates, 390 go at
/// once, so the oldest pages of both tables are rewritten once every few
/// hundred appends instead of in every commit. A full history therefore
/// holds between 99.6% and 100% of its limits.
const PRUNE_STEP: u64 = 256;

/// The pause before the first attempt to reopen the file after a failure.
const REOPEN_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between attempts to reopen: how long appends may keep
/// failing after the disk has room again. Each attempt repairs the file,
/// which reads all of it, so not much less.
const REOPEN_MAX: Duration = Duration::from_secs(5);

/// How long the writer must go without a failure for the pause between
/// attempts to reopen to start again from [`REOPEN_FIRST`].
const QUIET_BEFORE_RESET: Duration = Duration::from_secs(60);

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
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    /// Follows the writer's announcements; closed when the writer stops.
    positions: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// What the writer and the readers share.
struct Shared {
    /// The open file; `None` while the writer reopens it after a failure.
    db: RwLock<Option<Arc<Database>>>,
    /// The last failure, until a write succeeds again.
    failure: Mutex<Option<(LogError, SystemTime)>>,
    /// Set when the writer stops.
    closed: AtomicBool,
    /// Positions of the records found undecodable, so that each is logged
    /// and counted once however often it is read.
    corrupt: Mutex<HashSet<u64>>,
    /// Set once the byte total was found lower than the records it counts,
    /// so that this is logged once.
    bytes_drift: AtomicBool,
    counters: Counters,
    /// The newest updates, for replays.
    tail: Tail,
    /// Makes the next commit panic, as a bug in the writer would.
    #[cfg(test)]
    panic_on_commit: AtomicBool,
}

#[derive(Default)]
struct Counters {
    last_position: AtomicU64,
    bytes: AtomicU64,
    appended: AtomicU64,
    commits: AtomicU64,
    write_errors: AtomicU64,
    corrupt_records: AtomicU64,
}

impl Shared {
    /// The file, for a read.
    fn db(&self) -> Result<Arc<Database>, LogError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match &*db {
            Some(db) => Ok(Arc::clone(db)),
            None => Err(self.failure().map_or(LogError::Closed, |(error, _)| error)),
        }
    }

    fn failure(&self) -> Option<(LogError, SystemTime)> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_failure(&self, failure: Option<(LogError, SystemTime)>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure;
    }

    fn set_db(&self, db: Option<Arc<Database>>) {
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = db;
    }

    /// Notes an undecodable record that a read skips: logged and counted the
    /// first time only.
    fn corrupt(&self, position: u64, reason: &'static str) {
        if self.first_corrupt(position) {
            tracing::warn!(position, reason, "skipping an unreadable history record");
        }
    }

    /// Counts an undecodable record unless it was counted before; says
    /// whether this was the first time.
    fn first_corrupt(&self, position: u64) -> bool {
        let first = self
            .corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(position);
        if first {
            self.counters
                .corrupt_records
                .fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Takes `size` off the byte total `bytes`. A total that would go below
    /// zero was wrong before (a file changed behind the log's back, or a
    /// bug): it stays at zero, and that is logged, once.
    fn take_bytes(&self, bytes: &mut u64, size: u64) {
        if *bytes < size && !self.bytes_drift.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                total = *bytes,
                removed = size,
                "the history's byte total was lower than the records it counts; it stays at 0 for now"
            );
        }
        *bytes = bytes.saturating_sub(size);
    }

    /// Why an append failed because the writer is gone: it was closed, or it
    /// stopped on a panic.
    fn stopped(&self) -> LogError {
        if self.closed.load(Ordering::Acquire) {
            return LogError::Closed;
        }
        match self.failure() {
            Some((error @ LogError::WriterStopped { .. }, _)) => error,
            // Not closed, so the writer panicked, and is still unwinding: the
            // panic's message is recorded a moment later.
            _ => LogError::WriterStopped {
                reason: "it panicked".to_owned(),
            },
        }
    }
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
        let opened = blocking(move || initialise(&opening)).await??;
        let last_position = opened.last_position;
        let db = Arc::new(opened.db);
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::clone(&db))),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            corrupt: Mutex::new(HashSet::new()),
            bytes_drift: AtomicBool::new(false),
            counters: Counters::default(),
            tail: Tail::new(TAIL_BYTES, opened.empty),
            #[cfg(test)]
            panic_on_commit: AtomicBool::new(false),
        });
        shared
            .counters
            .last_position
            .store(last_position, Ordering::Release);
        shared.counters.bytes.store(opened.bytes, Ordering::Release);
        let (requests, queue) = mpsc::channel();
        let (announce, positions) = watch::channel(last_position);
        let writer = Writer {
            path: path.clone(),
            announce,
            db: Some(db),
            retention,
            clock,
            shared: Arc::clone(&shared),
            last_position,
            bytes: opened.bytes,
            reopen_pause: REOPEN_FIRST,
            next_reopen: Instant::now(),
            probe_size: PROBE_SIZES.0,
            last_failure: None,
            last_age_check: 0,
            courier: Courier::start(),
        };
        let stopped = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("tidings-log-writer".into())
            .spawn(move || {
                // Only the normal exits of `run` mark the log closed: after a
                // panic, say why, or the log would look writable while every
                // append fails.
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| writer.run(queue))) {
                    let reason = panic_message(panic.as_ref());
                    tracing::error!(%reason, "the history writer thread panicked; appends fail until the log is opened again");
                    stopped.set_failure(Some((
                        LogError::WriterStopped { reason },
                        SystemTime::now(),
                    )));
                }
            })
            .map_err(|error| LogError::Open {
                path: path.clone(),
                source: StorageError::new(error),
            })?;
        tracing::debug!(path = %path.display(), last_position, bytes = opened.bytes, "history file opened");
        Ok(FileLog {
            path,
            shared,
            requests,
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
            .map_err(|_| self.shared.stopped())?;
        // The writer drops the reply unanswered only when it stops.
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.shared.stopped()),
        }
    }

    /// Makes the writer panic at its next commit.
    #[cfg(test)]
    pub(super) fn inject_commit_panic(&self) {
        self.shared.panic_on_commit.store(true, Ordering::SeqCst);
    }

    pub(super) async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Stored>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(updates) = self.shared.tail.read_after(after, max) {
            return Ok(updates);
        }
        self.read(move |db, shared| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let mut out = Vec::with_capacity(max.min(1024));
            for entry in updates
                .range(after.saturating_add(1)..)
                .map_err(LogError::storage)?
            {
                let (position, bytes) = entry.map_err(LogError::storage)?;
                let position = position.value();
                // Skipped, not returned as an error: a reader that stopped
                // at a bad record would stop there on every try.
                match record::decode(bytes.value()) {
                    Ok(update) => out.push(Stored {
                        position,
                        update: Arc::new(update),
                    }),
                    Err(reason) => shared.corrupt(position, reason),
                }
                if out.len() == max {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn position_of(&self, id: &str) -> Result<Option<u64>, LogError> {
        let id = id.to_owned();
        self.read(move |db, _| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let ids = txn.open_table(IDS).map_err(LogError::storage)?;
            let Some(position) = ids.get(id.as_str()).map_err(LogError::storage)? else {
                return Ok(None);
            };
            let position = position.value();
            // An entry may outlive its record: retention removed an
            // undecodable record whose id it could not read. Such an id is
            // forgotten, as if it had been pruned.
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let exists = updates.get(position).map_err(LogError::storage)?.is_some();
            Ok(exists.then_some(position))
        })
        .await
    }

    pub(super) async fn id_before(&self, position: u64) -> Result<Option<String>, LogError> {
        self.read(move |db, shared| {
            let txn = db.begin_read().map_err(LogError::storage)?;
            let updates = txn.open_table(UPDATES).map_err(LogError::storage)?;
            for entry in updates.range(..position).map_err(LogError::storage)?.rev() {
                let (position, bytes) = entry.map_err(LogError::storage)?;
                match record::decode_head(bytes.value()) {
                    Ok(head) => return Ok(Some(head.id)),
                    Err(reason) => shared.corrupt(position.value(), reason),
                }
            }
            Ok(None)
        })
        .await
    }

    pub(super) fn last_position(&self) -> u64 {
        self.shared.counters.last_position.load(Ordering::Acquire)
    }

    pub(super) fn bytes(&self) -> u64 {
        self.shared.counters.bytes.load(Ordering::Acquire)
    }

    pub(super) async fn len(&self) -> Result<u64, LogError> {
        self.read(|db, _| {
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
        let counters = &self.shared.counters;
        LogStats {
            appended: counters.appended.load(Ordering::Relaxed),
            commits: counters.commits.load(Ordering::Relaxed),
            write_errors: counters.write_errors.load(Ordering::Relaxed),
            corrupt_records: counters.corrupt_records.load(Ordering::Relaxed),
        }
    }

    pub(super) fn health(&self) -> LogHealth {
        if self.shared.closed.load(Ordering::Acquire) {
            return LogHealth::Closed;
        }
        match self.shared.failure() {
            None => LogHealth::Writable,
            Some((error, at)) => LogHealth::Failing { error, at },
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
        read: impl FnOnce(&Database, &Shared) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let db = shared.db()?;
            read(&db, &shared)
        })
        .await?
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
        // Readers may still hold the file for a moment; release ours.
        self.shared.set_db(None);
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

/// A file opened by [`initialise`].
struct Opened {
    db: Database,
    /// Whether the file holds no update.
    empty: bool,
    last_position: u64,
    bytes: u64,
}

/// Opens or creates the file (repairing it after a crash), makes sure the
/// tables exist and reads the last position and the byte total.
///
/// redb refuses some damaged files with an error and meets others with a
/// failed assertion (a file cut short, for one: "storage.raw_file_len() >=
/// header.layout().len()"). Either way the file cannot be used as it is, and
/// that is what the caller must hear, not a panic: the panic is caught here,
/// on the thread that opens, before anything else could see a half-made
/// `Database`.
fn initialise(path: &Path) -> Result<Opened, LogError> {
    let damaged = |reason: String| LogError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    match catch_unwind(AssertUnwindSafe(|| open_tables(path))) {
        Ok(Ok(Ok(opened))) => Ok(opened),
        Ok(Err(error)) => match &*error.0 {
            redb::Error::Corrupted(reason) => Err(damaged(reason.clone())),
            _ => Err(LogError::Open {
                path: path.to_path_buf(),
                source: error,
            }),
        },
        Ok(Ok(Err(version))) => Err(LogError::NewerFormat {
            path: path.to_path_buf(),
            version,
        }),
        Err(panic) => {
            let reason = panic_message(panic.as_ref());
            Err(damaged(format!(
                "the storage engine cannot read it: {reason}"
            )))
        }
    }
}

/// The message a panic was given, if it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The format version of the records in a file written by a newer build,
/// if it is one. Only the oldest and the newest record are looked at, so
/// that opening reads no more than that: a newer build writes the newest
/// records, and its records outlive ours only if it rewrote the oldest.
fn newer_format(db: &Database) -> Result<Option<u8>, StorageError> {
    let txn = db.begin_read().map_err(StorageError::new)?;
    let updates = match txn.open_table(UPDATES) {
        Ok(updates) => updates,
        // A new file.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(StorageError::new(error)),
    };
    let ends = [
        updates.first().map_err(StorageError::new)?,
        updates.last().map_err(StorageError::new)?,
    ];
    Ok(ends
        .into_iter()
        .flatten()
        .find_map(|(_, record)| record::newer_version(record.value())))
}

/// The file opened, or the format version of its records if a newer build
/// wrote them (the file is then left as it was).
fn open_tables(path: &Path) -> Result<Result<Opened, u8>, StorageError> {
    let db = Database::create(path).map_err(StorageError::new)?;
    if let Some(version) = newer_format(&db)? {
        return Ok(Err(version));
    }
    let txn = db.begin_write().map_err(StorageError::new)?;
    // A probe left by a writer that stopped between its two transactions.
    txn.delete_table(PROBE).map_err(StorageError::new)?;
    let (last_position, bytes, empty) = {
        let updates = txn.open_table(UPDATES).map_err(StorageError::new)?;
        txn.open_table(IDS).map_err(StorageError::new)?;
        let mut meta = txn.open_table(META).map_err(StorageError::new)?;
        let recorded = meta
            .get(LAST_POSITION)
            .map_err(StorageError::new)?
            .map_or(0, |p| p.value());
        let newest = updates
            .last()
            .map_err(StorageError::new)?
            .map_or(0, |(p, _)| p.value());
        let bytes = meta
            .get(RETAINED_BYTES)
            .map_err(StorageError::new)?
            .map(|b| b.value());
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => {
                // A file from before the total was kept: count it once.
                let mut total = 0;
                for entry in updates.iter().map_err(StorageError::new)? {
                    total += entry.map_err(StorageError::new)?.1.value().len() as u64;
                }
                meta.insert(RETAINED_BYTES, total)
                    .map_err(StorageError::new)?;
                total
            }
        };
        let empty = updates.is_empty().map_err(StorageError::new)?;
        (recorded.max(newest), bytes, empty)
    };
    txn.commit().map_err(StorageError::new)?;
    Ok(Ok(Opened {
        db,
        empty,
        last_position,
        bytes,
    }))
}

struct Writer {
    path: PathBuf,
    /// `None` after an I/O error, until the file is reopened.
    db: Option<Arc<Database>>,
    retention: Retention,
    clock: Clock,
    shared: Arc<Shared>,
    /// Dropped with the writer, which tells watchers the log is closed.
    announce: watch::Sender<u64>,
    last_position: u64,
    /// The retained bytes as last committed.
    bytes: u64,
    /// The pause before the next attempt to reopen, doubled by each failure.
    reopen_pause: Duration,
    next_reopen: Instant,
    /// How many bytes the batch that failed last would have taken.
    probe_size: usize,
    /// When the last write failed, if one did.
    last_failure: Option<Instant>,
    /// The log clock's time when a commit last looked for expired updates.
    last_age_check: u64,
    /// Takes the answers to the runtime that opened the log.
    courier: Courier,
}

type Pending = (Update, oneshot::Sender<Result<Stored, LogError>>);

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Request>) {
        self.expire();
        loop {
            let wait = if self.db.is_none() {
                Some(self.next_reopen.saturating_duration_since(Instant::now()))
            } else if self.retention.max_age.is_some() {
                Some(EXPIRY_INTERVAL)
            } else {
                None
            };
            let first = match wait {
                Some(wait) => match queue.recv_timeout(wait) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.db.is_none() {
                            self.reopen();
                        } else {
                            self.expire();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match queue.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
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
                if self.db.is_none() && Instant::now() >= self.next_reopen {
                    self.reopen();
                }
                self.commit(batch);
            }
            if let Some(done) = close {
                // Appends queued after the close are dropped with the queue;
                // their callers get `Closed` (marked first, so that they do
                // not take it for a crash).
                self.shared.closed.store(true, Ordering::Release);
                drop(queue);
                let _ = done.send(());
                tracing::debug!("history writer stopped");
                return;
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        tracing::debug!("history writer stopped");
    }

    /// Writes one batch in one durable transaction, then answers every
    /// caller: nobody hears "appended" before the `fsync` returned.
    fn commit(&mut self, batch: Vec<Pending>) {
        #[cfg(test)]
        if self.shared.panic_on_commit.swap(false, Ordering::SeqCst) {
            panic!("a panic injected by a test");
        }
        let size = batch.len();
        let now = (self.clock)();
        let (updates, replies): (Vec<Update>, Vec<_>) = batch.into_iter().unzip();
        let batch_bytes: usize = updates
            .iter()
            .map(|update| record::encoded_len(update, now))
            .sum();
        let Some(db) = self.db.clone() else {
            // Still reopening: fail at once rather than keep callers waiting
            // for a disk that may not come back soon.
            let error = self
                .shared
                .failure()
                .map_or(LogError::Closed, |(error, _)| error);
            self.courier.deliver(
                replies
                    .into_iter()
                    .map(|reply| (reply, Err(error.clone())))
                    .collect(),
            );
            return;
        };
        match self.write(&db, updates, now) {
            Ok(stored) => {
                self.succeeded();
                let counters = &self.shared.counters;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .appended
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                counters.bytes.store(self.bytes, Ordering::Release);
                counters
                    .last_position
                    .store(self.last_position, Ordering::Release);
                self.announce.send_replace(self.last_position);
                self.courier.deliver(
                    replies
                        .into_iter()
                        .zip(stored)
                        .map(|(reply, stored)| (reply, Ok(stored)))
                        .collect(),
                );
            }
            Err(error) => {
                tracing::error!(cause = %error, size, "history write failed");
                // Noted before the callers hear of it, so that one who then
                // asks for the log's health hears of it too.
                self.probe_size = batch_bytes.clamp(PROBE_SIZES.0, PROBE_SIZES.1);
                self.failed(error.clone());
                self.courier.deliver(
                    replies
                        .into_iter()
                        .map(|reply| (reply, Err(error.clone())))
                        .collect(),
                );
            }
        }
    }

    /// The transaction of one batch: each update gets the next position, and
    /// its id now points at it; expired updates go in the same transaction.
    /// Positions and bytes are committed to `self` only on success.
    fn write(
        &mut self,
        db: &Database,
        updates: Vec<Update>,
        now: u64,
    ) -> Result<Vec<Stored>, LogError> {
        let check_age = self.age_check_due(now);
        let mut txn = db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate);
        let mut next = self.last_position;
        let mut bytes = self.bytes;
        let mut stored = Vec::with_capacity(updates.len());
        let mut sizes = Vec::with_capacity(updates.len());
        let pruned;
        {
            let mut positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
            let mut ids = txn.open_table(IDS).map_err(LogError::storage)?;
            for update in updates {
                next += 1;
                let record = record::encode(&update, now);
                bytes += record.len() as u64;
                sizes.push(record.len() as u64);
                positions
                    .insert(next, record.as_slice())
                    .map_err(LogError::storage)?;
                // A reused id now stands for this occurrence.
                ids.insert(update.id.as_str(), next)
                    .map_err(LogError::storage)?;
                stored.push(Stored {
                    position: next,
                    update: Arc::new(update),
                });
            }
            pruned = self.prune(&mut positions, &mut ids, now, &mut bytes, check_age)?;
            let mut meta = txn.open_table(META).map_err(LogError::storage)?;
            meta.insert(LAST_POSITION, next)
                .map_err(LogError::storage)?;
            meta.insert(RETAINED_BYTES, bytes)
                .map_err(LogError::storage)?;
        }
        txn.commit().map_err(LogError::storage)?;
        self.last_position = next;
        self.bytes = bytes;
        self.shared.tail.committed(&stored, &sizes, pruned.through);
        Ok(stored)
    }

    /// Removes expired updates while the writer is idle. Cheap when nothing
    /// expired: one read of the oldest decodable record (and of the
    /// undecodable ones before it, which the age limit passes over), no
    /// write.
    fn expire(&mut self) {
        let Some(max_age) = self.retention.max_age else {
            return;
        };
        let Some(db) = self.db.clone() else {
            return;
        };
        let now = (self.clock)();
        match oldest_expired(&db, &self.shared, now, max_age) {
            Ok(false) => {}
            Ok(true) => {
                let mut bytes = self.bytes;
                let removed = (|| {
                    let mut txn = db.begin_write().map_err(LogError::storage)?;
                    txn.set_durability(Durability::Immediate);
                    let removed = {
                        let mut positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
                        let mut ids = txn.open_table(IDS).map_err(LogError::storage)?;
                        let removed =
                            self.prune(&mut positions, &mut ids, now, &mut bytes, true)?;
                        txn.open_table(META)
                            .map_err(LogError::storage)?
                            .insert(RETAINED_BYTES, bytes)
                            .map_err(LogError::storage)?;
                        removed
                    };
                    txn.commit().map_err(LogError::storage)?;
                    Ok::<_, LogError>(removed)
                })();
                match removed {
                    Ok(removed) => {
                        self.shared.tail.pruned(removed.through);
                        let removed = removed.count;
                        self.bytes = bytes;
                        self.shared.counters.bytes.store(bytes, Ordering::Release);
                        self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
                        self.succeeded();
                        tracing::debug!(removed, "expired history removed");
                    }
                    Err(error) => {
                        tracing::error!(cause = %error, "history expiry failed");
                        self.failed(error);
                    }
                }
            }
            Err(error) => {
                tracing::error!(cause = %error, "history expiry check failed");
                self.failed(error);
            }
        }
    }

    /// A write went through: the log is writable (again).
    fn succeeded(&mut self) {
        if self.shared.failure().is_some() {
            tracing::info!("history storage writable again");
            self.shared.set_failure(None);
        }
    }

    /// A write failed. After an I/O error redb refuses everything on this
    /// `Database` (see the module's doc): let it go, so that [`Writer::reopen`]
    /// can open the file anew once every reader has let go of it too.
    fn failed(&mut self, error: LogError) {
        self.shared
            .counters
            .write_errors
            .fetch_add(1, Ordering::Relaxed);
        let poisoned = match &error {
            LogError::Storage(storage) => matches!(
                &*storage.0,
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_)
            ),
            _ => false,
        };
        self.shared.set_failure(Some((error, SystemTime::now())));
        if poisoned && self.db.is_some() {
            self.db = None;
            self.shared.set_db(None);
            self.schedule_reopen();
        }
    }

    /// The next attempt to reopen waits twice as long as the last one did, up
    /// to [`REOPEN_MAX`]. The pause starts short again only after a minute
    /// without failures: a disk with a few pages free lets the odd write
    /// through, and must not make the writer reopen (and repair) the file
    /// every few milliseconds.
    fn schedule_reopen(&mut self) {
        let now = Instant::now();
        if self
            .last_failure
            .is_none_or(|at| now.duration_since(at) > QUIET_BEFORE_RESET)
        {
            self.reopen_pause = REOPEN_FIRST;
        }
        self.last_failure = Some(now);
        self.next_reopen = now + self.reopen_pause;
        self.reopen_pause = (self.reopen_pause * 2).min(REOPEN_MAX);
    }

    /// One attempt to open the file again after an I/O error, and to write
    /// to it: opening alone proves nothing about a full disk (it may need no
    /// write at all). The log is writable again once that write went through.
    fn reopen(&mut self) {
        match initialise(&self.path) {
            Ok(opened) => {
                if opened.last_position < self.last_position {
                    // Cannot happen with a disk that honours fsync: an
                    // acknowledged update is gone. Positions still only grow.
                    tracing::error!(
                        file = opened.last_position,
                        acknowledged = self.last_position,
                        "the reopened history file lacks acknowledged updates"
                    );
                }
                // A batch answered with an error may have become durable all
                // the same: take the file's word for what it holds.
                self.last_position = self.last_position.max(opened.last_position);
                self.bytes = opened.bytes;
                let db = Arc::new(opened.db);
                self.shared.tail.restart();
                self.shared.set_db(Some(Arc::clone(&db)));
                self.db = Some(db);
                let counters = &self.shared.counters;
                counters.bytes.store(self.bytes, Ordering::Release);
                counters
                    .last_position
                    .store(self.last_position, Ordering::Release);
                self.announce.send_if_modified(|last| {
                    let grew = self.last_position > *last;
                    *last = (*last).max(self.last_position);
                    grew
                });
                tracing::debug!(path = %self.path.display(), "history file reopened after a storage failure");
                match self.probe() {
                    Ok(()) => {
                        self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
                        self.succeeded();
                    }
                    Err(error) => {
                        tracing::warn!(cause = %error, retry_in = ?self.reopen_pause, "the history file cannot be written yet");
                        self.failed(error);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(cause = %error, retry_in = ?self.reopen_pause, "cannot reopen the history file yet");
                self.shared
                    .counters
                    .write_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.set_failure(Some((error, SystemTime::now())));
                self.schedule_reopen();
            }
        }
    }

    /// Writes as many bytes as the batch that failed, durably, then removes
    /// them: a write small enough to fit in the file's free pages would say
    /// "writable" on a disk that still has no room for the next batch.
    fn probe(&self) -> Result<(), LogError> {
        let Some(db) = &self.db else {
            return Err(LogError::Closed);
        };
        let mut txn = db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate);
        txn.open_table(PROBE)
            .map_err(LogError::storage)?
            .insert("probe", vec![0; self.probe_size].as_slice())
            .map_err(LogError::storage)?;
        txn.commit().map_err(LogError::storage)?;
        let mut txn = db.begin_write().map_err(LogError::storage)?;
        txn.set_durability(Durability::Immediate);
        txn.delete_table(PROBE).map_err(LogError::storage)?;
        txn.commit().map_err(LogError::storage)
    }
}

/// Whether the age limit removes anything now: one read of the oldest
/// decodable record, no write.
fn oldest_expired(
    db: &Database,
    shared: &Shared,
    now: u64,
    max_age: Duration,
) -> Result<bool, LogError> {
    let txn = db.begin_read().map_err(LogError::storage)?;
    let positions = txn.open_table(UPDATES).map_err(LogError::storage)?;
    Ok(!expired_records(&positions, shared, now, max_age, 1)?.is_empty())
}

/// Up to `limit` of the oldest records that the age limit removes, as
/// (position, length, id): those before the first decodable record that is
/// not expired. Undecodable records are passed over (and noted), not
/// returned: their age cannot be known.
fn expired_records(
    positions: &impl ReadableTable<u64, &'static [u8]>,
    shared: &Shared,
    now: u64,
    max_age: Duration,
    limit: usize,
) -> Result<Vec<(u64, u64, String)>, LogError> {
    let mut found = Vec::new();
    for entry in positions.iter().map_err(LogError::storage)? {
        if found.len() == limit {
            break;
        }
        let (position, record) = entry.map_err(LogError::storage)?;
        let (position, record) = (position.value(), record.value());
        match record::decode_head(record) {
            Ok(head) if expired(head.appended_at_ms, now, max_age) => {
                found.push((position, record.len() as u64, head.id));
            }
            Ok(_) => break,
            Err(reason) => shared.corrupt(position, reason),
        }
    }
    Ok(found)
}

/// What a prune removed.
#[derive(Debug, Default, Clone, Copy)]
struct Pruned {
    /// How many updates.
    count: u64,
    /// The highest position removed; 0 for none.
    through: u64,
}

impl Pruned {
    fn note(&mut self, position: u64) {
        self.count += 1;
        self.through = self.through.max(position);
    }
}

fn expired(appended_at_ms: u64, now: u64, max_age: Duration) -> bool {
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    now.saturating_sub(appended_at_ms) >= max_age_ms
}

/// Removes the entry of `id` if it points at `position`: the latest
/// occurrence of a reused id keeps it.
fn forget_id(
    ids: &mut redb::Table<'_, &str, u64>,
    id: &str,
    position: u64,
) -> Result<(), LogError> {
    let latest = ids.get(id).map_err(LogError::storage)?.map(|p| p.value());
    if latest == Some(position) {
        ids.remove(id).map_err(LogError::storage)?;
    }
    Ok(())
}

impl Writer {
    /// Whether a commit at `now` looks for expired updates: once per
    /// [`EXPIRY_INTERVAL`] of the log's clock (and whenever the clock went
    /// back).
    fn age_check_due(&mut self, now: u64) -> bool {
        let interval = u64::try_from(EXPIRY_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_age_check;
        let due = last == 0 || now < last || now - last >= interval;
        if due {
            self.last_age_check = now;
        }
        due
    }

    /// Removes the oldest updates beyond the retention limits from both
    /// tables, taking their lengths off `bytes`; returns how many went. An
    /// id's entry goes only with the occurrence it points at.
    ///
    /// An undecodable record goes only when the count or the byte limit
    /// requires a removal: its length is known without decoding it, its age
    /// is not, so the age limit passes over it (the records after it still
    /// expire) and it stays until count or bytes push it out. It is then
    /// counted in `corrupt_records`, and its id's entry goes too if the id
    /// can still be read; otherwise the entry is left pointing at nothing,
    /// which `position_of` treats as forgotten. A record of a newer format
    /// is never removed: the write fails with [`LogError::NewerFormat`].
    ///
    /// The age limit applies only with `check_age` (see
    /// [`Writer::age_check_due`]); a limit on count or bytes that is passed
    /// prunes a step below it ([`PRUNE_STEP`]).
    fn prune(
        &self,
        positions: &mut redb::Table<'_, u64, &[u8]>,
        ids: &mut redb::Table<'_, &str, u64>,
        now: u64,
        bytes: &mut u64,
        check_age: bool,
    ) -> Result<Pruned, LogError> {
        let mut removed = Pruned::default();
        if let Some(max_age) = self.retention.max_age.filter(|_| check_age) {
            for (position, size, id) in
                expired_records(positions, &self.shared, now, max_age, usize::MAX)?
            {
                positions.remove(position).map_err(LogError::storage)?;
                forget_id(ids, &id, position)?;
                self.shared.take_bytes(bytes, size);
                removed.note(position);
            }
        }
        let max_updates = self.retention.max_updates.unwrap_or(u64::MAX);
        let max_bytes = self.retention.max_bytes.unwrap_or(u64::MAX);
        let mut len = positions.len().map_err(LogError::storage)?;
        if len <= max_updates && (*bytes <= max_bytes || len <= 1) {
            return Ok(removed);
        }
        // Over a limit: down to a step below it, so that the next commits
        // have room and the oldest pages are rewritten once per step rather
        // than once per commit.
        let (max_updates, max_bytes) = (
            max_updates - max_updates / PRUNE_STEP,
            max_bytes - max_bytes / PRUNE_STEP,
        );
        // The newest stays whatever its size.
        while len > max_updates || (*bytes > max_bytes && len > 1) {
            let (position, size, id) = {
                let Some((position, record)) = positions.first().map_err(LogError::storage)? else {
                    break;
                };
                let (position, record) = (position.value(), record.value());
                let id = match record::decode_head(record) {
                    Ok(head) => Some(head.id),
                    Err(reason) => {
                        if let Some(version) = record::newer_version(record) {
                            return Err(LogError::NewerFormat {
                                path: self.path.clone(),
                                version,
                            });
                        }
                        self.shared.first_corrupt(position);
                        tracing::warn!(
                            position,
                            reason,
                            "removing an unreadable history record: the retention limit on count or bytes pushes it out"
                        );
                        record::id_hint(record)
                    }
                };
                (position, record.len() as u64, id)
            };
            positions.remove(position).map_err(LogError::storage)?;
            if let Some(id) = id {
                forget_id(ids, &id, position)?;
            }
            self.shared.take_bytes(bytes, size);
            len -= 1;
            removed.note(position);
        }
        Ok(removed)
    }
}
