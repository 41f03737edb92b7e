//! A plain decoding loop for profilers (callgrind, perf): decodes a 4 MiB corpus in
//! 16 KiB chunks with one decoder, with no benchmark harness around it. Instruction
//! counts under callgrind do not depend on the machine's load, unlike wall time.
//!
//! `profile <small|large|lines> [tidings|sse-codec|eventsource-stream|memchr] [repeats]`
//! decodes; `profile <small|large|lines> encode [repeats]` encodes the corpus's events
//! with `EventBuilder::build_into` instead. With no corpus name (as under `cargo bench`)
//! it runs every decoder on every corpus once and checks the counts.

mod contenders;
mod corpus;

use bytes::BytesMut;
use tidings_wire::EventBuilder;

use contenders::{DECODERS, by_name, memchr_only};
use corpus::{Corpus, Fields, Kind, all_fields};

const PROFILE_SIZE: usize = 4 << 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(kind) = args.next().as_deref().and_then(Kind::from_name) else {
        for kind in Kind::ALL {
            let corpus = Corpus::generate(kind, PROFILE_SIZE);
            let chunks = corpus.chunks();
            for (name, decode) in DECODERS {
                assert_eq!(decode(&chunks), corpus.events, "{name} on {}", kind.name());
            }
            assert_eq!(memchr_only(&chunks), corpus.line_end_bytes);
            println!(
                "{}: every decoder found {} events",
                kind.name(),
                corpus.events
            );
        }
        return;
    };
    let name = args.next().unwrap_or_else(|| "tidings".to_owned());
    if name == "encode" {
        let repeats: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let events = all_fields(kind, PROFILE_SIZE);
        let mut buf = BytesMut::new();
        for _ in 0..repeats {
            encode(&events, &mut buf);
        }
        println!(
            "encode on {}: {} bytes, {} events, {repeats}x",
            kind.name(),
            buf.len(),
            events.len()
        );
        return;
    }
    let decode = by_name(&name).unwrap_or_else(|| panic!("no decoder called {name}"));
    let repeats: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let corpus = Corpus::generate(kind, PROFILE_SIZE);
    let chunks = corpus.chunks();
    let mut found = 0;
    for _ in 0..repeats {
        found = decode(&chunks);
    }
    println!(
        "{name} on {}: {} bytes, {} events (found {found}), {repeats}x",
        kind.name(),
        corpus.bytes.len(),
        corpus.events
    );
}

/// Encodes `events` into `buf`, as the `encode` bench's `build_into` does. Not inlined,
/// so that a profiler can collect this function alone (callgrind `--toggle-collect`).
#[inline(never)]
fn encode(events: &[Fields], buf: &mut BytesMut) {
    buf.clear();
    for fields in events {
        let mut builder = EventBuilder::new().data(&fields.data);
        if let Some(id) = &fields.id {
            builder = builder.id(id);
        }
        if let Some(event_type) = &fields.event_type {
            builder = builder.event(event_type);
        }
        builder.build_into(buf);
    }
}
