//! The registry of live subscribers and the delivery of each update to the ones it
//! concerns.
//!
//! Finding the subscribers of an update does not scan every subscriber: exact selectors
//! are indexed by topic, `*` subscribers are kept apart, and the subscribers whose URI
//! templates match a topic are computed once per topic and cached (the cache is kept up
//! to date as template subscribers come and go). Each subscriber has a bounded queue;
//! one whose queue is full is dropped from the registry, which ends its stream once it
//! has written what it was given; it then resumes from history.
//!
//! The registry sits behind a `std` mutex: every operation under it is short and never
//! awaits (queueing uses `try_send`), so an async lock would only add cost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::log::{Stored, Update};
use crate::metrics::Metrics;
use crate::topic::{Selector, SelectorSet};

/// What a subscriber's queue carries: the update's position in the log (or
/// [`LIVE_ONLY`]) and its encoded event, shared with every other subscriber of the same
/// update.
pub(crate) type Queued = (u64, Bytes);

/// The position of a queued event that is not in the log (subscription events): never
/// replayed, never dropped as already sent. Log positions start at 1.
pub(crate) const LIVE_ONLY: u64 = 0;

/// Keeps the template-match cache from growing without bound on hubs whose topics are
/// all different (it is rebuilt on demand after being cleared).
const TEMPLATE_CACHE_TOPICS: usize = 16_384;

/// A subscriber as the subscriptions API and the subscription events show it.
#[derive(Debug)]
pub(crate) struct SubscriberInfo {
    /// The subscriber's IRI (`urn:uuid:…`).
    pub(crate) id: String,
    /// The topic selectors it asked for, as given.
    pub(crate) topics: Vec<String>,
    /// `mercure.payload` of its token.
    pub(crate) payload: Option<serde_json::Value>,
}

/// What the fan-out needs to decide whether an update goes to a subscriber.
pub(crate) struct Registration {
    pub(crate) info: Arc<SubscriberInfo>,
    pub(crate) selectors: Vec<Selector>,
    /// The `mercure.subscribe` selectors of its token; `None` for an anonymous
    /// subscriber, which gets public updates only.
    pub(crate) private: Option<SelectorSet>,
}

impl Registration {
    /// Whether one of its selectors matches one of the update's topics.
    pub(crate) fn selects(&self, update: &Update) -> bool {
        update
            .topics
            .iter()
            .any(|topic| self.selectors.iter().any(|s| s.matches(topic)))
    }

    /// Whether it may see the update: public, or private with one of the update's topics
    /// covered by its token's `mercure.subscribe`.
    pub(crate) fn may_receive(&self, update: &Update) -> bool {
        if !update.private {
            return true;
        }
        match &self.private {
            Some(allowed) => allowed.matches_any_topic(update.topics.iter().map(String::as_str)),
            None => false,
        }
    }
}

struct Subscriber {
    queue: mpsc::Sender<Queued>,
    registration: Arc<Registration>,
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    subscribers: HashMap<u64, Subscriber>,
    exact: HashMap<String, HashSet<u64>>,
    wildcard: HashSet<u64>,
    /// Subscribers with at least one template selector, and those selectors.
    templated: HashMap<u64, Vec<Selector>>,
    /// Topic → the templated subscribers that match it.
    template_matches: HashMap<String, Vec<u64>>,
    /// The position of the last update handed to the registry.
    dispatched: u64,
    /// The id of that update, for the subscriptions API's `lastEventID`.
    last_event_id: Option<String>,
}

impl Registry {
    fn template_subscribers(&mut self, topic: &str) -> &[u64] {
        if !self.template_matches.contains_key(topic) {
            if self.template_matches.len() >= TEMPLATE_CACHE_TOPICS {
                self.template_matches.clear();
            }
            let matching = self
                .templated
                .iter()
                .filter(|(_, templates)| templates.iter().any(|t| t.matches(topic)))
                .map(|(&key, _)| key)
                .collect();
            self.template_matches.insert(topic.to_owned(), matching);
        }
        &self.template_matches[topic]
    }

    /// The subscribers whose selectors match one of the update's topics, each once.
    fn targets(&mut self, update: &Update) -> Vec<u64> {
        let mut targets: Vec<u64> = self.wildcard.iter().copied().collect();
        for topic in &update.topics {
            if let Some(keys) = self.exact.get(topic.as_str()) {
                targets.extend(keys.iter().copied());
            }
            if !self.templated.is_empty() {
                let matching = self.template_subscribers(topic).to_vec();
                targets.extend(matching);
            }
        }
        // A subscriber that matches through several selectors or topics gets one copy.
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    fn remove(&mut self, key: u64) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&key)?;
        for selector in subscriber.registration.selectors.iter() {
            if !selector.is_exact() {
                continue;
            }
            if let Some(keys) = self.exact.get_mut(selector.as_str()) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.exact.remove(selector.as_str());
                }
            }
        }
        self.wildcard.remove(&key);
        if self.templated.remove(&key).is_some() {
            for keys in self.template_matches.values_mut() {
                keys.retain(|&k| k != key);
            }
        }
        Some(subscriber)
    }
}

/// The live side of a new subscriber.
pub(crate) struct Live {
    /// Its key in the registry.
    pub(crate) key: u64,
    /// Its queue: updates after `dispatched`, in log order.
    pub(crate) queue: mpsc::Receiver<Queued>,
    /// The position of the last update dispatched before it was registered: history up
    /// to here comes from the log, everything after from the queue.
    pub(crate) dispatched: u64,
}

/// The registry of live subscribers.
pub(crate) struct Fanout {
    registry: Mutex<Registry>,
    queue_capacity: usize,
    metrics: Metrics,
}

impl Fanout {
    pub(crate) fn new(queue_capacity: usize, metrics: Metrics, dispatched: u64) -> Self {
        Self {
            registry: Mutex::new(Registry {
                dispatched,
                ..Registry::default()
            }),
            queue_capacity: queue_capacity.max(1),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-updated in a way
        // that matters more than stopping the hub would, so keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber for live updates.
    pub(crate) fn register(&self, registration: Arc<Registration>) -> Live {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let mut registry = self.lock();
        let key = registry.next_key;
        registry.next_key += 1;
        let mut templates = Vec::new();
        for selector in registration.selectors.iter() {
            if selector.is_wildcard() {
                registry.wildcard.insert(key);
            } else if selector.is_exact() {
                registry
                    .exact
                    .entry(selector.as_str().to_owned())
                    .or_default()
                    .insert(key);
            } else {
                templates.push(selector.clone());
            }
        }
        if !templates.is_empty() {
            for (topic, keys) in registry.template_matches.iter_mut() {
                if templates.iter().any(|t| t.matches(topic)) {
                    keys.push(key);
                }
            }
            registry.templated.insert(key, templates);
        }
        registry.subscribers.insert(
            key,
            Subscriber {
                queue: tx,
                registration,
            },
        );
        self.metrics.connections.increment(1.0);
        Live {
            key,
            queue: rx,
            dispatched: registry.dispatched,
        }
    }

    /// Removes a subscriber; its stream ends once it has written what it was queued.
    pub(crate) fn unregister(&self, key: u64) {
        if self.lock().remove(key).is_some() {
            self.metrics.connections.decrement(1.0);
        }
    }

    /// Hands an update of the log, already encoded, to every live subscriber it concerns.
    pub(crate) fn dispatch(&self, stored: &Stored, event: &Bytes) {
        let mut registry = self.lock();
        registry.dispatched = stored.position;
        registry.last_event_id = Some(stored.update.id.clone());
        let targets = registry.targets(&stored.update);
        self.deliver(
            &mut registry,
            targets,
            &stored.update,
            stored.position,
            || event.clone(),
        );
    }

    /// Hands an update that is not in the log (a subscription event) to the live
    /// subscribers it concerns, queued as [`LIVE_ONLY`]. It is encoded only if one
    /// of them may receive it, and without an `id`, so that a client's last event ID
    /// keeps naming the last update of the log.
    pub(crate) fn notify(&self, update: &Update) {
        let mut registry = self.lock();
        let targets = registry.targets(update);
        let mut encoded = None;
        self.deliver(&mut registry, targets, update, LIVE_ONLY, || {
            encoded
                .get_or_insert_with(|| crate::event::encode_live(update))
                .clone()
        });
    }

    /// Queues `event()` for each of `targets` that may receive `update`; disconnects
    /// those whose queue is full.
    fn deliver(
        &self,
        registry: &mut Registry,
        targets: Vec<u64>,
        update: &Update,
        position: u64,
        mut event: impl FnMut() -> Bytes,
    ) {
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        for key in targets {
            let Some(subscriber) = registry.subscribers.get(&key) else {
                continue;
            };
            if !subscriber.registration.may_receive(update) {
                continue;
            }
            match subscriber.queue.try_send((position, event())) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(key),
                // The connection is gone and about to unregister itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for key in slow {
            if registry.remove(key).is_some() {
                self.metrics.connections.decrement(1.0);
                self.metrics.slow_disconnects.increment(1);
                tracing::info!(subscriber = key, "slow subscriber disconnected: queue full");
            }
        }
        self.metrics.deliveries.increment(delivered);
    }

    /// The id of the last update dispatched, if any since the hub started with an
    /// empty history.
    pub(crate) fn last_event_id(&self) -> Option<String> {
        self.lock().last_event_id.clone()
    }

    /// Seeds the last event id from history when the hub starts.
    pub(crate) fn set_last_event_id(&self, id: Option<String>) {
        self.lock().last_event_id = id;
    }

    /// Every live subscriber, for the subscriptions API.
    pub(crate) fn subscribers(&self) -> Vec<Arc<SubscriberInfo>> {
        self.lock()
            .subscribers
            .values()
            .map(|s| Arc::clone(&s.registration.info))
            .collect()
    }

    /// How many subscribers are registered.
    pub(crate) fn len(&self) -> usize {
        self.lock().subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(selectors: &[&str], private: Option<&[&str]>) -> Arc<Registration> {
        Arc::new(Registration {
            info: Arc::new(SubscriberInfo {
                id: "urn:uuid:test".into(),
                topics: selectors.iter().map(|s| s.to_string()).collect(),
                payload: None,
            }),
            selectors: selectors.iter().map(|s| Selector::new(s)).collect(),
            private: private.map(|p| SelectorSet::new(p.iter().copied())),
        })
    }

    fn stored(position: u64, topics: &[&str], private: bool) -> Stored {
        Stored {
            position,
            update: Arc::new(Update {
                id: format!("id-{position}"),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                data: String::new(),
                private,
                event_type: None,
                retry: None,
            }),
        }
    }

    fn received(live: &mut Live) -> Vec<u64> {
        let mut positions = Vec::new();
        while let Ok((position, _)) = live.queue.try_recv() {
            positions.push(position);
        }
        positions
    }

    fn send(fanout: &Fanout, position: u64, topics: &[&str], private: bool) {
        fanout.dispatch(&stored(position, topics, private), &Bytes::new());
    }

    #[test]
    fn routes_by_exact_wildcard_and_template_once_each() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let mut exact = fanout.register(registration(&["/a/1"], None));
        let mut all = fanout.register(registration(&["*", "/a/1", "/a/{x}"], None));
        let mut template = fanout.register(registration(&["/a/{x}"], None));
        let mut other = fanout.register(registration(&["/b/1"], None));
        send(&fanout, 1, &["/a/1", "/a/2"], false);
        send(&fanout, 2, &["/a/2"], false);
        send(&fanout, 3, &["/c"], false);
        assert_eq!(received(&mut exact), [1]);
        assert_eq!(received(&mut all), [1, 2, 3]);
        assert_eq!(received(&mut template), [1, 2]);
        assert_eq!(received(&mut other), Vec::<u64>::new());
    }

    #[test]
    fn template_cache_follows_subscribers() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let mut early = fanout.register(registration(&["/a/{x}"], None));
        send(&fanout, 1, &["/a/1"], false); // caches /a/1 → [early]
        let mut late = fanout.register(registration(&["/{p}/1"], None));
        send(&fanout, 2, &["/a/1"], false);
        assert_eq!(received(&mut early), [1, 2]);
        assert_eq!(
            received(&mut late),
            [2],
            "a new template joins cached topics"
        );
        fanout.unregister(early.key);
        send(&fanout, 3, &["/a/1"], false);
        assert_eq!(received(&mut late), [3]);
        assert!(early.queue.try_recv().is_err());
        assert_eq!(fanout.len(), 1);
    }

    #[test]
    fn private_updates_need_a_matching_claim() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let mut anonymous = fanout.register(registration(&["*"], None));
        let mut unrelated = fanout.register(registration(&["*"], Some(&["/b/{x}"])));
        let mut allowed = fanout.register(registration(&["/a/1"], Some(&["/a/{x}"])));
        send(&fanout, 1, &["/a/1"], true);
        send(&fanout, 2, &["/a/1"], false);
        assert_eq!(received(&mut anonymous), [2]);
        assert_eq!(received(&mut unrelated), [2]);
        assert_eq!(received(&mut allowed), [1, 2]);
    }

    #[test]
    fn full_queue_disconnects_the_subscriber_after_what_it_holds() {
        let metrics = Metrics::new();
        let fanout = Fanout::new(2, metrics.clone(), 0);
        let mut slow = fanout.register(registration(&["t"], None));
        for position in 1..=5 {
            send(&fanout, position, &["t"], false);
        }
        assert_eq!(fanout.len(), 0);
        assert_eq!(received(&mut slow), [1, 2]);
        assert!(matches!(
            slow.queue.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(
            metrics
                .render()
                .contains("tidings_slow_subscriber_disconnects_total 1")
        );
    }

    #[test]
    fn registration_reports_what_was_dispatched_before_it() {
        let fanout = Fanout::new(4, Metrics::new(), 7);
        assert_eq!(fanout.register(registration(&["t"], None)).dispatched, 7);
        send(&fanout, 8, &["t"], false);
        assert_eq!(fanout.register(registration(&["t"], None)).dispatched, 8);
        assert_eq!(fanout.last_event_id().as_deref(), Some("id-8"));
    }
}
