//! A real HTTP server on 127.0.0.1:0 whose answers each test scripts, and that records
//! every request it receives.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, Response, StatusCode, header},
};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tidings_client::{Error, Event, EventSource};
use tokio::sync::{Notify, mpsc};

/// A request as the server saw it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub(crate) struct TestServer {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Recorded>,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request the server received (waits for it).
    pub(crate) async fn request(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("no request within 5 s")
            .expect("server gone")
    }

    /// How many requests arrived so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts a server that answers request number `n` (0-based) with `respond(n, request)`.
pub(crate) async fn serve<F>(respond: F) -> TestServer
where
    F: Fn(usize, &Recorded) -> Response<Body> + Send + Sync + 'static,
{
    let (tx, requests) = mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let counter = Arc::clone(&hits);
    let app = Router::new().fallback(move |request: Request<Body>| {
        let respond = Arc::clone(&respond);
        let counter = Arc::clone(&counter);
        let tx = tx.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body,
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let response = respond(n, &recorded);
            let _ = tx.send(recorded);
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        addr,
        requests,
        hits,
    }
}

/// A 200 `text/event-stream` response whose body is `body`, then the end.
pub(crate) fn sse(body: &'static str) -> Response<Body> {
    stream_response(Body::from(body))
}

/// A 200 event stream that sends `body` and then nothing, keeping the connection open.
pub(crate) fn sse_then_hang(body: &'static str) -> Response<Body> {
    let chunks =
        stream::once(async move { Ok::<_, Infallible>(Bytes::from_static(body.as_bytes())) })
            .chain(stream::pending());
    stream_response(Body::from_stream(chunks))
}

/// A 200 event stream that sends `body`, waits for `drop`, then breaks the connection
/// (the chunked body never gets its final chunk).
pub(crate) fn sse_then_drop(body: &'static str, drop: Arc<Notify>) -> Response<Body> {
    let chunks = stream::iter([Bytes::from_static(body.as_bytes())])
        .map(Ok)
        .chain(stream::once(async move {
            drop.notified().await;
            Err(std::io::Error::other("dropped by the test"))
        }));
    stream_response(Body::from_stream(chunks))
}

/// A 200 event stream that sends `body` one byte per chunk, yielding between them.
pub(crate) fn sse_bytewise(body: &'static [u8]) -> Response<Body> {
    let chunks = stream::iter(body.iter().copied()).then(|byte| async move {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(Bytes::copy_from_slice(&[byte]))
    });
    stream_response(Body::from_stream(chunks))
}

fn stream_response(body: Body) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap()
}

/// A response with a status, headers and an empty body.
pub(crate) fn status(code: u16, headers: &[(&str, &str)]) -> Response<Body> {
    let mut response = Response::builder().status(StatusCode::from_u16(code).unwrap());
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(Body::empty()).unwrap()
}

/// The next item of the stream, within 5 s.
pub(crate) async fn next(source: &mut EventSource) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .expect("no item within 5 s")
        .expect("the stream ended")
}

/// The next item, which must be an open event.
pub(crate) async fn expect_open(source: &mut EventSource) {
    match next(source).await {
        Ok(Event::Open { .. }) => {}
        other => panic!("expected open, got {other:?}"),
    }
}

/// The next item, which must be a message: its (type, data, last event ID).
pub(crate) async fn expect_message(source: &mut EventSource) -> (String, String, String) {
    match next(source).await {
        Ok(Event::Message(m)) => (
            m.event_type.to_string(),
            m.data.to_string(),
            m.last_event_id.to_string(),
        ),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next item, which must be an error.
pub(crate) async fn expect_error(source: &mut EventSource) -> Error {
    match next(source).await {
        Err(err) => err,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The stream must end now (within 5 s).
pub(crate) async fn expect_end(source: &mut EventSource) {
    let item = tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .expect("the stream did not end within 5 s");
    assert!(item.is_none(), "expected the end, got {item:?}");
}

/// A source with fast reconnections (no floor) and no backoff nor jitter, for tests.
pub(crate) fn fast(url: &str) -> tidings_client::EventSourceBuilder {
    EventSource::builder(url)
        .reconnection_time(Duration::from_millis(10))
        .min_retry(Duration::ZERO)
        .backoff(tidings_client::Backoff::none())
}
