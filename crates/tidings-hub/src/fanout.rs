//! The registry of live subscribers and the delivery of each update to the ones it
//! concerns.
//!
//! Finding the subscribers of an update does not scan every subscriber: exact selectors
//! are indexed by topic, `*` subscribers are kept apart, and template subscribers are
//! grouped by template text, each template matched once for all its subscribers. Which
//! templates match a topic is computed once per topic and cached as template ids; each
//! template remembers the cached topics it is listed under. Template ids only grow, and
//! a cached topic remembers up to which id it was tried, so a new template is tried
//! against a cached topic when that topic is next dispatched, not when the template is
//! registered. So registering a subscriber touches no cached topic, and removing the
//! last subscriber of a template touches only the topics that template matched, never
//! the whole cache. Each subscriber has a bounded queue;
//! one whose queue is full is dropped from the registry, which ends its stream once it
//! has written what it was given; it then resumes from history.
//!
//! The registry sits behind a `std` mutex: every operation under it is short and never
//! awaits (queueing uses `try_send`), so an async lock would only add cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::http::SUBSCRIPTIONS_PATH;
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

/// Keeps the topic → templates cache from growing without bound on hubs whose topics are
/// all different: when full, it is cleared and rebuilt on demand (clearing costs one pass
/// over what it holds once per this many new topics; tracking recency would cost on
/// every update instead).
const TEMPLATE_CACHE_TOPICS: usize = 16_384;
/// The same cache's bound on template ids held in all (8 MiB of them), so that many
/// templates matching many topics cannot grow it either.
const TEMPLATE_CACHE_IDS: usize = 1 << 20;

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

/// The subscribers of one template, matched once for all of them.
struct TemplateGroup {
    selector: Selector,
    subscribers: HashSet<u64>,
    /// The cached topics whose entry lists this template.
    cached_under: Vec<Arc<str>>,
}

/// Which templates match a cached topic.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TopicEntry {
    /// The ids of the matching templates.
    ids: Vec<u64>,
    /// Every template with a smaller id was tried. Templates registered later are tried
    /// when the topic is next dispatched, so registering touches no cached topic.
    tried_below: u64,
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    subscribers: HashMap<u64, Subscriber>,
    exact: HashMap<String, HashSet<u64>>,
    wildcard: HashSet<u64>,
    next_template: u64,
    /// Template text → its id in `groups`.
    template_ids: HashMap<Arc<str>, u64>,
    /// Template id → the template and its subscribers. Ids only grow, so the templates
    /// registered after a point are a range.
    groups: BTreeMap<u64, TemplateGroup>,
    /// Topic → the templates that match it.
    topic_templates: HashMap<Arc<str>, TopicEntry>,
    /// How many template ids `topic_templates` holds in all (bounded, like its topics).
    cached_ids: usize,
    /// The subscribers that may receive subscription events: a token with
    /// `mercure.subscribe` and a selector that can match a subscription topic. Those
    /// events are private, so nobody else is ever a target of one.
    watchers: HashSet<u64>,
    /// The position of the last update handed to the registry.
    dispatched: u64,
    /// The id of that update, for the subscriptions API's `lastEventID`.
    last_event_id: Option<String>,
}

impl Registry {
    /// Makes sure `topic_templates` lists which templates match `topic`: computed once,
    /// then only the templates registered since are tried.
    fn cache_topic(&mut self, topic: &str) {
        let tried_below = match self.topic_templates.get(topic) {
            Some(entry) if entry.tried_below == self.next_template => return,
            Some(entry) => entry.tried_below,
            None => {
                if self.topic_templates.len() >= TEMPLATE_CACHE_TOPICS
                    || self.cached_ids >= TEMPLATE_CACHE_IDS
                {
                    self.topic_templates.clear();
                    self.cached_ids = 0;
                    for group in self.groups.values_mut() {
                        group.cached_under.clear();
                    }
                }
                0
            }
        };
        let topic: Arc<str> = match self.topic_templates.get_key_value(topic) {
            Some((key, _)) => Arc::clone(key),
            None => topic.into(),
        };
        let mut matching = Vec::new();
        for (&id, group) in self.groups.range_mut(tried_below..) {
            if group.selector.matches(&topic) {
                matching.push(id);
                group.cached_under.push(Arc::clone(&topic));
            }
        }
        let entry = self
            .topic_templates
            .entry(topic)
            .or_insert_with(|| TopicEntry {
                ids: Vec::new(),
                tried_below: 0,
            });
        self.cached_ids += matching.len();
        entry.ids.extend(matching);
        entry.tried_below = self.next_template;
    }

    fn add_template(&mut self, selector: &Selector, key: u64) {
        if let Some(id) = self.template_ids.get(selector.as_str()) {
            if let Some(group) = self.groups.get_mut(id) {
                group.subscribers.insert(key);
            }
            return;
        }
        // No cached topic is touched: each tries the new template when next dispatched.
        let id = self.next_template;
        self.next_template += 1;
        self.template_ids.insert(selector.as_str().into(), id);
        self.groups.insert(
            id,
            TemplateGroup {
                selector: selector.clone(),
                subscribers: HashSet::from([key]),
                cached_under: Vec::new(),
            },
        );
    }

    fn remove_template(&mut self, source: &str, key: u64) {
        let Some(&id) = self.template_ids.get(source) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group.subscribers.remove(&key);
        if !group.subscribers.is_empty() {
            return;
        }
        self.template_ids.remove(source);
        if let Some(group) = self.groups.remove(&id) {
            for topic in &group.cached_under {
                if let Some(entry) = self.topic_templates.get_mut(topic) {
                    let before = entry.ids.len();
                    entry.ids.retain(|&other| other != id);
                    self.cached_ids -= before - entry.ids.len();
                }
            }
        }
    }

    /// The subscribers whose selectors match one of the update's topics, each once.
    fn targets(&mut self, update: &Update) -> Vec<u64> {
        let mut targets: Vec<u64> = self.wildcard.iter().copied().collect();
        for topic in &update.topics {
            if let Some(keys) = self.exact.get(topic.as_str()) {
                targets.extend(keys.iter().copied());
            }
            if !self.groups.is_empty() {
                self.cache_topic(topic);
                for id in &self.topic_templates[topic.as_str()].ids {
                    if let Some(group) = self.groups.get(id) {
                        targets.extend(group.subscribers.iter().copied());
                    }
                }
            }
        }
        // A subscriber that matches through several selectors or topics gets one copy.
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// How many template groups registering these selectors would add.
    fn new_templates(&self, selectors: &[Selector]) -> usize {
        let mut new: Vec<&str> = selectors
            .iter()
            .filter(|s| s.is_template() && !self.template_ids.contains_key(s.as_str()))
            .map(Selector::as_str)
            .collect();
        new.sort_unstable();
        new.dedup();
        new.len()
    }

    fn remove(&mut self, key: u64) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&key)?;
        self.watchers.remove(&key);
        for selector in subscriber.registration.selectors.iter() {
            if selector.is_wildcard() {
                self.wildcard.remove(&key);
            } else if selector.is_exact() {
                if let Some(keys) = self.exact.get_mut(selector.as_str()) {
                    keys.remove(&key);
                    if keys.is_empty() {
                        self.exact.remove(selector.as_str());
                    }
                }
            } else {
                self.remove_template(selector.as_str(), key);
            }
        }
        Some(subscriber)
    }
}

/// Whether a selector can match a subscription topic
/// (`/.well-known/mercure/subscriptions/…`): a conservative test, the event's own
/// match decides.
fn may_select_subscription_events(selector: &Selector) -> bool {
    let text = selector.as_str();
    if selector.is_wildcard() || text.starts_with(SUBSCRIPTIONS_PATH) {
        return true;
    }
    selector.is_template() && SUBSCRIPTIONS_PATH.starts_with(&text[..text.find('{').unwrap_or(0)])
}

/// Why a subscriber was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The hub has as many subscribers as it accepts.
    #[error("too many subscribers: this hub accepts at most {0} at once")]
    Subscribers(usize),
    /// Its templates would take the hub past its number of distinct live templates.
    #[error(
        "too many distinct topic templates in use: this hub matches at most {0} at once; use a template that is already in use or an exact topic"
    )]
    Templates(usize),
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
    max_subscribers: usize,
    max_templates: usize,
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
            max_subscribers: usize::MAX,
            max_templates: usize::MAX,
            metrics,
        }
    }

    /// Caps the subscribers registered at once and the distinct templates they use
    /// (every new topic is matched against each distinct template, under the lock).
    pub(crate) fn with_limits(mut self, max_subscribers: usize, max_templates: usize) -> Self {
        self.max_subscribers = max_subscribers;
        self.max_templates = max_templates;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-updated in a way
        // that matters more than stopping the hub would, so keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber for live updates, unless a cap says no.
    pub(crate) fn register(&self, registration: Arc<Registration>) -> Result<Live, Refused> {
        let mut registry = self.lock();
        if registry.subscribers.len() >= self.max_subscribers {
            return Err(Refused::Subscribers(self.max_subscribers));
        }
        let new_templates = registry.new_templates(&registration.selectors);
        if new_templates > 0 && registry.groups.len() + new_templates > self.max_templates {
            return Err(Refused::Templates(self.max_templates));
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let key = registry.next_key;
        registry.next_key += 1;
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
                registry.add_template(selector, key);
            }
        }
        if registration.private.is_some()
            && registration
                .selectors
                .iter()
                .any(may_select_subscription_events)
        {
            registry.watchers.insert(key);
        }
        registry.subscribers.insert(
            key,
            Subscriber {
                queue: tx,
                registration,
            },
        );
        self.metrics.connections.increment(1.0);
        Ok(Live {
            key,
            queue: rx,
            dispatched: registry.dispatched,
        })
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

    /// Hands an update that is not in the log ([`Hub::publish_live`](crate::Hub::publish_live))
    /// to the live subscribers it concerns, queued as [`LIVE_ONLY`]: see
    /// [`Fanout::deliver_live`].
    pub(crate) fn notify(&self, update: &Update) {
        let mut registry = self.lock();
        let targets = registry.targets(update);
        self.deliver_live(&mut registry, targets, update);
    }

    /// Hands a subscription event to the subscribers that may receive it. It is matched
    /// against the watchers only, not through the topic indexes: subscription topics are
    /// new every time, and connect-and-close churn must cost neither a pass over every
    /// `*` subscriber nor a place in the template cache. Subscription events are private,
    /// so no subscriber outside the watchers could receive one.
    pub(crate) fn notify_subscription(&self, update: &Update) {
        let mut registry = self.lock();
        if registry.watchers.is_empty() {
            return;
        }
        let targets = registry
            .watchers
            .iter()
            .copied()
            .filter(|key| {
                registry
                    .subscribers
                    .get(key)
                    .is_some_and(|s| s.registration.selects(update))
            })
            .collect();
        self.deliver_live(&mut registry, targets, update);
    }

    /// Queues an update that is not in the log for `targets`, as [`LIVE_ONLY`], encoded
    /// only if one of them may receive it, and without an `id`, so that a client's last
    /// event ID keeps naming the last update of the log.
    fn deliver_live(&self, registry: &mut Registry, targets: Vec<u64>, update: &Update) {
        let mut encoded = None;
        self.deliver(registry, targets, update, LIVE_ONLY, || {
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
        let mut exact = fanout.register(registration(&["/a/1"], None)).unwrap();
        let mut all = fanout
            .register(registration(&["*", "/a/1", "/a/{x}"], None))
            .unwrap();
        let mut template = fanout.register(registration(&["/a/{x}"], None)).unwrap();
        let mut other = fanout.register(registration(&["/b/1"], None)).unwrap();
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
        let mut early = fanout.register(registration(&["/a/{x}"], None)).unwrap();
        send(&fanout, 1, &["/a/1"], false); // caches /a/1 → [early]
        let mut late = fanout.register(registration(&["/{p}/1"], None)).unwrap();
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
        let mut anonymous = fanout.register(registration(&["*"], None)).unwrap();
        let mut unrelated = fanout
            .register(registration(&["*"], Some(&["/b/{x}"])))
            .unwrap();
        let mut allowed = fanout
            .register(registration(&["/a/1"], Some(&["/a/{x}"])))
            .unwrap();
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
        let mut slow = fanout.register(registration(&["t"], None)).unwrap();
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
        assert_eq!(
            fanout
                .register(registration(&["t"], None))
                .unwrap()
                .dispatched,
            7
        );
        send(&fanout, 8, &["t"], false);
        assert_eq!(
            fanout
                .register(registration(&["t"], None))
                .unwrap()
                .dispatched,
            8
        );
        assert_eq!(fanout.last_event_id().as_deref(), Some("id-8"));
    }

    impl Registry {
        /// Checks the template index against the subscribers it was built from.
        fn check_template_index(&self) {
            for (text, id) in &self.template_ids {
                let group = &self.groups[id];
                assert_eq!(group.selector.as_str(), &**text);
                assert!(!group.subscribers.is_empty(), "an empty group is removed");
                for key in &group.subscribers {
                    let registration = &self.subscribers[key].registration;
                    assert!(registration.selectors.iter().any(|s| s.as_str() == &**text));
                }
                for topic in &group.cached_under {
                    assert!(self.topic_templates[topic].ids.contains(id));
                }
            }
            assert_eq!(self.template_ids.len(), self.groups.len());
            for (topic, entry) in &self.topic_templates {
                assert!(entry.tried_below <= self.next_template);
                for id in &entry.ids {
                    let group = self.groups.get(id).expect("no id of a removed template");
                    assert!(group.selector.matches(topic));
                    assert!(group.cached_under.contains(topic));
                    assert!(*id < entry.tried_below);
                }
                for (id, group) in self.groups.range(..entry.tried_below) {
                    assert_eq!(
                        group.selector.matches(topic),
                        entry.ids.contains(id),
                        "{topic}"
                    );
                }
            }
        }
    }

    #[test]
    fn unregistering_among_many_templates_keeps_routing_exact() {
        let fanout = Fanout::new(64, Metrics::new(), 0);
        let topics: Vec<String> = (0..20).map(|i| format!("/m/{}/{}", i % 5, i)).collect();
        let mut subscribers = Vec::new();
        for i in 0..60 {
            // 30 distinct templates, each held by two subscribers; some match every
            // topic, some a fifth of them, some none.
            let template = match i % 30 {
                n if n < 10 => format!("/m/{}/{{id{n}}}", n % 5),
                n if n < 20 => format!("/m/{{a}}/{{b}}{{?x{n}}}"),
                n => format!("/none/{n}/{{id}}"),
            };
            let selectors = [template.as_str(), "/m/0/0"];
            let registration = registration(&selectors, None);
            let live = fanout.register(Arc::clone(&registration)).unwrap();
            subscribers.push((registration, live));
        }
        let mut position = 0;
        let mut check_delivery =
            |fanout: &Fanout, subscribers: &mut Vec<(Arc<Registration>, Live)>| {
                for topic in &topics {
                    position += 1;
                    send(fanout, position, &[topic], false);
                    let update = stored(position, &[topic], false).update;
                    for (registration, live) in subscribers.iter_mut() {
                        let got = received(live);
                        let expected: Vec<u64> = if registration.selects(&update) {
                            vec![position]
                        } else {
                            vec![]
                        };
                        assert_eq!(got, expected, "{topic} for {:?}", registration.info.topics);
                    }
                }
                fanout.lock().check_template_index();
            };
        check_delivery(&fanout, &mut subscribers);
        // Remove one subscriber of each template first (the groups stay), then the
        // other (the groups go), checking routing after each round.
        for round in 0..2 {
            let mut kept = Vec::new();
            for (i, (registration, live)) in subscribers.into_iter().enumerate() {
                if round == 1 || i < 30 {
                    fanout.unregister(live.key);
                } else {
                    kept.push((registration, live));
                }
            }
            subscribers = kept;
            check_delivery(&fanout, &mut subscribers);
            let registry = fanout.lock();
            let expected_groups = if round == 0 { 30 } else { 0 };
            assert_eq!(registry.groups.len(), expected_groups);
        }
        let registry = fanout.lock();
        assert!(registry.topic_templates.values().all(|e| e.ids.is_empty()));
        assert!(registry.exact.is_empty());
    }

    #[test]
    fn a_subscriber_of_a_known_template_touches_no_cached_topic() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let mut first = fanout.register(registration(&["/k/{id}"], None)).unwrap();
        send(&fanout, 1, &["/k/1"], false);
        send(&fanout, 2, &["/k/2"], false);
        let before = fanout.lock().topic_templates.clone();
        let mut second = fanout.register(registration(&["/k/{id}"], None)).unwrap();
        assert_eq!(fanout.lock().topic_templates, before);
        fanout.unregister(first.key);
        assert_eq!(fanout.lock().topic_templates, before, "the template stays");
        send(&fanout, 3, &["/k/1"], false);
        assert_eq!(received(&mut first), [1, 2]);
        assert_eq!(received(&mut second), [3]);
        fanout.unregister(second.key);
        let registry = fanout.lock();
        assert!(registry.groups.is_empty() && registry.template_ids.is_empty());
        assert!(registry.topic_templates.values().all(|e| e.ids.is_empty()));
    }

    #[test]
    fn a_new_template_touches_no_cached_topic_until_the_topic_comes_again() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let _early = fanout.register(registration(&["/n/{id}"], None)).unwrap();
        for position in 1..=3 {
            send(&fanout, position, &[&format!("/n/{position}")], false);
        }
        let before = fanout.lock().topic_templates.clone();
        let mut late = fanout
            .register(registration(&["/{section}/2"], None))
            .unwrap();
        assert_eq!(fanout.lock().topic_templates, before);
        send(&fanout, 4, &["/n/2"], false);
        assert_eq!(received(&mut late), [4]);
        let registry = fanout.lock();
        assert_eq!(registry.topic_templates["/n/2"].ids.len(), 2);
        assert_eq!(
            registry.topic_templates["/n/1"], before["/n/1"],
            "not dispatched again"
        );
        registry.check_template_index();
    }

    #[test]
    fn the_topic_cache_is_cleared_when_full_and_rebuilt() {
        let fanout = Fanout::new(4, Metrics::new(), 0);
        let mut subscriber = fanout.register(registration(&["/c/{id}"], None)).unwrap();
        for position in 1..=(TEMPLATE_CACHE_TOPICS as u64 + 10) {
            send(&fanout, position, &[&format!("/c/{position}")], false);
            assert_eq!(received(&mut subscriber), [position]);
        }
        let registry = fanout.lock();
        assert!(registry.topic_templates.len() <= TEMPLATE_CACHE_TOPICS);
        assert!(
            registry
                .groups
                .values()
                .all(|g| g.cached_under.len() <= TEMPLATE_CACHE_TOPICS)
        );
        registry.check_template_index();
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        const TEMPLATES: &[&str] = &["/p/{id}", "/p/{a}{/b}", "{+any}", "/q/{id}", "/p/1"];
        const TOPICS: &[&str] = &["/p/1", "/p/2", "/p/1/x", "/q/1", "/r"];

        #[derive(Clone, Debug)]
        enum Op {
            Register(Vec<usize>),
            Unregister(usize),
            Send(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                proptest::collection::vec(0..TEMPLATES.len(), 1..3).prop_map(Op::Register),
                any::<usize>().prop_map(Op::Unregister),
                (0..TOPICS.len()).prop_map(Op::Send),
            ]
        }

        proptest! {
            #[test]
            fn routing_matches_a_scan_of_every_subscriber(ops in proptest::collection::vec(op(), 1..60)) {
                let fanout = Fanout::new(1024, Metrics::new(), 0);
                let mut live: Vec<(Arc<Registration>, Live)> = Vec::new();
                let mut position = 0;
                for op in ops {
                    match op {
                        Op::Register(templates) => {
                            let selectors: Vec<&str> = templates.iter().map(|&i| TEMPLATES[i]).collect();
                            let registration = registration(&selectors, None);
                            let l = fanout.register(Arc::clone(&registration)).unwrap();
                            live.push((registration, l));
                        }
                        Op::Unregister(i) if !live.is_empty() => {
                            let (_, l) = live.remove(i % live.len());
                            fanout.unregister(l.key);
                        }
                        Op::Unregister(_) => {}
                        Op::Send(t) => {
                            position += 1;
                            send(&fanout, position, &[TOPICS[t]], false);
                            let update = stored(position, &[TOPICS[t]], false).update;
                            for (registration, l) in live.iter_mut() {
                                let expected: Vec<u64> = if registration.selects(&update) { vec![position] } else { vec![] };
                                prop_assert_eq!(received(l), expected);
                            }
                        }
                    }
                    fanout.lock().check_template_index();
                }
            }
        }
    }
}
