//! The Redis Streams log: the history of a cluster of hubs.
//!
//! Every node appends to one Redis Stream and follows it with one reader, so that all
//! nodes deliver the updates in the stream's single order and any node can replay.
//!
//! # Keys
//!
//! For a stream name `NAME` (`--redis-stream`, default `tidings`):
//!
//! - `NAME`: the stream; one entry per update, fields `i` (the update's id) and `u`
//!   (the update in the history file's record layout, see `record.rs`);
//! - `NAME:ids`: a hash, update id → entry id of its latest occurrence, so that a
//!   `Last-Event-ID` named on one node resolves on every other;
//! - `NAME:bytes`: the sum of the `u` fields' sizes, what [`Retention::max_bytes`]
//!   bounds.
//!
//! The three change only inside one Lua script (appends and retention), so they always
//! agree. In a Redis Cluster they must share a slot: give the name a hash tag
//! (`{tidings}`).
//!
//! # Positions
//!
//! An entry id is `MS-SEQ`: the milliseconds of Redis's clock and a sequence within
//! that millisecond; Redis keeps the ids of a stream strictly growing even when its
//! clock steps back. The log's position of an entry is `MS << 20 | SEQ`: the same
//! number on every node (it is computed from the id alone), ordered as the ids are,
//! and reversible, so a position names an entry for `XRANGE`. It fits in a u64 until
//! the year 10889. `SEQ` must stay below 2^20, a million appends in one millisecond,
//! which one Redis cannot do; an entry past that is refused loudly rather than
//! misordered.
//!
//! # Writes
//!
//! Appends are queued to one writer task per node, which sends what is waiting (up to
//! [`WRITE_BATCH`] updates or [`WRITE_BATCH_BYTES`]) in one script call: one round trip
//! for a batch, the way the file log shares one `fsync`. An append is answered once
//! the script has returned, that is once Redis has the update (how durable that is
//! depends on Redis's persistence settings: see `docs/OPERATIONS.md`). When Redis does
//! not answer within [`RESPONSE_TIMEOUT`], or cannot be reached, the batch fails with
//! [`LogError::Unavailable`] (a 503 for the publisher), and reconnecting is retried
//! with a growing pause, capped at [`MAX_BACKOFF`]; appends in between fail at once.
//!
//! # Reads
//!
//! The reader task holds its own connection (an `XREAD BLOCK` would hold up every other
//! command of a shared one) and hands what it reads, in order, to the hub through
//! [`RedisLog::take_feed`]. It remembers the last entry id it read, and after a
//! reconnect resumes from it: nothing is skipped nor read twice. If the stream's last
//! id is then lower than that (Redis restarted without its data), the stream went
//! backwards: the reader logs it, counts it, and moves the stream's id forward past
//! what the nodes have delivered (`XSETID`), so that new updates are never ordered
//! before delivered ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{LogError, LogHealth, LogStats, Retention, Stored, Update, record};

/// The most updates one script call appends.
pub(super) const WRITE_BATCH: usize = 256;
/// The most bytes of records one script call appends (a batch has at least one update).
pub(super) const WRITE_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The most script calls one node has sent and not yet had answered.
pub(super) const PIPELINE_DEPTH: usize = 4;
/// The most appends waiting for the writer; past that, appenders wait.
const WRITE_QUEUE: usize = 4096;
/// The most entries the reader asks for per `XREAD`.
pub(super) const READ_BATCH: usize = 512;
/// How long one `XREAD` blocks for new entries.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// How many batches read may wait for the hub's fan-out before the reader waits (and
/// falls behind the stream, which the lag metric shows).
const FEED_QUEUE: usize = 64;
/// How long Redis may take to answer one command before it counts as unreachable.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to reconnect.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the writer applies retention when nothing is appended (for the age limit).
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// The most entries one script call removes, so that a script never runs long; the
/// rest goes on the next call.
const TRIM_LIMIT: usize = 10_000;

/// Bits of the entry id's sequence in a position.
const SEQ_BITS: u32 = 20;

/// Appends a batch and applies retention. KEYS: stream, id index, byte counter.
/// ARGV: max updates, max bytes, max age in ms, trim limit (0 for none each), then an
/// id and a record per update. Returns the byte total, the length, then the entry ids.
const APPEND_SCRIPT: &str = r"
local stream, index, counter = KEYS[1], KEYS[2], KEYS[3]
local max_updates, max_bytes, max_age, limit =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = {}
local added = 0
for i = 5, #ARGV, 2 do
  local entry = redis.call('XADD', stream, '*', 'i', ARGV[i], 'u', ARGV[i + 1])
  redis.call('HSET', index, ARGV[i], entry)
  added = added + string.len(ARGV[i + 1])
  ids[#ids + 1] = entry
end
local bytes = tonumber(redis.call('GET', counter) or '0') + added
local len = redis.call('XLEN', stream)
local cutoff = -1
if max_age > 0 then
  local now = redis.call('TIME')
  cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
end
local removed, last = 0, nil
local start = '-'
while len > 0 and removed < limit do
  local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 100)
  if #batch == 0 then break end
  local more = true
  for _, entry in ipairs(batch) do
    local id, fields = entry[1], entry[2]
    local ms = tonumber(string.match(id, '^(%d+)-'))
    local size = 0
    local key = nil
    for f = 1, #fields, 2 do
      if fields[f] == 'u' then size = string.len(fields[f + 1]) end
      if fields[f] == 'i' then key = fields[f + 1] end
    end
    local over = (max_updates > 0 and len > max_updates)
      or (max_bytes > 0 and bytes > max_bytes and len > 1)
      or (ms < cutoff)
    if not over or removed >= limit then more = false break end
    if key and redis.call('HGET', index, key) == id then redis.call('HDEL', index, key) end
    bytes = bytes - size
    len = len - 1
    removed = removed + 1
    last = id
    start = '(' .. id
  end
  if not more then break end
end
if last then
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  redis.call('XTRIM', stream, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
end
if bytes < 0 or len == 0 then bytes = 0 end
redis.call('SET', counter, string.format('%d', bytes))
local reply = {bytes, len}
for _, id in ipairs(ids) do reply[#reply + 1] = id end
return reply
";

/// Moves a stream's last id forward to ARGV[1] if it is behind (it lost entries),
/// creating the stream if it is gone. Returns 1 if it moved.
const FORWARD_SCRIPT: &str = r"
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then
  redis.call('XADD', stream, ARGV[1], 'i', '', 'u', '')
  redis.call('XDEL', stream, ARGV[1])
  return 1
end
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
    local want_ms, want_seq = string.match(ARGV[1], '^(%d+)-(%d+)$')
    if tonumber(ms) < tonumber(want_ms)
      or (tonumber(ms) == tonumber(want_ms) and tonumber(seq) < tonumber(want_seq)) then
      redis.call('XSETID', stream, ARGV[1])
      return 1
    end
  end
end
return 0
";

/// The log's position of a stream entry id, `None` if it is not a valid id or its
/// sequence does not fit.
pub(super) fn position_of_entry(entry: &str) -> Option<u64> {
    let (ms, seq) = entry.split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    if seq >= 1 << SEQ_BITS || ms >= 1 << (64 - SEQ_BITS) {
        return None;
    }
    Some(ms << SEQ_BITS | seq)
}

/// The stream entry id of a position.
pub(super) fn entry_of_position(position: u64) -> String {
    format!(
        "{}-{}",
        position >> SEQ_BITS,
        position & ((1 << SEQ_BITS) - 1)
    )
}

/// Where to reach Redis and which stream to use.
#[derive(Clone)]
pub(crate) struct Target {
    client: Client,
    /// The URL with its password replaced, for messages.
    shown: String,
    stream: String,
    index: String,
    counter: String,
}

impl Target {
    /// The stream's name, which the cluster's other keys start with.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// The URL as it may be printed.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// The client, for connections of other kinds (pub/sub).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }
}

impl Target {
    pub(crate) fn new(url: &str, stream: &str) -> Result<Target, LogError> {
        let shown = redact_url(url);
        let client = Client::open(url).map_err(|err| LogError::Unavailable {
            reason: format!(
                "invalid Redis URL {shown}: {}",
                err.detail().unwrap_or("malformed")
            ),
        })?;
        Ok(Target {
            client,
            shown,
            stream: stream.to_owned(),
            index: format!("{stream}:ids"),
            counter: format!("{stream}:bytes"),
        })
    }

    pub(crate) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        match tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => Err(format!("cannot connect to Redis at {}: {err}", self.shown)),
            Err(_) => Err(format!(
                "cannot connect to Redis at {}: no answer within {CONNECT_TIMEOUT:?}",
                self.shown
            )),
        }
    }
}

/// `redis://user:secret@host` as `redis://user:REDACTED@host`: credentials are never
/// printed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(malformed URL)".to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:REDACTED@{host}{path}")
            } else {
                // `redis://secret@host` is a password alone in some clients.
                format!("{scheme}://REDACTED@{host}{path}")
            }
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

struct Pending {
    update: Update,
    record: Vec<u8>,
    reply: oneshot::Sender<Result<Stored, LogError>>,
}

/// Counters for the metrics of a cluster node.
#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    batches: AtomicU64,
    write_errors: AtomicU64,
    read_errors: AtomicU64,
    regressions: AtomicU64,
    reconnects: AtomicU64,
    /// Milliseconds between an entry's id time and when the reader handed it over, for
    /// the last batch (0 once caught up).
    lag_ms: AtomicU64,
    bytes: AtomicU64,
    len: AtomicU64,
}

/// What a cluster node's log reports beyond [`LogStats`].
#[doc(hidden)] // The log's internals, see [`Log`](super::Log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Commands to Redis that failed (appends, reads, retention).
    pub errors: u64,
    /// Times the stream was found to have gone backwards (Redis lost entries).
    pub regressions: u64,
    /// Connections to Redis made again after a failure.
    pub reconnects: u64,
    /// How far behind the stream the reader was when it handed over its last batch, in
    /// milliseconds of the entries' time (0 when it had caught up).
    pub reader_lag_ms: u64,
    /// The last position the reader handed to the fan-out.
    pub read_position: u64,
}

pub(super) struct RedisLog {
    target: Target,
    queries: Mutex<Option<MultiplexedConnection>>,
    writer: mpsc::Sender<Pending>,
    health: Arc<Mutex<LogHealth>>,
    counters: Arc<Counters>,
    /// The greatest position appended by this node or read from the stream.
    last_position: Arc<AtomicU64>,
    /// The reader's last position, for watchers.
    read: watch::Receiver<u64>,
    feed: Mutex<Option<mpsc::Receiver<Vec<Stored>>>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RedisLog {
    pub(super) async fn open(target: Target, retention: Retention) -> Result<RedisLog, LogError> {
        let mut connection = target
            .connect(RESPONSE_TIMEOUT)
            .await
            .map_err(|reason| LogError::Unavailable { reason })?;
        let last: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(&target.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(|err| unavailable(&target, &err))?;
        let start = last
            .first()
            .and_then(|(id, _)| position_of_entry(id))
            .unwrap_or(0);
        let health = Arc::new(Mutex::new(LogHealth::Writable));
        let counters = Arc::new(Counters::default());
        let last_position = Arc::new(AtomicU64::new(start));
        let stop = CancellationToken::new();
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let (feed_tx, feed_rx) = mpsc::channel(FEED_QUEUE);
        let (read_tx, read) = watch::channel(start);
        let write_task = tokio::spawn(
            Writer {
                target: target.clone(),
                retention,
                connection: Some(connection.clone()),
                backoff: Backoff::default(),
                health: Arc::clone(&health),
                counters: Arc::clone(&counters),
                last_position: Arc::clone(&last_position),
                script: Script::new(APPEND_SCRIPT),
            }
            .run(queue, stop.clone()),
        );
        let read_task = tokio::spawn(
            Reader {
                target: target.clone(),
                position: start,
                health: Arc::clone(&health),
                counters: Arc::clone(&counters),
                last_position: Arc::clone(&last_position),
                feed: feed_tx,
                announce: read_tx,
                stop: stop.clone(),
            }
            .run(),
        );
        Ok(RedisLog {
            target,
            queries: Mutex::new(Some(connection)),
            writer,
            health,
            counters,
            last_position,
            read,
            feed: Mutex::new(Some(feed_rx)),
            stop,
            tasks: Mutex::new(vec![write_task, read_task]),
        })
    }

    pub(super) async fn append(&self, update: Update) -> Result<Stored, LogError> {
        let record = record::encode(&update, now_ms());
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Pending {
                update,
                record,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// A connection for queries: the shared one, made again if it failed.
    async fn queries(&self) -> Result<MultiplexedConnection, LogError> {
        if let Some(connection) = self
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(connection);
        }
        let connection = self
            .target
            .connect(RESPONSE_TIMEOUT)
            .await
            .map_err(|reason| LogError::Unavailable { reason })?;
        *self.queries.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Runs a read; a connection found broken (Redis restarted since its last use) is
    /// made again and the read tried once more, as reads may be.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LogError> {
        let mut retried = false;
        loop {
            let mut connection = self.queries().await?;
            match cmd.query_async(&mut connection).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let broken = err.is_io_error()
                        || err.is_timeout()
                        || err.is_connection_dropped()
                        || err.is_connection_refusal();
                    if broken {
                        *self.queries.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    if broken && !retried && !err.is_timeout() {
                        retried = true;
                        continue;
                    }
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(unavailable(&self.target, &err));
                }
            }
        }
    }

    pub(super) async fn read_after(&self, after: u64, max: usize) -> Result<Vec<Stored>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let start = if after == 0 {
            "-".to_owned()
        } else {
            format!("({}", entry_of_position(after))
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.target.stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(max);
        let entries: Vec<(String, Vec<Vec<u8>>)> = self.query(&cmd).await?;
        Ok(decode_entries(entries))
    }

    pub(super) async fn position_of(&self, id: &str) -> Result<Option<u64>, LogError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&self.target.index).arg(id);
        let entry: Option<String> = self.query(&cmd).await?;
        Ok(entry.as_deref().and_then(position_of_entry))
    }

    pub(super) async fn id_before(&self, position: u64) -> Result<Option<String>, LogError> {
        if position == 0 {
            return Ok(None);
        }
        let end = if position == u64::MAX {
            "+".to_owned()
        } else {
            format!("({}", entry_of_position(position))
        };
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.target.stream)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(16);
        let entries: Vec<(String, Vec<Vec<u8>>)> = self.query(&cmd).await?;
        Ok(decode_entries(entries)
            .into_iter()
            .next()
            .map(|stored| stored.update.id.clone()))
    }

    pub(super) async fn len(&self) -> Result<u64, LogError> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(&self.target.stream);
        let len: u64 = self.query(&cmd).await?;
        self.counters.len.store(len, Ordering::Relaxed);
        Ok(len)
    }

    pub(super) fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    pub(super) fn last_position(&self) -> u64 {
        self.last_position.load(Ordering::Acquire)
    }

    pub(super) fn health(&self) -> LogHealth {
        if self.stop.is_cancelled() {
            return LogHealth::Closed;
        }
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.read.clone()
    }

    pub(super) fn take_feed(&self) -> Option<mpsc::Receiver<Vec<Stored>>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(super) fn stats(&self) -> LogStats {
        LogStats {
            appended: self.counters.appended.load(Ordering::Relaxed),
            commits: self.counters.batches.load(Ordering::Relaxed),
            write_errors: self.counters.write_errors.load(Ordering::Relaxed),
            corrupt_records: 0,
        }
    }

    pub(super) fn cluster_stats(&self) -> ClusterStats {
        let c = &self.counters;
        ClusterStats {
            errors: c.write_errors.load(Ordering::Relaxed) + c.read_errors.load(Ordering::Relaxed),
            regressions: c.regressions.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            reader_lag_ms: c.lag_ms.load(Ordering::Relaxed),
            read_position: *self.read.borrow(),
        }
    }

    pub(super) async fn close(&self) {
        // The writer ends once every queued append is answered: the queue closes when
        // the last sender goes, so stop it by cancelling and let it drain.
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for RedisLog {
    fn drop(&mut self) {
        self.stop.cancel();
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            task.abort();
        }
    }
}

fn unavailable(target: &Target, err: &redis::RedisError) -> LogError {
    LogError::Unavailable {
        reason: format!("Redis at {} failed: {err}", target.shown),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stream entries as stored updates; an entry that does not decode is skipped and
/// logged.
fn decode_entries(entries: Vec<(String, Vec<Vec<u8>>)>) -> Vec<Stored> {
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        match decode_entry(&id, &fields) {
            Ok(stored) => out.push(stored),
            Err(reason) => {
                tracing::error!(entry = %id, reason, "undecodable entry in the Redis stream: skipped");
            }
        }
    }
    out
}

fn decode_entry(id: &str, fields: &[Vec<u8>]) -> Result<Stored, &'static str> {
    let position = position_of_entry(id).ok_or("entry id out of range")?;
    let record = fields
        .chunks(2)
        .find(|pair| pair.len() == 2 && pair[0] == b"u")
        .map(|pair| &pair[1])
        .ok_or("no `u` field")?;
    let update = record::decode(record)?;
    Ok(Stored {
        position,
        update: Arc::new(update),
    })
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
}

impl Backoff {
    fn pause(&self) -> Duration {
        let factor = 1u32 << self.failures.min(10);
        (MIN_BACKOFF * factor).min(MAX_BACKOFF)
    }

    fn failed(&mut self) {
        self.retry_at = Some(tokio::time::Instant::now() + self.pause());
        self.failures = self.failures.saturating_add(1);
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    fn may_retry(&self) -> bool {
        self.retry_at
            .is_none_or(|at| tokio::time::Instant::now() >= at)
    }
}

fn set_health(health: &Mutex<LogHealth>, state: Result<(), &LogError>) {
    let mut health = health.lock().unwrap_or_else(|p| p.into_inner());
    *health = match state {
        Ok(()) => LogHealth::Writable,
        Err(error) => LogHealth::Failing {
            error: error.clone(),
            at: SystemTime::now(),
        },
    };
}

struct Writer {
    target: Target,
    retention: Retention,
    connection: Option<MultiplexedConnection>,
    backoff: Backoff,
    health: Arc<Mutex<LogHealth>>,
    counters: Arc<Counters>,
    last_position: Arc<AtomicU64>,
    script: Script,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Pending>, stop: CancellationToken) {
        let mut closing = false;
        let mut trim = tokio::time::interval(TRIM_EVERY);
        trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut carried: Option<Pending> = None;
        // Script calls sent and not yet answered, oldest first: a multiplexed connection
        // keeps them in order, and Redis runs them in that order.
        let mut in_flight = FuturesOrdered::new();
        loop {
            let first = tokio::select! {
                biased;
                Some((batch, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finish(batch, reply);
                    continue;
                }
                first = async { carried.take() }, if carried.is_some() && in_flight.len() < PIPELINE_DEPTH => {
                    first.expect("guarded")
                }
                next = queue.recv(), if carried.is_none() && in_flight.len() < PIPELINE_DEPTH => match next {
                    Some(first) => first,
                    None => {
                        while let Some((batch, reply)) = in_flight.next().await {
                            self.finish(batch, reply);
                        }
                        return;
                    }
                },
                _ = trim.tick(), if !closing && in_flight.is_empty() => {
                    if let Some(connection) = self.connection().await {
                        let reply = invoke(connection, self.invocation(&[])).await;
                        self.finish(Vec::new(), reply);
                    }
                    continue;
                }
                () = stop.cancelled(), if !closing => {
                    // Answer what is queued, then end.
                    queue.close();
                    closing = true;
                    continue;
                }
            };
            let mut bytes = first.record.len();
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(next) if bytes + next.record.len() > WRITE_BATCH_BYTES => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => {
                        bytes += next.record.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            match self.connection().await {
                Some(connection) => {
                    let invocation = self.invocation(&batch);
                    in_flight
                        .push_back(async move { (batch, invoke(connection, invocation).await) });
                }
                None => {
                    let err = self.current_error();
                    for pending in batch {
                        let _ = pending.reply.send(Err(err.clone()));
                    }
                }
            }
            trim.reset();
        }
    }

    /// The connection to send on: the current one, or a new one unless the last
    /// attempt failed less than the backoff ago. `None` when there is none (the
    /// failure is recorded).
    async fn connection(&mut self) -> Option<MultiplexedConnection> {
        if let Some(connection) = &self.connection {
            return Some(connection.clone());
        }
        if !self.backoff.may_retry() {
            return None;
        }
        match self.target.connect(RESPONSE_TIMEOUT).await {
            Ok(connection) => {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                self.connection = Some(connection.clone());
                Some(connection)
            }
            Err(reason) => {
                self.fail(&LogError::Unavailable { reason });
                None
            }
        }
    }

    /// The script call for `batch` (possibly empty: retention only).
    fn invocation(&self, batch: &[Pending]) -> redis::Cmd {
        let limit = |v: Option<u64>| v.unwrap_or(0);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(3)
            .arg(&self.target.stream)
            .arg(&self.target.index)
            .arg(&self.target.counter)
            .arg(limit(self.retention.max_updates))
            .arg(limit(self.retention.max_bytes))
            .arg(self.retention.max_age.map_or(0, |age| {
                u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1)
            }))
            .arg(TRIM_LIMIT);
        for pending in batch {
            cmd.arg(&pending.update.id).arg(&pending.record);
        }
        cmd
    }

    /// Answers the appends of a batch from the script's reply, and records how Redis
    /// did.
    fn finish(&mut self, batch: Vec<Pending>, reply: redis::RedisResult<Vec<redis::Value>>) {
        let values = match reply {
            Ok(values) => values,
            Err(err) => {
                if err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                {
                    self.connection = None;
                }
                let err = unavailable(&self.target, &err);
                self.fail(&err);
                for pending in batch {
                    let _ = pending.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let mut values = values.into_iter();
        let number = |v: Option<redis::Value>| match v {
            Some(redis::Value::Int(n)) => u64::try_from(n).unwrap_or(0),
            _ => 0,
        };
        self.counters
            .bytes
            .store(number(values.next()), Ordering::Relaxed);
        self.counters
            .len
            .store(number(values.next()), Ordering::Relaxed);
        if !batch.is_empty() {
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .appended
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        self.backoff.succeeded();
        set_health(&self.health, Ok(()));
        let mut ids = values.map(|v| redis::from_redis_value::<String>(v).ok());
        for pending in batch {
            let entry = ids.next().flatten();
            let answer = match entry.as_deref().and_then(position_of_entry) {
                Some(position) => {
                    self.last_position.fetch_max(position, Ordering::AcqRel);
                    Ok(Stored {
                        position,
                        update: Arc::new(pending.update),
                    })
                }
                None => Err(LogError::Unavailable {
                    reason: format!(
                        "Redis answered the append with the entry id {entry:?}, not one in the range of positions"
                    ),
                }),
            };
            let _ = pending.reply.send(answer);
        }
    }

    fn fail(&mut self, err: &LogError) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        self.backoff.failed();
        set_health(&self.health, Err(err));
        tracing::warn!(cause = %err, retry_in = ?self.backoff.pause(), "the Redis log cannot append");
    }

    fn current_error(&self) -> LogError {
        match &*self.health.lock().unwrap_or_else(|p| p.into_inner()) {
            LogHealth::Failing { error, .. } => error.clone(),
            _ => LogError::Unavailable {
                reason: format!("Redis at {} is unreachable", self.target.shown),
            },
        }
    }
}

/// Sends a script call; loads the script first when Redis does not know it (a new or
/// restarted Redis) and sends the call again.
async fn invoke(
    mut connection: MultiplexedConnection,
    cmd: redis::Cmd,
) -> redis::RedisResult<Vec<redis::Value>> {
    match cmd.query_async(&mut connection).await {
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(APPEND_SCRIPT)
                .query_async::<String>(&mut connection)
                .await?;
            cmd.query_async(&mut connection).await
        }
        other => other,
    }
}

struct Reader {
    target: Target,
    /// The last position read: reading resumes after it.
    position: u64,
    health: Arc<Mutex<LogHealth>>,
    counters: Arc<Counters>,
    last_position: Arc<AtomicU64>,
    feed: mpsc::Sender<Vec<Stored>>,
    announce: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut connection: Option<MultiplexedConnection> = None;
        let mut reconnected = false;
        while !self.stop.is_cancelled() {
            let mut con = match connection.clone() {
                Some(con) => con,
                None => match self.target.connect(READ_BLOCK + RESPONSE_TIMEOUT).await {
                    Ok(con) => {
                        connection = Some(con.clone());
                        if reconnected {
                            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                            self.check_forward(&mut con.clone()).await;
                        }
                        con
                    }
                    Err(reason) => {
                        self.failed(&mut backoff, LogError::Unavailable { reason });
                        reconnected = true;
                        if self.pause(&backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let start = if self.position == 0 {
                "0-0".to_owned()
            } else {
                entry_of_position(self.position)
            };
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.target.stream)
                .arg(start);
            let reply = tokio::select! {
                reply = cmd.query_async::<Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>>(&mut con) => reply,
                () = self.stop.cancelled() => return,
            };
            match reply {
                Ok(reply) => {
                    if backoff.failures > 0 {
                        backoff.succeeded();
                        set_health(&self.health, Ok(()));
                    }
                    let entries = reply
                        .into_iter()
                        .flatten()
                        .flat_map(|(_, entries)| entries)
                        .collect::<Vec<_>>();
                    let full = entries.len() >= READ_BATCH;
                    let Some((last_id, _)) = entries.last() else {
                        self.counters.lag_ms.store(0, Ordering::Relaxed);
                        continue;
                    };
                    let last_id = last_id.clone();
                    let stored = decode_entries(entries);
                    // Even if every entry was undecodable, move past them.
                    let Some(read) = position_of_entry(&last_id) else {
                        tracing::error!(entry = %last_id, "a Redis stream entry id out of the range of positions: the reader stops");
                        return;
                    };
                    let lag = if full {
                        now_ms().saturating_sub(read >> SEQ_BITS)
                    } else {
                        0
                    };
                    self.counters.lag_ms.store(lag, Ordering::Relaxed);
                    if !stored.is_empty() {
                        tokio::select! {
                            sent = self.feed.send(stored) => if sent.is_err() { return },
                            () = self.stop.cancelled() => return,
                        }
                    }
                    self.position = read;
                    self.last_position.fetch_max(read, Ordering::AcqRel);
                    self.announce.send_replace(read);
                }
                Err(err) => {
                    connection = None;
                    reconnected = true;
                    self.failed(&mut backoff, unavailable(&self.target, &err));
                    if self.pause(&backoff).await {
                        return;
                    }
                }
            }
        }
    }

    fn failed(&self, backoff: &mut Backoff, err: LogError) {
        self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        backoff.failed();
        set_health(&self.health, Err(&err));
        tracing::warn!(cause = %err, retry_in = ?backoff.pause(), "the Redis log reader lost Redis");
    }

    /// Sleeps for the backoff; true if the log closed meanwhile.
    async fn pause(&self, backoff: &Backoff) -> bool {
        let until = backoff.retry_at.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            () = tokio::time::sleep_until(until) => false,
            () = self.stop.cancelled() => true,
        }
    }

    /// After a reconnect: if the stream is now behind what this node read, Redis lost
    /// entries; say so and move the stream's id past it.
    async fn check_forward(&self, con: &mut MultiplexedConnection) {
        let last = self.last_position.load(Ordering::Acquire);
        if last == 0 {
            return;
        }
        let moved: Result<i64, _> = Script::new(FORWARD_SCRIPT)
            .key(&self.target.stream)
            .arg(entry_of_position(last))
            .invoke_async(con)
            .await;
        match moved {
            Ok(1) => {
                self.counters.regressions.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    stream = %self.target.stream,
                    last_delivered = %entry_of_position(last),
                    "the Redis stream went backwards (Redis restarted without its data?): updates acknowledged before were lost; new ones are ordered after what was delivered"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(cause = %err, "cannot check whether the Redis stream went backwards");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_entry_ids_both_ways_in_order() {
        let ids = ["1-0", "1-1", "1-1048575", "2-0", "1733000000000-7"];
        let positions: Vec<u64> = ids
            .iter()
            .map(|id| position_of_entry(id).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        for (id, position) in ids.iter().zip(&positions) {
            assert_eq!(&entry_of_position(*position), id);
        }
        assert_eq!(position_of_entry("1-1048576"), None);
        assert_eq!(position_of_entry("x-1"), None);
        assert_eq!(position_of_entry("12"), None);
    }

    #[test]
    fn tls_urls_are_accepted_and_bad_ones_refused_without_their_password() {
        assert!(Target::new("rediss://:pw@cache.example:6380/1", "s").is_ok());
        assert!(Target::new("redis://127.0.0.1:6379", "s").is_ok());
        let Err(err) = Target::new("redis://u:pw@h:notaport", "s") else {
            panic!("a bad port was accepted");
        };
        let text = err.to_string();
        assert!(
            text.contains("invalid Redis URL") && !text.contains("pw"),
            "{text}"
        );
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("redis://user:hunter2@db.example:6379/2"),
            "redis://user:REDACTED@db.example:6379/2"
        );
        assert_eq!(redact_url("rediss://:pw@h"), "rediss://:REDACTED@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("redis://tok@h/0"), "redis://REDACTED@h/0");
    }
}
