//! The benchmarks' baseline: a Server-Sent Events pub/sub server written the way a user
//! would write one in an afternoon, with axum and one `tokio::sync::broadcast` channel.
//!
//! It speaks enough of Tidings' publish form for `tidings bench` to drive it unchanged:
//! `POST /.well-known/mercure` with `topic=…&data=…` (form-encoded) answers the new
//! update's id; `GET /.well-known/mercure?topic=…` streams the updates of those topics.
//! Every subscriber receives every update from the one channel and drops the ones of
//! other topics; a subscriber that lags past the channel's capacity skips what it
//! missed. There is no history, no authorisation and no limit: it is the floor of
//! what a hub costs, not a hub.
//!
//! `tidings-baseline [ADDR] [CAPACITY]` (defaults `127.0.0.1:3001` and 1024).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Form, Router};
use futures_util::Stream;
use tokio::sync::broadcast;

/// One published update.
struct Update {
    topics: Vec<String>,
    id: String,
    data: String,
}

#[derive(Clone)]
struct App {
    updates: broadcast::Sender<Arc<Update>>,
    next_id: Arc<AtomicU64>,
}

async fn subscribe(
    State(app): State<App>,
    Query(query): Query<Vec<(String, String)>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let topics: Vec<String> = query
        .into_iter()
        .filter(|(name, _)| name == "topic")
        .map(|(_, value)| value)
        .collect();
    let receiver = app.updates.subscribe();
    let stream =
        futures_util::stream::unfold((receiver, topics), |(mut receiver, topics)| async move {
            loop {
                match receiver.recv().await {
                    Ok(update) => {
                        if update.topics.iter().any(|t| topics.contains(t)) {
                            let event = Event::default()
                                .id(update.id.clone())
                                .data(update.data.clone());
                            return Some((Ok(event), (receiver, topics)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn publish(State(app): State<App>, Form(form): Form<Vec<(String, String)>>) -> String {
    let mut topics = Vec::new();
    let mut data = String::new();
    for (name, value) in form {
        match name.as_str() {
            "topic" => topics.push(value),
            "data" => data = value,
            _ => {}
        }
    }
    let id = format!(
        "urn:baseline:{}",
        app.next_id.fetch_add(1, Ordering::Relaxed)
    );
    // No subscriber is not an error.
    let _ = app.updates.send(Arc::new(Update {
        topics,
        id: id.clone(),
        data,
    }));
    id
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3001".to_owned());
    let capacity = args.next().and_then(|c| c.parse().ok()).unwrap_or(1024);
    let (updates, _) = broadcast::channel(capacity);
    let app = App {
        updates,
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let router = Router::new()
        .route("/.well-known/mercure", get(subscribe).post(publish))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("tidings-baseline: listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await
}
