//! Puts stored updates back into log order before the fan-out sees them.
//!
//! Publishes run concurrently and their appends complete together (group commit), so
//! the tasks that hand the stored updates over can do so in any order. Subscribers must
//! see the log's order — a reconnecting subscriber drops whatever is at or before the
//! position it has already seen — so one task takes them in, holds back any that come
//! early, and dispatches by position. When a position is missing for longer than a
//! moment (an append that failed after taking a position, or one evicted already), the
//! gap is filled from the log itself, which is the order of record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event;
use crate::fanout::Fanout;
use crate::log::{Cursor, Log, Stored};

/// How long a gap in positions may wait for its update to arrive before the log is asked.
const GAP_WAIT: Duration = Duration::from_millis(20);
/// Updates read from the log per request when filling a gap.
const GAP_BATCH: usize = 512;

/// Starts the dispatch task; updates sent to the returned sender reach the fan-out in
/// position order. The task ends when every sender is dropped.
pub(crate) fn start(
    log: Arc<Log>,
    fanout: Arc<Fanout>,
    dispatched: u64,
) -> mpsc::UnboundedSender<Stored> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, log, fanout, dispatched));
    tx
}

async fn run(
    mut incoming: mpsc::UnboundedReceiver<Stored>,
    log: Arc<Log>,
    fanout: Arc<Fanout>,
    mut dispatched: u64,
) {
    let mut early: BTreeMap<u64, Stored> = BTreeMap::new();
    let send = |stored: &Stored| {
        let wire = event::encode(&stored.update);
        fanout.dispatch(stored, &wire);
    };
    loop {
        let next = if early.is_empty() {
            incoming.recv().await
        } else {
            match tokio::time::timeout(GAP_WAIT, incoming.recv()).await {
                Ok(next) => next,
                Err(_elapsed) => {
                    // The missing positions are not coming from a publisher: read them.
                    let upto = *early
                        .last_key_value()
                        .map(|(p, _)| p)
                        .unwrap_or(&dispatched);
                    while dispatched < upto {
                        let batch = match log
                            .read_after(Cursor::Position(dispatched), GAP_BATCH)
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
                            send(stored);
                            dispatched = stored.position;
                        }
                        if batch.last().is_some_and(|s| s.position >= upto) {
                            break;
                        }
                    }
                    // Whatever the log could not give is gone; do not wait for it again.
                    for (position, stored) in std::mem::take(&mut early) {
                        if position > dispatched {
                            send(&stored);
                            dispatched = position;
                        }
                    }
                    continue;
                }
            }
        };
        let Some(stored) = next else { break };
        if stored.position <= dispatched {
            continue;
        }
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
            send(&stored);
            dispatched = stored.position;
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
        fanout.register(Arc::new(Registration {
            info: Arc::new(SubscriberInfo {
                id: "urn:uuid:s".into(),
                topics: vec!["t".into()],
                payload: None,
            }),
            selectors: vec![Selector::new("t")],
            private: None,
        }))
    }

    #[tokio::test]
    async fn out_of_order_arrivals_are_dispatched_in_position_order() {
        let log = Arc::new(Log::memory(Retention::default()));
        let fanout = Arc::new(Fanout::new(64, Metrics::new(), 0));
        let mut live = subscriber(&fanout);
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
            tx.send(stored[index].clone()).unwrap();
        }
        for expected in 1..=5 {
            assert_eq!(live.queue.recv().await.unwrap().0, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_position_that_never_arrives_is_read_from_the_log() {
        let log = Arc::new(Log::memory(Retention::default()));
        let fanout = Arc::new(Fanout::new(64, Metrics::new(), 0));
        let mut live = subscriber(&fanout);
        let first = log.append(Update::new("a", "t", "x")).await.unwrap();
        let second = log.append(Update::new("b", "t", "x")).await.unwrap();
        let tx = start(Arc::clone(&log), Arc::clone(&fanout), 0);
        // Only the second is handed over (the first publisher went away).
        tx.send(second.clone()).unwrap();
        assert_eq!(live.queue.recv().await.unwrap().0, first.position);
        assert_eq!(live.queue.recv().await.unwrap().0, second.position);
        // A late arrival of the first is not sent twice.
        tx.send(first).unwrap();
        let third = log.append(Update::new("c", "t", "x")).await.unwrap();
        tx.send(third.clone()).unwrap();
        assert_eq!(live.queue.recv().await.unwrap().0, third.position);
    }
}
