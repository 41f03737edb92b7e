//! # tidings-client
//!
//! An [EventSource](https://html.spec.whatwg.org/multipage/server-sent-events.html) for
//! Rust programs: it reads a `text/event-stream`, reconnects by itself and resumes with
//! `Last-Event-ID`, exactly as the WHATWG HTML standard says a browser does — plus what
//! programs need beyond the browser: any method with a body (LLM and MCP streams use
//! `POST`), custom headers, exponential backoff with jitter, a retry budget, an idle
//! timeout that detects dead connections, limits on line and event size, headers that
//! change between connections and a restart on request.
//!
//! [`EventSource`] is a [`Stream`](futures_util::Stream) of
//! `Result<`[`Event`]`, `[`Error`]`>`: [`Event::Open`] at each connection,
//! [`Event::Message`] for every event, [`Event::Comment`] if asked for, and errors that
//! say what happened. Some errors only report a lost connection (the source reconnects);
//! the [terminal](Error::is_terminal) ones end the stream.
//!
//! | Rule (WHATWG) | Here |
//! |---|---|
//! | `Accept: text/event-stream`, `Cache-Control: no-cache` | sent on every request |
//! | `Last-Event-ID` when the last event ID is not empty | kept across reconnections; an empty `id:` resets it |
//! | 301, 302, 303, 307, 308 followed; the final URL is the origin | by reqwest's redirect policy; a redirect without a usable `Location` is [`Error::Redirect`] |
//! | status not 200 (204 included), or content type not `text/event-stream`: fail | [`Error::Status`], [`Error::ContentType`]: terminal |
//! | network error or end of body: error, CONNECTING, wait, reconnect | [`Error::Connect`], [`Error::Read`], [`Error::EndOfStream`], then a wait of the reconnection time (3 s, or `retry:`; at least [`DEFAULT_MIN_RETRY`], 500 ms) plus [`Backoff`], which starts over only after a connection stayed open [`DEFAULT_BACKOFF_RESET_AFTER`] (60 s) |
//! | `close()` | [`EventSource::close`], or a [`CloseHandle`] from another task |
//!
//! Beyond the standard: [`EventSource::restart`] (or [`CloseHandle::restart`]) drops
//! the connection and reconnects at once, keeping the last event ID and the retry
//! state; [`EventSourceBuilder::headers_with`] computes headers again before each
//! attempt (a token that is refreshed); [`Error::Status`] carries the start of the
//! refusal's body (4 KiB at most), which says why; the line limit follows the event
//! limit (16 MiB), and [`EventSourceBuilder::skip_oversized`] skips an event over the
//! limits ([`Error::Skipped`]) instead of ending the stream.
//!
//! The parsing is [`tidings_wire::Decoder`]'s: chunking-independent, BOM-aware, bounded,
//! and zero-copy where possible (event strings are [`Text`] slices of the received bytes
//! unless a value spans several lines or chunks).
//!
//! ```
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use tidings_client::{Event, EventSource};
//! use tokio::{io::{AsyncReadExt, AsyncWriteExt}, net::TcpListener};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A server whose first connection sends one event and hangs up, and whose second
//! // connection (the reconnection) says 204: "stop".
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/", listener.local_addr()?);
//! let server = tokio::spawn(async move {
//!     let mut requests = Vec::new();
//!     for reply in [
//!         &b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
//!            retry: 10\nid: 1\ndata: first\n\n"[..],
//!         b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
//!     ] {
//!         let (mut socket, _) = listener.accept().await?;
//!         let mut request = [0; 1024];
//!         let n = socket.read(&mut request).await?;
//!         requests.push(String::from_utf8_lossy(&request[..n]).into_owned());
//!         socket.write_all(reply).await?;
//!     }
//!     std::io::Result::Ok(requests)
//! });
//!
//! let mut source = EventSource::builder(&url)
//!     .idle_timeout(Duration::from_secs(5))
//!     .max_retries(3)
//!     .build()?;
//! while let Some(item) = source.next().await {
//!     match item {
//!         Ok(Event::Open { url }) => println!("open: {url}"),
//!         Ok(Event::Message(message)) => println!("{}: {}", message.event_type, message.data),
//!         Ok(_) => {}
//!         Err(err) if err.is_terminal() => {
//!             assert_eq!(err.status(), Some(204));
//!             break;
//!         }
//!         Err(err) => println!("reconnecting after: {err}"),
//!     }
//! }
//! assert_eq!(source.last_event_id(), "1");
//! // The reconnection resumed after event 1.
//! let requests = server.await??;
//! assert!(requests[1].contains("last-event-id: 1\r\n"));
//! # Ok(()) }
//! ```
//!
//! The reconnect policy (when to reconnect, how the wait grows, when a connection is
//! idle for too long, when to give up) is a state machine without I/O or clock, driven by
//! the stream; HTTP, TLS (rustls), proxies and redirects are reqwest's.

mod builder;
mod error;
mod event;
mod event_source;
mod reconnect;
mod response;

pub use builder::{
    DEFAULT_BACKOFF_RESET_AFTER, DEFAULT_MAX_ERROR_BODY, DEFAULT_MIN_RETRY,
    DEFAULT_RECONNECTION_TIME, ERROR_BODY_WAIT, EventSourceBuilder,
};
pub use error::{BuildError, Error, TransportError};
pub use event::{Event, MessageEvent, ReadyState};
pub use event_source::{CloseHandle, EventSource};
pub use reconnect::Backoff;
/// The header types of [`EventSourceBuilder::headers_with`] (reqwest's, from `http`).
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use tidings_wire::Text;

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
