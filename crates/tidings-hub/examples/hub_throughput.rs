//! Measures the hub end to end over HTTP on loopback: concurrent publishers POST
//! updates, subscribers read them as event streams; prints the publish rate (each
//! acknowledged once durable) and the delivery rate.
//!
//! ```text
//! cargo run --release -p tidings-hub --example hub_throughput -- [file|memory] SUBSCRIBERS PUBLISHERS UPDATES
//! ```

use std::time::Instant;

use tidings_hub::Hub;
use tidings_hub::auth::{KeyConfig, MercureClaims, SigningKey, mint};
use tidings_wire::{Decoder, Frame};

const KEY: &str = "throughput example secret, 32 bytes";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let history = args.first().map_or("file", String::as_str).to_owned();
    let subscribers: usize = args.get(1).map_or(Ok(100), |a| a.parse())?;
    let publishers: usize = args.get(2).map_or(Ok(16), |a| a.parse())?;
    let updates: usize = args.get(3).map_or(Ok(10_000), |a| a.parse())?;

    let dir = std::env::temp_dir().join(format!("tidings-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Every subscriber connects from 127.0.0.1: no cap per client address.
    let mut limits = tidings_hub::ServerLimits::default();
    limits.max_connections_per_ip = 0;
    limits.max_requests_per_ip = 0;
    let mut builder = Hub::builder()
        .jwt_key(KeyConfig::hmac(KEY))
        .server_limits(limits)
        .subscriptions(false)
        .queue_capacity(updates.max(1024));
    if history == "file" {
        builder = builder.history_file(dir.join("history.db"));
    }
    let hub = builder.build().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/.well-known/mercure", listener.local_addr()?);
    tokio::spawn(hub.clone().serve(listener, std::future::pending()));
    let client = reqwest::Client::new();

    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut response = client.get(format!("{url}?topic=/bench")).send().await?;
        readers.push(tokio::spawn(async move {
            let mut decoder = Decoder::new();
            let mut seen = 0;
            while seen < updates {
                let Ok(Some(chunk)) = response.chunk().await else {
                    break;
                };
                decoder.feed(chunk);
                while let Ok(Some(frame)) = decoder.next_frame() {
                    if matches!(frame, Frame::Event(_)) {
                        seen += 1;
                    }
                }
            }
            (seen, Instant::now())
        }));
    }

    let token = mint(
        &SigningKey::hmac(KEY),
        &MercureClaims {
            publish: Some(vec!["*".into()]),
            ..MercureClaims::default()
        },
        None,
    )?;
    let data = "x".repeat(200);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (client, url, token, data) = (client.clone(), url.clone(), token.clone(), data.clone());
        let share = updates / publishers + usize::from(p < updates % publishers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .form(&[("topic", "/bench"), ("data", &data)])
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let published = started.elapsed();
    let mut last = started;
    let mut delivered = 0;
    for reader in readers {
        let (seen, at) = reader.await?;
        delivered += seen;
        last = last.max(at);
    }
    let all = last - started;
    println!(
        "history={history} subscribers={subscribers} publishers={publishers} updates={updates}"
    );
    println!(
        "publish: {:.0} updates/s acknowledged ({:.2?} for all)",
        updates as f64 / published.as_secs_f64(),
        published
    );
    if subscribers > 0 {
        println!(
            "delivery: {delivered} events in {:.2?} = {:.0} events/s",
            all,
            delivered as f64 / all.as_secs_f64()
        );
    }
    hub.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
