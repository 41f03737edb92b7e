//! The hub over HTTP: the axum router, CORS, the `Link` header, health and metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Claims, TokenSource};
use crate::hub::Hub;
use crate::log::{LogError, LogHealth};

pub(crate) mod publish;
mod subscribe;
mod subscriptions;

/// The hub's URL path, fixed by the Mercure protocol.
pub const HUB_PATH: &str = "/.well-known/mercure";
/// The path of the subscriptions API and of subscription topics.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

pub(crate) fn router(hub: Hub) -> Router {
    let cors = cors_layer(&hub.config().cors_origins);
    let mut router = Router::new()
        .route(HUB_PATH, get(subscribe::subscribe).post(publish::publish))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics));
    if hub.config().subscriptions {
        router = router
            .route(SUBSCRIPTIONS_PATH, get(subscriptions::all))
            .route(
                "/.well-known/mercure/subscriptions/{topic}",
                get(subscriptions::by_topic),
            )
            .route(
                "/.well-known/mercure/subscriptions/{topic}/{subscriber}",
                get(subscriptions::one),
            );
    }
    let pages = hub.config().pages;
    let mut router = router
        .layer(axum::middleware::map_response(advertise_hub))
        .with_state(hub);
    if pages {
        // Merged after the `Link` layer: the pages set their own.
        router = router.merge(crate::web::routes());
    }
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Every response says where the hub is, so that a page served next to it can be
/// discovered like any Mercure publisher's.
async fn advertise_hub(mut response: Response) -> Response {
    response.headers_mut().append(
        header::LINK,
        HeaderValue::from_static("</.well-known/mercure>; rel=\"mercure\""),
    );
    response
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([HeaderName::from_static("last-event-id"), header::LINK]);
    if origins.iter().any(|o| o == "*") {
        // A wildcard with credentials is refused by browsers and would hand every site
        // the user's cookie-authenticated streams: `*` means any origin, no credentials.
        return Some(base.allow_origin(AllowOrigin::any()));
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o.trim_end_matches('/')) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin = %o, "CORS origin is not a valid header value; ignored");
                None
            }
        })
        .collect();
    Some(
        base.allow_origin(AllowOrigin::list(allowed))
            .allow_credentials(true),
    )
}

async fn health(State(hub): State<Hub>) -> Response {
    if hub.inner.shutdown.is_cancelled() {
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if let Some(failure) = hub.failure() {
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, failure).into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

/// Readiness, where `/healthz` is liveness: whether the hub can take publishes now. A
/// history that cannot write (a full disk) makes the hub unready until the log has
/// recovered by itself, without making it dead.
async fn ready(State(hub): State<Hub>) -> Response {
    if hub.inner.shutdown.is_cancelled() {
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match hub.inner.log.health() {
        LogHealth::Writable => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ready\n",
        )
            .into_response(),
        LogHealth::Failing { error, .. } => {
            // The storage's own words, without the log's "history storage failed" prefix.
            let cause = match &error {
                LogError::Storage(storage) => storage.to_string(),
                other => other.to_string(),
            };
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storage cannot write: {cause}"),
            )
            .into_response()
        }
        _ => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage cannot write: the history log is closed",
        )
        .into_response(),
    }
}

async fn metrics(State(hub): State<Hub>) -> Response {
    // Retention trims history in the background: count it when asked rather than
    // tracking every append and expiry.
    match hub.inner.log.len().await {
        Ok(len) => hub.inner.metrics.history_size.set(len as f64),
        Err(err) => tracing::warn!(cause = %err, "cannot count history for /metrics"),
    }
    let stats = hub.inner.log.stats();
    let metrics = &hub.inner.metrics;
    metrics.log_appends.absolute(stats.appended);
    metrics.log_commits.absolute(stats.commits);
    metrics
        .template_cache_bytes
        .set(crate::topic::template_cache_bytes() as f64);
    metrics.history_bytes.set(hub.inner.log.bytes() as f64);
    let ready = hub.inner.log.health().is_writable();
    metrics.storage_ready.set(if ready { 1.0 } else { 0.0 });
    metrics.log_write_errors.absolute(stats.write_errors);
    metrics
        .history_corrupt_records
        .absolute(stats.corrupt_records);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics(),
    )
        .into_response()
}

/// A refused request: a status and one line that says why.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        let reason: String = reason.into();
        // One line, whatever the cause's text: a multi-line body is hard to read in logs.
        let reason = reason.replace(['\r', '\n'], " ");
        Self { status, reason }
    }
    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
    pub(crate) fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason)
    }
    pub(crate) fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mercure\""),
            );
        }
        response
    }
}

/// The query string's pairs, in order (a name may repeat: `topic`).
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    match query {
        None | Some("") => Ok(Vec::new()),
        Some(query) => serde_urlencoded::from_str(query)
            .map_err(|err| Refusal::bad_request(format!("malformed query string: {err}"))),
    }
}

/// The verified claims of a subscriber's token and where it came from; `None` for an
/// anonymous subscriber.
pub(crate) fn subscriber_claims(
    hub: &Hub,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<(Claims, TokenSource)>, Refusal> {
    hub.inner
        .auth
        .authenticate(crate::auth::Role::Subscriber, headers, query)
        .map_err(|err| Refusal::unauthorized(err.to_string()))
}
