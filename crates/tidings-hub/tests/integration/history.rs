//! History: `Last-Event-ID` (header or query), `earliest`, the response header, and
//! history that survives a restart.

use crate::support::{TestHub, token};

async fn hub_with_three() -> (TestHub, Vec<String>) {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let mut ids = Vec::new();
    for (topic, data) in [("a", "1"), ("b", "2"), ("a", "3")] {
        ids.push(t.publish(&[("topic", topic), ("data", data)]).await);
    }
    (t, ids)
}

#[tokio::test]
async fn header_replays_after_the_id_then_goes_live() {
    let (t, ids) = hub_with_three().await;
    let mut stream = t
        .subscribe_with("topic=a&topic=b", None, Some(&ids[0]))
        .await;
    assert_eq!(
        stream.header("last-event-id").as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(stream.expect().await.id, ids[1].as_str());
    assert_eq!(stream.expect().await.id, ids[2].as_str());
    let live = t.publish(&[("topic", "b"), ("data", "4")]).await;
    assert_eq!(stream.expect().await.id, live.as_str());
}

#[tokio::test]
async fn replay_keeps_to_the_selectors() {
    let (t, ids) = hub_with_three().await;
    let mut stream = t.subscribe_with("topic=a", None, Some("earliest")).await;
    assert_eq!(stream.expect().await.data, "1");
    assert_eq!(stream.expect().await.id, ids[2].as_str());
}

#[tokio::test]
async fn query_parameter_and_header_precedence() {
    let (t, ids) = hub_with_three().await;
    let query = format!("topic=a&topic=b&lastEventID={}", ids[1]);
    let mut by_query = t.subscribe(&query).await;
    assert_eq!(
        by_query.header("last-event-id").as_deref(),
        Some(ids[1].as_str())
    );
    assert_eq!(by_query.expect().await.id, ids[2].as_str());

    // The header wins over the query parameter.
    let mut both = t.subscribe_with(&query, None, Some(&ids[0])).await;
    assert_eq!(
        both.header("last-event-id").as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(both.expect().await.id, ids[1].as_str());
}

#[tokio::test]
async fn earliest_sends_everything() {
    let (t, ids) = hub_with_three().await;
    let mut stream = t.subscribe_with("topic=*", None, Some("earliest")).await;
    assert_eq!(stream.header("last-event-id").as_deref(), Some("earliest"));
    for id in &ids {
        assert_eq!(stream.expect().await.id, id.as_str());
    }
}

#[tokio::test]
async fn unknown_id_answers_earliest_and_sends_everything() {
    let (t, ids) = hub_with_three().await;
    let mut stream = t.subscribe_with("topic=*", None, Some("never-seen")).await;
    assert_eq!(stream.header("last-event-id").as_deref(), Some("earliest"));
    assert_eq!(stream.expect().await.id, ids[0].as_str());
}

#[tokio::test]
async fn empty_history_answers_earliest() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let mut stream = t.subscribe_with("topic=a", None, Some("earliest")).await;
    assert_eq!(stream.header("last-event-id").as_deref(), Some("earliest"));
    let id = t.publish(&[("topic", "a"), ("data", "x")]).await;
    assert_eq!(stream.expect().await.id, id.as_str());
}

#[tokio::test]
async fn last_id_is_the_newest_answers_it_and_sends_only_live() {
    let (t, ids) = hub_with_three().await;
    let mut stream = t.subscribe_with("topic=*", None, Some(&ids[2])).await;
    assert_eq!(
        stream.header("last-event-id").as_deref(),
        Some(ids[2].as_str())
    );
    let live = t.publish(&[("topic", "a"), ("data", "x")]).await;
    assert_eq!(stream.expect().await.id, live.as_str());
}

#[tokio::test]
async fn private_updates_replay_only_to_authorised_subscribers() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let secret = t
        .publish(&[("topic", "a"), ("data", "secret"), ("private", "on")])
        .await;
    let public = t.publish(&[("topic", "a"), ("data", "public")]).await;
    let mut anonymous = t.subscribe_with("topic=a", None, Some("earliest")).await;
    assert_eq!(anonymous.expect().await.id, public.as_str());
    let allowed = token(&[], &["a"]);
    let mut authorised = t
        .subscribe_with("topic=a", Some(&allowed), Some("earliest"))
        .await;
    assert_eq!(authorised.expect().await.id, secret.as_str());
    assert_eq!(authorised.expect().await.id, public.as_str());
}

#[tokio::test]
async fn durable_history_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("tidings-hub-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.db");
    let mut ids = Vec::new();
    {
        let t = TestHub::with(|b| b.history_file(&path).subscriptions(false)).await;
        for n in 0..5 {
            ids.push(t.publish(&[("topic", "a"), ("data", &n.to_string())]).await);
        }
        t.hub.shutdown();
    }
    // The old hub's tasks may still hold the file for a moment after shutdown.
    let give_up = std::time::Instant::now() + crate::support::PATIENCE;
    let hub = loop {
        match tidings_hub::Hub::builder()
            .jwt_key(tidings_hub::auth::KeyConfig::hmac(crate::support::KEY))
            .history_file(&path)
            .subscriptions(false)
            .build()
            .await
        {
            Ok(hub) => break hub,
            Err(err) if std::time::Instant::now() < give_up => {
                eprintln!("reopen: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(err) => panic!(
                "the old hub still holds {} {:?} after its shutdown: {err}",
                path.display(),
                crate::support::PATIENCE
            ),
        }
    };
    let t = TestHub::serve(hub).await;
    let mut stream = t.subscribe_with("topic=a", None, Some(&ids[1])).await;
    for id in &ids[2..] {
        assert_eq!(stream.expect().await.id, id.as_str());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn utf8_ids_round_trip_through_last_event_id() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let first = t
        .publish(&[("topic", "a"), ("id", "livre-é"), ("data", "1")])
        .await;
    assert_eq!(first, "livre-é");
    let second = t.publish(&[("topic", "a"), ("data", "2")]).await;
    let response = t
        .client
        .get(format!("{}?topic=a", t.url()))
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes("livre-é".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["last-event-id"].as_bytes(),
        "livre-é".as_bytes()
    );
    let mut stream = crate::support::Stream::new(response);
    assert_eq!(stream.expect().await.id, second.as_str());
}

#[tokio::test]
async fn a_reused_id_is_accepted_and_resuming_from_it_starts_after_its_latest_occurrence() {
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let mut live = t.subscribe("topic=a").await;
    assert_eq!(
        t.publish(&[("topic", "a"), ("id", "same"), ("data", "1")])
            .await,
        "same"
    );
    t.publish(&[("topic", "a"), ("id", "other"), ("data", "2")])
        .await;
    // Mercure accepts a reused id: 200, stored and delivered again.
    assert_eq!(
        t.publish(&[("topic", "a"), ("id", "same"), ("data", "3")])
            .await,
        "same"
    );
    let after = t.publish(&[("topic", "a"), ("data", "4")]).await;
    for data in ["1", "2", "3", "4"] {
        assert_eq!(live.expect().await.data, data);
    }
    let mut resumed = t.subscribe_with("topic=a", None, Some("same")).await;
    assert_eq!(resumed.header("last-event-id").as_deref(), Some("same"));
    let event = resumed.expect().await;
    assert_eq!(
        (event.id.as_ref(), event.data.as_ref()),
        (after.as_str(), "4")
    );
}
