//! Puts stored updates back into log order before the fan-out sees them.
//!
//! Publishes run concurrently and their appends complete together (group commit), so
//! the tasks that hand the stored updates over can do so in any order. Subscribers must
//! see the log's order — a reconnecting subscriber drops whatever is at or before the
//! position it has already seen — so one task takes them in, holds back any that come
//! early, and dispatches by position. A position that is committed never fails to be
//! handed over, save when the task appending it is cancelled between the commit and
//! the hand-over (the runtime shutting down): when a position has been missing for
//! longer than a moment, however many later ones keep arriving, the gap is filled from
//! the log itself, which is the order of record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event;
use crate::fanout::{Fanout, Wakes};
use crate::log::{Cursor, Log, Stored};

/// How long a gap in positions may wait for its update to arrive before the log is asked.
const GAP_WAIT: Duration = Duration::from_millis(20);
/// Updates read from the log per request when filling a gap.
const GAP_BATCH: usize = 512;

/// How many stored updates may wait for the dispatch task: past that, the tasks that
/// hand them over wait, and so do their publishers (back-pressure instead of memory).
const DISPATCH_QUEUE: usize = 4096;

/// The dispatch task, as the hub holds it.
pub(crate) struct Dispatch {
    tx: mpsc::Sender<Stored>,
    closing: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<OnceLock<String>>,
}

impl Dispatch {
    /// Hands a stored update over; waits while the dispatch queue is full. An error
    /// means the task has stopped (it failed, or the hub is closed).
    pub(crate) async fn send(&self, stored: Stored) -> Result<(), Stopped> {
        self.tx.send(stored).await.map_err(|_| Stopped)
    }

    /// Why the task stopped, if it stopped by failing.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Dispatches what was handed over and ends the task.
    pub(crate) async fn close(&self) {
        self.closing.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            // A panic was logged and recorded by the task's wrapper.
            let _ = task.await;
        }
    }
}

/// The dispatch task has stopped.
#[derive(Debug)]
pub(crate) struct Stopped;

/// Starts the dispatch task; updates sent to it reach the fan-out in position order.
/// The task ends at [`Dispatch::close`] once it has dispatched what it was given. If it
/// fails (a panic), the failure is logged and kept for the health check.
pub(crate) fn start(log: Arc<Log>, fanout: Arc<Fanout>, dispatched: u64) -> Dispatch {
    let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
    let closing = CancellationToken::new();
    let failure = Arc::new(OnceLock::new());
    let task = tokio::spawn({
        let closing = closing.clone();
        let failure = Arc::clone(&failure);
        async move {
            let run = AssertUnwindSafe(run(rx, closing, log, fanout, dispatched));
            if let Err(panic) = run.catch_unwind().await {
                let cause = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".to_owned());
                tracing::error!(%cause, "the dispatch task failed: live updates stopped");
                let _ = failure.set(cause);
            }
        }
    });
    Dispatch {
        tx,
        closing,
        task: Mutex::new(Some(task)),
        failure,
    }
}

async fn run(
    mut incoming: mpsc::Receiver<Stored>,
    closing: CancellationToken,
    log: Arc<Log>,
    fanout: Arc<Fanout>,
    mut dispatched: u64,
) {
    let mut early: BTreeMap<u64, Stored> = BTreeMap::new();
    // The channels appended to since the last wake-up, woken once per round.
    let mut wakes = Wakes::default();
    // When the oldest gap is given up on: set when it opens, not on every arrival, so
    // that a steady stream of later updates cannot put the filling off forever.
    let mut gap_deadline: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = sleep_until(gap_deadline), if gap_deadline.is_some() => {
                fill_gap(&log, &fanout, &mut early, &mut dispatched, &mut wakes).await;
                wakes.wake_paced().await;
                gap_deadline = None;
                continue;
            }
            next = incoming.recv() => next,
            () = closing.cancelled() => {
                // Whoever closes has waited for the appends: take what they handed over.
                incoming.close();
                while let Some(stored) = incoming.recv().await {
                    if stored.position > dispatched {
                        early.insert(stored.position, stored);
                    }
                }
                fill_gap(&log, &fanout, &mut early, &mut dispatched, &mut wakes).await;
                wakes.wake_all();
                return;
            }
        };
        let Some(stored) = next else { break };
        if stored.position <= dispatched {
            continue;
        }
        let before = dispatched;
        early.insert(stored.position, stored);
        while let Ok(more) = incoming.try_recv() {
            if more.position > dispatched {
                early.insert(more.position, more);
            }
        }
        while let Some(entry) = early.first_entry() {
            if *entry.key() != dispatched + 1 {
                break;
            }
            let stored = entry.remove();
            send(&fanout, &stored, &mut wakes);
            dispatched = stored.position;
        }
        // Every update that was ready is in its channels: now wake their readers, a
        // chunk at a time, so that one round of ten thousand wake-ups does not queue the
        // other tasks (publishers waiting for their reply) behind it.
        wakes.wake_paced().await;
        if early.is_empty() {
            gap_deadline = None;
        } else if gap_deadline.is_none() || dispatched != before {
            // A new gap (the one before it closed): it gets its own wait.
            gap_deadline = Some(Instant::now() + GAP_WAIT);
        }
    }
}

/// Sleeps until the deadline; without one, forever.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn send(fanout: &Fanout, stored: &Stored, wakes: &mut Wakes) {
    let wire = event::encode(&stored.update);
    fanout.dispatch(stored, &wire, wakes);
}

/// Dispatches everything held back, reading the missing positions before it from the
/// log; whatever the log cannot give is gone and is not waited for again.
async fn fill_gap(
    log: &Log,
    fanout: &Fanout,
    early: &mut BTreeMap<u64, Stored>,
    dispatched: &mut u64,
    wakes: &mut Wakes,
) {
    let upto = early.last_key_value().map_or(*dispatched, |(p, _)| *p);
    while *dispatched < upto {
        let batch = match log
            .read_after(Cursor::Position(*dispatched), GAP_BATCH)
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(cause = %err, "cannot read the log to fill a gap");
                Vec::new()
            }
        };
        if batch.is_empty() {
            break;
        }
        for stored in batch.iter().take_while(|s| s.position <= upto) {
            send(fanout, stored, wakes);
            *dispatched = stored.position;
        }
        if batch.last().is_some_and(|s| s.position >= upto) {
            break;
        }
    }
    for (position, stored) in std::mem::take(early) {
        if position > *dispatched {
            send(fanout, &stored, wakes);
            *dispatched = position;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{Registration, SubscriberInfo};
    use crate::log::{Retention, Update};
    use crate::metrics::Metrics;
    use crate::topic::Selector;

    fn subscriber(fanout: &Fanout) -> crate::fanout::Live {
        fanout
            .register(Arc::new(Registration {
                info: Arc::new(SubscriberInfo {
                    id: "urn:uuid:s".into(),
                    topics: vec!["t".into()],
                    payload: None,
                }),
                selectors: vec![Selector::new("t")],
                private: None,
            }))
            .unwrap()
    }

    #[tokio::test]
    async fn out_of_order_arrivals_are_dispatched_in_position_order() {
        let log = Arc::new(Log::memory(Retention::default()));
        let fanout = Arc::new(Fanout::new(64, Metrics::new(), 0));
        let live = subscriber(&fanout);
        let mut stored = Vec::new();
        for n in 0..5 {
            stored.push(
                log.append(Update::new(format!("u{n}"), "t", "x"))
                    .await
                    .unwrap(),
            );
        }
        let tx = start(Arc::clone(&log), Arc::clone(&fanout), 0);
        for index in [2, 0, 4, 1, 3] {
            tx.send(stored[index].clone()).await.unwrap();
        }
        for expected in 1..=5 {
            assert_eq!(live.reader.recv().await.unwrap().0, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_position_that_never_arrives_is_read_from_the_log() {
        let log = Arc::new(Log::memory(Retention::default()));
        let fanout = Arc::new(Fanout::new(64, Metrics::new(), 0));
        let live = subscriber(&fanout);
        let first = log.append(Update::new("a", "t", "x")).await.unwrap();
        let second = log.append(Update::new("b", "t", "x")).await.unwrap();
        let tx = start(Arc::clone(&log), Arc::clone(&fanout), 0);
        // Only the second is handed over (the first publisher went away).
        tx.send(second.clone()).await.unwrap();
        assert_eq!(live.reader.recv().await.unwrap().0, first.position);
        assert_eq!(live.reader.recv().await.unwrap().0, second.position);
        // A late arrival of the first is not sent twice.
        tx.send(first).await.unwrap();
        let third = log.append(Update::new("c", "t", "x")).await.unwrap();
        tx.send(third.clone()).await.unwrap();
        assert_eq!(live.reader.recv().await.unwrap().0, third.position);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_filled_in_time_while_later_updates_keep_arriving() {
        let log = Arc::new(Log::memory(Retention::default()));
        let fanout = Arc::new(Fanout::new(256, Metrics::new(), 0));
        let live = subscriber(&fanout);
        let mut stored = Vec::new();
        for n in 0..40 {
            stored.push(
                log.append(Update::new(format!("u{n}"), "t", "x"))
                    .await
                    .unwrap(),
            );
        }
        let tx = Arc::new(start(Arc::clone(&log), Arc::clone(&fanout), 0));
        let opened = Instant::now();
        // The first position never comes; the others arrive every 5 ms, well within
        // the gap's wait each, for far longer than the wait in all.
        let feeder = tokio::spawn(async move {
            for later in &stored[1..] {
                tx.send(later.clone()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tx
        });
        assert_eq!(live.reader.recv().await.unwrap().0, 1);
        assert!(
            opened.elapsed() <= GAP_WAIT,
            "the gap was filled after {:?}, not within {GAP_WAIT:?}",
            opened.elapsed()
        );
        for expected in 2..=40 {
            assert_eq!(live.reader.recv().await.unwrap().0, expected);
        }
        let _tx = feeder.await.unwrap();
    }
}
