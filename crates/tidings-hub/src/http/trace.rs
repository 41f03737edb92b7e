//! The request log: one line per request, through tower-http's [`TraceLayer`] with our
//! own span and response callbacks.
//!
//! Each request runs in a `request` span that names its method, its path and query
//! with credentials redacted, its HTTP version and the client address (the proxy-aware
//! [`ClientAddr`]); the line is written when the response head is ready: `response` with
//! the status, the duration and the body's size, or `refused` with the status and the
//! one-line reason the client gets in the body (counted in `tidings_refusals_total`). An
//! event stream's line comes at its head (status 200, the time it took to open); the
//! subscription's own close line ([`crate::stream`]) says how long it lasted and what it
//! sent. Successful requests to the operations routes (health checks, scrapes) are
//! logged at DEBUG, so that probes do not fill the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, Uri, header};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;

use crate::metrics::Observed;
use crate::server::ClientAddr;

/// What replaces a credential in a logged path.
pub(crate) const REDACTED: &str = "REDACTED";

/// The longest path and query logged; the rest is cut (a request head may be 64 KiB).
const MAX_LOGGED_TARGET: usize = 1024;

/// Parts of a query parameter's name that make its value a credential: Mercure's
/// `authorization`, `access_token`, `api_key`, `jwt`, `X-Amz-Signature`...
const CREDENTIAL_WORDS: [&str; 11] = [
    "auth",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "sig",
    "session",
    "credential",
    "cookie",
    "jwt",
];

/// What a refused response carries for the request log: set by
/// [`Refusal`](super::Refusal), read by [`LogResponse`].
#[derive(Debug, Clone)]
pub(crate) struct RefusalNote {
    /// The short, fixed name of the reason: the `reason` label of the metric.
    pub(crate) code: &'static str,
    /// The line the client gets in the body.
    pub(crate) reason: String,
}

/// The layer [`super::app`] puts around everything [`Hub::serve`](crate::Hub::serve)
/// serves.
pub(crate) type Layer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    MakeRequestSpan,
    (),
    LogResponse,
    (),
    (),
    (),
>;

/// The request log's layer; the 4xx and 5xx that are not the hub's refusals (axum's
/// 404, 405) are counted in `metrics` (one `Arc`, cloned per request by the layer).
pub(crate) fn layer(metrics: Arc<Observed>) -> Layer {
    TraceLayer::new_for_http()
        .make_span_with(MakeRequestSpan)
        .on_request(())
        .on_response(LogResponse { metrics })
        .on_body_chunk(())
        .on_eos(())
        // A 5xx is logged by `LogResponse` with its reason; no second line.
        .on_failure(())
}

/// Makes the `request` span of each request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MakeRequestSpan;

impl<B> MakeSpan<B> for MakeRequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let client = request
            .extensions()
            .get::<ClientAddr>()
            .map(ClientAddr::ip)
            .or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            });
        request_span(request, client)
    }
}

/// The `request` span of a request from `client`.
pub(crate) fn request_span<B>(request: &Request<B>, client: Option<IpAddr>) -> Span {
    let client = client.map_or_else(String::new, |ip| ip.to_string());
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %redacted_target(request.uri()),
        version = ?request.version(),
        client = %client,
    )
}

/// Writes each request's line when its response head is ready.
#[derive(Clone)]
pub(crate) struct LogResponse {
    metrics: Arc<Observed>,
}

impl<B: http_body::Body> OnResponse<B> for LogResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        let status = response.status();
        let bytes = response.body().size_hint().exact();
        if let Some(note) = response.extensions().get::<RefusalNote>() {
            // Counted by the routes that refused (`count_refusal`).
            refused(status, note.code, &note.reason, latency, bytes);
            return;
        }
        if status.is_client_error() || status.is_server_error() {
            // Not one of ours (axum's 404 or 405): its reason is the status's.
            let reason = status.canonical_reason().unwrap_or("refused");
            self.metrics.refused(status.as_u16(), "other");
            refused(status, "other", reason, latency, bytes);
            return;
        }
        let stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(tidings_wire::MIME_TYPE.as_bytes()));
        let duration_ms = millis(latency);
        let status = status.as_u16();
        if stream {
            tracing::info!(status, duration_ms, stream = true, "response");
        } else if response.extensions().get::<OpsRoute>().is_some() {
            tracing::debug!(status, duration_ms, bytes, "response");
        } else {
            tracing::info!(status, duration_ms, bytes, "response");
        }
    }
}

/// Marks the responses of the operations routes, logged at DEBUG when they succeed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpsRoute;

/// Logs a refused request, in the current (`request`) span: a 5xx other than 503 (a
/// cap, shutting down) at WARN, the rest at INFO.
pub(crate) fn refused(
    status: StatusCode,
    code: &'static str,
    reason: &str,
    latency: Duration,
    bytes: Option<u64>,
) {
    let duration_ms = millis(latency);
    let status_code = status.as_u16();
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(
            status = status_code,
            duration_ms,
            bytes,
            code,
            reason,
            "refused"
        );
    } else {
        tracing::info!(
            status = status_code,
            duration_ms,
            bytes,
            code,
            reason,
            "refused"
        );
    }
}

/// A duration in milliseconds, to the microsecond: a number, for log shippers.
pub(crate) fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// Whether a query parameter, form field or header named `name` holds a credential (a part
/// of its name, in any case, is one of [`CREDENTIAL_WORDS`]).
#[doc(hidden)]
pub fn is_credential_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    CREDENTIAL_WORDS.iter().any(|word| lower.contains(word))
}

/// Whether a value looks like a JWT (`header.payload.signature`, base64url) or a long
/// opaque secret, wherever it is: redacted whatever its parameter's name.
fn looks_like_token(value: &str) -> bool {
    let value = value.trim();
    if value.starts_with("eyJ") && value.len() >= 16 {
        return true;
    }
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && value.len() >= 32
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Percent-decodes a query component (`+` is a space) for the checks, lossily.
fn decoded(component: &str) -> String {
    let spaced = component.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The request's path and query as logged: the value of every query parameter named
/// like a credential (its name read percent-decoded, as the hub reads it) and every path
/// segment or value that looks like a token shown as [`REDACTED`]; at most
/// [`MAX_LOGGED_TARGET`] bytes.
pub(crate) fn redacted_target(uri: &Uri) -> String {
    let mut out = String::new();
    for (i, segment) in uri.path().split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if looks_like_token(&decoded(segment)) {
            out.push_str(REDACTED);
        } else {
            out.push_str(segment);
        }
    }
    if let Some(query) = uri.query() {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value))
                    if is_credential_name(&decoded(name)) || looks_like_token(&decoded(value)) =>
                {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if out.len() > MAX_LOGGED_TARGET {
        let mut cut = MAX_LOGGED_TARGET;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> String {
        redacted_target(&text.parse().unwrap())
    }

    #[test]
    fn credentials_in_the_query_are_redacted() {
        assert_eq!(
            target("/.well-known/mercure?topic=/a&authorization=abc.def&b=1"),
            "/.well-known/mercure?topic=/a&authorization=REDACTED&b=1"
        );
        // The name as the hub reads it: percent-decoded, any case.
        assert_eq!(
            target("/.well-known/mercure?%61uthorization=x&AUTHORIZATION=y&access_token=z"),
            "/.well-known/mercure?%61uthorization=REDACTED&AUTHORIZATION=REDACTED&access_token=REDACTED"
        );
        // A JWT is redacted under any name, and in the path.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7fX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        assert_eq!(
            target(&format!("/x/{jwt}/y?topic={jwt}&other=plain")),
            "/x/REDACTED/y?topic=REDACTED&other=plain"
        );
        // Nothing else changes.
        for text in [
            "/",
            "/healthz",
            "/.well-known/mercure?topic=%2Fbooks%2F1&lastEventID=urn:uuid:1",
        ] {
            assert_eq!(target(text), text);
        }
    }

    #[test]
    fn a_long_target_is_cut() {
        let long = format!("/?topic={}", "a".repeat(5000));
        let logged = target(&long);
        assert_eq!(logged.len(), MAX_LOGGED_TARGET + 3);
        assert!(logged.ends_with("..."));
    }
}
