//! Decoding a `text/event-stream` body: [`Decoder`], [`Frame`], [`Event`].
//!
//! The decoder follows the WHATWG HTML standard, section 9.2.6 ("Interpreting an event
//! stream"), byte for byte. It is incremental: feed it chunks of any size as they arrive
//! and pull [`Frame`]s out; it never rescans bytes it has already scanned and never holds
//! more than one line plus one event, each capped by [`DecoderBuilder`] limits.
//!
//! ```
//! use bytes::Bytes;
//! use tidings_wire::{Decoder, Frame};
//!
//! let mut decoder = Decoder::new();
//! decoder.feed(Bytes::from_static(b"id: 7\nevent: greet"));
//! assert!(decoder.next_frame()?.is_none()); // no blank line yet: no event
//! decoder.feed(Bytes::from_static(b"ing\ndata: hello\r\n\r\n"));
//! let Some(Frame::Event(event)) = decoder.next_frame()? else { panic!() };
//! assert_eq!(event.event_type, "greeting");
//! assert_eq!(event.data, "hello");
//! assert_eq!(event.id, "7");
//! assert_eq!(decoder.last_event_id(), "7");
//! # Ok::<(), tidings_wire::DecodeError>(())
//! ```

use std::{collections::VecDeque, fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

use crate::Text;

/// The byte-order mark that may open a stream.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// [`Input::bom`] once the BOM question is settled.
const BOM_DECIDED: u8 = u8::MAX;

/// The event type of an event whose stream did not name one.
const DEFAULT_EVENT_TYPE: Text = Text::from_static("message");

/// Default for [`DecoderBuilder::max_line_len`]: 8 MiB.
pub const DEFAULT_MAX_LINE_LEN: usize = 8 << 20;

/// Default for [`DecoderBuilder::max_event_size`]: 16 MiB.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 << 20;

/// A dispatched event: what an `EventSource` hands to a `message` listener.
///
/// ```
/// use tidings_wire::{Event, Text};
///
/// let event = Event::new("hello");
/// assert_eq!(event.event_type, "message");
/// assert_eq!(event.id, "");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The event type: the last `event:` field of the event, or `message` when it had none
    /// (or an empty one).
    pub event_type: Text,
    /// The `data:` lines joined with LF (the final LF removed).
    pub data: Text,
    /// The stream's last event ID as of this event's dispatch (it carries over from earlier
    /// events when this one has no `id:` field).
    pub id: Text,
}

impl Event {
    /// An event of type `message` with the given data and an empty id.
    ///
    /// ```
    /// let event = tidings_wire::Event::new("x");
    /// assert_eq!(event.data, "x");
    /// ```
    pub fn new(data: impl Into<Text>) -> Self {
        Self {
            event_type: DEFAULT_EVENT_TYPE,
            data: data.into(),
            id: Text::new(),
        }
    }
}

/// One thing the decoder found in the stream.
///
/// ```
/// use bytes::Bytes;
/// use std::time::Duration;
/// use tidings_wire::{Decoder, Frame};
///
/// let mut decoder = Decoder::builder().comments(true).build();
/// decoder.feed(Bytes::from_static(b": hi\nretry: 1500\n"));
/// assert_eq!(decoder.next_frame()?, Some(Frame::Comment("hi".into())));
/// assert_eq!(decoder.next_frame()?, Some(Frame::Retry(Duration::from_millis(1500))));
/// assert_eq!(decoder.next_frame()?, None);
/// # Ok::<(), tidings_wire::DecodeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A dispatched event.
    Event(Event),
    /// A valid `retry:` field: the new reconnection time. Values too large for a `u64` of
    /// milliseconds saturate at `u64::MAX` ms.
    Retry(Duration),
    /// A comment line (`: text`), without the colon and one leading space. Only produced
    /// when [`DecoderBuilder::comments`] is on; servers send them as keep-alives.
    Comment(Text),
}

/// A limit of the decoder was exceeded. The stream cannot be decoded further: the decoder
/// keeps returning this error until [`Decoder::finish`] starts a new stream (unless
/// [`DecoderBuilder::skip_oversized`] is on: then the event is skipped).
///
/// ```
/// use bytes::Bytes;
/// use tidings_wire::{DecodeError, Decoder};
///
/// let mut decoder = Decoder::builder().max_line_len(4).build();
/// decoder.feed(Bytes::from_static(b"data: too long\n"));
/// assert_eq!(decoder.next_frame(), Err(DecodeError::LineTooLong { limit: 4 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// A line was longer than [`DecoderBuilder::max_line_len`] bytes.
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// An event's data grew beyond [`DecoderBuilder::max_event_size`] bytes.
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => {
                write!(
                    f,
                    "event-stream line longer than the limit of {limit} bytes"
                )
            }
            Self::EventTooLarge { limit } => {
                write!(
                    f,
                    "event-stream event larger than the limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Configures a [`Decoder`].
///
/// ```
/// let decoder = tidings_wire::Decoder::builder()
///     .max_line_len(64 * 1024)
///     .max_event_size(1024 * 1024)
///     .comments(true)
///     .last_event_id("41")
///     .build();
/// assert_eq!(decoder.last_event_id(), "41");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct DecoderBuilder {
    max_line_len: usize,
    max_event_size: usize,
    comments: bool,
    last_event_id: Text,
    skip_oversized: bool,
}

impl Default for DecoderBuilder {
    fn default() -> Self {
        Self {
            max_line_len: DEFAULT_MAX_LINE_LEN,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            comments: false,
            last_event_id: Text::new(),
            skip_oversized: false,
        }
    }
}

impl DecoderBuilder {
    /// The longest line accepted, in bytes, not counting its line ending
    /// (default [`DEFAULT_MAX_LINE_LEN`]). A longer line is [`DecodeError::LineTooLong`].
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::builder().max_line_len(8).build();
    /// decoder.feed_slice(b"data: 12\n\n"); // exactly 8 bytes: accepted
    /// assert!(decoder.next_frame().unwrap().is_some());
    /// ```
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.max_line_len = bytes;
        self
    }

    /// The most data one event may accumulate, in bytes, counting the LF between lines
    /// (default [`DEFAULT_MAX_EVENT_SIZE`]). More is [`DecodeError::EventTooLarge`].
    ///
    /// ```
    /// use tidings_wire::{DecodeError, Decoder};
    /// let mut decoder = Decoder::builder().max_event_size(3).build();
    /// decoder.feed_slice(b"data: a\ndata: b\n\n"); // "a\nb\n" is 4 bytes
    /// assert_eq!(decoder.next_frame(), Err(DecodeError::EventTooLarge { limit: 3 }));
    /// ```
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// Whether to yield [`Frame::Comment`]s (default: no; comments are skipped).
    ///
    /// ```
    /// use tidings_wire::{Decoder, Frame};
    /// let mut decoder = Decoder::builder().comments(true).build();
    /// decoder.feed_slice(b": ping\n");
    /// assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Comment("ping".into())));
    /// ```
    pub fn comments(mut self, yes: bool) -> Self {
        self.comments = yes;
        self
    }

    /// The last event ID to start from, as an `EventSource` that resumes a stream has.
    /// Events without an `id:` field carry it until the stream sets another.
    ///
    /// ```
    /// use tidings_wire::{Decoder, Frame};
    /// let mut decoder = Decoder::builder().last_event_id("41").build();
    /// decoder.feed_slice(b"data: x\n\n");
    /// let Some(Frame::Event(event)) = decoder.next_frame().unwrap() else { panic!() };
    /// assert_eq!(event.id, "41");
    /// ```
    pub fn last_event_id(mut self, id: impl Into<Text>) -> Self {
        self.last_event_id = id.into();
        self
    }

    /// Whether an event over the limits is skipped instead of ending the stream (default:
    /// no). When on, [`Decoder::next_frame`] returns the [`DecodeError`] once for that
    /// event, then drops the rest of it, without buffering it, up to its blank line, and
    /// goes on with the next event. The skipped event's `id:` and `retry:` fields still
    /// take effect.
    ///
    /// ```
    /// use tidings_wire::{DecodeError, Decoder, Frame};
    /// let mut decoder = Decoder::builder().max_line_len(8).skip_oversized(true).build();
    /// decoder.feed_slice(b"id: 1\ndata: far too long\ndata: more\n\ndata: ok\n\n");
    /// assert_eq!(decoder.next_frame(), Err(DecodeError::LineTooLong { limit: 8 }));
    /// let Ok(Some(Frame::Event(event))) = decoder.next_frame() else { panic!() };
    /// assert_eq!((event.data.as_str(), event.id.as_str()), ("ok", "1"));
    /// ```
    pub fn skip_oversized(mut self, yes: bool) -> Self {
        self.skip_oversized = yes;
        self
    }

    /// Builds the decoder.
    ///
    /// ```
    /// let decoder = tidings_wire::Decoder::builder().build();
    /// assert_eq!(decoder.retry(), None);
    /// ```
    pub fn build(self) -> Decoder {
        Decoder {
            input: Input::default(),
            event: EventState {
                data_first: Text::new(),
                data_more: BytesMut::new(),
                data_lines: 0,
                data_len: 0,
                event_type: None,
                types: TypeCache::default(),
                pending_id: None,
                last_event_id: self.last_event_id,
                retry: None,
                comments: self.comments,
                max_event_size: self.max_event_size,
                skip_oversized: self.skip_oversized,
                skipping: false,
            },
            max_line_len: self.max_line_len,
            failed: None,
        }
    }
}

/// An incremental `text/event-stream` decoder.
///
/// [`feed`](Self::feed) it the body's chunks as they arrive and call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)` ("not yet": the rest of
/// an event has not arrived). The result does not depend on how the body was split into
/// chunks. At the end of a body call [`finish`](Self::finish): it discards an unfinished
/// event, as the standard requires, and readies the decoder for the next connection of
/// the same `EventSource`, keeping the last event ID.
///
/// Values are shared slices of the fed chunks where possible (see [`Text`]).
///
/// ```
/// use bytes::Bytes;
/// use tidings_wire::{Decoder, Frame};
///
/// let mut decoder = Decoder::new();
/// let mut events = Vec::new();
/// for chunk in [&b"data: a\n\nid: 1\nda"[..], b"ta: b\n", b"\n"] {
///     decoder.feed(Bytes::copy_from_slice(chunk));
///     while let Some(frame) = decoder.next_frame()? {
///         if let Frame::Event(event) = frame {
///             events.push((event.data.to_string(), event.id.to_string()));
///         }
///     }
/// }
/// assert_eq!(events, [("a".into(), "".into()), ("b".into(), "1".into())]);
/// # Ok::<(), tidings_wire::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    input: Input,
    event: EventState,
    max_line_len: usize,
    failed: Option<DecodeError>,
}

/// Where the decoder is in the bytes fed so far.
#[derive(Debug, Default)]
struct Input {
    /// The chunk being scanned.
    cur: Bytes,
    /// How far `cur` has been scanned.
    pos: usize,
    /// Chunks fed but not yet reached.
    queued: VecDeque<Bytes>,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    /// The last line ended with a CR at the end of a chunk: an LF that opens the next
    /// chunk belongs to that line ending.
    skip_lf: bool,
    /// The length of the last line that arrived in more than one chunk.
    last_partial_len: usize,
    /// The rest of the current line is dropped: it is over the limit, and the event it
    /// belongs to is being skipped.
    discard_line: bool,
    /// How many bytes of a leading BOM have been matched so far, or [`BOM_DECIDED`] once
    /// the stream's first bytes are known to be (and were dropped) or not to be a BOM.
    bom: u8,
}

/// The buffers of the event being assembled, and what outlives events.
#[derive(Debug)]
struct EventState {
    /// The first `data:` value: the event's data as is, unless a second line arrives.
    data_first: Text,
    /// The joined data once there are two or more `data:` lines.
    data_more: BytesMut,
    data_lines: usize,
    /// Bytes of data so far, counting the LF after each line.
    data_len: usize,
    event_type: Option<Text>,
    /// Recent event types: streams repeat a few types, and reusing the text saves
    /// validating and slicing it again.
    types: TypeCache,
    /// An `id:` value not yet committed by a blank line. The standard's "last event ID
    /// buffer" is this when set, else `last_event_id`; keeping the two apart lets a
    /// dispatch move the id instead of comparing and cloning it.
    pending_id: Option<Text>,
    last_event_id: Text,
    retry: Option<Duration>,
    comments: bool,
    max_event_size: usize,
    /// Whether an event over the limits is skipped (instead of failing the stream).
    skip_oversized: bool,
    /// The current event went over the limits and is being skipped up to its blank line.
    skipping: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default limits that skips comments.
    ///
    /// ```
    /// let decoder = tidings_wire::Decoder::new();
    /// assert_eq!(decoder.last_event_id(), "");
    /// ```
    pub fn new() -> Self {
        DecoderBuilder::default().build()
    }

    /// A builder to set limits, comments and the initial last event ID.
    ///
    /// ```
    /// let decoder = tidings_wire::Decoder::builder().comments(true).build();
    /// # drop(decoder);
    /// ```
    pub fn builder() -> DecoderBuilder {
        DecoderBuilder::default()
    }

    /// Appends a chunk of the body. Nothing is parsed until [`next_frame`](Self::next_frame).
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed(bytes::Bytes::from_static(b"data: x\n\n"));
    /// assert!(decoder.next_frame().unwrap().is_some());
    /// ```
    pub fn feed(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.input.pos >= self.input.cur.len() && self.input.queued.is_empty() {
            self.input.cur = chunk;
            self.input.pos = 0;
        } else {
            self.input.queued.push_back(chunk);
        }
    }

    /// Copies a borrowed chunk in and appends it; see [`feed`](Self::feed).
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed_slice(b"data: x\n\n");
    /// assert!(decoder.next_frame().unwrap().is_some());
    /// ```
    pub fn feed_slice(&mut self, chunk: &[u8]) {
        self.feed(Bytes::copy_from_slice(chunk));
    }

    /// The last event ID of the stream: the value of the last `id:` field of the last
    /// event whose closing blank line has been decoded (an `id:` takes effect at the blank
    /// line, even when the event has no data).
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed_slice(b"id: 5\n\nid: 6\n");
    /// while decoder.next_frame().unwrap().is_some() {}
    /// assert_eq!(decoder.last_event_id(), "5"); // "6" has no blank line yet
    /// ```
    pub fn last_event_id(&self) -> &Text {
        &self.event.last_event_id
    }

    /// The reconnection time most recently set by a `retry:` field, if any.
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed_slice(b"retry: 250\n");
    /// while decoder.next_frame().unwrap().is_some() {}
    /// assert_eq!(decoder.retry(), Some(std::time::Duration::from_millis(250)));
    /// ```
    pub fn retry(&self) -> Option<Duration> {
        self.event.retry
    }

    /// Decodes the next frame from the bytes fed so far; `Ok(None)` when more bytes are
    /// needed. Once it has returned an error it returns that error until
    /// [`finish`](Self::finish).
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed_slice(b"data: 1\n\ndata: 2\n\n");
    /// let mut n = 0;
    /// while let Some(_frame) = decoder.next_frame()? {
    ///     n += 1;
    /// }
    /// assert_eq!(n, 2);
    /// # Ok::<(), tidings_wire::DecodeError>(())
    /// ```
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let result = self.decode_next();
        if let Err(err) = result
            && !self.event.skip_oversized
        {
            self.failed = Some(err);
            self.input = Input::default();
        }
        result
    }

    /// Ends the current stream: an unfinished event and an unfinished line are discarded
    /// (an `id:` in them does not take effect) and the next byte fed starts a new stream,
    /// which may open with a BOM again. The last event ID and the reconnection time are
    /// kept, as an `EventSource` keeps them across reconnections.
    ///
    /// ```
    /// let mut decoder = tidings_wire::Decoder::new();
    /// decoder.feed_slice(b"id: 1\n\nid: 2\ndata: lost");
    /// while decoder.next_frame().unwrap().is_some() {}
    /// decoder.finish();
    /// assert_eq!(decoder.last_event_id(), "1");
    /// ```
    pub fn finish(&mut self) {
        self.input = Input::default();
        self.failed = None;
        let ev = &mut self.event;
        ev.clear_event();
        ev.pending_id = None;
        ev.skipping = false;
    }

    /// A line over the limit: the error, or in skip mode the start of a skipped event
    /// (the error, once) or more of one (nothing).
    fn line_too_long(&mut self) -> Result<(), DecodeError> {
        let err = DecodeError::LineTooLong {
            limit: self.max_line_len,
        };
        if !self.event.skip_oversized {
            return Err(err);
        }
        self.input.partial.clear();
        if self.event.skipping {
            return Ok(());
        }
        self.event.clear_event();
        self.event.skipping = true;
        Err(err)
    }

    fn decode_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        let max_line = self.max_line_len;
        loop {
            let input = &mut self.input;
            if input.pos >= input.cur.len() {
                match input.queued.pop_front() {
                    Some(next) => {
                        input.cur = next;
                        input.pos = 0;
                    }
                    None => return Ok(None),
                }
            }
            if input.skip_lf {
                input.skip_lf = false;
                if input.cur[input.pos] == b'\n' {
                    input.pos += 1;
                    continue;
                }
            }
            if input.bom != BOM_DECIDED && !input.strip_bom() {
                continue;
            }
            let rest = &input.cur[input.pos..];
            let Some(offset) = find_line_end(rest) else {
                if input.discard_line {
                    input.pos = input.cur.len();
                    continue;
                }
                if input.partial.len() + rest.len() > max_line {
                    // In skip mode, the rest of the line is dropped as it arrives.
                    input.pos = input.cur.len();
                    input.discard_line = true;
                    self.line_too_long()?;
                    continue;
                }
                if input.partial.is_empty() {
                    // Streams that send long lines tend to send lines of similar length:
                    // sizing the buffer like the last one saves regrowing (and recopying)
                    // it several times per line.
                    input
                        .partial
                        .reserve(rest.len().max(input.last_partial_len));
                }
                input.partial.extend_from_slice(rest);
                input.pos = input.cur.len();
                continue;
            };
            let start = input.pos;
            let end = start + offset;
            let mut next = end + 1;
            if input.cur[end] == b'\r' {
                if next < input.cur.len() {
                    if input.cur[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    input.skip_lf = true;
                }
            }
            input.pos = next;
            if input.discard_line {
                input.discard_line = false;
                continue;
            }
            let frame = if input.partial.is_empty() {
                if offset > max_line {
                    self.line_too_long()?;
                    continue;
                }
                self.event.line(&input.cur, start, end)?
            } else {
                if input.partial.len() + offset > max_line {
                    self.line_too_long()?;
                    continue;
                }
                input.partial.extend_from_slice(&input.cur[start..end]);
                let line = input.partial.split().freeze();
                input.last_partial_len = line.len();
                let len = line.len();
                self.event.line(&line, 0, len)?
            };
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
    }
}

impl Input {
    /// Consumes the bytes of a leading BOM at `pos`. Returns false when it consumed the
    /// rest of the chunk without being able to decide yet.
    fn strip_bom(&mut self) -> bool {
        while self.pos < self.cur.len() {
            let matched = usize::from(self.bom);
            if self.cur[self.pos] != BOM[matched] {
                // Not a BOM: the bytes taken for one are the start of the first line.
                self.partial.extend_from_slice(&BOM[..matched]);
                self.bom = BOM_DECIDED;
                return true;
            }
            self.pos += 1;
            if matched == 2 {
                self.bom = BOM_DECIDED;
                return true;
            }
            self.bom += 1;
        }
        false
    }
}

impl EventState {
    /// Interprets one line, `src[start..end]`, without its line ending.
    fn line(
        &mut self,
        src: &Bytes,
        start: usize,
        end: usize,
    ) -> Result<Option<Frame>, DecodeError> {
        let line = &src[start..end];
        if line.is_empty() {
            // A skipped event has no data: its blank line commits its id only.
            self.skipping = false;
            return Ok(self.dispatch().map(Frame::Event));
        }
        let (field, value) = split_field(line);
        let value_start = start + value;
        match field {
            Field::Data if self.skipping => Ok(None),
            Field::Data => self.data(src, value_start, end).map(|()| None),
            Field::Event => {
                self.event_type = Some(self.types.get(src, value_start, end));
                Ok(None)
            }
            Field::Id => {
                if !src[value_start..end].contains(&0) {
                    self.pending_id = Some(Text::from_slice_lossy(src, value_start, end));
                }
                Ok(None)
            }
            Field::Retry => Ok(parse_retry(&src[value_start..end]).map(|retry| {
                self.retry = Some(retry);
                Frame::Retry(retry)
            })),
            Field::Comment if self.comments => Ok(Some(Frame::Comment(Text::from_slice_lossy(
                src,
                value_start,
                end,
            )))),
            Field::Comment | Field::Unknown => Ok(None),
        }
    }

    fn data(&mut self, src: &Bytes, start: usize, end: usize) -> Result<(), DecodeError> {
        let len = end - start;
        self.data_len += len + 1;
        if self.data_len > self.max_event_size {
            self.clear_event();
            self.skipping = self.skip_oversized;
            return Err(DecodeError::EventTooLarge {
                limit: self.max_event_size,
            });
        }
        match self.data_lines {
            0 => self.data_first = Text::from_slice_lossy(src, start, end),
            1 => {
                let first = std::mem::take(&mut self.data_first).into_bytes();
                self.reserve_data(first.len() + 1 + len);
                self.data_more.extend_from_slice(&first);
                self.data_more.put_u8(b'\n');
                self.data_more.extend_from_slice(&src[start..end]);
            }
            _ => {
                self.reserve_data(1 + len);
                self.data_more.put_u8(b'\n');
                self.data_more.extend_from_slice(&src[start..end]);
            }
        }
        self.data_lines += 1;
        Ok(())
    }

    /// Makes room for `additional` bytes of joined data, growing by at least 8 KiB at a
    /// time: the buffer is split (not taken) at each dispatch, so its spare capacity serves
    /// the next events and most multi-line events allocate nothing.
    fn reserve_data(&mut self, additional: usize) {
        if self.data_more.capacity() - self.data_more.len() < additional {
            self.data_more.reserve(additional.max(8 << 10));
        }
    }

    /// The blank line: commit the id, and emit the event if it has data.
    fn dispatch(&mut self) -> Option<Event> {
        if let Some(id) = self.pending_id.take() {
            self.last_event_id = id;
        }
        let data = match self.data_lines {
            0 => {
                self.event_type = None;
                return None;
            }
            1 => std::mem::take(&mut self.data_first),
            _ => {
                let joined = self.data_more.split().freeze();
                Text::from_slice_lossy(&joined, 0, joined.len())
            }
        };
        self.data_lines = 0;
        self.data_len = 0;
        let event_type = match self.event_type.take() {
            Some(t) if !t.is_empty() => t,
            _ => DEFAULT_EVENT_TYPE,
        };
        Some(Event {
            event_type,
            data,
            id: self.last_event_id.clone(),
        })
    }

    fn clear_event(&mut self) {
        self.data_first = Text::new();
        self.data_more.clear();
        self.data_lines = 0;
        self.data_len = 0;
        self.event_type = None;
    }
}

/// The offset of the first CR or LF in `haystack`.
///
/// Most event-stream lines are short (`id: 41`, `event: update`, the blank line), and a
/// call to `memchr2` costs more in set-up than scanning them: the first 16 bytes are
/// checked a word at a time, and only a longer line goes to `memchr2`.
#[inline]
fn find_line_end(haystack: &[u8]) -> Option<usize> {
    let mut start = 0;
    while start < 16 {
        let Some(word) = haystack[start..].first_chunk::<8>() else {
            break;
        };
        let word = u64::from_le_bytes(*word);
        let found = zero_bytes(word ^ REPEAT_LF) | zero_bytes(word ^ REPEAT_CR);
        if found != 0 {
            // `trailing_zeros` is below 64, so the byte index fits any usize.
            return Some(start + (found.trailing_zeros() / 8) as usize);
        }
        start += 8;
    }
    memchr::memchr2(b'\n', b'\r', &haystack[start..]).map(|offset| start + offset)
}

const REPEAT_01: u64 = u64::from_ne_bytes([0x01; 8]);
const REPEAT_80: u64 = u64::from_ne_bytes([0x80; 8]);
const REPEAT_LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
const REPEAT_CR: u64 = u64::from_ne_bytes([b'\r'; 8]);

/// A mask whose lowest set bit is the high bit of the first zero byte of `word` (counting
/// from the least significant byte); bits above it may be set spuriously by the borrow,
/// which does not matter as only the lowest one is read. Zero when no byte is zero.
#[inline]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(REPEAT_01) & !word & REPEAT_80
}

/// The last few distinct event types, replaced round-robin.
#[derive(Debug, Default)]
struct TypeCache {
    entries: [Text; 4],
    next: usize,
}

impl TypeCache {
    /// The type `src[start..end]`, from the cache when it is there.
    fn get(&mut self, src: &Bytes, start: usize, end: usize) -> Text {
        let value = &src[start..end];
        if let Some(hit) = self.entries.iter().find(|t| t.as_bytes()[..] == *value) {
            return hit.clone();
        }
        let text = Text::from_slice_lossy(src, start, end);
        self.entries[self.next] = text.clone();
        self.next = (self.next + 1) % self.entries.len();
        text
    }
}

/// What a line is, by its field name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Id,
    Retry,
    Comment,
    Unknown,
}

/// Splits a non-empty line into its field and the offset of its value: after the first
/// colon and one space, or the end of the line when it has no colon.
#[inline]
fn split_field(line: &[u8]) -> (Field, usize) {
    // The names servers send, checked as prefixes before a general search for the colon:
    // most lines are one of these, and a fixed-length compare costs less than a search.
    let (field, colon) = if line.starts_with(b"data:") {
        (Field::Data, 4)
    } else if line.starts_with(b"id:") {
        (Field::Id, 2)
    } else if line.starts_with(b"event:") {
        (Field::Event, 5)
    } else if line[0] == b':' {
        (Field::Comment, 0)
    } else if line.starts_with(b"retry:") {
        (Field::Retry, 5)
    } else {
        match memchr::memchr(b':', line) {
            Some(colon) => (field_named(&line[..colon]), colon),
            None => return (field_named(line), line.len()),
        }
    };
    let value = colon + 1 + usize::from(line.get(colon + 1) == Some(&b' '));
    (field, value)
}

fn field_named(name: &[u8]) -> Field {
    match name {
        b"data" => Field::Data,
        b"event" => Field::Event,
        b"id" => Field::Id,
        b"retry" => Field::Retry,
        _ => Field::Unknown,
    }
}

/// A `retry:` value: one or more ASCII digits, nothing else. Saturates rather than
/// overflowing.
fn parse_retry(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = value.iter().fold(0u64, |ms, d| {
        ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::builder().comments(true).build();
        d.feed_slice(input);
        std::iter::from_fn(|| d.next_frame().unwrap()).collect()
    }

    #[test]
    fn line_end_search_agrees_with_memchr() {
        let mut haystack = [b'x'; 40];
        assert_eq!(find_line_end(&haystack), None);
        for len in 0..=haystack.len() {
            assert_eq!(find_line_end(&haystack[..len]), None);
        }
        for at in 0..haystack.len() {
            for (first, second) in [(b'\n', b'\r'), (b'\r', b'\n'), (b'\n', b'\n')] {
                haystack = [b'x'; 40];
                haystack[at] = first;
                if at + 3 < haystack.len() {
                    haystack[at + 3] = second;
                }
                for len in 0..=haystack.len() {
                    let expected = memchr::memchr2(b'\n', b'\r', &haystack[..len]);
                    assert_eq!(
                        find_line_end(&haystack[..len]),
                        expected,
                        "at {at}, len {len}"
                    );
                }
            }
        }
        // Bytes that differ from CR or LF by one bit, or are next to them.
        let near = [0x0b, 0x0c, 0x0e, 0x8a, 0x8d, 0x09, 0x00, 0xff, b'\n'];
        assert_eq!(find_line_end(&near), Some(8));
    }

    #[test]
    fn field_splitting() {
        assert_eq!(split_field(b"data: x"), (Field::Data, 6));
        assert_eq!(split_field(b"data:x"), (Field::Data, 5));
        assert_eq!(split_field(b"data"), (Field::Data, 4));
        assert_eq!(split_field(b"data "), (Field::Unknown, 5));
        assert_eq!(split_field(b"dat: x"), (Field::Unknown, 5));
        assert_eq!(split_field(b"id:"), (Field::Id, 3));
        assert_eq!(split_field(b"event:  t"), (Field::Event, 7));
        assert_eq!(split_field(b"retry"), (Field::Retry, 5));
        assert_eq!(split_field(b": c"), (Field::Comment, 2));
        assert_eq!(split_field(b":"), (Field::Comment, 1));
        assert_eq!(split_field(b"x:y:z"), (Field::Unknown, 2));
    }

    #[test]
    fn retry_parsing() {
        assert_eq!(parse_retry(b"0"), Some(Duration::ZERO));
        assert_eq!(parse_retry(b"1234"), Some(Duration::from_millis(1234)));
        assert_eq!(
            parse_retry(b"99999999999999999999999"),
            Some(Duration::from_millis(u64::MAX))
        );
        for bad in [&b""[..], b"+5", b" 5", b"5ms", b"-1", b"1.5", b"\xd9\xa3"] {
            assert_eq!(parse_retry(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_data_line_is_a_slice_of_the_chunk() {
        let chunk = Bytes::from_static(b"data: zero-copy\n\n");
        let mut d = Decoder::new();
        d.feed(chunk.clone());
        let Some(Frame::Event(e)) = d.next_frame().unwrap() else {
            panic!()
        };
        assert_eq!(e.data.as_bytes().as_ptr(), chunk[6..].as_ptr());
    }

    #[test]
    fn space_after_colon_at_line_end_is_not_read_past() {
        assert_eq!(frames(b"data:\n\n"), [Frame::Event(Event::new(""))]);
        assert_eq!(
            frames(b"data:\ndata:x\n\n"),
            [Frame::Event(Event::new("\nx"))]
        );
    }

    #[test]
    fn event_limit_counts_the_joining_lf() {
        let mut d = Decoder::builder().max_event_size(4).build();
        d.feed_slice(b"data: a\ndata: b\n\n"); // "a\nb\n" is 4 bytes
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Event(_)))));
        d.feed_slice(b"data: ab\ndata: c\n\n"); // "ab\nc\n" is 5
        assert_eq!(d.next_frame(), Err(DecodeError::EventTooLarge { limit: 4 }));
        assert_eq!(d.next_frame(), Err(DecodeError::EventTooLarge { limit: 4 }));
        d.finish();
        d.feed_slice(b"data: x\n\n");
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Event(_)))));
    }

    /// Decodes `chunks` in skip mode: the events' data and ids, and the errors.
    fn skipping(line: usize, event: usize, chunks: &[&[u8]]) -> Vec<Result<String, DecodeError>> {
        let mut d = Decoder::builder()
            .max_line_len(line)
            .max_event_size(event)
            .skip_oversized(true)
            .build();
        let mut out = Vec::new();
        for chunk in chunks {
            d.feed_slice(chunk);
            loop {
                match d.next_frame() {
                    Ok(None) => break,
                    Ok(Some(Frame::Event(e))) => out.push(Ok(format!("{}#{}", e.data, e.id))),
                    Ok(Some(_)) => {}
                    Err(err) => out.push(Err(err)),
                }
            }
        }
        out
    }

    #[test]
    fn skip_mode_drops_an_oversized_event_and_goes_on() {
        let line = DecodeError::LineTooLong { limit: 8 };
        let event = DecodeError::EventTooLarge { limit: 8 };
        let wire: &[u8] = b"data: a\n\nid: 2\ndata: 123456789\ndata: b\r\n\r\ndata: c\n\n";
        let expected = vec![Ok("a#".into()), Err(line), Ok("c#2".into())];
        assert_eq!(skipping(8, 64, &[wire]), expected);
        // Whatever the chunking: the long line may arrive in pieces, CR LF split.
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(skipping(8, 64, &bytewise), expected);
        let pieces: Vec<&[u8]> = wire.chunks(5).collect();
        assert_eq!(skipping(8, 64, &pieces), expected);
        // One error per event, however many of its lines are too long.
        assert_eq!(
            skipping(
                8,
                64,
                &[b"data: 123456789\ndata: 123456789\nid: 3\n\ndata: d\n\n"]
            ),
            vec![Err(line), Ok("d#3".into())]
        );
        // An event whose lines fit but whose data does not.
        assert_eq!(
            skipping(64, 8, &[b"data: 1234\ndata: 5678\ndata: 9\n\ndata: e\n\n"]),
            vec![Err(event), Ok("e#".into())]
        );
    }

    #[test]
    fn skip_mode_ends_with_the_stream() {
        let mut d = Decoder::builder()
            .max_line_len(8)
            .skip_oversized(true)
            .build();
        d.feed_slice(b"id: 1\ndata: toolong");
        assert_eq!(d.next_frame(), Err(DecodeError::LineTooLong { limit: 8 }));
        assert_eq!(d.next_frame(), Ok(None));
        d.finish();
        // A new stream: not skipping, and the unfinished event's id was dropped.
        d.feed_slice(b"data: x\n\n");
        let Ok(Some(Frame::Event(e))) = d.next_frame() else {
            panic!()
        };
        assert_eq!((e.data.as_str(), e.id.as_str()), ("x", ""));
    }
}
