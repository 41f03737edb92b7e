//! The server loop: accepting TCP connections, serving HTTP/1.1 and h2c on them, and the
//! limits that keep hostile or broken peers from holding the hub's memory and sockets.
//!
//! [`Hub::serve`](crate::Hub::serve) runs this loop with the hub's [`ServerLimits`]
//! (set with [`HubBuilder::server_limits`](crate::HubBuilder::server_limits)):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tidings_hub::{Hub, ServerLimits};
//!
//! let mut limits = ServerLimits::default();
//! limits.header_read_timeout = Duration::from_secs(5);
//! limits.max_connections_per_ip = 32;
//! limits.trusted_proxies = vec!["10.0.0.0/8".parse()?];
//! let hub = Hub::builder().server_limits(limits).build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(hub.clone().serve(listener, std::future::pending()));
//! hub.shutdown();
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! With [`HubBuilder::tls`](crate::HubBuilder::tls), each connection shakes hands first
//! (see [`crate::tls`]), within its request-head deadline; HTTP/2 or HTTP/1.1 is then
//! served on it with the same settings and limits as in cleartext.
//!
//! What each connection gets:
//! - a deadline for its request head, and one for the idle time between requests, kept
//!   by a small state machine ([`Phase`]) that the connection's reads and requests drive;
//! - a write deadline on its socket: a peer that stops reading is cut off once the socket
//!   has made no progress for [`ServerLimits::write_timeout`], and its response (an event
//!   stream, which unregisters itself when dropped) is freed at once;
//! - a place in the caps on connections, in total and per client address. A refused
//!   connection gets a one-line `503` and is closed, from a task of its own, so that the
//!   accept loop never waits on a peer;
//! - for each request, a place in the cap on requests in flight per client address (the
//!   forwarded one through a trusted proxy), held until its response body is dropped: one
//!   connection carries many HTTP/2 streams, so a cap on sockets alone would not bound a
//!   client. A request over it gets a one-line `503`; its connection stays open;
//! - event streams over HTTP/1.1 served by the server's own lean path (`lean`), which
//!   holds a few hundred bytes per open stream where hyper holds some 24 KiB of buffers;
//!   every other request, and HTTP/2, is hyper's
//!   ([`ServerLimits::lean_event_streams`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response, StatusCode, Version};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::Refusal;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// The default of [`ServerLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServerLimits::keep_alive_idle_timeout`].
pub const DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default of [`ServerLimits::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of [`ServerLimits::h2_max_concurrent_streams`].
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The default of [`ServerLimits::max_connections_per_ip`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// The default of [`ServerLimits::max_requests_per_ip`].
pub const DEFAULT_MAX_REQUESTS_PER_IP: usize = 256;
/// The default of [`ServerLimits::max_connections`] where the open-file limit cannot be
/// read.
pub const FALLBACK_MAX_CONNECTIONS: usize = 10_000;
/// The default of [`ServerLimits::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// File descriptors kept out of [`ServerLimits::max_connections`]'s default: the history
/// file, the listener, refusals in progress and whatever the embedding program opens.
const FD_RESERVE: usize = 256;
/// Refused connections being answered at once; past that, one is closed without an
/// answer (a flood of refusals must not itself hold sockets without end).
const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection may take to receive its `503` and close.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);
/// A refused peer's request bytes read and dropped before closing, so that the close is
/// a FIN after our answer rather than a reset that could destroy it.
const REFUSAL_DRAIN: usize = 16 * 1024;
/// The most bytes of an invalid `X-Forwarded-For` entry quoted in the `400`.
const QUOTED_ENTRY: usize = 64;
/// The pause after an accept error that is not about one connection (out of file
/// descriptors, most often): accepting again at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// The limits of the server loop of [`Hub::serve`](crate::Hub::serve).
///
/// Zero means "off" for every timeout and cap here: a zero timeout never fires, a zero
/// cap never refuses. The one duration that is not a timeout is
/// [`shutdown_grace`](Self::shutdown_grace): zero gives no grace, and the connections
/// still open at shutdown are dropped at once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerLimits {
    /// How long a client has to send a whole request head, counted from the accept for
    /// the first request and, over HTTP/1.1, from the first byte of each later one. A
    /// client still sending its head then is disconnected. Default: 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may stay without any request in flight between two requests
    /// (HTTP/1.1 keep-alive, an HTTP/2 connection without streams) before it is closed
    /// (HTTP/2: with GOAWAY). Default: 60 s.
    pub keep_alive_idle_timeout: Duration,
    /// How long a socket may refuse to take any more bytes before its connection is
    /// closed, and whatever it holds (an event stream) is freed. Default: 30 s.
    pub write_timeout: Duration,
    /// The most concurrent HTTP/2 streams on one connection, announced in SETTINGS;
    /// `0` for no limit (requests in flight per address are still capped, by
    /// [`max_requests_per_ip`](Self::max_requests_per_ip)). Default: 100.
    pub h2_max_concurrent_streams: u32,
    /// The interval of HTTP/2 keep-alive pings on a connection that is otherwise silent;
    /// `None` or zero sends none. Default: 20 s.
    pub h2_keep_alive_interval: Option<Duration>,
    /// How long an HTTP/2 keep-alive ping may go unanswered before the connection is
    /// closed; zero turns the timeout off, and with it the pings (a ping that may go
    /// unanswered for ever checks nothing). Default: 20 s.
    pub h2_keep_alive_timeout: Duration,
    /// The most TCP connections open at once. Default: the process's limit on open files
    /// less a reserve of 256 (half the limit where it is below 512), or 10,000 where the
    /// limit cannot be read or is unlimited.
    pub max_connections: usize,
    /// The most TCP connections open at once from one peer address; `0` for no limit.
    /// Connections from a trusted proxy are not counted here. Default: 256.
    pub max_connections_per_ip: usize,
    /// The most requests in flight at once from one client address, whatever the
    /// connections they come over (HTTP/2 carries many on one); `0` for no limit. The
    /// client is the peer, or through a trusted proxy the address it forwards. A request
    /// counts until its response body is dropped, so an open event stream counts for as
    /// long as it is open. Default: 256.
    pub max_requests_per_ip: usize,
    /// The proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed: the
    /// client of a request through one is the rightmost forwarded address that is not a
    /// trusted proxy (the proxy itself where there is none). A request whose deciding
    /// entry is not an IP address is refused with `400`. Default: none.
    pub trusted_proxies: Vec<AddrRange>,
    /// On shutdown, how long open connections have to finish (event streams end
    /// themselves at once) before the server drops them and returns; zero drops them at
    /// once. Default: 10 s.
    pub shutdown_grace: Duration,
    /// Whether event streams over HTTP/1.1 (`GET /.well-known/mercure`) are served by
    /// the server's own lean HTTP/1.1 path rather than by hyper, which keeps some 16 KiB
    /// of buffers per connection for as long as it is open. Everything else is hyper's
    /// either way. Default: on.
    pub lean_event_streams: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_idle_timeout: DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_keep_alive_interval: Some(Duration::from_secs(20)),
            h2_keep_alive_timeout: Duration::from_secs(20),
            max_connections: default_max_connections(),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_requests_per_ip: DEFAULT_MAX_REQUESTS_PER_IP,
            trusted_proxies: Vec::new(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            lean_event_streams: true,
        }
    }
}

/// The default total cap on connections, from the open-file limit.
fn default_max_connections() -> usize {
    match std::fs::read_to_string("/proc/self/limits") {
        Ok(text) => open_files_limit(&text).map_or(FALLBACK_MAX_CONNECTIONS, connections_for),
        Err(_) => FALLBACK_MAX_CONNECTIONS,
    }
}

/// The soft limit on open files in the text of `/proc/self/limits`; `None` if absent or
/// unlimited.
fn open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

fn connections_for(open_files: usize) -> usize {
    if open_files >= 2 * FD_RESERVE {
        open_files - FD_RESERVE
    } else {
        (open_files / 2).max(1)
    }
}

/// A client's address as the hub sees it: the peer of the connection or, through a
/// trusted proxy, the address the proxy forwarded. Every request served by
/// [`Hub::serve`](crate::Hub::serve) carries one in its extensions, next to
/// `axum::extract::ConnectInfo<SocketAddr>` (the TCP peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// The client's IP address (an IPv4-mapped IPv6 address is given as IPv4).
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An IP address or a CIDR range of them, such as `10.0.0.0/8`, `::1` or
/// `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not an [`AddrRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range {0:?}: expected an IP address or a CIDR range such as 10.0.0.0/8")]
pub struct AddrRangeError(String);

impl AddrRange {
    /// The addresses whose first `prefix` bits are those of `addr`; `None` if `prefix` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let (network, prefix) = match addr {
            // A mapped IPv4 range is an IPv4 range: peers are compared as IPv4.
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (IpAddr::V4(v6.to_ipv4_mapped()?), prefix - 96)
            }
            other => (other, prefix),
        };
        let bits = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| Self {
            network: mask(network, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl FromStr for AddrRange {
    type Err = AddrRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || AddrRangeError(text.to_owned());
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix = match prefix {
            Some(prefix) if prefix.bytes().all(|b| b.is_ascii_digit()) => {
                prefix.parse().map_err(|_| invalid())?
            }
            Some(_) => return Err(invalid()),
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Self::new(addr, prefix).ok_or_else(invalid)
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The client of a request from a trusted proxy: the rightmost `X-Forwarded-For`
/// address that is not a trusted proxy, `None` when every entry is one (or there are
/// none). The header's raw bytes are read from the right, entry by entry, only as far as
/// the client: what a client wrote to the left of it is never looked at, so whatever it
/// holds cannot move the request to another address. An entry that must be read and is
/// not an address is the error: the request cannot be charged to anyone with certainty.
fn forwarded_client<'h>(
    headers: &'h HeaderMap,
    trusted: &[AddrRange],
) -> Result<Option<IpAddr>, &'h [u8]> {
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','));
    for entry in entries {
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let ip = forwarded_ip(entry).ok_or(entry)?;
        if !trusted.iter().any(|range| range.contains(ip)) {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port, IPv6 perhaps bracketed.
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// The one-line reason of the `400` for an invalid `X-Forwarded-For` entry, quoting
/// (escaped, and cut short) the entry.
fn invalid_forwarded(entry: &[u8]) -> String {
    let quoted = entry[..entry.len().min(QUOTED_ENTRY)].escape_ascii();
    let cut = if entry.len() > QUOTED_ENTRY {
        "..."
    } else {
        ""
    };
    format!("invalid X-Forwarded-For from a trusted proxy: \"{quoted}{cut}\" is not an IP address")
}

/// What the accept loop and every connection share.
struct Shared {
    header_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max_connections: usize,
    trusted_proxies: Vec<AddrRange>,
    metrics: Metrics,
    /// Open connections, refusals not included. Only the accept loop adds to it.
    open: AtomicUsize,
    /// Connections from each peer address (trusted proxies not counted).
    connections_per_ip: Arc<PerAddr>,
    /// Requests in flight from each client address (forwarded, through a proxy).
    requests_per_ip: Arc<PerAddr>,
    refusals: Arc<Semaphore>,
    builder: auto::Builder<StreamExecutor>,
    /// TLS, when the hub has it: every connection shakes hands before hyper sees it.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS for refused connections: HTTP/1.1 only by ALPN, since their answer is one.
    refusal_tls: Option<Arc<rustls::ServerConfig>>,
    /// [`ServerLimits::lean_event_streams`].
    lean_event_streams: bool,
}

impl Shared {
    fn new(limits: &ServerLimits, metrics: Metrics, streams: StreamExecutor) -> Self {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        // A ping without a deadline checks nothing: a zero timeout sends none.
        let pings = limits
            .h2_keep_alive_interval
            .and_then(nonzero)
            .filter(|_| !limits.h2_keep_alive_timeout.is_zero());
        let mut builder = auto::Builder::new(streams);
        builder
            .http1()
            .timer(TokioTimer::new())
            // Our own deadlines (`Phase`) replace hyper's header-read timeout: in hyper
            // 1.x that timer restarts as soon as a connection goes idle, so it would also
            // bound the keep-alive idle time, to the header limit.
            .header_read_timeout(None)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(
                (limits.h2_max_concurrent_streams != 0).then_some(limits.h2_max_concurrent_streams),
            )
            .keep_alive_interval(pings)
            .keep_alive_timeout(limits.h2_keep_alive_timeout);
        Self {
            header_timeout: nonzero(limits.header_read_timeout),
            idle_timeout: nonzero(limits.keep_alive_idle_timeout),
            write_timeout: nonzero(limits.write_timeout),
            max_connections: limits.max_connections,
            trusted_proxies: limits.trusted_proxies.clone(),
            metrics,
            open: AtomicUsize::new(0),
            connections_per_ip: Arc::new(PerAddr::new(limits.max_connections_per_ip)),
            requests_per_ip: Arc::new(PerAddr::new(limits.max_requests_per_ip)),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
            builder,
            tls: None,
            refusal_tls: None,
            lean_event_streams: limits.lean_event_streams,
        }
    }

    /// Counts and logs a connection closed by its deadline.
    fn timed_out(&self, wait: Wait, peer: SocketAddr) {
        match wait {
            Wait::Header => {
                self.metrics.timeouts_header.increment(1);
                tracing::debug!(%peer, "request head not received in time: closing");
            }
            Wait::Idle => {
                self.metrics.timeouts_idle.increment(1);
                tracing::debug!(%peer, "connection idle for too long: closing");
            }
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(ip))
    }

    fn connections_refusal(&self, ip: IpAddr) -> String {
        format!(
            "too many connections from {ip}: at most {} per client address",
            self.connections_per_ip.max
        )
    }

    fn requests_refusal(&self, ip: IpAddr) -> String {
        format!(
            "too many requests in flight from {ip}: at most {} per client address",
            self.requests_per_ip.max
        )
    }
}

/// The places taken under one per-address cap, by address.
struct PerAddr {
    /// The cap; `0` for none.
    max: usize,
    /// A std mutex: held for one map update, never across an await.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddr {
    fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// A place for `ip`, or `None` if it has none left.
    fn claim(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
            return Some(IpSlot(None));
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot(Some((Arc::clone(self), ip))))
    }
}

/// Runs hyper's HTTP/2 stream tasks (each stream's handler and body are spawned apart
/// from their connection) until they end or the server gives up on them at the end of
/// the shutdown grace period; [`serve`] waits for them, so that none outlives it.
#[derive(Clone)]
struct StreamExecutor {
    abandon: CancellationToken,
    tasks: TaskTracker,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let abandon = self.abandon.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                () = abandon.cancelled() => {}
                _ = stream => {}
            }
        });
    }
}

/// One place under a per-address cap, given back when dropped.
struct IpSlot(Option<(Arc<PerAddr>, IpAddr)>);

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((caps, ip)) = self.0.take() {
            let mut counts = caps.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// One open connection in the total count and the gauge, until dropped.
struct OpenSlot(Arc<Shared>);

impl OpenSlot {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        shared.metrics.tcp_connections.increment(1.0);
        Self(Arc::clone(shared))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.tcp_connections.decrement(1.0);
    }
}

/// Serves `hub` on `listener` until `shutdown` completes or the hub is shut down; then
/// stops accepting, ends the event streams, lets connections finish for the grace
/// period, drops the rest, waits for their tasks (HTTP/2 stream tasks too) to end and
/// returns.
pub(crate) async fn serve<F>(hub: Hub, listener: TcpListener, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let router = crate::http::app(hub.clone());
    serve_router(hub, router, listener, shutdown, true).await
}

/// [`serve`] with another router: the operations routes on a private listener
/// ([`Hub::serve_ops`]), which never speaks TLS (`tls` false).
pub(crate) async fn serve_router<F>(
    hub: Hub,
    router: Router,
    listener: TcpListener,
    shutdown: F,
    tls: bool,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let limits = hub.inner.config.server.clone();
    let streams = StreamExecutor {
        abandon: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    // However serve ends (dropped too), HTTP/2 streams still running are dropped.
    let _abandon = streams.abandon.clone().drop_guard();
    let mut shared = Shared::new(&limits, hub.inner.metrics.clone(), streams.clone());
    // TLS is the public listener's; the private operations listener stays plain.
    let tls = if tls {
        hub.inner.config.tls.as_ref()
    } else {
        None
    };
    shared.tls = tls.map(crate::tls::TlsConfig::server_config);
    shared.refusal_tls = tls.map(|tls| tls.clone().http2(false).server_config());
    let shared = Arc::new(shared);
    // The certificate files are watched while the server runs.
    let watching = CancellationToken::new();
    let _stop_watching = watching.clone().drop_guard();
    if let Some(tls) = tls {
        tls.watch(watching.clone());
    }
    // Every route turned into its service once, here, rather than per request: the
    // connections share this router (an `Arc`).
    let router = router.with_state(());
    let token = hub.inner.shutdown.clone();
    // Tells every connection to finish what it is doing and close.
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut stop = pin!(async {
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
    });
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = ended
                    && err.is_panic()
                {
                    tracing::error!(cause = %err, "a connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    admit(&shared, &router, &closing, &mut connections, stream, peer);
                }
                Err(err) if is_per_connection(&err) => {
                    tracing::debug!(cause = %err, "a connection failed before it was accepted");
                }
                Err(err) => {
                    tracing::error!(cause = %err, "accept failed; pausing");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    // Event streams never end on their own: tell them to. Then every connection closes
    // once its responses are written (HTTP/2: GOAWAY first).
    token.cancel();
    closing.cancel();
    let grace = limits.shutdown_grace;
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace = ?grace,
            "shutdown grace period over: dropping the connections still open"
        );
        connections.shutdown().await;
    }
    // The connections are gone: what is left of their HTTP/2 streams can write nothing.
    // Each task ends at its next poll once told to.
    streams.abandon.cancel();
    streams.tasks.close();
    streams.tasks.wait().await;
    Ok(())
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Takes an accepted connection under the caps, or refuses it.
fn admit(
    shared: &Arc<Shared>,
    router: &Router,
    closing: &CancellationToken,
    connections: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if shared.max_connections != 0 && shared.open.load(Ordering::Relaxed) >= shared.max_connections
    {
        shared.metrics.refusals_max_connections.increment(1);
        let reason = format!("too many connections: at most {}", shared.max_connections);
        refuse(shared, stream, peer, reason);
        return;
    }
    let via_proxy = shared.is_trusted(peer.ip());
    let ip_slot = if via_proxy {
        None
    } else {
        match shared.connections_per_ip.claim(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                shared.metrics.refusals_per_ip.increment(1);
                let reason = shared.connections_refusal(peer.ip());
                refuse(shared, stream, peer, reason);
                return;
            }
        }
    };
    let open = OpenSlot::new(shared);
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(cause = %err, %peer, "cannot set TCP_NODELAY");
    }
    let connection = Connection {
        shared: Arc::clone(shared),
        router: router.clone(),
        peer,
        via_proxy,
        closing: closing.clone(),
    };
    connections.spawn(async move {
        connection.run(stream).await;
        // The address's place first: once the gauge says the connection is gone, its
        // place is free too.
        drop(ip_slot);
        drop(open);
    });
}

/// Answers a connection over a cap with a `503` and closes it, without holding up the
/// accept loop.
fn refuse(shared: &Shared, stream: TcpStream, peer: SocketAddr, reason: String) {
    tracing::info!(client = %peer.ip(), status = 503, %reason, "connection refused");
    let Ok(permit) = Arc::clone(&shared.refusals).try_acquire_owned() else {
        // Too many refusals under way already: close this one without a word.
        return;
    };
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let tls = shared.refusal_tls.clone();
    tokio::spawn(async move {
        let answer = async {
            match tls {
                None => answer_refusal(stream, &response).await,
                // A TLS client can read the answer only after a handshake, within the
                // same deadline (and the same bound on refusals under way).
                Some(tls) => {
                    let stream = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await?;
                    answer_refusal(stream, &response).await
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, answer).await;
        drop(permit);
    });
}

/// Writes a refusal's `response`, closes, and drains what the peer sent.
async fn answer_refusal<S>(mut stream: S, response: &str) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Read what the peer sent until it closes too: closing a socket with unread
    // bytes resets the connection, and the peer could lose the answer.
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN {
        match stream.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// One accepted connection.
struct Connection {
    shared: Arc<Shared>,
    router: Router,
    peer: SocketAddr,
    via_proxy: bool,
    closing: CancellationToken,
}

/// Why a connection's deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request head that did not arrive in time.
    Header,
    /// No request for too long.
    Idle,
}

impl Connection {
    /// Serves the connection: the TLS handshake when the hub has TLS, then the lean path,
    /// then hyper from the first request that is not an event stream over HTTP/1.1.
    ///
    /// Not an `async fn`: the future is what the connection's task holds for as long as
    /// it is open, so the setup is done here and the future captures only what it uses
    /// (an `async fn` keeps its arguments, and every local that is alive at an await),
    /// with the handshake's, the lean path's and hyper's state in boxes of their own.
    fn run<S>(self, stream: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared;
        let peer = self.peer;
        let closing = self.closing;
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        let io = TimedIo {
            stream,
            activity: Arc::clone(&activity),
            write_timeout: shared.write_timeout,
            stall: None,
            armed: false,
            timed_out: false,
            timeouts_write: shared.metrics.timeouts_write.clone(),
        };
        let service = ConnectionService {
            router: self.router,
            shared: Arc::clone(&shared),
            peer,
            via_proxy: self.via_proxy,
            activity: Arc::clone(&activity),
        };
        async move {
            let io = match shared.tls.clone() {
                None => MaybeTls::Plain(io),
                Some(tls) => {
                    let shaking = handshake(&shared, &tls, io, accepted, &closing, peer);
                    match Box::pin(shaking).await {
                        Some(stream) => MaybeTls::Tls(Box::new(stream)),
                        None => return,
                    }
                }
            };
            // HTTP/2 chosen by ALPN goes to hyper at once: the lean path is HTTP/1.1's.
            let h2_by_alpn = match &io {
                MaybeTls::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
                MaybeTls::Plain(_) => false,
            };
            let mut lean = Box::pin(crate::lean::serve(
                io,
                service,
                closing.clone(),
                shared.lean_event_streams && !h2_by_alpn,
            ));
            let handoff = supervise(&shared, &activity, lean.as_mut()).await;
            drop(lean);
            match handoff {
                Ok(crate::lean::Outcome::Closed) => {}
                Ok(crate::lean::Outcome::Handoff(io, service)) => {
                    let hyper =
                        serve_hyper(Arc::clone(&shared), &activity, io, service, closing, peer);
                    Box::pin(hyper).await;
                }
                Err(wait) => shared.timed_out(wait, peer),
            }
            if let Some(version) = activity.version.get() {
                let observed = &shared.metrics.observed;
                observed.http_connections(*version).decrement(1.0);
            }
        }
    }
}

/// Serves a connection with hyper (HTTP/1.1, h2c, and HTTP/2 over TLS) under the
/// connection's deadlines.
async fn serve_hyper<I>(
    shared: Arc<Shared>,
    activity: &Activity,
    io: crate::lean::Rewind<I>,
    service: ConnectionService,
    closing: CancellationToken,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(service);
    let mut conn = pin!(
        shared
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service),
    );
    let mut closed = pin!(closing.cancelled());
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let mut shutting_down = false;
    let outcome = poll_fn(|cx| {
        if !shutting_down && closed.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(result));
        }
        // Registered before the deadline is read: a response that ends in another
        // task (HTTP/2 streams run in their own) after the read wakes us.
        activity.waker.register(cx.waker());
        let deadline = activity
            .phase()
            .deadline(shared.header_timeout, shared.idle_timeout);
        match deadline {
            // A connection shutting down has no idle deadline: it closes when idle.
            Some((_, Wait::Idle)) if shutting_down => Poll::Pending,
            Some((at, wait)) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(wait))
            }
            None => Poll::Pending,
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(cause = %err, %peer, "connection ended with an error"),
        Err(Wait::Header) => shared.timed_out(Wait::Header, peer),
        Err(Wait::Idle) => {
            shared.timed_out(Wait::Idle, peer);
            // Nothing is in flight: a graceful close ends at once over HTTP/1.1 and
            // after a GOAWAY over HTTP/2, and the write deadline bounds both.
            conn.as_mut().graceful_shutdown();
            if let Err(err) = conn.as_mut().await {
                tracing::debug!(cause = %err, %peer, "connection ended with an error");
            }
        }
    }
}

/// Shakes hands with a TLS client, within the connection's request-head deadline
/// (counted from `accepted`): `None` if the handshake failed, timed out or the server
/// is shutting down, each counted; a failure is logged at DEBUG only, since scanners and
/// clients that distrust the certificate make them all day.
async fn handshake<S>(
    shared: &Shared,
    tls: &Arc<rustls::ServerConfig>,
    io: TimedIo<S>,
    accepted: Instant,
    closing: &CancellationToken,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TimedIo<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let accept = tokio_rustls::TlsAcceptor::from(Arc::clone(tls)).accept(io);
    let deadline = async {
        match shared.header_timeout {
            Some(timeout) => tokio::time::sleep_until(accepted + timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        shaken = accept => match shaken {
            Ok(stream) => Some(stream),
            Err(err) => {
                shared.metrics.tls_handshake_failures.increment(1);
                tracing::debug!(cause = %err, %peer, "TLS handshake failed");
                None
            }
        },
        () = deadline => {
            shared.metrics.timeouts_handshake.increment(1);
            tracing::debug!(%peer, "TLS handshake not finished in time: closing");
            None
        }
        () = closing.cancelled() => None,
    }
}

/// A connection's byte stream: the socket itself, or TLS over it.
// The TLS variant is boxed on purpose: rustls's connection state is some kilobytes, and a
// plain connection should not carry that room inline; the plain one, inline, costs no
// allocation.
#[allow(clippy::large_enum_variant)]
enum MaybeTls<S> {
    Plain(TimedIo<S>),
    Tls(Box<tokio_rustls::server::TlsStream<TimedIo<S>>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Polls `work` until it ends, or until the connection's deadline (its [`Phase`]'s)
/// passes.
async fn supervise<T>(
    shared: &Shared,
    activity: &Activity,
    mut work: Pin<&mut impl Future<Output = T>>,
) -> Result<T, Wait> {
    // Only while a deadline runs: an open event stream has none, and holds no timer.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(done));
        }
        // Registered before the deadline is read, as in `serve_hyper`.
        activity.waker.register(cx.waker());
        let deadline = activity
            .phase()
            .deadline(shared.header_timeout, shared.idle_timeout);
        match deadline {
            Some((at, wait)) => {
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(wait))
            }
            None => {
                timer = None;
                Poll::Pending
            }
        }
    })
    .await
}

/// Where a connection is between requests, and the deadline that applies.
///
/// Driven by the connection's reads and requests, with the time given in, so that tests
/// can drive it without sockets or clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    state: State,
    /// Requests whose responses are not yet dropped.
    in_flight: usize,
    /// Whether the connection speaks HTTP/2 (known at its first request).
    http2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head is due: the first one since `since` (the accept), or over
    /// HTTP/1.1 one whose first bytes arrived at `since`.
    Head { since: Instant },
    /// At least one request in flight: no deadline.
    Busy,
    /// No request in flight since `since`, and no byte of a new one yet.
    Idle { since: Instant },
}

impl Phase {
    fn new(accepted: Instant) -> Self {
        Self {
            state: State::Head { since: accepted },
            in_flight: 0,
            http2: false,
        }
    }

    /// Bytes arrived.
    fn read(&mut self, now: Instant) {
        // HTTP/2 peers send frames between requests (pings, settings): only a request
        // ends an idle HTTP/2 connection's wait.
        if let State::Idle { .. } = self.state
            && !self.http2
        {
            self.state = State::Head { since: now };
        }
    }

    /// A request head was read and handed to the service.
    fn request(&mut self, version: Version) {
        self.in_flight += 1;
        self.http2 |= version == Version::HTTP_2;
        self.state = State::Busy;
    }

    /// A response (with its body) was dropped: written, failed or abandoned.
    fn response_done(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.state = State::Idle { since: now };
        }
    }

    /// When the connection must be closed, and why; `None` while a request is in
    /// flight or the timeout that applies is off.
    fn deadline(
        &self,
        header: Option<Duration>,
        idle: Option<Duration>,
    ) -> Option<(Instant, Wait)> {
        match self.state {
            State::Busy => None,
            State::Head { since } => header.map(|d| (since + d, Wait::Header)),
            State::Idle { since } => idle.map(|d| (since + d, Wait::Idle)),
        }
    }
}

/// A connection's [`Phase`], shared by its IO, its requests and its task.
struct Activity {
    phase: Mutex<Phase>,
    /// The connection task, woken when a response ends in another task.
    waker: AtomicWaker,
    /// The HTTP version of its first request, counted in `tidings_http_connections`.
    version: std::sync::OnceLock<Version>,
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::new(accepted)),
            waker: AtomicWaker::new(),
            version: std::sync::OnceLock::new(),
        }
    }

    /// The phase, locked; a std mutex, held for one update and never across an await.
    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in flight: counted in its connection's [`Phase`] and against its client's
/// address until its response body is dropped.
struct InFlight {
    activity: Arc<Activity>,
    _client: Option<IpSlot>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.phase().response_done(Instant::now());
        self.activity.waker.wake();
    }
}

/// The per-connection service: the hub's router, with the connection's peer and client
/// address in each request's extensions, and each request held in the connection's
/// accounting until its response body is dropped.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    shared: Arc<Shared>,
    peer: SocketAddr,
    via_proxy: bool,
    activity: Arc<Activity>,
}

impl<B> tower::Service<Request<B>> for ConnectionService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.activity.phase().request(request.version());
        if self.activity.version.set(request.version()).is_ok() {
            let observed = &self.shared.metrics.observed;
            observed.http_connections(request.version()).increment(1.0);
        }
        let mut in_flight = InFlight {
            activity: Arc::clone(&self.activity),
            _client: None,
        };
        let metrics = &self.shared.metrics.observed;
        // Before the router (and its request log): logged here, in the request's span.
        let refuse = move |refusal: Refusal, in_flight: InFlight| -> Self::Future {
            let response = refusal.into_response();
            if let Some(note) = response
                .extensions()
                .get::<crate::http::trace::RefusalNote>()
            {
                metrics.refused(response.status().as_u16(), note.code);
                crate::http::trace::refused(
                    response.status(),
                    note.code,
                    &note.reason,
                    Duration::ZERO,
                    http_body::Body::size_hint(response.body()).exact(),
                );
            }
            Box::pin(async move { Ok(track(response, in_flight)) })
        };
        let client = if self.via_proxy {
            match forwarded_client(request.headers(), &self.shared.trusted_proxies) {
                Ok(forwarded) => forwarded.unwrap_or(self.peer.ip()),
                Err(entry) => {
                    self.shared.metrics.invalid_forwarded_for.increment(1);
                    let reason = invalid_forwarded(entry);
                    let peer = Some(self.peer.ip());
                    let _span = crate::http::trace::request_span(&request, peer).entered();
                    return refuse(
                        Refusal::bad_request(reason).code("forwarded_for"),
                        in_flight,
                    );
                }
            }
        } else {
            self.peer.ip()
        };
        match self.shared.requests_per_ip.claim(client) {
            Some(slot) => in_flight._client = Some(slot),
            None => {
                if self.via_proxy {
                    self.shared.metrics.refusals_forwarded.increment(1);
                } else {
                    self.shared.metrics.refusals_requests_per_ip.increment(1);
                }
                let reason = self.shared.requests_refusal(client);
                let code = if self.via_proxy {
                    "forwarded_per_ip"
                } else {
                    "requests_per_ip"
                };
                let _span = crate::http::trace::request_span(&request, Some(client)).entered();
                return refuse(
                    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).code(code),
                    in_flight,
                );
            }
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(ClientAddr(client));
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match tower::Service::call(&mut router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(track(response, in_flight))
        })
    }
}

/// The response, with `in_flight` dropped when its body is.
fn track(response: Response<Body>, in_flight: InFlight) -> Response<Body> {
    response.map(|body| {
        Body::new(Tracked {
            body,
            _in_flight: in_flight,
        })
    })
}

/// A response body that holds its request's [`InFlight`].
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, with a write deadline, and its reads reported to the
/// connection's [`Phase`].
struct TimedIo<S> {
    stream: S,
    activity: Arc<Activity>,
    write_timeout: Option<Duration>,
    /// The write deadline's timer, made at the first stall and reused.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs: the socket refused bytes and has taken none since.
    armed: bool,
    timed_out: bool,
    /// The hub's count of write timeouts: the one metric this needs, rather than a copy
    /// of every handle in every connection.
    timeouts_write: metrics::Counter,
}

impl<S: AsyncWrite + Unpin> TimedIo<S> {
    /// The socket took bytes (or failed): the deadline no longer runs.
    fn progress<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.armed = false;
        result
    }

    /// The socket refused bytes: start the deadline if it is not running, and fail once
    /// it has passed.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        if !self.timed_out {
            let deadline = Instant::now() + timeout;
            let stall = self
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if !self.armed {
                stall.as_mut().reset(deadline);
                self.armed = true;
            }
            ready!(stall.as_mut().poll(cx));
            self.timed_out = true;
            self.timeouts_write.increment(1);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "write timed out: the peer does not read",
        )))
    }

    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.timed_out {
            return self.stalled(cx);
        }
        match write(Pin::new(&mut self.stream), cx) {
            Poll::Pending => self.stalled(cx),
            done => self.progress(done),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.phase().read(Instant::now());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream, cx| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream, cx| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_with(cx, |stream, cx| stream.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_with(cx, |stream, cx| stream.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Option<Duration> = Some(Duration::from_secs(10));
    const IDLE: Option<Duration> = Some(Duration::from_secs(60));

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_head_is_due_from_the_accept_whatever_arrives() {
        let t0 = Instant::now();
        let mut phase = Phase::new(t0);
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(10), Wait::Header))
        );
        // A byte a second does not move the deadline (slowloris).
        phase.read(t0 + secs(1));
        phase.read(t0 + secs(9));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(10), Wait::Header))
        );
        assert_eq!(phase.deadline(None, IDLE), None, "header timeout off");
    }

    #[test]
    fn http1_keep_alive_waits_idle_then_times_the_next_head() {
        let t0 = Instant::now();
        let mut phase = Phase::new(t0);
        phase.request(Version::HTTP_11);
        assert_eq!(phase.deadline(HEADER, IDLE), None, "busy: no deadline");
        phase.read(t0 + secs(1)); // request body
        assert_eq!(phase.deadline(HEADER, IDLE), None);
        phase.response_done(t0 + secs(2));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(62), Wait::Idle))
        );
        // The first byte of the next request starts its head deadline.
        phase.read(t0 + secs(30));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(40), Wait::Header))
        );
        phase.read(t0 + secs(35));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(40), Wait::Header))
        );
        phase.request(Version::HTTP_11);
        assert_eq!(phase.deadline(HEADER, IDLE), None);
        phase.response_done(t0 + secs(100));
        assert_eq!(phase.deadline(HEADER, None), None, "idle timeout off");
    }

    #[test]
    fn http2_is_idle_only_without_streams_and_frames_do_not_end_the_wait() {
        let t0 = Instant::now();
        let mut phase = Phase::new(t0);
        phase.request(Version::HTTP_2);
        phase.request(Version::HTTP_2);
        phase.response_done(t0 + secs(5));
        assert_eq!(phase.deadline(HEADER, IDLE), None, "one stream still open");
        phase.response_done(t0 + secs(6));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(66), Wait::Idle))
        );
        // A ping answer is not the start of a request.
        phase.read(t0 + secs(20));
        assert_eq!(
            phase.deadline(HEADER, IDLE),
            Some((t0 + secs(66), Wait::Idle))
        );
    }

    #[test]
    fn address_ranges() {
        let range: AddrRange = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains("10.1.255.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(
            range.contains("::ffff:10.1.2.3".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(!range.contains("::1".parse().unwrap()));
        assert_eq!(range.to_string(), "10.1.0.0/16");
        let host: AddrRange = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: AddrRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::9".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: AddrRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let mapped: AddrRange = "::ffff:192.168.0.0/112".parse().unwrap();
        assert!(mapped.contains("192.168.4.4".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0/8",
            "host",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<AddrRange>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn forwarded_client_is_the_rightmost_untrusted_address() {
        let trusted: Vec<AddrRange> =
            vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let headers = |values: &[&[u8]]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append(
                    "x-forwarded-for",
                    axum::http::HeaderValue::from_bytes(value).unwrap(),
                );
            }
            map
        };
        let client =
            |values: &[&[u8]]| forwarded_client(&headers(values), &trusted).map_err(<[u8]>::to_vec);
        let ip = |s: &str| Ok(Some(s.parse::<IpAddr>().unwrap()));
        assert_eq!(client(&[b"203.0.113.7"]), ip("203.0.113.7"));
        // A client may put anything on the left; the proxies append on the right.
        assert_eq!(
            client(&[b"6.6.6.6, 203.0.113.7, 10.0.0.2"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            client(&[b"garbage, 198.51.100.1", b"10.1.1.1"]),
            ip("198.51.100.1")
        );
        // Bytes that are not visible ASCII, left of the client, are never read.
        assert_eq!(
            client(&[b"\xff\xfe bytes,, 198.51.100.2 ,10.0.0.3"]),
            ip("198.51.100.2")
        );
        assert_eq!(
            client(&[b"[2001:db8::1]:443", b"127.0.0.1:80"]),
            ip("2001:db8::1")
        );
        assert_eq!(client(&[b"::ffff:192.0.2.1"]), ip("192.0.2.1"));
        assert_eq!(client(&[b"10.0.0.1, 127.0.0.1"]), Ok(None));
        assert_eq!(client(&[]), Ok(None));
        // The entry that decides is not an address: an error, not the proxy's address.
        assert_eq!(
            client(&[b"not an address"]),
            Err(b"not an address".to_vec())
        );
        assert_eq!(
            client(&[b"203.0.113.7\xff, 10.0.0.1"]),
            Err(b"203.0.113.7\xff".to_vec())
        );
        assert_eq!(
            client(&[b"203.0.113.7", b"unknown"]),
            Err(b"unknown".to_vec())
        );
    }

    #[test]
    fn the_invalid_entry_is_quoted_on_one_line_and_cut_short() {
        assert_eq!(
            invalid_forwarded(b"1.2.3.4\xff\"\n"),
            r#"invalid X-Forwarded-For from a trusted proxy: "1.2.3.4\xff\"\n" is not an IP address"#
        );
        let long = invalid_forwarded(&[b'a'; 1000]);
        assert!(
            long.contains(&format!("\"{}...\"", "a".repeat(QUOTED_ENTRY))),
            "{long}"
        );
    }

    #[test]
    fn connection_cap_from_the_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127431               127431               processes \n\
                      Max open files            20000                1048576              files     \n";
        assert_eq!(open_files_limit(limits), Some(20_000));
        assert_eq!(connections_for(20_000), 20_000 - FD_RESERVE);
        assert_eq!(connections_for(256), 128);
        assert_eq!(connections_for(1), 1);
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(open_files_limit(unlimited), None);
        assert_eq!(open_files_limit(""), None);
        assert!(ServerLimits::default().max_connections >= 1);
    }

    /// Handlers see the TCP peer and the client address in the request's extensions.
    #[tokio::test]
    async fn requests_carry_the_peer_and_the_client_address() {
        use axum::extract::{ConnectInfo, Extension};
        let limits = ServerLimits {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..ServerLimits::default()
        };
        let shared = Arc::new(Shared::new(
            &limits,
            Metrics::new(),
            StreamExecutor {
                abandon: CancellationToken::new(),
                tasks: TaskTracker::new(),
            },
        ));
        let router = Router::new().route(
            "/",
            axum::routing::get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 Extension(client): Extension<ClientAddr>| async move {
                    format!("{peer} {client}")
                },
            ),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let connection = Connection {
            shared: Arc::clone(&shared),
            router,
            peer,
            via_proxy: shared.is_trusted(peer.ip()),
            closing: CancellationToken::new(),
        };
        let served = tokio::spawn(connection.run(stream));
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 203.0.113.9\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with(&format!("\r\n\r\n{peer} 203.0.113.9")),
            "{answer}"
        );
        served.await.unwrap();
    }

    /// The write deadline, on a real socket pair whose reader never reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_socket_that_does_not_drain_fails_with_timed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let metrics = Metrics::new();
        let mut io = TimedIo {
            stream,
            activity: Arc::new(Activity::new(Instant::now())),
            write_timeout: Some(Duration::from_millis(300)),
            stall: None,
            armed: false,
            timed_out: false,
            timeouts_write: metrics.timeouts_write.clone(),
        };
        let chunk = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        let err = loop {
            // Bounded: loopback buffers hold some MiB, never this much.
            assert!(started.elapsed() < Duration::from_secs(60), "never stalled");
            if let Err(err) = io.write_all(&chunk).await {
                break err;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            metrics
                .render()
                .contains("tidings_timeouts_total{kind=\"write\"} 1")
        );
        drop(peer);
    }

    /// A TLS handshake that never finishes is closed at the request-head deadline, on
    /// paused time: the deadline (the default 10 s) passes without the test waiting it.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_tls_handshake_is_closed_at_the_head_deadline() {
        let generated = crate::tls::SelfSigned::generate(&["localhost"]).unwrap();
        let limits = ServerLimits::default();
        let metrics = Metrics::new();
        let mut shared = Shared::new(
            &limits,
            metrics.clone(),
            StreamExecutor {
                abandon: CancellationToken::new(),
                tasks: TaskTracker::new(),
            },
        );
        shared.tls = Some(generated.config().unwrap().server_config());
        let shared = Arc::new(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let started = Instant::now();
        let connection = Connection {
            shared: Arc::clone(&shared),
            router: Router::new(),
            peer,
            via_proxy: false,
            closing: CancellationToken::new(),
        };
        let served = tokio::spawn(connection.run(stream));
        // The start of a ClientHello record, and then nothing.
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        served.await.unwrap();
        assert!(
            started.elapsed() >= DEFAULT_HEADER_READ_TIMEOUT,
            "closed early"
        );
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        let text = metrics.render();
        assert!(
            text.contains("tidings_timeouts_total{kind=\"tls_handshake\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidings_tls_handshake_failures_total 0"),
            "a timeout is not a failure: {text}"
        );
    }
}

#[cfg(test)]
mod sizes {
    use super::*;

    /// What an idle connection's task holds inline (its future), on the lean path and
    /// once handed to hyper (whose connection state is boxed apart).
    #[tokio::test]
    async fn the_connection_task_stays_small() {
        let limits = ServerLimits::default();
        let shared = Arc::new(Shared::new(
            &limits,
            Metrics::new(),
            StreamExecutor {
                abandon: CancellationToken::new(),
                tasks: TaskTracker::new(),
            },
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let connection = Connection {
            shared: Arc::clone(&shared),
            router: Router::new(),
            peer,
            via_proxy: false,
            closing: CancellationToken::new(),
        };
        let run = connection.run(stream);
        let size = std::mem::size_of_val(&run);
        eprintln!("connection future: {size} bytes");
        // Debug builds lay futures out loosely: a release build's is smaller.
        assert!(size <= 1024, "the connection future is {size} bytes");
    }

    /// What one idle event stream's body holds (its state is boxed once).
    #[tokio::test]
    async fn an_idle_stream_body_is_small() {
        let hub = crate::Hub::builder()
            .jwt_key(crate::auth::KeyConfig::hmac(
                b"sizes unit-test secret, 32+ bytes!",
            ))
            .build()
            .await
            .unwrap();
        let request = crate::stream::Request {
            info: crate::fanout::SubscriberInfo {
                id: crate::log::Update::generate_id(),
                topics: vec!["a".into()],
                payload: None,
            },
            selectors: vec![crate::topic::Selector::new("a")],
            private: None,
            last_event_id: None,
            expires_at: None,
        };
        let opened = crate::stream::open(&hub, request).await.unwrap();
        let size = std::mem::size_of_val(&*opened.body);
        eprintln!("stream body state: {size} bytes");
        assert!(size <= 1024, "the stream body's state is {size} bytes");
    }
}
