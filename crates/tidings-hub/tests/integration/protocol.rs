//! Subscribe, publish, selectors, authorization and bad input (SPEC §3).

use std::time::Duration;

use crate::support::{TestHub, token, token_with, topics_query};

#[tokio::test]
async fn published_update_reaches_subscriber_with_every_field() {
    let t = TestHub::start().await;
    let mut stream = t
        .subscribe(&topics_query(&["https://example.com/books/1"]))
        .await;
    assert_eq!(
        stream.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(stream.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering").as_deref(), Some("no"));
    assert!(stream.header("last-event-id").is_none());
    assert!(stream.header("link").unwrap().contains("rel=\"mercure\""));

    let id = t
        .publish(&[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"Dune\"}\nsecond line"),
            ("type", "book"),
            ("id", "book-1-v1"),
            ("retry", "2500"),
        ])
        .await;
    assert_eq!(id, "book-1-v1");
    let event = stream.expect().await;
    assert_eq!(event.id, "book-1-v1");
    assert_eq!(event.event_type, "book");
    assert_eq!(event.data, "{\"title\":\"Dune\"}\nsecond line");
}

#[tokio::test]
async fn generated_ids_are_uuid_urns_and_every_event_has_one() {
    let t = TestHub::start().await;
    let mut stream = t.subscribe("topic=a").await;
    let response = t.post(&[("topic", "a"), ("data", "")]).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let id = response.text().await.unwrap();
    assert!(id.starts_with("urn:uuid:"), "{id}");
    let event = stream.expect().await;
    assert_eq!(event.id, id.as_str());
    assert_eq!(
        event.data, "",
        "an update with empty data is still dispatched"
    );
    assert_eq!(event.event_type, "message");
}

#[tokio::test]
async fn alternate_topics_and_one_copy_per_subscriber() {
    let t = TestHub::start().await;
    let mut alternate = t.subscribe("topic=alt").await;
    let mut both = t.subscribe("topic=canonical&topic=alt&topic=*").await;
    let mut other = t.subscribe("topic=other").await;
    let id = t
        .publish(&[("topic", "canonical"), ("topic", "alt"), ("data", "x")])
        .await;
    let marker = t
        .publish(&[("topic", "other"), ("topic", "alt"), ("data", "m")])
        .await;
    assert_eq!(alternate.expect().await.id, id.as_str());
    assert_eq!(both.expect().await.id, id.as_str());
    assert_eq!(
        both.expect().await.id,
        marker.as_str(),
        "one copy of each update"
    );
    assert_eq!(
        other.expect().await.id,
        marker.as_str(),
        "other topics do not leak"
    );
}

#[tokio::test]
async fn selector_table() {
    // (selector, topic, matches)
    let table = [
        ("*", "https://example.com/anything", true),
        (
            "https://example.com/books/1",
            "https://example.com/books/1",
            true,
        ),
        (
            "https://example.com/books/1",
            "https://example.com/books/10",
            false,
        ),
        (
            "https://example.com/books/{id}",
            "https://example.com/books/1",
            true,
        ),
        (
            "https://example.com/books/{id}",
            "https://example.com/books/1/reviews",
            false,
        ),
        (
            "https://example.com/books/{id}",
            "https://example.com/authors/1",
            false,
        ),
        (
            "https://example.com/{+path}",
            "https://example.com/books/1/reviews",
            true,
        ),
        ("/users/{id}{?fields}", "/users/7", true),
    ];
    let t = TestHub::start().await;
    for (selector, topic, matches) in table {
        let mut stream = t.subscribe(&topics_query(&[selector, "marker"])).await;
        t.publish(&[("topic", topic), ("data", "candidate")]).await;
        t.publish(&[("topic", "marker"), ("data", "marker")]).await;
        let first = stream.expect().await;
        let got = first.data == "candidate";
        assert_eq!(got, matches, "selector {selector:?} on topic {topic:?}");
    }
}

#[tokio::test]
async fn bad_publishes_are_refused_with_a_reason_and_leave_no_trace() {
    let t = TestHub::with(|b| b.max_body_size(4096).max_topics(3)).await;
    let mut stream = t.subscribe("topic=*").await;
    t.publish(&[("topic", "t"), ("id", "taken"), ("data", "first")])
        .await;
    assert_eq!(stream.expect().await.id, "taken");

    let big = "x".repeat(5000);
    // (form, status, what the body must say)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("data", "no topic")], 400, "missing topic"),
        (vec![("topic", "t"), ("id", "#frag")], 400, "'#'"),
        (vec![("topic", "t"), ("id", "a\nid: b")], 400, "invalid id"),
        (vec![("topic", "t"), ("id", "a\0b")], 400, "invalid id"),
        (
            vec![("topic", "t"), ("type", "a\r\ndata: injected")],
            400,
            "invalid type",
        ),
        (vec![("topic", "t"), ("retry", "12a")], 400, "invalid retry"),
        (vec![("topic", "t"), ("retry", "-5")], 400, "invalid retry"),
        (vec![("topic", "t"), ("data", &big)], 413, "too large"),
        (
            vec![
                ("topic", "1"),
                ("topic", "2"),
                ("topic", "3"),
                ("topic", "4"),
            ],
            400,
            "too many topics",
        ),
        (vec![("topic", "")], 400, "empty topic"),
    ];
    for (form, status, reason) in cases {
        let response = t.post(&form).await;
        assert_eq!(response.status(), status, "{form:?}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains(reason),
            "{form:?}: {body:?} should say {reason:?}"
        );
        assert_eq!(body.trim_end().lines().count(), 1, "one line: {body:?}");
    }

    let malformed = t
        .client
        .post(t.url())
        .bearer_auth(&t.publisher)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(&b"topic=t&data=\xff\xfe"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(malformed.text().await.unwrap().contains("UTF-8"));
    // The same bytes percent-encoded, as a browser's form would send them.
    let encoded = t
        .client
        .post(t.url())
        .bearer_auth(&t.publisher)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=t&data=%FF%FE")
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.status(), 400);
    assert!(encoded.text().await.unwrap().contains("UTF-8"));
    let wrong_type = t
        .client
        .post(t.url())
        .bearer_auth(&t.publisher)
        .header("content-type", "application/json")
        .body("{\"topic\":\"t\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert!(wrong_type.text().await.unwrap().contains("content type"));

    // Nothing of the above was stored or sent: the next event is the next good one,
    // and history holds only the good ones.
    let good = t.publish(&[("topic", "t"), ("data", "second")]).await;
    assert_eq!(stream.expect().await.id, good.as_str());
    let mut replay = t.subscribe_with("topic=*", None, Some("earliest")).await;
    assert_eq!(replay.expect().await.id, "taken");
    assert_eq!(replay.expect().await.id, good.as_str());
}

#[tokio::test]
async fn publish_authorization() {
    let t = TestHub::start().await;
    let form = [
        ("topic", "https://example.com/a"),
        ("topic", "https://example.com/b"),
    ];

    let anonymous = t
        .client
        .post(t.url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("topic=a&data=x")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.unwrap().contains("missing token"));

    let forged = tidings_hub::auth::mint(
        &tidings_hub::auth::SigningKey::hmac(b"another secret, also 32 bytes long!!"),
        &tidings_hub::auth::MercureClaims {
            publish: Some(vec!["*".into()]),
            subscribe: None,
            payload: None,
        },
        None,
    )
    .unwrap();
    let response = t.post_as(&forged, &form).await;
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("integration-test secret"),
        "no key in {body}"
    );

    let partly = token(&["https://example.com/a"], &[]);
    let response = t.post_as(&partly, &form).await;
    assert_eq!(
        response.status(),
        403,
        "a partly-allowed update is refused whole"
    );
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("https://example.com/b")
    );

    let templated = token(&["https://example.com/{x}"], &[]);
    assert_eq!(t.post_as(&templated, &form).await.status(), 200);

    let subscriber_only = token(&[], &["*"]);
    assert_eq!(t.post_as(&subscriber_only, &form).await.status(), 403);
}

#[tokio::test]
async fn cookie_publishing_needs_an_allowed_origin() {
    let t = TestHub::with(|b| b.publish_origins(["https://app.example.com"])).await;
    let post = |origin: Option<&'static str>| {
        let mut request = t
            .client
            .post(t.url())
            .header("cookie", format!("mercureAuthorization={}", t.publisher))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("topic=a&data=x");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 403);
    let evil = post(Some("https://evil.example.net")).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.text().await.unwrap().contains("evil.example.net"));
    assert_eq!(
        post(Some("https://app.example.com"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn subscriber_authentication() {
    let t = TestHub::with(|b| b.anonymous(false)).await;
    let refused = t.request("topic=a", None, None).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("anonymous"));

    let bad = t.request("topic=a", Some("not.a.jwt"), None).await;
    assert_eq!(bad.status(), 401);

    let subscriber = token(&[], &["a"]);
    let stream = t.subscribe_with("topic=a", Some(&subscriber), None).await;
    assert_eq!(stream.header("cache-control").as_deref(), Some("no-cache"));

    let in_query = t
        .subscribe(&format!("topic=a&authorization={subscriber}"))
        .await;
    let cache = in_query.header("cache-control").unwrap();
    assert!(cache.contains("private"), "{cache}");

    let cookie = t
        .client
        .get(format!("{}?topic=a", t.url()))
        .header(
            "cookie",
            format!("other=1; mercureAuthorization={subscriber}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);

    let missing_topic = t.request("", Some(&subscriber), None).await;
    assert_eq!(missing_topic.status(), 400);
    assert!(
        missing_topic
            .text()
            .await
            .unwrap()
            .contains("missing topic")
    );
}

#[tokio::test]
async fn expired_token_closes_the_stream() {
    let t = TestHub::start().await;
    let short = token_with(&[], &["*"], None, Some(Duration::from_secs(2)));
    let mut stream = t.subscribe_with("topic=a", Some(&short), None).await;
    let id = t
        .publish(&[("topic", "a"), ("data", "before expiry")])
        .await;
    assert_eq!(stream.expect().await.id, id.as_str());
    let started = tokio::time::Instant::now();
    assert!(stream.next().await.is_none(), "the stream ends at expiry");
    assert!(started.elapsed() <= Duration::from_secs(3));
    assert_eq!(t.hub.connections(), 0);
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let t = TestHub::with(|b| b.heartbeat(Some(Duration::from_millis(50)))).await;
    let mut stream = t.subscribe("topic=a").await;
    // Wait until three heartbeats have arrived, then an update still comes through.
    while stream.comments < 3 {
        let chunk = tokio::time::timeout(crate::support::PATIENCE, stream.response.chunk())
            .await
            .expect("heartbeat in time")
            .unwrap()
            .expect("stream open");
        assert_eq!(&chunk[..], b":\n\n");
        stream.comments += 1;
    }
    let id = t.publish(&[("topic", "a"), ("data", "x")]).await;
    assert_eq!(stream.expect().await.id, id.as_str());
}

#[tokio::test]
async fn a_stream_opens_with_a_comment_before_any_update_or_heartbeat() {
    // A proxy that holds a response head until body bytes come (nginx over HTTP/2) then
    // passes it on at once.
    let t = TestHub::with(|b| b.heartbeat(None)).await;
    let mut stream = t.subscribe("topic=a").await;
    let first = tokio::time::timeout(crate::support::PATIENCE, stream.response.chunk())
        .await
        .expect("the opening comment in time")
        .unwrap()
        .expect("stream open");
    assert_eq!(&first[..], b":\n\n");
}

#[tokio::test]
async fn cors_allows_listed_origins_with_credentials_only() {
    let t = TestHub::with(|b| b.cors_origins(["https://app.example.com"])).await;
    let preflight = |origin: &'static str| {
        t.client
            .request(reqwest::Method::OPTIONS, t.url())
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization,last-event-id",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let denied = preflight("https://evil.example.net").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let t = TestHub::start().await;
    let health = t
        .client
        .get(format!("{}/healthz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut stream = t.subscribe("topic=a").await;
    t.publish(&[("topic", "a"), ("data", "x")]).await;
    stream.expect().await;
    let metrics = t.metrics().await;
    for line in [
        "tidings_connections 1",
        "tidings_subscriptions 1",
        "tidings_publishes_total",
        "tidings_deliveries_total 1",
        "tidings_slow_subscriber_disconnects_total 0",
        "tidings_replays_total 0",
        "tidings_history_updates",
        "tidings_log_appends_total",
        "tidings_log_commits_total",
    ] {
        assert!(metrics.contains(line), "{line:?} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn publish_from_rust_and_mount_in_an_app() {
    use tidings_hub::PublishError;
    use tidings_hub::log::Update;

    let hub = tidings_hub::Hub::builder().build().await.unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the app's own page" }))
        .merge(hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.text().await.unwrap(), "the app's own page");
    let response = client
        .get(format!("{base}/.well-known/mercure?topic=/r"))
        .send()
        .await
        .unwrap();
    let mut stream = crate::support::Stream::new(response);

    let mut update = Update::new("", "/r", "from rust");
    update.event_type = Some("note".into());
    let id = hub.publish(update).await.unwrap();
    let event = stream.expect().await;
    assert_eq!(
        (
            event.id.as_ref(),
            event.event_type.as_ref(),
            event.data.as_ref()
        ),
        (id.as_str(), "note", "from rust")
    );

    let refused = hub.publish(Update::new("#x", "/r", "")).await.unwrap_err();
    assert!(
        matches!(refused, PublishError::IdStartsWithHash),
        "{refused}"
    );
    // A reused id is accepted, as Mercure does.
    let reused = hub.publish(Update::new(id.clone(), "/r", "again")).await;
    assert_eq!(reused.unwrap(), id);
    assert_eq!(stream.expect().await.data, "again");
    hub.shutdown();
}

#[tokio::test]
async fn cors_headers_on_a_credentialed_stream() {
    let t = TestHub::with(|b| b.cors_origins(["https://app.example.com"])).await;
    let response = t
        .client
        .get(format!("{}?topic=a", t.url()))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
}
