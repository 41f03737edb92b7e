//! The hub over HTTP: the protocol's router (CORS, the `Link` header), the operations
//! router (health, readiness, metrics), and what [`Hub::serve`] serves.

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Claims, TokenSource};
use crate::hub::Hub;
use crate::log::{LogError, LogHealth};

pub(crate) mod publish;
mod subscribe;
mod subscriptions;
pub(crate) mod trace;

/// The hub's URL path, fixed by the Mercure protocol.
pub const HUB_PATH: &str = "/.well-known/mercure";
/// The path of the subscriptions API and of subscription topics.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";
/// The path of the liveness check in [`Hub::ops_router`].
pub const HEALTH_PATH: &str = "/healthz";
/// The path of the readiness check in [`Hub::ops_router`].
pub const READY_PATH: &str = "/readyz";
/// The path of the Prometheus metrics in [`Hub::ops_router`].
pub const METRICS_PATH: &str = "/metrics";

/// The protocol routes: subscribe and publish, the subscriptions API, with CORS and the
/// `Link` header.
pub(crate) fn router(hub: Hub) -> Router {
    let cors = cors_layer(&hub.config().cors_origins);
    let mut router =
        Router::new().route(HUB_PATH, get(subscribe::subscribe).post(publish::publish));
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
    let observed = std::sync::Arc::clone(&hub.inner.metrics.observed);
    let router = router
        .layer(axum::middleware::from_fn(advertise_hub))
        .layer(axum::middleware::map_response_with_state(
            observed,
            count_refusal,
        ))
        .with_state(hub);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The operations routes: liveness, readiness and metrics, for the machines that watch
/// the hub rather than for its clients (no CORS, no `Link`).
pub(crate) fn ops_router(hub: Hub) -> Router {
    ops_routes(hub, true)
}

/// The operations routes, `/metrics` only when `with_metrics`; their responses are
/// marked for the request log ([`trace::OpsRoute`]).
fn ops_routes(hub: Hub, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .route(HEALTH_PATH, get(health))
        .route(READY_PATH, get(ready));
    if with_metrics {
        router = router.route(METRICS_PATH, get(metrics));
    }
    let observed = std::sync::Arc::clone(&hub.inner.metrics.observed);
    router
        .layer(axum::middleware::map_response_with_state(
            observed,
            count_refusal,
        ))
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                response.extensions_mut().insert(trace::OpsRoute);
                response
            },
        ))
        .with_state(hub)
}

/// Everything [`Hub::serve`] serves: the protocol, the operations routes and, when they
/// are on, the browser pages.
pub(crate) fn app(hub: Hub) -> Router {
    let pages = hub.config().pages;
    let with_metrics = hub.config().public_metrics;
    let metrics = std::sync::Arc::clone(&hub.inner.metrics.observed);
    let mut app = router(hub.clone()).merge(ops_routes(hub, with_metrics));
    if pages {
        app = app.merge(crate::web::routes());
    }
    // The request log, around everything (the 404s of unknown paths too).
    app.layer(trace::layer(metrics))
}

/// Counts the refusals of the hub's routes in `tidings_refusals_total`, wherever the
/// routes are mounted (the request log of [`app`] only writes them).
async fn count_refusal(
    State(observed): State<std::sync::Arc<crate::metrics::Observed>>,
    response: Response,
) -> Response {
    if let Some(note) = response.extensions().get::<trace::RefusalNote>() {
        observed.refused(response.status().as_u16(), note.code);
    }
    response
}

/// Every response says where the hub is, so that a page served next to it can be
/// discovered like any Mercure publisher's: under the prefix the router is mounted at.
async fn advertise_hub(request: Request, next: Next) -> Response {
    let link = hub_link(&request);
    let mut response = next.run(request).await;
    response.headers_mut().append(header::LINK, link);
    response
}

/// The `Link` header that advertises the hub to a request the hub's routes (or the
/// pages) got: `<{prefix}/.well-known/mercure>; rel="mercure"`, where the prefix is what
/// an enclosing router (axum's `nest`) took off the path before handing it on, as the
/// difference between the request's [`OriginalUri`] and its path.
pub(crate) fn hub_link<B>(request: &axum::http::Request<B>) -> HeaderValue {
    let path = request.uri().path();
    let original = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(path, |original| original.path());
    let prefix = mount_prefix(original, path);
    link_for(prefix)
}

/// The part of `original` before `path`, without a trailing `/`: `""` when the routes
/// are not nested (or when the two do not line up, which no router does).
fn mount_prefix<'a>(original: &'a str, path: &str) -> &'a str {
    // Nested at `/events`, `/events` reaches the inner router as `/`.
    original
        .trim_end_matches('/')
        .strip_suffix(path.trim_end_matches('/'))
        .map_or("", |prefix| prefix.trim_end_matches('/'))
}

/// `<{prefix}/.well-known/mercure>; rel="mercure"`, the prefix escaped so that it can
/// end neither the URI reference nor the header.
fn link_for(prefix: &str) -> HeaderValue {
    if prefix.is_empty() {
        return HeaderValue::from_static(ROOT_LINK);
    }
    // A path from a parsed URI holds only visible ASCII; `<`, `>`, `"` and the like are
    // escaped anyway, as a prefix with path parameters comes from the client.
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'<')
        .add(b'>')
        .add(b'\\')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}')
        .add(b',')
        .add(b';');
    let prefix = percent_encoding::utf8_percent_encode(prefix, UNSAFE);
    HeaderValue::try_from(format!("<{prefix}{HUB_PATH}>; rel=\"mercure\""))
        .unwrap_or_else(|_| HeaderValue::from_static(ROOT_LINK))
}

/// The `Link` of a hub at the root.
const ROOT_LINK: &str = "</.well-known/mercure>; rel=\"mercure\"";

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
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            .code("shutting_down")
            .into_response();
    }
    if let Some(failure) = hub.failure() {
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, failure)
            .code("dispatch_failed")
            .into_response();
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
        return Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            .code("shutting_down")
            .into_response();
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
            .code("storage")
            .into_response()
        }
        _ => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage cannot write: the history log is closed",
        )
        .code("storage")
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
    if let Some(cluster) = hub.inner.log.cluster_stats() {
        metrics.cluster_errors.absolute(cluster.errors);
        metrics.cluster_regressions.absolute(cluster.regressions);
        metrics.cluster_reconnects.absolute(cluster.reconnects);
        metrics
            .cluster_reader_lag
            .set(cluster.reader_lag_ms as f64 / 1000.0);
    }
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
    /// The reason's short fixed name, for the metrics (`tidings_refusals_total`).
    code: &'static str,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        let reason: String = reason.into();
        // One line, whatever the cause's text: a multi-line body is hard to read in logs.
        let reason = reason.replace(['\r', '\n'], " ");
        let code = default_code(status);
        Self {
            status,
            reason,
            code,
        }
    }
    /// Names the reason for the metrics (a short, fixed name: never client text).
    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
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

/// The reason's name of a refusal that did not name it: its status's.
fn default_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "content_type",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        _ => "other",
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
        // For the request log and the metrics (`trace::LogResponse`).
        response.extensions_mut().insert(trace::RefusalNote {
            code: self.code,
            reason: self.reason.clone(),
        });
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
        Some(query) => serde_urlencoded::from_str(query).map_err(|err| {
            Refusal::bad_request(format!("malformed query string: {err}")).code("malformed_query")
        }),
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
        .map_err(|err| Refusal::unauthorized(err.to_string()).code("invalid_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_of(original: &str, path: &str) -> String {
        let mut request = axum::http::Request::get(path).body(()).unwrap();
        request
            .extensions_mut()
            .insert(OriginalUri(original.parse().unwrap()));
        hub_link(&request).to_str().unwrap().to_owned()
    }

    #[test]
    fn the_link_follows_the_prefix_the_routes_are_nested_under() {
        for (original, path, expected) in [
            (HUB_PATH, HUB_PATH, ""),
            ("/events/.well-known/mercure", HUB_PATH, "/events"),
            (
                "/a/b/.well-known/mercure?topic=x",
                "/.well-known/mercure?topic=x",
                "/a/b",
            ),
            ("/live", "/", "/live"),
            ("/live/", "/", "/live"),
            ("/live/console", "/console", "/live"),
            ("/", "/", ""),
            // Paths that do not line up (no router does that): the root.
            ("/other", "/console", ""),
        ] {
            assert_eq!(
                link_of(original, path),
                format!("<{expected}/.well-known/mercure>; rel=\"mercure\""),
                "{original} seen as {path}"
            );
        }
    }

    #[test]
    fn without_an_original_uri_the_hub_is_at_the_root() {
        let request = axum::http::Request::get(HUB_PATH).body(()).unwrap();
        assert_eq!(hub_link(&request), ROOT_LINK);
    }

    #[test]
    fn a_prefix_cannot_break_out_of_the_link() {
        // A prefix with path parameters comes from the client; the URI parser lets these
        // through.
        let link = link_of("/t/a\"b{c}|d/.well-known/mercure", HUB_PATH);
        assert_eq!(
            link,
            "</t/a%22b%7Bc%7D%7Cd/.well-known/mercure>; rel=\"mercure\""
        );
        assert_eq!(
            link_for("/x>; rel=\"evil\", <y"),
            "</x%3E%3B%20rel=%22evil%22%2C%20%3Cy/.well-known/mercure>; rel=\"mercure\""
        );
    }
}
