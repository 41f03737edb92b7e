//! The decoders the benchmarks compare, each wrapped in the leanest harness its public
//! API allows: feed the 16 KiB chunks, pull every event out, count the events.
//!
//! Shared by the `decode` and `profile` bench targets.

use std::{convert::Infallible, hint::black_box, pin::pin};

use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;

/// Counts the events `tidings_wire::Decoder` finds in `chunks`.
pub(crate) fn tidings(chunks: &[Bytes]) -> usize {
    let mut decoder = tidings_wire::Decoder::new();
    let mut events = 0;
    for chunk in chunks {
        decoder.feed(chunk.clone());
        while let Some(frame) = decoder
            .next_frame()
            .expect("the corpus is within the limits")
        {
            if let tidings_wire::Frame::Event(event) = frame {
                black_box(event);
                events += 1;
            }
        }
    }
    events
}

/// Counts the events `eventsource-stream` finds in `chunks`. Its input stream is always
/// ready, so `block_on` polls straight through without parking.
pub(crate) fn eventsource_stream(chunks: &[Bytes]) -> usize {
    let body = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, Infallible>));
    let mut events = pin!(body.eventsource());
    futures_executor::block_on(async {
        let mut count = 0;
        while let Some(event) = events.next().await {
            black_box(event.expect("the corpus is valid UTF-8"));
            count += 1;
        }
        count
    })
}

/// Counts the messages `sse-codec` finds in `chunks`, calling its codec directly on a
/// `BytesMut` that each chunk is appended to: the leanest harness for it (its
/// `decode_stream` over an `AsyncRead` would add a copy per read).
pub(crate) fn sse_codec(chunks: &[Bytes]) -> usize {
    use futures_codec::Decoder as _;

    let mut codec = sse_codec::SSECodec::default();
    let mut buf = futures_codec::BytesMut::new();
    let mut count = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(event) = codec.decode(&mut buf).expect("the corpus is valid UTF-8") {
            if let sse_codec::Event::Message { .. } = event {
                black_box(event);
                count += 1;
            }
        }
    }
    count
}

/// Counts the line-end bytes (CR or LF) in `chunks`: the floor any decoder has to scan.
pub(crate) fn memchr_only(chunks: &[Bytes]) -> usize {
    let mut line_ends = 0;
    for chunk in chunks {
        let mut rest = &chunk[..];
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', rest) {
            line_ends += 1;
            rest = &rest[offset + 1..];
        }
    }
    black_box(line_ends)
}

pub(crate) type Contender = (&'static str, fn(&[Bytes]) -> usize);

pub(crate) const DECODERS: [Contender; 3] = [
    ("tidings", tidings),
    ("sse-codec", sse_codec),
    ("eventsource-stream", eventsource_stream),
];

/// The decoder called `name` in [`DECODERS`], or the `memchr` baseline.
// Only the `profile` target looks decoders up by name.
#[allow(dead_code)]
pub(crate) fn by_name(name: &str) -> Option<fn(&[Bytes]) -> usize> {
    if name == "memchr" {
        return Some(memchr_only);
    }
    DECODERS
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, decode)| decode)
}
