//! [`EventSource`]: the stream, and the driver that runs the reconnect policy over reqwest.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, task::AtomicWaker};
use rand::rngs::SmallRng;
use reqwest::header::{HeaderMap, HeaderValue};
use tidings_wire::{Decoder, Frame, Text};
use tokio::time::{Instant, Sleep};

use crate::{
    Error, Event, EventSourceBuilder, MessageEvent, ReadyState, TransportError,
    builder::HeadersFn,
    reconnect::{Decision, Reconnect, Wake},
    response,
};

/// The request sent at every connection attempt, and how its answers are read.
pub(crate) struct Request {
    pub(crate) client: reqwest::Client,
    pub(crate) method: reqwest::Method,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: HeaderMap,
    /// Headers computed again before each attempt; they replace those of `headers`.
    pub(crate) headers_with: Option<HeadersFn>,
    pub(crate) body: Option<Bytes>,
    /// How much of the body of a response that is not 200 is kept, and how long it is
    /// waited for.
    pub(crate) max_error_body: usize,
    pub(crate) error_body_wait: Duration,
    /// Whether an event over the limits is skipped (the decoder is set likewise).
    pub(crate) skip_oversized: bool,
}

impl Request {
    /// The headers of the next attempt: the fixed ones, and the callback's in place of
    /// those of the same name.
    fn headers(&mut self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(headers_with) = &mut self.headers_with {
            let fresh = headers_with();
            for name in fresh.keys() {
                headers.remove(name);
            }
            for (name, value) in &fresh {
                if name != "last-event-id" {
                    headers.append(name, value.clone());
                }
            }
        }
        headers
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = reqwest::Result<reqwest::Response>> + Send>>;
type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
type Refusal = Pin<Box<dyn Future<Output = Error> + Send>>;

/// What the driver holds between polls.
enum Connection {
    /// No request in flight: before the first one, or waiting to reconnect.
    None,
    /// The request was sent; the response has not arrived.
    Requesting(ResponseFuture),
    /// The response is an event stream; its body is being read.
    Reading(Body),
    /// The response is not 200: the start of its body is being read for the error.
    Refused(Refusal),
    /// Closed for good; the stream has ended or ends at the next poll.
    Closed,
}

/// What a [`CloseHandle`] shares with its source.
#[derive(Debug)]
struct Shared {
    closed: AtomicBool,
    /// A restart was asked for and not yet done.
    restart: AtomicBool,
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Shared {
    fn ready_state(&self) -> ReadyState {
        if self.closed.load(Ordering::Acquire) {
            ReadyState::Closed
        } else {
            ReadyState::from_u8(self.state.load(Ordering::Acquire))
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn restart(&self) {
        self.restart.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// An EventSource: a connection to a `text/event-stream` that reconnects by itself, as
/// the WHATWG HTML standard defines it, with the additions programs need (methods and
/// bodies, headers, backoff, an idle timeout, limits).
///
/// It is a [`Stream`] of `Result<`[`Event`]`, `[`Error`]`>`. Errors that allow
/// reconnecting are yielded and the stream goes on; a [terminal](Error::is_terminal)
/// error is the last item. The first request is sent when the stream is first polled,
/// inside a tokio runtime.
///
/// ```
/// use futures_util::StreamExt;
/// use tidings_client::{Event, EventSource};
/// use tokio::{io::{AsyncReadExt, AsyncWriteExt}, net::TcpListener};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A one-shot server that sends two events.
/// let listener = TcpListener::bind("127.0.0.1:0").await?;
/// let url = format!("http://{}/feed", listener.local_addr()?);
/// tokio::spawn(async move {
///     let (mut socket, _) = listener.accept().await?;
///     let mut request = [0; 1024];
///     let _ = socket.read(&mut request).await?;
///     socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
///                        id: 1\ndata: hello\n\nevent: bye\ndata: world\n\n").await?;
///     std::io::Result::Ok(socket) // keeps the connection open
/// });
///
/// let mut source = EventSource::get(&url)?;
/// assert!(matches!(source.next().await, Some(Ok(Event::Open { .. }))));
/// let Some(Ok(Event::Message(hello))) = source.next().await else { panic!() };
/// assert_eq!((hello.event_type.as_str(), hello.data.as_str()), ("message", "hello"));
/// let Some(Ok(Event::Message(bye))) = source.next().await else { panic!() };
/// assert_eq!((bye.event_type.as_str(), bye.last_event_id.as_str()), ("bye", "1"));
/// source.close();
/// assert!(source.next().await.is_none());
/// # Ok(()) }
/// ```
pub struct EventSource {
    request: Request,
    decoder: Decoder,
    policy: Reconnect<SmallRng>,
    connection: Connection,
    /// The one timer: armed at the policy's deadline (a reconnection or an idle timeout).
    /// Made at the first poll, where a runtime is known to exist.
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline the timer is armed for.
    timer_deadline: Option<Instant>,
    /// The URL and origin of the current response, shared by its events.
    url: Text,
    origin: Text,
    shared: Arc<Shared>,
}

impl EventSource {
    /// A builder for a source reading `url`.
    ///
    /// ```
    /// let builder = tidings_client::EventSource::builder("https://example.com/events");
    /// # drop(builder);
    /// ```
    pub fn builder(url: &str) -> EventSourceBuilder {
        EventSourceBuilder::new(url)
    }

    /// A source that reads `url` with `GET` and the default settings.
    ///
    /// ```
    /// let source = tidings_client::EventSource::get("https://example.com/events")?;
    /// assert_eq!(source.url(), "https://example.com/events");
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn get(url: &str) -> Result<Self, crate::BuildError> {
        Self::builder(url).build()
    }

    pub(crate) fn new(request: Request, decoder: Decoder, policy: Reconnect<SmallRng>) -> Self {
        let url = Text::from(request.url.as_str());
        let origin = Text::from(request.url.origin().ascii_serialization());
        Self {
            request,
            decoder,
            policy,
            connection: Connection::None,
            timer: None,
            timer_deadline: None,
            url,
            origin,
            shared: Arc::new(Shared {
                closed: AtomicBool::new(false),
                restart: AtomicBool::new(false),
                state: AtomicU8::new(ReadyState::Connecting as u8),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// The state: connecting (also while waiting to reconnect), open, or closed.
    ///
    /// ```
    /// use tidings_client::{EventSource, ReadyState};
    ///
    /// let mut source = EventSource::get("http://127.0.0.1:1/")?;
    /// assert_eq!(source.ready_state(), ReadyState::Connecting);
    /// source.close();
    /// assert_eq!(source.ready_state(), ReadyState::Closed);
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn ready_state(&self) -> ReadyState {
        self.shared.ready_state()
    }

    /// The last event ID: sent as `Last-Event-ID` when reconnecting (unless empty).
    ///
    /// ```
    /// let source = tidings_client::EventSource::builder("http://127.0.0.1:1/")
    ///     .last_event_id("7")
    ///     .build()?;
    /// assert_eq!(source.last_event_id(), "7");
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn last_event_id(&self) -> Text {
        self.decoder.last_event_id().clone()
    }

    /// The URL of the stream: the one given to the builder until a response arrives,
    /// then the final URL of the last response (after redirects).
    ///
    /// ```
    /// let source = tidings_client::EventSource::get("http://127.0.0.1:1/a?b")?;
    /// assert_eq!(source.url(), "http://127.0.0.1:1/a?b");
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn url(&self) -> &Text {
        &self.url
    }

    /// While the source waits to reconnect (after an error that is not terminal), how
    /// long until the next attempt; `None` otherwise. For messages such as "retrying in
    /// 3s": the wait includes the backoff's jitter.
    ///
    /// ```
    /// let source = tidings_client::EventSource::get("http://127.0.0.1:1/")?;
    /// assert_eq!(source.retry_in(), None); // not waiting: not even started
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn retry_in(&self) -> Option<Duration> {
        let until = self.policy.waiting_until()?;
        Some(until.saturating_duration_since(Self::now()))
    }

    /// Closes the source for good: the connection or the pending reconnection is
    /// dropped now, the state is [`Closed`](ReadyState::Closed) and the stream ends.
    ///
    /// ```
    /// let mut source = tidings_client::EventSource::get("http://127.0.0.1:1/")?;
    /// source.close();
    /// assert_eq!(source.ready_state(), tidings_client::ReadyState::Closed);
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn close(&mut self) {
        self.shared.close();
        self.shut_down();
    }

    /// Drops the current connection (or the pending reconnection, or the request in
    /// flight) and connects again at once, as a reconnection would: with the last event
    /// ID, the reconnection time and the backoff and retry counts as they are, and the
    /// headers of [`headers_with`](EventSourceBuilder::headers_with) computed again. It
    /// is not a failure: no error is yielded, and the next item is the new
    /// connection's (an [`Event::Open`], or an error). Events received but not yet
    /// yielded are dropped; they come again after the last event ID.
    ///
    /// It takes effect at the next poll. A closed source stays closed, and one not yet
    /// polled connects at its first poll anyway. From another task, use
    /// [`CloseHandle::restart`].
    ///
    /// ```
    /// let mut source = tidings_client::EventSource::get("http://127.0.0.1:1/")?;
    /// source.restart(); // before the first poll: nothing to drop
    /// assert_eq!(source.ready_state(), tidings_client::ReadyState::Connecting);
    /// # Ok::<(), tidings_client::BuildError>(())
    /// ```
    pub fn restart(&mut self) {
        self.shared.restart();
    }

    /// A handle that closes this source from elsewhere (another task or thread), for
    /// example while the stream is being awaited or waits to reconnect.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use tidings_client::{EventSource, ReadyState};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), tidings_client::BuildError> {
    /// let mut source = EventSource::get("http://127.0.0.1:1/")?; // nothing listens there
    /// let handle = source.close_handle();
    /// tokio::spawn(async move { handle.close() });
    /// // Connection errors, reconnections… until the handle closes the source.
    /// while let Some(_item) = source.next().await {}
    /// assert_eq!(source.ready_state(), ReadyState::Closed);
    /// # Ok(()) }
    /// ```
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Drops whatever is in flight and forgets the timer.
    fn shut_down(&mut self) {
        self.policy.close();
        self.connection = Connection::Closed;
        self.timer = None;
        self.timer_deadline = None;
        self.decoder.finish();
        self.publish_state();
    }

    fn publish_state(&self) {
        self.shared
            .state
            .store(self.policy.ready_state() as u8, Ordering::Release);
    }

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    /// Does a restart asked for with [`restart`](Self::restart) or a handle.
    fn restart_now(&mut self) {
        if matches!(self.connection, Connection::Closed) || self.policy.is_idle() {
            return;
        }
        tracing::debug!("restarting");
        self.connection = Connection::None;
        self.decoder.finish();
        self.policy.restart(Self::now());
        self.connect();
    }

    /// Sends the request, with the last event ID as it is now.
    fn connect(&mut self) {
        let headers = self.request.headers();
        let request = &self.request;
        let mut builder = request
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(headers);
        let id = self.decoder.last_event_id();
        if !id.is_empty() {
            match HeaderValue::from_str(id) {
                Ok(value) => builder = builder.header("last-event-id", value),
                // An id with a control character (other than the CR, LF and NUL the
                // format excludes) cannot be a header value; resuming from the start
                // beats not connecting.
                Err(_) => tracing::warn!(
                    id = %id.escape_debug(),
                    "last event ID cannot be sent as a header; reconnecting without it"
                ),
            }
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        // Not the query: it may carry a token (Mercure's `authorization` parameter).
        tracing::debug!(
            host = request.url.host_str().unwrap_or_default(),
            path = request.url.path(),
            last_event_id = %id,
            "connecting"
        );
        self.connection = Connection::Requesting(Box::pin(builder.send()));
        self.publish_state();
    }

    /// A failure that allows reconnecting: report it, then wait (or give up).
    fn failed(&mut self, err: Error) -> Poll<Option<Result<Event, Error>>> {
        self.connection = Connection::None;
        self.decoder.finish();
        let item = match self.policy.failed(Self::now()) {
            Decision::ReconnectAfter(wait) => {
                tracing::debug!(error = %err, ?wait, "connection failed; reconnecting");
                err
            }
            Decision::GiveUp { retries } => {
                tracing::debug!(error = %err, retries, "connection failed; giving up");
                self.shut_down();
                Error::RetriesExhausted {
                    retries,
                    last: Box::new(err),
                }
            }
        };
        self.publish_state();
        Poll::Ready(Some(Err(item)))
    }

    /// A failure that ends the stream.
    fn fail(&mut self, err: Error) -> Poll<Option<Result<Event, Error>>> {
        tracing::debug!(error = %err, "connection failed for good");
        self.shut_down();
        Poll::Ready(Some(Err(err)))
    }

    /// Polls the timer armed at the policy's deadline. `Ready` when a deadline passed
    /// and the policy says what it means.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        loop {
            let Some(deadline) = self.policy.deadline().map(Instant::from_std) else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if self.timer_deadline != Some(deadline) {
                timer.as_mut().reset(deadline);
                self.timer_deadline = Some(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer says the deadline passed, whatever a coarser clock reads.
            let now = Self::now().max(deadline.into_std());
            match self.policy.on_timeout(now) {
                // The deadline moved meanwhile (bytes arrived): arm the timer again.
                Wake::NotYet => {}
                wake => return Poll::Ready(wake),
            }
        }
    }

    fn idle_timeout(&mut self) -> Poll<Option<Result<Event, Error>>> {
        let timeout = self.policy.idle_timeout().unwrap_or_default();
        self.failed(Error::IdleTimeout { timeout })
    }

    /// Returns `Pending`, after making sure a [`CloseHandle`] can wake this task. The
    /// waker is registered only here: a task that gets an item polls again anyway.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        self.shared.waker.register(cx.waker());
        // A close between the check at the top of `poll_next` and the registration
        // would have woken no one: look again.
        if self.shared.closed.load(Ordering::Acquire) {
            return self.closed_by_handle();
        }
        // Likewise a restart: poll again at once, where `poll_next` does it.
        if self.shared.restart.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn closed_by_handle(&mut self) -> Poll<Option<Result<Event, Error>>> {
        if !matches!(self.connection, Connection::Closed) {
            self.shut_down();
        }
        Poll::Ready(None)
    }

    /// Takes the next frame out of the decoder; `None` when it needs more bytes.
    fn next_decoded(&mut self) -> Option<Poll<Option<Result<Event, Error>>>> {
        loop {
            match self.decoder.next_frame() {
                Ok(None) => return None,
                Ok(Some(Frame::Event(event))) => {
                    return Some(Poll::Ready(Some(Ok(Event::Message(MessageEvent {
                        event_type: event.event_type,
                        data: event.data,
                        last_event_id: event.id,
                        url: self.url.clone(),
                        origin: self.origin.clone(),
                    })))));
                }
                Ok(Some(Frame::Retry(time))) => self.policy.set_reconnection_time(time),
                Ok(Some(Frame::Comment(text))) => {
                    return Some(Poll::Ready(Some(Ok(Event::Comment(text)))));
                }
                Ok(Some(_)) => {}
                Err(err) if self.request.skip_oversized => {
                    tracing::debug!(error = %err, "event skipped");
                    return Some(Poll::Ready(Some(Err(Error::Skipped { cause: err }))));
                }
                Err(err) => return Some(self.fail(Error::Limit(err))),
            }
        }
    }
}

impl Stream for EventSource {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.shared.closed.load(Ordering::Acquire) {
            return this.closed_by_handle();
        }
        if this.shared.restart.swap(false, Ordering::AcqRel) {
            this.restart_now();
        }
        loop {
            match &mut this.connection {
                Connection::Closed => return Poll::Ready(None),
                Connection::None if this.policy.is_idle() => {
                    this.policy.start(Self::now());
                    this.connect();
                }
                Connection::None => match this.poll_timer(cx) {
                    Poll::Ready(Wake::Reconnect) => this.connect(),
                    // Not connected: nothing else can time out.
                    Poll::Ready(_) | Poll::Pending => return this.pending(cx),
                },
                Connection::Requesting(future) => match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        let checked =
                            response::check(response.status().as_u16(), response.headers());
                        let final_url = response.url();
                        if final_url.as_str() != this.url.as_str() {
                            this.url = Text::from(final_url.as_str());
                            this.origin = Text::from(final_url.origin().ascii_serialization());
                        }
                        match checked {
                            Ok(()) => {}
                            Err(Error::Status { status, .. })
                                if this.request.max_error_body > 0 =>
                            {
                                this.connection = Connection::Refused(Box::pin(refusal(
                                    status,
                                    response,
                                    this.request.max_error_body,
                                    this.request.error_body_wait,
                                )));
                                continue;
                            }
                            Err(err) => return this.fail(err),
                        }
                        this.policy.opened(Self::now());
                        this.publish_state();
                        tracing::debug!("open");
                        this.connection = Connection::Reading(Box::pin(response.bytes_stream()));
                        return Poll::Ready(Some(Ok(Event::Open {
                            url: this.url.clone(),
                        })));
                    }
                    Poll::Ready(Err(err)) => {
                        let source = TransportError::new(err);
                        return if source.is_redirect() {
                            this.fail(Error::TooManyRedirects { source })
                        } else if source.is_builder() {
                            this.fail(Error::Request { source })
                        } else {
                            this.failed(Error::Connect { source })
                        };
                    }
                    Poll::Pending => {
                        return match this.poll_timer(cx) {
                            Poll::Ready(Wake::IdleTimeout) => this.idle_timeout(),
                            Poll::Ready(_) | Poll::Pending => this.pending(cx),
                        };
                    }
                },
                Connection::Refused(refusal) => match refusal.as_mut().poll(cx) {
                    Poll::Ready(err) => return this.fail(err),
                    Poll::Pending => return this.pending(cx),
                },
                Connection::Reading(_) => {
                    // Everything already received goes out before more is read.
                    if let Some(item) = this.next_decoded() {
                        return item;
                    }
                    let Connection::Reading(body) = &mut this.connection else {
                        continue;
                    };
                    match body.as_mut().poll_next(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            if this.policy.idle_timeout().is_some() {
                                this.policy.activity(Self::now());
                            }
                            this.decoder.feed(chunk);
                        }
                        Poll::Ready(Some(Err(err))) => {
                            return this.failed(Error::Read {
                                source: TransportError::new(err),
                            });
                        }
                        Poll::Ready(None) => return this.failed(Error::EndOfStream),
                        Poll::Pending => {
                            return match this.poll_timer(cx) {
                                Poll::Ready(Wake::IdleTimeout) => this.idle_timeout(),
                                Poll::Ready(_) | Poll::Pending => this.pending(cx),
                            };
                        }
                    }
                }
            }
        }
    }
}

/// The error for a response that is not 200: its status and the start of its body, as
/// much as arrives within `wait`, cut at `limit` bytes (and at the last whole character).
async fn refusal(status: u16, response: reqwest::Response, limit: usize, wait: Duration) -> Error {
    let mut body = Vec::new();
    let read = async {
        let mut chunks = response.bytes_stream();
        while body.len() < limit {
            let Some(Ok(chunk)) = chunks.next().await else {
                break;
            };
            let take = chunk.len().min(limit - body.len());
            body.extend_from_slice(&chunk[..take]);
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    if let Err(err) = std::str::from_utf8(&body)
        && err.error_len().is_none()
    {
        // The cut fell inside a character.
        body.truncate(err.valid_up_to());
    }
    Error::Status {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A URL without its query, for logs and `Debug`: the query may carry a token
/// (Mercure's `authorization` parameter).
pub(crate) fn without_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSource")
            .field("url", &without_query(&self.url))
            .field("ready_state", &self.ready_state())
            .field("last_event_id", self.decoder.last_event_id())
            .field("reconnection_time", &self.policy.reconnection_time())
            .finish_non_exhaustive()
    }
}

/// Closes or [restarts](Self::restart) an [`EventSource`] from another task or thread.
/// Cheap to clone.
///
/// Closing wakes the task that polls the source; the stream then ends and drops its
/// connection or its pending reconnection.
///
/// ```
/// let mut source = tidings_client::EventSource::get("http://127.0.0.1:1/")?;
/// let handle = source.close_handle();
/// assert!(!handle.is_closed());
/// handle.close();
/// assert!(handle.is_closed());
/// assert_eq!(source.ready_state(), tidings_client::ReadyState::Closed);
/// # Ok::<(), tidings_client::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CloseHandle {
    shared: Arc<Shared>,
}

impl CloseHandle {
    /// Closes the source for good.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Makes the source drop its connection and connect again at once, keeping its last
    /// event ID and retry state: see [`EventSource::restart`]. It wakes the task that
    /// polls the source.
    pub fn restart(&self) {
        self.shared.restart();
    }

    /// Whether the source is closed (by anyone, or by a terminal error).
    pub fn is_closed(&self) -> bool {
        self.shared.ready_state() == ReadyState::Closed
    }

    /// The source's state.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.ready_state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_moves_between_tasks_and_a_handle_is_shared_between_threads() {
        fn send_unpin<T: Send + Unpin + 'static>() {}
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        send_unpin::<EventSource>();
        send_sync::<CloseHandle>();
    }

    #[test]
    fn closing_through_a_handle_is_seen_by_every_handle_and_the_source() {
        let source = EventSource::get("http://127.0.0.1:1/").unwrap();
        let (a, b) = (source.close_handle(), source.close_handle());
        assert_eq!(b.ready_state(), ReadyState::Connecting);
        a.close();
        assert!(b.is_closed());
        assert_eq!(source.ready_state(), ReadyState::Closed);
    }

    #[test]
    fn the_origin_is_the_urls_scheme_host_and_port() {
        let source = EventSource::get("https://example.com:8443/a/b?c=d").unwrap();
        assert_eq!(source.origin, "https://example.com:8443");
        let source = EventSource::get("https://example.com:443/").unwrap();
        assert_eq!(source.origin, "https://example.com");
    }
}
