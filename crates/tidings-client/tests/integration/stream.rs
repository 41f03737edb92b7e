//! What the client reads: events, ids, comments, chunking, BOM, limits.

use std::time::Duration;

use axum::{body::Body, http::Response};
use bytes::Bytes;
use futures_util::stream;
use tidings_client::{Error, Event, EventSource, ReadyState};
use tidings_wire::DecodeError;

use crate::server::{
    expect_end, expect_error, expect_message, expect_open, next, serve, sse_bytewise, sse_then_hang,
};

const STREAM: &[u8] = b"\xEF\xBB\xBFid: 1\nevent: greeting\ndata: hello\r\ndata: world\r\n\r\n\
: keep-alive\r\rdata:no space\n\nid: 2\ndata: caf\xC3\xA9 \xF0\x9F\x8E\x89\n\n";

async fn expect_stream_events(source: &mut EventSource) {
    expect_open(source).await;
    assert_eq!(
        expect_message(source).await,
        ("greeting".into(), "hello\nworld".into(), "1".into())
    );
    assert_eq!(
        expect_message(source).await,
        ("message".into(), "no space".into(), "1".into())
    );
    assert_eq!(
        expect_message(source).await,
        ("message".into(), "café 🎉".into(), "2".into())
    );
    assert_eq!(source.last_event_id(), "2");
}

#[tokio::test]
async fn a_whole_stream_decodes_with_bom_line_endings_and_utf8() {
    let server = serve(|_, _| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(STREAM))
            .unwrap()
    })
    .await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_stream_events(&mut source).await;
}

#[tokio::test]
async fn a_stream_split_into_single_bytes_gives_the_same_events() {
    let server = serve(|_, _| sse_bytewise(STREAM)).await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_stream_events(&mut source).await;
}

#[tokio::test]
async fn a_bom_split_over_chunks_and_a_second_bom_after_it() {
    // The first BOM (split) is dropped; a second one makes the line's field name unknown.
    let chunks = [
        &b"\xEF"[..],
        b"\xBB",
        b"\xBF",
        b"\xEF\xBB\xBFdata: ignored\n\n",
        b"data: kept\n\n",
    ];
    let server = serve(move |_, _| {
        let body = stream::iter(chunks.map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))));
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap()
    })
    .await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "kept");
}

#[tokio::test]
async fn each_reconnection_may_open_with_a_bom_again() {
    let server = serve(|_, _| crate::server::sse("\u{feff}retry: 10\ndata: x\n\n")).await;
    let mut source = crate::server::fast(&server.url("/")).build().unwrap();
    for _ in 0..3 {
        expect_open(&mut source).await;
        assert_eq!(expect_message(&mut source).await.1, "x");
        assert!(matches!(
            expect_error(&mut source).await,
            Error::EndOfStream
        ));
    }
}

#[tokio::test]
async fn named_events_keep_their_type_and_an_unfinished_event_is_dropped_at_the_end() {
    let server = serve(|n, _| match n {
        0 => crate::server::sse("event: add\ndata: 1\n\nid: 9\ndata: unfinished"),
        _ => sse_then_hang(""),
    })
    .await;
    let mut source = crate::server::fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    assert_eq!(
        expect_message(&mut source).await,
        ("add".into(), "1".into(), "".into())
    );
    assert!(matches!(
        expect_error(&mut source).await,
        Error::EndOfStream
    ));
    // The `id: 9` of the unfinished event did not take effect.
    assert_eq!(source.last_event_id(), "");
    expect_open(&mut source).await;
}

#[tokio::test]
async fn comments_are_yielded_only_when_asked_for() {
    let body = ": hello\ndata: x\n\n:\n";
    let server = serve(move |_, _| sse_then_hang(body)).await;
    let mut source = EventSource::builder(&server.url("/"))
        .comments(true)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert!(matches!(next(&mut source).await, Ok(Event::Comment(t)) if t == "hello"));
    assert_eq!(expect_message(&mut source).await.1, "x");
    assert!(matches!(next(&mut source).await, Ok(Event::Comment(t)) if t.is_empty()));

    let mut quiet = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut quiet).await;
    assert_eq!(expect_message(&mut quiet).await.1, "x");
    // Nothing else: the comments were skipped.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(50),
            futures_util::StreamExt::next(&mut quiet)
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn a_line_over_the_limit_fails_for_good() {
    let server =
        serve(|_, _| sse_then_hang("data: short\n\ndata: far too long for the limit\n\n")).await;
    let mut source = EventSource::builder(&server.url("/"))
        .max_line_len(16)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "short");
    let err = expect_error(&mut source).await;
    assert!(
        matches!(err, Error::Limit(DecodeError::LineTooLong { limit: 16 })),
        "{err:?}"
    );
    assert!(err.is_terminal());
    expect_end(&mut source).await;
    assert_eq!(source.ready_state(), ReadyState::Closed);
}

#[tokio::test]
async fn an_event_over_the_limit_fails_for_good() {
    let server = serve(|_, _| sse_then_hang("data: 12345\ndata: 67890\ndata: abcde\n\n")).await;
    let mut source = EventSource::builder(&server.url("/"))
        .max_event_size(10)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    let err = expect_error(&mut source).await;
    assert!(
        matches!(err, Error::Limit(DecodeError::EventTooLarge { limit: 10 })),
        "{err:?}"
    );
    expect_end(&mut source).await;
}

/// An event whose one `data:` line carries `len` bytes.
fn one_line_event(len: usize) -> String {
    format!("data: {}\n\n", "x".repeat(len))
}

#[tokio::test]
async fn by_default_the_line_limit_follows_the_event_limit() {
    // A single-line payload just under the event limit (the LF counts) is read whole…
    let body: &'static str =
        Box::leak(format!("{}{}", one_line_event(99), one_line_event(100)).into_boxed_str());
    let server = serve(move |_, _| sse_then_hang(body)).await;
    let mut source = EventSource::builder(&server.url("/"))
        .max_event_size(100)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1.len(), 99);
    // …and one over it is refused by the event limit, not by a smaller line limit.
    let err = expect_error(&mut source).await;
    assert!(
        matches!(err, Error::Limit(DecodeError::EventTooLarge { limit: 100 })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_single_line_event_over_8_mib_is_read_with_the_defaults() {
    let body: &'static str = Box::leak(one_line_event(9 << 20).into_boxed_str());
    let server = serve(move |_, _| sse_then_hang(body)).await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1.len(), 9 << 20);
}

#[tokio::test]
async fn skip_oversized_skips_an_event_and_goes_on_on_the_same_connection() {
    let server = serve(|_, _| {
        sse_then_hang(
            "data: short\n\nid: 2\ndata: far too long for the limit\n\n\
             data: 12345\ndata: 67890\ndata: abcde\n\ndata: after\n\n",
        )
    })
    .await;
    let mut source = EventSource::builder(&server.url("/"))
        .max_line_len(16)
        .max_event_size(12)
        .skip_oversized(true)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "short");
    let err = expect_error(&mut source).await;
    assert!(
        matches!(
            err,
            Error::Skipped {
                cause: DecodeError::LineTooLong { limit: 16 }
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_terminal());
    let err = expect_error(&mut source).await;
    assert!(
        matches!(
            err,
            Error::Skipped {
                cause: DecodeError::EventTooLarge { limit: 12 }
            }
        ),
        "{err:?}"
    );
    // The skipped event's id took effect.
    assert_eq!(
        expect_message(&mut source).await,
        ("message".into(), "after".into(), "2".into())
    );
    assert_eq!(source.ready_state(), ReadyState::Open);
    assert_eq!(server.hits(), 1, "reconnected instead of skipping");
}
