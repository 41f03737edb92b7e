//! `GET /.well-known/mercure`: an event stream of the updates on the requested topics.
//!
//! The subscriber is registered for live updates before history is read, and history
//! is read only up to the last update dispatched at registration: everything after
//! that arrives on the live queue. Replay then live gives every update once, in order.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Refusal, query_pairs, subscriber_claims};
use crate::auth::TokenSource;
use crate::event::{self, HEARTBEAT};
use crate::fanout::{Queued, Registration, SubscriberInfo};
use crate::hub::Hub;
use crate::log::{Cursor, Update};
use crate::subscription;

/// Updates read from history per log request during replay.
const REPLAY_BATCH: usize = 256;
/// Queued updates written in one go when they pile up.
const COALESCE_UPDATES: usize = 64;
/// Bytes written in one go when updates pile up.
const COALESCE_BYTES: usize = 64 * 1024;
/// The `Last-Event-ID` value that asks for all history.
const EARLIEST: &str = "earliest";

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
        ));
    }
    let limit = hub.config().max_topics;
    if topics.len() > limit {
        return Err(Refusal::bad_request(format!(
            "too many topics: at most {limit} per subscription"
        )));
    }
    let auth = subscriber_claims(&hub, headers, uri.query())?;
    if auth.is_none() && !hub.config().anonymous {
        return Err(Refusal::unauthorized(
            "missing token: this hub does not accept anonymous subscribers",
        ));
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
    let expires_at = claims.as_ref().and_then(|c| c.expires_at);
    let info = Arc::new(SubscriberInfo {
        id: Update::generate_id(),
        topics: topics.clone(),
        payload: claims.as_ref().and_then(|c| c.payload.clone()),
    });
    let selectors = crate::topic::compile_subscription(&topics, &hub.config().selector_limits)
        .await
        .map_err(|err| {
            hub.inner.metrics.selector_refusals.increment(1);
            Refusal::bad_request(err.to_string())
        })?;
    let registration = Arc::new(Registration {
        info: Arc::clone(&info),
        selectors,
        // A token without `mercure.subscribe` gets public updates only, like no token.
        private: claims.and_then(|c| c.subscribe),
    });
    let live = hub.inner.fanout.register(Arc::clone(&registration));
    let guard = Subscription {
        hub: hub.clone(),
        key: live.key,
        info,
    };
    hub.inner
        .metrics
        .subscriptions
        .increment(topics.len() as f64);
    if hub.config().subscriptions {
        announce(&hub, &guard.info, true);
    }

    let (replay, response_last_id) = match requested_last_id {
        None => (None, None),
        Some(id) if id == EARLIEST => (Some(Cursor::Earliest), Some(EARLIEST.to_owned())),
        Some(id) => match hub.inner.log.position_of(&id).await {
            Ok(Some(position)) => (Some(Cursor::Position(position)), Some(id)),
            // An id we do not know (too old, or never ours): send all we have.
            Ok(None) => (Some(Cursor::Earliest), Some(EARLIEST.to_owned())),
            Err(err) => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read history: {err}"),
                ));
            }
        },
    };
    if replay.is_some() {
        hub.inner.metrics.replays.increment(1);
    }

    let expiry = match expires_at {
        Some(at) => {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Some(Box::pin(tokio::time::sleep(left)))
        }
        None => None,
    };
    let heartbeat = hub.config().heartbeat.map(|every| {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let connection = Connection {
        replay: replay.map(|cursor| Replay {
            cursor,
            until: live.dispatched,
        }),
        // A client may know a position past what this hub has dispatched (it read it
        // from history just now): never send that again from the live queue.
        sent: match replay {
            Some(Cursor::Position(position)) => position.max(live.dispatched),
            _ => live.dispatched,
        },
        queue: live.queue,
        registration,
        heartbeat,
        expiry,
        shutdown: Box::pin(hub.inner.shutdown.clone().cancelled_owned()),
        guard,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        connection,
        |mut c| async move {
            c.next_chunk()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), c))
        },
    ));

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
    if let Some(id) = response_last_id {
        // Ids are UTF-8 and a header carries them as bytes (what browsers send back);
        // only an id with control characters, which publishing refuses, cannot be one.
        if let Ok(value) = HeaderValue::from_bytes(id.as_bytes()) {
            headers.insert("last-event-id", value);
        }
    }
    Ok(response)
}

/// Publishes the subscription events of a subscriber, without holding up its stream.
///
/// The events (one per topic) are appended together, so that the log commits them in
/// one go rather than one after another.
fn announce(hub: &Hub, info: &SubscriberInfo, active: bool) {
    let updates = subscription::events(info, active);
    let hub = hub.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let appends = updates
            .into_iter()
            .filter_map(|update| match hub.validate(update) {
                Ok(update) => Some(update),
                Err(err) => {
                    tracing::warn!(cause = %err, "subscription event not published");
                    None
                }
            })
            .map(|update| hub.append(update));
        for result in futures_util::future::join_all(appends).await {
            if let Err(err) = result {
                tracing::warn!(cause = %err, "subscription event not published");
            }
        }
    });
}

/// Removes a subscriber from the hub when its stream is dropped, however that happens
/// (client gone, slow, expired, shutdown).
struct Subscription {
    hub: Hub,
    key: u64,
    info: Arc<SubscriberInfo>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.inner.fanout.unregister(self.key);
        self.hub
            .inner
            .metrics
            .subscriptions
            .decrement(self.info.topics.len() as f64);
        if self.hub.config().subscriptions && !self.hub.inner.shutdown.is_cancelled() {
            announce(&self.hub, &self.info, false);
        }
    }
}

struct Replay {
    cursor: Cursor,
    /// History beyond this position comes on the live queue.
    until: u64,
}

struct Connection {
    replay: Option<Replay>,
    /// The position of the last update written (or skipped as not for this subscriber).
    sent: u64,
    queue: mpsc::Receiver<Queued>,
    registration: Arc<Registration>,
    heartbeat: Option<Interval>,
    expiry: Option<Pin<Box<Sleep>>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    guard: Subscription,
}

impl Connection {
    /// The next bytes to write, or `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        while self.replay.is_some() {
            // History can be long: an expired token or a hub shutting down ends the
            // stream between two chunks of it, not only once it is all sent.
            if self.guard.hub.inner.shutdown.is_cancelled() {
                return None;
            }
            if self.expired() {
                tracing::debug!(subscriber = %self.guard.info.id, "token expired during replay: closing");
                return None;
            }
            if let Some(chunk) = self.replay_chunk().await {
                return Some(chunk);
            }
        }
        loop {
            let first = tokio::select! {
                biased;
                () = &mut self.shutdown => return None,
                () = async { self.expiry.as_mut().expect("guarded").await }, if self.expiry.is_some() => {
                    tracing::debug!(subscriber = %self.guard.info.id, "token expired: closing");
                    return None;
                }
                queued = self.queue.recv() => queued?,
                _ = async { self.heartbeat.as_mut().expect("guarded").tick().await }, if self.heartbeat.is_some() => {
                    return Some(HEARTBEAT);
                }
            };
            if let Some(chunk) = self.coalesce(first) {
                if let Some(heartbeat) = &mut self.heartbeat {
                    heartbeat.reset();
                }
                return Some(chunk);
            }
        }
    }

    /// The first update plus whatever else is already queued, up to a limit, as one
    /// write; `None` if all were already sent from history.
    fn coalesce(&mut self, first: Queued) -> Option<Bytes> {
        let mut batch = Batch::default();
        batch.push(first, &mut self.sent);
        while batch.count < COALESCE_UPDATES && batch.len() < COALESCE_BYTES {
            match self.queue.try_recv() {
                Ok(queued) => batch.push(queued, &mut self.sent),
                Err(_) => break,
            }
        }
        batch.finish()
    }

    /// Whether the subscriber's token has expired, without waiting for it to.
    fn expired(&self) -> bool {
        self.expiry
            .as_ref()
            .is_some_and(|expiry| expiry.deadline() <= Instant::now())
    }

    /// The history for this subscriber in one batch read from the log: `None` if
    /// there is none in it (or replay is over, or failed and the queue was closed).
    async fn replay_chunk(&mut self) -> Option<Bytes> {
        let replay = self.replay.as_mut()?;
        let hub = &self.guard.hub;
        let batch = match hub.inner.log.read_after(replay.cursor, REPLAY_BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                // Without its history the subscriber would silently miss updates: end
                // the stream so that it reconnects and tries again.
                tracing::error!(cause = %err, "cannot read history for replay");
                self.replay = None;
                self.queue.close();
                return None;
            }
        };
        let mut buf = BytesMut::new();
        let mut done = batch.len() < REPLAY_BATCH;
        let mut replayed = 0u64;
        for stored in &batch {
            if stored.position > replay.until {
                done = true;
                break;
            }
            replay.cursor = Cursor::Position(stored.position);
            if self.registration.selects(&stored.update)
                && self.registration.may_receive(&stored.update)
            {
                event::encode_into(&stored.update, &mut buf);
                replayed += 1;
            }
        }
        if done {
            self.replay = None;
        }
        hub.inner.metrics.replayed_updates.increment(replayed);
        (!buf.is_empty()).then(|| buf.freeze())
    }
}

/// Updates written together.
#[derive(Default)]
struct Batch {
    count: usize,
    /// The only update so far: its shared bytes are written as they are, no copy.
    single: Option<Bytes>,
    joined: BytesMut,
}

impl Batch {
    fn push(&mut self, (position, event): Queued, sent: &mut u64) {
        if position <= *sent {
            return;
        }
        *sent = position;
        self.count += 1;
        if self.count == 1 {
            self.single = Some(event);
        } else {
            if let Some(first) = self.single.take() {
                self.joined.extend_from_slice(&first);
            }
            self.joined.extend_from_slice(&event);
        }
    }

    fn len(&self) -> usize {
        self.single.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    fn finish(self) -> Option<Bytes> {
        match self.single {
            Some(event) => Some(event),
            None if !self.joined.is_empty() => Some(self.joined.freeze()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::auth::{KeyConfig, MercureClaims, SigningKey, mint};

    const KEY: &[u8] = b"subscribe unit-test secret, 32+ bytes";

    /// A hub with three replay chunks of history on topic `a`.
    async fn hub_with_history() -> Hub {
        let hub = Hub::builder()
            .jwt_key(KeyConfig::hmac(KEY))
            .heartbeat(None)
            .subscriptions(false)
            .build()
            .await
            .unwrap();
        for n in 0..REPLAY_BATCH * 3 {
            hub.publish(Update::new("", "a", n.to_string()))
                .await
                .unwrap();
        }
        hub
    }

    /// The body of a subscription to `a` that asks for all history.
    async fn replay_body(hub: &Hub, token: Option<&str>) -> axum::body::BodyDataStream {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static(EARLIEST));
        if let Some(token) = token {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            headers.insert(header::AUTHORIZATION, bearer);
        }
        let uri = Uri::from_static("/.well-known/mercure?topic=a");
        let response = subscribe(State(hub.clone()), headers, uri).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().into_data_stream()
    }

    fn events_in(chunk: &[u8]) -> usize {
        chunk.windows(2).filter(|pair| pair == b"\n\n").count()
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_in_the_middle_of_a_replay() {
        let hub = hub_with_history().await;
        let mut body = replay_body(&hub, None).await;
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(events_in(&first), REPLAY_BATCH);
        hub.shutdown();
        assert!(body.next().await.is_none(), "replay went on after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_ends_the_stream_in_the_middle_of_a_replay() {
        let hub = hub_with_history().await;
        let ttl = Duration::from_secs(60);
        let token = mint(&SigningKey::hmac(KEY), &MercureClaims::default(), Some(ttl)).unwrap();
        let mut body = replay_body(&hub, Some(&token)).await;
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(events_in(&first), REPLAY_BATCH);
        tokio::time::advance(ttl + Duration::from_secs(1)).await;
        assert!(
            body.next().await.is_none(),
            "replay went on after the token expired"
        );
    }
}
