//! Cluster mode: what a hub node does beside its peers on one Redis.
//!
//! The shared log itself is `log/redis.rs`. Here: [`feed`], which hands the updates the
//! log's reader reads from the stream (every node's, in the stream's order) to this
//! node's fan-out.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::fanout::Fanout;
use crate::log::Stored;

/// Dispatches what the shared log's reader reads, in order, until the log closes.
pub(crate) async fn feed(mut batches: mpsc::Receiver<Vec<Stored>>, fanout: Arc<Fanout>) {
    while let Some(batch) = batches.recv().await {
        for stored in &batch {
            let wire = crate::event::encode(&stored.update);
            fanout.dispatch(stored, &wire);
        }
    }
}
