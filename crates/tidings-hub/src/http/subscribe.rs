//! `GET /.well-known/mercure`: an event stream of the updates on the requested topics.
//!
//! This handler parses and authorises the request; the stream itself (registration,
//! replay, live updates, heartbeats, expiry) is [`crate::stream`]'s.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{Refusal, query_pairs, subscriber_claims};
use crate::auth::TokenSource;
use crate::fanout::SubscriberInfo;
use crate::hub::Hub;
use crate::log::Update;
use crate::stream;
use crate::topic::SelectorError;

pub(crate) async fn subscribe(State(hub): State<Hub>, headers: HeaderMap, uri: Uri) -> Response {
    match open(hub, &headers, &uri).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn open(hub: Hub, headers: &HeaderMap, uri: &Uri) -> Result<Response, Refusal> {
    let pairs = query_pairs(uri.query())?;
    let topics: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == "topic")
        .map(|(_, value)| value.clone())
        .collect();
    if topics.is_empty() {
        return Err(Refusal::bad_request(
            "missing topic: subscribe with at least one `topic` query parameter",
        )
        .code("missing_topic"));
    }
    let limit = hub.config().max_topics;
    if topics.len() > limit {
        return Err(Refusal::bad_request(format!(
            "too many topics: at most {limit} per subscription"
        ))
        .code("too_many_topics"));
    }
    let auth = subscriber_claims(&hub, headers, uri.query())?;
    if auth.is_none() && !hub.config().anonymous {
        return Err(Refusal::unauthorized(
            "missing token: this hub does not accept anonymous subscribers",
        )
        .code("missing_token"));
    }
    let requested_last_id = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            pairs
                .iter()
                .find(|(name, value)| name == "lastEventID" && !value.is_empty())
                .map(|(_, value)| value.clone())
        });

    let (claims, source) = match auth {
        Some((claims, source)) => (Some(claims), Some(source)),
        None => (None, None),
    };
    let selectors = crate::topic::compile_subscription(&topics, &hub.config().selector_limits)
        .await
        .map_err(|err| {
            hub.inner.metrics.selector_refusals.increment(1);
            let (status, code) = match err {
                SelectorError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "compile_busy"),
                _ => (StatusCode::BAD_REQUEST, "selector"),
            };
            Refusal::new(status, err.to_string()).code(code)
        })?;
    let request = stream::Request {
        info: SubscriberInfo {
            id: Update::generate_id(),
            topics: topics.clone(),
            payload: claims.as_ref().and_then(|c| c.payload.clone()),
        },
        selectors,
        expires_at: claims.as_ref().and_then(|c| c.expires_at),
        // A token without `mercure.subscribe` gets public updates only, like no token.
        private: claims.and_then(|c| c.subscribe),
        last_event_id: requested_last_id,
    };
    let opened = stream::open(&hub, request).await.map_err(|err| {
        let (status, code) = match err {
            stream::OpenError::Refused(crate::fanout::Refused::Subscribers(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "max_subscribers")
            }
            stream::OpenError::Refused(_) => (StatusCode::SERVICE_UNAVAILABLE, "max_templates"),
            stream::OpenError::History(_) => (StatusCode::INTERNAL_SERVER_ERROR, "history"),
        };
        Refusal::new(status, err.to_string()).code(code)
    })?;
    // A comment first: a proxy that holds a response head until body bytes come (nginx
    // does over HTTP/2 with TLS) passes it on at once, so the client knows it is
    // subscribed before the first update or heartbeat.
    let opening = futures_util::stream::once(async { crate::event::HEARTBEAT });
    let body = Body::from_stream(opening.chain(opened.body).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(tidings_wire::MIME_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if source == Some(TokenSource::Query) {
            // The token is in the URL: no shared cache may keep this response.
            "private, no-cache"
        } else {
            "no-cache"
        }),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(id) = opened.last_event_id {
        // Ids are UTF-8 and a header carries them as bytes (what browsers send back);
        // only an id with control characters, which publishing refuses, cannot be one.
        if let Ok(value) = HeaderValue::from_bytes(id.as_bytes()) {
            headers.insert("last-event-id", value);
        }
    }
    Ok(response)
}
