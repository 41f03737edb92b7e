//! A hub killed with SIGKILL during concurrent publishes keeps every update it
//! acknowledged, in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_hub::auth::{MercureClaims, SigningKey, mint};

use crate::process::{KEY, Server};

const PUBLISHERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_update_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let token = mint(
        &SigningKey::hmac(KEY),
        &MercureClaims {
            publish: Some(vec!["*".into()]),
            ..MercureClaims::default()
        },
        None,
    )
    .unwrap();
    let args = ["--jwt-key", KEY, "--no-subscriptions"];
    let mut server = Server::start(&args, Some(&db));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Each publisher records the ids the hub acknowledged, in the order it sent them.
    let acknowledged: Arc<Mutex<Vec<Vec<String>>>> =
        Arc::new(Mutex::new(vec![Vec::new(); PUBLISHERS]));
    let (enough_tx, mut enough_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (client, url, token) = (client.clone(), server.url.clone(), token.clone());
        let acknowledged = Arc::clone(&acknowledged);
        let enough_tx = enough_tx.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .form(&[("topic", "/crash"), ("data", &format!("{p}-{n}"))])
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(id) = response.text().await else { break };
                let total = {
                    let mut acked = acknowledged.lock().unwrap();
                    acked[p].push(id);
                    acked.iter().map(Vec::len).sum::<usize>()
                };
                if total == 300 {
                    let _ = enough_tx.try_send(());
                }
            }
        }));
    }
    drop(enough_tx);
    enough_rx.recv().await.expect("300 publishes acknowledged");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    drop(server);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total >= 300);

    let server = Server::start(&args, Some(&db));
    let marker = client
        .post(&server.url)
        .bearer_auth(&token)
        .form(&[("topic", "/crash"), ("data", "marker")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut stream = client
        .get(format!("{}?topic=/crash", server.url))
        .header("last-event-id", "earliest")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let mut decoder = tidings_wire::Decoder::new();
    let mut history = Vec::new();
    'read: loop {
        let chunk = stream.chunk().await.unwrap().expect("stream open");
        decoder.feed(chunk);
        while let Some(frame) = decoder.next_frame().unwrap() {
            if let tidings_wire::Frame::Event(event) = frame {
                if event.id == marker.as_str() {
                    break 'read;
                }
                history.push((event.id.to_string(), event.data.to_string()));
            }
        }
    }

    let mut seen = std::collections::HashSet::new();
    for (id, _) in &history {
        assert!(seen.insert(id.clone()), "{id} twice in history");
    }
    for (p, ids) in acknowledged.iter().enumerate() {
        let in_history: Vec<&String> = history
            .iter()
            .filter(|(_, data)| data.split_once('-').map(|(q, _)| q) == Some(&p.to_string()))
            .map(|(id, _)| id)
            .collect();
        // Every acknowledged update is there, in the order it was acknowledged; one
        // more may follow (stored, but the kill came before the answer).
        assert!(in_history.len() >= ids.len() && in_history.len() <= ids.len() + 1);
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(in_history[n], id, "publisher {p}, update {n}");
        }
    }
}
