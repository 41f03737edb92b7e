//! Which responses are event streams: status 200 and the `text/event-stream` essence.

use axum::{body::Body, http::Response};
use futures_util::StreamExt as _;
use tidings_client::{Error, EventSource, ReadyState};

use crate::server::{expect_end, expect_error, expect_message, expect_open, fast, serve, status};

#[tokio::test]
async fn every_status_other_than_200_fails_for_good() {
    for code in [201, 202, 204, 206, 400, 401, 403, 404, 410, 500, 502, 503] {
        let server =
            serve(move |_, _| status(code, &[("content-type", "text/event-stream")])).await;
        let mut source = fast(&server.url("/")).build().unwrap();
        let err = expect_error(&mut source).await;
        assert!(
            matches!(err, Error::Status { status, .. } if status == code),
            "{code}: {err:?}"
        );
        assert!(err.is_terminal());
        assert_eq!(err.status(), Some(code));
        expect_end(&mut source).await;
        assert_eq!(source.ready_state(), ReadyState::Closed);
        assert_eq!(server.hits(), 1, "{code}: retried a failed connection");
    }
}

#[tokio::test]
async fn a_204_after_a_stream_stops_the_reconnections() {
    let server = serve(|n, _| match n {
        0 => crate::server::sse("data: last\n\n"),
        _ => status(204, &[]),
    })
    .await;
    let mut source = fast(&server.url("/")).build().unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "last");
    assert!(matches!(
        expect_error(&mut source).await,
        Error::EndOfStream
    ));
    let err = expect_error(&mut source).await;
    assert_eq!(err.status(), Some(204));
    expect_end(&mut source).await;
    assert_eq!(server.hits(), 2);
}

fn with_content_type(value: Option<&'static str>) -> Response<Body> {
    let mut response = Response::builder();
    if let Some(value) = value {
        response = response.header("content-type", value);
    }
    response.body(Body::from("data: x\n\n")).unwrap()
}

#[tokio::test]
async fn a_content_type_that_is_not_an_event_stream_fails_for_good() {
    for value in [
        Some("text/plain"),
        Some("text/html; charset=utf-8"),
        Some("application/json"),
        Some("text/event-streams"),
        Some("text/event-stream+json"),
        None,
    ] {
        let server = serve(move |_, _| with_content_type(value)).await;
        let mut source = fast(&server.url("/")).build().unwrap();
        let err = expect_error(&mut source).await;
        assert!(
            matches!(&err, Error::ContentType { content_type } if content_type.as_deref() == value),
            "{value:?}: {err:?}"
        );
        assert!(err.is_terminal());
        expect_end(&mut source).await;
        assert_eq!(server.hits(), 1);
    }
}

#[tokio::test]
async fn the_essence_is_compared_without_parameters_or_case() {
    for value in [
        "text/event-stream; charset=utf-8",
        "Text/Event-Stream",
        "text/event-stream ; foo=\"bar\"",
    ] {
        let server = serve(move |_, _| with_content_type(Some(value))).await;
        let mut source = EventSource::get(&server.url("/")).unwrap();
        expect_open(&mut source).await;
        assert_eq!(expect_message(&mut source).await.1, "x", "{value}");
    }
}

#[tokio::test]
async fn the_charset_parameter_does_not_change_the_decoding() {
    // The body is UTF-8 whatever `charset` says.
    let server = serve(|_, _| {
        Response::builder()
            .header("content-type", "text/event-stream; charset=iso-8859-1")
            .body(Body::from("data: caf\u{e9}\n\n"))
            .unwrap()
    })
    .await;
    let mut source = EventSource::get(&server.url("/")).unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "café");
}

/// A response with a status and a body.
fn refusal(code: u16, body: Body) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn a_refusal_carries_the_start_of_its_body() {
    let server =
        serve(|_, _| refusal(401, Body::from("token expired 6s ago\nsecond line\n"))).await;
    let mut source = fast(&server.url("/")).build().unwrap();
    let err = expect_error(&mut source).await;
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.body(), Some("token expired 6s ago\nsecond line\n"));
    assert_eq!(
        err.to_string(),
        "the server answered 401 Unauthorized instead of 200 OK: token expired 6s ago"
    );
    expect_end(&mut source).await;
}

#[tokio::test]
async fn the_body_kept_is_bounded_and_cut_at_a_whole_character() {
    // 3 000 two-byte characters, 6 000 bytes: 4 096 kept by default, a whole number of
    // characters; with a limit of 5 bytes, two characters.
    let body = "é".repeat(3_000);
    let server = serve(move |_, _| refusal(403, Body::from(body.clone()))).await;
    let mut source = fast(&server.url("/")).build().unwrap();
    let err = expect_error(&mut source).await;
    assert_eq!(err.body(), Some("é".repeat(2_048).as_str()));
    let mut source = fast(&server.url("/")).max_error_body(5).build().unwrap();
    assert_eq!(expect_error(&mut source).await.body(), Some("éé"));
    let mut source = fast(&server.url("/")).max_error_body(0).build().unwrap();
    assert_eq!(expect_error(&mut source).await.body(), Some(""));
}

/// A body that starts and never ends: the error comes after the wait (the idle timeout
/// here), with what arrived. On the paused clock, so the wait is exact under any load.
#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_is_waited_for_a_bounded_time() {
    let server = serve(|_, _| {
        let chunks = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"slow: "))
        })
        .chain(futures_util::stream::pending());
        refusal(503, Body::from_stream(chunks))
    })
    .await;
    let mut source = fast(&server.url("/"))
        .idle_timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = futures_util::StreamExt::next(&mut source)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.body(), Some("slow: "));
    assert_eq!(
        err.to_string(),
        "the server answered 503 Service Unavailable instead of 200 OK: slow:"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(30));
    assert!(futures_util::StreamExt::next(&mut source).await.is_none());
}
