//! The in-memory ring: a `VecDeque` in position order plus an id index,
//! behind one mutex.
//!
//! A std mutex rather than a tokio one: every critical section is short and
//! never awaits, so the lock is never held across a suspension point.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{LogError, LogHealth, LogStats, Retention, Stored, Update, record};

pub(super) struct MemoryLog {
    retention: Retention,
    state: Mutex<State>,
}

struct State {
    /// Ascending, contiguous positions.
    entries: VecDeque<Entry>,
    /// Each id's latest position.
    ids: HashMap<String, u64>,
    /// The sum of the entries' sizes.
    bytes: u64,
    last_position: u64,
    appended: u64,
    closed: bool,
    /// Tells watchers the last position; dropped on close.
    announce: Option<watch::Sender<u64>>,
}

struct Entry {
    stored: Stored,
    // tokio's clock, so that tests of expiry can run on paused time.
    appended_at: Instant,
    /// What the update would take in the history file, so that both
    /// backends count bytes alike.
    size: u64,
}

impl MemoryLog {
    pub(super) fn new(retention: Retention) -> MemoryLog {
        MemoryLog {
            retention,
            state: Mutex::new(State {
                entries: VecDeque::new(),
                ids: HashMap::new(),
                bytes: 0,
                last_position: 0,
                appended: 0,
                closed: false,
                announce: Some(watch::channel(0).0),
            }),
        }
    }

    /// The state with expired entries already removed.
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters more than losing the process, so keep going.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.prune(&self.retention, Instant::now());
        state
    }

    pub(super) fn append(&self, update: Update) -> Result<Stored, LogError> {
        let mut state = self.state();
        if state.closed {
            return Err(LogError::Closed);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let size = record::encoded_len(&update, now_ms) as u64;
        state.last_position += 1;
        state.appended += 1;
        let position = state.last_position;
        // A reused id now stands for this occurrence.
        state.ids.insert(update.id.clone(), position);
        let stored = Stored {
            position,
            update: Arc::new(update),
        };
        state.entries.push_back(Entry {
            stored: stored.clone(),
            appended_at: Instant::now(),
            size,
        });
        state.bytes += size;
        state.prune(&self.retention, Instant::now());
        if let Some(announce) = &state.announce {
            announce.send_replace(position);
        }
        Ok(stored)
    }

    pub(super) fn read_after(&self, after: u64, max: usize) -> Vec<Stored> {
        let state = self.state();
        let start = state
            .entries
            .partition_point(|e| e.stored.position <= after);
        state
            .entries
            .range(start..)
            .take(max)
            .map(|e| e.stored.clone())
            .collect()
    }

    pub(super) fn position_of(&self, id: &str) -> Option<u64> {
        self.state().ids.get(id).copied()
    }

    pub(super) fn id_before(&self, position: u64) -> Option<String> {
        let state = self.state();
        let end = state
            .entries
            .partition_point(|e| e.stored.position < position);
        end.checked_sub(1)
            .map(|i| state.entries[i].stored.update.id.clone())
    }

    pub(super) fn last_position(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .last_position
    }

    pub(super) fn len(&self) -> u64 {
        self.state().entries.len() as u64
    }

    pub(super) fn bytes(&self) -> u64 {
        self.state().bytes
    }

    pub(super) fn stats(&self) -> LogStats {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        LogStats {
            appended: state.appended,
            ..LogStats::default()
        }
    }

    pub(super) fn health(&self) -> LogHealth {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.closed {
            LogHealth::Closed
        } else {
            LogHealth::Writable
        }
    }

    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        let state = self.state();
        match &state.announce {
            Some(announce) => announce.subscribe(),
            // A receiver whose sender is gone: it reports the log closed.
            None => watch::channel(state.last_position).1,
        }
    }

    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.announce = None;
    }
}

impl State {
    fn prune(&mut self, retention: &Retention, now: Instant) {
        let max_updates = retention
            .max_updates
            .map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX));
        let max_bytes = retention.max_bytes.unwrap_or(u64::MAX);
        while let Some(oldest) = self.entries.front() {
            let expired = retention
                .max_age
                .is_some_and(|age| now.saturating_duration_since(oldest.appended_at) >= age);
            // The newest stays whatever its size.
            let too_big = self.bytes > max_bytes && self.entries.len() > 1;
            if !expired && !too_big && self.entries.len() <= max_updates {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.bytes -= entry.size;
                let id = &entry.stored.update.id;
                // A later occurrence of a reused id keeps its entry.
                if self.ids.get(id) == Some(&entry.stored.position) {
                    self.ids.remove(id);
                }
            }
        }
    }
}
