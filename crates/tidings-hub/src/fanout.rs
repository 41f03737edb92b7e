//! The registry of live subscribers and the delivery of each update to the ones it
//! concerns.
//!
//! **Channels.** Subscribers that would receive exactly the same updates — the same
//! topic selectors and the same `mercure.subscribe` claims (or none) — share one
//! channel. The indexes below route an update to channels, never to subscribers, so an
//! update costs one match and one append per channel it concerns, however many
//! subscribers the channel has. A channel's log of updates is a ring: a singly linked
//! chain of nodes (`(position, Bytes)` and the chain's counts), appended once per update
//! and read by every subscriber of the channel from its own cursor, without a lock that
//! the channel's subscribers share: a reader follows `next` links (set once, read
//! without locking) and moves the cursor it alone uses. A node is freed when the last
//! cursor passes it.
//!
//! **Too slow.** A subscriber more than the queue capacity (in updates) or the lag bound
//! (in bytes) behind its channel's tail is disconnected and resumes from history, as a
//! full queue did before. The reader notices that itself when it reads; for a reader that
//! does not read (its socket does not drain, so its task is not polled), each channel
//! sweeps its readers every quarter of either bound and takes the cursor of one that is
//! too far behind. So the updates held on behalf of one subscriber are bounded by about
//! 1.25 times both bounds, whatever the backlog: the chain from the slowest cursor to the
//! tail, shared by every subscriber of the channel.
//!
//! **Waking.** A reader that has read everything registers its waker; the channel keeps
//! its readers in a slab, and whoever appends wakes the readers of the channels it
//! appended to, after releasing the registry lock. The dispatch task wakes them in
//! chunks and yields between chunks, so that a publisher's reply (woken from the log's
//! writer thread, through the runtime's global queue) is not queued behind ten thousand
//! subscriber tasks.
//!
//! **Matching.** Exact selectors are indexed by topic, `*` channels are kept apart, and
//! template channels are grouped by template text, each template matched once for all
//! its channels. Which templates match a topic is computed once per topic and cached as
//! template ids; each template remembers the cached topics it is listed under. Template
//! ids only grow, and a cached topic remembers up to which id it was tried, so a new
//! template is tried against a cached topic when that topic is next dispatched, not when
//! the template is registered. So registering touches no cached topic, and removing the
//! last channel of a template touches only the topics that template matched, never the
//! whole cache.
//!
//! The registry sits behind a `std` mutex, taken once per update by whoever appends and
//! at registration and removal; readers never take it. Every operation under it is short
//! and never awaits, so an async lock would only add cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::http::SUBSCRIPTIONS_PATH;
use crate::log::{Stored, Update};
use crate::metrics::Metrics;
use crate::topic::{Selector, SelectorSet};

/// What a subscriber reads: the update's position in the log (or [`LIVE_ONLY`]) and its
/// encoded event, shared with every other subscriber of the same update.
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

/// Readers the dispatch task wakes before it yields to the other tasks.
const WAKE_CHUNK: usize = 128;

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

    /// What subscribers share a channel by: the selectors and the claims' selectors, as
    /// sorted sets of their texts.
    fn channel_key(&self) -> ChannelKey {
        fn set<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<Box<str>> {
            let mut set: Vec<Box<str>> = texts.map(Box::from).collect();
            set.sort_unstable();
            set.dedup();
            set
        }
        (
            set(self.selectors.iter().map(Selector::as_str)),
            self.private
                .as_ref()
                .map(|claims| set(claims.iter().map(Selector::as_str))),
        )
    }
}

type ChannelKey = (Vec<Box<str>>, Option<Vec<Box<str>>>);

/// One update in a channel's chain.
struct Node {
    /// Its rank in the channel: the channel's first node (a placeholder) is 0.
    index: u64,
    /// The bytes of the channel's events up to and including this one.
    bytes: u64,
    position: u64,
    event: Bytes,
    /// The next update, set once by the appender, read without a lock.
    next: OnceLock<Arc<Node>>,
}

impl Node {
    fn placeholder() -> Arc<Node> {
        Arc::new(Node {
            index: 0,
            bytes: 0,
            position: LIVE_ONLY,
            event: Bytes::new(),
            next: OnceLock::new(),
        })
    }
}

impl Drop for Node {
    /// Frees a chain of nodes no one holds one by one, not by recursion, so that a long
    /// chain let go at once cannot overflow the stack.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(node) = next {
            next = Arc::into_inner(node).and_then(|mut node| node.next.take());
        }
    }
}

/// A reader's side that its channel sees too.
struct ReaderState {
    /// The subscriber's key in the registry.
    key: u64,
    waker: AtomicWaker,
    /// The last node read; `None` once the sweep found the reader too far behind (the
    /// chain it held is let go at once). Only the reader locks it, save for that sweep.
    cursor: Mutex<Option<Arc<Node>>>,
}

impl ReaderState {
    fn cursor(&self) -> MutexGuard<'_, Option<Arc<Node>>> {
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The readers of a channel, for waking them.
#[derive(Default)]
struct Readers {
    slots: Vec<Option<Arc<ReaderState>>>,
    free: Vec<usize>,
}

impl Readers {
    fn insert(&mut self, reader: Arc<ReaderState>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(reader);
                slot
            }
            None => {
                self.slots.push(Some(reader));
                self.slots.len() - 1
            }
        }
    }

    /// Removes a reader and lets go of what its cursor held: it reads nothing more.
    fn remove(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot)
            && let Some(reader) = entry.take()
        {
            self.free.push(slot);
            let held = reader.cursor().take();
            drop(held);
            reader.waker.wake();
        }
    }
}

/// What a channel's readers share with it: where its tail is, and who to wake.
struct Ring {
    /// The tail's index and byte count, for a reader to tell how far behind it is.
    tail_index: AtomicU64,
    tail_bytes: AtomicU64,
    readers: Mutex<Readers>,
}

impl Ring {
    fn readers(&self) -> MutexGuard<'_, Readers> {
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reader was too far behind its channel: its stream ends, and it resumes from
/// history when it reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lagged;

/// Why a reader has nothing more to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It was too far behind.
    Lagged,
    /// The hub is shutting down: every stream ends.
    ShutDown,
}

/// How far a reader may fall behind.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    updates: u64,
    bytes: u64,
}

impl Bounds {
    fn exceeded(&self, cursor: &Node, tail_index: u64, tail_bytes: u64) -> bool {
        tail_index.saturating_sub(cursor.index) > self.updates
            || tail_bytes.saturating_sub(cursor.bytes) > self.bytes
    }
}

/// One subscriber's cursor in its channel.
pub(crate) struct Reader {
    state: Arc<ReaderState>,
    ring: Arc<Ring>,
    bounds: Bounds,
    /// Set once when the hub shuts down; read without a lock, so that waiting for
    /// shutdown costs a stream no shared lock per wake-up.
    closed: Arc<AtomicBool>,
}

impl Reader {
    /// Waits until there is something to read, or the reader has ended: found too far
    /// behind, or the hub is shutting down.
    pub(crate) async fn ready(&self) -> Result<(), Ended> {
        poll_fn(|cx| {
            let check = || {
                if self.closed.load(Ordering::Acquire) {
                    return Some(Err(Ended::ShutDown));
                }
                match self.state.cursor().as_ref() {
                    None => Some(Err(Ended::Lagged)),
                    Some(node) if node.next.get().is_some() => Some(Ok(())),
                    Some(_) => None,
                }
            };
            if let Some(ready) = check() {
                return Poll::Ready(ready);
            }
            self.state.waker.register(cx.waker());
            // An append or a shutdown between the check and the registration must not
            // be missed.
            match check() {
                Some(ready) => Poll::Ready(ready),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Reads up to `max` updates or until `max_bytes` are reached, in order, handing
    /// each to `each`; how many it read. `Lagged` if the reader is too far behind.
    pub(crate) fn drain(
        &self,
        max: usize,
        max_bytes: usize,
        mut each: impl FnMut(Queued),
    ) -> Result<usize, Lagged> {
        let mut cursor = self.state.cursor();
        let Some(node) = cursor.as_mut() else {
            return Err(Lagged);
        };
        let tail_index = self.ring.tail_index.load(Ordering::Acquire);
        let tail_bytes = self.ring.tail_bytes.load(Ordering::Acquire);
        if self.bounds.exceeded(node, tail_index, tail_bytes) {
            *cursor = None;
            return Err(Lagged);
        }
        // Walk by reference; only the last node read is cloned into the cursor.
        let mut last: &Arc<Node> = node;
        let mut read = 0;
        let mut bytes = 0;
        while read < max && bytes < max_bytes {
            let Some(next) = last.next.get() else { break };
            each((next.position, next.event.clone()));
            read += 1;
            bytes += next.event.len();
            last = next;
        }
        if read > 0 {
            let last = Arc::clone(last);
            *node = last;
        }
        Ok(read)
    }

    /// The next update, waiting for one; `None` when the reader lagged.
    #[cfg(test)]
    pub(crate) async fn recv(&self) -> Option<Queued> {
        self.ready().await.ok()?;
        self.try_recv()
    }

    /// The next update if there is one; `None` also when the reader lagged.
    #[cfg(test)]
    pub(crate) fn try_recv(&self) -> Option<Queued> {
        let mut got = None;
        self.drain(1, usize::MAX, |queued| got = Some(queued))
            .ok()?;
        got
    }
}

/// The channels that were appended to, whose readers are to be woken once the registry
/// lock is released. Reused from one dispatch to the next.
#[derive(Default)]
pub(crate) struct Wakes {
    rings: Vec<Arc<Ring>>,
}

impl Wakes {
    fn add(&mut self, ring: &Arc<Ring>) {
        if !self
            .rings
            .last()
            .is_some_and(|last| Arc::ptr_eq(last, ring))
        {
            self.rings.push(Arc::clone(ring));
        }
    }

    fn dedup(&mut self) {
        self.rings
            .sort_unstable_by_key(|ring| Arc::as_ptr(ring) as usize);
        self.rings.dedup_by(|a, b| Arc::ptr_eq(a, b));
    }

    /// Wakes every reader of the channels, now.
    pub(crate) fn wake_all(&mut self) {
        self.dedup();
        for ring in self.rings.drain(..) {
            for reader in ring.readers().slots.iter().flatten() {
                reader.waker.wake();
            }
        }
    }

    /// Wakes every reader of the channels, [`WAKE_CHUNK`] at a time, yielding to the
    /// runtime in between.
    pub(crate) async fn wake_paced(&mut self) {
        self.dedup();
        let mut rings = std::mem::take(&mut self.rings);
        let mut budget = WAKE_CHUNK;
        for ring in rings.drain(..) {
            let mut from = 0;
            loop {
                let done = {
                    // Slots never move, so the next chunk starts where this one ended; a
                    // reader that joined since started at the tail and needs no wake.
                    let readers = ring.readers();
                    let end = (from + budget).min(readers.slots.len());
                    for reader in readers.slots[from.min(end)..end].iter().flatten() {
                        reader.waker.wake();
                    }
                    budget -= end.saturating_sub(from);
                    from = end;
                    from >= readers.slots.len()
                };
                if budget == 0 {
                    tokio::task::yield_now().await;
                    budget = WAKE_CHUNK;
                }
                if done {
                    break;
                }
            }
        }
        self.rings = rings;
    }
}

/// The subscribers that receive the same updates.
struct Channel {
    /// The first subscriber's registration: its selectors and claims route for all.
    registration: Arc<Registration>,
    key: ChannelKey,
    ring: Arc<Ring>,
    tail: Arc<Node>,
    readers: usize,
    /// Appends and bytes since the readers were last swept for laggards.
    since_sweep: u64,
    bytes_at_sweep: u64,
}

impl Channel {
    /// Appends an event; the keys of readers found too far behind go to `slow`.
    fn push(&mut self, position: u64, event: Bytes, bounds: Bounds, slow: &mut Vec<u64>) {
        let node = Arc::new(Node {
            index: self.tail.index + 1,
            bytes: self.tail.bytes + event.len() as u64,
            position,
            event,
            next: OnceLock::new(),
        });
        let _ = self.tail.next.set(Arc::clone(&node));
        self.tail = node;
        self.ring
            .tail_index
            .store(self.tail.index, Ordering::Release);
        self.ring
            .tail_bytes
            .store(self.tail.bytes, Ordering::Release);
        self.since_sweep += 1;
        if self.since_sweep >= (bounds.updates / 4).max(1)
            || self.tail.bytes - self.bytes_at_sweep >= (bounds.bytes / 4).max(1)
        {
            self.since_sweep = 0;
            self.bytes_at_sweep = self.tail.bytes;
            self.sweep(bounds, slow);
        }
    }

    /// Takes the cursor of every reader too far behind (so the chain it held is freed),
    /// wakes it so that its stream ends when next polled, and lists it in `slow`.
    fn sweep(&self, bounds: Bounds, slow: &mut Vec<u64>) {
        let readers = self.ring.readers();
        for reader in readers.slots.iter().flatten() {
            let mut cursor = reader.cursor();
            let behind = cursor
                .as_ref()
                .is_some_and(|node| bounds.exceeded(node, self.tail.index, self.tail.bytes));
            if behind {
                let held = cursor.take();
                drop(cursor);
                drop(held);
                reader.waker.wake();
                slow.push(reader.key);
            }
        }
    }
}

struct Subscriber {
    registration: Arc<Registration>,
    channel: u64,
    /// Its place among the channel's readers.
    slot: usize,
}

/// The channels of one template, matched once for all of them.
struct TemplateGroup {
    selector: Selector,
    channels: HashSet<u64>,
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
    next_channel: u64,
    channels: HashMap<u64, Channel>,
    channel_ids: HashMap<ChannelKey, u64>,
    /// Exact topic → the channels that select it.
    exact: HashMap<String, HashSet<u64>>,
    wildcard: HashSet<u64>,
    next_template: u64,
    /// Template text → its id in `groups`.
    template_ids: HashMap<Arc<str>, u64>,
    /// Template id → the template and its channels. Ids only grow, so the templates
    /// registered after a point are a range.
    groups: BTreeMap<u64, TemplateGroup>,
    /// Topic → the templates that match it.
    topic_templates: HashMap<Arc<str>, TopicEntry>,
    /// How many template ids `topic_templates` holds in all (bounded, like its topics).
    cached_ids: usize,
    /// The channels that may receive subscription events: a token with
    /// `mercure.subscribe` and a selector that can match a subscription topic. Those
    /// events are private, so no other channel is ever a target of one.
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

    fn add_template(&mut self, selector: &Selector, channel: u64) {
        if let Some(id) = self.template_ids.get(selector.as_str()) {
            if let Some(group) = self.groups.get_mut(id) {
                group.channels.insert(channel);
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
                channels: HashSet::from([channel]),
                cached_under: Vec::new(),
            },
        );
    }

    fn remove_template(&mut self, source: &str, channel: u64) {
        let Some(&id) = self.template_ids.get(source) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group.channels.remove(&channel);
        if !group.channels.is_empty() {
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

    /// The channels whose selectors match one of the update's topics, each once.
    fn targets(&mut self, update: &Update) -> Vec<u64> {
        let mut targets: Vec<u64> = self.wildcard.iter().copied().collect();
        for topic in &update.topics {
            if let Some(ids) = self.exact.get(topic.as_str()) {
                targets.extend(ids.iter().copied());
            }
            if !self.groups.is_empty() {
                self.cache_topic(topic);
                for id in &self.topic_templates[topic.as_str()].ids {
                    if let Some(group) = self.groups.get(id) {
                        targets.extend(group.channels.iter().copied());
                    }
                }
            }
        }
        // A channel that matches through several selectors or topics gets one copy. The
        // count is of channels, not of subscribers.
        if targets.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
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

    /// A new channel for subscribers registered like `registration`, in the indexes.
    fn add_channel(&mut self, registration: &Arc<Registration>, key: ChannelKey) -> u64 {
        let id = self.next_channel;
        self.next_channel += 1;
        for selector in registration.selectors.iter() {
            if selector.is_wildcard() {
                self.wildcard.insert(id);
            } else if selector.is_exact() {
                self.exact
                    .entry(selector.as_str().to_owned())
                    .or_default()
                    .insert(id);
            } else {
                self.add_template(selector, id);
            }
        }
        if registration.private.is_some()
            && registration
                .selectors
                .iter()
                .any(may_select_subscription_events)
        {
            self.watchers.insert(id);
        }
        let tail = Node::placeholder();
        self.channel_ids.insert(key.clone(), id);
        self.channels.insert(
            id,
            Channel {
                registration: Arc::clone(registration),
                key,
                ring: Arc::new(Ring {
                    tail_index: AtomicU64::new(tail.index),
                    tail_bytes: AtomicU64::new(tail.bytes),
                    readers: Mutex::new(Readers::default()),
                }),
                tail,
                readers: 0,
                since_sweep: 0,
                bytes_at_sweep: 0,
            },
        );
        id
    }

    fn remove_channel(&mut self, id: u64) {
        let Some(channel) = self.channels.remove(&id) else {
            return;
        };
        self.channel_ids.remove(&channel.key);
        self.watchers.remove(&id);
        for selector in channel.registration.selectors.iter() {
            if selector.is_wildcard() {
                self.wildcard.remove(&id);
            } else if selector.is_exact() {
                if let Some(ids) = self.exact.get_mut(selector.as_str()) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.exact.remove(selector.as_str());
                    }
                }
            } else {
                self.remove_template(selector.as_str(), id);
            }
        }
    }

    fn remove(&mut self, key: u64) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&key)?;
        if let Some(channel) = self.channels.get_mut(&subscriber.channel) {
            channel.ring.readers().remove(subscriber.slot);
            channel.readers -= 1;
            if channel.readers == 0 {
                self.remove_channel(subscriber.channel);
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
    /// Its cursor: updates after `dispatched`, in log order.
    pub(crate) reader: Reader,
    /// The position of the last update dispatched before it was registered: history up
    /// to here comes from the log, everything after from the reader.
    pub(crate) dispatched: u64,
}

/// The default bound, in bytes of events, on how far a subscriber may fall behind its
/// channel before it is disconnected.
pub(crate) const DEFAULT_LAG_BYTES: usize = 64 * 1024 * 1024;

/// The registry of live subscribers.
pub(crate) struct Fanout {
    registry: Mutex<Registry>,
    /// Set by [`Fanout::shut_down`].
    closed: Arc<AtomicBool>,
    bounds: Bounds,
    max_subscribers: usize,
    max_templates: usize,
    metrics: Metrics,
}

impl Fanout {
    /// A fan-out whose subscribers may fall `queue_capacity` updates behind.
    pub(crate) fn new(queue_capacity: usize, metrics: Metrics, dispatched: u64) -> Self {
        Self {
            registry: Mutex::new(Registry {
                dispatched,
                ..Registry::default()
            }),
            closed: Arc::new(AtomicBool::new(false)),
            bounds: Bounds {
                updates: queue_capacity.max(1) as u64,
                bytes: DEFAULT_LAG_BYTES as u64,
            },
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

    /// How many bytes of events a subscriber may fall behind before it is disconnected.
    pub(crate) fn with_lag_bytes(mut self, bytes: usize) -> Self {
        self.bounds.bytes = bytes.max(1) as u64;
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
        let channel_key = registration.channel_key();
        let channel = match registry.channel_ids.get(&channel_key) {
            Some(&id) => id,
            None => {
                let new_templates = registry.new_templates(&registration.selectors);
                if new_templates > 0 && registry.groups.len() + new_templates > self.max_templates {
                    return Err(Refused::Templates(self.max_templates));
                }
                registry.add_channel(&registration, channel_key)
            }
        };
        let key = registry.next_key;
        registry.next_key += 1;
        let dispatched = registry.dispatched;
        let entry = registry.channels.get_mut(&channel).expect("just found");
        let state = Arc::new(ReaderState {
            key,
            waker: AtomicWaker::new(),
            cursor: Mutex::new(Some(Arc::clone(&entry.tail))),
        });
        let slot = entry.ring.readers().insert(Arc::clone(&state));
        entry.readers += 1;
        let reader = Reader {
            state,
            ring: Arc::clone(&entry.ring),
            bounds: self.bounds,
            closed: Arc::clone(&self.closed),
        };
        registry.subscribers.insert(
            key,
            Subscriber {
                registration,
                channel,
                slot,
            },
        );
        self.metrics.connections.increment(1.0);
        Ok(Live {
            key,
            reader,
            dispatched,
        })
    }

    /// Ends every reader, now and from now on (the hub is shutting down): each is woken
    /// and finds [`Ended::ShutDown`].
    pub(crate) fn shut_down(&self) {
        self.closed.store(true, Ordering::Release);
        let mut wakes = Wakes::default();
        for channel in self.lock().channels.values() {
            wakes.add(&channel.ring);
        }
        wakes.wake_all();
    }

    /// Removes a subscriber.
    pub(crate) fn unregister(&self, key: u64) {
        if self.lock().remove(key).is_some() {
            self.metrics.connections.decrement(1.0);
        }
    }

    /// Removes a subscriber that found itself too far behind, and counts it.
    pub(crate) fn lagged(&self, key: u64) {
        let removed = self.lock().remove(key).is_some();
        if removed {
            self.count_slow(key);
        }
    }

    fn count_slow(&self, key: u64) {
        self.metrics.connections.decrement(1.0);
        self.metrics.slow_disconnects.increment(1);
        tracing::info!(
            subscriber = key,
            "slow subscriber disconnected: too far behind"
        );
    }

    /// Hands an update of the log, already encoded, to every channel it concerns; the
    /// channels to wake go to `wakes`.
    pub(crate) fn dispatch(&self, stored: &Stored, event: &Bytes, wakes: &mut Wakes) {
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
            wakes,
        );
    }

    /// Hands an update that is not in the log ([`Hub::publish_live`](crate::Hub::publish_live))
    /// to the live subscribers it concerns, as [`LIVE_ONLY`]: see
    /// [`Fanout::deliver_live`].
    pub(crate) fn notify(&self, update: &Update) {
        let mut wakes = Wakes::default();
        {
            let mut registry = self.lock();
            let targets = registry.targets(update);
            self.deliver_live(&mut registry, targets, update, &mut wakes);
        }
        wakes.wake_all();
    }

    /// Hands a subscription event to the subscribers that may receive it. It is matched
    /// against the watchers only, not through the topic indexes: subscription topics are
    /// new every time, and connect-and-close churn must cost neither a pass over every
    /// `*` channel nor a place in the template cache. Subscription events are private,
    /// so no channel outside the watchers could receive one.
    pub(crate) fn notify_subscription(&self, update: &Update) {
        let mut wakes = Wakes::default();
        {
            let mut registry = self.lock();
            if registry.watchers.is_empty() {
                return;
            }
            let targets = registry
                .watchers
                .iter()
                .copied()
                .filter(|id| {
                    registry
                        .channels
                        .get(id)
                        .is_some_and(|c| c.registration.selects(update))
                })
                .collect();
            self.deliver_live(&mut registry, targets, update, &mut wakes);
        }
        wakes.wake_all();
    }

    /// Appends an update that is not in the log to `targets`, as [`LIVE_ONLY`], encoded
    /// only if one of them may receive it, and without an `id`, so that a client's last
    /// event ID keeps naming the last update of the log.
    fn deliver_live(
        &self,
        registry: &mut Registry,
        targets: Vec<u64>,
        update: &Update,
        wakes: &mut Wakes,
    ) {
        let mut encoded = None;
        self.deliver(
            registry,
            targets,
            update,
            LIVE_ONLY,
            || {
                encoded
                    .get_or_insert_with(|| crate::event::encode_live(update))
                    .clone()
            },
            wakes,
        );
    }

    /// Appends `event()` to each of the channels `targets` that may receive `update`;
    /// disconnects the readers found too far behind.
    fn deliver(
        &self,
        registry: &mut Registry,
        targets: Vec<u64>,
        update: &Update,
        position: u64,
        mut event: impl FnMut() -> Bytes,
        wakes: &mut Wakes,
    ) {
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        for id in targets {
            let Some(channel) = registry.channels.get_mut(&id) else {
                continue;
            };
            if !channel.registration.may_receive(update) {
                continue;
            }
            channel.push(position, event(), self.bounds, &mut slow);
            delivered += channel.readers as u64;
            wakes.add(&channel.ring);
        }
        for key in slow {
            if registry.remove(key).is_some() {
                self.count_slow(key);
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
        while let Some((position, _)) = live.reader.try_recv() {
            positions.push(position);
        }
        positions
    }

    fn send(fanout: &Fanout, position: u64, topics: &[&str], private: bool) {
        let mut wakes = Wakes::default();
        fanout.dispatch(
            &stored(position, topics, private),
            &Bytes::new(),
            &mut wakes,
        );
        wakes.wake_all();
    }

    fn send_bytes(fanout: &Fanout, position: u64, topics: &[&str], event: Bytes) {
        let mut wakes = Wakes::default();
        fanout.dispatch(&stored(position, topics, false), &event, &mut wakes);
        wakes.wake_all();
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
        assert!(early.reader.try_recv().is_none());
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
    fn a_subscriber_too_far_behind_is_disconnected_even_if_it_never_reads() {
        let metrics = Metrics::new();
        let fanout = Fanout::new(2, metrics.clone(), 0);
        let mut slow = fanout.register(registration(&["t"], None)).unwrap();
        let mut fast = fanout.register(registration(&["t"], None)).unwrap();
        for position in 1..=5 {
            send(&fanout, position, &["t"], false);
            assert_eq!(received(&mut fast), [position]);
        }
        // The sweep took it out while it was not reading.
        assert_eq!(fanout.len(), 1);
        assert_eq!(slow.reader.drain(64, usize::MAX, |_| {}), Err(Lagged));
        assert!(received(&mut slow).is_empty());
        assert!(
            metrics
                .render()
                .contains("tidings_slow_subscriber_disconnects_total 1")
        );
        // Its cursor is gone, so nothing it was behind on is held for it.
        assert!(slow.reader.state.cursor().is_none());
    }

    #[test]
    fn the_bound_in_bytes_disconnects_too() {
        let metrics = Metrics::new();
        let fanout = Fanout::new(1024, metrics.clone(), 0).with_lag_bytes(100);
        let slow = fanout.register(registration(&["t"], None)).unwrap();
        // 30 bytes each: past a quarter of the bound, so every append sweeps.
        for position in 1..=3 {
            send_bytes(&fanout, position, &["t"], Bytes::from(vec![b'x'; 30]));
        }
        assert_eq!(fanout.len(), 1, "90 bytes behind is within the bound");
        assert_eq!(slow.reader.drain(1, usize::MAX, |_| {}), Ok(1));
        for position in 4..=7 {
            send_bytes(&fanout, position, &["t"], Bytes::from(vec![b'x'; 30]));
        }
        assert_eq!(fanout.len(), 0);
        assert_eq!(slow.reader.drain(1, usize::MAX, |_| {}), Err(Lagged));
        fanout.lagged(slow.key);
        assert!(
            metrics
                .render()
                .contains("tidings_slow_subscriber_disconnects_total 1"),
            "counted once"
        );
    }

    #[test]
    fn subscribers_alike_share_one_channel_and_one_append() {
        let fanout = Fanout::new(16, Metrics::new(), 0);
        let mut a = fanout.register(registration(&["/x", "/y"], None)).unwrap();
        let mut b = fanout.register(registration(&["/y", "/x"], None)).unwrap();
        let mut claims = fanout
            .register(registration(&["/x", "/y"], Some(&["/x"])))
            .unwrap();
        assert_eq!(fanout.lock().channels.len(), 2);
        send(&fanout, 1, &["/x", "/y"], false);
        send(&fanout, 2, &["/x"], true);
        assert_eq!(received(&mut a), [1]);
        assert_eq!(received(&mut b), [1]);
        assert_eq!(received(&mut claims), [1, 2]);
        fanout.unregister(a.key);
        fanout.unregister(b.key);
        fanout.unregister(claims.key);
        let registry = fanout.lock();
        assert!(registry.channels.is_empty() && registry.channel_ids.is_empty());
        assert!(registry.exact.is_empty());
    }

    #[test]
    fn a_long_chain_let_go_at_once_is_freed_without_recursion() {
        let fanout = Fanout::new(1_000_000, Metrics::new(), 0);
        let live = fanout.register(registration(&["t"], None)).unwrap();
        for position in 1..=200_000 {
            send(&fanout, position, &["t"], false);
        }
        fanout.unregister(live.key);
        drop(live);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_on_other_threads_get_every_update_once_in_order() {
        const UPDATES: u64 = 5_000;
        let fanout = Arc::new(Fanout::new(UPDATES as usize, Metrics::new(), 0));
        let mut readers = Vec::new();
        for n in 0..300 {
            // Three channels: two topics alone and both together.
            let selectors: &[&str] = match n % 3 {
                0 => &["a"],
                1 => &["b"],
                _ => &["a", "b"],
            };
            let live = fanout.register(registration(selectors, None)).unwrap();
            readers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < UPDATES as usize {
                    live.reader.ready().await.unwrap();
                    let left = UPDATES as usize - got.len();
                    live.reader
                        .drain(left.min(64), usize::MAX, |(position, _)| got.push(position))
                        .unwrap();
                }
                got
            }));
        }
        let dispatcher = tokio::spawn({
            let fanout = Arc::clone(&fanout);
            async move {
                let mut wakes = Wakes::default();
                for position in 1..=UPDATES {
                    let topics: &[&str] = if position % 2 == 0 {
                        &["a"]
                    } else {
                        &["a", "b"]
                    };
                    let update = stored(position, topics, false);
                    fanout.dispatch(&update, &Bytes::new(), &mut wakes);
                    if position % 7 == 0 {
                        wakes.wake_paced().await;
                    }
                }
                wakes.wake_paced().await;
                // Only the readers of `b` are owed fewer: top them up with updates on
                // `b` alone so that every reader ends.
                for position in UPDATES + 1..=UPDATES + UPDATES / 2 {
                    fanout.dispatch(&stored(position, &["b"], false), &Bytes::new(), &mut wakes);
                    wakes.wake_paced().await;
                }
            }
        });
        for (n, reader) in readers.into_iter().enumerate() {
            let got = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
                .await
                .expect("a reader was not woken")
                .unwrap();
            let expected: Vec<u64> = match n % 3 {
                0 => (1..=UPDATES).collect(),
                1 => (1..=UPDATES)
                    .filter(|p| p % 2 == 1)
                    .chain(UPDATES + 1..=UPDATES + UPDATES / 2)
                    .collect(),
                _ => (1..=UPDATES).collect(),
            };
            assert_eq!(got, expected, "reader {n}");
        }
        dispatcher.await.unwrap();
    }

    #[tokio::test]
    async fn shutting_down_ends_every_reader_waiting_or_new() {
        let fanout = Arc::new(Fanout::new(16, Metrics::new(), 0));
        let waiting = fanout.register(registration(&["t"], None)).unwrap();
        let reader = tokio::spawn(async move { waiting.reader.ready().await });
        tokio::task::yield_now().await;
        fanout.shut_down();
        assert_eq!(reader.await.unwrap(), Err(Ended::ShutDown));
        let late = fanout.register(registration(&["t"], None)).unwrap();
        assert_eq!(late.reader.ready().await, Err(Ended::ShutDown));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_an_append() {
        let fanout = Arc::new(Fanout::new(16, Metrics::new(), 0));
        let live = fanout.register(registration(&["t"], None)).unwrap();
        let reader = tokio::spawn(async move { live.reader.recv().await.map(|q| q.0) });
        tokio::task::yield_now().await;
        let mut wakes = Wakes::default();
        fanout.dispatch(&stored(1, &["t"], false), &Bytes::new(), &mut wakes);
        wakes.wake_paced().await;
        assert_eq!(reader.await.unwrap(), Some(1));
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
                assert!(!group.channels.is_empty(), "an empty group is removed");
                for id in &group.channels {
                    let registration = &self.channels[id].registration;
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
        assert_eq!(received(&mut first), [1, 2]);
        fanout.unregister(first.key);
        assert_eq!(fanout.lock().topic_templates, before, "the template stays");
        send(&fanout, 3, &["/k/1"], false);
        assert!(
            received(&mut first).is_empty(),
            "unregistered: nothing more"
        );
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
