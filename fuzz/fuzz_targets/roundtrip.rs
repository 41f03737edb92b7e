//! Encoder/decoder round trip: arbitrary event fields, encoded with the `try_` builder
//! methods (which must refuse exactly the values that would break out of their line),
//! decoded under arbitrary chunking, give back the same frames, with the data's CR and
//! CRLF line breaks as LF.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidings_wire::{
    Decoder, EncodeError, Event, EventBuilder, Frame, Text, validate_event_type, validate_id,
};

/// A piece of a value; the special pieces make line breaks, spaces and the like common.
#[derive(Arbitrary, Debug)]
enum Piece {
    Text(String),
    Lf,
    Cr,
    CrLf,
    Space,
    Nul,
    Colon,
    Bom,
}

#[derive(Arbitrary, Debug)]
struct Value(Vec<Piece>);

impl Value {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(s) => s.as_str(),
                Piece::Lf => "\n",
                Piece::Cr => "\r",
                Piece::CrLf => "\r\n",
                Piece::Space => " ",
                Piece::Nul => "\0",
                Piece::Colon => ":",
                Piece::Bom => "\u{FEFF}",
            })
            .collect()
    }
}

#[derive(Arbitrary, Debug)]
struct Fields {
    comment: Option<Value>,
    event: Option<Value>,
    id: Option<Value>,
    retry_ms: Option<u64>,
    data: Option<Value>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    events: Vec<Fields>,
    chunk_sizes: Vec<u8>,
}

/// The lines of `text` split on CR, LF and CRLF, as the encoder writes them.
fn lines(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .split('\n')
        .map(str::to_owned)
        .collect()
}

fn has_line_break(text: &str) -> bool {
    text.contains(['\r', '\n'])
}

fuzz_target!(|input: Input| {
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let mut last_id = String::new();
    for fields in &input.events {
        let comment = fields.comment.as_ref().map(Value::text);
        let event = fields.event.as_ref().map(Value::text);
        let id = fields.id.as_ref().map(Value::text);
        let data = fields.data.as_ref().map(Value::text);

        let mut builder = EventBuilder::new();
        if let Some(comment) = &comment {
            builder = builder.comment(comment);
            expected.extend(lines(comment).into_iter().map(|l| Frame::Comment(l.into())));
        }
        let mut event_type = None;
        if let Some(event) = &event {
            let refusal = has_line_break(event).then_some(EncodeError::EventTypeLineBreak);
            assert_eq!(validate_event_type(event).err(), refusal);
            match builder.try_event(event) {
                Ok(with) => {
                    assert_eq!(refusal, None);
                    builder = with;
                    event_type = Some(event.as_str());
                }
                Err(err) => assert_eq!(Some(err), refusal),
            }
        }
        if let Some(id) = &id {
            let refusal = if has_line_break(id) {
                Some(EncodeError::IdLineBreak)
            } else if id.contains('\0') {
                Some(EncodeError::IdNul)
            } else {
                None
            };
            assert_eq!(validate_id(id).err(), refusal);
            match builder.try_id(id) {
                Ok(with) => {
                    assert_eq!(refusal, None);
                    builder = with;
                    last_id.clone_from(id);
                }
                Err(err) => assert_eq!(Some(err), refusal),
            }
        }
        if let Some(ms) = fields.retry_ms {
            builder = builder.retry(Duration::from_millis(ms));
            expected.push(Frame::Retry(Duration::from_millis(ms)));
        }
        if let Some(data) = &data {
            builder = builder.data(data);
            expected.push(Frame::Event(Event {
                event_type: Text::from(event_type.filter(|t| !t.is_empty()).unwrap_or("message")),
                data: Text::from(data.replace("\r\n", "\n").replace('\r', "\n")),
                id: Text::from(last_id.as_str()),
            }));
        }
        let built = builder.build();
        assert_eq!(built.len(), builder.encoded_len(), "encoded_len is exact");
        let before = wire.len();
        builder.build_into(&mut wire);
        assert_eq!(
            &wire[before..],
            &built[..],
            "build_into writes what build returns"
        );
    }

    let wire = wire.freeze();
    let mut decoder = Decoder::builder().comments(true).build();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut turn = 0;
    while pos < wire.len() {
        let len = match input.chunk_sizes.get(turn % input.chunk_sizes.len().max(1)) {
            Some(&size) => usize::from(size) + 1,
            None => wire.len(),
        };
        turn += 1;
        let end = (pos + len).min(wire.len());
        decoder.feed(wire.slice(pos..end));
        pos = end;
        while let Some(frame) = decoder.next_frame().expect("an encoded stream decodes") {
            frames.push(frame);
        }
    }
    assert_eq!(frames, expected);
    assert_eq!(decoder.last_event_id(), last_id.as_str());
});
