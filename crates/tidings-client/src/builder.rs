//! [`EventSourceBuilder`]: everything about a source that is set before it connects.

use std::time::Duration;

use bytes::Bytes;
use rand::{SeedableRng, rngs::SmallRng};
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue};
use tidings_wire::{Decoder, DecoderBuilder, Text};

use crate::{
    Backoff, BuildError, EventSource, TransportError,
    event_source::Request,
    reconnect::{Policy, Reconnect},
};

/// The reconnection time before a server sets one with `retry:`.
pub const DEFAULT_RECONNECTION_TIME: Duration = Duration::from_secs(3);

/// The shortest wait before a reconnection, whatever the server's `retry:` or the
/// builder's reconnection time say: 500 ms, Firefox's floor. A server that sends
/// `retry: 0` and closes gets at most two reconnections a second from each client (fewer
/// with backoff), instead of hundreds, while any reconnection time a server means in
/// earnest (seconds) is left alone.
pub const DEFAULT_MIN_RETRY: Duration = Duration::from_millis(500);

/// How long a connection must stay open for the backoff to start over: 60 s, as in
/// LaunchDarkly's SSE clients. Shorter connections count as failures, so a server that
/// accepts and drops at once is backed off from like one that refuses.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// How much of the body of a response that is not 200 is kept in
/// [`Error::Status`](crate::Error::Status): 4 KiB, enough for any reason a server gives.
pub const DEFAULT_MAX_ERROR_BODY: usize = 4 << 10;

/// How long the body of a response that is not 200 is waited for when no
/// [`idle_timeout`](EventSourceBuilder::idle_timeout) is set: 5 s. What arrived by then
/// is kept; a server that never ends that body cannot stall the source.
pub const ERROR_BODY_WAIT: Duration = Duration::from_secs(5);

/// Called before each connection attempt for headers that change between connections.
pub(crate) type HeadersFn = Box<dyn FnMut() -> HeaderMap + Send>;

/// The room a line needs beyond its data: `data: ` and one more byte. With the default
/// line limit, a single-line event as large as the event limit allows fits in a line.
const FIELD_ROOM: usize = 8;

/// Configures an [`EventSource`]. Made by [`EventSource::builder`].
///
/// Nothing is checked or connected until [`build`](Self::build), which reports every
/// invalid setting as a [`BuildError`]; the first request is sent when the stream is
/// first polled.
///
/// ```
/// use std::time::Duration;
/// use tidings_client::{Backoff, EventSource, ReadyState};
///
/// let source = EventSource::builder("https://llm.example/v1/chat")
///     .method("POST")
///     .header("Authorization", "Bearer abc")
///     .header("Content-Type", "application/json")
///     .body(r#"{"stream":true}"#)
///     .reconnection_time(Duration::from_millis(500))
///     .backoff(Backoff::exponential(Duration::from_secs(10)))
///     .min_retry(Duration::from_millis(250))
///     .backoff_reset_after(Duration::from_secs(30))
///     .max_retries(5)
///     .idle_timeout(Duration::from_secs(45))
///     .max_event_size(1 << 20)
///     .last_event_id("42")
///     .build()?;
/// assert_eq!(source.ready_state(), ReadyState::Connecting);
/// assert_eq!(source.last_event_id(), "42");
/// # Ok::<(), tidings_client::BuildError>(())
/// ```
#[must_use]
pub struct EventSourceBuilder {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    /// The reconnection settings, handed to the reconnect policy as they are.
    policy: Policy,
    /// The comment and skip settings, passed through to the decoder as they are.
    decoder: DecoderBuilder,
    /// The line limit, if set; by default it follows the event limit.
    max_line_len: Option<usize>,
    max_event_size: usize,
    max_error_body: usize,
    headers_with: Option<HeadersFn>,
    skip_oversized: bool,
    last_event_id: String,
    client: Option<reqwest::Client>,
    jitter_seed: Option<u64>,
}

/// Shows the settings but not what may carry a credential: the URL's query (Mercure's
/// `authorization` parameter) and header values.
impl std::fmt::Debug for EventSourceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("EventSourceBuilder")
            .field("url", &crate::event_source::without_query(&self.url))
            .field("method", &self.method)
            .field("header_names", &headers)
            .field("policy", &self.policy)
            .field("decoder", &self.decoder)
            .field("max_line_len", &self.max_line_len)
            .field("max_event_size", &self.max_event_size)
            .field("max_error_body", &self.max_error_body)
            .field("headers_with", &self.headers_with.is_some())
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

impl EventSourceBuilder {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            body: None,
            policy: Policy {
                reconnection_time: DEFAULT_RECONNECTION_TIME,
                backoff: Backoff::default(),
                max_retries: None,
                idle_timeout: None,
                min_retry: DEFAULT_MIN_RETRY,
                backoff_reset_after: DEFAULT_BACKOFF_RESET_AFTER,
            },
            decoder: Decoder::builder(),
            max_line_len: None,
            max_event_size: tidings_wire::DEFAULT_MAX_EVENT_SIZE,
            max_error_body: DEFAULT_MAX_ERROR_BODY,
            headers_with: None,
            skip_oversized: false,
            last_event_id: String::new(),
            client: None,
            jitter_seed: None,
        }
    }

    /// The HTTP method (default `GET`). Streams of LLM and MCP servers use `POST` with a
    /// [`body`](Self::body). The same request, body included, is sent again at every
    /// reconnection.
    pub fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    /// The request body, sent with every connection attempt. Set its `Content-Type` with
    /// [`header`](Self::header).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a request header (repeat the name to send it several times).
    ///
    /// `Accept: text/event-stream` and `Cache-Control: no-cache` are sent unless set
    /// here. `Last-Event-ID` belongs to the source: set the initial one with
    /// [`last_event_id`](Self::last_event_id). For a header whose value changes
    /// between connections (a token that is refreshed), use
    /// [`headers_with`](Self::headers_with).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Headers computed again before each connection attempt, the first included: for
    /// a token that expires, read the current one here. The headers returned replace
    /// those of the same name set with [`header`](Self::header) (and the protocol's
    /// `Accept` and `Cache-Control`); a `Last-Event-ID` among them is ignored, as the
    /// source sends its own. The function runs in the task that polls the source: it
    /// should only read a value kept up to date elsewhere, not wait for one.
    ///
    /// To switch to a new token at once rather than at the next reconnection, call
    /// [`EventSource::restart`] (or [`CloseHandle::restart`](crate::CloseHandle::restart))
    /// after storing it.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tidings_client::{EventSource, HeaderMap, HeaderValue};
    ///
    /// let token = Arc::new(Mutex::new(String::from("first")));
    /// let current = Arc::clone(&token);
    /// let source = EventSource::builder("https://hub.example/.well-known/mercure?topic=a")
    ///     .headers_with(move || {
    ///         let mut headers = HeaderMap::new();
    ///         let bearer = format!("Bearer {}", current.lock().unwrap());
    ///         if let Ok(value) = HeaderValue::from_str(&bearer) {
    ///             headers.insert("authorization", value);
    ///         }
    ///         headers
    ///     })
    ///     .build()?;
    /// // Later, from the task that refreshes it:
    /// *token.lock().unwrap() = "second".into();
    /// source.close_handle().restart(); // reconnect now, with the new token
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn headers_with(mut self, headers: impl FnMut() -> HeaderMap + Send + 'static) -> Self {
        self.headers_with = Some(Box::new(headers));
        self
    }

    /// The reconnection time until the server sets one with `retry:` (default
    /// [`DEFAULT_RECONNECTION_TIME`], 3 s). Waits are never shorter than
    /// [`min_retry`](Self::min_retry).
    pub fn reconnection_time(mut self, time: Duration) -> Self {
        self.policy.reconnection_time = time;
        self
    }

    /// The shortest wait before a reconnection (default [`DEFAULT_MIN_RETRY`], 500 ms):
    /// a smaller reconnection time, from the builder or a server's `retry:`, is raised
    /// to it. `Duration::ZERO` honours any `retry:`, `retry: 0` included.
    pub fn min_retry(mut self, floor: Duration) -> Self {
        self.policy.min_retry = floor;
        self
    }

    /// How waits grow while connections keep failing (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// How long a connection must stay open for the backoff to start over (default
    /// [`DEFAULT_BACKOFF_RESET_AFTER`], 60 s). A connection that ends sooner counts as
    /// one more consecutive failure, so its reconnection waits longer than the last.
    pub fn backoff_reset_after(mut self, period: Duration) -> Self {
        self.policy.backoff_reset_after = period;
        self
    }

    /// Gives up after this many consecutive failed reconnections (default: never). The
    /// count restarts when a connection opens (a response that is an event stream),
    /// however short it lasts. With `0`, the first failure ends the stream.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.policy.max_retries = Some(retries);
        self
    }

    /// Takes a connection for dead when nothing arrives for this long, not even a
    /// comment, while waiting for the response or reading it (default: no timeout). Pick
    /// a value above the server's keep-alive interval.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.policy.idle_timeout = Some(timeout);
        self
    }

    /// The longest line accepted, in bytes. By default it follows the event limit (plus
    /// the few bytes of `data: `), so that any event the event limit allows can come as
    /// one line: a single-line JSON payload is limited by
    /// [`max_event_size`](Self::max_event_size) only.
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.max_line_len = Some(bytes);
        self
    }

    /// The most data one event may carry, in bytes (default
    /// [`tidings_wire::DEFAULT_MAX_EVENT_SIZE`], 16 MiB).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// What to do with an event over the limits (a line longer than
    /// [`max_line_len`](Self::max_line_len) or more data than
    /// [`max_event_size`](Self::max_event_size)). By default (`false`) the stream ends
    /// with the terminal [`Error::Limit`](crate::Error::Limit): the source cannot read
    /// it, and reconnecting would replay it. With `true`, the event is dropped (never
    /// buffered beyond the limits), the stream yields
    /// [`Error::Skipped`](crate::Error::Skipped), which is not terminal, and goes on
    /// with the next event on the same connection.
    pub fn skip_oversized(mut self, yes: bool) -> Self {
        self.decoder = self.decoder.skip_oversized(yes);
        self.skip_oversized = yes;
        self
    }

    /// How many bytes of the body of a response that is not 200 are kept in
    /// [`Error::Status`](crate::Error::Status) (default [`DEFAULT_MAX_ERROR_BODY`],
    /// 4 KiB; `0` reads none). The body is waited for at most the
    /// [`idle_timeout`](Self::idle_timeout), or [`ERROR_BODY_WAIT`] (5 s) without one.
    pub fn max_error_body(mut self, bytes: usize) -> Self {
        self.max_error_body = bytes;
        self
    }

    /// Whether comment lines are yielded as [`Event::Comment`](crate::Event::Comment)
    /// (default: no).
    pub fn comments(mut self, yes: bool) -> Self {
        self.decoder = self.decoder.comments(yes);
        self
    }

    /// The last event ID to resume from: sent as `Last-Event-ID` on the first request
    /// (when not empty) and carried by events until the stream sets another.
    pub fn last_event_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.last_event_id);
        self
    }

    /// The HTTP client to use, for its proxies, TLS roots, timeouts or redirect policy
    /// (default: a client of its own, following up to 10 redirects, and none that
    /// leads back to the URL that answered it, as an empty `Location` does: that one is
    /// [`Error::Redirect`](crate::Error::Redirect)). A client-wide `timeout` would cut
    /// long streams; prefer [`idle_timeout`](Self::idle_timeout).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Seeds the generator of the backoff's jitter, to make the waits reproducible
    /// (default: seeded from the operating system).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Checks the settings and makes the source. It connects when first polled.
    ///
    /// ```
    /// use tidings_client::{BuildError, EventSource};
    ///
    /// let err = EventSource::builder("http://localhost/")
    ///     .header("X-Token", "line\nbreak")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::InvalidHeader { .. }));
    /// ```
    pub fn build(self) -> Result<EventSource, BuildError> {
        let url = reqwest::Url::parse(&self.url).map_err(|err| BuildError::InvalidUrl {
            url: self.url.clone(),
            reason: err.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::UnsupportedScheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).map_err(|_| {
            BuildError::InvalidMethod {
                method: self.method.clone(),
            }
        })?;
        let headers = request_headers(&self.headers)?;
        check_last_event_id(&self.last_event_id)?;
        let client = match self.client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .redirect(redirect_policy())
                .build()
                .map_err(|err| BuildError::Client {
                    source: TransportError::new(err),
                })?,
        };
        let rng = match self.jitter_seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let max_line_len = self
            .max_line_len
            .unwrap_or(self.max_event_size.saturating_add(FIELD_ROOM));
        let decoder = self
            .decoder
            .max_line_len(max_line_len)
            .max_event_size(self.max_event_size)
            .last_event_id(Text::from(self.last_event_id))
            .build();
        Ok(EventSource::new(
            Request {
                client,
                method,
                url,
                headers,
                headers_with: self.headers_with,
                body: self.body,
                max_error_body: self.max_error_body,
                error_body_wait: self.policy.idle_timeout.unwrap_or(ERROR_BODY_WAIT),
                skip_oversized: self.skip_oversized,
            },
            decoder,
            Reconnect::new(self.policy, rng),
        ))
    }
}

/// The default client's redirects: at most 10, as reqwest's default, and none back to
/// the URL that answered (an empty `Location` resolves to it): without cookies, the same
/// request gets the same redirect again. Stopping hands the redirect back as the final
/// response, which is then [`Error::Redirect`](crate::Error::Redirect).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let next = attempt.url();
        let same = attempt.previous().last().is_some_and(|previous| {
            previous.as_str().split('#').next() == next.as_str().split('#').next()
        });
        if same {
            attempt.stop()
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The user's headers, then the protocol's unless the user set them.
fn request_headers(pairs: &[(String, String)]) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let invalid = |reason| BuildError::InvalidHeader {
            name: name.clone(),
            reason,
        };
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("not a valid name"))?;
        if header_name == "last-event-id" {
            return Err(invalid(
                "the source sends Last-Event-ID itself; set the first one with `last_event_id`",
            ));
        }
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| invalid("the value contains a line break or a control character"))?;
        headers.append(header_name, header_value);
    }
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static(tidings_wire::MIME_TYPE));
    }
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    Ok(headers)
}

fn check_last_event_id(id: &str) -> Result<(), BuildError> {
    let invalid = |reason| BuildError::InvalidLastEventId {
        id: id.to_owned(),
        reason,
    };
    if tidings_wire::validate_id(id).is_err() {
        return Err(invalid("an event ID cannot contain CR, LF or NUL"));
    }
    if HeaderValue::from_str(id).is_err() {
        return Err(invalid("it cannot be sent in an HTTP header"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_credentials() {
        let builder = EventSourceBuilder::new("http://hub.test/s?authorization=TOKEN1")
            .header("Authorization", "Bearer TOKEN2");
        let text = format!("{builder:?}");
        assert!(
            text.contains("http://hub.test/s") && text.contains("Authorization"),
            "{text}"
        );
        assert!(!text.contains("TOKEN"), "{text}");
        let source = builder.build().unwrap();
        let text = format!("{source:?}");
        assert!(!text.contains("TOKEN"), "{text}");
    }

    #[test]
    fn protocol_headers_are_added_unless_set() {
        let headers = request_headers(&[]).unwrap();
        assert_eq!(headers[ACCEPT], "text/event-stream");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        let headers =
            request_headers(&[("accept".into(), "text/event-stream, */*".into())]).unwrap();
        assert_eq!(headers[ACCEPT], "text/event-stream, */*");
        assert_eq!(headers.get_all(ACCEPT).iter().count(), 1);
    }

    #[test]
    fn repeated_headers_are_all_sent() {
        let headers =
            request_headers(&[("X-A".into(), "1".into()), ("x-a".into(), "2".into())]).unwrap();
        let values: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let build = |b: EventSourceBuilder| b.build().unwrap_err();
        let base = || EventSourceBuilder::new("http://127.0.0.1/");
        assert!(matches!(
            build(EventSourceBuilder::new("not a url")),
            BuildError::InvalidUrl { .. }
        ));
        assert!(matches!(
            build(EventSourceBuilder::new("ws://host/")),
            BuildError::UnsupportedScheme { scheme } if scheme == "ws"
        ));
        assert!(matches!(
            build(base().method("GE T")),
            BuildError::InvalidMethod { .. }
        ));
        assert!(matches!(
            build(base().header("bad name", "x")),
            BuildError::InvalidHeader { .. }
        ));
        assert!(matches!(
            build(base().header("Last-Event-ID", "1")),
            BuildError::InvalidHeader { .. }
        ));
        assert!(matches!(
            build(base().last_event_id("a\nb")),
            BuildError::InvalidLastEventId { .. }
        ));
        assert!(matches!(
            build(base().last_event_id("a\u{1}b")),
            BuildError::InvalidLastEventId { .. }
        ));
    }

    #[test]
    fn a_utf8_last_event_id_is_accepted() {
        let source = EventSourceBuilder::new("http://127.0.0.1/")
            .last_event_id("é-7")
            .build()
            .unwrap();
        assert_eq!(source.last_event_id(), "é-7");
    }
}
