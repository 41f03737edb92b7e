//! History: what a subscriber that reconnects gets back.
//!
//! The hub stores every update published over HTTP or with
//! [`Hub::publish`](crate::Hub::publish) in its history, in memory or in a
//! durable file ([`HubBuilder::history_file`](crate::HubBuilder::history_file)).
//! A subscriber that reconnects with `Last-Event-ID` gets what it missed,
//! once and in order, as long as the history still holds the update it names;
//! [`Retention`] says how much is kept. A file history makes every update
//! durable (`fsync`ed) before the publisher's request is answered, survives
//! crashes, and recovers by itself from a full disk.
//!
//! What a user of the hub needs from here:
//!
//! - [`Update`]: an update to publish, made with [`Update::builder`];
//! - [`Retention`]: how much history to keep, for
//!   [`HubBuilder::retention`](crate::HubBuilder::retention);
//! - [`LogError`]: why the history failed, inside
//!   [`HubError`](crate::HubError) and [`PublishError`](crate::PublishError).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tidings_hub::Hub;
//! use tidings_hub::log::{Retention, Update};
//!
//! let hub = Hub::builder()
//!     .retention(Retention::default().with_max_age(Some(Duration::from_secs(3600))))
//!     .build()
//!     .await?;
//! let update = Update::builder("https://example.com/books/1")
//!     .data(r#"{"title":"Dune"}"#)
//!     .event_type("book")
//!     .build();
//! hub.publish(update).await?;
//! # Ok(()) }
//! ```
//!
//! The log itself (`Log` and the types of its methods) is public only for
//! the hub's own tests and benchmarks, and hidden from the documentation: it
//! is not part of the API and may change in any release.

mod courier;
mod file;
mod memory;
pub(crate) mod record;
pub(crate) mod redis;
mod tail;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use redis::ClusterStats;
/// A Redis URL as it may be printed: its password replaced by `REDACTED`.
///
/// ```
/// let shown = tidings_hub::log::redact_redis_url("redis://app:s3cret@db:6379/1");
/// assert_eq!(shown, "redis://app:REDACTED@db:6379/1");
/// ```
pub use redis::redact_url as redact_redis_url;

/// One update as a publisher sent it, as the history stores it.
///
/// Made with [`Update::builder`], which names each part:
///
/// ```
/// use std::time::Duration;
/// use tidings_hub::log::Update;
///
/// let update = Update::builder("https://example.com/books/1")
///     .topic("https://example.com/authors/herbert") // an alternate topic
///     .data(r#"{"title":"Dune"}"#)
///     .id("urn:example:dune")
///     .private(true)
///     .event_type("book")
///     .retry(Duration::from_secs(5))
///     .build();
/// assert_eq!(update.topics.len(), 2);
/// assert_eq!(update.retry, Some(5_000));
/// ```
///
/// See the publish request of the
/// [Mercure protocol](https://datatracker.ietf.org/doc/html/draft-dunglas-mercure#section-5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Update {
    /// The update's id.
    ///
    /// The hub uses the publisher's id when one was given and
    /// [`Update::generate_id`] otherwise: an empty id is replaced by a
    /// generated one. An id may be reused: a subscriber that names it then
    /// resumes after its latest occurrence.
    pub id: String,
    /// The topics the update is about: the first is the canonical topic, the
    /// others are alternates. A subscriber of any of them receives the update.
    pub topics: Vec<String>,
    /// The payload, sent as the event's `data`.
    pub data: String,
    /// Whether only subscribers authorised for one of the topics receive it.
    pub private: bool,
    /// The SSE `event` field (Mercure's `type`), if any.
    pub event_type: Option<String>,
    /// The SSE `retry` field in milliseconds, if any.
    pub retry: Option<u64>,
}

impl Update {
    /// A builder of a public update of `topic` (its canonical topic), with no
    /// id (the hub generates one), empty data and no `type` or `retry`.
    ///
    /// ```
    /// let update = tidings_hub::log::Update::builder("/books/1").build();
    /// assert_eq!(update.topics, ["/books/1"]);
    /// assert_eq!((update.id.as_str(), update.data.as_str()), ("", ""));
    /// assert!(!update.private);
    /// ```
    pub fn builder(topic: impl Into<String>) -> UpdateBuilder {
        UpdateBuilder {
            update: Update {
                id: String::new(),
                topics: vec![topic.into()],
                data: String::new(),
                private: false,
                event_type: None,
                retry: None,
            },
        }
    }

    /// A public update of one topic with the given id and data and no
    /// `type` or `retry`. [`Update::builder`] says the same with names, which
    /// three strings in a row do not.
    ///
    /// ```
    /// let update = tidings_hub::log::Update::new("urn:example:1", "/books/1", "{}");
    /// assert_eq!(update.topics, ["/books/1"]);
    /// assert!(!update.private);
    /// ```
    pub fn new(id: impl Into<String>, topic: impl Into<String>, data: impl Into<String>) -> Update {
        Update {
            id: id.into(),
            topics: vec![topic.into()],
            data: data.into(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    /// A fresh id for an update whose publisher gave none: a `urn:uuid:` IRI,
    /// as Mercure asks, of a time-ordered (version 7) UUID: 48 bits of
    /// milliseconds, then a counter and random bits, so that ids generated
    /// later in this process sort after earlier ones (as text too) and still
    /// cannot be guessed. The history's index of ids stays cheap that way:
    /// each new id lands next to the previous one instead of on a random
    /// page.
    ///
    /// ```
    /// let first = tidings_hub::log::Update::generate_id();
    /// let second = tidings_hub::log::Update::generate_id();
    /// assert!(first.starts_with("urn:uuid:"));
    /// assert!(first < second);
    /// ```
    pub fn generate_id() -> String {
        uuid::Uuid::now_v7().urn().to_string()
    }
}

/// Builds an [`Update`]; made by [`Update::builder`].
///
/// Nothing is checked here: [`Hub::publish`](crate::Hub::publish) validates
/// the update as it would an HTTP publish (an id or type that would break the
/// event stream, too many topics) and refuses it with a
/// [`PublishError`](crate::PublishError).
#[derive(Debug, Clone)]
#[must_use]
pub struct UpdateBuilder {
    update: Update,
}

impl UpdateBuilder {
    /// Adds an alternate topic: a subscriber of it receives the update too,
    /// and a private update goes to subscribers authorised for any topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.update.topics.push(topic.into());
        self
    }

    /// The payload, sent as the event's `data` (default: empty).
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.update.data = data.into();
        self
    }

    /// The update's id, sent as the event's `id` (default: none, and the hub
    /// generates a `urn:uuid:` one). Must not start with `#`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.update.id = id.into();
        self
    }

    /// Whether only subscribers authorised for one of the topics receive the
    /// update (default: no, every subscriber of a topic does).
    pub fn private(mut self, private: bool) -> Self {
        self.update.private = private;
        self
    }

    /// The SSE `event` field (Mercure's `type`), which an `EventSource` needs
    /// a listener of that name for (default: none, a plain `message`).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.update.event_type = Some(event_type.into());
        self
    }

    /// The SSE `retry` field: how long a client waits before it reconnects
    /// (default: none; sent in whole milliseconds).
    pub fn retry(mut self, after: Duration) -> Self {
        self.update.retry = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The update.
    pub fn build(self) -> Update {
        self.update
    }
}

/// An update in the log, with the position the log gave it.
#[doc(hidden)] // The log's internals, see [`Log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Where the update is in the log: strictly greater than the position of
    /// every update appended before it, also across restarts. Starts at 1.
    pub position: u64,
    /// The update, shared so that handing it around does not copy it.
    pub update: Arc<Update>,
}

/// Where [`Log::read_after`] starts reading.
#[doc(hidden)] // The log's internals, see [`Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// From the oldest update still in the history (Mercure's `earliest`).
    Earliest,
    /// From the first update after this position.
    Position(u64),
}

impl Cursor {
    /// The position after which reading starts: every update with a greater
    /// position is read.
    fn after(self) -> u64 {
        match self {
            Cursor::Earliest => 0,
            Cursor::Position(position) => position,
        }
    }
}

/// How much history the log keeps. Whichever limit is reached first applies;
/// `None` means no limit of that kind.
///
/// The default keeps the last 100,000 updates, at most 64 MiB of them, for
/// at most 24 hours. A day lets a client that was away overnight or over a
/// long flight resume without losing anything, which is what history is
/// for; longer than that, an application should reload its state anyway.
/// The count bounds the size of a replay when a client asks for `earliest`;
/// the bytes bound the disk whatever the size of the updates, and 64 MiB fits
/// a small disk (at a typical 1 KiB per update, they bind before the count).
/// The file itself takes somewhat more than the bytes counted: the index of
/// ids, and the free pages the storage engine keeps. The file history prunes
/// in steps: a commit that goes over the count or the byte limit removes
/// down to 1/256 below it, so a full history holds between 99.6% and 100%
/// of it; it applies the age limit at most once a second.
///
/// ```
/// use std::time::Duration;
/// use tidings_hub::log::Retention;
///
/// let default = Retention::default();
/// assert_eq!(default.max_updates, Some(100_000));
/// assert_eq!(default.max_bytes, Some(64 * 1024 * 1024));
/// assert_eq!(default.max_age, Some(Duration::from_secs(24 * 60 * 60)));
/// let small = Retention::default().with_max_updates(Some(1_000));
/// assert_eq!(small.max_updates, Some(1_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep at most this many updates; the oldest go first.
    pub max_updates: Option<u64>,
    /// Keep at most this many bytes of stored updates (each counted as its
    /// record in the history file: its id, topics, type and data plus a few
    /// bytes); the oldest go first. An update alone larger than this is
    /// still kept (the publish body limit bounds it) and evicts all the
    /// others.
    pub max_bytes: Option<u64>,
    /// Forget updates older than this (measured from when they were appended).
    pub max_age: Option<Duration>,
}

/// The default of [`Retention::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_updates: Some(100_000),
            max_bytes: Some(DEFAULT_MAX_BYTES),
            max_age: Some(Duration::from_secs(24 * 60 * 60)),
        }
    }
}

impl Retention {
    /// Keep everything: no limit by count, bytes or age. Use it only with a
    /// log that something else bounds.
    pub const UNLIMITED: Retention = Retention {
        max_updates: None,
        max_bytes: None,
        max_age: None,
    };

    /// This retention with [`Retention::max_updates`] set; `None` for no
    /// limit by count.
    #[must_use]
    pub const fn with_max_updates(mut self, updates: Option<u64>) -> Retention {
        self.max_updates = updates;
        self
    }

    /// This retention with [`Retention::max_bytes`] set; `None` for no limit
    /// by bytes.
    #[must_use]
    pub const fn with_max_bytes(mut self, bytes: Option<u64>) -> Retention {
        self.max_bytes = bytes;
        self
    }

    /// This retention with [`Retention::max_age`] set; `None` for no limit by
    /// age.
    #[must_use]
    pub const fn with_max_age(mut self, age: Option<Duration>) -> Retention {
        self.max_age = age;
        self
    }
}

/// Counters of what a log has done since it was opened.
#[doc(hidden)] // The log's internals, see [`Log`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// Updates appended (failures not counted).
    pub appended: u64,
    /// Durable write transactions, each one `fsync`: fewer than `appended`
    /// when appends were group-committed. Always 0 for the in-memory log.
    pub commits: u64,
    /// Writes to the history file that failed: commits, expiries and the
    /// attempts to reopen the file after a failure. Always 0 for the
    /// in-memory log.
    pub write_errors: u64,
    /// Distinct records found undecodable: skipped by reads, or removed
    /// when the count or byte limit pushed them out. Always 0 for the
    /// in-memory log.
    pub corrupt_records: u64,
}

/// Whether the log can take appends; see [`Log::health`].
#[doc(hidden)] // The log's internals, see [`Log`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LogHealth {
    /// Appends are accepted.
    Writable,
    /// The last write failed, and appends fail until the writer has reopened
    /// the file (it keeps trying by itself); or, with
    /// [`LogError::WriterStopped`], the writer thread is gone for good.
    Failing {
        /// Why the last write, or the last attempt to reopen, failed.
        error: LogError,
        /// When.
        at: SystemTime,
    },
    /// The log was closed.
    Closed,
}

impl LogHealth {
    /// Whether appends are accepted.
    pub fn is_writable(&self) -> bool {
        matches!(self, LogHealth::Writable)
    }
}

/// Why a log operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The history file could not be opened or created.
    #[error("cannot open the history file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: StorageError,
    },
    /// The history file is damaged in a way the storage engine cannot
    /// repair (cut short, overwritten, not a history file).
    #[error(
        "history file {} is damaged ({reason}): move it away to start with an empty history, or restore a backup",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the storage engine found.
        reason: String,
    },
    /// Reading or writing the history file failed.
    #[error("history storage failed: {0}")]
    Storage(#[source] StorageError),
    /// A record in the history file cannot be decoded: the file was damaged
    /// or written by an incompatible version. Reads skip such records; this
    /// is for a caller that asks for one by itself.
    #[error("the history record at position {position} is unreadable: {reason}")]
    Corrupt {
        /// The record's position.
        position: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The history file holds records of a format newer than this build
    /// reads: it was written by a newer tidings (and this one was rolled
    /// back). Refused rather than read, so that nothing in it is misread or
    /// deleted.
    #[error(
        "history file {} was written by a newer tidings (record format {version}); this version reads formats 1 and 2",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The record format version found.
        version: u8,
    },
    /// The file log's writer thread stopped on a bug (a panic): no append
    /// can succeed until the log is opened again.
    #[error("the history writer thread stopped: {reason}")]
    WriterStopped {
        /// The panic's message.
        reason: String,
    },
    /// The log was closed; it accepts no more appends.
    #[error("the history log is closed")]
    Closed,
    /// The shared log of a cluster (Redis) cannot be reached or did not answer in
    /// time; the node keeps trying to reconnect. An update that got this error may
    /// still be in the log (Redis may have had it when the answer was lost), but it
    /// was not acknowledged.
    #[error("the cluster's Redis log is unavailable: {reason}")]
    Unavailable {
        /// What failed, with the Redis address (never its password).
        reason: String,
    },
}

/// A failure of the storage engine under the file log (the engine's own
/// error, kept as the [`source`](std::error::Error::source)).
#[derive(Clone)]
pub struct StorageError(Arc<redb::Error>);

impl StorageError {
    fn new(error: impl Into<redb::Error>) -> StorageError {
        StorageError(Arc::new(error.into()))
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl LogError {
    fn storage(error: impl Into<redb::Error>) -> LogError {
        LogError::Storage(StorageError::new(error))
    }
}

/// The history of updates: an append-only, position-ordered log with
/// retention, in memory or in a durable file.
///
/// Every update a publisher sends is appended to the [`Log`], which gives it a
/// *position*: a number that only ever grows, so "everything after this
/// event" is a range query. A reconnecting subscriber names the last event it
/// saw by its id (`Last-Event-ID`); [`Log::position_of`] turns that id into a
/// position and [`Log::read_after`] replays what followed.
///
/// Two backends sit behind the one [`Log`] type:
///
/// - [`Log::memory`]: a bounded ring in memory, for tests and `--no-history`.
/// - [`Log::open`]: an embedded [redb](https://docs.rs/redb) file, the default.
///   Appends are *group-committed*: one writer thread takes every append that
///   is waiting, writes them in one transaction and makes it durable with one
///   `fsync`, then answers each caller. Under load many appends share one
///   `fsync`; alone, an append costs one.
///
/// Both keep only the history that [`Retention`] allows (a number of updates,
/// a number of bytes and an age); older updates, and their ids, are
/// forgotten.
///
/// Ids need not be unique: as in Mercure, a publisher may reuse one. The id
/// then stands for its latest occurrence, which is where a subscriber that
/// names it resumes.
///
/// # Durability of the file log
///
/// [`Log::append`] returns only after the transaction holding the update was
/// committed with redb's `Durability::Immediate`, which `fsync`s the file:
/// an acknowledged update survives a crash of the process or of the machine
/// (as far as the disk honours `fsync`). After a crash, the next
/// [`Log::open`] repairs the file (about a second for 100,000 updates of
/// 1 KiB); after a clean [`Log::close`] it opens at once.
///
/// # Storage faults and damage
///
/// A write that fails (a full disk, an I/O error) answers the appends of its
/// batch with [`LogError::Storage`]: never "appended" for an update that was
/// not committed. The storage engine refuses every later operation on a file
/// whose I/O failed, so the writer then reopens the file, again and again
/// with a growing pause (up to 5 s), until it succeeds — once the disk has
/// room again, appends succeed without a restart. Meanwhile appends fail at
/// once, and [`Log::health`] says why.
///
/// A file that cannot be opened or repaired gives [`LogError::Damaged`],
/// which says what to do, rather than a panic. A record that cannot be
/// decoded (its checksum does not match, or it does not parse) is skipped by
/// reads, logged once and counted in [`LogStats::corrupt_records`]: a replay
/// goes on past it. Retention removes such a record only when the count or
/// byte limit requires it (its size is known without decoding it); its age
/// cannot be known, so the age limit leaves it alone. A file holding records
/// of a newer format (written by a newer version, before a rollback) is
/// refused with [`LogError::NewerFormat`] rather than read or pruned.
///
/// Should the writer thread panic (a bug), [`Log::health`] reports
/// [`LogError::WriterStopped`] with the panic's message, and appends fail
/// with it.
///
/// The file holds three tables: position → update, id → position, and meta
/// (the last position ever given, so that positions keep growing even after
/// expiry emptied the log, and the bytes the records take, so that the bound
/// on bytes needs no scan). Updates are stored in a compact binary layout of
/// our own, versioned by its first byte: varint lengths, no escaping, the
/// append time first so that expiry reads no payload, and (from format
/// version 2) a CRC-32 last; version 1 records, written before, have none.
///
/// ```
/// use tidings_hub::log::{Cursor, Log, Retention, Update};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let log = Log::memory(Retention::default());
/// let first = log.append(Update::new("urn:example:1", "/books/1", "{\"title\":\"Dune\"}")).await?;
/// let second = log.append(Update::new("urn:example:2", "/books/2", "{}")).await?;
/// assert!(first.position < second.position);
///
/// // A subscriber that saw `urn:example:1` resumes after it.
/// let seen = log.position_of("urn:example:1").await?.expect("still in history");
/// let missed = log.read_after(Cursor::Position(seen), 100).await?;
/// assert_eq!(missed.len(), 1);
/// assert_eq!(missed[0].update.id, "urn:example:2");
/// # Ok::<(), tidings_hub::log::LogError>(())
/// # }).unwrap();
/// ```
///
/// Cheap to clone: clones share one log. Every method may be called
/// concurrently from many tasks; reads never wait for writes. The file log's
/// reads run on tokio's blocking pool, so its methods need a tokio runtime.
// Hidden, not private: the integration tests (across processes) and the
// throughput examples drive the log directly.
#[doc(hidden)]
#[derive(Clone)]
pub struct Log {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<memory::MemoryLog>),
    File(Arc<file::FileLog>),
    Redis(Arc<redis::RedisLog>),
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Log");
        match &self.backend {
            Backend::Memory(_) => debug.field("backend", &"memory"),
            Backend::File(log) => debug.field("backend", &"file").field("path", &log.path()),
            Backend::Redis(_) => debug.field("backend", &"redis"),
        };
        debug
            .field("last_position", &self.last_position())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// A log kept in memory only, bounded by `retention`; positions start at 1.
    ///
    /// Nothing survives the process. Without a `max_updates` limit the ring
    /// grows until `max_age` (if any) trims it.
    ///
    /// ```
    /// use tidings_hub::log::{Cursor, Log, Retention, Update};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let log = Log::memory(Retention::UNLIMITED.with_max_updates(Some(2)));
    /// for n in 1..=3 {
    ///     log.append(Update::new(format!("id-{n}"), "/t", "x")).await?;
    /// }
    /// // Only the last two are kept; the first id is forgotten.
    /// assert_eq!(log.len().await?, 2);
    /// assert_eq!(log.position_of("id-1").await?, None);
    /// let all = log.read_after(Cursor::Earliest, 10).await?;
    /// assert_eq!(all.iter().map(|s| s.position).collect::<Vec<_>>(), [2, 3]);
    /// # Ok::<(), tidings_hub::log::LogError>(())
    /// # }).unwrap();
    /// ```
    pub fn memory(retention: Retention) -> Log {
        Log {
            backend: Backend::Memory(Arc::new(memory::MemoryLog::new(retention))),
        }
    }

    /// Opens the history file at `path`, creating it if it does not exist,
    /// and starts its writer thread. Positions continue after the last one
    /// the file holds.
    ///
    /// The file is locked while open: a second `open` of the same file, from
    /// this process or another, fails with [`LogError::Open`].
    ///
    /// ```
    /// use tidings_hub::log::{Log, Retention, Update};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("history.db");
    /// let log = Log::open(&path, Retention::default()).await?;
    /// let stored = log.append(Update::new("urn:example:1", "/t", "x")).await?;
    /// log.close().await;
    ///
    /// let log = Log::open(&path, Retention::default()).await?;
    /// assert_eq!(log.position_of("urn:example:1").await?, Some(stored.position));
    /// assert_eq!(log.last_position(), stored.position);
    /// # Ok::<(), tidings_hub::log::LogError>(())
    /// # }).unwrap();
    /// ```
    pub async fn open(path: impl AsRef<Path>, retention: Retention) -> Result<Log, LogError> {
        let log = file::FileLog::open(path.as_ref().to_path_buf(), retention, file::system_clock())
            .await?;
        Ok(Log {
            backend: Backend::File(Arc::new(log)),
        })
    }

    /// Opens the shared log of a cluster: the Redis Stream `stream` at `url`
    /// (`redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS), and starts this
    /// node's writer and reader tasks (see `log/redis.rs` for the keys, the positions
    /// and the faults). Positions are those of the stream, the same on every node;
    /// they grow but are not contiguous.
    ///
    /// # Errors
    ///
    /// [`LogError::Unavailable`] if the URL is malformed or Redis cannot be reached.
    pub async fn redis(url: &str, stream: &str, retention: Retention) -> Result<Log, LogError> {
        let target = redis::Target::new(url, stream)?;
        let log = redis::RedisLog::open(target, retention).await?;
        Ok(Log {
            backend: Backend::Redis(Arc::new(log)),
        })
    }

    /// Whether the log is shared with other nodes (Redis): the updates to hand to the
    /// fan-out then come from [`Log::take_feed`], in the stream's order, and not from
    /// this node's appends.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// For a shared log, the updates its reader reads from the stream, in order, in
    /// batches: every node's appends, this one's included. Given once (`None` after,
    /// and for a log of one node).
    pub fn take_feed(&self) -> Option<tokio::sync::mpsc::Receiver<Vec<Stored>>> {
        match &self.backend {
            Backend::Redis(log) => log.take_feed(),
            _ => None,
        }
    }

    /// What a shared log reports beyond [`Log::stats`]; `None` for a log of one node.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        match &self.backend {
            Backend::Redis(log) => Some(log.cluster_stats()),
            _ => None,
        }
    }

    /// Appends `update` and returns it with its position, once it is durable
    /// (for the file log: written and `fsync`ed).
    ///
    /// An empty `update.id` is replaced by [`Update::generate_id`].
    ///
    /// # Errors
    ///
    /// [`LogError::Closed`] after [`Log::close`]; [`LogError::Storage`] if
    /// the file could not be written, or cannot be until the writer has
    /// reopened it after a failure (see [`Log::health`]). An update that got
    /// an error is not in the log, save when the storage failed after making
    /// it durable (a failed `fsync` of the file's header, say): it may then
    /// be found in the history later. An update is never answered `Ok`
    /// without being durable.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future never leaves a partial update: the update is
    /// either appended whole or not at all. Once the future has been polled,
    /// the file log's writer has the update and appends it even if the future
    /// is then dropped — so a publish whose client went away may still be in
    /// the history. A caller that must act on every appended update (such as
    /// the fan-out) should run `append` and that action in a task of its own
    /// rather than in the request's future.
    pub async fn append(&self, update: Update) -> Result<Stored, LogError> {
        let update = with_id(update);
        match &self.backend {
            Backend::Memory(log) => log.append(update),
            Backend::File(log) => log.append(update).await,
            Backend::Redis(log) => log.append(update).await,
        }
    }

    /// Up to `max` updates after `after`, in ascending position.
    ///
    /// Empty when nothing follows (including a cursor past the end). A cursor
    /// before the oldest retained update reads from the oldest. Records that
    /// cannot be decoded are skipped (see [`LogStats::corrupt_records`]).
    pub async fn read_after(&self, after: Cursor, max: usize) -> Result<Vec<Stored>, LogError> {
        match &self.backend {
            Backend::Memory(log) => Ok(log.read_after(after.after(), max)),
            Backend::File(log) => log.read_after(after.after(), max).await,
            Backend::Redis(log) => log.read_after(after.after(), max).await,
        }
    }

    /// The position of the latest update with this id, or `None` when no
    /// update in the retained history has it (unknown, or expired).
    pub async fn position_of(&self, id: &str) -> Result<Option<u64>, LogError> {
        match &self.backend {
            Backend::Memory(log) => Ok(log.position_of(id)),
            Backend::File(log) => log.position_of(id).await,
            Backend::Redis(log) => log.position_of(id).await,
        }
    }

    /// The id of the retained update just before `position` (the one with the
    /// greatest position less than it, skipping undecodable records), or
    /// `None` when there is none.
    ///
    /// This is what a hub answers in the `Last-Event-ID` response header: the
    /// id of the event before the first one it replays.
    ///
    /// ```
    /// use tidings_hub::log::{Log, Retention, Update};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let log = Log::memory(Retention::default());
    /// let a = log.append(Update::new("a", "/t", "x")).await?;
    /// let b = log.append(Update::new("b", "/t", "y")).await?;
    /// assert_eq!(log.id_before(b.position).await?.as_deref(), Some("a"));
    /// assert_eq!(log.id_before(a.position).await?, None);
    /// # Ok::<(), tidings_hub::log::LogError>(())
    /// # }).unwrap();
    /// ```
    pub async fn id_before(&self, position: u64) -> Result<Option<String>, LogError> {
        match &self.backend {
            Backend::Memory(log) => Ok(log.id_before(position)),
            Backend::File(log) => log.id_before(position).await,
            Backend::Redis(log) => log.id_before(position).await,
        }
    }

    /// The id of the newest retained update, or `None` when the history is
    /// empty (the subscriptions API's `lastEventID`, where Mercure says
    /// `earliest` for none).
    pub async fn last_id(&self) -> Result<Option<String>, LogError> {
        self.id_before(u64::MAX).await
    }

    /// The position of the last update appended (durably, for the file log),
    /// or 0 if there never was one. Expiry does not lower it.
    pub fn last_position(&self) -> u64 {
        match &self.backend {
            Backend::Memory(log) => log.last_position(),
            Backend::File(log) => log.last_position(),
            Backend::Redis(log) => log.last_position(),
        }
    }

    /// How many updates the retained history holds.
    pub async fn len(&self) -> Result<u64, LogError> {
        match &self.backend {
            Backend::Memory(log) => Ok(log.len()),
            Backend::File(log) => log.len().await,
            Backend::Redis(log) => log.len().await,
        }
    }

    /// How many bytes the retained updates take, as [`Retention::max_bytes`]
    /// counts them. Kept as a running total: costs no read.
    pub fn bytes(&self) -> u64 {
        match &self.backend {
            Backend::Memory(log) => log.bytes(),
            Backend::File(log) => log.bytes(),
            Backend::Redis(log) => log.bytes(),
        }
    }

    /// Whether appends are accepted now, and if not, why: the last storage
    /// error and its time. The in-memory log is always writable until closed.
    pub fn health(&self) -> LogHealth {
        match &self.backend {
            Backend::Memory(log) => log.health(),
            Backend::File(log) => log.health(),
            Backend::Redis(log) => log.health(),
        }
    }

    /// Whether the retained history is empty.
    pub async fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len().await? == 0)
    }

    /// A handle that wakes a task when updates are appended, so that one
    /// task can follow the log (for instance to feed the fan-out from the
    /// log rather than from each publish request).
    ///
    /// ```
    /// use tidings_hub::log::{Cursor, Log, Retention, Update};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let log = Log::memory(Retention::default());
    /// let mut watch = log.watch();
    /// let follower = tokio::spawn({
    ///     let log = log.clone();
    ///     async move {
    ///         let mut seen = 0;
    ///         let mut ids = Vec::new();
    ///         while watch.wait_past(seen).await.is_some() {
    ///             for stored in log.read_after(Cursor::Position(seen), 100).await? {
    ///                 seen = stored.position;
    ///                 ids.push(stored.update.id.clone());
    ///             }
    ///         }
    ///         Ok::<_, tidings_hub::log::LogError>(ids)
    ///     }
    /// });
    /// log.append(Update::new("a", "/t", "x")).await?;
    /// log.append(Update::new("b", "/t", "y")).await?;
    /// log.clone().close().await; // ends the follower once it has read everything
    /// # let ids = follower.await.unwrap()?;
    /// # assert_eq!(ids, ["a", "b"]);
    /// # Ok::<(), tidings_hub::log::LogError>(())
    /// # }).unwrap();
    /// ```
    pub fn watch(&self) -> LogWatch {
        let positions = match &self.backend {
            Backend::Memory(log) => log.watch(),
            Backend::File(log) => log.watch(),
            Backend::Redis(log) => log.watch(),
        };
        LogWatch { positions }
    }

    /// What the log has done since it was opened.
    pub fn stats(&self) -> LogStats {
        match &self.backend {
            Backend::Memory(log) => log.stats(),
            Backend::File(log) => log.stats(),
            Backend::Redis(log) => log.stats(),
        }
    }

    /// Stops accepting appends, waits until every append already accepted is
    /// durable, and stops the file log's writer. Later appends, from any
    /// clone, fail with [`LogError::Closed`]; reads keep working while a clone
    /// is alive. The file is released once the last clone is dropped.
    ///
    /// Dropping the last clone without `close` does the same, blocking the
    /// dropping thread for at most the batch being written.
    pub async fn close(self) {
        match &self.backend {
            Backend::Memory(log) => log.close(),
            Backend::File(log) => log.close().await,
            Backend::Redis(log) => log.close().await,
        }
    }
}

/// Wakes a task when the log grows; made by [`Log::watch`].
#[doc(hidden)] // The log's internals, see [`Log`].
#[derive(Debug, Clone)]
pub struct LogWatch {
    positions: tokio::sync::watch::Receiver<u64>,
}

impl LogWatch {
    /// Waits until the log's last position is greater than `position`, and
    /// returns that last position (the updates themselves come from
    /// [`Log::read_after`]). Returns at once if it already is; `None` once
    /// the log is closed and nothing after `position` was appended.
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait_past(&mut self, position: u64) -> Option<u64> {
        self.positions
            .wait_for(|&last| last > position)
            .await
            .ok()
            .map(|last| *last)
    }
}

fn with_id(mut update: Update) -> Update {
    if update.id.is_empty() {
        update.id = Update::generate_id();
    }
    update
}

#[cfg(test)]
mod tests;
