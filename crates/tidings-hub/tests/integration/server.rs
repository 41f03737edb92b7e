//! The server loop under hostile peers: slow heads, sockets that never drain, too many
//! connections, proxies, and shutdown with a peer that never reads. Limits are set small
//! here; the assertions wait generously, since the machine may be loaded.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tidings_hub::{Hub, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{KEY, PATIENCE, TestHub, token};

/// Slack on top of a deadline before a test calls it missed.
pub(crate) const SLACK: Duration = Duration::from_secs(20);

/// A hub served with `limits`, and the handle of its `serve`.
pub(crate) async fn start(
    limits: ServerLimits,
    configure: impl FnOnce(tidings_hub::HubBuilder) -> tidings_hub::HubBuilder,
) -> (TestHub, SocketAddr, JoinHandle<std::io::Result<()>>) {
    let builder = Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(KEY))
        .server_limits(limits);
    let hub = configure(builder).build().await.expect("build the hub");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(hub.clone().serve(listener, std::future::pending()));
    let t = TestHub {
        hub,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        publisher: token(&["*"], &[]),
    };
    (t, addr, server)
}

/// The value of an unlabelled metric, or of one labelled series (`name{label="v"}`).
pub(crate) fn metric(hub: &Hub, series: &str) -> f64 {
    hub.metrics()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Waits until `check` holds, for at most `within`.
pub(crate) async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP connection to `addr` from `from` (any loopback address), with a small receive
/// buffer when asked (a peer that does not read then fills up sooner).
pub(crate) async fn connect(
    addr: SocketAddr,
    from: Option<IpAddr>,
    small_buffer: bool,
) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    if small_buffer {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// Everything the peer sends until it closes.
pub(crate) async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    String::from_utf8_lossy(&all).into_owned()
}

pub(crate) const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n";

/// Sends a request for `/healthz` and reads one response head and body (`ok\n`).
async fn healthz(stream: &mut TcpStream) -> String {
    stream.write_all(HEALTHZ).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while !all.ends_with(b"ok\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&all).into_owned()
}

/// A publisher that opens a connection per request, so that the hub's connection count
/// holds only the test's own connections once it is done.
pub(crate) fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub(crate) async fn publish(
    t: &TestHub,
    client: &reqwest::Client,
    topic: &str,
    data: &str,
) -> String {
    let body = serde_urlencoded::to_string([("topic", topic), ("data", data)]).unwrap();
    let response = client
        .post(t.url())
        .bearer_auth(&t.publisher)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_closed_after_the_header_timeout_and_do_not_stop_the_hub() {
    const SLOW: usize = 50;
    let header_timeout = Duration::from_secs(2);
    let mut limits = ServerLimits::default();
    limits.header_read_timeout = header_timeout;
    let (t, addr, _server) = start(limits, |b| b.subscriptions(false)).await;

    let mut slow = Vec::new();
    for _ in 0..SLOW {
        // Before the connect: the hub's deadline runs from its accept, which is later.
        let started = Instant::now();
        let stream = connect(addr, None, false).await;
        slow.push(tokio::spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let drip = async {
                for byte in HEALTHZ {
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                std::future::pending::<()>().await;
            };
            let closed = async {
                let mut buf = [0u8; 256];
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => Ok(started.elapsed()),
                    Ok(_) => Err("the slow head was answered"),
                }
            };
            tokio::select! {
                () = drip => unreachable!(),
                closed = closed => closed,
            }
        }));
    }

    // The hub serves others meanwhile.
    let mut stream = t.subscribe("topic=busy").await;
    let id = t
        .publish(&[("topic", "busy"), ("data", "still here")])
        .await;
    assert_eq!(stream.expect().await.id, id.as_str());

    for task in slow {
        let elapsed = tokio::time::timeout(header_timeout + SLACK, task)
            .await
            .expect("a slow head was not closed in time")
            .unwrap()
            .unwrap();
        assert!(
            elapsed >= header_timeout,
            "closed before the header timeout: {elapsed:?}"
        );
    }
    eventually("header timeouts counted", PATIENCE, || {
        metric(&t.hub, "tidings_timeouts_total{kind=\"header\"}") == SLOW as f64
    })
    .await;
    // The live stream is untouched.
    let id = t.publish(&[("topic", "busy"), ("data", "after")]).await;
    assert_eq!(stream.expect().await.id, id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_wait_the_idle_timeout_not_the_header_timeout() {
    let mut limits = ServerLimits::default();
    limits.header_read_timeout = Duration::from_secs(1);
    limits.keep_alive_idle_timeout = Duration::from_secs(3);
    let (t, addr, _server) = start(limits, |b| b).await;
    let mut stream = connect(addr, None, false).await;
    // Before the request: the hub's idle wait starts once its response is done, later.
    let asked = Instant::now();
    let answer = healthz(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let rest = read_to_close(&mut stream).await;
    let open_for = asked.elapsed();
    assert!(rest.is_empty(), "{rest}");
    assert!(
        open_for >= Duration::from_secs(3),
        "closed {open_for:?} after the request: the header timeout cut the keep-alive wait"
    );
    assert_eq!(metric(&t.hub, "tidings_timeouts_total{kind=\"idle\"}"), 1.0);
    assert_eq!(
        metric(&t.hub, "tidings_timeouts_total{kind=\"header\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_closed_after_the_write_timeout() {
    let write_timeout = Duration::from_secs(1);
    let mut limits = ServerLimits::default();
    limits.write_timeout = write_timeout;
    // A long queue: the write deadline, not the fan-out's queue limit, must cut it off.
    let (t, addr, _server) = start(limits, |b| {
        b.subscriptions(false)
            .queue_capacity(4096)
            .queue_bytes(1 << 30)
    })
    .await;
    let mut stalled = connect(addr, None, true).await;
    stalled
        .write_all(b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: hub\r\n\r\n")
        .await
        .unwrap();
    let mut healthy = t.subscribe("topic=big").await;
    eventually("both subscribed", PATIENCE, || t.hub.connections() == 2).await;

    let publisher = unpooled();
    let data = "x".repeat(256 * 1024);
    let started = Instant::now();
    while t.hub.connections() == 2 {
        // Bounded: the loopback buffers hold a few MiB, not a minute of this.
        assert!(started.elapsed() < Duration::from_secs(60), "never closed");
        let id = publish(&t, &publisher, "big", &data).await;
        assert_eq!(
            healthy.expect().await.id,
            id.as_str(),
            "the other one keeps up"
        );
    }
    assert_eq!(
        metric(&t.hub, "tidings_timeouts_total{kind=\"write\"}"),
        1.0
    );
    assert_eq!(
        metric(&t.hub, "tidings_slow_subscriber_disconnects_total"),
        0.0
    );
    // The socket is gone too, not only the subscription: only the healthy stream is left.
    eventually("TCP connections back to 1", PATIENCE, || {
        metric(&t.hub, "tidings_tcp_connections") == 1.0
    })
    .await;
    let id = publish(&t, &publisher, "big", "small").await;
    assert_eq!(healthy.expect().await.id, id.as_str());
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_get_503_with_the_reason() {
    let mut limits = ServerLimits::default();
    limits.max_connections = 3;
    limits.max_connections_per_ip = 2;
    limits.header_read_timeout = Duration::from_secs(60);
    let (t, addr, _server) = start(limits, |b| b).await;
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    let three: IpAddr = "127.0.0.3".parse().unwrap();
    let four: IpAddr = "127.0.0.4".parse().unwrap();

    let mut first = connect(addr, Some(two), false).await;
    let _second = connect(addr, Some(two), false).await;
    let mut refused = connect(addr, Some(two), false).await;
    refused.write_all(HEALTHZ).await.unwrap();
    let answer = read_to_close(&mut refused).await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            "\r\n\r\ntoo many connections from 127.0.0.2: at most 2 per client address\n"
        ),
        "{answer}"
    );

    // Another address still gets in, up to the total.
    let mut other = connect(addr, Some(three), false).await;
    let ok = healthz(&mut other).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let mut over = connect(addr, Some(four), false).await;
    let answer = read_to_close(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\ntoo many connections: at most 3\n"),
        "{answer}"
    );

    assert_eq!(metric(&t.hub, "tidings_tcp_connections"), 3.0);
    assert_eq!(
        metric(
            &t.hub,
            "tidings_connection_refusals_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &t.hub,
            "tidings_connection_refusals_total{reason=\"max_connections\"}"
        ),
        1.0
    );

    // A closed connection gives its place back.
    let ok = healthz(&mut first).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    drop(first);
    eventually("the place is given back", PATIENCE, || {
        metric(&t.hub, "tidings_tcp_connections") == 2.0
    })
    .await;
    let mut again = connect(addr, Some(two), false).await;
    let ok = healthz(&mut again).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_a_trusted_proxy_are_capped_per_forwarded_address() {
    let mut limits = ServerLimits::default();
    limits.max_requests_per_ip = 2;
    // The proxy's own connections are not capped per address.
    limits.max_connections_per_ip = 1;
    limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let (t, _addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let open = |forwarded: &'static str| {
        t.client
            .get(format!("{}?topic=a", t.url()))
            .header("x-forwarded-for", forwarded)
            .send()
    };

    let first = open("203.0.113.7").await.unwrap();
    assert_eq!(first.status(), 200);
    // The client is the rightmost address that is not a trusted proxy.
    let second = open("198.51.100.1, 203.0.113.7, 127.0.0.1").await.unwrap();
    assert_eq!(second.status(), 200);
    let refused = open("203.0.113.7").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.text().await.unwrap(),
        "too many requests in flight from 203.0.113.7: at most 2 per client address\n"
    );
    // Other clients of the same proxy are not held up, and the proxy's own connections
    // (three open now) are not capped per address.
    let other = open("203.0.113.8").await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        metric(
            &t.hub,
            "tidings_connection_refusals_total{reason=\"forwarded_per_ip\"}"
        ),
        1.0
    );

    // A stream holds its place until it ends.
    drop(first);
    eventually("the stream ended", PATIENCE, || t.hub.connections() == 2).await;
    let again = open("203.0.113.7").await.unwrap();
    assert_eq!(again.status(), 200);
    drop((second, other, again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_the_grace_period_with_a_subscriber_that_never_reads() {
    let grace = Duration::from_secs(2);
    let mut limits = ServerLimits::default();
    limits.shutdown_grace = grace;
    // Only the grace period may end the stalled connection.
    limits.write_timeout = Duration::ZERO;
    let (t, addr, server) = start(limits, |b| b.subscriptions(false).queue_capacity(4)).await;
    let mut stalled = connect(addr, None, true).await;
    stalled
        .write_all(b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: hub\r\n\r\n")
        .await
        .unwrap();
    eventually("subscribed", PATIENCE, || t.hub.connections() == 1).await;
    // Fill its socket until the hub stops writing to it and its queue overflows: the
    // subscription ends, yet the connection hangs on bytes that the peer never reads.
    let publisher = unpooled();
    let data = "x".repeat(256 * 1024);
    let started = Instant::now();
    while t.hub.connections() == 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "never stalled");
        publish(&t, &publisher, "big", &data).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(&t.hub, "tidings_tcp_connections"),
        1.0,
        "the stalled socket is open"
    );

    let stopping = Instant::now();
    t.hub.shutdown();
    tokio::time::timeout(grace + SLACK, server)
        .await
        .expect("serve did not return within the grace period")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(took < grace + SLACK, "{took:?}");
    // The grace period starts after the shutdown call, so no margin is needed.
    assert!(
        took >= grace,
        "returned after {took:?}: the stalled connection was not waited for"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_work_and_end_at_shutdown() {
    let (t, _addr, server) = start(ServerLimits::default(), |b| b.subscriptions(false)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(format!("{}?topic=h2", t.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let mut stream = crate::support::Stream::new(response);
    eventually("subscribed", PATIENCE, || t.hub.connections() == 1).await;
    let id = t.publish(&[("topic", "h2"), ("data", "over h2c")]).await;
    assert_eq!(stream.expect().await.id, id.as_str());
    t.hub.shutdown();
    assert!(stream.next().await.is_none(), "the stream ends at shutdown");
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

/// One TCP connection may carry only so many event streams over HTTP/2: the client is
/// told in SETTINGS and the streams past the limit wait for one to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_per_connection_are_capped() {
    let mut limits = ServerLimits::default();
    limits.h2_max_concurrent_streams = 3;
    let (t, _addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut tasks: Vec<_> = (0..5)
        .map(|n| {
            let request = h2.get(format!("{}?topic=h2-{n}", t.url()));
            Some(tokio::spawn(async move { request.send().await.unwrap() }))
        })
        .collect();
    eventually("three streams", PATIENCE, || t.hub.connections() == 3).await;
    // The other two wait on the client: no fourth stream reaches the hub.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.hub.connections(), 3);
    assert_eq!(metric(&t.hub, "tidings_tcp_connections"), 1.0);
    let finished = |tasks: &[Option<JoinHandle<reqwest::Response>>]| {
        tasks
            .iter()
            .flatten()
            .filter(|task| task.is_finished())
            .count()
    };
    eventually("three responses", PATIENCE, || finished(&tasks) == 3).await;
    // One stream ends: one that waited takes its place.
    let first = tasks
        .iter_mut()
        .find(|task| task.as_ref().is_some_and(|t| t.is_finished()))
        .and_then(Option::take)
        .unwrap();
    drop(first.await.unwrap());
    eventually("a waiting stream opened", PATIENCE, || {
        finished(&tasks) == 3
    })
    .await;
    eventually("three streams again", PATIENCE, || t.hub.connections() == 3).await;
    assert_eq!(metric(&t.hub, "tidings_tcp_connections"), 1.0);
}

/// HTTP/2 carries many requests on one socket: the cap per client address counts the
/// requests in flight, whatever connections they share, and refuses one stream, not
/// its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_from_one_address_are_capped_across_its_connections() {
    let mut limits = ServerLimits::default();
    limits.max_requests_per_ip = 3;
    let (t, _addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let h2 = || {
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap()
    };
    let (a, b) = (h2(), h2());
    let open = |client: &reqwest::Client| client.get(format!("{}?topic=h2", t.url())).send();
    let stream = |response: reqwest::Response| {
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        crate::support::Stream::new(response)
    };
    let mut first = stream(open(&a).await.unwrap());
    let mut second = stream(open(&a).await.unwrap());
    let third = stream(open(&b).await.unwrap());
    eventually("three streams", PATIENCE, || t.hub.connections() == 3).await;
    assert_eq!(metric(&t.hub, "tidings_tcp_connections"), 2.0);

    let refused = open(&a).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        refused.text().await.unwrap(),
        "too many requests in flight from 127.0.0.1: at most 3 per client address\n"
    );
    assert_eq!(
        metric(
            &t.hub,
            "tidings_connection_refusals_total{reason=\"max_requests_per_ip\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&t.hub, "tidings_tcp_connections"),
        2.0,
        "the connection stays open"
    );

    // A stream that ends gives its place back, and the refused stream's connection
    // still carries the others.
    drop(third);
    eventually("the third stream ended", PATIENCE, || {
        t.hub.connections() == 2
    })
    .await;
    let id = t.publish(&[("topic", "h2"), ("data", "in")]).await;
    assert_eq!(first.expect().await.id, id.as_str());
    assert_eq!(second.expect().await.id, id.as_str());
}

/// The entry of `X-Forwarded-For` that names the client must be an address: otherwise
/// the request is refused rather than charged to the proxy's own address, which all of
/// its clients share. What a client wrote left of that entry is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_forwarded_client_is_refused_not_charged_to_the_proxy() {
    use reqwest::header::HeaderValue;
    let mut limits = ServerLimits::default();
    limits.max_requests_per_ip = 1;
    limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let (t, _addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    // The proxy's own place (no X-Forwarded-For: the proxy is the client), held.
    let own = t.client.get(format!("{}?topic=a", t.url())).send();
    let own = own.await.unwrap();
    assert_eq!(own.status(), 200);
    let get = |forwarded: &'static [u8]| {
        t.client
            .get(format!("{}/healthz", t.base))
            .header(
                "x-forwarded-for",
                HeaderValue::from_bytes(forwarded).unwrap(),
            )
            .send()
    };

    let bad = get(b"203.0.113.7\xff").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.text().await.unwrap(),
        "invalid X-Forwarded-For from a trusted proxy: \"203.0.113.7\\xff\" is not an IP address\n"
    );
    let bad = get(b"198.51.100.1, unknown, 127.0.0.1").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.text().await.unwrap(),
        "invalid X-Forwarded-For from a trusted proxy: \"unknown\" is not an IP address\n"
    );
    assert_eq!(metric(&t.hub, "tidings_invalid_forwarded_for_total"), 2.0);

    let ok = get(b"\xff\xfe not read, 198.51.100.1").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok\n");
    assert_eq!(
        metric(
            &t.hub,
            "tidings_connection_refusals_total{reason=\"forwarded_per_ip\"}"
        ),
        0.0
    );
    drop(own);
}
