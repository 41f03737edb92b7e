//! What can go wrong: [`Error`] (items of the stream), [`BuildError`] (the builder) and
//! [`TransportError`] (the HTTP layer's cause, kept opaque).

use std::{fmt, time::Duration};

use tidings_wire::DecodeError;

/// An error item of an [`EventSource`](crate::EventSource) stream.
///
/// Some errors end the stream for good ([`is_terminal`](Self::is_terminal) — the
/// standard's "fail the connection"): the next item is `None` and the ready state is
/// [`Closed`](crate::ReadyState::Closed). The others are reported, then the source
/// waits the reconnection time (plus backoff) and reconnects by itself, as a browser
/// fires `error` and reconnects.
///
/// | Error | Terminal |
/// |---|---|
/// | [`Connect`](Self::Connect), [`Read`](Self::Read), [`EndOfStream`](Self::EndOfStream), [`IdleTimeout`](Self::IdleTimeout) | no: reconnects |
/// | [`Skipped`](Self::Skipped) | no: the stream goes on with the next event, on the same connection |
/// | [`Status`](Self::Status), [`ContentType`](Self::ContentType), [`Redirect`](Self::Redirect), [`TooManyRedirects`](Self::TooManyRedirects), [`Request`](Self::Request), [`Limit`](Self::Limit), [`RetriesExhausted`](Self::RetriesExhausted) | yes |
///
/// ```
/// use tidings_client::Error;
///
/// let err = Error::Status { status: 204, body: String::new() };
/// assert!(err.is_terminal());
/// assert_eq!(err.status(), Some(204));
/// assert_eq!(err.to_string(), "the server answered 204 No Content instead of 200 OK");
///
/// let err = Error::Status { status: 401, body: "token expired 6s ago\n".into() };
/// assert_eq!(err.body(), Some("token expired 6s ago\n"));
/// assert_eq!(
///     err.to_string(),
///     "the server answered 401 Unauthorized instead of 200 OK: token expired 6s ago"
/// );
/// assert!(!Error::EndOfStream.is_terminal());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request failed before a response arrived (DNS, refused connection, TLS, reset).
    #[error("cannot connect: {source}")]
    Connect {
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// The connection broke while the body was being read.
    #[error("the connection broke: {source}")]
    Read {
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// The server ended the response body.
    #[error("the server ended the stream")]
    EndOfStream,
    /// Nothing arrived (not even a comment) for the idle timeout, while waiting for the
    /// response or reading its body: the connection is taken for dead.
    #[error("nothing received for {}", DisplayDuration(*timeout))]
    IdleTimeout {
        /// The configured idle timeout.
        timeout: Duration,
    },
    /// The final status was not 200 OK (204 No Content is how servers say "stop").
    /// `Display` adds the first line of the body, which usually says why (a Mercure hub
    /// answers `401` with `token expired 6s ago`).
    #[error("the server answered {} instead of 200 OK{}", StatusText(*status), BodyLine(body))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, lossy UTF-8: at most
        /// [`EventSourceBuilder::max_error_body`](crate::EventSourceBuilder::max_error_body)
        /// bytes (4 KiB by default), read for at most the idle timeout (or
        /// [`ERROR_BODY_WAIT`](crate::ERROR_BODY_WAIT) without one). Empty when the
        /// body was empty or did not come in time.
        body: String,
    },
    /// The response's `Content-Type` essence was not `text/event-stream`.
    #[error("the response is {}, not text/event-stream", match content_type {
        Some(value) => format!("`{value}`"),
        None => "without a content type".to_owned(),
    })]
    ContentType {
        /// The `Content-Type` header as received (lossy UTF-8), if there was one.
        content_type: Option<String>,
    },
    /// A redirect (301, 302, 303, 307, 308) that was not followed: its `Location` is
    /// missing, empty, not a URL, or the URL that answered the redirect (or a client given with [`EventSourceBuilder::client`](crate::EventSourceBuilder::client)
    /// has a redirect policy that stops it).
    #[error("redirect {status} without a usable Location{}", match location.as_deref() {
        Some("") => " (it is empty)".to_owned(),
        Some(value) => format!(" (`{value}`)"),
        None => String::new(),
    })]
    Redirect {
        /// The redirect's status code.
        status: u16,
        /// The `Location` header as received (lossy UTF-8), if there was one.
        location: Option<String>,
    },
    /// Redirects went on too long (more than the client's redirect policy allows).
    #[error("too many redirects: {source}")]
    TooManyRedirects {
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// The request could not be made at all (for example a redirect to a URL whose scheme
    /// is not HTTP).
    #[error("the request cannot be made: {source}")]
    Request {
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// A line or an event exceeded the configured limits: the stream cannot be read
    /// under them, and reconnecting would replay the same event.
    #[error(transparent)]
    Limit(#[from] DecodeError),
    /// An event exceeded the configured limits and was skipped, as
    /// [`EventSourceBuilder::skip_oversized`](crate::EventSourceBuilder::skip_oversized)
    /// asks: the stream goes on with the next event, on the same connection. The
    /// skipped event's `id:` still takes effect.
    #[error("skipped an event: {cause}")]
    Skipped {
        /// The limit it exceeded.
        #[source]
        cause: DecodeError,
    },
    /// The allowed number of reconnections failed; `last` is the final failure.
    #[error("gave up after {retries} reconnection attempt{}: {last}", if *retries == 1 { "" } else { "s" })]
    RetriesExhausted {
        /// How many reconnections were tried since the last connection that opened.
        retries: u32,
        /// The failure that used up the last attempt.
        #[source]
        last: Box<Error>,
    },
}

impl Error {
    /// Whether this error ends the stream for good (see the table on [`Error`]).
    ///
    /// ```
    /// use tidings_client::Error;
    /// assert!(Error::ContentType { content_type: None }.is_terminal());
    /// assert!(!Error::IdleTimeout { timeout: std::time::Duration::from_secs(1) }.is_terminal());
    /// ```
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::Connect { .. }
                | Self::Read { .. }
                | Self::EndOfStream
                | Self::IdleTimeout { .. }
                | Self::Skipped { .. }
        )
    }

    /// The HTTP status of a [`Status`](Self::Status) or [`Redirect`](Self::Redirect)
    /// error (including one that used up the retries).
    ///
    /// ```
    /// use tidings_client::Error;
    /// assert_eq!(Error::Redirect { status: 302, location: None }.status(), Some(302));
    /// assert_eq!(Error::EndOfStream.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::Redirect { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The start of the response body of a [`Status`](Self::Status) error (including
    /// one that used up the retries); `None` for other errors.
    ///
    /// ```
    /// use tidings_client::Error;
    /// let err = Error::Status { status: 403, body: "topic not allowed".into() };
    /// assert_eq!(err.body(), Some("topic not allowed"));
    /// assert_eq!(Error::EndOfStream.body(), None);
    /// ```
    pub fn body(&self) -> Option<&str> {
        match self {
            Self::Status { body, .. } => Some(body),
            Self::RetriesExhausted { last, .. } => last.body(),
            _ => None,
        }
    }
}

/// An error in the builder's settings, found by
/// [`EventSourceBuilder::build`](crate::EventSourceBuilder::build).
///
/// ```
/// use tidings_client::{BuildError, EventSource};
///
/// let err = EventSource::get("ftp://example.com/feed").unwrap_err();
/// assert!(matches!(err, BuildError::UnsupportedScheme { .. }));
/// assert_eq!(err.to_string(), "unsupported URL scheme `ftp` (http or https expected)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL does not parse.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The URL's scheme is not `http` or `https`.
    #[error("unsupported URL scheme `{scheme}` (http or https expected)")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// The method is not a valid HTTP method token.
    #[error("invalid HTTP method `{method}`")]
    InvalidMethod {
        /// The method as given.
        method: String,
    },
    /// A header name or value is not valid in HTTP.
    #[error("invalid header `{name}`: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The initial last event ID cannot be sent in a `Last-Event-ID` header (it contains
    /// a line break, NUL or another control character).
    #[error("invalid initial last event ID {id:?}: {reason}")]
    InvalidLastEventId {
        /// The ID as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be created (for example, no TLS roots could be loaded).
    #[error("cannot create the HTTP client: {source}")]
    Client {
        /// The cause.
        #[source]
        source: TransportError,
    },
}

/// A failure of the HTTP layer (connection, TLS, protocol), with its chain of causes.
///
/// Its [`Display`](fmt::Display) includes the innermost cause, which is usually the
/// useful part ("connection refused").
///
/// ```
/// # async fn demo() {
/// use futures_util::StreamExt;
/// use tidings_client::{Error, EventSource};
///
/// // Nothing listens on port 9 of this machine (discard service), so this fails.
/// let mut source = EventSource::builder("http://127.0.0.1:9/").max_retries(0).build().unwrap();
/// if let Some(Err(Error::RetriesExhausted { last, .. })) = source.next().await {
///     if let Error::Connect { source } = *last {
///         assert!(source.is_connect());
///     }
/// }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo());
/// ```
pub struct TransportError(reqwest::Error);

impl TransportError {
    pub(crate) fn new(err: reqwest::Error) -> Self {
        Self(err)
    }

    pub(crate) fn is_redirect(&self) -> bool {
        self.0.is_redirect()
    }

    pub(crate) fn is_builder(&self) -> bool {
        self.0.is_builder()
    }

    /// Whether the failure happened while connecting (DNS, TCP, TLS).
    pub fn is_connect(&self) -> bool {
        self.0.is_connect()
    }

    /// Whether the HTTP client's own timeout (set on a user-supplied client) ran out.
    pub fn is_timeout(&self) -> bool {
        self.0.is_timeout()
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // reqwest's own message is generic ("error sending request for url (…)"); the
        // innermost cause says what happened. Show both, once each.
        write!(f, "{}", without_url(&self.0))?;
        let mut cause = std::error::Error::source(&self.0);
        let mut innermost = None;
        while let Some(err) = cause {
            innermost = Some(err);
            cause = err.source();
        }
        if let Some(err) = innermost {
            write!(f, ": {err}")?;
        }
        Ok(())
    }
}

/// reqwest's message without the URL it appends (the caller knows the URL, and it may
/// carry a token in its query).
fn without_url(err: &reqwest::Error) -> String {
    let text = err.to_string();
    match text.find(" for url (") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// A status code with its reason phrase, when it has a standard one.
struct StatusText(u16);

impl fmt::Display for StatusText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.0)
            .ok()
            .and_then(|code| code.canonical_reason());
        match reason {
            Some(reason) => write!(f, "{} {reason}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `: ` and the first line of an error body, at most [`BODY_LINE_CHARS`] characters;
/// nothing for a body without text.
struct BodyLine<'a>(&'a str);

/// The most characters of a body's first line that an error's `Display` shows.
const BODY_LINE_CHARS: usize = 200;

impl fmt::Display for BodyLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self
            .0
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or_default();
        if line.is_empty() {
            return Ok(());
        }
        match line.char_indices().nth(BODY_LINE_CHARS) {
            Some((end, _)) => write!(f, ": {}…", &line[..end]),
            None => write!(f, ": {line}"),
        }
    }
}

/// A duration the way a person writes it: `1.5 s`, `250 ms`.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.as_millis() < 1000 {
            write!(f, "{} ms", d.as_millis())
        } else {
            write!(f, "{} s", d.as_secs_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_errors() {
        let terminal = [
            Error::Status {
                status: 500,
                body: String::new(),
            },
            Error::ContentType { content_type: None },
            Error::Redirect {
                status: 301,
                location: None,
            },
            Error::Limit(DecodeError::LineTooLong { limit: 1 }),
            Error::RetriesExhausted {
                retries: 3,
                last: Box::new(Error::EndOfStream),
            },
        ];
        for err in terminal {
            assert!(err.is_terminal(), "{err}");
        }
        assert!(!Error::EndOfStream.is_terminal());
    }

    #[test]
    fn messages_say_what_happened() {
        assert_eq!(
            Error::IdleTimeout {
                timeout: Duration::from_millis(250)
            }
            .to_string(),
            "nothing received for 250 ms"
        );
        assert_eq!(
            Error::IdleTimeout {
                timeout: Duration::from_millis(1500)
            }
            .to_string(),
            "nothing received for 1.5 s"
        );
        assert_eq!(
            Error::ContentType {
                content_type: Some("text/html".into())
            }
            .to_string(),
            "the response is `text/html`, not text/event-stream"
        );
        assert_eq!(
            Error::Redirect {
                status: 302,
                location: None
            }
            .to_string(),
            "redirect 302 without a usable Location"
        );
        assert_eq!(
            Error::Status {
                status: 599,
                body: String::new()
            }
            .to_string(),
            "the server answered 599 instead of 200 OK"
        );
        assert_eq!(
            Error::Redirect {
                status: 301,
                location: Some(String::new())
            }
            .to_string(),
            "redirect 301 without a usable Location (it is empty)"
        );
        assert_eq!(
            Error::Skipped {
                cause: DecodeError::LineTooLong { limit: 8 }
            }
            .to_string(),
            "skipped an event: event-stream line longer than the limit of 8 bytes"
        );
        assert_eq!(
            Error::RetriesExhausted {
                retries: 1,
                last: Box::new(Error::EndOfStream)
            }
            .to_string(),
            "gave up after 1 reconnection attempt: the server ended the stream"
        );
        let limit = Error::Limit(DecodeError::EventTooLarge { limit: 10 });
        assert_eq!(
            limit.to_string(),
            "event-stream event larger than the limit of 10 bytes"
        );
    }

    #[test]
    fn status_looks_through_retries_exhausted() {
        let err = Error::RetriesExhausted {
            retries: 0,
            last: Box::new(Error::Status {
                status: 503,
                body: "down\n".into(),
            }),
        };
        assert_eq!(err.status(), Some(503));
        assert_eq!(err.body(), Some("down\n"));
    }

    #[test]
    fn the_body_shows_its_first_line_bounded() {
        let status = |body: &str| {
            Error::Status {
                status: 400,
                body: body.to_owned(),
            }
            .to_string()
        };
        let prefix = "the server answered 400 Bad Request instead of 200 OK";
        assert_eq!(status(""), prefix);
        assert_eq!(status(" \n\n"), prefix);
        assert_eq!(
            status("\r\n  missing topic \r\nmore\n"),
            format!("{prefix}: missing topic")
        );
        let long = "é".repeat(300);
        assert_eq!(
            status(&long),
            format!("{prefix}: {}…", "é".repeat(BODY_LINE_CHARS))
        );
    }
}
