//! Property tests: encoding then decoding gives the events back, and decoding does not
//! depend on how the input is chunked.

use std::time::Duration;

use proptest::prelude::*;
use tidings_wire::{Decoder, Event, EventBuilder, Frame, Text};

use crate::harness::{decode_chunks, split_at};

/// An event as a server would build it.
#[derive(Clone, Debug)]
struct Spec {
    event_type: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
    data: Option<String>,
}

/// Text rich in the characters that matter: line breaks of every kind, spaces, colons,
/// NUL, a BOM, multi-byte characters, and arbitrary Unicode.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        Just(":".to_string()),
        Just("\0".to_string()),
        Just("\u{FEFF}".to_string()),
        Just("data: ".to_string()),
        "[a-z]{0,5}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// Single-line text (no CR/LF), optionally without NUL.
fn line_text(allow_nul: bool) -> impl Strategy<Value = String> {
    tricky_text().prop_map(move |s| {
        s.chars()
            .filter(|&c| c != '\r' && c != '\n' && (allow_nul || c != '\0'))
            .collect()
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(line_text(true)),
        prop::option::of(line_text(false)),
        prop::option::of(any::<u64>()),
        prop::option::of(tricky_text()),
        prop::option::weighted(0.9, tricky_text()),
    )
        .prop_map(|(event_type, id, retry, comment, data)| Spec {
            event_type,
            id,
            retry,
            comment,
            data,
        })
}

fn encode(spec: &Spec) -> bytes::Bytes {
    let mut b = EventBuilder::new();
    if let Some(t) = &spec.event_type {
        b = b.try_event(t).expect("no line breaks");
    }
    if let Some(id) = &spec.id {
        b = b.try_id(id).expect("no line breaks or NUL");
    }
    if let Some(r) = spec.retry {
        b = b.retry(Duration::from_millis(r));
    }
    if let Some(c) = &spec.comment {
        b = b.comment(c);
    }
    if let Some(d) = &spec.data {
        b = b.data(d);
    }
    let bytes = b.build();
    assert_eq!(bytes.len(), b.encoded_len());
    bytes
}

/// What a decoder must yield for a sequence of encoded events (comments off).
fn expected(specs: &[Spec]) -> (Vec<Frame>, String) {
    let mut frames = Vec::new();
    let mut last_id = String::new();
    for spec in specs {
        if let Some(r) = spec.retry {
            frames.push(Frame::Retry(Duration::from_millis(r)));
        }
        if let Some(id) = &spec.id {
            last_id.clone_from(id);
        }
        if let Some(data) = &spec.data {
            let event_type = match spec.event_type.as_deref() {
                None | Some("") => "message",
                Some(t) => t,
            };
            frames.push(Frame::Event(Event {
                event_type: Text::from(event_type),
                data: Text::from(data.replace("\r\n", "\n").replace('\r', "\n")),
                id: Text::from(last_id.as_str()),
            }));
        }
    }
    (frames, last_id)
}

/// Sorted, deduplicated split points within `0..=len`.
fn points(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut p: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
    p.sort_unstable();
    p.dedup();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity(
        specs in prop::collection::vec(spec(), 1..6),
        raw_points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire: Vec<u8> = specs.iter().flat_map(|s| encode(s).to_vec()).collect();
        let chunks = split_at(&wire, &points(wire.len(), &raw_points));
        let outcome = decode_chunks(&Decoder::builder(), chunks);
        let (frames, last_id) = expected(&specs);
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.frames, frames);
        prop_assert_eq!(outcome.last_event_id, last_id);
    }

    #[test]
    fn decoding_is_invariant_under_rechunking(
        input in prop::collection::vec(
            prop_oneof![
                Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..]), Just(&b":"[..]),
                Just(&b" "[..]), Just(&b"data"[..]), Just(&b"id"[..]), Just(&b"event"[..]),
                Just(&b"retry"[..]), Just(&b"12"[..]), Just(&b"\xef\xbb\xbf"[..]), Just(&b"\xef"[..]),
                Just(&b"\xff"[..]), Just(&b"\0"[..]), Just(&b"x"[..]),
            ],
            0..64,
        ).prop_map(|pieces| pieces.concat()),
        raw_points in prop::collection::vec(any::<usize>(), 0..16),
        line_limit in prop_oneof![Just(usize::MAX), 1usize..16],
        event_limit in prop_oneof![Just(usize::MAX), 1usize..32],
    ) {
        let builder = Decoder::builder().comments(true).max_line_len(line_limit).max_event_size(event_limit);
        let whole = decode_chunks(&builder, [&input[..]]);
        let chunked = decode_chunks(&builder, split_at(&input, &points(input.len(), &raw_points)));
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_rechunk_alike(
        input in prop::collection::vec(any::<u8>(), 0..256),
        raw_points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let builder = Decoder::builder().comments(true);
        let whole = decode_chunks(&builder, [&input[..]]);
        let bytewise = decode_chunks(&builder, input.chunks(1));
        let chunked = decode_chunks(&builder, split_at(&input, &points(input.len(), &raw_points)));
        prop_assert_eq!(&bytewise, &whole);
        prop_assert_eq!(chunked, whole);
    }
}
