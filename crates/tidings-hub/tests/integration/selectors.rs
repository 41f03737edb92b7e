//! Hostile topic selectors: refused with 400 and a reason, compiled off the async
//! workers, and held in a cache bounded in bytes, while legitimate subscribers are
//! served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{PATIENCE, TestHub, topics_query};

async fn refusal(t: &TestHub, query: &str) -> (u16, String) {
    let response = t.request(query, None, None).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The URL measured in issue 8: 100 distinct templates with a 256-character prefix.
fn hostile_query(round: usize) -> String {
    let topics: Vec<String> = (0..100)
        .map(|n| format!("/t{round}x{n}/{{v:256}}"))
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    topics_query(&topics)
}

#[tokio::test]
async fn selectors_over_a_limit_are_refused_with_400_and_the_limit() {
    let t = TestHub::start().await;

    let (status, body) = refusal(&t, &hostile_query(0)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        "topic template too complex: prefix modifier :256, at most :64\n"
    );

    let long = "a".repeat(60_000);
    let (status, body) = refusal(&t, &topics_query(&[&long])).await;
    assert_eq!(status, 400);
    assert_eq!(body, "topic selector too long: 60000 bytes, at most 1024\n");

    // Each template within the limits, but together too costly for one subscription.
    let large: Vec<String> = (0..20).map(|n| format!("/large/{n}/{{v:64}}")).collect();
    let large: Vec<&str> = large.iter().map(String::as_str).collect();
    let (status, body) = refusal(&t, &topics_query(&large)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "topic templates too complex: together they compile to more than 1048576 bytes\n"
    );

    assert!(
        t.hub
            .metrics()
            .contains("tidings_selector_refusals_total 3"),
        "{}",
        t.hub.metrics()
    );
    assert_eq!(t.hub.connections(), 0);
}

#[tokio::test]
async fn the_limits_are_configurable() {
    let mut limits = tidings_hub::topic::SelectorLimits::default();
    limits.max_length = 16;
    limits.max_prefix = 300;
    let t = TestHub::with(|b| b.selector_limits(limits).subscriptions(false)).await;
    let (status, body) = refusal(&t, "topic=urn:17-bytes-long").await;
    assert_eq!(status, 400);
    assert_eq!(body, "topic selector too long: 17 bytes, at most 16\n");
    // A longer prefix is allowed here, and still bounded by the compiled size.
    let mut stream = t.subscribe(&topics_query(&["/p/{v:100}"])).await;
    t.publish(&[("topic", "/p/abc"), ("data", "in")]).await;
    assert_eq!(stream.expect().await.data, "in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_subscribers_are_served_while_hostile_clients_hammer() {
    // The cache is process-wide; this bound holds for every hub of the test binary.
    const CACHE_BOUND: usize = 1024 * 1024;
    tidings_hub::topic::set_template_cache_capacity(CACHE_BOUND);
    let t = Arc::new(TestHub::with(|b| b.subscriptions(false)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut hostile = Vec::new();
    for client in 0..4 {
        let (t, stop, accepted) = (Arc::clone(&t), Arc::clone(&stop), Arc::clone(&accepted));
        hostile.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Refused outright.
                let (status, _) = refusal(&t, &hostile_query(client * 1_000_000 + round)).await;
                assert_eq!(status, 400);
                // Accepted but as costly as the limits allow: 8 distinct templates
                // of about 58 kB each, never seen before, so each is compiled.
                let topics: Vec<String> = (0..8)
                    .map(|n| format!("/h{client}/{round}/{n}/{{v:64}}"))
                    .collect();
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                let response = t.request(&topics_query(&topics), None, None).await;
                assert_eq!(response.status(), 200);
                accepted.fetch_add(1, Ordering::Relaxed);
                // Dropped at once: the subscriber goes, its templates may be evicted.
                drop(response);
            }
        }));
    }

    // Let the hostile clients get going before the legitimate ones arrive.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while accepted.load(Ordering::Relaxed) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hostile clients stuck"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let health = tokio::time::timeout(PATIENCE, t.client.get(format!("{}/healthz", t.base)).send())
        .await
        .expect("/healthz answers while templates compile")
        .unwrap();
    assert_eq!(health.status(), 200);

    let mut legitimate = tokio::time::timeout(
        PATIENCE,
        // A template no other test uses: it is compiled now, behind the hostile ones.
        t.subscribe(&topics_query(&["https://example.com/legit-{id}"])),
    )
    .await
    .expect("a legitimate subscriber gets in");
    let id = tokio::time::timeout(
        PATIENCE,
        t.publish(&[("topic", "https://example.com/legit-1"), ("data", "hello")]),
    )
    .await
    .expect("a publish is answered");
    let event = legitimate.expect().await;
    assert_eq!(event.id, id.as_str());
    assert_eq!(event.data, "hello");

    // Rounds of 8 new templates of about 58 kB each: let three times the bound go
    // through the cache, checking that it evicts rather than grows.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while accepted.load(Ordering::Relaxed) * 8 * 50_000 < 3 * CACHE_BOUND {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hostile clients stuck"
        );
        let bytes = t.metric("tidings_template_cache_bytes").await as u64;
        assert!(bytes as usize <= CACHE_BOUND, "{bytes} > {CACHE_BOUND}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in hostile {
        task.await.unwrap();
    }
    let bytes = t.metric("tidings_template_cache_bytes").await as u64;
    assert!(bytes as usize <= CACHE_BOUND, "{bytes} > {CACHE_BOUND}");
    assert!(bytes > 0, "the cache holds what it can");
    tidings_hub::topic::set_template_cache_capacity(
        tidings_hub::topic::DEFAULT_TEMPLATE_CACHE_BYTES,
    );
}
