//! A hub on a real socket, a publisher and an SSE reader for the tests.

use std::collections::VecDeque;
use std::time::Duration;

use tidings_hub::auth::{MercureClaims, SigningKey, mint};
use tidings_hub::{Hub, HubBuilder};
use tidings_wire::{Decoder, Event, Frame};

/// The HS256 secret of every test hub.
pub(crate) const KEY: &[u8] = b"integration-test secret, 32+ bytes long";

/// How long a test waits for something that should happen promptly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A token signed with [`KEY`].
pub(crate) fn token(publish: &[&str], subscribe: &[&str]) -> String {
    token_with(publish, subscribe, None, None)
}

pub(crate) fn token_with(
    publish: &[&str],
    subscribe: &[&str],
    payload: Option<serde_json::Value>,
    ttl: Option<Duration>,
) -> String {
    let list = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|t| t.to_string()).collect());
    let claims = MercureClaims {
        publish: list(publish),
        subscribe: list(subscribe),
        payload,
    };
    mint(&SigningKey::hmac(KEY), &claims, ttl).expect("mint a test token")
}

/// A hub served on an ephemeral port; shut down when dropped.
pub(crate) struct TestHub {
    pub(crate) hub: Hub,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) publisher: String,
}

impl TestHub {
    pub(crate) async fn start() -> Self {
        Self::with(|b| b).await
    }

    pub(crate) async fn with(configure: impl FnOnce(HubBuilder) -> HubBuilder) -> Self {
        let builder = Hub::builder().jwt_key(tidings_hub::auth::KeyConfig::hmac(KEY));
        let hub = configure(builder).build().await.expect("build the hub");
        Self::serve(hub).await
    }

    pub(crate) async fn serve(hub: Hub) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hub.clone().serve(listener, std::future::pending()));
        Self {
            hub,
            base,
            client: reqwest::Client::new(),
            publisher: token(&["*"], &[]),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/.well-known/mercure", self.base)
    }

    /// What `/metrics` says now.
    pub(crate) async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics request");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// One series' value from `/metrics` (whose handler also refreshes the gauges that
    /// are computed when asked, such as history and cache sizes).
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// POSTs a publish form with the all-topics publisher token.
    pub(crate) async fn post(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_as(&self.publisher, form).await
    }

    pub(crate) async fn post_as(&self, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body = serde_urlencoded::to_string(form).unwrap();
        self.client
            .post(self.url())
            .bearer_auth(token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("publish request")
    }

    /// Publishes and returns the id, asserting success.
    pub(crate) async fn publish(&self, form: &[(&str, &str)]) -> String {
        let response = self.post(form).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "publish {form:?} refused: {body}");
        body
    }

    /// Opens a stream; `query` is the query string without `?`.
    pub(crate) async fn subscribe(&self, query: &str) -> Stream {
        self.subscribe_with(query, None, None).await
    }

    pub(crate) async fn subscribe_with(
        &self,
        query: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Stream {
        let response = self.request(query, token, last_event_id).await;
        assert_eq!(response.status(), 200, "subscribe {query}: {response:?}");
        Stream::new(response)
    }

    pub(crate) async fn request(
        &self,
        query: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(format!("{}?{query}", self.url()))
            .header("accept", "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.expect("subscribe request")
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.hub.shutdown();
    }
}

/// `topic=…&topic=…` for a list of topics, encoded.
pub(crate) fn topics_query(topics: &[&str]) -> String {
    let pairs: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    serde_urlencoded::to_string(pairs).unwrap()
}

/// An event stream being read.
pub(crate) struct Stream {
    pub(crate) response: reqwest::Response,
    decoder: Decoder,
    events: VecDeque<Event>,
    pub(crate) comments: usize,
}

impl Stream {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            decoder: Decoder::builder().comments(true).build(),
            events: VecDeque::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ends; panics after [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(PATIENCE, self.next_or_end())
            .await
            .expect("no event in time")
    }

    /// The next event or the end of the stream, without a time limit.
    pub(crate) async fn next_or_end(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let chunk = match self.response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) | Err(_) => return None,
            };
            self.decoder.feed(chunk);
            while let Some(frame) = self.decoder.next_frame().expect("valid stream") {
                match frame {
                    Frame::Event(event) => self.events.push_back(event),
                    Frame::Comment(_) => self.comments += 1,
                    _ => {}
                }
            }
        }
    }

    /// The next event, which must exist.
    pub(crate) async fn expect(&mut self) -> Event {
        self.next().await.expect("stream ended early")
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}
