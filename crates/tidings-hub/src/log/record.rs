//! The encoding of one update in the history file.
//!
//! A compact binary layout of our own rather than JSON: no escaping of the
//! payload, no field names repeated in every record, and decoding is a few
//! length checks. All integers are unsigned LEB128 varints. Version 2, which
//! is what [`encode`] writes:
//!
//! ```text
//! 0x02                      format version
//! varint appended_at        milliseconds since the Unix epoch (for expiry)
//! u8     flags              bit 0 private, bit 1 has type, bit 2 has retry
//! varint retry              only with bit 2
//! string id
//! string type               only with bit 1
//! varint topic count, then that many strings
//! string data
//! u32    checksum           CRC-32 (IEEE) of every byte before it, little-endian
//! ```
//!
//! A string is a varint byte length followed by that many bytes of UTF-8.
//! Nothing may follow the checksum. The checksum is there because the storage
//! engine checks its own page checksums only when it repairs a file after a
//! crash: a byte changed on disk in a cleanly closed file would otherwise be
//! read back as a valid update with other content (or, in a length, make the
//! record undecodable without saying why).
//!
//! Version 1 is the same without the checksum; files written before version 2
//! hold such records, and they are still read. A new layout gets a new
//! version byte; the decoder refuses versions it does not know instead of
//! misreading them.

use super::Update;

/// The version [`encode`] writes.
const VERSION: u8 = 2;
/// The first version: no checksum.
const VERSION_1: u8 = 1;
/// The length of the checksum that ends a version 2 record.
const CHECKSUM_LEN: usize = 4;
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
    let checksum = crc32(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// The length of [`encode`]'s output, without encoding: what the update
/// takes in the history, which [`super::Retention::max_bytes`] bounds.
pub(super) fn encoded_len(update: &Update, appended_at_ms: u64) -> usize {
    let string = |s: &str| varint_len(s.len() as u64) + s.len();
    1 + varint_len(appended_at_ms)
        + 1
        + update.retry.map_or(0, varint_len)
        + string(&update.id)
        + update.event_type.as_deref().map_or(0, string)
        + varint_len(update.topics.len() as u64)
        + update.topics.iter().map(|t| string(t)).sum::<usize>()
        + string(&update.data)
        + CHECKSUM_LEN
}

fn varint_len(value: u64) -> usize {
    // 7 bits a byte; 0 still takes one.
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

/// What precedes the topics and data: enough to expire a record.
pub(super) struct Head {
    pub(super) appended_at_ms: u64,
    pub(super) id: String,
    flags: u8,
    retry: Option<u64>,
}

/// Reads only the head of a record, leaving the fields after it unparsed:
/// the writer needs no more to expire a record, and skips copying the
/// payload. The checksum of a version 2 record is still checked, so that a
/// damaged record never yields an id that was not written.
pub(super) fn decode_head(bytes: &[u8]) -> Result<Head, &'static str> {
    head(&mut body(bytes)?)
}

/// The fields of a record after its version byte, once the version is known
/// and (version 2) the checksum matches.
fn body(bytes: &[u8]) -> Result<Input<'_>, &'static str> {
    let (&version, rest) = bytes.split_first().ok_or("record truncated")?;
    match version {
        VERSION_1 => Ok(Input(rest)),
        VERSION => {
            if rest.len() < CHECKSUM_LEN {
                return Err("record truncated");
            }
            let (checked, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
            let mut expected = [0; CHECKSUM_LEN];
            expected.copy_from_slice(checksum);
            if crc32(checked) != u32::from_le_bytes(expected) {
                return Err("checksum mismatch: the record was changed or damaged");
            }
            Ok(Input(&checked[1..]))
        }
        _ => Err("unknown record format version"),
    }
}

fn head(input: &mut Input<'_>) -> Result<Head, &'static str> {
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

/// The format version of a record written by a newer build, if it is one:
/// its version byte is above the versions this build knows, and it is not a
/// version 2 record whose version byte was damaged (its checksum, which
/// covers that byte, would match again with the byte put back). `None` for a
/// record of a known version, damaged or not.
pub(super) fn newer_version(bytes: &[u8]) -> Option<u8> {
    let &version = bytes.first()?;
    if version <= VERSION {
        return None;
    }
    let mut repaired = bytes.to_vec();
    repaired[0] = VERSION;
    if body(&repaired).is_ok() {
        None
    } else {
        Some(version)
    }
}

/// The id an undecodable record of a known version most likely holds: its
/// head read without checking the checksum. Only a hint, for the writer to
/// find the id entry that points at a record it removes; never an update.
pub(super) fn id_hint(bytes: &[u8]) -> Option<String> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION && version != VERSION_1 {
        return None;
    }
    head(&mut Input(rest)).ok().map(|head| head.id)
}

/// Reads a whole record, checking all of it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Update, &'static str> {
    let mut input = body(bytes)?;
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

/// CRC-32 with the IEEE polynomial (the one of zlib and PNG). `crc32fast`
/// uses the CPU's carry-less multiplication where there is one: on replay
/// the checksum of every record is checked, and a table-driven loop a byte
/// at a time took most of the decoding.
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
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
        let checksum = crc32(&[VERSION, 0, 0, 0, 1, 0, 0]).to_le_bytes();
        assert_eq!(bytes[..7], [VERSION, 0, 0, 0, 1, 0, 0]);
        assert_eq!(bytes[7..], checksum);
        assert_eq!(decode(&bytes).unwrap(), update);
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// A version 1 record, as files written before the checksum hold them.
    fn version_1(update: &Update, at: u64) -> Vec<u8> {
        let mut bytes = encode(update, at);
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        bytes[0] = VERSION_1;
        bytes
    }

    #[test]
    fn reads_version_1_records() {
        let update = full();
        let bytes = version_1(&update, 7);
        assert_eq!(decode(&bytes).unwrap(), update);
        assert_eq!(decode_head(&bytes).unwrap().appended_at_ms, 7);
        assert_eq!(
            decode(&[VERSION_1, 0, 0, 0, 1, 0, 0]).unwrap(),
            Update::new("", "", "")
        );
    }

    #[test]
    fn any_changed_byte_is_detected() {
        let bytes = encode(&full(), 42);
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80] {
                let mut changed = bytes.clone();
                changed[at] ^= flip;
                assert!(decode(&changed).is_err(), "byte {at} ^ {flip:#x}");
                assert!(
                    decode_head(&changed).is_err(),
                    "head: byte {at} ^ {flip:#x}"
                );
            }
        }
        let mut data = bytes.clone();
        data[bytes.len() - CHECKSUM_LEN - 1] ^= 0x20;
        assert_eq!(
            decode(&data).unwrap_err(),
            "checksum mismatch: the record was changed or damaged"
        );
    }

    #[test]
    fn refuses_damaged_records() {
        let bytes = encode(&full(), 42);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let old = version_1(&full(), 42);
        let mut longer = old.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer).unwrap_err(),
            "trailing bytes after the data"
        );
        let mut version = bytes.clone();
        version[0] = 3;
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

    #[test]
    fn a_newer_version_is_told_from_a_damaged_version_byte() {
        let bytes = encode(&full(), 42);
        assert_eq!(newer_version(&bytes), None);
        assert_eq!(newer_version(&version_1(&full(), 42)), None);
        assert_eq!(newer_version(&[]), None);
        // A bit flipped in the version byte of a version 2 record: damage.
        let mut flipped = bytes.clone();
        flipped[0] = 3;
        assert_eq!(newer_version(&flipped), None);
        assert!(decode(&flipped).is_err());
        // A record of a layout this build does not know.
        let mut newer = vec![3, 0x80, 0x01];
        newer.extend_from_slice(b"some future layout");
        assert_eq!(newer_version(&newer), Some(3));
        assert_eq!(newer_version(&[200]), Some(200));
        // Damage of another kind: a known version.
        let mut data = bytes.clone();
        data[20] ^= 0x01;
        assert_eq!(newer_version(&data), None);
    }

    #[test]
    fn a_damaged_record_still_hints_at_its_id() {
        let mut bytes = encode(&full(), 42);
        let last = bytes.len() - CHECKSUM_LEN - 1;
        bytes[last] ^= 0x01;
        assert!(decode_head(&bytes).is_err());
        assert_eq!(id_hint(&bytes).as_deref(), Some("urn:uuid:1"));
        assert_eq!(
            id_hint(&version_1(&full(), 1)).as_deref(),
            Some("urn:uuid:1")
        );
        assert_eq!(id_hint(&[3, 0, 0, 1, b'x']), None);
        assert_eq!(id_hint(&[2, 0]), None);
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
            prop_assert_eq!(encoded_len(&update, at), bytes.len());
            prop_assert_eq!(decode_head(&bytes).unwrap().appended_at_ms, at);
            prop_assert_eq!(decode(&version_1(&update, at)).unwrap(), update.clone());
            prop_assert_eq!(decode(&bytes).unwrap(), update);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
