//! The lean path: event streams over HTTP/1.1 served without hyper's connection state.
//!
//! An idle subscriber costs what its connection holds while it waits, and hyper's HTTP/1
//! connection keeps, for as long as it is open, a read buffer (8 KiB reserved by its
//! first read, and another 8 KiB by the read it keeps polling to notice the peer going
//! away while a response streams) and a write buffer for response heads (8 KiB, kept
//! once used); none of its builder options release them (`max_buf_size` caps them and
//! cannot go below 8 KiB). So a connection starts here: the request head is read into a
//! small buffer and parsed with `httparse`, and a subscribe request
//! (`GET /.well-known/mercure` over HTTP/1.1, without a body or an upgrade) is served
//! on the spot: the request goes through the very same service as hyper's requests
//! (the caps per address, the hub's router: authorisation, selectors, CORS, `Link`), and
//! the response is written straight to the socket, its body as it comes (chunked). What
//! is left while the stream waits is the socket, the stream's own state and a few words.
//!
//! Anything else (another method or path, HTTP/1.0, HTTP/2, a request with a body, an
//! upgrade, a head that does not parse or is longer than [`LEAN_HEAD_MAX`]) is handed to
//! hyper together with the bytes already read ([`Rewind`]), and hyper serves the
//! connection from then on, answering errors as it always does (`400`, `431`, ...).
//! A lean connection kept alive after its response goes back to reading a head, so a
//! client may mix both on one connection.
//!
//! The deadlines stay the server's: the head read is timed by the connection's
//! [`Phase`](crate::server) like hyper's reads, writes go through its write deadline, and
//! shutdown ends the stream (the hub ends its event streams) and then the connection.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{
    HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::http::HUB_PATH;

/// The longest request head the lean path reads; a longer one (or one still incomplete
/// at that length) is hyper's, with hyper's own limit on head size.
pub(crate) const LEAN_HEAD_MAX: usize = 8 * 1024;
/// The most header fields the lean path parses; a request with more is hyper's.
const LEAN_HEADERS: usize = 64;
/// How much the head buffer grows by at each read.
const READ_STEP: usize = 1024;
/// What is read at once while a response streams, to notice the peer closing.
const PROBE: usize = 64;

/// How a connection left the lean path.
pub(crate) enum Outcome<S, Svc> {
    /// The connection is done: the peer closed, a write failed, the request asked for
    /// `Connection: close`, or the server is shutting down.
    Closed,
    /// A request the lean path does not serve: hyper takes the connection (and the
    /// service), and reads the bytes already read first.
    Handoff(Rewind<S>, Svc),
}

/// Serves the connection's requests as long as they are lean; hands it to hyper at the
/// first one that is not (at once when the lean path is not `enabled`).
///
/// The future is what an idle subscriber's task holds, so what it keeps while a body
/// streams is kept small: the request, the response's head and their buffers live in a
/// block that ends before the body is written.
pub(crate) async fn serve<S, Svc>(
    mut io: S,
    mut service: Svc,
    closing: CancellationToken,
    enabled: bool,
) -> Outcome<S, Svc>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Svc: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    if !enabled {
        return Outcome::Handoff(Rewind::new(Bytes::new(), io), service);
    }
    // The bytes read and not yet used: a head in the making, or requests pipelined
    // after the last one.
    let mut unread = BytesMut::new();
    loop {
        let (body, framing, keep_alive) = {
            let (request, close) = match read_head(&mut io, &mut unread, &closing).await {
                Head::Lean(request, close) => (request, close),
                Head::Closed => return Outcome::Closed,
                Head::Other => {
                    let read = std::mem::take(&mut unread).freeze();
                    return Outcome::Handoff(Rewind::new(read, io), service);
                }
            };
            let (head, body, framing, keep_alive) = {
                let response = call(&mut service, request).await;
                let keep_alive = !close && !closing.is_cancelled();
                let (head, body, framing) = prepare(response, keep_alive);
                (head, body, framing, keep_alive)
            };
            if io.write_all(&head).await.is_err() {
                return Outcome::Closed;
            }
            (body, framing, keep_alive)
        };
        let written = match framing {
            Framing::None => {
                drop(body);
                Ok(Written::Whole)
            }
            Framing::Length | Framing::Chunked => {
                write_body(&mut io, body, framing, &mut unread).await
            }
        };
        match written {
            Ok(Written::Whole) if keep_alive && !closing.is_cancelled() => {}
            _ => {
                let _ = io.shutdown().await;
                return Outcome::Closed;
            }
        }
    }
}

/// What [`read_head`] read.
enum Head {
    /// A lean request, and whether its client asked to close the connection after it.
    Lean(Box<Request<Body>>, bool),
    /// The peer closed, the read failed, or the server is closing between requests.
    Closed,
    /// A request for hyper (perhaps incomplete): `unread` holds its bytes.
    Other,
}

/// Reads until `unread` holds a whole head, and takes it out of `unread` if it is lean.
async fn read_head<S>(io: &mut S, unread: &mut BytesMut, closing: &CancellationToken) -> Head
where
    S: AsyncRead + Unpin,
{
    loop {
        match parse(unread) {
            Parsed::Lean {
                request,
                close,
                len,
            } => {
                // Whatever follows is the next request; an empty rest frees the buffer.
                *unread = BytesMut::from(&unread[len..]);
                return Head::Lean(request, close);
            }
            Parsed::Partial if unread.len() < LEAN_HEAD_MAX => {}
            Parsed::Partial | Parsed::Other => return Head::Other,
        }
        unread.reserve(READ_STEP);
        let read = if unread.is_empty() {
            // Between requests, shutdown closes the connection.
            tokio::select! {
                biased;
                () = closing.cancelled() => return Head::Closed,
                read = io.read_buf(unread) => read,
            }
        } else {
            io.read_buf(unread).await
        };
        match read {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
    }
}

/// The service's response to `request` (boxed until the call: the argument of an
/// `async fn` is kept in its future).
async fn call<Svc>(service: &mut Svc, request: Box<Request<Body>>) -> Response<Body>
where
    Svc: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    match poll_fn(|cx| service.poll_ready(cx)).await {
        Ok(()) => match service.call(*request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(never) => match never {},
    }
}

/// What [`parse`] made of the bytes read.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A subscribe request, to serve here; its head is `len` bytes long.
    Lean {
        request: Box<Request<Body>>,
        /// The client asked to close the connection after the response.
        close: bool,
        len: usize,
    },
    /// Anything else: hyper's.
    Other,
}

/// Parses a request head, and tells whether the lean path serves it.
fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; LEAN_HEADERS];
    let mut head = httparse::Request::new(&mut fields);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if head.method != Some("GET") || head.version != Some(1) {
        return Parsed::Other;
    }
    let Some(target) = head.path else {
        return Parsed::Other;
    };
    let route = target.split_once('?').map_or(target, |(path, _)| path);
    if route != HUB_PATH {
        return Parsed::Other;
    }
    let Ok(uri) = Uri::try_from(target) else {
        return Parsed::Other;
    };
    let mut request = Box::new(Request::new(Body::empty()));
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = uri;
    let mut close = false;
    let headers = request.headers_mut();
    for field in head.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Parsed::Other;
        };
        if name == header::CONTENT_LENGTH {
            if value.as_bytes().trim_ascii() != b"0" {
                return Parsed::Other;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return Parsed::Other;
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        headers.append(name, value);
    }
    Parsed::Lean {
        request,
        close,
        len,
    }
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`204`, `304`, or a body known to be empty).
    None,
    /// As it is: its length is in the head.
    Length,
    /// In chunks: its length is not known (an event stream).
    Chunked,
}

/// The head of `response` as bytes (like hyper's: its fields, `date`, the framing, and
/// `connection: close` unless the connection stays open), its body and how to frame it.
fn prepare(response: Response<Body>, keep_alive: bool) -> (Vec<u8>, Body, Framing) {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let bodyless = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    let framed_by_handler = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let length = body.size_hint().exact();
    let framing = if bodyless || length == Some(0) {
        Framing::None
    } else if framed_by_handler || length.is_some() {
        Framing::Length
    } else {
        Framing::Chunked
    };

    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !framed_by_handler && !bodyless {
        match (framing, length) {
            (Framing::Chunked, _) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            (_, Some(length)) => {
                head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
            }
            (_, None) => {}
        }
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    (head, body, framing)
}

/// How much of a body went out.
enum Written {
    /// All of it: the connection can take another request.
    Whole,
    /// The peer closed or the body failed before the end.
    Cut,
}

/// Writes `body` as it comes. While it waits, the socket is read to notice the peer
/// closing; bytes that arrive (pipelined requests) are kept in `unread`, up to
/// [`LEAN_HEAD_MAX`].
async fn write_body<S>(
    io: &mut S,
    mut body: Body,
    framing: Framing,
    unread: &mut BytesMut,
) -> io::Result<Written>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let chunked = framing == Framing::Chunked;
    let mut probe = [0u8; PROBE];
    loop {
        let reading = unread.len() < LEAN_HEAD_MAX;
        let frame = tokio::select! {
            biased;
            read = io.read(&mut probe), if reading => match read {
                Ok(0) | Err(_) => return Ok(Written::Cut),
                Ok(n) => {
                    unread.extend_from_slice(&probe[..n]);
                    continue;
                }
            },
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => return Ok(Written::Cut),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1.1 responses here carry none.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        if !chunked {
            io.write_all(&data).await?;
        } else if io.is_write_vectored() {
            let size = format!("{:X}\r\n", data.len());
            write_all_vectored(io, &[size.as_bytes(), &data, b"\r\n"]).await?;
        } else {
            // One write, not three (over TLS, three writes would be three records).
            let size = format!("{:X}\r\n", data.len());
            let mut chunk = Vec::with_capacity(size.len() + data.len() + 2);
            chunk.extend_from_slice(size.as_bytes());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            io.write_all(&chunk).await?;
        }
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    Ok(Written::Whole)
}

/// Writes every byte of `parts`, in as few writes as the socket allows.
async fn write_all_vectored<S>(io: &mut S, parts: &[&[u8]]) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut written = 0;
    while written < total {
        let mut skip = written;
        let mut slices = [IoSlice::new(&[]); 3];
        let mut count = 0;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            if count < slices.len() {
                slices[count] = IoSlice::new(&part[skip..]);
                count += 1;
            }
            skip = 0;
        }
        match io.write_vectored(&slices[..count]).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    Ok(())
}

/// A connection handed to hyper: the bytes the lean path read are read again first.
pub(crate) struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(read: Bytes, inner: S) -> Self {
        Self { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        if self.read.is_empty() {
            self.read = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(bytes: &[u8]) -> Option<(Request<Body>, bool, usize)> {
        match parse(bytes) {
            Parsed::Lean {
                request,
                close,
                len,
            } => Some((*request, close, len)),
            _ => None,
        }
    }

    #[test]
    fn subscribe_gets_over_http11_are_lean() {
        let head = b"GET /.well-known/mercure?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\n");
        let (request, close, len) = lean(&bytes).expect("lean");
        assert_eq!(
            len,
            head.len(),
            "the pipelined bytes are not part of the head"
        );
        assert!(!close);
        assert_eq!(request.uri(), "/.well-known/mercure?topic=a&topic=b");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(request.headers()["host"], "x");
        let (_, close, _) = lean(
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
        )
        .unwrap();
        assert!(close);
        assert!(
            lean(b"GET /.well-known/mercure?topic=a HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
                .is_some()
        );
    }

    #[test]
    fn everything_else_is_hyper_s() {
        for head in [
            &b"GET /.well-known/mercure?topic=a HTTP/1.0\r\n\r\n"[..],
            b"HEAD /.well-known/mercure?topic=a HTTP/1.1\r\n\r\n",
            b"OPTIONS /.well-known/mercure HTTP/1.1\r\nOrigin: http://a\r\n\r\n",
            b"POST /.well-known/mercure HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /.well-known/mercure/subscriptions HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET http://a/.well-known/mercure?topic=a HTTP/1.1\r\n\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(
                matches!(parse(head), Parsed::Other),
                "{:?} is not hyper's",
                head.escape_ascii().to_string()
            );
        }
        let mut many = b"GET /.well-known/mercure?topic=a HTTP/1.1\r\n".to_vec();
        for i in 0..=LEAN_HEADERS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many), Parsed::Other), "too many headers");
    }

    #[test]
    fn an_incomplete_head_is_partial() {
        for head in [
            &b""[..],
            b"G",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\n",
            b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert!(matches!(parse(head), Parsed::Partial), "{head:?}");
        }
    }

    #[tokio::test]
    async fn rewind_reads_the_bytes_already_read_first() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rewind = Rewind::new(Bytes::from_static(b"hello "), b);
        a.write_all(b"world").await.unwrap();
        drop(a);
        let mut all = String::new();
        rewind.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn vectored_writes_resume_where_the_socket_stopped() {
        // A 5-byte pipe: every write is short.
        let (mut a, mut b) = tokio::io::duplex(5);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            all
        });
        write_all_vectored(&mut a, &[b"1A\r\n", b"0123456789abcdefghijklmnop", b"\r\n"])
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            reader.await.unwrap(),
            b"1A\r\n0123456789abcdefghijklmnop\r\n"
        );
    }
}
