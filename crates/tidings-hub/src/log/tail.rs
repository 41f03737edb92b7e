//! The newest updates of the file log, kept in memory for replays.
//!
//! A subscriber that reconnects usually missed only the last few seconds,
//! and reading those back from the file costs a trip to the blocking pool
//! per batch, the storage engine's page lookups and a decode (checksum,
//! allocations) per record: a replay of 100,000 updates took about 100 ms
//! that way. The writer already holds every update it commits as an
//! `Arc<Update>`, so it keeps the newest ones here too, up to
//! [`TAIL_BYTES`], and reads whose range the tail covers are answered from
//! memory, at once, without decoding anything.
//!
//! The tail holds consecutive positions ending at the last committed one.
//! It is *complete* while it holds every update the file retains (from a new
//! or empty file on, until its byte bound first drops one): only then can it
//! answer a read from before its oldest update (`earliest`, or a cursor
//! older than the history). Retention removes the same updates from it as
//! from the file, in the same commit. After the file is reopened following
//! a storage failure the tail starts again, empty and incomplete: a batch
//! answered with an error may have become durable all the same.

use std::collections::VecDeque;
use std::sync::{PoisonError, RwLock};

use super::Stored;

/// The most the tail holds, counting each update as its record's length
/// plus [`OVERHEAD`]: as much as the default retention's bytes, so that
/// with the default a durable hub holds at most what an in-memory history
/// (`--no-history`) does, and a replay of the whole default history (100,000
/// updates of up to ~500 bytes) comes from memory.
pub(super) const TAIL_BYTES: u64 = super::DEFAULT_MAX_BYTES;

/// What an update takes in memory beyond its record's bytes: the `Update`
/// and `Arc` headers and the allocations of its strings.
const OVERHEAD: u64 = 160;

pub(super) struct Tail {
    inner: RwLock<Inner>,
    max_bytes: u64,
}

struct Inner {
    /// Consecutive positions, oldest first, with each one's charge.
    updates: VecDeque<(Stored, u64)>,
    bytes: u64,
    /// Whether `updates` is all the file retains.
    complete: bool,
}

impl Tail {
    /// An empty tail; `complete` when the file holds no update.
    pub(super) fn new(max_bytes: u64, complete: bool) -> Tail {
        Tail {
            inner: RwLock::new(Inner {
                updates: VecDeque::new(),
                bytes: 0,
                complete,
            }),
            max_bytes,
        }
    }

    /// After a commit: adds its updates (with their record lengths), then
    /// forgets what its pruning removed from the file (every position up to
    /// `pruned_through`, 0 for none), then the oldest beyond the byte bound.
    pub(super) fn committed(&self, stored: &[Stored], sizes: &[u64], pruned_through: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let follows = match (inner.updates.back(), stored.first()) {
            (Some((last, _)), Some(first)) => first.position == last.position + 1,
            _ => true,
        };
        if !follows {
            // Cannot happen (the writer gives consecutive positions and
            // starts a new tail when it reopens), but a gap would make
            // reads skip updates: start again rather.
            inner.updates.clear();
            inner.bytes = 0;
            inner.complete = false;
        }
        for (stored, &size) in stored.iter().zip(sizes) {
            let charge = size + OVERHEAD;
            inner.bytes += charge;
            inner.updates.push_back((stored.clone(), charge));
        }
        inner.forget_through(pruned_through);
        while inner.bytes > self.max_bytes {
            let Some((_, charge)) = inner.updates.pop_front() else {
                break;
            };
            inner.bytes -= charge;
            inner.complete = false;
        }
    }

    /// Forgets every update up to `position`: retention removed them from
    /// the file outside a commit of appends (expiry while idle).
    pub(super) fn pruned(&self, position: u64) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_through(position);
    }

    /// Empties the tail, which is then incomplete: the file was reopened.
    pub(super) fn restart(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.updates.clear();
        inner.bytes = 0;
        inner.complete = false;
    }

    /// Up to `max` updates after `after`, if the tail holds all of them;
    /// `None` when the file must be read.
    pub(super) fn read_after(&self, after: u64, max: usize) -> Option<Vec<Stored>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some((oldest, _)) = inner.updates.front() else {
            return inner.complete.then(Vec::new);
        };
        let oldest = oldest.position;
        if after.saturating_add(1) < oldest && !inner.complete {
            return None;
        }
        let skip = usize::try_from(after.saturating_add(1).saturating_sub(oldest))
            .unwrap_or(usize::MAX)
            .min(inner.updates.len());
        Some(
            inner
                .updates
                .range(skip..)
                .take(max)
                .map(|(stored, _)| stored.clone())
                .collect(),
        )
    }
}

impl Inner {
    fn forget_through(&mut self, position: u64) {
        while let Some((oldest, charge)) = self.updates.front() {
            if oldest.position > position {
                break;
            }
            self.bytes -= charge;
            self.updates.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::Update;

    fn stored(positions: std::ops::RangeInclusive<u64>) -> Vec<Stored> {
        positions
            .map(|position| Stored {
                position,
                update: Arc::new(Update::new(format!("id-{position}"), "/t", "x")),
            })
            .collect()
    }

    fn positions(read: Option<Vec<Stored>>) -> Option<Vec<u64>> {
        read.map(|updates| updates.iter().map(|s| s.position).collect())
    }

    #[test]
    fn a_complete_tail_answers_every_read() {
        let tail = Tail::new(1 << 20, true);
        assert_eq!(positions(tail.read_after(0, 10)), Some(vec![]));
        tail.committed(&stored(1..=3), &[10; 3], 0);
        tail.committed(&stored(4..=5), &[10; 2], 0);
        assert_eq!(positions(tail.read_after(0, 10)), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(positions(tail.read_after(2, 2)), Some(vec![3, 4]));
        assert_eq!(positions(tail.read_after(5, 2)), Some(vec![]));
        assert_eq!(positions(tail.read_after(u64::MAX, 2)), Some(vec![]));
        // Retention removed 1 and 2 from the file in the next commit.
        tail.committed(&stored(6..=6), &[10], 2);
        assert_eq!(positions(tail.read_after(0, 10)), Some(vec![3, 4, 5, 6]));
        tail.pruned(4);
        assert_eq!(positions(tail.read_after(1, 10)), Some(vec![5, 6]));
    }

    #[test]
    fn an_incomplete_tail_answers_only_what_it_covers() {
        let tail = Tail::new(3 * (10 + OVERHEAD), true);
        tail.committed(&stored(1..=5), &[10; 5], 0);
        // The bound dropped 1 and 2: the file may still hold them.
        assert_eq!(positions(tail.read_after(0, 10)), None);
        assert_eq!(positions(tail.read_after(1, 10)), None);
        assert_eq!(positions(tail.read_after(2, 10)), Some(vec![3, 4, 5]));
        assert_eq!(positions(tail.read_after(4, 10)), Some(vec![5]));
        tail.restart();
        assert_eq!(positions(tail.read_after(4, 10)), None);
        tail.committed(&stored(9..=9), &[10], 0);
        assert_eq!(positions(tail.read_after(8, 10)), Some(vec![9]));
        assert_eq!(positions(tail.read_after(5, 10)), None);
    }

    #[test]
    fn a_gap_starts_the_tail_again() {
        let tail = Tail::new(1 << 20, true);
        tail.committed(&stored(1..=2), &[10; 2], 0);
        tail.committed(&stored(5..=6), &[10; 2], 0);
        assert_eq!(positions(tail.read_after(0, 10)), None);
        assert_eq!(positions(tail.read_after(4, 10)), Some(vec![5, 6]));
    }

    #[test]
    fn pruning_everything_leaves_a_complete_empty_tail() {
        let tail = Tail::new(1 << 20, true);
        tail.committed(&stored(1..=2), &[10; 2], 2);
        assert_eq!(positions(tail.read_after(0, 10)), Some(vec![]));
    }
}
