//! Active subscriptions: the subscription events and the subscriptions API.

use serde_json::{Value, json};

use crate::support::{TestHub, token, token_with, topics_query};

const ALL_SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

async fn get(t: &TestHub, path: &str, bearer: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = t.client.get(format!("{}{path}", t.base));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn subscription_events_announce_start_and_end() {
    let t = TestHub::start().await;
    let watcher_token = token(&[], &[ALL_SUBSCRIPTIONS]);
    let mut watcher = t
        .subscribe_with(
            &topics_query(&[ALL_SUBSCRIPTIONS]),
            Some(&watcher_token),
            None,
        )
        .await;
    let _own = watcher.expect().await; // the watcher's own subscription

    let alice = token_with(
        &[],
        &["https://example.com/books/{id}"],
        Some(json!({"user": "alice"})),
        None,
    );
    let stream = t
        .subscribe_with(
            &topics_query(&["https://example.com/books/1"]),
            Some(&alice),
            None,
        )
        .await;
    let started: Value = serde_json::from_str(&watcher.expect().await.data).unwrap();
    assert_eq!(started["@context"], "https://mercure.rocks/");
    assert_eq!(started["type"], "Subscription");
    assert_eq!(started["topic"], "https://example.com/books/1");
    assert_eq!(started["active"], true);
    assert_eq!(started["payload"], json!({"user": "alice"}));
    let subscriber = started["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"));
    assert_eq!(
        started["id"],
        format!(
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F1/{}",
            subscriber.replace(':', "%3A")
        )
    );

    drop(stream);
    let ended: Value = serde_json::from_str(&watcher.expect().await.data).unwrap();
    assert_eq!(ended["active"], false);
    assert_eq!(ended["subscriber"], subscriber.as_str());

    // Anonymous subscribers never see subscription events: they are private.
    let mut anonymous = t
        .subscribe(&topics_query(&[ALL_SUBSCRIPTIONS, "marker"]))
        .await;
    t.publish(&[("topic", "marker"), ("data", "m")]).await;
    assert_eq!(anonymous.expect().await.data, "m");
}

#[tokio::test]
async fn subscriptions_api_documents() {
    let t = TestHub::start().await;
    let reader = token(&[], &[ALL_SUBSCRIPTIONS]);
    let alice = token_with(&[], &["*"], Some(json!({"user": "alice"})), None);
    let _stream = t
        .subscribe_with(
            &topics_query(&["/books/1", "/books/{id}"]),
            Some(&alice),
            None,
        )
        .await;

    let (status, content_type, body) =
        get(&t, "/.well-known/mercure/subscriptions", Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/ld+json"));
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["@context"], "https://mercure.rocks/");
    assert_eq!(doc["id"], "/.well-known/mercure/subscriptions");
    assert_eq!(doc["type"], "Subscriptions");
    assert!(doc["lastEventID"].as_str().is_some());

    // With the token in the query (it is in the URL), no cache may keep the answer.
    let by_query = t
        .client
        .get(format!(
            "{}/.well-known/mercure/subscriptions?authorization={reader}",
            t.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    assert_eq!(
        by_query.headers().get("cache-control").unwrap(),
        "private, no-cache"
    );
    let alice_subs: Vec<&Value> = doc["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["payload"] == json!({"user": "alice"}))
        .collect();
    assert_eq!(alice_subs.len(), 2, "{doc:#}");
    let subscriber = alice_subs[0]["subscriber"].as_str().unwrap().to_owned();
    let encoded_subscriber = subscriber.replace(':', "%3A");

    let path = "/.well-known/mercure/subscriptions/%2Fbooks%2F%7Bid%7D";
    let (status, _, body) = get(&t, path, Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["id"], path);
    assert_eq!(doc["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(doc["subscriptions"][0]["topic"], "/books/{id}");

    let one = format!("{path}/{encoded_subscriber}");
    let (status, _, body) = get(&t, &one, Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["@context"], "https://mercure.rocks/");
    assert_eq!(doc["id"], one);
    assert_eq!(doc["type"], "Subscription");
    assert_eq!(doc["topic"], "/books/{id}");
    assert_eq!(doc["subscriber"], subscriber.as_str());
    assert_eq!(doc["active"], true);
    assert!(doc["lastEventID"].as_str().is_some());

    let unknown = format!("{path}/urn%3Auuid%3Anobody");
    assert_eq!(get(&t, &unknown, Some(&reader)).await.0, 404);
    assert_eq!(get(&t, path, None).await.0, 401);
    let narrow = token(&[], &["/books/1"]);
    assert_eq!(get(&t, path, Some(&narrow)).await.0, 403);
}
