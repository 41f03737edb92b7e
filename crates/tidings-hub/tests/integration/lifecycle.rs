//! A subscriber's life and the hub's: subscription events are live notifications and
//! never history, private ids are not disclosed through `Last-Event-ID`, and
//! `Hub::close` loses no accepted publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tidings_hub::log::{Cursor, Log, Retention, Update};
use tidings_hub::{Hub, PublishError};

use crate::support::{KEY, PATIENCE, TestHub, token, topics_query};

const ALL_SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

/// Anonymous connect-and-close churn, 100 topics a connection, once wrote a history
/// entry per topic per event, fsynced: it cycled the whole history in seconds and
/// filled disks. Now it writes nothing, however long it goes on, while a watcher of
/// the subscription topics still sees every start and end, live.
#[tokio::test]
async fn subscription_churn_leaves_history_and_disk_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let t = TestHub::with(|b| {
        b.history_file(&path)
            .retention(Retention::default().with_max_updates(Some(20)))
    })
    .await;
    let first = t.publish(&[("topic", "real"), ("data", "0")]).await;
    let size_before = std::fs::metadata(&path).unwrap().len();
    let appends_before = t.metric("tidings_log_appends_total").await;

    let watcher_token = token(&[], &[ALL_SUBSCRIPTIONS]);
    let mut watcher = t
        .subscribe_with(
            &topics_query(&[ALL_SUBSCRIPTIONS]),
            Some(&watcher_token),
            None,
        )
        .await;
    let own = watcher.expect().await;
    assert_eq!(own.id, "", "a subscription event carries no id");
    // Read while the churn goes on, as a live watcher does.
    let watching = tokio::spawn(async move {
        for _ in 0..30 * 200 {
            let event = watcher.expect().await;
            assert_eq!(event.id, "", "a subscription event carries no id");
        }
    });

    let topics: Vec<String> = (0..100).map(|n| format!("/churn/{n}")).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let query = topics_query(&topics);
    let mut missed = Vec::new();
    for round in 0..30 {
        let stream = t.subscribe(&query).await;
        drop(stream);
        if round % 3 == 0 {
            missed.push(
                t.publish(&[("topic", "real"), ("data", &round.to_string())])
                    .await,
            );
        }
    }
    // The watcher saw 100 starts and 100 ends per connection, none of them stored.
    watching.await.unwrap();

    // A subscriber that saw the first real update gets exactly the ten it missed.
    let mut resumed = t
        .subscribe_with(&topics_query(&["real"]), None, Some(&first))
        .await;
    for id in &missed {
        assert_eq!(&resumed.expect().await.id, id);
    }
    assert_eq!(
        t.metric("tidings_log_appends_total").await - appends_before,
        missed.len() as f64,
        "only the real updates were appended"
    );
    let size_after = std::fs::metadata(&path).unwrap().len();
    assert!(
        size_after <= size_before + 64 * 1024,
        "history file grew from {size_before} to {size_after} bytes"
    );
}

/// A watcher of the subscription topics that also follows a real topic keeps the
/// real update's id as its last event ID, so its resume is exact, not a full replay.
#[tokio::test]
async fn subscription_events_do_not_move_the_last_event_id() {
    let t = TestHub::start().await;
    let watcher_token = token(&[], &[ALL_SUBSCRIPTIONS]);
    let query = topics_query(&[ALL_SUBSCRIPTIONS, "real"]);
    let mut watcher = t.subscribe_with(&query, Some(&watcher_token), None).await;
    let _own = watcher.expect().await; // two: one per selector
    let _own = watcher.expect().await;
    let before = t.publish(&[("topic", "real"), ("data", "a")]).await;
    assert_eq!(watcher.expect().await.id, before);
    let other = t.subscribe(&topics_query(&["elsewhere"])).await;
    let started = watcher.expect().await;
    assert_eq!(
        started.id, before,
        "the last event ID stays the real update's"
    );
    drop(other);
    let after = t.publish(&[("topic", "real"), ("data", "b")]).await;
    drop(watcher);

    let mut resumed = t
        .subscribe_with(&query, Some(&watcher_token), Some(&before))
        .await;
    assert_eq!(resumed.header("last-event-id").as_deref(), Some(&*before));
    // Its own two subscription events (live), and the one update it missed.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(resumed.expect().await.id.to_string());
    }
    assert!(ids.contains(&after), "{ids:?}");
}

/// Whether a private update with a given id exists is not for a subscriber that may
/// not see it to learn: its id is answered like an unknown one.
#[tokio::test]
async fn a_private_id_is_unknown_to_whoever_may_not_see_it() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let public = t.publish(&[("topic", "/a"), ("data", "public")]).await;
    t.publish(&[
        ("topic", "/a"),
        ("data", "secret"),
        ("private", "on"),
        ("id", "private-1"),
    ])
    .await;
    let later = t.publish(&[("topic", "/a"), ("data", "later")]).await;
    let query = topics_query(&["/a"]);

    let mut anonymous = t.subscribe_with(&query, None, Some("private-1")).await;
    assert_eq!(
        anonymous.header("last-event-id").as_deref(),
        Some("earliest")
    );
    assert_eq!(anonymous.expect().await.id, public);
    assert_eq!(anonymous.expect().await.id, later);

    let never = t.subscribe_with(&query, None, Some("no-such-id")).await;
    assert_eq!(never.header("last-event-id").as_deref(), Some("earliest"));

    let allowed = token(&[], &["/a"]);
    let mut reader = t
        .subscribe_with(&query, Some(&allowed), Some("private-1"))
        .await;
    assert_eq!(reader.header("last-event-id").as_deref(), Some("private-1"));
    assert_eq!(reader.expect().await.id, later);

    // A public id is disclosed to anyone, as before.
    let mut resumed = t.subscribe_with(&query, None, Some(&public)).await;
    assert_eq!(resumed.header("last-event-id").as_deref(), Some(&*public));
    assert_eq!(resumed.expect().await.id, later);
}

/// `Hub::close` waits for every accepted publish to be stored, refuses later ones, and
/// releases the file so that it opens again with exactly the accepted ones — with
/// publishers racing it on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_loses_no_accepted_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let hub = Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(KEY))
        .history_file(&path)
        .subscriptions(false)
        .build()
        .await
        .unwrap();
    // Eight publishers, each publishing until the hub refuses.
    let count = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let hub = hub.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for n in 0.. {
                    match hub.publish(Update::new("", "t", format!("{p}-{n}"))).await {
                        Ok(id) => {
                            accepted.push(id);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(PublishError::ShuttingDown) => return accepted,
                        Err(other) => panic!("publish failed: {other}"),
                    }
                }
                accepted
            })
        })
        .collect();
    // Let them get going, then close under their feet.
    tokio::time::timeout(PATIENCE, async {
        while count.load(Ordering::Relaxed) < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("publishes were accepted");
    tokio::time::timeout(PATIENCE, hub.close())
        .await
        .expect("close finished");
    let mut expected = Vec::new();
    for publisher in publishers {
        expected.extend(publisher.await.unwrap());
    }
    assert!(matches!(
        hub.publish(Update::new("", "t", "late")).await,
        Err(PublishError::ShuttingDown)
    ));
    expected.sort();
    assert!(
        !expected.is_empty(),
        "close came before any publish was accepted"
    );

    drop(hub);
    let log = tokio::time::timeout(PATIENCE, async {
        loop {
            match Log::open(&path, Retention::default()).await {
                Ok(log) => break log,
                // The last clone of the hub may still be dropping in another task.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the file opens again");
    let mut stored = Vec::new();
    let mut cursor = Cursor::Earliest;
    loop {
        let batch = log.read_after(cursor, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = Cursor::Position(last.position);
        stored.extend(batch.iter().map(|s| s.update.id.clone()));
    }
    stored.sort();
    assert_eq!(
        stored, expected,
        "stored updates differ from the accepted ones"
    );
}

/// The demo publisher and `Hub::publish_live` reach live subscribers and leave the
/// history empty: a ping a second would otherwise push real updates out of it.
#[tokio::test]
async fn live_updates_and_the_demo_never_touch_history() {
    let t = TestHub::start().await;
    let mut pings = t
        .subscribe(&topics_query(&[tidings_hub::web::DEMO_TOPIC, "/presence"]))
        .await;
    let demo = tidings_hub::web::spawn_demo(&t.hub);
    let ping = pings.expect().await;
    assert_eq!(ping.event_type, "ping");
    assert_eq!(ping.id, "", "a live update carries no id");
    demo.abort();
    t.hub
        .publish_live(Update::new("", "/presence", "3 online"))
        .unwrap();
    loop {
        let event = pings.expect().await;
        if event.data == "3 online" {
            assert_eq!(event.id, "");
            break;
        }
    }
    assert_eq!(
        t.metric("tidings_history_updates").await,
        0.0,
        "history is not empty"
    );
}

/// Hub-wide caps: subscribers at once, and distinct templates in use (each new topic is
/// matched against every one). Over a cap: 503 with the reason; a template already in
/// use is always accepted; a freed place is taken again.
#[tokio::test]
async fn subscribers_and_distinct_templates_are_capped() {
    let t = TestHub::with(|b| {
        b.subscriptions(false)
            .max_subscribers(3)
            .max_live_templates(2)
    })
    .await;
    let first = t.subscribe(&topics_query(&["/a/{x}"])).await;
    let second = t.subscribe(&topics_query(&["/b/{x}", "/a/{x}"])).await;
    let refused = t.request(&topics_query(&["/c/{x}"]), None, None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.text().await.unwrap(),
        "too many distinct topic templates in use: this hub matches at most 2 at once; use a template that is already in use or an exact topic\n"
    );
    let third = t.subscribe(&topics_query(&["/b/{x}"])).await;
    let refused = t.request(&topics_query(&["exact"]), None, None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.text().await.unwrap(),
        "too many subscribers: this hub accepts at most 3 at once\n"
    );
    assert_eq!(
        t.metric("tidings_subscription_refusals_total{reason=\"max_templates\"}")
            .await,
        1.0
    );
    assert_eq!(
        t.metric("tidings_subscription_refusals_total{reason=\"max_subscribers\"}")
            .await,
        1.0
    );
    // Places freed: a subscriber goes, and with the last of `/a/{x}` its template.
    drop(first);
    drop(second);
    let mut c = None;
    for _ in 0..100 {
        let response = t.request(&topics_query(&["/c/{x}"]), None, None).await;
        if response.status() == 200 {
            c = Some(crate::support::Stream::new(response));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = c.expect("the freed places are taken again");
    let id = t.publish(&[("topic", "/c/1"), ("data", "x")]).await;
    assert_eq!(c.expect().await.id, id);
    drop(third);
}

/// A private live update goes through the topic indexes like any other: it reaches a
/// subscriber of its exact topic whose token allows it, and nobody else.
#[tokio::test]
async fn a_private_live_update_reaches_the_subscribers_allowed_to_see_it() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let query = topics_query(&["/presence"]);
    let allowed = token(&[], &["/presence"]);
    let mut reader = t.subscribe_with(&query, Some(&allowed), None).await;
    let mut anonymous = t.subscribe(&query).await;
    let mut update = Update::new("", "/presence", "private");
    update.private = true;
    t.hub.publish_live(update).unwrap();
    t.hub
        .publish_live(Update::new("", "/presence", "public"))
        .unwrap();
    assert_eq!(reader.expect().await.data, "private");
    assert_eq!(reader.expect().await.data, "public");
    assert_eq!(anonymous.expect().await.data, "public");
}
