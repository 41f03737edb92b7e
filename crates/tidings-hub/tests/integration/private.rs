//! Private updates never reach a subscriber whose token does not allow one of their
//! topics, nor an anonymous one: a property test over random topics, selectors and
//! claims, against a real hub.

use proptest::prelude::*;

use crate::support::{TestHub, token, topics_query};

const TOPICS: [&str; 4] = ["/a/1", "/a/2", "/b/1", "/b/2"];
const SELECTORS: [&str; 8] = [
    "/a/1", "/a/2", "/b/1", "/b/2", "/a/{x}", "/b/{x}", "*", "/c/{x}",
];

#[derive(Debug, Clone)]
struct Subscriber {
    selectors: Vec<&'static str>,
    /// `None`: anonymous.
    claims: Option<Vec<&'static str>>,
}

fn matches(selector: &str, topic: &str) -> bool {
    match selector {
        "*" => true,
        "/a/{x}" => topic.starts_with("/a/"),
        "/b/{x}" => topic.starts_with("/b/"),
        "/c/{x}" => topic.starts_with("/c/"),
        exact => exact == topic,
    }
}

fn any_match(selectors: &[&str], topics: &[&str]) -> bool {
    selectors
        .iter()
        .any(|s| topics.iter().any(|t| matches(s, t)))
}

fn subscriber() -> impl Strategy<Value = Subscriber> {
    (
        proptest::sample::subsequence(SELECTORS.to_vec(), 1..3),
        proptest::option::of(proptest::sample::subsequence(SELECTORS.to_vec(), 0..3)),
    )
        .prop_map(|(selectors, claims)| Subscriber { selectors, claims })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn private_updates_reach_exactly_the_authorised(
        topics in proptest::sample::subsequence(TOPICS.to_vec(), 1..3),
        subscribers in proptest::collection::vec(subscriber(), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let t = TestHub::with(|b| b.subscriptions(false)).await;
            let mut streams = Vec::new();
            for s in &subscribers {
                let mut selectors = s.selectors.clone();
                selectors.push("marker");
                let query = topics_query(&selectors);
                let bearer = s.claims.as_ref().map(|c| token(&[], c));
                streams.push(t.subscribe_with(&query, bearer.as_deref(), None).await);
            }
            let mut form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
            form.push(("data", "secret"));
            form.push(("private", "1"));
            t.publish(&form).await;
            t.publish(&[("topic", "marker"), ("data", "marker")]).await;
            for (s, stream) in subscribers.iter().zip(&mut streams) {
                let first = stream.expect().await;
                let authorised = any_match(&s.selectors, &topics)
                    && s.claims.as_ref().is_some_and(|c| any_match(c, &topics));
                let received = first.data == "secret";
                assert_eq!(received, authorised, "{s:?} on {topics:?}");
            }
        });
    }
}
