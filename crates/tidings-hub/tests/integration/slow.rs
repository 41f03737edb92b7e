//! A subscriber that stops reading is disconnected once it is too far behind its channel
//! (in updates or in bytes), and the hub holds no more than that for it.

use crate::support::{PATIENCE, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_disconnected_and_can_resume() {
    const QUEUE: usize = 8;
    let t = TestHub::with(|b| b.queue_capacity(QUEUE).subscriptions(false)).await;
    let stalled = t.subscribe("topic=firehose").await;
    let mut healthy = t.subscribe("topic=firehose").await;
    assert_eq!(t.hub.connections(), 2);

    // Enough data to fill the socket buffers of the stalled subscriber and then its
    // queue: 64 KiB per update.
    let data = "x".repeat(64 * 1024);
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while t.hub.connections() == 2 {
        assert!(tokio::time::Instant::now() < deadline, "never disconnected");
        ids.push(t.publish(&[("topic", "firehose"), ("data", &data)]).await);
        let event = healthy.expect().await;
        assert_eq!(event.id, ids.last().unwrap().as_str());
    }
    assert!(
        t.hub
            .metrics()
            .contains("tidings_slow_subscriber_disconnects_total 1")
    );
    // What it was owed is bounded by the queue plus the socket buffers, not by what was
    // published.
    let mut stalled = crate::support::Stream::new(stalled.response);
    let mut got = Vec::new();
    while let Some(event) = tokio::time::timeout(PATIENCE, stalled.next_or_end())
        .await
        .unwrap()
    {
        got.push(event.id.to_string());
    }
    assert!(!got.is_empty() && got.len() < ids.len());
    assert_eq!(got[..], ids[..got.len()], "what it got, it got in order");

    // It resumes from history with the last id it saw.
    let mut resumed = t
        .subscribe_with("topic=firehose", None, Some(got.last().unwrap()))
        .await;
    for id in &ids[got.len()..] {
        assert_eq!(resumed.expect().await.id, id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_many_bytes_behind_is_disconnected() {
    // A queue long enough never to fill: the bound in bytes must end it.
    let t = TestHub::with(|b| {
        b.queue_capacity(1_000_000)
            .queue_bytes(1024 * 1024)
            .subscriptions(false)
    })
    .await;
    let stalled = t.subscribe("topic=firehose").await;
    let mut healthy = t.subscribe("topic=firehose").await;
    let data = "x".repeat(64 * 1024);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut published = 0;
    while t.hub.connections() == 2 {
        assert!(tokio::time::Instant::now() < deadline, "never disconnected");
        let id = t.publish(&[("topic", "firehose"), ("data", &data)]).await;
        assert_eq!(healthy.expect().await.id, id.as_str());
        published += 1;
    }
    assert!(
        t.hub
            .metrics()
            .contains("tidings_slow_subscriber_disconnects_total 1")
    );
    // The socket buffers plus 1.25 MiB of backlog, far from the million updates the
    // queue allows.
    assert!(published < 1_000, "{published} updates of 64 KiB");
    drop(stalled);
}
