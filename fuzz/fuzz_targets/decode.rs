//! Decoder fuzz target: no panic on any input, and the same frames, the same error at
//! the same point, the same last event ID and retry whatever the chunking; `finish()`
//! starts a clean stream; comments on or off changes nothing but the comment frames.
//!
//! Input layout (all bytes are used, short inputs are padded with zeros):
//! - byte 0: bit 0 comments on, bit 1 small line limit, bit 2 small event limit;
//! - byte 1: the line limit, byte 2 the event limit (in units of 2 bytes) when small;
//! - byte 3: `k`, the number of chunk-size bytes that follow (1 to 8);
//! - `k` bytes: chunk sizes, used in a cycle (low 6 bits + 1 = size; bit 6: feed an
//!   empty chunk first; bit 7: use `feed_slice`);
//! - 2 bytes: where the input splits into stream A and stream B (`finish()` between),
//!   modulo the stream's length + 1;
//! - the rest: the stream bytes.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings_wire::{DecodeError, Decoder, Frame, Text};

#[derive(Clone, Copy)]
struct Config {
    comments: bool,
    max_line_len: Option<usize>,
    max_event_size: Option<usize>,
}

impl Config {
    fn decoder(self, last_event_id: Text) -> Decoder {
        let mut builder = Decoder::builder()
            .comments(self.comments)
            .last_event_id(last_event_id);
        if let Some(limit) = self.max_line_len {
            builder = builder.max_line_len(limit);
        }
        if let Some(limit) = self.max_event_size {
            builder = builder.max_event_size(limit);
        }
        builder.build()
    }
}

#[derive(Clone, Copy)]
enum Chunking<'a> {
    Whole,
    Bytewise,
    Cycle(&'a [u8]),
}

/// What decoding one stream gave.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    last_event_id: Text,
    retry: Option<Duration>,
}

/// Feeds `stream` to `decoder` in chunks and drains it after each, stopping at the first
/// error (which must be sticky).
fn decode(decoder: &mut Decoder, stream: &[u8], chunking: Chunking<'_>) -> Decoded {
    let mut frames = Vec::new();
    let mut error = None;
    let mut pos = 0;
    let mut turn = 0;
    while pos < stream.len() && error.is_none() {
        let (len, empty_first, by_slice) = match chunking {
            Chunking::Whole => (stream.len(), false, false),
            Chunking::Bytewise => (1, false, turn % 2 == 1),
            Chunking::Cycle(sizes) => {
                let b = sizes[turn % sizes.len()];
                (usize::from(b & 63) + 1, b & 64 != 0, b & 128 != 0)
            }
        };
        turn += 1;
        let chunk = &stream[pos..(pos + len).min(stream.len())];
        pos += chunk.len();
        if empty_first {
            decoder.feed(Bytes::new());
        }
        if by_slice {
            decoder.feed_slice(chunk);
        } else {
            decoder.feed(Bytes::copy_from_slice(chunk));
        }
        error = drain(decoder, &mut frames);
    }
    if let Some(err) = error {
        decoder.feed_slice(b"data: more\n\n");
        assert_eq!(
            decoder.next_frame(),
            Err(err),
            "errors are sticky until finish()"
        );
    }
    Decoded {
        frames,
        error,
        last_event_id: decoder.last_event_id().clone(),
        retry: decoder.retry(),
    }
}

fn drain(decoder: &mut Decoder, frames: &mut Vec<Frame>) -> Option<DecodeError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                if let Frame::Event(event) = &frame {
                    assert_eq!(
                        &event.id,
                        decoder.last_event_id(),
                        "an event carries the id of its dispatch"
                    );
                    assert!(!event.event_type.is_empty(), "an event always has a type");
                }
                frames.push(frame);
            }
            Ok(None) => return None,
            Err(err) => {
                assert_eq!(decoder.next_frame(), Err(err), "errors are sticky");
                return Some(err);
            }
        }
    }
}

/// Decodes stream A, calls `finish()`, decodes stream B with the same decoder.
fn decode_two(config: Config, a: &[u8], b: &[u8], chunking: Chunking<'_>) -> (Decoded, Decoded) {
    let mut decoder = config.decoder(Text::new());
    let first = decode(&mut decoder, a, chunking);
    decoder.finish();
    let second = decode(&mut decoder, b, chunking);
    (first, second)
}

fn without_comments(frames: &[Frame]) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| !matches!(f, Frame::Comment(_)))
        .cloned()
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let byte = |i: usize| input.get(i).copied().unwrap_or(0);
    let flags = byte(0);
    let config = Config {
        comments: flags & 1 != 0,
        max_line_len: (flags & 2 != 0).then(|| usize::from(byte(1))),
        max_event_size: (flags & 4 != 0).then(|| usize::from(byte(2)) * 2),
    };
    let k = usize::from(byte(3) % 8) + 1;
    let sizes: Vec<u8> = (4..4 + k).map(byte).collect();
    let split_at = usize::from(u16::from_le_bytes([byte(4 + k), byte(5 + k)]));
    let stream = input.get(6 + k..).unwrap_or(&[]);
    let (a, b) = stream.split_at(split_at % (stream.len() + 1));

    let whole = decode_two(config, a, b, Chunking::Whole);
    for chunking in [Chunking::Bytewise, Chunking::Cycle(&sizes)] {
        assert_eq!(
            decode_two(config, a, b, chunking),
            whole,
            "chunking changed the result"
        );
    }

    // After finish(), the decoder is a fresh one that remembers the last event ID.
    let (first, second) = &whole;
    let mut fresh = config.decoder(first.last_event_id.clone());
    let alone = decode(&mut fresh, b, Chunking::Whole);
    assert_eq!(alone.frames, second.frames, "finish() left state behind");
    assert_eq!(alone.error, second.error);
    assert_eq!(alone.last_event_id, second.last_event_id);
    assert_eq!(
        alone.retry.or(first.retry),
        second.retry,
        "finish() keeps the retry"
    );

    // Comments are only surfaced or not: nothing else depends on them.
    let flipped = Config {
        comments: !config.comments,
        ..config
    };
    let (first_flipped, second_flipped) = decode_two(flipped, a, b, Chunking::Whole);
    for (x, y) in [(first, &first_flipped), (second, &second_flipped)] {
        assert_eq!(without_comments(&x.frames), without_comments(&y.frames));
        assert_eq!(x.error, y.error);
        assert_eq!(x.last_event_id, y.last_event_id);
        assert_eq!(x.retry, y.retry);
    }
    if !config.comments {
        assert!(
            whole
                .0
                .frames
                .iter()
                .chain(&whole.1.frames)
                .all(|f| !matches!(f, Frame::Comment(_)))
        );
    }
});
