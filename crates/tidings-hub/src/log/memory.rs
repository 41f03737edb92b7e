//! The in-memory ring: a `VecDeque` in position order plus an id index,
//! behind one mutex.
//!
//! A std mutex rather than a tokio one: every critical section is short and
//! never awaits, so the lock is never held across a suspension point.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{LogError, LogStats, Retention, Stored, Update};

pub(super) struct MemoryLog {
    retention: Retention,
    state: Mutex<State>,
}

struct State {
    /// Ascending, contiguous positions.
    entries: VecDeque<Entry>,
    ids: HashMap<String, u64>,
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
}

impl MemoryLog {
    pub(super) fn new(retention: Retention) -> MemoryLog {
        MemoryLog {
            retention,
            state: Mutex::new(State {
                entries: VecDeque::new(),
                ids: HashMap::new(),
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
        if state.ids.contains_key(&update.id) {
            return Err(LogError::DuplicateId(update.id));
        }
        state.last_position += 1;
        state.appended += 1;
        let position = state.last_position;
        state.ids.insert(update.id.clone(), position);
        let stored = Stored {
            position,
            update: Arc::new(update),
        };
        state.entries.push_back(Entry {
            stored: stored.clone(),
            appended_at: Instant::now(),
        });
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

    pub(super) fn stats(&self) -> LogStats {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        LogStats {
            appended: state.appended,
            commits: 0,
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
        while let Some(oldest) = self.entries.front() {
            let expired = retention
                .max_age
                .is_some_and(|age| now.saturating_duration_since(oldest.appended_at) >= age);
            if !expired && self.entries.len() <= max_updates {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.ids.remove(&entry.stored.update.id);
            }
        }
    }
}
