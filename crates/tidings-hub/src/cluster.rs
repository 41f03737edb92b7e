//! Cluster mode: what a hub node does beside its peers on one Redis.
//!
//! The shared log itself is `log/redis.rs`. Here:
//!
//! - [`feed`] hands the updates the log's reader reads from the stream (every node's,
//!   in the stream's order) to this node's fan-out;
//! - [`Cluster`] shares the active subscriptions, which are not history: each node
//!   keeps its own subscribers in a Redis hash `NAME:subs:NODE` (subscriber IRI → its
//!   topics and payload), and a key `NAME:node:NODE`, whose TTLs it refreshes every
//!   [`REFRESH`]; the set `NAME:nodes` names the nodes. A node that dies takes its
//!   subscribers with it within [`NODE_TTL`], on Redis's clock (the nodes' clocks
//!   play no part), and is removed from the set by the next node that lists. The
//!   subscriptions API of any node lists every live node's subscribers.
//! - Subscription events reach the subscribers of every node over Redis pub/sub
//!   (channel `NAME:events`): live notifications, never entries of the stream, so
//!   connect-and-close churn costs the history nothing. A node away from Redis misses
//!   the events of that time, as a subscriber away misses any live-only event; the
//!   subscriptions API gives the current state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fanout::{Fanout, SubscriberInfo, Wakes};
use crate::log::redis::{MAX_BACKOFF, RESPONSE_TIMEOUT, Target};
use crate::log::{LogError, Stored};

/// How often a node refreshes its liveness and the TTL of its subscribers' hash.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);
/// How long a node's subscribers stay listed after it last refreshed them.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(15);
/// The most subscription changes waiting to be written to Redis; past that they are
/// dropped (counted), and the next refresh writes the node's whole list again.
const CHANGES_QUEUE: usize = 4096;
/// The most changes written in one pipeline.
const CHANGES_BATCH: usize = 256;

/// Dispatches what the shared log's reader reads, in order, until the log closes.
pub(crate) async fn feed(mut batches: mpsc::Receiver<Vec<Stored>>, fanout: Arc<Fanout>) {
    // The channels appended to by a batch, their readers woken once per batch, paced as
    // the local dispatch paces them.
    let mut wakes = Wakes::default();
    while let Some(batch) = batches.recv().await {
        for stored in &batch {
            let wire = crate::event::encode(&stored.update);
            fanout.dispatch(stored, &wire, &mut wakes);
        }
        wakes.wake_paced().await;
    }
    wakes.wake_all();
}

/// A subscriber as the nodes share it.
#[derive(Debug, Serialize, Deserialize)]
struct Shared {
    topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

/// A subscription event as it goes between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    node: String,
    subscriber: String,
    active: bool,
    #[serde(flatten)]
    shared: Shared,
}

struct Change {
    id: String,
    shared: Shared,
    active: bool,
}

/// This node's part in sharing subscriptions; see the module's documentation.
pub(crate) struct Cluster {
    node: String,
    target: Target,
    nodes_key: String,
    channel: String,
    changes: mpsc::Sender<Change>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
    queries: Mutex<Option<MultiplexedConnection>>,
    stop: CancellationToken,
}

impl Cluster {
    /// Starts sharing this node's subscribers and receiving the other nodes' events.
    /// The tasks stop when the handle is dropped, or at [`Cluster::close`].
    pub(crate) fn start(target: Target, fanout: Arc<Fanout>) -> ClusterHandle {
        let node = uuid::Uuid::new_v4().simple().to_string();
        let (changes, queue) = mpsc::channel(CHANGES_QUEUE);
        let stream = target.stream().to_owned();
        let cluster = Arc::new(Cluster {
            node,
            nodes_key: format!("{stream}:nodes"),
            channel: format!("{stream}:events"),
            target,
            changes,
            dropped: Arc::default(),
            queries: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&cluster).write(queue, Arc::clone(&fanout)));
        tokio::spawn(Arc::clone(&cluster).listen(fanout));
        ClusterHandle {
            _stop: cluster.stop.clone().drop_guard(),
            cluster,
        }
    }

    fn subs_key(&self, node: &str) -> String {
        format!("{}:subs:{node}", self.target.stream())
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.target.stream())
    }

    /// A subscriber of this node started (`active`) or ended: shared with the others.
    pub(crate) fn announce(&self, info: &SubscriberInfo, active: bool) {
        let change = Change {
            id: info.id.clone(),
            shared: Shared {
                topics: info.topics.clone(),
                payload: info.payload.clone(),
            },
            active,
        };
        if self.changes.try_send(change).is_err() {
            self.dropped
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Stops the tasks and removes this node's subscribers from Redis.
    pub(crate) async fn close(&self) {
        self.stop.cancel();
        if let Ok(mut con) = self.connection().await {
            let _ = tokio::time::timeout(
                RESPONSE_TIMEOUT,
                redis::pipe()
                    .del(self.subs_key(&self.node))
                    .del(self.alive_key(&self.node))
                    .srem(&self.nodes_key, &self.node)
                    .query_async::<()>(&mut con),
            )
            .await;
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, LogError> {
        if let Some(con) = self
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(con);
        }
        let con = self
            .target
            .connect(RESPONSE_TIMEOUT)
            .await
            .map_err(|reason| LogError::Unavailable { reason })?;
        *self.queries.lock().unwrap_or_else(|p| p.into_inner()) = Some(con.clone());
        Ok(con)
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, LogError> {
        let mut con = self.connection().await?;
        match pipe.query_async(&mut con).await {
            Ok(value) => Ok(value),
            Err(err) => {
                *self.queries.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(LogError::Unavailable {
                    reason: format!("Redis at {} failed: {err}", self.target.shown()),
                })
            }
        }
    }

    /// The subscribers of every other live node.
    pub(crate) async fn remote_subscribers(&self) -> Result<Vec<Arc<SubscriberInfo>>, LogError> {
        let mut pipe = redis::pipe();
        pipe.smembers(&self.nodes_key);
        let (nodes,): (Vec<String>,) = self.run_pipe(&pipe).await?;
        let others: Vec<&String> = nodes.iter().filter(|n| **n != self.node).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.exists(self.alive_key(node))
                .hgetall(self.subs_key(node));
        }
        let replies: Vec<redis::Value> = self.run_pipe(&pipe).await?;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (node, pair) in others.iter().zip(replies.chunks(2)) {
            let alive = matches!(pair.first(), Some(redis::Value::Int(1)));
            if !alive {
                dead.push(*node);
                continue;
            }
            let Some(hash) = pair.get(1) else { continue };
            let hash: HashMap<String, String> =
                redis::from_redis_value_ref(hash).unwrap_or_default();
            for (id, json) in hash {
                if let Ok(shared) = serde_json::from_str::<Shared>(&json) {
                    out.push(Arc::new(SubscriberInfo {
                        id,
                        topics: shared.topics,
                        payload: shared.payload,
                    }));
                }
            }
        }
        if !dead.is_empty() {
            let mut pipe = redis::pipe();
            pipe.srem(&self.nodes_key, dead).ignore();
            let _ = self.run_pipe::<()>(&pipe).await;
        }
        Ok(out)
    }

    /// Writes this node's subscription changes to its hash and publishes them as
    /// events; refreshes the node's liveness every [`REFRESH`].
    async fn write(self: Arc<Self>, mut queue: mpsc::Receiver<Change>, fanout: Arc<Fanout>) {
        let key = self.subs_key(&self.node);
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = true;
        loop {
            let mut batch = Vec::new();
            let received_none = tokio::select! {
                () = self.stop.cancelled() => return,
                _ = refresh.tick() => true,
                received = queue.recv_many(&mut batch, CHANGES_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    false
                }
            };
            let mut pipe = redis::pipe();
            for change in batch.drain(..) {
                if change.active {
                    pipe.hset(&key, &change.id, json(&change.shared)).ignore();
                } else {
                    pipe.hdel(&key, &change.id).ignore();
                }
                let event = Event {
                    node: self.node.clone(),
                    subscriber: change.id,
                    active: change.active,
                    shared: change.shared,
                };
                pipe.publish(&self.channel, json(&event)).ignore();
            }
            if self
                .dropped
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                resync = true;
            }
            if resync || received_none {
                // The liveness refresh, and the whole list again when changes were
                // lost (a full queue, Redis away) or Redis lost the hash.
                let local = fanout.subscribers();
                if resync {
                    pipe.del(&key).ignore();
                    for info in &local {
                        let shared = Shared {
                            topics: info.topics.clone(),
                            payload: info.payload.clone(),
                        };
                        pipe.hset(&key, &info.id, json(&shared)).ignore();
                    }
                }
                let ttl = NODE_TTL.as_millis() as i64;
                pipe.pexpire(&key, ttl).ignore();
                pipe.cmd("SET")
                    .arg(self.alive_key(&self.node))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl)
                    .ignore();
                pipe.sadd(&self.nodes_key, &self.node).ignore();
                pipe.hlen(&key);
                match self.run_pipe::<(usize,)>(&pipe).await {
                    Ok((len,)) => {
                        // Redis lost the hash (restarted without its data, or the TTL
                        // ran out while this node could not refresh it): write it again.
                        resync = len == 0 && fanout.len() > 0;
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "cannot share this node's subscriptions");
                        resync = true;
                    }
                }
            } else {
                pipe.pexpire(&key, NODE_TTL.as_millis() as i64).ignore();
                if let Err(err) = self.run_pipe::<()>(&pipe).await {
                    tracing::warn!(cause = %err, "cannot share this node's subscriptions");
                    resync = true;
                }
            }
        }
    }

    /// Receives the other nodes' subscription events and hands them to the local
    /// subscribers; reconnects with a growing pause when Redis goes away.
    async fn listen(self: Arc<Self>, fanout: Arc<Fanout>) {
        let mut pause = Duration::from_millis(100);
        while !self.stop.is_cancelled() {
            let connected = tokio::time::timeout(RESPONSE_TIMEOUT, async {
                let mut pubsub = self.target.client().get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match connected {
                Ok(Ok(pubsub)) => {
                    pause = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            () = self.stop.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let Ok(event) =
                            serde_json::from_slice::<Event>(message.get_payload_bytes())
                        else {
                            continue;
                        };
                        if event.node == self.node {
                            continue;
                        }
                        let info = SubscriberInfo {
                            id: event.subscriber,
                            topics: event.shared.topics,
                            payload: event.shared.payload,
                        };
                        for update in crate::subscription::events(&info, event.active) {
                            fanout.notify_subscription(&update);
                        }
                    }
                    tracing::warn!(
                        "lost the Redis subscription to other nodes' subscription events: reconnecting"
                    );
                }
                Ok(Err(err)) => {
                    tracing::warn!(cause = %err, redis = %self.target.shown(), "cannot subscribe to other nodes' subscription events");
                }
                Err(_) => {
                    tracing::warn!(redis = %self.target.shown(), "cannot subscribe to other nodes' subscription events: no answer");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// The hub's handle on its [`Cluster`]: dropping it (the hub dropped without
/// [`Hub::close`](crate::Hub::close)) stops the cluster's tasks.
pub(crate) struct ClusterHandle {
    cluster: Arc<Cluster>,
    _stop: tokio_util::sync::DropGuard,
}

impl std::ops::Deref for ClusterHandle {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// Local and remote subscribers together, without a subscriber twice.
pub(crate) fn merge(
    local: Vec<Arc<SubscriberInfo>>,
    remote: Vec<Arc<SubscriberInfo>>,
) -> Vec<Arc<SubscriberInfo>> {
    let mut seen: HashSet<String> = local.iter().map(|i| i.id.clone()).collect();
    let mut all = local;
    for info in remote {
        if seen.insert(info.id.clone()) {
            all.push(info);
        }
    }
    all
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
