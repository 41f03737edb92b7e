//! Cluster mode: several `tidings serve --redis` processes on one real `redis-server`
//! (started here on a free port, with AOF on), showing one total order across nodes,
//! replay from any node, a subscriber moving from a killed node, and Redis going away
//! and coming back under load without losing or doubling an acknowledged update.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_hub::auth::{MercureClaims, SigningKey, mint};
use tokio::sync::mpsc;

use crate::process::{KEY, Server};

/// Generous guards against a hang, never what is measured.
const GUARD: Duration = Duration::from_secs(60);

/// A `redis-server` of the test's own, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir,
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run redis-server ({err}): the cluster tests need it \
                     (Debian: apt-get install redis-server; scripts/test.sh installs it)"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + GUARD;
        while !ping(self.port) {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGKILL, then the same server again on the same port and directory: it reloads
    /// its append-only file.
    fn kill_and_restart(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a Redis answers PING on the port.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn node(redis: &Redis) -> Server {
    let url = redis.url();
    Server::start(
        &[
            "--jwt-key",
            KEY,
            "--redis",
            &url,
            "--redis-stream",
            "{test}",
            "--no-demo",
            "--heartbeat",
            "1s",
        ],
        None,
    )
}

fn token() -> String {
    mint(
        &SigningKey::hmac(KEY),
        &MercureClaims {
            publish: Some(vec!["*".into()]),
            subscribe: Some(vec!["*".into()]),
            ..MercureClaims::default()
        },
        None,
    )
    .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Publishes; the status and the body (the id when 200).
async fn publish(
    client: &reqwest::Client,
    node: &Server,
    data: &str,
    id: Option<&str>,
) -> (u16, String) {
    let mut form = vec![("topic", "/cluster"), ("data", data)];
    if let Some(id) = id {
        form.push(("id", id));
    }
    match client
        .post(&node.url)
        .bearer_auth(token())
        .form(&form)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(err) => (0, err.to_string()),
    }
}

/// An event stream being read: its events (id, data) arrive on `events`.
struct Subscriber {
    events: mpsc::UnboundedReceiver<(String, String)>,
    last_event_id: Option<String>,
    /// Set when the stream ended or failed.
    ended: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe(node: &Server, last_event_id: Option<&str>) -> Subscriber {
    let mut request = reqwest::Client::new()
        .get(format!("{}?topic=/cluster", node.url))
        .bearer_auth(token());
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let (tx, events) = mpsc::unbounded_channel();
    let ended = Arc::new(Mutex::new(false));
    let task = tokio::spawn({
        let ended = Arc::clone(&ended);
        async move {
            let mut decoder = tidings_wire::Decoder::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                decoder.feed(chunk);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    if let tidings_wire::Frame::Event(event) = frame
                        && tx
                            .send((event.id.to_string(), event.data.to_string()))
                            .is_err()
                    {
                        return;
                    }
                }
            }
            *ended.lock().unwrap() = true;
        }
    });
    Subscriber {
        events,
        last_event_id: header,
        ended,
        task,
    }
}

impl Subscriber {
    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let event = tokio::time::timeout(GUARD, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events arrived", out.len()))
                .expect("the stream ended");
            out.push(event);
        }
        out
    }

    /// Events up to and including the one with data `marker`.
    async fn until(&mut self, marker: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            let event = tokio::time::timeout(GUARD, self.events.recv())
                .await
                .expect("the marker did not arrive")
                .expect("the stream ended");
            let done = event.1 == marker;
            out.push(event);
            if done {
                return out;
            }
        }
    }
}

fn base(node: &Server) -> String {
    node.url
        .strip_suffix(tidings_hub::HUB_PATH)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_one_order_and_replay_from_any_node() {
    let redis = Redis::start();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let [a, b, c] = &nodes;
    let mut on_b = subscribe(b, None).await;
    let mut on_c = subscribe(c, None).await;

    // Concurrent publishers on every node; some ids are the publishers' own.
    let client = client();
    let mut publishers = Vec::new();
    for (p, node) in nodes.iter().enumerate() {
        for q in 0..2 {
            let client = client.clone();
            let url = node.url.clone();
            publishers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..20 {
                    let data = format!("{p}.{q}.{n}");
                    let custom = format!("urn:test:{p}.{q}.{n}");
                    let id = (n % 3 == 0).then_some(custom.as_str());
                    let mut form = vec![("topic", "/cluster"), ("data", data.as_str())];
                    if let Some(id) = id {
                        form.push(("id", id));
                    }
                    let response = client
                        .post(&url)
                        .bearer_auth(token())
                        .form(&form)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let acked = response.text().await.unwrap();
                    if let Some(id) = id {
                        assert_eq!(acked, id);
                    }
                    ids.push(acked);
                }
                ids
            }));
        }
    }
    let mut acked = Vec::new();
    for publisher in publishers {
        acked.extend(publisher.await.unwrap());
    }
    assert_eq!(acked.len(), 120);

    let seen_b = on_b.take(120).await;
    let seen_c = on_c.take(120).await;
    assert_eq!(seen_b, seen_c, "B and C delivered different orders");
    let mut ids: Vec<&String> = seen_b.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "an update was delivered twice");
    for id in &acked {
        assert!(
            seen_b.iter().any(|(seen, _)| seen == id),
            "{id} never delivered"
        );
    }
    // Each publisher's updates keep the order they were acknowledged in.
    for p in 0..3 {
        for q in 0..2 {
            let prefix = format!("{p}.{q}.");
            let mine: Vec<u32> = seen_b
                .iter()
                .filter_map(|(_, d)| d.strip_prefix(&prefix)?.parse().ok())
                .collect();
            assert_eq!(mine, (0..20).collect::<Vec<_>>(), "{prefix}");
        }
    }

    // Replay on C after an update published on A, named by a custom id and by a
    // generated one: the rest, in the same order.
    let custom_at = seen_b
        .iter()
        .position(|(id, _)| id.starts_with("urn:test:0."))
        .unwrap();
    let generated_at = seen_b
        .iter()
        .position(|(id, d)| d.starts_with("0.") && id.starts_with("urn:uuid:"))
        .unwrap();
    for at in [custom_at, generated_at] {
        let named = &seen_b[at].0;
        let mut replay = subscribe(c, Some(named)).await;
        assert_eq!(replay.last_event_id.as_deref(), Some(named.as_str()));
        let rest = replay.take(120 - at - 1).await;
        assert_eq!(rest, seen_b[at + 1..], "replay after {named}");
    }
    // And `earliest` on A gives the whole history.
    let mut all = subscribe(a, Some("earliest")).await;
    assert_eq!(all.take(120).await, seen_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moved_from_a_killed_node_resumes_exactly_once() {
    let redis = Redis::start();
    let a = node(&redis);
    let b = node(&redis);
    let client = client();
    let mut on_a = subscribe(&a, None).await;
    for n in 0..10 {
        assert_eq!(publish(&client, &b, &n.to_string(), None).await.0, 200);
    }
    let first = on_a.take(10).await;
    drop(on_a);
    drop(a); // SIGKILL
    for n in 10..20 {
        assert_eq!(publish(&client, &b, &n.to_string(), None).await.0, 200);
    }
    let last = &first.last().unwrap().0;
    let mut on_b = subscribe(&b, Some(last)).await;
    let rest = on_b.take(10).await;
    let data: Vec<String> = first.iter().chain(&rest).map(|(_, d)| d.clone()).collect();
    assert_eq!(data, (0..20).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(publish(&client, &b, "end", None).await.0, 200);
    assert_eq!(on_b.take(1).await[0].1, "end", "nothing else in between");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_then_killed_and_restarted_loses_and_doubles_nothing() {
    const PUBLISHERS: usize = 4;
    let mut redis = Redis::start();
    let a = node(&redis);
    let b = node(&redis);
    let mut on_b = subscribe(&b, None).await;
    let client = client();

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let stop = tokio_util_like::Flag::default();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (client, url) = (client.clone(), a.url.clone());
        let (acked, refused, stop) = (Arc::clone(&acked), Arc::clone(&refused), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_set() {
                let response = client
                    .post(&url)
                    .bearer_auth(token())
                    .form(&[("topic", "/cluster"), ("data", &format!("{p}-{n}"))])
                    .send()
                    .await;
                n += 1;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let id = r.text().await.unwrap();
                        acked.lock().unwrap().push(id);
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        refused.lock().unwrap().push((status, body));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(err) => panic!("publish failed without an answer: {err}"),
                }
            }
        }));
    }
    let wait_for = |what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let count = |v: &Arc<Mutex<Vec<String>>>| v.lock().unwrap().len();
    wait_for("first publishes", {
        let acked = Arc::clone(&acked);
        Box::new(move || count(&acked) >= 40)
    })
    .await;

    // Redis stops answering.
    redis.signal("-STOP");
    wait_for("503s while Redis is stopped", {
        let refused = Arc::clone(&refused);
        Box::new(move || refused.lock().unwrap().len() >= PUBLISHERS)
    })
    .await;
    let ready = client
        .get(format!("{}/readyz", base(&a)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "ready while Redis is away");
    // Then it dies, and comes back from its append-only file.
    redis.kill_and_restart();
    let before = count(&acked);
    wait_for("publishes after Redis came back", {
        let acked = Arc::clone(&acked);
        Box::new(move || count(&acked) >= before + 40)
    })
    .await;
    stop.set();
    for task in tasks {
        task.await.unwrap();
    }
    for (status, body) in refused.lock().unwrap().iter() {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("Redis"), "unclear refusal: {body}");
    }
    assert_eq!(publish(&client, &a, "marker", None).await.0, 200);

    // The subscriber on B never left, and got every acknowledged update once.
    let seen = on_b.until("marker").await;
    assert!(!*on_b.ended.lock().unwrap());
    let mut ids: Vec<&String> = seen.iter().map(|(id, _)| id).collect();
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), total, "an update was delivered twice");
    for id in acked.lock().unwrap().iter() {
        assert!(
            seen.iter().any(|(s, _)| s == id),
            "acknowledged {id} never delivered"
        );
    }
    // The outage is in the metrics; the node is ready again.
    let metrics = client
        .get(format!("{}/metrics", base(&a)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(value("tidings_cluster_redis_errors_total") >= 1.0);
    assert!(value("tidings_cluster_redis_reconnects_total") >= 1.0);
    assert_eq!(value("tidings_cluster_stream_regressions_total"), 0.0);
    assert_eq!(value("tidings_storage_ready"), 1.0);
    assert_eq!(value("tidings_history_updates"), seen.len() as f64);
    // And the history, read again from Redis, holds them all too.
    let mut replay = subscribe(&a, Some("earliest")).await;
    let history = replay.until("marker").await;
    assert_eq!(
        history, seen,
        "history differs from what was delivered live"
    );
    let _ = redis.dir();
}

/// A stop flag shared by tasks.
mod tokio_util_like {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub(crate) struct Flag(Arc<AtomicBool>);

    impl Flag {
        pub(crate) fn set(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
        pub(crate) fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_of_every_node_are_listed_and_announced_everywhere() {
    let redis = Redis::start();
    let a = node(&redis);
    let b = node(&redis);
    let client = client();
    // A watcher of subscription events on A.
    let mut watcher = reqwest::Client::new()
        .get(format!(
            "{}?topic={}",
            a.url, "/.well-known/mercure/subscriptions%7B/topic%7D%7B/subscriber%7D"
        ))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert_eq!(watcher.status(), 200);

    let on_b = subscribe(&b, None).await;
    // The event of B's new subscriber reaches the watcher on A.
    let mut decoder = tidings_wire::Decoder::new();
    let announced = tokio::time::timeout(GUARD, async {
        loop {
            let chunk = watcher.chunk().await.unwrap().expect("watcher open");
            decoder.feed(chunk);
            while let Some(frame) = decoder.next_frame().unwrap() {
                if let tidings_wire::Frame::Event(event) = frame
                    && event.data.contains("\"/cluster\"")
                {
                    return serde_json::from_str::<serde_json::Value>(&event.data).unwrap();
                }
            }
        }
    })
    .await
    .expect("no subscription event from B reached A");
    assert_eq!(announced["active"], true);
    let subscriber = announced["subscriber"].as_str().unwrap().to_owned();

    // The subscriptions API on A lists it.
    let list = client
        .get(format!("{}/subscriptions", a.url))
        .bearer_auth(token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let listed: Vec<&str> = list["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["topic"] == "/cluster")
        .map(|s| s["subscriber"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [subscriber.as_str()], "{list}");

    // Gone from B, gone from A's list, and announced inactive; never in history.
    drop(on_b);
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let list = client
            .get(format!("{}/subscriptions", a.url))
            .bearer_auth(token())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let still = list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["topic"] == "/cluster");
        if !still {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(publish(&client, &a, "only", None).await.0, 200);
    let mut all = subscribe(&a, Some("earliest")).await;
    let history = all.take(1).await;
    assert_eq!(history[0].1, "only", "subscription events are not history");
}

#[test]
fn the_redis_url_is_checked_and_its_password_never_printed() {
    let out = crate::process::run(&[
        "serve",
        "--check",
        "--redis",
        "redis://app:hunter2@db.example:6379/3",
        "--redis-stream",
        "orders",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("in the Redis stream orders at redis://app:REDACTED@db.example:6379/3"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"));

    // The same from the environment and from the TOML file.
    let out = crate::process::tidings()
        .args(["serve", "--check"])
        .env("TIDINGS_REDIS", "rediss://:pw@cache:6380")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("in the Redis stream tidings at rediss://:REDACTED@cache:6380"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "redis = \"redis://h:1/2\"\nredis_stream = \"{hubs}\"\n",
    )
    .unwrap();
    let out = crate::process::run(&["serve", "--check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("in the Redis stream {hubs} at redis://h:1/2"),
        "{stdout}"
    );

    let out = crate::process::run(&["serve", "--check", "--redis", "http://x:pw@h"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("invalid --redis") && !stderr.contains("pw@"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_redis_at_start_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://u:secret@127.0.0.1:{port}");
    let out = crate::process::run(&["serve", "--addr", "127.0.0.1:0", "--redis", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot connect to Redis"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}
