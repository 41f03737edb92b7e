//! The little HTTP/1.1 the load generator speaks: `http://` URLs whose host is fixed and
//! whose path is a template, response heads (parsed by `httparse`), and a state machine
//! that strips the chunked transfer coding from a body as its bytes arrive.

use super::template::{Encoding, Template, Var};

/// An `http://` URL whose path and query are a template.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    /// `host[:port]` as written, for the `Host` header and for resolving.
    pub(crate) authority: String,
    /// The path and query.
    pub(crate) path: Template,
}

impl UrlTemplate {
    /// Parses `http://host[:port]/path?query`, placeholders allowed after the host.
    pub(crate) fn parse(url: &str, allowed: &[Var]) -> Result<UrlTemplate, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported (no TLS)"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['{', '}', '@']) {
            return Err(format!(
                "`{url}`: the host must be written out, without placeholders or credentials"
            ));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(UrlTemplate {
            authority: authority.to_owned(),
            path: Template::parse(&path, Encoding::Percent, allowed)?,
        })
    }

    /// `host:port` for the resolver (port 80 when absent).
    pub(crate) fn host_port(&self) -> String {
        let has_port = match self.authority.rfind(':') {
            Some(at) => !self.authority[at..].contains(']'),
            None => false,
        };
        if has_port {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        }
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// The length of the head in bytes, blank line included.
    pub(crate) len: usize,
    pub(crate) chunked: bool,
    pub(crate) content_length: Option<u64>,
    /// `Connection: close` (or an HTTP/1.0 answer without keep-alive).
    pub(crate) close: bool,
    /// The start of the status' reason and the content type, for error messages.
    pub(crate) reason: String,
    pub(crate) content_type: String,
}

/// The most bytes a response head may take; past it the server is misbehaving.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Parses a response head from the start of `bytes`: `Ok(None)` while it is incomplete.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD => {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(format!("bad response head: {err}")),
    };
    let mut head = Head {
        status: response.code.unwrap_or(0),
        len,
        chunked: false,
        content_length: None,
        close: response.version == Some(0),
        reason: response.reason.unwrap_or("").chars().take(60).collect(),
        content_type: String::new(),
    };
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.trim().parse().ok();
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            head.close = value.contains("close") || (head.close && !value.contains("keep-alive"));
        } else if header.name.eq_ignore_ascii_case("content-type") {
            head.content_type = value.chars().take(60).collect();
        }
    }
    Ok(Some(head))
}

/// Where [`Dechunker`] is in the chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size (the value so far).
    Size(u64),
    /// After the size: an extension or the CR, until LF.
    SizeLine(u64),
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CR LF.
    DataEnd,
    /// After the last chunk (size 0): the body is over.
    Done,
}

/// Strips the chunked transfer coding, as bytes come, in 16 bytes of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dechunker {
    state: ChunkState,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: ChunkState::Size(0),
        }
    }
}

impl Dechunker {
    /// Hands every run of data bytes in `input` to `data`, in order. `Err` when the
    /// coding is broken; `Ok(true)` when the last chunk has been seen.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<bool, String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Size(size) => {
                    let byte = input[0];
                    input = &input[1..];
                    let digit = match byte {
                        b'0'..=b'9' => byte - b'0',
                        b'a'..=b'f' => byte - b'a' + 10,
                        b'A'..=b'F' => byte - b'A' + 10,
                        b';' | b'\r' | b' ' | b'\t' => {
                            self.state = ChunkState::SizeLine(size);
                            continue;
                        }
                        b'\n' => {
                            self.state = Self::after_size(size);
                            continue;
                        }
                        _ => return Err(format!("bad chunk size byte 0x{byte:02x}")),
                    };
                    let size = size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .filter(|&size| size < 1 << 40)
                        .ok_or("chunk size too large")?;
                    self.state = ChunkState::Size(size);
                }
                ChunkState::SizeLine(size) => match memchr::memchr(b'\n', input) {
                    Some(at) => {
                        input = &input[at + 1..];
                        self.state = Self::after_size(size);
                    }
                    None => input = &[],
                },
                ChunkState::Data(left) => {
                    let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size(0),
                        _ => return Err("chunk data longer than its size".into()),
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
        Ok(self.state == ChunkState::Done)
    }

    fn after_size(size: u64) -> ChunkState {
        if size == 0 {
            ChunkState::Done
        } else {
            ChunkState::Data(size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_host_and_template_their_path() {
        let all = &[Var::Topic, Var::Index];
        let url = UrlTemplate::parse(
            "http://127.0.0.1:3000/.well-known/mercure?topic={topic}",
            all,
        )
        .unwrap();
        assert_eq!(url.authority, "127.0.0.1:3000");
        assert_eq!(url.host_port(), "127.0.0.1:3000");
        let values = super::super::template::Values {
            topic: "a/b",
            ..Default::default()
        };
        assert_eq!(url.path.expand(&values), "/.well-known/mercure?topic=a%2Fb");
        let url = UrlTemplate::parse("http://localhost?x={i}", all).unwrap();
        assert_eq!(url.host_port(), "localhost:80");
        assert_eq!(url.path.expand(&Default::default()), "/?x=0");
        assert!(UrlTemplate::parse("https://x/", all).is_err());
        assert!(UrlTemplate::parse("http://{i}/", all).is_err());
    }

    #[test]
    fn heads_parse_across_reads() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        assert_eq!(parse_head(&head[..30]).unwrap(), None);
        let parsed = parse_head(head).unwrap().unwrap();
        assert_eq!(parsed.status, 200);
        assert!(parsed.chunked && !parsed.close);
        assert_eq!(parsed.len, head.len() - 3);
        assert_eq!(parsed.content_type, "text/event-stream");
        let closed = parse_head(b"HTTP/1.0 403 Forbidden\r\ncontent-length: 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (closed.status, closed.content_length, closed.close),
            (403, Some(7), true)
        );
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(parse_head(&huge).is_err());
    }

    #[test]
    fn chunks_are_stripped_whatever_the_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nB\r\nworld, sse!\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut out = Vec::new();
            let mut dechunker = Dechunker::default();
            let first = dechunker
                .feed(&body[..split], |d| out.extend_from_slice(d))
                .unwrap();
            assert!(!first || split >= body.len() - 4);
            assert!(
                dechunker
                    .feed(&body[split..], |d| out.extend_from_slice(d))
                    .unwrap()
            );
            assert_eq!(out, b"hello world, sse!", "split at {split}");
        }
        let mut dechunker = Dechunker::default();
        assert!(dechunker.feed(b"2\r\nabc\r\n", |_| {}).is_err());
        assert!(Dechunker::default().feed(b"zz\r\n", |_| {}).is_err());
        assert!(
            Dechunker::default()
                .feed(b"fffffffffffffffff\r\n", |_| {})
                .is_err()
        );
    }
}
