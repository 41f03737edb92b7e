//! # tidings-hub
//!
//! A [Mercure](https://mercure.rocks/spec) hub as a library: publishers POST updates to
//! `/.well-known/mercure`, subscribers receive them as Server-Sent Events, and a
//! subscriber that reconnects with `Last-Event-ID` gets what it missed from history,
//! once and in order.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use tidings_hub::{Hub, auth::KeyConfig, log::Update};
//!
//! let hub = Hub::builder()
//!     .jwt_key(KeyConfig::hmac(b"a secret of at least 32 bytes!!!"))
//!     .build()
//!     .await?;
//! // Mount it in an axum app, at the root or under a prefix; its health checks and
//! // metrics come apart, so they do not collide with the app's own.
//! let app = Router::new()
//!     .route("/healthz", get(|| async { "ok" }))
//!     .nest("/events", hub.router())
//!     .nest("/hub", hub.ops_router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // Event streams never end by themselves: `shutdown_on` ends them when the signal
//! // comes, so that the graceful shutdown completes.
//! # let (stop, ctrl_c) = tokio::sync::oneshot::channel::<()>();
//! // In a real program: `hub.shutdown_on(tokio::signal::ctrl_c())`.
//! let server = tokio::spawn(
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(hub.shutdown_on(ctrl_c))
//!         .into_future(),
//! );
//!
//! // Publish from Rust as well as over HTTP.
//! let update = Update::builder("https://example.com/books/1")
//!     .data(r#"{"title":"Dune"}"#)
//!     .build();
//! hub.publish(update).await?;
//!
//! # stop.send(()).unwrap();
//! server.await??;
//! hub.close().await; // stores what was accepted, releases the history
//! # Ok(()) }
//! ```
//!
//! The parts:
//! - [`topic`]: topic selectors (`*`, exact, RFC 6570 URI templates);
//! - [`auth`]: JWT verification and the Mercure claims;
//! - [`log`]: history, in memory or in a durable file;
//! - the fan-out, which hands each update, encoded once, to the subscribers it concerns;
//! - the HTTP layer: [`Hub::router`] (subscribe, publish, the subscriptions API, CORS,
//!   the `Link` header) and [`Hub::ops_router`] (`/healthz`, `/readyz`, `/metrics`);
//! - [`web`]: the browser pages (the demo and the live console);
//! - the server loop of [`Hub::serve`]: timeouts, connection caps, trusted proxies and a
//!   bounded shutdown ([`ServerLimits`]);
//! - [`tls`]: TLS (rustls) with HTTP/2 by ALPN, and certificates reloaded while serving.

pub mod auth;
mod cluster;
mod dispatch;
mod event;
mod fanout;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod lean;
pub mod log;
mod metrics;
mod server;
mod stream;
mod subscription;
pub mod tls;
pub mod topic;
pub mod web;

pub use http::{HEALTH_PATH, HUB_PATH, METRICS_PATH, READY_PATH, SUBSCRIPTIONS_PATH};
// For the `tidings` binary's redaction: one list of what names a credential.
#[doc(hidden)]
pub use http::trace::is_credential_name;
pub use hub::{
    DEFAULT_HEARTBEAT, DEFAULT_MAX_BODY, DEFAULT_MAX_LIVE_TEMPLATES, DEFAULT_MAX_SUBSCRIBERS,
    DEFAULT_MAX_TOPICS, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_CAPACITY, Hub, HubBuilder, HubError,
    PublishError,
};
pub use server::{
    AddrRange, AddrRangeError, ClientAddr, DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_REQUESTS_PER_IP, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT,
    FALLBACK_MAX_CONNECTIONS, ServerLimits,
};

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
