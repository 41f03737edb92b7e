//! The hub: its configuration, its state, and the ways in (HTTP, Rust).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authorizer, KeyConfig};
use crate::dispatch::{self, Dispatch};
use crate::fanout::Fanout;
use crate::log::{Log, LogError, Retention, Stored, Update};
use crate::metrics::Metrics;

/// Default interval of heartbeat comments on an idle stream.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Default limit on a publish request's body, in bytes.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Default limit on the topics of one update or one subscription.
pub const DEFAULT_MAX_TOPICS: usize = 100;
/// Default capacity of a subscriber's queue, in updates: a subscriber that falls this
/// far behind is disconnected (it resumes from history when it reconnects).
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default bound, in bytes of events, on how far a subscriber may fall behind before it
/// is disconnected (it resumes from history when it reconnects): with
/// [`DEFAULT_QUEUE_CAPACITY`], what is held on behalf of a subscriber that does not read.
pub const DEFAULT_QUEUE_BYTES: usize = crate::fanout::DEFAULT_LAG_BYTES;
/// Default cap on the subscribers (event streams) of one hub at once.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 65_536;
/// Default cap on the distinct URI templates the live subscribers of one hub use: every
/// new topic is matched once against each, so this bounds the cost of a new topic.
pub const DEFAULT_MAX_LIVE_TEMPLATES: usize = 4_096;

/// Why an update was refused; nothing was stored or sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The update has no topic.
    #[error("missing topic: an update needs at least one `topic`")]
    NoTopic,
    /// A topic is the empty string.
    #[error("empty topic: a topic must not be empty")]
    EmptyTopic,
    /// More topics than the hub accepts.
    #[error("too many topics: at most {limit} per update")]
    TooManyTopics {
        /// The hub's limit.
        limit: usize,
    },
    /// The id starts with `#`, which Mercure reserves.
    #[error("invalid id: an update id must not start with '#'")]
    IdStartsWithHash,
    /// The id would inject fields into the event stream.
    #[error("invalid id: {0}")]
    InvalidId(#[source] tidings_wire::EncodeError),
    /// The type would inject fields into the event stream.
    #[error("invalid type: {0}")]
    InvalidType(#[source] tidings_wire::EncodeError),
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// The log could not store the update.
    #[error("cannot store the update: {0}")]
    Log(#[source] LogError),
}

/// Why a hub could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The history log could not be opened or read.
    #[error("history: {0}")]
    Log(#[from] LogError),
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) anonymous: bool,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) publish_origins: Vec<String>,
    pub(crate) max_body: usize,
    pub(crate) max_topics: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_bytes: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) max_live_templates: usize,
    pub(crate) subscriptions: bool,
    pub(crate) pages: bool,
    pub(crate) server: crate::server::ServerLimits,
    pub(crate) selector_limits: crate::topic::SelectorLimits,
    pub(crate) tls: Option<crate::tls::TlsConfig>,
    /// Whether [`Hub::serve`] serves `/metrics` (off when [`Hub::serve_ops`] does).
    pub(crate) public_metrics: bool,
}

/// Builds a [`Hub`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidings_hub::HubError> {
/// use tidings_hub::{Hub, auth::KeyConfig};
///
/// let hub = Hub::builder()
///     .jwt_key(KeyConfig::hmac(b"a secret of at least 32 bytes!!!"))
///     .cors_origins(["https://app.example.com"])
///     .build()
///     .await?;
/// let app: axum::Router = axum::Router::new().merge(hub.router());
/// # drop(app); Ok(()) }
/// ```
#[must_use]
pub struct HubBuilder {
    history: Option<PathBuf>,
    /// Cluster mode: the Redis URL and stream name of the shared log.
    redis: Option<(String, String)>,
    retention: Retention,
    publisher_key: Option<KeyConfig>,
    subscriber_key: Option<KeyConfig>,
    config: Config,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("HubBuilder")
            .field("history", &self.history)
            .field("retention", &self.retention)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Keeps history in a durable file (created if missing) instead of memory.
    pub fn history_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.history = Some(path.into());
        self
    }

    /// Keeps history in memory only (the default): lost when the hub stops.
    pub fn memory_history(mut self) -> Self {
        self.history = None;
        self
    }

    /// Cluster mode: keeps history in the Redis Stream `stream` at `url`
    /// (`redis://[user:pass@]host:port[/db]`, `rediss://` for TLS), shared with every
    /// other hub node that names the same stream. Every node delivers every update, in
    /// the stream's order, and replays for subscribers that reconnect to it, whichever
    /// node the update was published on. Overrides [`HubBuilder::history_file`].
    pub fn redis(mut self, url: impl Into<String>, stream: impl Into<String>) -> Self {
        self.redis = Some((url.into(), stream.into()));
        self
    }

    /// How much history to keep, by count and by age.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The key that verifies both publisher and subscriber tokens.
    pub fn jwt_key(mut self, key: KeyConfig) -> Self {
        self.publisher_key = Some(key.clone());
        self.subscriber_key = Some(key);
        self
    }

    /// The key that verifies publisher tokens. Without one, nobody can publish over HTTP
    /// ([`Hub::publish`] still works).
    pub fn publisher_key(mut self, key: KeyConfig) -> Self {
        self.publisher_key = Some(key);
        self
    }

    /// The key that verifies subscriber tokens. Without one, only anonymous subscribers
    /// can subscribe, and they get public updates only.
    pub fn subscriber_key(mut self, key: KeyConfig) -> Self {
        self.subscriber_key = Some(key);
        self
    }

    /// Whether subscribers without a token are accepted (public updates only). Default:
    /// yes; when not, they get 401.
    pub fn anonymous(mut self, allowed: bool) -> Self {
        self.config.anonymous = allowed;
        self
    }

    /// The interval of heartbeat comments on an idle stream; `None` sends none.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.config.heartbeat = every.filter(|d| !d.is_zero());
        self
    }

    /// Origins allowed to make cross-origin requests with credentials (CORS). `*` allows
    /// any origin, without credentials.
    pub fn cors_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Origins allowed to publish with a cookie token (protection against CSRF). A
    /// publish authenticated by the `mercureAuthorization` cookie must come from one of
    /// them (`Origin`, else `Referer`); `*` allows any.
    pub fn publish_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.publish_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// The largest publish body accepted, in bytes (larger: 413).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// The most topics accepted in one update or one subscription.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.config.max_topics = topics.max(1);
        self
    }

    /// How many updates may wait for one subscriber before it is disconnected.
    pub fn queue_capacity(mut self, updates: usize) -> Self {
        self.config.queue_capacity = updates.max(1);
        self
    }

    /// How many bytes of events may wait for one subscriber before it is disconnected
    /// (default: [`DEFAULT_QUEUE_BYTES`]); whichever of this and
    /// [`HubBuilder::queue_capacity`] is reached first.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.config.queue_bytes = bytes.max(1);
        self
    }

    /// The most subscribers (event streams) at once; one more is refused with 503
    /// (default: [`DEFAULT_MAX_SUBSCRIBERS`]).
    pub fn max_subscribers(mut self, subscribers: usize) -> Self {
        self.config.max_subscribers = subscribers.max(1);
        self
    }

    /// The most distinct URI templates the live subscribers may use at once; a
    /// subscription that would add one more is refused with 503 (templates already in use
    /// are always accepted; default: [`DEFAULT_MAX_LIVE_TEMPLATES`]).
    pub fn max_live_templates(mut self, templates: usize) -> Self {
        self.config.max_live_templates = templates;
        self
    }

    /// Whether subscription events are published and the subscriptions API is served
    /// (default: yes).
    pub fn subscriptions(mut self, enabled: bool) -> Self {
        self.config.subscriptions = enabled;
        self
    }

    /// Whether [`Hub::serve`] also serves the browser pages (the demo pages and the live
    /// console, see [`crate::web`]) at `/` (default: no; `tidings serve` turns them on).
    /// [`Hub::router`] never includes them: an app that mounts the hub adds them with
    /// [`crate::web::routes`] if it wants them.
    pub fn pages(mut self, enabled: bool) -> Self {
        self.config.pages = enabled;
        self
    }

    /// Whether [`Hub::serve`] serves `/metrics` beside the protocol (default: on). Turn
    /// it off when [`Hub::serve_ops`] serves the metrics on a private listener, so that
    /// they are not public. `/healthz` and `/readyz` stay on both.
    pub fn public_metrics(mut self, enabled: bool) -> Self {
        self.config.public_metrics = enabled;
        self
    }

    /// The limits of [`Hub::serve`]'s server loop: timeouts, connection caps, trusted
    /// proxies, the shutdown grace period (default: [`ServerLimits::default`](crate::ServerLimits)).
    pub fn server_limits(mut self, limits: crate::server::ServerLimits) -> Self {
        self.config.server = limits;
        self
    }

    /// The limits on the topic selectors of a subscription (the `topic` query
    /// parameters); a selector over them is refused with 400 (and a subscription is
    /// refused with 503 while too many others wait to compile new templates). See
    /// [`SelectorLimits`](crate::topic::SelectorLimits) for the defaults.
    pub fn selector_limits(mut self, limits: crate::topic::SelectorLimits) -> Self {
        self.config.selector_limits = limits;
        self
    }

    /// Serves [`Hub::serve`]'s connections over TLS, HTTP/2 chosen by ALPN beside
    /// HTTP/1.1 (default: cleartext, HTTP/1.1 and h2c). See [`crate::tls`].
    pub fn tls(mut self, config: crate::tls::TlsConfig) -> Self {
        self.config.tls = Some(config);
        self
    }

    /// Opens the history and starts the hub's dispatch task. Must run inside a tokio
    /// runtime.
    pub async fn build(self) -> Result<Hub, HubError> {
        let log = Arc::new(match (&self.redis, &self.history) {
            (Some((url, stream)), _) => Log::redis(url, stream, self.retention).await?,
            (None, Some(path)) => Log::open(path, self.retention).await?,
            (None, None) => Log::memory(self.retention),
        });
        let metrics = Metrics::new();
        if let Some(tls) = &self.config.tls {
            tls.count_reloads_in(&metrics);
        }
        let dispatched = log.last_position();
        let fanout = Arc::new(
            Fanout::new(self.config.queue_capacity, metrics.clone(), dispatched)
                .with_limits(self.config.max_subscribers, self.config.max_live_templates)
                .with_lag_bytes(self.config.queue_bytes),
        );
        fanout.set_last_event_id(log.last_id().await?);
        metrics.history_size.set(log.len().await? as f64);
        let dispatch = dispatch::start(Arc::clone(&log), Arc::clone(&fanout), dispatched);
        let shutdown = CancellationToken::new();
        end_streams_on(&shutdown, &fanout);
        if let Some(feed) = log.take_feed() {
            // Cluster mode: every node's updates, this one's too, in the stream's order.
            tokio::spawn(crate::cluster::feed(feed, Arc::clone(&fanout)));
        }
        let cluster = match &self.redis {
            // Without subscription events and the API there is nothing to share.
            Some((url, stream)) if self.config.subscriptions => {
                Some(crate::cluster::Cluster::start(
                    crate::log::redis::Target::new(url, stream)?,
                    Arc::clone(&fanout),
                ))
            }
            _ => None,
        };
        Ok(Hub {
            inner: Arc::new(Inner {
                log,
                fanout,
                dispatch,
                auth: Authorizer::new(self.publisher_key, self.subscriber_key),
                config: self.config,
                metrics,
                shutdown,
                closing: CancellationToken::new(),
                appends: TaskTracker::new(),
                cluster,
            }),
        })
    }
}

/// Ends every event stream through the fan-out when `shutdown` is cancelled, however it
/// is (`Hub::shutdown`, `shutdown_on`, the server loop): a stream then waits on its
/// reader alone, not on the token, whose every poll locks a mutex all streams share.
fn end_streams_on(shutdown: &CancellationToken, fanout: &Arc<Fanout>) {
    let token = shutdown.clone();
    // Weak: a hub dropped without shutting down is not kept alive by this task.
    let fanout = Arc::downgrade(fanout);
    tokio::spawn(async move {
        token.cancelled().await;
        if let Some(fanout) = fanout.upgrade() {
            fanout.shut_down();
        }
    });
}

pub(crate) struct Inner {
    pub(crate) log: Arc<Log>,
    pub(crate) fanout: Arc<Fanout>,
    pub(crate) dispatch: Dispatch,
    pub(crate) auth: Authorizer,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// Cancelled to end every event stream (shutdown, close).
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by [`Hub::close`]: publishes are refused from then on.
    closing: CancellationToken,
    /// The publishes being stored and handed to the dispatch task.
    appends: TaskTracker,
    /// Cluster mode: the subscriptions shared with the other nodes.
    pub(crate) cluster: Option<crate::cluster::ClusterHandle>,
}

/// A Mercure hub: publish to it over HTTP or from Rust, subscribe over HTTP.
///
/// Cheap to clone; clones share the same hub.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tidings_hub::{Hub, log::Update};
///
/// let hub = Hub::builder().build().await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn(hub.clone().serve(listener, std::future::pending()));
///
/// let update = Update::builder("https://example.com/books/1")
///     .data(r#"{"title":"Dune"}"#)
///     .build();
/// let id = hub.publish(update).await?;
/// assert!(id.starts_with("urn:uuid:"));
///
/// hub.shutdown();
/// server.await??;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A builder with the defaults: memory history, anonymous subscribers allowed,
    /// heartbeats every 15 s, no CORS origins, subscription events on.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            history: None,
            redis: None,
            retention: Retention::default(),
            publisher_key: None,
            subscriber_key: None,
            config: Config {
                anonymous: true,
                heartbeat: Some(DEFAULT_HEARTBEAT),
                cors_origins: Vec::new(),
                publish_origins: Vec::new(),
                max_body: DEFAULT_MAX_BODY,
                max_topics: DEFAULT_MAX_TOPICS,
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                queue_bytes: DEFAULT_QUEUE_BYTES,
                max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
                max_live_templates: DEFAULT_MAX_LIVE_TEMPLATES,
                subscriptions: true,
                pages: false,
                server: crate::server::ServerLimits::default(),
                selector_limits: crate::topic::SelectorLimits::default(),
                tls: None,
                public_metrics: true,
            },
        }
    }

    /// The hub's protocol routes, to mount in an axum app: [`HUB_PATH`](crate::HUB_PATH)
    /// (subscribe, publish) and, when [`HubBuilder::subscriptions`] is on, the
    /// subscriptions API under [`SUBSCRIPTIONS_PATH`](crate::SUBSCRIPTIONS_PATH). Nothing
    /// else, so that it merges beside an app's own routes; the health checks and metrics
    /// are in [`Hub::ops_router`], the browser pages in [`crate::web::routes`].
    ///
    /// The router may be merged at the root or nested under a prefix
    /// (`Router::nest("/events", hub.router())`): every response's
    /// `Link: <…/.well-known/mercure>; rel="mercure"` names the hub under the prefix it is
    /// mounted at.
    ///
    /// # Shutting down
    ///
    /// An event stream never ends by itself, so a server that waits for its connections
    /// to close, as axum's `with_graceful_shutdown` does, waits forever while a
    /// subscriber is connected, unless the hub ends its streams. Hand the server
    /// [`Hub::shutdown_on`] of your shutdown signal: it completes with the signal and
    /// ends every event stream at that moment, after which the connections close.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use axum::{Router, routing::get};
    /// use tidings_hub::Hub;
    ///
    /// let hub = Hub::builder().build().await?;
    /// let app = Router::new()
    ///     .route("/healthz", get(|| async { "the app's own check" }))
    ///     .nest("/events", hub.router());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let (stop, ctrl_c) = tokio::sync::oneshot::channel::<()>();
    /// # let ctrl_c = async { ctrl_c.await.ok(); };
    /// # stop.send(()).unwrap();
    /// // In a real program: `hub.shutdown_on(tokio::signal::ctrl_c())`.
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(hub.shutdown_on(ctrl_c))
    ///     .await?;
    /// // Then store what is being published and release the history.
    /// hub.close().await;
    /// # Ok(()) }
    /// ```
    pub fn router(&self) -> Router {
        crate::http::router(self.clone())
    }

    /// The hub's operations routes, for load balancers, orchestrators and monitoring:
    /// `/healthz` (liveness: 503 once the hub is shutting down or its dispatch task has
    /// failed), `/readyz` (readiness: 503 while the history cannot write) and `/metrics`
    /// (Prometheus text). Apart from [`Hub::router`] so that an app with checks of its
    /// own can leave them out, mount them elsewhere (`nest("/hub", hub.ops_router())`),
    /// or serve them on another listener. [`Hub::serve`] serves both.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = tidings_hub::Hub::builder().build().await?;
    /// let app: axum::Router = axum::Router::new()
    ///     .merge(hub.router())
    ///     .nest("/internal", hub.ops_router());
    /// # drop(app); Ok(()) }
    /// ```
    pub fn ops_router(&self) -> Router {
        crate::http::ops_router(self.clone())
    }

    /// A future for a server's graceful shutdown (axum's `with_graceful_shutdown`) that
    /// completes when `signal` does (its output is ignored) or when the hub is shut
    /// down, and then ends every event stream, as [`Hub::shutdown`] does: without it a
    /// server waits for open streams forever. See [`Hub::router`].
    pub fn shutdown_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let token = self.inner.shutdown.clone();
        async move {
            tokio::select! {
                _ = signal => {}
                () = token.cancelled() => {}
            }
            token.cancel();
        }
    }

    /// Publishes an update from Rust: validated like an HTTP publish (without
    /// authorization), stored, then sent to subscribers. An empty id gets a
    /// `urn:uuid:` one. Returns the id once the update is durable.
    pub async fn publish(&self, update: Update) -> Result<String, PublishError> {
        let update = self.validate(update)?;
        Ok(self.append(update).await?.update.id.clone())
    }

    /// Sends an update to the live subscribers it concerns without storing it: nothing
    /// is written to history, a subscriber that is away never gets it, and its event
    /// carries no `id` (so a client's last event ID keeps naming a stored update).
    /// Validated like [`Hub::publish`]. For notifications that are worthless later, such
    /// as the demo's pings or presence.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tidings_hub::{Hub, log::Update};
    ///
    /// let hub = Hub::builder().build().await?;
    /// hub.publish_live(Update::builder("/presence").data(r#"{"online":3}"#).build())?;
    /// # Ok(()) }
    /// ```
    pub fn publish_live(&self, update: Update) -> Result<(), PublishError> {
        let update = self.validate(update)?;
        if self.inner.closing.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        self.inner.fanout.notify(&update);
        Ok(())
    }

    /// Serves the hub on `listener` (HTTP/1.1 and h2c; with [`HubBuilder::tls`], HTTPS
    /// with HTTP/2 by ALPN beside HTTP/1.1) until `shutdown` completes or
    /// [`Hub::shutdown`] is called, under the hub's [`ServerLimits`](crate::ServerLimits):
    /// [`Hub::router`], [`Hub::ops_router`] and, when [`HubBuilder::pages`] is on, the
    /// browser pages.
    /// Then it stops accepting, closes every event stream, gives the connections the
    /// grace period to finish, drops those left and returns: within the grace period,
    /// however the peers behave.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        crate::server::serve(self, listener, shutdown).await
    }

    /// Serves [`Hub::ops_router`] (`/healthz`, `/readyz`, `/metrics`) on `listener`, a
    /// private address for the machines that watch the hub, under the same
    /// [`ServerLimits`](crate::ServerLimits) as [`Hub::serve`] and without the request
    /// log; stops like it (at `shutdown`, or when the hub shuts down).
    pub async fn serve_ops<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let router = crate::http::ops_router(self.clone());
        crate::server::serve_router(self, router, listener, shutdown, false).await
    }

    /// Ends every event stream and stops [`Hub::serve`].
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Stops the hub for good: ends every event stream and stops [`Hub::serve`] (as
    /// [`Hub::shutdown`] does), refuses new publishes, waits until every publish already
    /// accepted is stored and handed to its subscribers, then closes the history (a
    /// file log is then released once the last clone of the hub is dropped, and opens
    /// at once next time).
    ///
    /// Idempotent; call it after [`Hub::serve`] has returned, before the process exits.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.closing.cancel();
        self.inner.appends.close();
        self.inner.appends.wait().await;
        self.inner.dispatch.close().await;
        if let Some(cluster) = &self.inner.cluster {
            cluster.close().await;
        }
        Log::clone(&self.inner.log).close().await;
    }

    /// Why the hub cannot work, if it cannot: its dispatch task failed (live updates
    /// have stopped), for the liveness check.
    pub(crate) fn failure(&self) -> Option<String> {
        self.inner
            .dispatch
            .failure()
            .map(|cause| format!("dispatch task failed: {cause}"))
    }

    /// How many subscriber connections are live.
    pub fn connections(&self) -> usize {
        self.inner.fanout.len()
    }

    /// The Prometheus text exposition of the hub's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> String {
        self.inner.metrics.render()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Checks an update and gives it an id if it has none.
    pub(crate) fn validate(&self, mut update: Update) -> Result<Update, PublishError> {
        if update.topics.is_empty() {
            return Err(PublishError::NoTopic);
        }
        if update.topics.len() > self.inner.config.max_topics {
            return Err(PublishError::TooManyTopics {
                limit: self.inner.config.max_topics,
            });
        }
        if update.topics.iter().any(String::is_empty) {
            return Err(PublishError::EmptyTopic);
        }
        if update.id.is_empty() {
            update.id = Update::generate_id();
        } else if update.id.starts_with('#') {
            return Err(PublishError::IdStartsWithHash);
        } else {
            tidings_wire::validate_id(&update.id).map_err(PublishError::InvalidId)?;
        }
        if let Some(event_type) = &update.event_type {
            tidings_wire::validate_event_type(event_type).map_err(PublishError::InvalidType)?;
        }
        Ok(update)
    }

    /// Stores a valid update and hands it to the fan-out.
    ///
    /// Runs in a task of its own: once the log has the update it stores it even if the
    /// caller goes away (a publisher that disconnects), and then it must be sent too.
    pub(crate) async fn append(&self, update: Update) -> Result<Stored, PublishError> {
        let inner = Arc::clone(&self.inner);
        // The update's acceptance, for the delivery lag (`tidings_delivery_lag_seconds`).
        let accepted = std::time::Instant::now();
        let task = self.inner.appends.spawn(async move {
            // Checked inside the tracked task: `close` cancels before it waits for the
            // tracker, so a task that passes this check is one `close` waits for.
            if inner.closing.is_cancelled() {
                return Err(PublishError::ShuttingDown);
            }
            let stored = inner.log.append(update).await.map_err(|err| match err {
                LogError::Closed => PublishError::ShuttingDown,
                other => PublishError::Log(other),
            })?;
            let observed = &inner.metrics.observed;
            observed.log_commit_duration.record_since(accepted);
            observed.accepts.accepted(stored.position, accepted);
            inner.metrics.publishes.increment(1);
            // Waits while the dispatch task is behind: publishers slow down rather than
            // the queue growing. It stops only by failing (logged, and reported by the
            // health check) or at close, after every append was handed over.
            if !inner.log.is_shared() {
                // A shared log's updates reach the fan-out from its reader, in the
                // stream's order (see `cluster::feed`).
                let _ = inner.dispatch.send(stored.clone()).await;
            }
            Ok(stored)
        });
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(PublishError::ShuttingDown),
        }
    }
}
