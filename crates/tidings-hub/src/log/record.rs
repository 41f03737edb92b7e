//! The encoding of one update in the history file.
//!
//! A compact binary layout of our own rather than JSON: no escaping of the
//! payload, no field names repeated in every record, and decoding is a few
//! length checks. Version 1, all integers as unsigned LEB128 varints:
//!
//! ```text
//! 0x01                      format version
//! varint appended_at        milliseconds since the Unix epoch (for expiry)
//! u8     flags              bit 0 private, bit 1 has type, bit 2 has retry
//! varint retry              only with bit 2
//! string id
//! string type               only with bit 1
//! varint topic count, then that many strings
//! string data
//! ```
//!
//! A string is a varint byte length followed by that many bytes of UTF-8.
//! Nothing may follow the data. A new layout gets a new version byte; the
//! decoder refuses versions it does not know instead of misreading them.

use super::Update;

const VERSION: u8 = 1;
const PRIVATE: u8 = 1;
const HAS_TYPE: u8 = 1 << 1;
const HAS_RETRY: u8 = 1 << 2;

pub(crate) fn encode(update: &Update, appended_at_ms: u64) -> Vec<u8> {
    let len = 16
        + update.id.len()
        + update.data.len()
        + update.event_type.as_ref().map_or(0, String::len)
        + update.topics.iter().map(|t| t.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    put_varint(&mut out, appended_at_ms);
    let mut flags = 0;
    if update.private {
        flags |= PRIVATE;
    }
    if update.event_type.is_some() {
        flags |= HAS_TYPE;
    }
    if update.retry.is_some() {
        flags |= HAS_RETRY;
    }
    out.push(flags);
    if let Some(retry) = update.retry {
        put_varint(&mut out, retry);
    }
    put_str(&mut out, &update.id);
    if let Some(event_type) = &update.event_type {
        put_str(&mut out, event_type);
    }
    put_varint(&mut out, update.topics.len() as u64);
    for topic in &update.topics {
        put_str(&mut out, topic);
    }
    put_str(&mut out, &update.data);
    out
}

/// What precedes the topics and data: enough to expire a record.
pub(super) struct Head {
    pub(super) appended_at_ms: u64,
    pub(super) id: String,
    flags: u8,
    retry: Option<u64>,
}

/// Reads only the head of a record, leaving the rest unchecked: the writer
/// needs no more to expire a record, and skips copying the payload.
pub(super) fn decode_head(bytes: &[u8]) -> Result<Head, &'static str> {
    head(&mut Input(bytes))
}

fn head(input: &mut Input<'_>) -> Result<Head, &'static str> {
    match input.byte()? {
        VERSION => {}
        _ => return Err("unknown record format version"),
    }
    let appended_at_ms = input.varint()?;
    let flags = input.byte()?;
    if flags & !(PRIVATE | HAS_TYPE | HAS_RETRY) != 0 {
        return Err("unknown flags");
    }
    let retry = if flags & HAS_RETRY != 0 {
        Some(input.varint()?)
    } else {
        None
    };
    let id = input.string()?;
    Ok(Head {
        appended_at_ms,
        id,
        flags,
        retry,
    })
}

/// Reads a whole record, checking all of it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Update, &'static str> {
    let mut input = Input(bytes);
    let Head {
        id, flags, retry, ..
    } = head(&mut input)?;
    let event_type = if flags & HAS_TYPE != 0 {
        Some(input.string()?)
    } else {
        None
    };
    let count = input.varint()?;
    // Each topic takes at least one byte, so a count beyond the remaining
    // input is corrupt; checking first keeps a bad count from allocating.
    if count > input.0.len() as u64 {
        return Err("topic count exceeds the record");
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        topics.push(input.string()?);
    }
    let data = input.string()?;
    if !input.0.is_empty() {
        return Err("trailing bytes after the data");
    }
    Ok(Update {
        id,
        topics,
        data,
        private: flags & PRIVATE != 0,
        event_type,
        retry,
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let (&first, rest) = self.0.split_first().ok_or("record truncated")?;
        self.0 = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = self.varint()?;
        if len > self.0.len() as u64 {
            return Err("string longer than the record");
        }
        let (bytes, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> Update {
        Update {
            id: "urn:uuid:1".into(),
            topics: vec!["/a".into(), "https://example.com/b/{id}".into()],
            data: "line 1\nline 2 — ünïcode".into(),
            private: true,
            event_type: Some("changed".into()),
            retry: Some(u64::MAX),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let update = full();
        let bytes = encode(&update, 1_700_000_000_123);
        assert_eq!(decode(&bytes).unwrap(), update);
        let head = decode_head(&bytes).unwrap();
        assert_eq!(
            (head.appended_at_ms, head.id),
            (1_700_000_000_123, update.id)
        );
    }

    #[test]
    fn round_trips_empty_optionals() {
        let update = Update::new("", "", "");
        let bytes = encode(&update, 0);
        assert_eq!(bytes, [VERSION, 0, 0, 0, 1, 0, 0]);
        assert_eq!(decode(&bytes).unwrap(), update);
    }

    #[test]
    fn refuses_damaged_records() {
        let bytes = encode(&full(), 42);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer).unwrap_err(),
            "trailing bytes after the data"
        );
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            decode(&version).unwrap_err(),
            "unknown record format version"
        );
        assert_eq!(decode(&[1, 0, 0x80]).unwrap_err(), "unknown flags");
        assert_eq!(
            decode(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ])
            .unwrap_err(),
            "varint overflows 64 bits"
        );
        assert_eq!(
            decode(&[1, 0, 0, 1, 0xff, 0, 0]).unwrap_err(),
            "string is not UTF-8"
        );
        assert_eq!(
            decode(&[1, 0, 0, 0, 0xff, 0xff, 0x03]).unwrap_err(),
            "topic count exceeds the record"
        );
    }

    proptest! {
        #[test]
        fn round_trips_any_update(
            id in ".*", topics in proptest::collection::vec(".*", 0..4), data in ".*",
            private: bool, event_type in proptest::option::of(".*"),
            retry in proptest::option::of(any::<u64>()), at: u64,
        ) {
            let update = Update { id, topics, data, private, event_type, retry };
            let bytes = encode(&update, at);
            prop_assert_eq!(decode_head(&bytes).unwrap().appended_at_ms, at);
            prop_assert_eq!(decode(&bytes).unwrap(), update);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
