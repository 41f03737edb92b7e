//! One subscriber's life: registered for live updates first, then the history it
//! missed, then the live queue; heartbeats, token expiry and shutdown; the end.
//!
//! The HTTP handler only parses and authorises the request and hands a [`Request`] to
//! [`open`]; what comes back is the body of the event stream.
//!
//! The hand-off from history to live: the subscriber is registered in the fan-out
//! before history is read, and history is read only up to the last update dispatched
//! at registration; everything after that arrives through its live reader (a cursor in
//! its channel of the fan-out), and anything the reader brings at or before the
//! position already sent is dropped. Replay then live gives every update once, in order.
//!
//! What a stream holds while it waits is its registration, its cursor (the updates
//! themselves are its channel's, shared with every subscriber of it) and a few timers;
//! a subscriber that falls too far behind is disconnected by the fan-out, and by the
//! server's write deadline when its socket does not drain.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Interval, Sleep};

use crate::event::{self, HEARTBEAT};
use crate::fanout::{
    Ended, LIVE_ONLY, Lagged, Queued, Reader, Refused, Registration, SubscriberInfo,
};
use crate::hub::Hub;
use crate::log::{Cursor, LogError};
use crate::subscription;
use crate::topic::{Selector, SelectorSet};

mod tally;
use tally::{End, Tally};

/// Updates read from history per log request during replay.
const REPLAY_BATCH: usize = 256;
/// Queued updates written in one go when they pile up.
const COALESCE_UPDATES: usize = 64;
/// Bytes written in one go when updates pile up.
const COALESCE_BYTES: usize = 64 * 1024;
/// The `Last-Event-ID` value that asks for all history.
pub(crate) const EARLIEST: &str = "earliest";

/// A subscription the HTTP layer has parsed and authorised.
pub(crate) struct Request {
    /// What the subscriptions API and the subscription events show.
    pub(crate) info: SubscriberInfo,
    /// The topic selectors it asked for, compiled.
    pub(crate) selectors: Vec<Selector>,
    /// The `mercure.subscribe` selectors of its token (`None`: public updates only).
    pub(crate) private: Option<SelectorSet>,
    /// The id the subscriber resumes after (`Last-Event-ID`), if any.
    pub(crate) last_event_id: Option<String>,
    /// When its token expires: the stream ends then.
    pub(crate) expires_at: Option<SystemTime>,
}

/// The body of an event stream: chunks of encoded events and heartbeats.
pub(crate) type Body = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// An opened stream.
pub(crate) struct Opened {
    pub(crate) body: Body,
    /// The `Last-Event-ID` the response carries: the id replay starts after, or
    /// `earliest` when all history is sent (an id the hub does not know, or names an
    /// update this subscriber may not see).
    pub(crate) last_event_id: Option<String>,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// A hub-wide cap.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// History could not be read to find where replay starts.
    #[error("cannot read history: {0}")]
    History(#[from] LogError),
}

/// Registers the subscriber, finds where its replay starts, and returns its stream.
pub(crate) async fn open(hub: &Hub, request: Request) -> Result<Opened, OpenError> {
    let info = Arc::new(request.info);
    let registration = Arc::new(Registration {
        info: Arc::clone(&info),
        selectors: request.selectors,
        private: request.private,
    });
    let live = match hub.inner.fanout.register(Arc::clone(&registration)) {
        Ok(live) => live,
        Err(refused) => {
            let metrics = &hub.inner.metrics;
            match refused {
                Refused::Subscribers(_) => metrics.subscription_refusals_subscribers.increment(1),
                Refused::Templates(_) => metrics.subscription_refusals_templates.increment(1),
            }
            return Err(refused.into());
        }
    };
    let mut guard = Subscription {
        hub: hub.clone(),
        key: live.key,
        info,
        tally: Tally::new(),
    };
    hub.inner
        .metrics
        .subscriptions
        .increment(guard.info.topics.len() as f64);
    if hub.config().subscriptions {
        announce(hub, &guard.info, true);
    }

    let (replay, last_event_id) = match request.last_event_id {
        None => (None, None),
        Some(id) if id == EARLIEST => (Some(Cursor::Earliest), Some(id)),
        Some(id) => match resume_point(hub, &registration, &id).await? {
            Some(position) => (Some(Cursor::Position(position)), Some(id)),
            // An id we do not know (too old, never ours, or not this subscriber's to
            // know): send all it may see.
            None => (Some(Cursor::Earliest), Some(EARLIEST.to_owned())),
        },
    };
    if replay.is_some() {
        hub.inner.metrics.replays.increment(1);
    }

    let expiry = request.expires_at.map(|at| {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(left))
    });
    let heartbeat = hub.config().heartbeat.map(|every| {
        let mut interval = tokio::time::interval_at(Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    guard.tally.opened(&guard.info, last_event_id.as_deref());
    let connection = Connection {
        failed: false,
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
        reader: live.reader,
        registration,
        heartbeat,
        expiry,
        wrote_at: Instant::now(),
        guard,
    };
    let body = futures_util::stream::unfold(connection, |mut c| async move {
        let chunk = c.next_chunk().await?;
        c.guard.tally.bytes += chunk.len() as u64;
        Some((chunk, c))
    });
    Ok(Opened {
        body: Box::pin(body),
        last_event_id,
    })
}

/// The position to resume after for `id`: `None` when the log does not know the id,
/// or when it names a private update this subscriber may not receive — whether such
/// an update exists is not for it to learn.
async fn resume_point(
    hub: &Hub,
    registration: &Registration,
    id: &str,
) -> Result<Option<u64>, LogError> {
    let log = &hub.inner.log;
    let Some(position) = log.position_of(id).await? else {
        return Ok(None);
    };
    let named = log
        .read_after(Cursor::Position(position.saturating_sub(1)), 1)
        .await?;
    match named.first() {
        Some(stored)
            if stored.position == position && !registration.may_receive(&stored.update) =>
        {
            Ok(None)
        }
        _ => Ok(Some(position)),
    }
}

/// Sends the subscription events of a subscriber to the live subscribers of the
/// subscription topics. They are not history: a subscriber that was away learns the
/// current state from the subscriptions API, and churn costs no write to the log.
fn announce(hub: &Hub, info: &SubscriberInfo, active: bool) {
    for update in subscription::events(info, active) {
        hub.inner.fanout.notify_subscription(&update);
    }
    if let Some(cluster) = &hub.inner.cluster {
        cluster.announce(info, active);
    }
}

/// Removes a subscriber from the hub when its stream is dropped, however that happens
/// (client gone, slow, expired, write deadline, shutdown).
struct Subscription {
    hub: Hub,
    key: u64,
    info: Arc<SubscriberInfo>,
    tally: Tally,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.tally.closed(&self.info);
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
    /// Replay failed: the stream ends without sending anything more.
    failed: bool,
    /// The position of the last update written (or skipped as not for this subscriber).
    sent: u64,
    reader: Reader,
    registration: Arc<Registration>,
    heartbeat: Option<Interval>,
    expiry: Option<Pin<Box<Sleep>>>,
    /// When the last chunk was written: a heartbeat is due a heartbeat interval after it.
    /// (Kept as a time rather than resetting the timer at every write, which would take
    /// the runtime's timer lock once per write.)
    wrote_at: Instant,
    guard: Subscription,
}

impl Connection {
    /// The next bytes to write, or `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        while self.replay.is_some() {
            // History can be long: an expired token or a hub shutting down ends the
            // stream between two chunks of it, not only once it is all sent.
            if self.guard.hub.inner.shutdown.is_cancelled() {
                self.guard.tally.end = Some(End::Shutdown);
                return None;
            }
            if self.expired() {
                tracing::debug!(subscriber = %self.guard.info.id, "token expired during replay: closing");
                self.guard.tally.end = Some(End::TokenExpired);
                return None;
            }
            // Boxed: a read of the log (a Redis one above all) is a large future, and
            // inline it would size every idle stream's state for the whole of its life.
            if let Some(chunk) = Box::pin(self.replay_chunk()).await {
                return Some(chunk);
            }
        }
        if self.failed {
            // Not one live update before the missed history: the client would move its
            // last event ID past the gap and never get it.
            self.guard.tally.end = Some(End::ReplayFailed);
            return None;
        }
        loop {
            // Shutdown comes through the reader (the fan-out wakes every reader then), so
            // that waiting for it takes no lock shared by every stream.
            let ready = tokio::select! {
                biased;
                () = async { self.expiry.as_mut().expect("guarded").await }, if self.expiry.is_some() => {
                    tracing::debug!(subscriber = %self.guard.info.id, "token expired: closing");
                    self.guard.tally.end = Some(End::TokenExpired);
                    return None;
                }
                ready = self.reader.ready() => ready,
                _ = async { self.heartbeat.as_mut().expect("guarded").tick().await }, if self.heartbeat.is_some() => {
                    let every = self.heartbeat.as_ref().expect("guarded").period();
                    let due = self.wrote_at + every;
                    if Instant::now() < due {
                        // Something was written since: the heartbeat is due later.
                        self.heartbeat.as_mut().expect("guarded").reset_at(due);
                        continue;
                    }
                    self.wrote_at = Instant::now();
                    return Some(HEARTBEAT);
                }
            };
            let coalesced = match ready {
                Ok(()) => self.coalesce(),
                Err(Ended::ShutDown) => {
                    self.guard.tally.end = Some(End::Shutdown);
                    return None;
                }
                Err(Ended::Lagged) => Err(Lagged),
            };
            let Ok(coalesced) = coalesced else {
                // Too far behind: the stream ends, the client resumes from history.
                self.guard.tally.end = Some(End::TooSlow);
                self.guard.hub.inner.fanout.lagged(self.guard.key);
                return None;
            };
            if let Some(chunk) = coalesced {
                if self.heartbeat.is_some() {
                    self.wrote_at = Instant::now();
                }
                return Some(chunk);
            }
        }
    }

    /// What the reader has, up to a limit, as one write; `None` if all were already sent
    /// from history.
    fn coalesce(&mut self) -> Result<Option<Bytes>, Lagged> {
        let mut batch = Batch::default();
        // The delivery lag of each stored update, taken when its bytes go to the socket
        // (the caller writes them at once).
        let observed = &self.guard.hub.inner.metrics.observed;
        let now = std::time::Instant::now();
        let sent = &mut self.sent;
        self.reader
            .drain(COALESCE_UPDATES, COALESCE_BYTES, |queued| {
                if let Some(position) = batch.push(queued, sent) {
                    observed.delivered(position, now);
                }
            })?;
        self.guard.tally.events += batch.count as u64;
        Ok(batch.finish())
    }

    /// Whether the subscriber's token has expired, without waiting for it to.
    fn expired(&self) -> bool {
        self.expiry
            .as_ref()
            .is_some_and(|expiry| expiry.deadline() <= Instant::now())
    }

    /// The history for this subscriber in one batch read from the log: `None` if
    /// there is none in it (or replay is over, or failed: then `failed` is set).
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
                self.failed = true;
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
        self.guard.tally.events += replayed;
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
    /// Adds an update unless it was sent already; returns its position when it is
    /// added and is one of the log's.
    fn push(&mut self, (position, event): Queued, sent: &mut u64) -> Option<u64> {
        let stored = position != LIVE_ONLY;
        if stored {
            if position <= *sent {
                return None;
            }
            *sent = position;
        }
        self.count += 1;
        if self.count == 1 {
            self.single = Some(event);
        } else {
            if let Some(first) = self.single.take() {
                self.joined.extend_from_slice(&first);
            }
            self.joined.extend_from_slice(&event);
        }
        stored.then_some(position)
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
    use crate::auth::KeyConfig;
    use crate::log::Update;

    /// A hub with three replay chunks of history on topic `a`.
    async fn hub_with_history() -> Hub {
        let hub = Hub::builder()
            .jwt_key(KeyConfig::hmac(b"stream unit-test secret, 32+ bytes"))
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

    fn request(last_event_id: &str, expires_at: Option<SystemTime>) -> Request {
        Request {
            info: SubscriberInfo {
                id: Update::generate_id(),
                topics: vec!["a".into()],
                payload: None,
            },
            selectors: vec![Selector::new("a")],
            private: None,
            last_event_id: Some(last_event_id.to_owned()),
            expires_at,
        }
    }

    fn events_in(chunk: &[u8]) -> usize {
        chunk.windows(2).filter(|pair| pair == b"\n\n").count()
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_in_the_middle_of_a_replay() {
        let hub = hub_with_history().await;
        let mut body = open(&hub, request(EARLIEST, None)).await.unwrap().body;
        let first = body.next().await.unwrap();
        assert_eq!(events_in(&first), REPLAY_BATCH);
        hub.shutdown();
        assert!(body.next().await.is_none(), "replay went on after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_ends_the_stream_in_the_middle_of_a_replay() {
        let hub = hub_with_history().await;
        let ttl = Duration::from_secs(60);
        let expires_at = SystemTime::now() + ttl;
        let mut body = open(&hub, request(EARLIEST, Some(expires_at)))
            .await
            .unwrap()
            .body;
        let first = body.next().await.unwrap();
        assert_eq!(events_in(&first), REPLAY_BATCH);
        tokio::time::advance(ttl + Duration::from_secs(1)).await;
        assert!(
            body.next().await.is_none(),
            "replay went on after the token expired"
        );
    }

    #[test]
    fn live_only_events_are_never_dropped_as_already_sent() {
        let mut sent = 5;
        let mut batch = Batch::default();
        batch.push((3, Bytes::from_static(b"old\n\n")), &mut sent);
        batch.push((LIVE_ONLY, Bytes::from_static(b"live\n\n")), &mut sent);
        batch.push((6, Bytes::from_static(b"new\n\n")), &mut sent);
        assert_eq!(sent, 6);
        assert_eq!(&batch.finish().unwrap()[..], b"live\n\nnew\n\n");
    }
}
