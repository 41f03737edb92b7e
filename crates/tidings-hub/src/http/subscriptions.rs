//! The subscriptions API: `/.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`.
//!
//! Reading it needs a subscriber token whose `mercure.subscribe` covers the requested
//! URL, and shows only the subscriptions whose IRIs it covers, as Mercure does.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Refusal, SUBSCRIPTIONS_PATH, subscriber_claims};
use std::sync::Arc;

use crate::auth::Claims;
use crate::fanout::SubscriberInfo;
use crate::hub::Hub;
use crate::subscription::{self, CONTEXT};

pub(crate) async fn all(State(hub): State<Hub>, headers: HeaderMap, uri: Uri) -> Response {
    // Checked before Redis is asked anything: a caller without a token costs no query.
    if let Err(refusal) = authorize(&hub, &headers, &uri) {
        return refusal.into_response();
    }
    let subscribers = match subscribers(&hub).await {
        Ok(subscribers) => subscribers,
        Err(refusal) => return refusal.into_response(),
    };
    respond(list(&hub, &headers, &uri, None, subscribers))
}

/// The subscribers to show: this hub's, and in cluster mode every other live node's.
async fn subscribers(hub: &Hub) -> Result<Vec<Arc<SubscriberInfo>>, Refusal> {
    let local = hub.inner.fanout.subscribers();
    let Some(cluster) = &hub.inner.cluster else {
        return Ok(local);
    };
    match cluster.remote_subscribers().await {
        Ok(remote) => Ok(crate::cluster::merge(local, remote)),
        Err(err) => {
            tracing::warn!(cause = %err, "cannot list the other nodes' subscribers");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot list the subscribers of the other nodes: {err}"),
            ))
        }
    }
}

pub(crate) async fn by_topic(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    // Checked before Redis is asked anything: a caller without a token costs no query.
    if let Err(refusal) = authorize(&hub, &headers, &uri) {
        return refusal.into_response();
    }
    let subscribers = match subscribers(&hub).await {
        Ok(subscribers) => subscribers,
        Err(refusal) => return refusal.into_response(),
    };
    respond(list(&hub, &headers, &uri, Some(&topic), subscribers))
}

pub(crate) async fn one(
    State(hub): State<Hub>,
    Path((topic, subscriber)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    // Checked before Redis is asked anything: a caller without a token costs no query.
    if let Err(refusal) = authorize(&hub, &headers, &uri) {
        return refusal.into_response();
    }
    let subscribers = match subscribers(&hub).await {
        Ok(subscribers) => subscribers,
        Err(refusal) => return refusal.into_response(),
    };
    respond(single(
        &hub,
        &headers,
        &uri,
        &topic,
        &subscriber,
        subscribers,
    ))
}

fn respond(result: Result<Value, Refusal>) -> Response {
    match result {
        // Every document depends on the caller's token, whether it came in a header, the
        // query or a cookie: no shared cache may keep it.
        Ok(doc) => (
            [
                (header::CONTENT_TYPE, "application/ld+json"),
                (header::CACHE_CONTROL, "private, no-cache"),
            ],
            Json(doc),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn authorize(hub: &Hub, headers: &HeaderMap, uri: &Uri) -> Result<Claims, Refusal> {
    let Some((claims, _)) = subscriber_claims(hub, headers, uri.query())? else {
        return Err(Refusal::unauthorized(
            "missing token: the subscriptions API needs a subscriber JWT",
        )
        .code("missing_token"));
    };
    if !claims.can_subscribe_any([uri.path()]) {
        return Err(Refusal::forbidden(format!(
            "not allowed: the token's mercure.subscribe does not cover {}",
            uri.path()
        ))
        .code("not_allowed"));
    }
    Ok(claims)
}

fn last_event_id(hub: &Hub) -> String {
    hub.inner
        .fanout
        .last_event_id()
        .unwrap_or_else(|| "earliest".to_owned())
}

fn list(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &Uri,
    topic: Option<&str>,
    subscribers: Vec<Arc<SubscriberInfo>>,
) -> Result<Value, Refusal> {
    let claims = authorize(hub, headers, uri)?;
    let mut subscriptions = Vec::new();
    for info in subscribers {
        for t in &info.topics {
            if topic.is_some_and(|wanted| wanted != t) {
                continue;
            }
            let doc = subscription::document(&info, t, true);
            let visible = doc
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|iri| claims.can_subscribe_any([iri]));
            if visible {
                subscriptions.push(Value::Object(doc));
            }
        }
    }
    // A stable order for readers and tests: by subscription IRI.
    subscriptions.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let id = match topic {
        None => SUBSCRIPTIONS_PATH.to_owned(),
        Some(_) => uri.path().to_owned(),
    };
    Ok(subscription::collection(
        &id,
        &last_event_id(hub),
        subscriptions,
    ))
}

fn single(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &Uri,
    topic: &str,
    subscriber: &str,
    subscribers: Vec<Arc<SubscriberInfo>>,
) -> Result<Value, Refusal> {
    authorize(hub, headers, uri)?;
    let info = subscribers
        .into_iter()
        .find(|info| info.id == subscriber && info.topics.iter().any(|t| t == topic))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no active subscription of {subscriber:?} to {topic:?}"),
            )
            .code("not_found")
        })?;
    let mut doc = subscription::document(&info, topic, true);
    doc.insert("@context".into(), CONTEXT.into());
    doc.insert("lastEventID".into(), last_event_id(hub).into());
    Ok(Value::Object(doc))
}
