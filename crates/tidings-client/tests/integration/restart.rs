//! Reconnecting on request, and headers that change between connections: `restart()`
//! and `headers_with`, for a program that rotates its token.

use std::sync::{Arc, Mutex};

use tidings_client::{Error, HeaderMap, HeaderValue, ReadyState};

use crate::server::{
    expect_end, expect_error, expect_message, expect_open, fast, serve, sse, sse_then_hang,
};

/// A `headers_with` callback that sends `Authorization: Bearer <token>`.
fn bearer(token: &Arc<Mutex<String>>) -> impl FnMut() -> HeaderMap + Send + 'static {
    let token = Arc::clone(token);
    move || {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", token.lock().unwrap());
        headers.insert("authorization", HeaderValue::from_str(&value).unwrap());
        // Ignored: the source sends its own.
        headers.insert("last-event-id", HeaderValue::from_static("forged"));
        headers
    }
}

#[tokio::test]
async fn restart_reconnects_now_with_the_new_headers_and_the_last_event_id() {
    let mut server = serve(|n, _| match n {
        0 => sse_then_hang("id: 5\ndata: a\n\n"),
        _ => sse_then_hang("data: b\n\n"),
    })
    .await;
    let token = Arc::new(Mutex::new("one".to_owned()));
    let mut source = fast(&server.url("/"))
        .header("Authorization", "Bearer fixed")
        .header("X-Fixed", "kept")
        .headers_with(bearer(&token))
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.2, "5");
    let first = server.request().await;
    assert_eq!(first.header("authorization"), Some("Bearer one"));
    assert_eq!(first.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(first.header("last-event-id"), None);

    // The token is refreshed; the open connection is dropped for one that carries it.
    *token.lock().unwrap() = "two".to_owned();
    let handle = source.close_handle();
    handle.restart();
    // No error for the dropped connection: the next item is the new one's open.
    expect_open(&mut source).await;
    let second = server.request().await;
    assert_eq!(second.header("authorization"), Some("Bearer two"));
    assert_eq!(second.header("last-event-id"), Some("5"));
    assert_eq!(second.header("x-fixed"), Some("kept"));
    assert_eq!(second.header("accept"), Some("text/event-stream"));
    assert_eq!(
        expect_message(&mut source).await,
        ("message".into(), "b".into(), "5".into())
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn headers_with_is_called_again_at_every_reconnection() {
    let mut server = serve(|n, _| match n {
        0 => sse("id: 1\ndata: a\n\n"),
        _ => sse_then_hang("data: b\n\n"),
    })
    .await;
    let token = Arc::new(Mutex::new("one".to_owned()));
    let mut source = fast(&server.url("/"))
        .headers_with(bearer(&token))
        .build()
        .unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    *token.lock().unwrap() = "two".to_owned();
    assert!(matches!(
        expect_error(&mut source).await,
        Error::EndOfStream
    ));
    expect_open(&mut source).await;
    assert_eq!(
        server.request().await.header("authorization"),
        Some("Bearer one")
    );
    let second = server.request().await;
    assert_eq!(second.header("authorization"), Some("Bearer two"));
    assert_eq!(second.header("last-event-id"), Some("1"));
}

#[tokio::test]
async fn restart_cuts_a_reconnection_wait_short_and_keeps_the_retry_state() {
    // The server sets an hour of reconnection time and ends the stream.
    let mut server = serve(|n, _| match n {
        0 => sse("retry: 3600000\nid: 9\ndata: a\n\n"),
        _ => sse_then_hang("data: b\n\n"),
    })
    .await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    expect_message(&mut source).await;
    assert!(matches!(
        expect_error(&mut source).await,
        Error::EndOfStream
    ));
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    source.restart();
    // Within the helper's 5 s, not an hour.
    expect_open(&mut source).await;
    server.request().await;
    assert_eq!(server.request().await.header("last-event-id"), Some("9"));
    let debug = format!("{source:?}");
    assert!(debug.contains("reconnection_time: 3600s"), "{debug}");
}

#[tokio::test]
async fn restart_does_not_reopen_a_closed_source() {
    let server = serve(|_, _| sse_then_hang("data: a\n\n")).await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    let handle = source.close_handle();
    handle.close();
    handle.restart();
    expect_end(&mut source).await;
    assert_eq!(source.ready_state(), ReadyState::Closed);
    assert_eq!(server.hits(), 1);
}
