//! The request and subscription log lines (captured through the library's tracing, with
//! a subscriber set for the test's thread: the hub runs on the test's current-thread
//! runtime) and the metrics of issue 11.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_hub::auth::{MercureClaims, SigningKey, mint};
use tidings_hub::{HUB_PATH, Hub};
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{PATIENCE, TestHub};

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a line holds every one of `parts`, and returns it.
    async fn line_with(&self, parts: &[&str]) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(line) = self
                    .text()
                    .lines()
                    .find(|line| parts.iter().all(|part| line.contains(part)))
                {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no line with {parts:?} in:\n{}", self.text()))
    }
}

/// Where this thread's log lines go, and in which format: set by [`capture_text`] and
/// [`capture_json`] for the length of a test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<(Format, Capture)>> =
        const { std::cell::RefCell::new(None) };
}

/// Writes to this thread's capture when it wants `format`, else nowhere.
struct CaptureWriter(Option<Arc<Mutex<Vec<u8>>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(lines) = &self.0 {
            lines.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer of one of the two global layers.
struct ThreadCapture(Format);

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(CURRENT.with(|current| match &*current.borrow() {
            Some((format, capture)) if *format == self.0 => Some(Arc::clone(&capture.0)),
            _ => None,
        }))
    }
}

/// One global subscriber for the whole test binary, a text and a JSON layer at INFO, each
/// writing to the capture of the thread it runs on. Global rather than a scoped
/// `set_default` per test: tracing caches each call site's interest process-wide, and a
/// scoped subscriber set while other tests' threads hit the same call sites with none
/// could miss lines.
fn install() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(ThreadCapture(Format::Text));
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(ThreadCapture(Format::Json));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(text)
            .with(json);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the hub's tests");
    });
}

/// Ends a thread's capture when the test ends.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

fn capture(format: Format) -> (Capture, CaptureGuard) {
    install();
    let capture = Capture::default();
    CURRENT.with(|current| *current.borrow_mut() = Some((format, capture.clone())));
    (capture, CaptureGuard)
}

/// Text log lines at INFO, for the current thread only.
fn capture_text() -> (Capture, CaptureGuard) {
    capture(Format::Text)
}

/// JSON log lines at INFO, as `tidings serve --log-format json` writes them.
fn capture_json() -> (Capture, CaptureGuard) {
    capture(Format::Json)
}

/// A token the hub refuses: signed with another key.
fn foreign_token() -> String {
    let claims = MercureClaims {
        publish: None,
        subscribe: Some(vec!["*".into()]),
        payload: None,
    };
    let key = SigningKey::hmac(b"not the hub's key, but 32+ bytes long");
    mint(&key, &claims, None).unwrap()
}

#[tokio::test]
async fn a_refused_subscribe_is_logged_with_its_reason_and_without_the_token() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::start().await;
    let bad = foreign_token();
    let response = hub
        .client
        .get(format!("{}?topic=/a&authorization={bad}", hub.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let reason = response.text().await.unwrap().trim().to_owned();
    let line = capture.line_with(&["refused", "status=401"]).await;
    assert!(line.contains(&format!("reason={reason:?}")), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(
        line.contains(&format!("path={HUB_PATH}?topic=/a&authorization=REDACTED")),
        "{line}"
    );
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains("code=\"invalid_token\""), "{line}");
    // Not in the header either, nor anywhere else.
    let response = hub
        .client
        .get(format!("{}?topic=/a", hub.url()))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    capture
        .line_with(&["refused", "path=/.well-known/mercure?topic=/a "])
        .await;
    let signature = bad.rsplit('.').next().unwrap();
    assert!(!capture.text().contains(signature), "{}", capture.text());
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains("tidings_refusals_total{status=\"401\",reason=\"invalid_token\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_line_has_method_path_status_duration_bytes_and_client() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::start().await;
    let id = hub.publish(&[("topic", "/a"), ("data", "x")]).await;
    let line = capture
        .line_with(&["response", "method=POST", "status=200"])
        .await;
    assert!(line.contains(&format!("path={HUB_PATH} ")), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
    assert!(line.contains(&format!("bytes={}", id.len())), "{line}");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains("version=HTTP/1.1"), "{line}");
    // An unknown path is a refusal too, with its status's reason.
    let response = hub
        .client
        .get(format!("{}/nowhere", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    capture
        .line_with(&[
            "refused",
            "path=/nowhere",
            "status=404",
            "reason=\"Not Found\"",
        ])
        .await;
}

#[tokio::test]
async fn subscription_lines_say_what_was_sent_and_why_it_ended() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::start().await;
    let mut stream = hub.subscribe("topic=/a&topic=/b").await;
    let opened = capture.line_with(&["subscription opened"]).await;
    assert!(opened.contains("topics=\"/a\",\"/b\""), "{opened}");
    assert!(
        opened.contains("path=/.well-known/mercure?topic=/a&topic=/b"),
        "{opened}"
    );
    // The stream's request line comes at its head.
    capture
        .line_with(&["response", "status=200", "stream=true", "method=GET"])
        .await;
    hub.publish(&[("topic", "/a"), ("data", "one")]).await;
    hub.publish(&[("topic", "/b"), ("data", "two")]).await;
    assert_eq!(&*stream.expect().await.data, "one");
    assert_eq!(&*stream.expect().await.data, "two");
    hub.hub.shutdown();
    assert!(stream.next().await.is_none());
    let closed = capture.line_with(&["subscription closed"]).await;
    assert!(closed.contains("events=2"), "{closed}");
    assert!(closed.contains("reason=\"hub shutting down\""), "{closed}");
    assert!(closed.contains("duration_ms="), "{closed}");
    assert!(closed.contains("client=127.0.0.1"), "{closed}");
    let subscriber = opened
        .split("subscriber=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    assert!(
        closed.contains(&format!("subscriber={subscriber}")),
        "{closed}"
    );
}

#[tokio::test]
async fn a_subscriber_that_goes_away_is_logged_as_gone() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::start().await;
    let stream = hub.subscribe("topic=/gone").await;
    capture.line_with(&["subscription opened"]).await;
    drop(stream);
    let closed = capture.line_with(&["subscription closed"]).await;
    assert!(closed.contains("reason=\"client went away\""), "{closed}");
    assert!(closed.contains("events=0"), "{closed}");
}

#[tokio::test]
async fn an_expired_token_ends_the_stream_with_that_reason() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::with(|b| b.heartbeat(Some(Duration::from_millis(100)))).await;
    let short = crate::support::token_with(&[], &["*"], None, Some(Duration::from_secs(1)));
    let mut stream = hub.subscribe_with("topic=/t", Some(&short), None).await;
    assert!(
        stream.next().await.is_none(),
        "the stream outlived its token"
    );
    let closed = capture.line_with(&["subscription closed"]).await;
    assert!(closed.contains("reason=\"token expired\""), "{closed}");
}

#[tokio::test]
async fn json_lines_parse_and_carry_the_request_span() {
    let (capture, _guard) = capture_json();
    let hub = TestHub::start().await;
    let response = hub
        .client
        .get(format!("{}?topic=/a", hub.url()))
        .bearer_auth(foreign_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let line = capture.line_with(&["\"refused\""]).await;
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(value["level"], "INFO");
    assert_eq!(value["status"], 401);
    assert_eq!(value["code"], "invalid_token");
    assert!(
        value["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad signature")
    );
    assert_eq!(value["span"]["name"], "request");
    assert_eq!(value["span"]["method"], "GET");
    assert_eq!(value["span"]["client"], "127.0.0.1");
    // The close line, written outside the request (when the body is dropped), still
    // carries the request's span.
    let stream = hub.subscribe("topic=/j").await;
    drop(stream);
    let line = capture.line_with(&["\"subscription closed\""]).await;
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(value["reason"], "client went away");
    assert_eq!(value["events"], 0);
    assert!(value["duration_ms"].is_number(), "{line}");
    assert_eq!(value["span"]["client"], "127.0.0.1");
    assert_eq!(value["span"]["path"], "/.well-known/mercure?topic=/j");
    for line in capture.text().lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
    }
}

#[tokio::test]
async fn the_metrics_of_observability_are_served() {
    let hub = TestHub::start().await;
    let mut stream = hub.subscribe("topic=/m").await;
    hub.publish(&[("topic", "/m"), ("data", "x")]).await;
    stream.expect().await;
    let refused = hub
        .client
        .get(format!("{}?topic=/m", hub.url()))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // An h2c client beside the HTTP/1.1 ones.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(format!("{}/healthz", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let metrics = hub.metrics().await;
    for name in [
        "tidings_build_info{version=\"",
        "tidings_http_connections{version=\"HTTP/2\"} 1",
        "tidings_refusals_total{status=\"401\",reason=\"invalid_token\"} 1",
        "# TYPE tidings_publish_duration_seconds histogram",
        "tidings_publish_duration_seconds_bucket{le=\"0.0001\"}",
        "tidings_publish_duration_seconds_count 1",
        "tidings_log_commit_duration_seconds_count 1",
        "tidings_delivery_lag_seconds_count 1",
        "tidings_delivery_lag_seconds_bucket{le=\"+Inf\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} not in:\n{metrics}");
    }
    assert!(
        hub.metric("tidings_http_connections{version=\"HTTP/1.1\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn metrics_on_a_private_listener_are_not_public() {
    let hub = Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(crate::support::KEY))
        .public_metrics(false)
        .build()
        .await
        .unwrap();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_base = format!("http://{}", ops.local_addr().unwrap());
    let ops_task = tokio::spawn(hub.clone().serve_ops(ops, std::future::pending()));
    let public = TestHub::serve(hub).await;
    let client = &public.client;
    let get = |url: String| async move { client.get(url).send().await.unwrap() };
    assert_eq!(get(format!("{}/metrics", public.base)).await.status(), 404);
    assert_eq!(get(format!("{}/healthz", public.base)).await.status(), 200);
    assert_eq!(get(format!("{}/readyz", public.base)).await.status(), 200);
    let response = get(format!("{ops_base}/metrics")).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("tidings_build_info"), "{text}");
    assert!(
        text.contains("tidings_refusals_total{status=\"404\",reason=\"other\"} 1"),
        "{text}"
    );
    assert_eq!(get(format!("{ops_base}/healthz")).await.status(), 200);
    assert_eq!(get(format!("{ops_base}/readyz")).await.status(), 200);
    // The protocol is not on the private listener.
    assert_eq!(
        get(format!("{ops_base}{HUB_PATH}?topic=x")).await.status(),
        404
    );
    // It stops with the hub.
    public.hub.shutdown();
    tokio::time::timeout(PATIENCE, ops_task)
        .await
        .expect("the ops server stopped")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_subscriber_too_slow_for_its_queue_is_logged_as_such() {
    let (capture, _guard) = capture_text();
    let hub = TestHub::with(|b| b.queue_capacity(8).subscriptions(false)).await;
    // Never read: the socket buffers fill, then the queue.
    let stalled = hub.subscribe("topic=/firehose").await;
    let data = "x".repeat(64 * 1024);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.hub.connections() == 1 {
        assert!(tokio::time::Instant::now() < deadline, "never disconnected");
        hub.publish(&[("topic", "/firehose"), ("data", &data)])
            .await;
    }
    // The stream ends once it has written what was queued: read it to its end.
    let mut stalled = crate::support::Stream::new(stalled.response);
    while tokio::time::timeout(PATIENCE, stalled.next_or_end())
        .await
        .unwrap()
        .is_some()
    {}
    let closed = capture.line_with(&["subscription closed"]).await;
    assert!(
        closed.contains("reason=\"too slow: its queue of updates was full\""),
        "{closed}"
    );
}

#[tokio::test]
async fn refusals_are_counted_when_an_app_mounts_the_routes() {
    let hub = Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(crate::support::KEY))
        .anonymous(false)
        .build()
        .await
        .unwrap();
    let app = axum::Router::new()
        .nest("/events", hub.router())
        .merge(hub.ops_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{base}/events{HUB_PATH}?topic=/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tidings_refusals_total{status=\"401\",reason=\"missing_token\"} 1"),
        "{metrics}"
    );
    server.abort();
}
