//! Feeding a decoder in different chunkings and collecting what it yields.

use bytes::Bytes;
use tidings_wire::{DecodeError, Decoder, DecoderBuilder, Frame};

/// What one decoding run produced: the frames, the error that stopped it (if any), and the
/// last event ID after `finish()`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) frames: Vec<Frame>,
    pub(crate) error: Option<DecodeError>,
    pub(crate) last_event_id: String,
}

/// Decodes `chunks` in order with a decoder from `builder`, then finishes the stream.
pub(crate) fn decode_chunks<'a>(
    builder: &DecoderBuilder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome {
    let mut decoder: Decoder = builder.clone().build();
    let mut frames = Vec::new();
    let mut error = None;
    'feed: for chunk in chunks {
        decoder.feed(Bytes::copy_from_slice(chunk));
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => {
                    error = Some(err);
                    break 'feed;
                }
            }
        }
    }
    decoder.finish();
    Outcome {
        frames,
        error,
        last_event_id: decoder.last_event_id().to_string(),
    }
}

/// Splits `input` at the given sorted offsets.
pub(crate) fn split_at<'a>(input: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for &p in points {
        chunks.push(&input[start..p]);
        start = p;
    }
    chunks.push(&input[start..]);
    chunks
}

/// Decodes `input` whole, one byte at a time and at every two-chunk split point, asserts
/// that every run gives the same outcome, and returns it.
pub(crate) fn decode_every_way(builder: &DecoderBuilder, input: &[u8]) -> Outcome {
    let whole = decode_chunks(builder, [input]);
    let bytewise = decode_chunks(builder, input.chunks(1));
    assert_eq!(
        bytewise, whole,
        "one byte at a time differs from whole input"
    );
    for p in 0..=input.len() {
        let split = decode_chunks(builder, split_at(input, &[p]));
        assert_eq!(split, whole, "split at {p} differs from whole input");
    }
    whole
}
