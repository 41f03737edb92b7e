//! What the stream yields: [`Event`], [`MessageEvent`], and the [`ReadyState`].

use std::fmt;

use tidings_wire::Text;

/// A successful item of an [`EventSource`](crate::EventSource) stream.
///
/// ```
/// use tidings_client::Event;
///
/// fn describe(event: &Event) -> String {
///     match event {
///         Event::Open { url } => format!("connected to {url}"),
///         Event::Message(message) => format!("{}: {}", message.event_type, message.data),
///         Event::Comment(text) => format!("comment {text}"),
///         _ => "something new".to_owned(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection opened: the response was a 200 `text/event-stream` (the `open`
    /// event). Sent again after each reconnection.
    Open {
        /// The URL of the response, after redirects.
        url: Text,
    },
    /// An event was dispatched (the `message` event and named types alike).
    Message(MessageEvent),
    /// A comment line, without its colon and one leading space. Only when enabled with
    /// [`EventSourceBuilder::comments`](crate::EventSourceBuilder::comments); servers
    /// send comments as keep-alives.
    Comment(Text),
}

/// One dispatched event, as a `MessageEvent` of the browser API.
///
/// The strings are [`Text`]s: slices of the received bytes where possible, cloned by
/// reference count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MessageEvent {
    /// The event type: the `event:` field, or `message` when there was none.
    pub event_type: Text,
    /// The data: the `data:` lines joined with LF.
    pub data: Text,
    /// The stream's last event ID when the event was dispatched (the `lastEventId`
    /// attribute): set by this event's `id:` field or carried over from earlier ones.
    pub last_event_id: Text,
    /// The URL of the response that carried the event, after redirects.
    pub url: Text,
    /// The origin of that URL (`scheme://host[:port]`, the `origin` attribute).
    pub origin: Text,
}

impl MessageEvent {
    /// The message a stream read from `url` yields for a decoded `event`: for tests of
    /// code that consumes messages (the source makes its own).
    ///
    /// ```
    /// use tidings_client::MessageEvent;
    /// use tidings_wire::Event;
    ///
    /// let message = MessageEvent::new(Event::new("hi"), "https://example.com:8443/feed?x");
    /// assert_eq!(message.event_type, "message");
    /// assert_eq!(message.data, "hi");
    /// assert_eq!(message.origin, "https://example.com:8443");
    /// assert_eq!(MessageEvent::new(Event::new("hi"), "not a URL").origin, "null");
    /// ```
    pub fn new(event: tidings_wire::Event, url: &str) -> Self {
        let origin = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed.origin().ascii_serialization(),
            // What an opaque origin serializes to.
            Err(_) => "null".to_owned(),
        };
        Self {
            event_type: event.event_type,
            data: event.data,
            last_event_id: event.id,
            url: Text::from(url),
            origin: Text::from(origin),
        }
    }
}

/// The state of an [`EventSource`](crate::EventSource), numbered as `readyState`.
///
/// ```
/// use tidings_client::ReadyState;
///
/// assert_eq!(ReadyState::Open as u8, 1);
/// assert_eq!(ReadyState::Closed.to_string(), "CLOSED");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// Connecting, or waiting to reconnect (0).
    Connecting = 0,
    /// Open: events may arrive (1).
    Open = 1,
    /// Closed for good: by [`close`](crate::EventSource::close), a terminal error or the
    /// end of the retries (2).
    Closed = 2,
}

impl ReadyState {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Connecting,
            1 => Self::Open,
            _ => Self::Closed,
        }
    }
}

impl fmt::Display for ReadyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connecting => "CONNECTING",
            Self::Open => "OPEN",
            Self::Closed => "CLOSED",
        })
    }
}
