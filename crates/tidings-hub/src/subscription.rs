//! Active subscriptions: the JSON-LD documents that Mercure publishes when a
//! subscription starts or ends, and that the subscriptions API serves.

use serde_json::{Map, Value, json};

use crate::fanout::SubscriberInfo;
use crate::http::SUBSCRIPTIONS_PATH;
use crate::log::Update;

/// The JSON-LD context of every Mercure document.
pub(crate) const CONTEXT: &str = "https://mercure.rocks/";

/// Percent-encodes a topic or subscriber id for one path segment: everything but the
/// RFC 3986 unreserved characters, so that `/`, `?`, `#`, `{` and `%` stay inside it.
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The IRI of one subscription, which is also the topic of its events:
/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`.
pub(crate) fn subscription_iri(topic: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        encode_segment(topic),
        encode_segment(subscriber)
    )
}

/// The document of one subscription (without `@context`).
pub(crate) fn document(
    subscriber: &SubscriberInfo,
    topic: &str,
    active: bool,
) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("id".into(), subscription_iri(topic, &subscriber.id).into());
    doc.insert("type".into(), "Subscription".into());
    doc.insert("topic".into(), topic.into());
    doc.insert("subscriber".into(), subscriber.id.clone().into());
    doc.insert("active".into(), active.into());
    if let Some(payload) = &subscriber.payload {
        doc.insert("payload".into(), payload.clone());
    }
    doc
}

/// The private updates that announce a subscriber's subscriptions starting or ending,
/// one per topic selector.
pub(crate) fn events(subscriber: &SubscriberInfo, active: bool) -> Vec<Update> {
    subscriber
        .topics
        .iter()
        .map(|topic| {
            let mut doc = document(subscriber, topic, active);
            doc.insert("@context".into(), CONTEXT.into());
            let mut update = Update::new(
                String::new(),
                subscription_iri(topic, &subscriber.id),
                Value::Object(doc).to_string(),
            );
            update.private = true;
            update
        })
        .collect()
}

/// The collection document of the subscriptions API.
pub(crate) fn collection(id: &str, last_event_id: &str, subscriptions: Vec<Value>) -> Value {
    json!({
        "@context": CONTEXT,
        "id": id,
        "type": "Subscriptions",
        "lastEventID": last_event_id,
        "subscriptions": subscriptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_slashes_inside() {
        assert_eq!(
            encode_segment("https://example.com/books/{id}"),
            "https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D"
        );
        assert_eq!(encode_segment("urn:uuid:a-b"), "urn%3Auuid%3Aa-b");
    }

    #[test]
    fn event_document() {
        let info = SubscriberInfo {
            id: "urn:uuid:s".into(),
            topics: vec!["/books/1".into()],
            payload: Some(json!({"user": 7})),
        };
        let events = events(&info, true);
        assert_eq!(events.len(), 1);
        assert!(events[0].private);
        assert_eq!(
            events[0].topics,
            ["/.well-known/mercure/subscriptions/%2Fbooks%2F1/urn%3Auuid%3As"]
        );
        let doc: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(
            doc,
            json!({
                "@context": "https://mercure.rocks/",
                "id": "/.well-known/mercure/subscriptions/%2Fbooks%2F1/urn%3Auuid%3As",
                "type": "Subscription",
                "topic": "/books/1",
                "subscriber": "urn:uuid:s",
                "active": true,
                "payload": {"user": 7},
            })
        );
    }
}
