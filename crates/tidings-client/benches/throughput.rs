//! Events per second of one client reading one local stream of many small events:
//! `tidings-client` and `reqwest-eventsource` side by side, on the same server, in the
//! same run, alternating rounds so that both see the same machine state.
//!
//! `cargo bench -p tidings-client --bench throughput` (release build). Environment:
//! `EVENTS` per round (default 200000), `ROUNDS` per client (default 9), `ONLY=tidings`
//! or `ONLY=reqwest-eventsource` to run one client alone (for a profiler).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The response: headers, then every event, then the connection closes.
fn stream_body(events: usize) -> Bytes {
    let mut body = Vec::with_capacity(events * 64 + 128);
    body.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
    for n in 0..events {
        body.extend_from_slice(
            format!("id: {n}\nevent: tick\ndata: {{\"n\":{n},\"price\":101.25}}\n\n").as_bytes(),
        );
    }
    Bytes::from(body)
}

/// Serves `body` to every connection, in 64 KiB writes, on its own thread and runtime.
fn start_server(body: Bytes) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("send address");
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 4096];
                    // One read holds the whole request of both clients.
                    if socket.read(&mut request).await.is_err() {
                        return;
                    }
                    for chunk in body.chunks(64 * 1024) {
                        if socket.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
    });
    rx.recv().expect("server address")
}

async fn tidings_round(url: &str, events: usize) -> Duration {
    let start = Instant::now();
    let mut source = tidings_client::EventSource::get(url).expect("valid URL");
    let mut seen = 0;
    let mut bytes = 0;
    while let Some(item) = source.next().await {
        if let Ok(tidings_client::Event::Message(message)) = item {
            bytes += message.data.len();
            seen += 1;
            if seen == events {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(seen, events, "tidings-client missed events");
    std::hint::black_box(bytes);
    elapsed
}

async fn reqwest_eventsource_round(url: &str, events: usize) -> Duration {
    let start = Instant::now();
    let mut source = reqwest_eventsource::EventSource::get(url);
    let mut seen = 0;
    let mut bytes = 0;
    while let Some(item) = source.next().await {
        if let Ok(reqwest_eventsource::Event::Message(message)) = item {
            bytes += message.data.len();
            seen += 1;
            if seen == events {
                break;
            }
        }
    }
    // Timed like the tidings round: up to the last event, not the close.
    let elapsed = start.elapsed();
    source.close();
    assert_eq!(seen, events, "reqwest-eventsource missed events");
    std::hint::black_box(bytes);
    elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, small.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let events = env_usize("EVENTS", if quick { 1_000 } else { 200_000 });
    let rounds = env_usize("ROUNDS", if quick { 1 } else { 9 });
    let body = stream_body(events);
    let wire_bytes = body.len();
    let url = format!("http://{}/stream", start_server(body));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let only = std::env::var("ONLY").ok();
    let run_ours = only.as_deref() != Some("reqwest-eventsource");
    let run_theirs = only.as_deref() != Some("tidings");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        // One warm-up round each (connection set-up, allocator, caches).
        if run_ours {
            tidings_round(&url, events).await;
        }
        if run_theirs {
            reqwest_eventsource_round(&url, events).await;
        }
        for _ in 0..rounds {
            if run_ours {
                ours.push(events as f64 / tidings_round(&url, events).await.as_secs_f64());
            }
            if run_theirs {
                let elapsed = reqwest_eventsource_round(&url, events).await;
                theirs.push(events as f64 / elapsed.as_secs_f64());
            }
        }
    });
    if !(run_ours && run_theirs) {
        let (name, rates) = if run_ours {
            ("tidings-client", ours)
        } else {
            ("reqwest-eventsource", theirs)
        };
        println!(
            "{name} alone: {:.0} events/s (median of {rounds})",
            median(rates)
        );
        return;
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "one client, one local stream of {events} events ({wire_bytes} bytes), median of {rounds} rounds"
    );
    println!("tidings-client       {:>12.0} events/s", ours);
    println!("reqwest-eventsource  {:>12.0} events/s", theirs);
    println!("ratio                {:>12.2}x", ours / theirs);
}
