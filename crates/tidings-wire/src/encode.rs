//! Encoding one event: [`EventBuilder`].
//!
//! The builder borrows its values and writes the event in one pass into a buffer sized
//! exactly. Fields come out in a fixed order (comment, `event`, `id`, `retry`, `data`)
//! whatever order the builder's methods were called in.
//!
//! ```
//! use std::time::Duration;
//! use tidings_wire::EventBuilder;
//!
//! let bytes = EventBuilder::new()
//!     .event("update")
//!     .id("42")
//!     .retry(Duration::from_secs(3))
//!     .data("line one\nline two")
//!     .build();
//! assert_eq!(
//!     &bytes[..],
//!     b"event: update\nid: 42\nretry: 3000\ndata: line one\ndata: line two\n\n"
//! );
//! ```

use std::{fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

/// A value given to the encoder would inject fields or events into the stream.
///
/// ```
/// use tidings_wire::{EncodeError, EventBuilder};
///
/// let err = EventBuilder::new().try_id("1\ndata: forged").unwrap_err();
/// assert_eq!(err, EncodeError::IdLineBreak);
/// assert_eq!(err.to_string(), "an event id must not contain CR or LF");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The event type contained CR or LF.
    EventTypeLineBreak,
    /// The id contained CR or LF.
    IdLineBreak,
    /// The id contained NUL, which makes decoders ignore the whole `id` field.
    IdNul,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EventTypeLineBreak => "an event type must not contain CR or LF",
            Self::IdLineBreak => "an event id must not contain CR or LF",
            Self::IdNul => "an event id must not contain NUL",
        })
    }
}

impl std::error::Error for EncodeError {}

/// Checks an event type for characters that would break out of its `event:` line.
///
/// ```
/// assert!(tidings_wire::validate_event_type("price").is_ok());
/// assert!(tidings_wire::validate_event_type("a\rb").is_err());
/// ```
pub fn validate_event_type(value: &str) -> Result<(), EncodeError> {
    match memchr::memchr2(b'\r', b'\n', value.as_bytes()) {
        Some(_) => Err(EncodeError::EventTypeLineBreak),
        None => Ok(()),
    }
}

/// Checks an event id for characters that would break out of its `id:` line (CR, LF) or
/// make decoders ignore it (NUL).
///
/// ```
/// assert!(tidings_wire::validate_id("urn:uuid:1").is_ok());
/// assert!(tidings_wire::validate_id("a\0b").is_err());
/// ```
pub fn validate_id(value: &str) -> Result<(), EncodeError> {
    if memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_some() {
        Err(EncodeError::IdLineBreak)
    } else if memchr::memchr(0, value.as_bytes()).is_some() {
        Err(EncodeError::IdNul)
    } else {
        Ok(())
    }
}

/// Builds the bytes of one event.
///
/// Data and comments may hold any text: they are split into one line per line of the
/// value (on CR, LF and CRLF), so decoding gives back the same text with its line breaks
/// as LF. A value that starts with a space keeps it (the builder always writes `: `).
/// Data set to the empty string is an event with empty data (`data:` on its own line);
/// no data at all is a frame that dispatches nothing but still sets the id and retry.
///
/// The event type and the id are single lines: [`event`](Self::event) and
/// [`id`](Self::id) panic on a value that would break out of its line, and
/// [`try_event`](Self::try_event) and [`try_id`](Self::try_id) return an error instead,
/// for values that come from outside.
///
/// ```
/// use tidings_wire::EventBuilder;
///
/// assert_eq!(&EventBuilder::new().data(" padded").build()[..], b"data:  padded\n\n");
/// assert_eq!(&EventBuilder::new().data("").build()[..], b"data:\n\n");
/// assert_eq!(&EventBuilder::new().comment("ping").build()[..], b": ping\n\n");
/// ```
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct EventBuilder<'a> {
    comment: Option<&'a str>,
    event: Option<&'a str>,
    id: Option<&'a str>,
    retry: Option<Duration>,
    data: Option<&'a str>,
}

impl<'a> EventBuilder<'a> {
    /// An empty builder.
    ///
    /// ```
    /// assert_eq!(&tidings_wire::EventBuilder::new().build()[..], b"\n");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data, any text.
    ///
    /// ```
    /// let bytes = tidings_wire::EventBuilder::new().data("a\r\nb").build();
    /// assert_eq!(&bytes[..], b"data: a\ndata: b\n\n");
    /// ```
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// Sets the event type (the `event:` field).
    ///
    /// # Panics
    ///
    /// If `event` contains CR or LF, which would let it inject fields. Use
    /// [`try_event`](Self::try_event) for untrusted values.
    ///
    /// ```
    /// let bytes = tidings_wire::EventBuilder::new().event("price").data("1").build();
    /// assert_eq!(&bytes[..], b"event: price\ndata: 1\n\n");
    /// ```
    pub fn event(self, event: &'a str) -> Self {
        match self.try_event(event) {
            Ok(this) => this,
            Err(err) => panic!("EventBuilder::event: {err}"),
        }
    }

    /// Sets the event type, or says why it cannot be one.
    ///
    /// ```
    /// assert!(tidings_wire::EventBuilder::new().try_event("bad\ntype").is_err());
    /// ```
    pub fn try_event(mut self, event: &'a str) -> Result<Self, EncodeError> {
        validate_event_type(event)?;
        self.event = Some(event);
        Ok(self)
    }

    /// Sets the event id (the `id:` field). An empty id resets the client's last event ID.
    ///
    /// # Panics
    ///
    /// If `id` contains CR, LF or NUL. Use [`try_id`](Self::try_id) for untrusted values.
    ///
    /// ```
    /// let bytes = tidings_wire::EventBuilder::new().id("7").data("x").build();
    /// assert_eq!(&bytes[..], b"id: 7\ndata: x\n\n");
    /// ```
    pub fn id(self, id: &'a str) -> Self {
        match self.try_id(id) {
            Ok(this) => this,
            Err(err) => panic!("EventBuilder::id: {err}"),
        }
    }

    /// Sets the event id, or says why it cannot be one.
    ///
    /// ```
    /// assert!(tidings_wire::EventBuilder::new().try_id("nul\0").is_err());
    /// ```
    pub fn try_id(mut self, id: &'a str) -> Result<Self, EncodeError> {
        validate_id(id)?;
        self.id = Some(id);
        Ok(self)
    }

    /// Sets the client's reconnection time (the `retry:` field), in whole milliseconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// let bytes = tidings_wire::EventBuilder::new().retry(Duration::from_secs(2)).build();
    /// assert_eq!(&bytes[..], b"retry: 2000\n\n");
    /// ```
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Adds a comment, any text (one `:` line per line of it). Clients ignore comments;
    /// servers send them as keep-alives.
    ///
    /// ```
    /// let bytes = tidings_wire::EventBuilder::new().comment("keep-alive").build();
    /// assert_eq!(&bytes[..], b": keep-alive\n\n");
    /// ```
    pub fn comment(mut self, comment: &'a str) -> Self {
        self.comment = Some(comment);
        self
    }

    /// The exact number of bytes [`build`](Self::build) produces.
    ///
    /// ```
    /// let event = tidings_wire::EventBuilder::new().data("a\nb");
    /// assert_eq!(event.encoded_len(), event.build().len());
    /// ```
    pub fn encoded_len(&self) -> usize {
        let mut len = 1; // the blank line
        if let Some(c) = self.comment {
            len += multiline_len(b"", c);
        }
        if let Some(e) = self.event {
            len += field_len(b"event", e.len());
        }
        if let Some(id) = self.id {
            len += field_len(b"id", id.len());
        }
        if let Some(retry) = self.retry {
            len += b"retry: \n".len() + decimal_len(retry_ms(retry));
        }
        if let Some(d) = self.data {
            len += multiline_len(b"data", d);
        }
        len
    }

    /// The encoded length if data and comment are one line each: what
    /// [`build`](Self::build) reserves, so the data is scanned for line breaks only once
    /// (a multi-line value grows the buffer instead).
    fn size_hint(&self) -> usize {
        1 + self.comment.map_or(0, |c| field_len(b"", c.len()))
            + self.event.map_or(0, |e| field_len(b"event", e.len()))
            + self.id.map_or(0, |id| field_len(b"id", id.len()))
            + self.retry.map_or(0, |_| b"retry: \n".len() + 20)
            + self.data.map_or(0, |d| field_len(b"data", d.len()))
    }

    /// Encodes the event.
    ///
    /// ```
    /// let bytes = tidings_wire::EventBuilder::new().data("hi").build();
    /// assert_eq!(&bytes[..], b"data: hi\n\n");
    /// ```
    pub fn build(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size_hint());
        self.build_into(&mut buf);
        buf.freeze()
    }

    /// Appends the encoded event to `buf`.
    ///
    /// ```
    /// let mut buf = bytes::BytesMut::new();
    /// tidings_wire::EventBuilder::new().data("1").build_into(&mut buf);
    /// tidings_wire::EventBuilder::new().data("2").build_into(&mut buf);
    /// assert_eq!(&buf[..], b"data: 1\n\ndata: 2\n\n");
    /// ```
    pub fn build_into(&self, buf: &mut BytesMut) {
        buf.reserve(self.size_hint());
        if let Some(c) = self.comment {
            put_multiline(buf, b"", c);
        }
        if let Some(e) = self.event {
            put_field(buf, b"event", e.as_bytes());
        }
        if let Some(id) = self.id {
            put_field(buf, b"id", id.as_bytes());
        }
        if let Some(retry) = self.retry {
            let mut digits = [0u8; 20];
            put_field(buf, b"retry", format_decimal(retry_ms(retry), &mut digits));
        }
        if let Some(d) = self.data {
            put_multiline(buf, b"data", d);
        }
        buf.put_u8(b'\n');
    }
}

/// The reconnection time in whole milliseconds, saturating.
fn retry_ms(retry: Duration) -> u64 {
    u64::try_from(retry.as_millis()).unwrap_or(u64::MAX)
}

/// `name: value\n`, or `name:\n` for an empty value.
fn field_len(name: &[u8], value_len: usize) -> usize {
    name.len() + 1 + if value_len == 0 { 0 } else { 1 + value_len } + 1
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    if value.is_empty() {
        buf.put_slice(b":\n");
    } else {
        buf.put_slice(b": ");
        buf.put_slice(value);
        buf.put_u8(b'\n');
    }
}

/// Calls `line` with each line of `text`, split on CR, LF and CRLF. The empty string is
/// one empty line; a trailing line break is followed by one empty line.
fn for_each_line(text: &[u8], mut line: impl FnMut(&[u8])) {
    let mut start = 0;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &text[start..]) {
        let end = start + offset;
        line(&text[start..end]);
        start = end + 1;
        if text[end] == b'\r' && text.get(start) == Some(&b'\n') {
            start += 1;
        }
    }
    line(&text[start..]);
}

fn multiline_len(name: &[u8], text: &str) -> usize {
    let mut len = 0;
    for_each_line(text.as_bytes(), |l| len += field_len(name, l.len()));
    len
}

fn put_multiline(buf: &mut BytesMut, name: &[u8], text: &str) {
    for_each_line(text.as_bytes(), |l| put_field(buf, name, l));
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn format_decimal(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_of_every_kind_split_data() {
        let b = EventBuilder::new().data("a\rb\nc\r\nd\n\re").build();
        assert_eq!(
            &b[..],
            b"data: a\ndata: b\ndata: c\ndata: d\ndata:\ndata: e\n\n"
        );
    }

    #[test]
    fn trailing_line_break_keeps_an_empty_line() {
        let b = EventBuilder::new().data("x\n").build();
        assert_eq!(&b[..], b"data: x\ndata:\n\n");
    }

    #[test]
    fn id_only_and_empty_builder() {
        assert_eq!(&EventBuilder::new().id("7").build()[..], b"id: 7\n\n");
        assert_eq!(&EventBuilder::new().id("").build()[..], b"id:\n\n");
        assert_eq!(&EventBuilder::new().build()[..], b"\n");
    }

    #[test]
    fn multiline_comment() {
        let b = EventBuilder::new().comment("a\nb").data("x").build();
        assert_eq!(&b[..], b": a\n: b\ndata: x\n\n");
    }

    #[test]
    fn retry_is_whole_milliseconds() {
        let b = EventBuilder::new()
            .retry(Duration::from_micros(2500))
            .build();
        assert_eq!(&b[..], b"retry: 2\n\n");
        let b = EventBuilder::new().retry(Duration::MAX).build();
        assert_eq!(&b[..], b"retry: 18446744073709551615\n\n");
        assert_eq!(
            EventBuilder::new().retry(Duration::MAX).encoded_len(),
            b.len()
        );
        assert_eq!(
            EventBuilder::new().retry(Duration::ZERO).build(),
            &b"retry: 0\n\n"[..]
        );
    }

    #[test]
    #[should_panic(expected = "an event type must not contain CR or LF")]
    fn event_type_injection_panics() {
        let _ = EventBuilder::new().event("x\n\ndata: forged");
    }

    #[test]
    #[should_panic(expected = "an event id must not contain NUL")]
    fn id_nul_panics() {
        let _ = EventBuilder::new().id("a\0");
    }

    #[test]
    fn try_paths_refuse_injection() {
        assert_eq!(
            EventBuilder::new().try_event("a\rb").unwrap_err(),
            EncodeError::EventTypeLineBreak
        );
        assert_eq!(
            EventBuilder::new().try_id("a\r\nb").unwrap_err(),
            EncodeError::IdLineBreak
        );
        assert!(EventBuilder::new().try_id("urn:uuid:x").is_ok());
    }
}
