//! A minimal event-stream scanner for the load generator, and the payload it looks for.
//!
//! The full decoder (`tidings-wire`) builds each event's strings; here only three
//! numbers of the `data` field matter, so the scanner keeps a partial line (usually
//! none, so no allocation) and the numbers of the event being read, and nothing else.
//! Lines end with LF or CRLF (what every server measured writes); a lone CR is not a
//! line end here.

/// What a benchmark payload carries: `{"p":1,"s":42,"t":1764590000123456}` (the
/// publisher's number, the sequence number per publisher and topic from 1, the send time
/// in microseconds since the Unix epoch), padded with `"x":"…"` to a set size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Payload {
    pub(crate) publisher: u32,
    pub(crate) seq: u64,
    pub(crate) sent_us: u64,
}

impl Payload {
    /// Writes the payload's JSON, padded to at least `size` bytes.
    pub(crate) fn write(&self, size: usize, out: &mut String) {
        use std::fmt::Write as _;
        let start = out.len();
        let _ = write!(
            out,
            r#"{{"p":{},"s":{},"t":{}"#,
            self.publisher, self.seq, self.sent_us
        );
        let used = out.len() - start + 1;
        if size > used + 7 {
            out.push_str(r#","x":""#);
            out.extend(std::iter::repeat_n('x', size - used - 7));
            out.push('"');
        }
        out.push('}');
    }

    /// Reads a payload from a `data` value: the three numbers, wherever they are.
    pub(crate) fn parse(value: &[u8]) -> Option<Payload> {
        Some(Payload {
            publisher: u32::try_from(number_after(value, b"\"p\":")?).ok()?,
            seq: number_after(value, b"\"s\":")?,
            sent_us: number_after(value, b"\"t\":")?,
        })
    }
}

fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(haystack, key)? + key.len();
    let digits = haystack[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&haystack[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// One event the scanner completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// An event whose data held a payload.
    Payload(Payload),
    /// An event with data that is not a benchmark payload (a subscription event, a
    /// server's greeting).
    Foreign,
}

/// The scanner's state between reads.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// The start of a line that the last read cut (empty almost always).
    partial: Vec<u8>,
    /// The payload found in the current event's data, if any.
    payload: Option<Payload>,
    /// Whether the current event has a `data` field.
    has_data: bool,
}

/// The most bytes one line may hold before the scanner gives up on the stream.
pub(crate) const MAX_LINE: usize = 1 << 20;

impl Scanner {
    /// Scans `input`, handing each completed event to `event`.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut event: impl FnMut(Scanned),
    ) -> Result<(), String> {
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', input) {
                None => {
                    self.partial.extend_from_slice(input);
                    if self.partial.len() > MAX_LINE {
                        return Err(format!("a line longer than {MAX_LINE} bytes"));
                    }
                    return Ok(());
                }
                Some(at) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&input[..at]);
                    self.line(&line, &mut event);
                    input = &input[at + 1..];
                    // Keeps nothing: an idle subscriber holds no buffer.
                }
            }
        }
        let mut start = 0;
        for at in memchr::memchr_iter(b'\n', input) {
            self.line(&input[start..at], &mut event);
            start = at + 1;
        }
        if start < input.len() {
            if input.len() - start > MAX_LINE {
                return Err(format!("a line longer than {MAX_LINE} bytes"));
            }
            self.partial.extend_from_slice(&input[start..]);
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], event: &mut impl FnMut(Scanned)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(payload) = self.payload.take() {
                event(Scanned::Payload(payload));
            } else if self.has_data {
                event(Scanned::Foreign);
            }
            self.has_data = false;
        } else if let Some(value) = line.strip_prefix(b"data:") {
            self.has_data = true;
            if self.payload.is_none() {
                self.payload = Payload::parse(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_at_their_size() {
        let payload = Payload {
            publisher: 3,
            seq: 17,
            sent_us: 1_764_590_000_123_456,
        };
        let mut text = String::new();
        payload.write(0, &mut text);
        assert_eq!(text, r#"{"p":3,"s":17,"t":1764590000123456}"#);
        assert_eq!(Payload::parse(text.as_bytes()), Some(payload));
        for size in [50, 100, 1000] {
            let mut text = String::new();
            payload.write(size, &mut text);
            assert_eq!(text.len(), size);
            assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
            assert_eq!(Payload::parse(text.as_bytes()), Some(payload));
        }
        assert_eq!(Payload::parse(b"{\"p\":1,\"s\":2}"), None);
        assert_eq!(Payload::parse(b"{\"p\":x,\"s\":2,\"t\":3}"), None);
    }

    #[test]
    fn events_are_found_whatever_the_split() {
        let stream = b": hello\n\nid: a\ndata: {\"p\":0,\"s\":1,\"t\":5}\n\nevent: x\r\ndata: not ours\r\n\r\n\
                       data: {\"p\":1,\r\ndata: \"s\":2,\"t\":6}\n\n";
        let expected = vec![
            Scanned::Payload(Payload {
                publisher: 0,
                seq: 1,
                sent_us: 5,
            }),
            Scanned::Foreign,
            // The numbers must be on one data line.
            Scanned::Foreign,
        ];
        for split in 0..stream.len() {
            let mut scanner = Scanner::default();
            let mut got = Vec::new();
            scanner.feed(&stream[..split], |e| got.push(e)).unwrap();
            scanner.feed(&stream[split..], |e| got.push(e)).unwrap();
            assert_eq!(got, expected, "split at {split}");
            assert!(scanner.partial.is_empty());
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut scanner = Scanner::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..20 {
            result = scanner.feed(&chunk, |_| {});
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
