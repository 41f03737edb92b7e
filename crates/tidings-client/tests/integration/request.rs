//! What the client sends: headers, method and body, and how it follows redirects.

use axum::http::header;
use tidings_client::{Error, Event, EventSource, ReadyState};

use crate::server::{
    expect_end, expect_error, expect_message, expect_open, fast, next, serve, sse, sse_then_hang,
    status,
};

#[tokio::test]
async fn sends_accept_and_cache_control_and_no_last_event_id_at_first() {
    let mut server = serve(|_, _| sse_then_hang("data: x\n\n")).await;
    let mut source = EventSource::get(&server.url("/events")).unwrap();
    expect_open(&mut source).await;
    let request = server.request().await;
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/events");
    assert_eq!(request.header("accept"), Some("text/event-stream"));
    assert_eq!(request.header("cache-control"), Some("no-cache"));
    assert_eq!(request.header("last-event-id"), None);
    assert_eq!(source.ready_state(), ReadyState::Open);
}

#[tokio::test]
async fn sends_custom_headers_and_the_initial_last_event_id() {
    let mut server = serve(|_, _| sse_then_hang("")).await;
    let mut source = EventSource::builder(&server.url("/"))
        .header("Authorization", "Bearer t0ken")
        .header("X-Many", "1")
        .header("X-Many", "2")
        .last_event_id("résumé-41")
        .build()
        .unwrap();
    expect_open(&mut source).await;
    let request = server.request().await;
    assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
    let many: Vec<_> = request.headers.get_all("x-many").iter().collect();
    assert_eq!(many, ["1", "2"]);
    // The header carries UTF-8.
    assert_eq!(
        request.headers["last-event-id"].as_bytes(),
        "résumé-41".as_bytes()
    );
}

#[tokio::test]
async fn a_user_supplied_client_is_used() {
    let mut server = serve(|_, _| sse_then_hang("")).await;
    let mut defaults = reqwest::header::HeaderMap::new();
    defaults.insert("x-from-client", "yes".parse().unwrap());
    let client = reqwest::Client::builder()
        .default_headers(defaults)
        .build()
        .unwrap();
    let mut source = EventSource::builder(&server.url("/"))
        .client(client)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(server.request().await.header("x-from-client"), Some("yes"));
}

#[tokio::test]
async fn post_body_is_sent_again_at_every_reconnection() {
    let mut server = serve(|n, _| match n {
        0 => sse("retry: 10\ndata: first\n\n"),
        _ => sse_then_hang("data: second\n\n"),
    })
    .await;
    let mut source = fast(&server.url("/v1/chat"))
        .method("POST")
        .header("Content-Type", "application/json")
        .body(r#"{"stream":true}"#)
        .build()
        .unwrap();
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "first");
    assert!(matches!(
        expect_error(&mut source).await,
        Error::EndOfStream
    ));
    expect_open(&mut source).await;
    assert_eq!(expect_message(&mut source).await.1, "second");
    for _ in 0..2 {
        let request = server.request().await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(&request.body[..], br#"{"stream":true}"#);
        assert_eq!(request.header("accept"), Some("text/event-stream"));
    }
}

#[tokio::test]
async fn every_redirect_code_is_followed_and_the_final_url_is_the_origin() {
    for code in [301, 302, 303, 307, 308] {
        let mut server = serve(move |_, request| {
            if request.path == "/start" {
                status(code, &[("location", "/final")])
            } else {
                sse_then_hang("data: here\n\n")
            }
        })
        .await;
        let mut source = EventSource::get(&server.url("/start")).unwrap();
        match next(&mut source).await {
            Ok(Event::Open { url }) => assert_eq!(url, server.url("/final"), "{code}"),
            other => panic!("{code}: {other:?}"),
        }
        let Ok(Event::Message(message)) = next(&mut source).await else {
            panic!("{code}: no message");
        };
        assert_eq!(message.data, "here");
        assert_eq!(message.url, server.url("/final"));
        assert_eq!(message.origin, server.url(""));
        assert_eq!(source.url(), &server.url("/final"));
        assert_eq!(server.request().await.path, "/start");
        let followed = server.request().await;
        assert_eq!(followed.path, "/final");
        // The protocol headers go with the redirected request too.
        assert_eq!(followed.header("accept"), Some("text/event-stream"));
    }
}

#[tokio::test]
async fn a_redirect_without_location_fails_for_good() {
    for code in [301, 302, 303, 307, 308] {
        let server = serve(move |_, _| status(code, &[])).await;
        let mut source = fast(&server.url("/")).build().unwrap();
        let err = expect_error(&mut source).await;
        assert!(
            matches!(err, Error::Redirect { status, location: None } if status == code),
            "{code}: {err:?}"
        );
        assert!(err.is_terminal());
        expect_end(&mut source).await;
        assert_eq!(source.ready_state(), ReadyState::Closed);
        assert_eq!(server.hits(), 1, "{code}: retried a failed connection");
    }
}

#[tokio::test]
async fn a_redirect_to_an_unusable_location_fails_for_good() {
    let server = serve(|_, _| status(302, &[("location", "http://[::1")])).await;
    let mut source = fast(&server.url("/")).build().unwrap();
    let err = expect_error(&mut source).await;
    assert!(
        matches!(&err, Error::Redirect { status: 302, location: Some(l) } if l == "http://[::1"),
        "{err:?}"
    );
    expect_end(&mut source).await;
}

#[tokio::test]
async fn an_empty_location_or_one_back_to_the_same_url_is_a_redirect_error() {
    for location in ["", "/same"] {
        let server = serve(move |_, _| status(302, &[(header::LOCATION.as_str(), location)])).await;
        let mut source = fast(&server.url("/same")).build().unwrap();
        let err = expect_error(&mut source).await;
        assert!(
            matches!(&err, Error::Redirect { status: 302, location: Some(l) } if l == location),
            "{location:?}: {err:?}"
        );
        assert!(err.is_terminal());
        expect_end(&mut source).await;
        assert_eq!(server.hits(), 1, "{location:?}: followed");
    }
}

#[tokio::test]
async fn a_redirect_loop_fails_for_good() {
    let server = serve(|_, request| {
        let to = if request.path == "/a" { "/b" } else { "/a" };
        status(307, &[(header::LOCATION.as_str(), to)])
    })
    .await;
    let mut source = fast(&server.url("/a")).build().unwrap();
    let err = expect_error(&mut source).await;
    assert!(matches!(err, Error::TooManyRedirects { .. }), "{err:?}");
    expect_end(&mut source).await;
    let hits = server.hits();
    assert!((2..=11).contains(&hits), "{hits} requests");
}
