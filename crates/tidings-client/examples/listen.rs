//! Prints the events of a stream until it fails for good.
//!
//! `cargo run -p tidings-client --example listen -- http://127.0.0.1:3000/.well-known/mercure?topic=*`

use std::time::Duration;

use futures_util::StreamExt;
use tidings_client::{Event, EventSource};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: listen URL")?;
    let mut source = EventSource::builder(&url)
        .idle_timeout(Duration::from_secs(60))
        .build()?;
    while let Some(item) = source.next().await {
        match item {
            Ok(Event::Open { url }) => eprintln!("open: {url}"),
            Ok(Event::Message(message)) => {
                println!(
                    "{} [{}] {}",
                    message.event_type, message.last_event_id, message.data
                )
            }
            Ok(_) => {}
            Err(err) if err.is_terminal() => return Err(err.into()),
            Err(err) => eprintln!("{err}; reconnecting"),
        }
    }
    Ok(())
}
