//! # tidings-hub
//!
//! A [Mercure](https://mercure.rocks/spec) hub as a library: publishers POST updates to
//! `/.well-known/mercure`, subscribers receive them as Server-Sent Events, and a
//! subscriber that reconnects with `Last-Event-ID` gets what it missed from history,
//! once and in order.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings_hub::{Hub, auth::KeyConfig, log::Update};
//!
//! let hub = Hub::builder()
//!     .jwt_key(KeyConfig::hmac(b"a secret of at least 32 bytes!!!"))
//!     .build()
//!     .await?;
//! // Mount it in an axum app…
//! let app = axum::Router::new().merge(hub.router());
//! # drop(app);
//! // …and publish from Rust as well as over HTTP.
//! let id = hub.publish(Update::new("", "https://example.com/books/1", "{}")).await?;
//! # assert!(id.starts_with("urn:uuid:"));
//! # Ok(()) }
//! ```
//!
//! The parts:
//! - [`topic`]: topic selectors (`*`, exact, RFC 6570 URI templates);
//! - [`auth`]: JWT verification and the Mercure claims;
//! - [`log`]: history, in memory or in a durable file;
//! - the fan-out, which hands each update, encoded once, to the subscribers it concerns;
//! - the HTTP layer: subscribe, publish, the subscriptions API, CORS, `/healthz`,
//!   `/metrics`;
//! - the server loop of [`Hub::serve`]: timeouts, connection caps, trusted proxies and a
//!   bounded shutdown ([`ServerLimits`]).

pub mod auth;
mod dispatch;
mod event;
mod fanout;
mod http;
mod hub;
pub mod log;
mod metrics;
mod server;
mod stream;
mod subscription;
pub mod topic;
pub mod web;

pub use http::{HUB_PATH, SUBSCRIPTIONS_PATH};
pub use hub::{
    DEFAULT_HEARTBEAT, DEFAULT_MAX_BODY, DEFAULT_MAX_TOPICS, DEFAULT_QUEUE_CAPACITY, Hub,
    HubBuilder, HubError, PublishError,
};
pub use server::{
    AddrRange, AddrRangeError, ClientAddr, DEFAULT_H2_MAX_CONCURRENT_STREAMS,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT, FALLBACK_MAX_CONNECTIONS, ServerLimits,
};

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
