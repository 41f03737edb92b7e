//! Which responses are event streams: status 200 and the `text/event-stream` essence.

use axum::{body::Body, http::Response};
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
            matches!(err, Error::Status { status } if status == code),
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
