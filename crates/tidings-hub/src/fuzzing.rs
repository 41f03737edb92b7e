//! The bodies of the fuzz targets in `fuzz/`: unstable, compiled only for tests and with
//! the `fuzzing` feature, which exists for `fuzz/` alone.
//!
//! Each function takes the fuzzer's bytes, runs them through the hub's own code and
//! asserts what must hold for every input, so that a wrong answer is a crash as much as
//! a panic is. Each returns whether the input went the interesting way (accepted,
//! matched, verified, decoded), which the tests use to check that the seeds reach both
//! ways; the fuzz targets ignore it.
//!
//! The tests at the end run every function over its seed inputs (`fuzz/seeds/<target>/`)
//! and thousands of mutations of them, so `cargo test -p tidings-hub` runs every target's
//! body on stable.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tidings_wire::{Decoder, Event, Frame, Text};

use crate::auth::{
    self, AuthError, Authorizer, KeyConfig, MercureClaims, Role, SigningKey, TokenSource,
};
use crate::http::publish::parse_form;
use crate::hub::Hub;
use crate::log::{Update, record};
use crate::topic::{Selector, SelectorSet};

/// Longer inputs are skipped: they find nothing shorter ones do not, and they keep
/// template compilation and HMAC work per input small.
const MAX_INPUT: usize = 4096;

/// A hub to validate updates with, as the publish handler does. Built once: building
/// spawns its dispatch task, which never runs here (nothing is appended).
fn hub() -> &'static Hub {
    static HUB: OnceLock<(tokio::runtime::Runtime, Hub)> = OnceLock::new();
    &HUB.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let hub = runtime
            .block_on(Hub::builder().build())
            .expect("an in-memory hub");
        (runtime, hub)
    })
    .1
}

/// The status and the text of a refusal as the client receives it, which must be a
/// single line ending in LF.
fn refusal_text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .now_or_never()
        .expect("a refusal's body is ready at once")
        .expect("a refusal's body can be read");
    let text = String::from_utf8(body.to_vec()).expect("a refusal is UTF-8");
    let line = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("a refusal ends with LF: {text:?}"));
    assert!(!line.is_empty(), "a refusal says why");
    assert_one_line(line);
    (status, line.to_owned())
}

fn assert_one_line(message: &str) {
    assert!(
        !message.contains(['\r', '\n']),
        "a message must be one line: {message:?}"
    );
}

// ---------------------------------------------------------------------------
// publish_form

/// A publish request's form body, through [`parse_form`] and then [`Hub::validate`], as
/// the publish handler does.
///
/// - A body the parser refuses is a 400 whose body is one line.
/// - A parsed update, written back as a form, parses to the same update.
/// - Validation accepts exactly the updates that have at least one topic and at most the
///   limit, no empty topic, an id without CR, LF or NUL that does not start with `#`
///   (or none), and a type without CR or LF.
/// - An accepted update has topics, an id (generated if none was given) and a type with
///   no line break, and the event the hub encodes for it decodes, with the event-stream
///   decoder a subscriber uses, to its data (line breaks as LF), id, type and retry.
///
/// Returns whether the update was accepted.
pub fn publish_form(data: &[u8]) -> bool {
    if data.len() > MAX_INPUT {
        return false;
    }
    let update = match parse_form(data) {
        Ok(update) => update,
        Err(refusal) => {
            let (status, _) = refusal_text(refusal.into_response());
            assert_eq!(status, StatusCode::BAD_REQUEST, "a malformed form is a 400");
            return false;
        }
    };
    let form = to_form(&update);
    match parse_form(form.as_bytes()) {
        Ok(again) => assert_eq!(again, update, "the form {form:?} parses differently"),
        Err(refusal) => panic!("the re-encoded form {form:?} is refused: {refusal:?}"),
    }

    let hub = hub();
    let acceptable = acceptable(&update, hub.config().max_topics);
    let valid = match hub.validate(update.clone()) {
        Ok(valid) => valid,
        Err(err) => {
            assert!(
                !acceptable,
                "a valid update was refused: {err} ({update:?})"
            );
            assert_one_line(&err.to_string());
            return false;
        }
    };
    assert!(acceptable, "an invalid update was accepted: {update:?}");
    assert!(!valid.topics.is_empty(), "an update has a topic");
    assert!(
        !valid.id.is_empty() && !valid.id.contains(['\r', '\n', '\0']),
        "an id fits its line: {:?}",
        valid.id
    );
    if update.id.is_empty() {
        assert!(valid.id.starts_with("urn:uuid:"), "a generated id is a URN");
    } else {
        assert_eq!(valid.id, update.id, "a publisher's id is kept");
    }
    assert!(
        valid
            .event_type
            .as_deref()
            .is_none_or(|t| !t.contains(['\r', '\n'])),
        "a type fits its line"
    );
    assert_eq!(
        (
            &valid.topics,
            &valid.data,
            valid.private,
            &valid.event_type,
            valid.retry
        ),
        (
            &update.topics,
            &update.data,
            update.private,
            &update.event_type,
            update.retry
        ),
        "validation changes nothing but an empty id"
    );
    assert_eq!(
        delivered(&crate::event::encode(&valid)),
        expected_frames(&valid),
        "a subscriber does not see the update that was published"
    );
    true
}

/// The rules of publishing, written out independently of [`Hub::validate`].
fn acceptable(update: &Update, max_topics: usize) -> bool {
    let topics = !update.topics.is_empty()
        && update.topics.len() <= max_topics
        && update.topics.iter().all(|t| !t.is_empty());
    let id = update.id.is_empty()
        || (!update.id.starts_with('#') && !update.id.contains(['\r', '\n', '\0']));
    let event_type = update
        .event_type
        .as_deref()
        .is_none_or(|t| !t.contains(['\r', '\n']));
    topics && id && event_type
}

/// An update as a form a publisher could send.
fn to_form(update: &Update) -> String {
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let mut fields: Vec<String> = update
        .topics
        .iter()
        .map(|topic| format!("topic={}", encode(topic)))
        .collect();
    fields.push(format!("data={}", encode(&update.data)));
    if update.private {
        fields.push("private=on".into());
    }
    if !update.id.is_empty() {
        fields.push(format!("id={}", encode(&update.id)));
    }
    if let Some(event_type) = &update.event_type {
        fields.push(format!("type={}", encode(event_type)));
    }
    if let Some(retry) = update.retry {
        fields.push(format!("retry={retry}"));
    }
    fields.join("&")
}

/// What a subscriber's decoder makes of an encoded event.
fn delivered(wire: &[u8]) -> Vec<Frame> {
    let mut decoder = Decoder::new();
    decoder.feed_slice(wire);
    let mut frames = Vec::new();
    while let Some(frame) = decoder
        .next_frame()
        .expect("an encoded update decodes without error")
    {
        frames.push(frame);
    }
    frames
}

fn expected_frames(update: &Update) -> Vec<Frame> {
    let mut frames = Vec::new();
    if let Some(retry) = update.retry {
        frames.push(Frame::Retry(Duration::from_millis(retry)));
    }
    frames.push(Frame::Event(Event {
        event_type: Text::from(
            update
                .event_type
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("message"),
        ),
        data: Text::from(update.data.replace("\r\n", "\n").replace('\r', "\n")),
        id: Text::from(update.id.as_str()),
    }));
    frames
}

// ---------------------------------------------------------------------------
// selector

/// A topic selector and a topic: the input up to the first `0xFF` byte (which UTF-8
/// never contains) is the selector, the rest the topic, both read as UTF-8 lossily.
///
/// - [`Selector::new`] and [`Selector::matches`] never panic;
/// - `*` is the wildcard and matches everything; text without `{` is exact and so is
///   an invalid template, and an exact selector matches only its own text;
/// - every selector matches its own text;
/// - compiling again (from the template cache) and a one-selector [`SelectorSet`]
///   answer the same;
/// - a template matches its expansions: the template is expanded (RFC 6570) with
///   values and lists of unreserved characters drawn from the topic bytes, some
///   variables left undefined, and the result must match.
///
/// Returns whether the selector matched the topic.
pub fn selector(data: &[u8]) -> bool {
    if data.len() > MAX_INPUT {
        return false;
    }
    let (source, rest) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let source = String::from_utf8_lossy(source);
    let topic = String::from_utf8_lossy(rest);
    let selector = Selector::new(&source);

    assert_eq!(selector.as_str(), source);
    let kinds = [
        selector.is_wildcard(),
        selector.is_exact(),
        selector.is_template(),
    ];
    assert_eq!(
        kinds.iter().filter(|&&k| k).count(),
        1,
        "one kind: {selector:?}"
    );
    assert_eq!(selector.is_wildcard(), source == "*");
    if source != "*" && !source.contains('{') {
        assert!(selector.is_exact(), "text without `{{` is exact");
    }
    assert!(
        selector.matches(&source),
        "{selector:?} misses its own text"
    );

    let matched = selector.matches(&topic);
    if selector.is_wildcard() {
        assert!(matched, "`*` misses {topic:?}");
    }
    if selector.is_exact() {
        assert_eq!(matched, topic == source, "{selector:?} against {topic:?}");
    }
    assert_eq!(
        Selector::new(&source).matches(&topic),
        matched,
        "a recompiled selector"
    );
    assert_eq!(
        SelectorSet::new([&*source]).matches(&topic),
        matched,
        "a one-selector set"
    );

    if selector.is_template()
        && let Some(parts) = template_parts(&source)
    {
        let expansion = expand(&parts, &mut Entropy::new(rest));
        assert!(
            selector.matches(&expansion),
            "{selector:?} misses its expansion {expansion:?}"
        );
    }
    matched
}

/// One part of a URI template, as this module reads it (independently of `topic`).
#[derive(Debug)]
enum TemplatePart<'a> {
    Literal(&'a str),
    Expression {
        operator: Option<char>,
        vars: Vec<VarSpec<'a>>,
    },
}

#[derive(Debug)]
struct VarSpec<'a> {
    name: &'a str,
    prefix: Option<usize>,
    explode: bool,
}

/// The parts of a template; `None` for text this simple reader does not understand
/// (it need not accept every valid template, only read right those it accepts).
fn template_parts(source: &str) -> Option<Vec<TemplatePart<'_>>> {
    let mut parts = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}')?;
                parts.push(expression(&rest[1..end])?);
                rest = &rest[end + 1..];
            }
            Some(at) => {
                parts.push(TemplatePart::Literal(&rest[..at]));
                rest = &rest[at..];
            }
            None => {
                parts.push(TemplatePart::Literal(rest));
                rest = "";
            }
        }
    }
    Some(parts)
}

fn expression(body: &str) -> Option<TemplatePart<'_>> {
    let first = body.chars().next()?;
    let (operator, list) = if "+#./;?&".contains(first) {
        (Some(first), &body[1..])
    } else {
        (None, body)
    };
    let vars = list
        .split(',')
        .map(|spec| {
            let (name, prefix, explode) = if let Some(name) = spec.strip_suffix('*') {
                (name, None, true)
            } else if let Some((name, len)) = spec.split_once(':') {
                let digits = !len.is_empty()
                    && len.len() <= 4
                    && !len.starts_with('0')
                    && len.bytes().all(|b| b.is_ascii_digit());
                (name, Some(len.parse().ok().filter(|_| digits)?), false)
            } else {
                (spec, None, false)
            };
            let name_chars = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%'));
            (!name.is_empty() && name_chars).then_some(VarSpec {
                name,
                prefix,
                explode,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(TemplatePart::Expression { operator, vars })
}

/// The fuzzer's bytes as a source of choices, repeated as needed (zeros when empty).
struct Entropy<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl<'a> Entropy<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Entropy { bytes, next: 0 }
    }

    fn byte(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let byte = self.bytes[self.next % self.bytes.len()];
        self.next += 1;
        byte
    }

    /// A string of `len` unreserved characters, which expansion leaves as they are.
    fn unreserved(&mut self, len: usize) -> String {
        const UNRESERVED: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        (0..len)
            .map(|_| char::from(UNRESERVED[usize::from(self.byte()) % UNRESERVED.len()]))
            .collect()
    }
}

/// Expands a template per RFC 6570 §3.2 with values chosen by `entropy`: each variable
/// is undefined, a string (possibly empty, cut to its prefix length) or, without a
/// prefix modifier, a list of one to three non-empty strings.
fn expand(parts: &[TemplatePart<'_>], entropy: &mut Entropy<'_>) -> String {
    let mut out = String::new();
    for part in parts {
        let (operator, vars) = match part {
            TemplatePart::Literal(text) => {
                out.push_str(text);
                continue;
            }
            TemplatePart::Expression { operator, vars } => (*operator, vars),
        };
        let (first, separator, named, if_empty) = match operator {
            None | Some('+') => ("", ",", false, ""),
            Some('#') => ("#", ",", false, ""),
            Some('.') => (".", ".", false, ""),
            Some('/') => ("/", "/", false, ""),
            Some(';') => (";", ";", true, ""),
            Some('?') => ("?", "&", true, "="),
            _ => ("&", "&", true, "="),
        };
        let mut items = Vec::new();
        for var in vars {
            let name = var.name;
            match entropy.byte() % 3 {
                0 => {}
                1 => {
                    let len = usize::from(entropy.byte() % 6);
                    let value = entropy.unreserved(var.prefix.map_or(len, |p| len.min(p)));
                    items.push(match (named, value.is_empty()) {
                        (false, _) => value,
                        (true, true) => format!("{name}{if_empty}"),
                        (true, false) => format!("{name}={value}"),
                    });
                }
                _ if var.prefix.is_some() => {
                    let len = 1 + usize::from(entropy.byte() % 4);
                    let value = entropy.unreserved(var.prefix.map_or(len, |p| len.min(p)));
                    items.push(if named {
                        format!("{name}={value}")
                    } else {
                        value
                    });
                }
                _ => {
                    let count = 1 + usize::from(entropy.byte() % 3);
                    let list: Vec<String> = (0..count)
                        .map(|_| {
                            let len = 1 + usize::from(entropy.byte() % 4);
                            entropy.unreserved(len)
                        })
                        .collect();
                    match (var.explode, named) {
                        (true, true) => items.extend(list.iter().map(|v| format!("{name}={v}"))),
                        (true, false) => items.extend(list),
                        (false, true) => items.push(format!("{name}={}", list.join(","))),
                        (false, false) => items.push(list.join(",")),
                    }
                }
            }
        }
        if !items.is_empty() {
            out.push_str(first);
            out.push_str(&items.join(separator));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// token

/// The HMAC key tokens are checked with; never in a refusal.
const TOKEN_KEY: &str = "tidings-fuzzing-hmac-key-0f3c9a71e25b48d6";

/// The one genuine token: signed with [`TOKEN_KEY`], no expiry, may publish and
/// receive everything. Byte `0x01` of the input stands for it.
fn genuine_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let claims = MercureClaims {
            publish: Some(vec!["*".into()]),
            subscribe: Some(vec!["*".into()]),
            payload: None,
        };
        auth::mint(&SigningKey::hmac(TOKEN_KEY), &claims, None).expect("a token is minted")
    })
}

fn authorizer() -> &'static Authorizer {
    static AUTHORIZER: OnceLock<Authorizer> = OnceLock::new();
    AUTHORIZER.get_or_init(|| {
        let key = KeyConfig::hmac(TOKEN_KEY);
        Authorizer::new(Some(key.clone()), Some(key))
    })
}

/// A request's token places and the token in them. Byte 0 says what the request has:
/// bits 0-1 the number of `Authorization` headers, bits 2-3 of `Cookie` headers, bit 4
/// a query string, bit 5 that a subscriber (not a publisher) is authenticated, bit 7 a
/// cookie name other than `mercureAuthorization`. The rest, split on LF, gives their
/// values in that order; a value that is not a valid header value leaves its header out.
/// Every `0x01` byte is replaced with the genuine token.
///
/// - extraction never panics and follows Mercure's precedence (a header, else the
///   query, else a cookie), and the token it returns is non-empty and comes from
///   where it says;
/// - [`Authorizer::authenticate`] agrees with extraction followed by verification;
/// - a token is accepted if and only if it is exactly the genuine token;
/// - every refusal is one line and contains neither the key nor the genuine token,
///   nor the token presented when that one looks like a JWT.
///
/// Returns whether the genuine token was accepted.
pub fn token(data: &[u8]) -> bool {
    if data.len() > MAX_INPUT {
        return false;
    }
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let genuine = genuine_token();
    let mut values = rest.split(|&b| b == b'\n').map(|value| {
        let mut out = Vec::with_capacity(value.len());
        for &b in value {
            match b {
                0x01 => out.extend_from_slice(genuine.as_bytes()),
                b => out.push(b),
            }
        }
        out
    });

    let mut headers = HeaderMap::new();
    let mut has_authorization = false;
    let mut cookies = Vec::new();
    for _ in 0..flags & 3 {
        if let Some(Ok(value)) = values.next().map(|v| HeaderValue::from_bytes(&v)) {
            headers.append(header::AUTHORIZATION, value);
            has_authorization = true;
        }
    }
    for _ in 0..(flags >> 2) & 3 {
        if let Some(bytes) = values.next()
            && let Ok(value) = HeaderValue::from_bytes(&bytes)
        {
            headers.append(header::COOKIE, value);
            cookies.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let query = (flags & 16 != 0)
        .then(|| values.next())
        .flatten()
        .map(|q| String::from_utf8_lossy(&q).into_owned());
    let role = if flags & 32 != 0 {
        Role::Subscriber
    } else {
        Role::Publisher
    };
    let cookie_name = (flags & 128 != 0)
        .then(|| values.next())
        .flatten()
        .map(|n| String::from_utf8_lossy(&n).into_owned());

    let extracted = auth::extract_token_with_cookie(
        &headers,
        query.as_deref(),
        cookie_name.as_deref().unwrap_or(auth::COOKIE_NAME),
    );
    if cookie_name.is_none() {
        assert_eq!(
            auth::extract_token(&headers, query.as_deref()),
            extracted,
            "extract_token is extract_token_with_cookie with the default name"
        );
    }
    if has_authorization {
        assert!(
            matches!(extracted, Err(_) | Ok(Some((_, TokenSource::Header)))),
            "an Authorization header comes first: {extracted:?}"
        );
    }
    let token = match &extracted {
        Err(err) => {
            assert_clean_refusal(err, None);
            None
        }
        Ok(None) => None,
        Ok(Some((token, source))) => {
            assert!(!token.is_empty(), "an extracted token is never empty");
            match source {
                TokenSource::Header => assert!(has_authorization),
                TokenSource::Query => assert!(!has_authorization && query.is_some()),
                TokenSource::Cookie => assert!(
                    !has_authorization && cookies.iter().any(|c| c.contains(token.as_str())),
                    "the cookie token {token:?} is in no Cookie header"
                ),
            }
            Some((token.as_str(), *source))
        }
    };

    let verified = token.map(|(token, source)| {
        let verified = authorizer().verify(role, token, SystemTime::now());
        match &verified {
            Ok(claims) => {
                assert_eq!(token, genuine, "a forged token was accepted");
                assert!(claims.can_publish_all(["urn:fuzz"]));
            }
            Err(err) => {
                assert_ne!(token, genuine, "the genuine token was refused: {err}");
                assert_clean_refusal(err, Some(token));
            }
        }
        verified.map(|claims| (claims, source))
    });
    if cookie_name.is_none() {
        let authenticated = authorizer().authenticate(role, &headers, query.as_deref());
        let expected = match extracted {
            Err(err) => Err(err),
            Ok(None) => Ok(None),
            Ok(Some(_)) => verified.clone().expect("a token was extracted").map(Some),
        };
        assert_eq!(
            authenticated, expected,
            "authenticate = extract, then verify"
        );
    }
    matches!(verified, Some(Ok(_)))
}

fn assert_clean_refusal(err: &AuthError, presented: Option<&str>) {
    let message = err.to_string();
    assert_one_line(&message);
    assert!(!message.contains(TOKEN_KEY), "the key in {message:?}");
    assert!(
        !message.contains(genuine_token()),
        "the genuine token in {message:?}"
    );
    // A short or dot-less token may well be a word of the message; one that looks like
    // a JWT must not be repeated.
    if let Some(token) = presented
        && token.len() >= 24
        && token.matches('.').count() >= 2
    {
        assert!(!message.contains(token), "the token in {message:?}");
    }
}

// ---------------------------------------------------------------------------
// record

/// History records.
///
/// - The input as a record: decoding never panics, and a decoded update encodes to a
///   record that decodes to the same update.
/// - An update built from the input: byte 0 has its flags (bit 0 private, bit 1 a type,
///   bit 2 a retry), bytes 1-8 the append time and bytes 9-16 the retry (little endian),
///   the rest, split on `0xFF` and read as UTF-8 lossily, the id, the type (with bit 1),
///   the data and the topics. It decodes from its encoding to itself, and every
///   truncation of the encoding, and the encoding with a byte more, is refused.
///
/// Returns whether the input decoded as a record.
pub fn record(data: &[u8]) -> bool {
    if data.len() > MAX_INPUT {
        return false;
    }
    let decoded = record::decode(data);
    if let Ok(update) = &decoded {
        let again = record::encode(update, 0);
        assert_eq!(record::decode(&again).as_ref(), Ok(update), "re-encoded");
    }

    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let word = |from: usize| u64::from_le_bytes(std::array::from_fn(|i| byte(from + i)));
    let flags = byte(0);
    let appended_at = word(1);
    let mut fields = data
        .get(17..)
        .unwrap_or_default()
        .split(|&b| b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let id = fields.next().unwrap_or_default();
    let event_type = (flags & 2 != 0).then(|| fields.next().unwrap_or_default());
    let payload = fields.next().unwrap_or_default();
    let update = Update {
        id,
        topics: fields.collect(),
        data: payload,
        private: flags & 1 != 0,
        event_type,
        retry: (flags & 4 != 0).then(|| word(9)),
    };
    let bytes = record::encode(&update, appended_at);
    assert_eq!(record::decode(&bytes).as_ref(), Ok(&update), "round trip");
    let cut = usize::from(byte(0)) * 31 % bytes.len();
    for cut in [0, cut, bytes.len() - 1] {
        assert!(
            record::decode(&bytes[..cut]).is_err(),
            "a record cut at {cut} of {} decodes",
            bytes.len()
        );
    }
    let mut longer = bytes;
    longer.push(byte(1));
    assert!(record::decode(&longer).is_err(), "a byte after the data");
    decoded.is_ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The seed inputs of a target, from `fuzz/seeds/<target>/`.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds")
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        files
            .iter()
            .map(|file| std::fs::read(file).expect("a seed file"))
            .collect()
    }

    /// Bytes that mean something to one target or another.
    const INTERESTING: &[u8] = b"&=%+\n\r\0\x01\xff{}*,:;?#/.\" Bearer";

    /// A seed changed a few times: bytes flipped, inserted, removed or duplicated,
    /// and pieces of other seeds spliced in.
    fn mutate(seeds: &[Vec<u8>], rng: &mut StdRng) -> Vec<u8> {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..5) {
            let at = rng.random_range(0..=input.len());
            match rng.random_range(0..6) {
                0 if at < input.len() => input[at] ^= 1 << rng.random_range(0..8),
                1 => input.insert(at, INTERESTING[rng.random_range(0..INTERESTING.len())]),
                2 => input.insert(at, rng.random()),
                3 if at < input.len() => {
                    let end = rng.random_range(at..=input.len().min(at + 8));
                    input.drain(at..end);
                }
                4 => {
                    let other = &seeds[rng.random_range(0..seeds.len())];
                    let from = rng.random_range(0..=other.len());
                    let to = rng.random_range(from..=other.len());
                    input.splice(at..at, other[from..to].iter().copied());
                }
                _ if at < input.len() => {
                    let end = rng.random_range(at..=input.len().min(at + 8));
                    let piece = input[at..end].to_vec();
                    input.splice(at..at, piece);
                }
                _ => {}
            }
        }
        input
    }

    /// Runs a target over its seeds and `mutations` inputs made from them; returns how
    /// many of each went the interesting way.
    fn exercise(target: &str, run: fn(&[u8]) -> bool, mutations: usize) -> (usize, usize) {
        let seeds = seeds(target);
        let from_seeds = seeds.iter().filter(|seed| run(seed)).count();
        let mut rng = StdRng::seed_from_u64(0x0074_6964_696e_6773);
        let from_mutations = (0..mutations)
            .filter(|_| run(&mutate(&seeds, &mut rng)))
            .count();
        (from_seeds, from_mutations)
    }

    #[test]
    fn publish_form_seeds_and_mutations() {
        let (seeds, mutations) = exercise("publish_form", publish_form, 3000);
        assert!(seeds > 0 && mutations > 0, "nothing was accepted");
        assert!(mutations < 3000, "nothing was refused");
    }

    #[test]
    fn selector_seeds_and_mutations() {
        let (seeds, mutations) = exercise("selector", selector, 3000);
        assert!(seeds > 0 && mutations > 0, "nothing matched");
        assert!(mutations < 3000, "everything matched");
    }

    #[test]
    fn token_seeds_and_mutations() {
        let (seeds, mutations) = exercise("token", token, 3000);
        assert!(
            seeds > 0 && mutations > 0,
            "the genuine token was never accepted"
        );
        assert!(mutations < 3000, "everything was accepted");
    }

    #[test]
    fn record_seeds_and_mutations() {
        let (seeds, mutations) = exercise("record", record, 3000);
        assert!(seeds > 0, "no seed is a record");
        assert!(mutations < 3000, "every mutation decoded");
    }

    #[test]
    fn targets_see_what_they_should() {
        assert!(publish_form(
            b"topic=urn%3Aa&data=x%0Dy&id=i&type=t&retry=5"
        ));
        assert!(!publish_form(b"data=no+topic"));
        assert!(!publish_form(b"topic=a&id=%23hash"));
        assert!(!publish_form(b"topic=a&data=%FF"));

        assert!(selector(
            b"https://example.com/{id}\xffhttps://example.com/7"
        ));
        assert!(!selector(
            b"https://example.com/{id}\xffhttps://example.com/7/8"
        ));
        assert!(selector(b"*\xffanything"));
        assert!(!selector(b"urn:a\xffurn:b"));

        assert!(token(b"\x01Bearer \x01"));
        assert!(token(b"\x04theme=dark; mercureAuthorization=\x01"));
        assert!(token(b"\x10topic=x&authorization=\x01"));
        assert!(!token(b"\x01Bearer \x01x"));
        assert!(!token(b"\x11Basic abc\nauthorization=\x01"));

        assert!(record(&[1, 0, 0, 0, 1, 0, 0]));
        assert!(!record(&[2, 0, 0, 0, 1, 0, 0]));
    }

    #[test]
    fn expansion_follows_rfc_6570() {
        let parts = template_parts("/a{/x,y}{?q*}").unwrap();
        // Entropy: x a list of two ("B", "C"), y undefined, q a string "D".
        let mut entropy = Entropy::new(&[2, 1, 0, 1, 0, 2, 0, 1, 1, 3]);
        assert_eq!(expand(&parts, &mut entropy), "/a/B,C?q=D");
        assert!(template_parts("{x").is_none());
        assert!(template_parts("{x:0}").is_none());
        assert!(template_parts("{}").is_none());
    }
}
