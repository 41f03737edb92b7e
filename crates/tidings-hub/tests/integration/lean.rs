//! The lean HTTP/1.1 path of event streams, byte for byte on raw sockets: what it parses
//! itself (pipelined requests, `Connection: close`, slow and oversized heads) and what
//! it leaves to hyper (HTTP/1.0, `HEAD`, `OPTIONS`, other paths, h2c).

use std::time::Duration;

use tidings_hub::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::server::{
    HEALTHZ, SLACK, connect, eventually, metric, publish, read_to_close, start, unpooled,
};
use crate::support::PATIENCE;

const SUBSCRIBE: &[u8] = b"GET /.well-known/mercure?topic=lean HTTP/1.1\r\nhost: hub\r\n\r\n";

/// Reads until the bytes received hold `needle` `times` times; returns them all.
async fn read_until(stream: &mut TcpStream, needle: &str, times: usize) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&all).matches(needle).count() < times {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{needle:?} x{times} not received; got {:?}",
            String::from_utf8_lossy(&all)
        )
    });
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_is_chunked_event_stream_and_ends_when_the_peer_leaves() {
    let (t, addr, _server) = start(ServerLimits::default(), |b| b.subscriptions(false)).await;
    let mut stream = connect(addr, None, false).await;
    stream.write_all(SUBSCRIBE).await.unwrap();
    let head = read_until(&mut stream, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for field in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-cache\r\n",
        "x-accel-buffering: no\r\n",
        "transfer-encoding: chunked\r\n",
        "link: </.well-known/mercure>; rel=\"mercure\"\r\n",
        "date: ",
    ] {
        assert!(head.contains(field), "{field:?} missing: {head}");
    }
    assert!(!head.contains("content-length"), "{head}");
    eventually("subscribed", PATIENCE, || t.hub.connections() == 1).await;

    let id = publish(&t, &unpooled(), "lean", "hello").await;
    let event = format!("id: {id}\ndata: hello\n\n");
    let chunk = read_until(&mut stream, "\r\n", 2).await;
    assert_eq!(
        chunk,
        format!("{:X}\r\n{event}\r\n", event.len()),
        "one chunk, one event"
    );

    // The peer leaving is noticed without a write: the subscriber is gone.
    drop(stream);
    eventually("the subscriber unregistered", PATIENCE, || {
        t.hub.connections() == 0
    })
    .await;
    eventually("the connection closed", PATIENCE, || {
        metric(&t.hub, "tidings_tcp_connections") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_after_a_lean_head_are_served_in_order_then_by_hyper() {
    let (_t, addr, _server) = start(ServerLimits::default(), |b| b.anonymous(false)).await;
    let mut stream = connect(addr, None, false).await;
    // Two refused subscriptions (lean) and a health check (hyper's), in one write.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"GET /.well-known/mercure HTTP/1.1\r\nhost: hub\r\n\r\n");
    bytes.extend_from_slice(b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nhost: hub\r\n\r\n");
    bytes.extend_from_slice(HEALTHZ);
    stream.write_all(&bytes).await.unwrap();
    let all = read_until(&mut stream, "HTTP/1.1 ", 3).await;
    let all = if all.ends_with("ok\n") {
        all
    } else {
        all + &read_until(&mut stream, "ok\n", 1).await
    };
    let answers: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{all}");
    assert!(answers[0].starts_with("400 Bad Request\r\n"), "{all}");
    assert!(
        answers[0]
            .ends_with("missing topic: subscribe with at least one `topic` query parameter\n"),
        "{all}"
    );
    assert!(answers[0].contains("content-length: "), "{all}");
    assert!(answers[1].starts_with("401 Unauthorized\r\n"), "{all}");
    assert!(answers[1].contains("www-authenticate: Bearer"), "{all}");
    assert!(answers[2].starts_with("200 OK\r\n"), "{all}");
    assert!(answers[2].ends_with("\r\n\r\nok\n"), "{all}");
    // The connection is still usable.
    stream.write_all(HEALTHZ).await.unwrap();
    let again = read_until(&mut stream, "ok\n", 1).await;
    assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_honoured_and_said() {
    let (_t, addr, _server) = start(ServerLimits::default(), |b| b).await;
    let mut stream = connect(addr, None, false).await;
    stream
        .write_all(b"GET /.well-known/mercure HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("`topic` query parameter\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_ends_with_the_last_chunk_at_shutdown() {
    let (t, addr, server) = start(ServerLimits::default(), |b| b.subscriptions(false)).await;
    let mut stream = connect(addr, None, false).await;
    stream.write_all(SUBSCRIBE).await.unwrap();
    read_until(&mut stream, "\r\n\r\n", 1).await;
    eventually("subscribed", PATIENCE, || t.hub.connections() == 1).await;
    t.hub.shutdown();
    let rest = read_to_close(&mut stream).await;
    assert_eq!(rest, "0\r\n\r\n");
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_head_and_options_are_hyper_s() {
    let (_t, addr, _server) = start(ServerLimits::default(), |b| {
        b.subscriptions(false)
            .cors_origins(vec!["http://app.test".to_owned()])
    })
    .await;

    // HTTP/1.0: hyper answers, without chunks, and closes when the stream ends.
    let mut old = connect(addr, None, false).await;
    old.write_all(b"GET /.well-known/mercure?topic=lean HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut old, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.contains("chunked"), "{head}");

    let mut head_request = connect(addr, None, false).await;
    head_request
        .write_all(b"HEAD /.well-known/mercure?topic=lean HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut head_request).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer}");

    let mut preflight = connect(addr, None, false).await;
    preflight
        .write_all(
            b"OPTIONS /.well-known/mercure HTTP/1.1\r\nhost: hub\r\norigin: http://app.test\r\n\
              access-control-request-method: GET\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut preflight).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: http://app.test\r\n"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_heads_go_to_hyper_and_oversized_ones_get_431() {
    let (t, addr, _server) = start(ServerLimits::default(), |b| b.subscriptions(false)).await;
    // Longer than the lean path reads: hyper serves the stream.
    let mut long = connect(addr, None, false).await;
    let cookie = "c".repeat(20 * 1024);
    long.write_all(
        format!(
            "GET /.well-known/mercure?topic=lean HTTP/1.1\r\nhost: hub\r\ncookie: a={cookie}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_until(&mut long, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    eventually("subscribed through hyper", PATIENCE, || {
        t.hub.connections() == 1
    })
    .await;

    // Longer than hyper takes: 431, and the connection is closed.
    let huge = connect(addr, None, false).await;
    let (mut reader, mut writer) = huge.into_split();
    let write = tokio::spawn(async move {
        let cookie = "c".repeat(1024 * 1024);
        let head = format!(
            "GET /.well-known/mercure?topic=lean HTTP/1.1\r\nhost: hub\r\ncookie: a={cookie}\r\n\r\n"
        );
        // Fails once the hub has closed: it stops reading at its limit.
        let _ = writer.write_all(head.as_bytes()).await;
    });
    let answer = read_to_close(&mut reader).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    write.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscribe_head_is_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_secs(2);
    let mut limits = ServerLimits::default();
    limits.header_read_timeout = header_timeout;
    let (t, addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let started = Instant::now();
    let stream = connect(addr, None, false).await;
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        for byte in SUBSCRIBE {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        writer
    });
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(header_timeout + SLACK, reader.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the slow head was answered");
    assert!(started.elapsed() >= header_timeout);
    eventually("header timeout counted", PATIENCE, || {
        metric(&t.hub, "tidings_timeouts_total{kind=\"header\"}") == 1.0
    })
    .await;
    assert_eq!(t.hub.connections(), 0);
    drip.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_streams_count_against_the_requests_per_address() {
    let mut limits = ServerLimits::default();
    limits.max_requests_per_ip = 1;
    let (t, addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let mut first = connect(addr, None, false).await;
    first.write_all(SUBSCRIBE).await.unwrap();
    let head = read_until(&mut first, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut second = connect(addr, None, false).await;
    second.write_all(SUBSCRIBE).await.unwrap();
    let refused = read_until(&mut second, "per client address\n", 1).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    drop(first);
    eventually("the first stream is gone", PATIENCE, || {
        t.hub.connections() == 0
    })
    .await;
    // Its place is free again, on the same connection as the refusal.
    second.write_all(SUBSCRIBE).await.unwrap();
    let head = read_until(&mut second, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lean_path_off_hyper_serves_the_streams() {
    let mut limits = ServerLimits::default();
    limits.lean_event_streams = false;
    let (t, addr, _server) = start(limits, |b| b.subscriptions(false)).await;
    let mut stream = connect(addr, None, false).await;
    stream.write_all(SUBSCRIBE).await.unwrap();
    let head = read_until(&mut stream, "\r\n\r\n", 1).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    eventually("subscribed", PATIENCE, || t.hub.connections() == 1).await;
    let id = publish(&t, &unpooled(), "lean", "via hyper").await;
    let chunk = read_until(&mut stream, "via hyper\n\n", 1).await;
    assert!(chunk.contains(&format!("id: {id}\n")), "{chunk}");
}
