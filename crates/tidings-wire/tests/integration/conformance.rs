//! The conformance table: every rule of the WHATWG event-stream interpretation, each case
//! decoded whole, one byte at a time and at every two-chunk split point.

use std::time::Duration;

use tidings_wire::{DecodeError, Decoder, DecoderBuilder, Event, Frame, Text};

use crate::harness::{Outcome, decode_every_way};

/// One row of the table.
struct Case {
    name: &'static str,
    input: &'static [u8],
    /// Everything the decoder yields, comments included.
    frames: Vec<Frame>,
    /// The last event ID once the stream has ended.
    last_event_id: &'static str,
}

fn ev(event_type: &str, data: &str, id: &str) -> Frame {
    Frame::Event(Event {
        event_type: Text::from(event_type),
        data: Text::from(data),
        id: Text::from(id),
    })
}

fn msg(data: &str) -> Frame {
    ev("message", data, "")
}

fn retry(ms: u64) -> Frame {
    Frame::Retry(Duration::from_millis(ms))
}

fn comment(text: &str) -> Frame {
    Frame::Comment(Text::from(text))
}

fn case(name: &'static str, input: &'static [u8], frames: Vec<Frame>) -> Case {
    Case {
        name,
        input,
        frames,
        last_event_id: "",
    }
}

fn case_id(name: &'static str, input: &'static [u8], frames: Vec<Frame>, id: &'static str) -> Case {
    Case {
        name,
        input,
        frames,
        last_event_id: id,
    }
}

fn table() -> Vec<Case> {
    vec![
        // 1. UTF-8, whatever the charset; invalid sequences become U+FFFD.
        case("utf8 multibyte", "data: é€😀\n\n".as_bytes(), vec![msg("é€😀")]),
        case("utf8 invalid byte", b"data: a\xffb\n\n", vec![msg("a\u{FFFD}b")]),
        case("utf8 truncated at line end", b"data: \xe2\x82\n\n", vec![msg("\u{FFFD}")]),
        case("utf8 lone continuation", b"data: \x80\x80\n\n", vec![msg("\u{FFFD}\u{FFFD}")]),
        case("utf8 overlong", b"data: \xc0\xaf\n\n", vec![msg("\u{FFFD}\u{FFFD}")]),
        case("utf8 surrogate", b"data: \xed\xa0\x80\n\n", vec![msg("\u{FFFD}\u{FFFD}\u{FFFD}")]),
        case(
            "utf8 invalid in type and across data lines",
            b"event: \xfe\ndata: \xf0\x9f\ndata: \x98\x80\n\n",
            vec![ev("\u{FFFD}", "\u{FFFD}\n\u{FFFD}\u{FFFD}", "")],
        ),
        case_id("utf8 invalid in id", b"id: 1\xff\ndata: x\n\n", vec![ev("message", "x", "1\u{FFFD}")], "1\u{FFFD}"),
        case(
            "utf8 invalid field name is unknown",
            b"d\xffta: x\ndata: y\n\n",
            vec![msg("y")],
        ),
        // 2. One leading BOM is dropped; any other is text.
        case("bom dropped", b"\xef\xbb\xbfdata: x\n\n", vec![msg("x")]),
        case("bom then blank line", b"\xef\xbb\xbf\ndata: x\n\n", vec![msg("x")]),
        case(
            "second bom makes an unknown field",
            b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n",
            vec![msg("y")],
        ),
        case("bom on a later line is text", b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n", vec![msg("a"), msg("c")]),
        case("bom inside a value is kept", b"data: \xef\xbb\xbfx\n\n", vec![msg("\u{FEFF}x")]),
        case("partial bom is text", b"\xef\xbbdata: x\n\ndata: y\n\n", vec![msg("y")]),
        case("partial bom then line end", b"\xef\n\ndata: y\n\n", vec![msg("y")]),
        case("only a bom", b"\xef\xbb\xbf", vec![]),
        // 3. Line endings: CRLF, LF, CR, mixed.
        case("lf", b"data: a\n\n", vec![msg("a")]),
        case("cr", b"data: a\r\r", vec![msg("a")]),
        case("crlf", b"data: a\r\n\r\n", vec![msg("a")]),
        case(
            "mixed endings",
            b"data: a\rdata: b\ndata: c\r\n\ndata: d\n\r",
            vec![msg("a\nb\nc"), msg("d")],
        ),
        case("lf cr is two endings", b"data: a\n\rdata: b\n\n", vec![msg("a"), msg("b")]),
        case("cr cr lf", b"data: a\r\r\ndata: b\r\n\r\n", vec![msg("a"), msg("b")]),
        case("cr at end of stream ends the line", b"data: a\r\r", vec![msg("a")]),
        case("crlf crlf crlf", b"data: a\r\n\r\n\r\ndata: b\r\n\r\n", vec![msg("a"), msg("b")]),
        // 4. Blank lines dispatch; comments.
        case(
            "comments",
            b": hello\n:no space\n:  two spaces\n:\ndata: x\n: inside\n\n",
            vec![comment("hello"), comment("no space"), comment(" two spaces"), comment(""), comment("inside"), msg("x")],
        ),
        case("comment does not dispatch", b"data: x\n:\n", vec![comment("")]),
        case("comment with colons", b": a: b\n", vec![comment("a: b")]),
        case("blank lines alone", b"\n\n\r\n\r", vec![]),
        // 5. Field parsing.
        case("no space after colon", b"data:x\n\n", vec![msg("x")]),
        case("only one space removed", b"data:  x\n\n", vec![msg(" x")]),
        case("tab is not removed", b"data:\tx\n\n", vec![msg("\tx")]),
        case("colon in value", b"data: a:b: c\n\n", vec![msg("a:b: c")]),
        case("trailing space kept", b"data: x \n\n", vec![msg("x ")]),
        case("field without colon", b"data\n\n", vec![msg("")]),
        case("two fields without colon", b"data\ndata\n\n", vec![msg("\n")]),
        case("empty data value", b"data:\n\n", vec![msg("")]),
        case("names are case-sensitive", b"Data: x\nDATA: y\ndata: z\n\n", vec![msg("z")]),
        case("unknown field ignored", b"foo: bar\nfoo\ndata: x\n\n", vec![msg("x")]),
        case("field name with space", b"data : x\n data: y\ndata: z\n\n", vec![msg("z")]),
        // event
        case("event type", b"event: add\ndata: 1\n\n", vec![ev("add", "1", "")]),
        case("last event field wins", b"event: a\nevent: b\ndata: 1\n\n", vec![ev("b", "1", "")]),
        case("empty event type is message", b"event:\ndata: 1\n\n", vec![msg("1")]),
        case("event type with spaces", b"event:  spaced out \ndata: 1\n\n", vec![ev(" spaced out ", "1", "")]),
        case("event type without data is dropped", b"event: x\n\ndata: y\n\n", vec![msg("y")]),
        case("event type does not carry over", b"event: x\ndata: 1\n\ndata: 2\n\n", vec![ev("x", "1", ""), msg("2")]),
        // data
        case("data lines joined with lf", b"data: a\ndata: b\ndata: c\n\n", vec![msg("a\nb\nc")]),
        case("one trailing lf removed", b"data: a\ndata:\n\n", vec![msg("a\n")]),
        case("empty lines of data", b"data:\ndata:\ndata:\n\n", vec![msg("\n\n")]),
        case(
            "data before final empty line is discarded",
            b"data: a\n\ndata: b",
            vec![msg("a")],
        ),
        case("null character in data", b"data: a\x00b\n\n", vec![msg("a\0b")]),
        // id
        case_id("id", b"id: 1\ndata: a\n\n", vec![ev("message", "a", "1")], "1"),
        case_id(
            "id carries over",
            b"id: 1\ndata: a\n\ndata: b\n\n",
            vec![ev("message", "a", "1"), ev("message", "b", "1")],
            "1",
        ),
        case_id(
            "empty id resets",
            b"id: 1\ndata: a\n\nid\ndata: b\n\nid:\ndata: c\n\n",
            vec![ev("message", "a", "1"), msg("b"), msg("c")],
            "",
        ),
        case_id(
            "id with nul is ignored",
            b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
            vec![ev("message", "a", "1"), ev("message", "b", "1")],
            "1",
        ),
        case_id("id keeps spaces", b"id:  x \ndata: a\n\n", vec![ev("message", "a", " x ")], " x "),
        case_id("last id field wins", b"id: 1\nid: 2\ndata: a\n\n", vec![ev("message", "a", "2")], "2"),
        case_id("id after data in the same event", b"data: a\nid: 9\n\n", vec![ev("message", "a", "9")], "9"),
        // retry
        case("retry", b"retry: 5000\n", vec![retry(5000)]),
        case("retry zero", b"retry: 0\n", vec![retry(0)]),
        case("retry leading zeros", b"retry: 0042\n", vec![retry(42)]),
        case(
            "bogus retry ignored",
            b"retry: +5\nretry:  5\nretry: 5ms\nretry: -1\nretry: 1.5\nretry:\nretry\nretry: 5 \nretry: \xd9\xa3\n",
            vec![],
        ),
        case(
            "retry overflow saturates",
            b"retry: 99999999999999999999999999999\n",
            vec![retry(u64::MAX)],
        ),
        case("retry takes effect without dispatch", b"retry: 7\ndata: x", vec![retry(7)]),
        case("retry no space", b"retry:12\n", vec![retry(12)]),
        // 6. Dispatch.
        case_id("id without data is committed", b"id: 5\n\n", vec![], "5"),
        case_id(
            "id without data carries to next event",
            b"id: 5\n\ndata: x\n\n",
            vec![ev("message", "x", "5")],
            "5",
        ),
        // 7. End of stream.
        case("unfinished event discarded", b"data: a\n", vec![]),
        case("unfinished line discarded", b"data: a", vec![]),
        case_id("id in unfinished event does not take effect", b"id: 1\ndata: a\n\nid: 2\ndata: b\n", vec![ev("message", "a", "1")], "1"),
        case("empty stream", b"", vec![]),
    ]
}

#[test]
fn conformance_table() {
    let builder = Decoder::builder().comments(true);
    for case in table() {
        let outcome = decode_every_way(&builder, case.input);
        let expected = Outcome {
            frames: case.frames,
            error: None,
            last_event_id: case.last_event_id.to_string(),
        };
        assert_eq!(outcome, expected, "case {:?}", case.name);
    }
}

#[test]
fn comments_are_skipped_unless_asked_for() {
    let outcome = decode_every_way(&Decoder::builder(), b": ping\ndata: x\n: pong\n\n");
    assert_eq!(outcome.frames, vec![msg("x")]);
}

#[test]
fn initial_last_event_id_is_carried() {
    let builder = Decoder::builder().last_event_id("41");
    let outcome = decode_every_way(&builder, b"data: a\n\nid: 42\ndata: b\n\n");
    assert_eq!(
        outcome.frames,
        vec![ev("message", "a", "41"), ev("message", "b", "42")]
    );
    assert_eq!(outcome.last_event_id, "42");
}

fn limited(line: usize, event: usize) -> DecoderBuilder {
    Decoder::builder().max_line_len(line).max_event_size(event)
}

#[test]
fn line_limit() {
    // A line of exactly the limit passes; one byte more is an error, after the events
    // before it, whatever the chunking.
    let ok = decode_every_way(&limited(8, 100), b"data: ab\n\n");
    assert_eq!(ok.frames, vec![msg("ab")]);
    let err = decode_every_way(&limited(8, 100), b"data: a\n\ndata: abc\n\ndata: z\n\n");
    assert_eq!(err.frames, vec![msg("a")]);
    assert_eq!(err.error, Some(DecodeError::LineTooLong { limit: 8 }));
    // The line ending does not count, whichever it is.
    for input in [&b"data: ab\r\n\r\n"[..], b"data: ab\r\r"] {
        assert_eq!(
            decode_every_way(&limited(8, 100), input).frames,
            vec![msg("ab")]
        );
    }
}

#[test]
fn line_limit_applies_to_unfinished_lines() {
    // The error comes as soon as the unfinished line is over the limit: the decoder never
    // buffers more than the limit waiting for a line end.
    let err = decode_every_way(&limited(8, 100), b"data: abcdefghijklmnop");
    assert_eq!(err.error, Some(DecodeError::LineTooLong { limit: 8 }));
    // Comments count too.
    let err = decode_every_way(&limited(8, 100), b": 123456789\n");
    assert_eq!(err.error, Some(DecodeError::LineTooLong { limit: 8 }));
}

#[test]
fn event_limit() {
    let err = decode_every_way(
        &limited(100, 6),
        b"data: ab\ndata: cd\n\ndata: efg\ndata: hi\n\n",
    );
    assert_eq!(err.frames, vec![msg("ab\ncd")]);
    assert_eq!(err.error, Some(DecodeError::EventTooLarge { limit: 6 }));
}

#[test]
fn error_is_sticky_until_finish() {
    let mut decoder = limited(4, 100).build();
    decoder.feed_slice(b"data: long\n\n");
    assert_eq!(
        decoder.next_frame(),
        Err(DecodeError::LineTooLong { limit: 4 })
    );
    decoder.feed_slice(b"id\n\n");
    assert_eq!(
        decoder.next_frame(),
        Err(DecodeError::LineTooLong { limit: 4 })
    );
    decoder.finish();
    decoder.feed_slice(b"id\n\n");
    assert_eq!(decoder.next_frame(), Ok(None));
}

#[test]
fn finish_starts_a_new_stream() {
    let mut decoder = Decoder::new();
    decoder.feed_slice(b"id: 1\ndata: a\n\nretry: 9\nid: 2\ndata: b\r");
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        frames.push(frame);
    }
    assert_eq!(frames, vec![ev("message", "a", "1"), retry(9)]);
    decoder.finish();
    assert_eq!(decoder.last_event_id(), "1");
    assert_eq!(decoder.retry(), Some(Duration::from_millis(9)));
    // A new body: a BOM is allowed again, the pending CR of the old body is forgotten
    // (its LF would otherwise be swallowed), and the old event's data is gone.
    decoder.feed_slice(b"\xef\xbb\xbf\ndata: c\n\n");
    assert_eq!(decoder.next_frame().unwrap(), Some(ev("message", "c", "1")));
}

#[test]
fn a_megabyte_line_one_byte_at_a_time() {
    // Linear, not quadratic: 1 MiB fed byte by byte finishes quickly even unoptimised.
    let mut decoder = Decoder::new();
    decoder.feed_slice(b"data: ");
    for _ in 0..(1 << 20) {
        decoder.feed_slice(b"x");
        assert_eq!(decoder.next_frame(), Ok(None));
    }
    decoder.feed_slice(b"\n\n");
    let Some(Frame::Event(event)) = decoder.next_frame().unwrap() else {
        panic!("no event")
    };
    assert_eq!(event.data.len(), 1 << 20);
}
