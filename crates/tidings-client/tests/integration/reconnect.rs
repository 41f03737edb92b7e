//! Losing the connection and getting it back: end of body, dropped socket, `retry:`,
//! `Last-Event-ID`, the idle timeout, the retry budget, and `close()` at any time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tidings_client::{Error, EventSource, ReadyState};
use tokio::sync::Notify;

use crate::server::{
    expect_end, expect_error, expect_message, expect_open, fast, serve, sse, sse_then_drop,
    sse_then_hang,
};

#[tokio::test]
async fn reconnects_after_the_end_of_the_body_with_last_event_id() {
    let mut server = serve(|n, _| match n {
        0 => sse("id: 7\ndata: a\n\n"),
        _ => sse_then_hang("data: b\n\n"),
    })
    .await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.2, "7");
    let err = expect_error(&mut source).await;
    assert!(matches!(err, Error::EndOfStream) && !err.is_terminal());
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    expect_open(&mut source).await;
    // Events of the new connection carry the kept id.
    assert_eq!(
        expect_message(&mut source).await,
        ("message".into(), "b".into(), "7".into())
    );
    assert_eq!(server.request().await.header("last-event-id"), None);
    assert_eq!(server.request().await.header("last-event-id"), Some("7"));
}

#[tokio::test]
async fn reconnects_after_a_dropped_connection_with_last_event_id() {
    let drop = Arc::new(Notify::new());
    let dropper = Arc::clone(&drop);
    let mut server = serve(move |n, _| match n {
        0 => sse_then_drop("id: a-1\ndata: before\n\n", Arc::clone(&dropper)),
        _ => sse_then_hang("data: after\n\n"),
    })
    .await;
    let mut source = fast(&server.url("/"))
        .last_event_id("start")
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "before");
    drop.notify_one();
    let err = expect_error(&mut source).await;
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert!(!err.is_terminal());
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "after");
    assert_eq!(
        server.request().await.header("last-event-id"),
        Some("start")
    );
    assert_eq!(server.request().await.header("last-event-id"), Some("a-1"));
}

#[tokio::test]
async fn an_empty_id_resets_the_last_event_id() {
    let mut server = serve(|n, _| match n {
        0 => sse("id: 5\ndata: a\n\nid\ndata: b\n\n"),
        _ => sse_then_hang(""),
    })
    .await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.2, "5");
    assert_eq!(expect_message(&mut source).await.2, "");
    expect_error(&mut source).await;
    expect_open(&mut source).await;
    assert_eq!(server.request().await.header("last-event-id"), None);
    assert_eq!(server.request().await.header("last-event-id"), None);
}

#[tokio::test]
async fn a_connection_refused_is_reported_and_retried() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let mut source = fast(&url).max_retries(2).build().unwrap();
    for _ in 0..2 {
        let err = expect_error(&mut source).await;
        assert!(
            matches!(&err, Error::Connect { source } if source.is_connect()),
            "{err:?}"
        );
        assert!(!err.is_terminal());
    }
    let err = expect_error(&mut source).await;
    let Error::RetriesExhausted { retries: 2, last } = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(**last, Error::Connect { .. }));
    assert!(err.is_terminal());
    expect_end(&mut source).await;
    assert_eq!(source.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn max_retries_counts_failures_since_the_last_open() {
    // Opens, then the body ends: with no retries allowed, that end gives up at once,
    // without a second request.
    let server = serve(|_, _| sse("data: only\n\n")).await;
    let mut source = fast(&server.url("/")).max_retries(0).build().unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    let err = expect_error(&mut source).await;
    assert!(
        matches!(&err, Error::RetriesExhausted { retries: 0, last } if matches!(**last, Error::EndOfStream)),
        "{err:?}"
    );
    expect_end(&mut source).await;
    assert_eq!(server.hits(), 1);

    let server = serve(|_, _| sse("data: again\n\n")).await;
    let mut source = fast(&server.url("/")).max_retries(1).build().unwrap();
    // Each connection opens, so the budget is whole again every time.
    for _ in 0..4 {
        expect_open(&mut source).await;
        expect_message(&mut source).await;
        assert!(matches!(
            expect_error(&mut source).await,
            Error::EndOfStream
        ));
    }
}

/// On the paused clock: the wait is measured exactly, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn retry_sets_the_reconnection_time() {
    // The builder's reconnection time is an hour; the server's `retry: 50` replaces it.
    let server = serve(|n, _| match n {
        0 => sse("retry: 50\ndata: x\n\n"),
        _ => sse_then_hang(""),
    })
    .await;
    let mut source = EventSource::builder(&server.url("/"))
        .reconnection_time(Duration::from_secs(3600))
        .min_retry(Duration::ZERO)
        .backoff(tidings_client::Backoff::none())
        .build()
        .unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    expect_error(&mut source).await;
    let lost = tokio::time::Instant::now();
    expect_open(&mut source).await;
    let waited = lost.elapsed();
    let ms = Duration::from_millis;
    assert!(
        (ms(50)..ms(52)).contains(&waited),
        "reconnected after {waited:?}"
    );
}

#[tokio::test]
async fn invalid_retry_values_are_ignored() {
    let server = serve(|n, _| match n {
        0 => sse("retry: +5\nretry: 5 \nretry: -1\nretry: 1e3\ndata: x\n\n"),
        _ => sse_then_hang(""),
    })
    .await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    expect_error(&mut source).await;
    // Still the builder's 10 ms: a valid-looking prefix was not taken.
    expect_open(&mut source).await;
    assert!(
        format!("{source:?}").contains("reconnection_time: 10ms"),
        "{source:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_times_out_and_reconnects() {
    let mut server = serve(|n, _| match n {
        0 => sse_then_hang("id: 3\ndata: then silence\n\n"),
        _ => sse_then_hang("data: back\n\n"),
    })
    .await;
    let mut source = fast(&server.url("/"))
        .idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    expect_open(&mut source).await;
    let opened = Instant::now();
    expect_message(&mut source).await;
    let err = expect_error(&mut source).await;
    assert!(
        matches!(err, Error::IdleTimeout { timeout } if timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(opened.elapsed() >= Duration::from_millis(100));
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "back");
    server.request().await;
    assert_eq!(server.request().await.header("last-event-id"), Some("3"));
}

/// On the paused clock, so that a loaded machine cannot delay the keep-alives past the
/// timeout: time only moves when every task is idle, to the next timer.
#[tokio::test(start_paused = true)]
async fn comments_keep_an_idle_connection_alive() {
    // Keep-alive comments every 20 ms, idle timeout 150 ms: no timeout for 1 s.
    let server = serve(|_, _| {
        let beats = futures_util::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b": beat\n")),
                n + 1,
            ))
        });
        axum::http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(beats))
            .unwrap()
    })
    .await;
    let mut source = EventSource::builder(&server.url("/"))
        .idle_timeout(Duration::from_millis(150))
        .comments(true)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut beats = 0;
    loop {
        match tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut source)).await {
            Err(_) => break,
            Ok(Some(Ok(tidings_client::Event::Comment(text)))) if text == "beat" => beats += 1,
            Ok(other) => panic!("after {beats} beats: {other:?}"),
        }
    }
    // One beat at once, then one every 20 ms: the connection was never idle 150 ms.
    assert!((45..=52).contains(&beats), "{beats} beats");
    assert_eq!(source.ready_state(), ReadyState::Open);
    assert_eq!(server.hits(), 1);
}

/// A server that answers every request with `retry: 0` and an event, then closes.
async fn retry_zero_server() -> crate::server::TestServer {
    serve(|_, _| sse("retry: 0\ndata: x\n\n")).await
}

/// Reads `source` for `run` of (paused) time; returns when each connection opened.
async fn opens_during(source: &mut EventSource, run: Duration) -> Vec<tokio::time::Instant> {
    let until = tokio::time::Instant::now() + run;
    let mut opens = Vec::new();
    loop {
        match tokio::time::timeout_at(until, futures_util::StreamExt::next(source)).await {
            Err(_) => return opens,
            Ok(Some(Ok(tidings_client::Event::Open { .. }))) => {
                opens.push(tokio::time::Instant::now());
            }
            Ok(Some(Ok(_) | Err(Error::EndOfStream))) => {}
            Ok(other) => panic!("{other:?}"),
        }
    }
}

/// A server that says `retry: 0` and closes cannot make the default client reconnect
/// faster than the 500 ms floor, and the backoff keeps growing because the connections
/// are short. The paused clock makes the count exact under any load.
#[tokio::test(start_paused = true)]
async fn retry_zero_and_close_is_bounded_by_the_floor_and_backed_off() {
    let server = retry_zero_server().await;
    let mut source = EventSource::builder(&server.url("/"))
        .jitter_seed(3)
        .build()
        .unwrap();
    let opens = opens_during(&mut source, Duration::from_secs(30)).await;
    let gaps: Vec<Duration> = opens.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .all(|gap| *gap >= tidings_client::DEFAULT_MIN_RETRY),
        "{gaps:?}"
    );
    // Not one reconnection per 500 ms (60), nor hundreds a second as when every open
    // reset the backoff, but far fewer: the waits grow towards the 30 s cap.
    assert!(opens.len() <= 12, "{} connections: {gaps:?}", opens.len());
    assert!(
        gaps.iter()
            .rev()
            .take(2)
            .all(|gap| *gap > Duration::from_secs(2)),
        "{gaps:?}"
    );
    assert_eq!(server.hits(), opens.len());
}

/// Without backoff, `retry: 0` waits exactly the floor: two connections a second.
#[tokio::test(start_paused = true)]
async fn retry_zero_without_backoff_reconnects_at_the_floor() {
    let server = retry_zero_server().await;
    let mut source = EventSource::builder(&server.url("/"))
        .backoff(tidings_client::Backoff::none())
        .min_retry(Duration::from_millis(250))
        .build()
        .unwrap();
    let opens = opens_during(&mut source, Duration::from_millis(2_100)).await;
    let gaps: Vec<Duration> = opens.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert!(
        gaps.iter().all(|gap| (ms(250)..ms(252)).contains(gap)),
        "{gaps:?}"
    );
    assert_eq!(opens.len(), 9, "{gaps:?}");
}

#[tokio::test]
async fn a_response_that_never_comes_times_out() {
    // Accepts the connection, reads the request, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut source = fast(&url)
        .idle_timeout(Duration::from_millis(50))
        .max_retries(1)
        .build()
        .unwrap();
    assert!(matches!(
        expect_error(&mut source).await,
        Error::IdleTimeout { .. }
    ));
    let err = expect_error(&mut source).await;
    assert!(
        matches!(&err, Error::RetriesExhausted { retries: 1, last } if matches!(**last, Error::IdleTimeout { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn close_during_a_reconnection_wait_ends_the_stream_at_once() {
    let server = serve(|_, _| sse("data: x\n\n")).await;
    let mut source = EventSource::builder(&server.url("/"))
        .reconnection_time(Duration::from_secs(3600))
        .build()
        .unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    expect_error(&mut source).await;
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    // Close from another task while this one awaits the (hour-long) wait.
    let handle = source.close_handle();
    let closer = tokio::spawn(async move {
        tokio::task::yield_now().await;
        handle.close();
    });
    expect_end(&mut source).await;
    closer.await.unwrap();
    assert_eq!(source.ready_state(), ReadyState::Closed);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn close_while_open_drops_the_connection() {
    let server = serve(|_, _| sse_then_hang("data: x\n\n")).await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut source).await;
    let handle = source.close_handle();
    assert_eq!(handle.ready_state(), ReadyState::Open);
    handle.close();
    assert!(handle.is_closed());
    assert_eq!(source.ready_state(), ReadyState::Closed);
    // Even an event already received is not delivered after close.
    expect_end(&mut source).await;
    expect_end(&mut source).await;
}

#[tokio::test]
async fn close_from_the_owner_is_immediate() {
    let server = serve(|_, _| sse_then_hang("data: x\n\n")).await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut source).await;
    source.close();
    assert_eq!(source.ready_state(), ReadyState::Closed);
    expect_end(&mut source).await;
}

/// With the clock paused, tokio jumps straight to the next timer whenever the runtime
/// idles, so the waits can be measured exactly without spending them.
#[tokio::test(start_paused = true)]
async fn reconnection_waits_are_exact_under_a_controlled_clock() {
    let server = serve(|n, _| match n {
        0 => sse("data: a\n\n"),
        1 => sse("retry: 1234\ndata: b\n\n"),
        _ => sse_then_hang("data: c\n\n"),
    })
    .await;
    let mut source = EventSource::builder(&server.url("/"))
        .backoff(tidings_client::Backoff::none())
        .build()
        .unwrap();
    expect_open(&mut source).await;
    let mut waits = Vec::new();
    let mut announced_waits = Vec::new();
    for _ in 0..2 {
        expect_message(&mut source).await;
        assert!(matches!(
            expect_error(&mut source).await,
            Error::EndOfStream
        ));
        let lost = tokio::time::Instant::now();
        let announced = source.retry_in().expect("waiting to reconnect");
        expect_open(&mut source).await;
        assert_eq!(source.retry_in(), None);
        waits.push(lost.elapsed());
        announced_waits.push(announced);
    }
    assert_eq!(
        announced_waits,
        [Duration::from_secs(3), Duration::from_millis(1234)]
    );
    // First the default reconnection time, 3 s; then the server's `retry: 1234`. The
    // timer has a granularity of 1 ms.
    let ms = Duration::from_millis;
    assert!((ms(3000)..ms(3002)).contains(&waits[0]), "{waits:?}");
    assert!((ms(1234)..ms(1236)).contains(&waits[1]), "{waits:?}");
}
