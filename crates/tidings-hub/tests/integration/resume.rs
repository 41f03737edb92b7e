//! Resume under load: a subscriber cut off at random points while publishes continue
//! gets every update exactly once, in order, by reconnecting with `Last-Event-ID`.

use crate::support::TestHub;

/// A small deterministic generator, so that a failure reproduces.
struct Cuts(u64);

impl Cuts {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_subscriber_gets_every_update_once_in_order() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 100;
    let t = TestHub::with(|b| b.subscriptions(false)).await;
    let first = t.publish(&[("topic", "load"), ("data", "start")]).await;

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let client = t.client.clone();
        let url = t.url();
        let token = t.publisher.clone();
        publishers.push(tokio::spawn(async move {
            for n in 0..PER_PUBLISHER {
                let body = format!("topic=load&data={p}-{n}");
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }

    let total = PUBLISHERS * PER_PUBLISHER;
    let mut received: Vec<(String, String)> = Vec::new();
    let mut last = first.clone();
    let mut cuts = Cuts(0x9E37_79B9_7F4A_7C15);
    let mut reconnections = 0;
    while received.len() < total {
        let mut stream = t.subscribe_with("topic=load", None, Some(&last)).await;
        assert_eq!(
            stream.header("last-event-id").as_deref(),
            Some(last.as_str())
        );
        let take = 1 + cuts.next(40);
        for _ in 0..take {
            if received.len() == total {
                break;
            }
            let event = stream.expect().await;
            last = event.id.to_string();
            received.push((event.id.to_string(), event.data.to_string()));
        }
        reconnections += 1;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert!(reconnections > 5);

    // The order of record is history's.
    let mut history = t.subscribe_with("topic=load", None, Some(&first)).await;
    for (n, (id, data)) in received.iter().enumerate() {
        let event = history.expect().await;
        assert_eq!(
            (event.id.as_ref(), event.data.as_ref()),
            (id.as_str(), data.as_str()),
            "update {n}"
        );
    }
    let mut per_publisher = [0usize; PUBLISHERS];
    for (_, data) in &received {
        let (p, n) = data.split_once('-').unwrap();
        let p: usize = p.parse().unwrap();
        assert_eq!(
            n.parse::<usize>().unwrap(),
            per_publisher[p],
            "publisher {p} in order, no duplicate"
        );
        per_publisher[p] += 1;
    }
}
