//! The Redis Streams log (cluster mode) against a real `redis-server` started here on
//! a free port: retention by count, bytes and age trims the id index with the stream,
//! and a stream that goes backwards (Redis restarted without its data) is detected and
//! never orders new updates before delivered ones.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tidings_hub::log::{Cursor, Log, Retention, Stored, Update};

const GUARD: Duration = Duration::from_secs(30);

/// A `redis-server` of the test's own, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    persistent: bool,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(persistent: bool) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            persistent,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", appendonly, "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run redis-server ({err}): apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + GUARD;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn ids(log: &Log) -> Vec<String> {
    log.read_after(Cursor::Earliest, 1000)
        .await
        .unwrap()
        .iter()
        .map(|s| s.update.id.clone())
        .collect()
}

async fn index_len(redis: &Redis, stream: &str) -> u64 {
    redis::cmd("HLEN")
        .arg(format!("{stream}:ids"))
        .query_async(&mut redis.raw().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn retention_by_count_trims_the_stream_and_its_id_index() {
    let redis = Redis::start(false);
    let log = Log::redis(
        &redis.url(),
        "count",
        Retention::UNLIMITED.with_max_updates(Some(5)),
    )
    .await
    .unwrap();
    let mut positions = Vec::new();
    for n in 0..12 {
        positions.push(
            log.append(Update::new(format!("id-{n}"), "/t", "x"))
                .await
                .unwrap()
                .position,
        );
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(log.len().await.unwrap(), 5);
    assert_eq!(ids(&log).await, ["id-7", "id-8", "id-9", "id-10", "id-11"]);
    assert_eq!(log.position_of("id-0").await.unwrap(), None);
    assert_eq!(log.position_of("id-9").await.unwrap(), Some(positions[9]));
    assert_eq!(index_len(&redis, "count").await, 5);
    // A reused id names its latest occurrence, and its older one's trimming keeps it.
    let again = log.append(Update::new("id-7", "/t", "y")).await.unwrap();
    assert_eq!(log.position_of("id-7").await.unwrap(), Some(again.position));
    assert_eq!(
        log.id_before(again.position).await.unwrap().as_deref(),
        Some("id-11")
    );
    assert_eq!(log.last_id().await.unwrap().as_deref(), Some("id-7"));
    log.close().await;
}

#[tokio::test]
async fn retention_by_bytes_keeps_the_bytes_under_the_limit() {
    let redis = Redis::start(false);
    let log = Log::redis(
        &redis.url(),
        "bytes",
        Retention::UNLIMITED.with_max_bytes(Some(1000)),
    )
    .await
    .unwrap();
    for n in 0..20 {
        log.append(Update::new(format!("b-{n}"), "/t", "x".repeat(200)))
            .await
            .unwrap();
    }
    let len = log.len().await.unwrap();
    assert!((1..=4).contains(&len), "{len} kept");
    assert!(log.bytes() <= 1000, "{} bytes", log.bytes());
    assert_eq!(index_len(&redis, "bytes").await, len);
    assert_eq!(ids(&log).await.last().map(String::as_str), Some("b-19"));
    log.close().await;
}

#[tokio::test]
async fn retention_by_age_empties_the_history_without_appends() {
    let redis = Redis::start(false);
    let log = Log::redis(
        &redis.url(),
        "age",
        Retention::UNLIMITED.with_max_age(Some(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    for n in 0..3 {
        log.append(Update::new(format!("a-{n}"), "/t", "x"))
            .await
            .unwrap();
    }
    // The writer applies retention by itself every second; the guard only stops a hang.
    let deadline = tokio::time::Instant::now() + GUARD;
    while log.len().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log.position_of("a-0").await.unwrap(), None);
    assert_eq!(index_len(&redis, "age").await, 0);
    log.close().await;
}

#[tokio::test]
async fn two_nodes_read_the_same_order_from_their_feeds() {
    let redis = Redis::start(false);
    let a = Log::redis(&redis.url(), "feed", Retention::default())
        .await
        .unwrap();
    let b = Log::redis(&redis.url(), "feed", Retention::default())
        .await
        .unwrap();
    let (mut feed_a, mut feed_b) = (a.take_feed().unwrap(), b.take_feed().unwrap());
    assert!(a.take_feed().is_none());
    let appends = (0..50).map(|n| {
        let log = if n % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { log.append(Update::new(format!("f-{n}"), "/t", "x")).await })
    });
    for append in appends.collect::<Vec<_>>() {
        append.await.unwrap().unwrap();
    }
    async fn take(feed: &mut tokio::sync::mpsc::Receiver<Vec<Stored>>) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < 50 {
            let batch = tokio::time::timeout(GUARD, feed.recv())
                .await
                .unwrap()
                .unwrap();
            out.extend(batch.iter().map(|s| s.position));
        }
        out
    }
    let (seen_a, seen_b) = (take(&mut feed_a).await, take(&mut feed_b).await);
    assert_eq!(seen_a, seen_b);
    assert!(seen_a.windows(2).all(|w| w[0] < w[1]));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_stream_that_went_backwards_is_detected_and_moved_forward() {
    let mut redis = Redis::start(false);
    let log = Log::redis(&redis.url(), "lost", Retention::default())
        .await
        .unwrap();
    let mut feed = log.take_feed().unwrap();
    let mut last = 0;
    for n in 0..3 {
        last = log
            .append(Update::new(format!("l-{n}"), "/t", "x"))
            .await
            .unwrap()
            .position;
    }
    let mut read = 0;
    while read < last {
        let batch = tokio::time::timeout(GUARD, feed.recv())
            .await
            .unwrap()
            .unwrap();
        read = batch.last().unwrap().position;
    }
    // Redis restarts without persistence: the stream is gone.
    redis.restart();
    let deadline = tokio::time::Instant::now() + GUARD;
    while log.cluster_stats().unwrap().regressions == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the regression went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New updates come after what was delivered, not before.
    let next = loop {
        match log.append(Update::new("after", "/t", "x")).await {
            Ok(stored) => break stored,
            Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "appends never resumed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(next.position > last);
    let batch = tokio::time::timeout(GUARD, feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch[0].update.id, "after");
    log.close().await;
}
