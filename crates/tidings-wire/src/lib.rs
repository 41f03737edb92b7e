//! # tidings-wire
//!
//! The `text/event-stream` format of Server-Sent Events, as the
//! [WHATWG HTML standard](https://html.spec.whatwg.org/multipage/server-sent-events.html)
//! defines it: an incremental [`Decoder`] and an [`EventBuilder`] encoder.
//!
//! This crate does no I/O and reads no clock: it turns bytes into events and events
//! into bytes. The Tidings client and hub put sockets and timers around it.
//!
//! - The decoder accepts chunks of any size, never rescans a byte, gives the same events
//!   whatever the chunking, and bounds its memory by a line limit and an event limit.
//! - The encoder writes one event into [`bytes::Bytes`] and refuses values that would
//!   inject fields (a `try_` method for each such value).
//!
//! ```
//! use tidings_wire::{Decoder, EventBuilder, Frame};
//!
//! let wire = EventBuilder::new().event("score").id("3").data("2-1\nhalf time").build();
//!
//! let mut decoder = Decoder::new();
//! decoder.feed(wire);
//! let Some(Frame::Event(event)) = decoder.next_frame()? else { unreachable!() };
//! assert_eq!(event.event_type, "score");
//! assert_eq!(event.data, "2-1\nhalf time");
//! assert_eq!(event.id, "3");
//! # Ok::<(), tidings_wire::DecodeError>(())
//! ```

mod decode;
mod encode;
mod text;

pub use decode::{
    DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_LEN, DecodeError, Decoder, DecoderBuilder, Event,
    Frame,
};
pub use encode::{EncodeError, EventBuilder, validate_event_type, validate_id};
pub use text::Text;

/// The media type of an event stream.
pub const MIME_TYPE: &str = "text/event-stream";

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
