//! The three benchmark corpora of issue 2, generated deterministically so that every
//! run, and every decoder within a run, sees the same bytes.
//!
//! Shared by the `decode`, `encode` and `profile` bench targets; each uses a part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

use bytes::Bytes;

/// Size of each full benchmark corpus.
pub(crate) const CORPUS_SIZE: usize = 32 << 20;

/// Size of the chunks the corpora are fed in, as a socket read would deliver them.
pub(crate) const CHUNK_SIZE: usize = 16 << 10;

/// Data bytes of one event of the `large` corpus.
pub(crate) const LARGE_DATA_LEN: usize = 64 << 10;

/// Data lines per event of the `lines` corpus.
pub(crate) const LINES_PER_EVENT: usize = 20;

/// Which corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// ~75-byte events with an `id`, an `event` type and a one-line JSON `data`.
    Small,
    /// 64 KiB of data on one `data:` line, plus an `id`.
    Large,
    /// 20 short `data:` lines per event, a `: keep-alive` comment every 10 events,
    /// CRLF line endings on every other event.
    Lines,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Small, Kind::Large, Kind::Lines];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Small => "small",
            Kind::Large => "large",
            Kind::Lines => "lines",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The fields of one generated event, before encoding.
#[derive(Clone, Debug)]
pub(crate) struct Fields {
    pub(crate) id: Option<String>,
    pub(crate) event_type: Option<String>,
    /// The data lines, to be joined with LF.
    pub(crate) data: String,
}

/// A corpus: the stream, how many events it holds, and how many line ends (CR or LF
/// bytes) it has.
pub(crate) struct Corpus {
    pub(crate) kind: Kind,
    pub(crate) bytes: Bytes,
    pub(crate) events: usize,
    pub(crate) line_end_bytes: usize,
}

impl Corpus {
    /// Generates the corpus of `kind`, stopping at the first event boundary at or past
    /// `size` bytes.
    pub(crate) fn generate(kind: Kind, size: usize) -> Corpus {
        let mut out = Vec::with_capacity(size + LARGE_DATA_LEN + 1024);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut events = 0;
        while out.len() < size {
            write_event(kind, events, &mut rng, &mut out);
            events += 1;
        }
        let line_end_bytes = out.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
        Corpus {
            kind,
            bytes: Bytes::from(out),
            events,
            line_end_bytes,
        }
    }

    /// The corpus cut into [`CHUNK_SIZE`] slices that share its storage.
    pub(crate) fn chunks(&self) -> Vec<Bytes> {
        (0..self.bytes.len())
            .step_by(CHUNK_SIZE)
            .map(|start| {
                self.bytes
                    .slice(start..(start + CHUNK_SIZE).min(self.bytes.len()))
            })
            .collect()
    }
}

/// The fields of the `n`th event of `kind`, as [`Corpus::generate`] writes them (the
/// `lines` corpus's comments and CRLF endings are wire details, not fields).
pub(crate) fn fields(kind: Kind, n: usize, rng: &mut Rng) -> Fields {
    match kind {
        Kind::Small => {
            const SYMBOLS: [&str; 8] = [
                "ACME", "BOLT", "CRUX", "DYNE", "EPIC", "FLUX", "GRIT", "HALO",
            ];
            const TYPES: [&str; 4] = ["trade", "quote", "order", "level"];
            let r = rng.next();
            let price = 1000 + r % 9000;
            let data = format!(
                r#"{{"seq":{n},"sym":"{}","px":{}.{:02}}}"#,
                SYMBOLS[(r >> 16) as usize % SYMBOLS.len()],
                price,
                (r >> 24) % 100,
            );
            Fields {
                id: Some(format!("{}", 1_000_000 + n)),
                event_type: Some(TYPES[(r >> 40) as usize % TYPES.len()].to_owned()),
                data,
            }
        }
        Kind::Large => {
            // Base64-like payload: what a large binary blob looks like on the wire.
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut data = String::with_capacity(LARGE_DATA_LEN);
            while data.len() < LARGE_DATA_LEN {
                let mut r = rng.next();
                for _ in 0..10 {
                    data.push(char::from(ALPHABET[(r & 63) as usize]));
                    r >>= 6;
                }
            }
            data.truncate(LARGE_DATA_LEN);
            Fields {
                id: Some(format!("blob-{n}")),
                event_type: None,
                data,
            }
        }
        Kind::Lines => {
            let mut data = String::new();
            for line in 0..LINES_PER_EVENT {
                if line > 0 {
                    data.push('\n');
                }
                let r = rng.next();
                write!(data, r#"{{"ev":{n},"line":{line},"v":{}}}"#, r % 100_000)
                    .expect("writing to a String cannot fail");
            }
            Fields {
                id: None,
                event_type: None,
                data,
            }
        }
    }
}

fn write_event(kind: Kind, n: usize, rng: &mut Rng, out: &mut Vec<u8>) {
    let eol: &[u8] = if kind == Kind::Lines && n % 2 == 1 {
        b"\r\n"
    } else {
        b"\n"
    };
    if kind == Kind::Lines && n.is_multiple_of(10) {
        out.extend_from_slice(b": keep-alive");
        out.extend_from_slice(eol);
    }
    let fields = fields(kind, n, rng);
    let mut field = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(eol);
    };
    if let Some(id) = &fields.id {
        field("id", id);
    }
    if let Some(event_type) = &fields.event_type {
        field("event", event_type);
    }
    for line in fields.data.split('\n') {
        field("data", line);
    }
    out.extend_from_slice(eol);
}

/// Every event's fields of a corpus of `kind` and about `size` bytes, in the same order
/// and with the same values as [`Corpus::generate`].
pub(crate) fn all_fields(kind: Kind, size: usize) -> Vec<Fields> {
    let corpus = Corpus::generate(kind, size);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..corpus.events)
        .map(|n| fields(kind, n, &mut rng))
        .collect()
}

/// xorshift64*: deterministic, fast, and good enough to vary the payloads.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
