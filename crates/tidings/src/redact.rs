//! Keeps credentials out of what `tidings listen` prints on stderr: its own messages, the
//! errors it ends with, and the log lines of the libraries under it.
//!
//! Two rules, applied to every line:
//!
//! - a `name=value` pair whose name looks like a credential (it contains `auth`, `token`,
//!   `key`, `secret`, `password`, `passwd`, `sig`, `session`, `credential`, `cookie` or
//!   `jwt`, in any case: Mercure's `authorization`, OAuth's `access_token`, `api_key`,
//!   AWS's `X-Amz-Signature`...) keeps its name and shows `REDACTED` as its value,
//!   wherever it appears (the URL given, a redirect's target, a log field);
//! - the values known to be secret from the command line — those query parameters as
//!   given and decoded, the URL's user name and password, the values of the headers
//!   whose name looks like a credential (`Authorization`, `Cookie`, `X-Api-Key`...) and
//!   the token after their scheme (`Bearer …`) or each cookie's value — are replaced by `REDACTED` wherever
//!   they appear.

use std::io::{self, Write};
use std::sync::Arc;

/// What a credential's value is replaced with.
pub(crate) const REDACTED: &str = "REDACTED";

/// Known secrets shorter than this are not searched for: they would garble messages
/// (and a credential that short protects nothing).
const SHORTEST_SECRET: usize = 4;

/// Whether a query parameter, field or header named `name` holds a credential: the hub's
/// rule, so that the hub's request log and this binary's output hide the same names.
pub(crate) use tidings_hub::is_credential_name;

/// Hides credentials in text (see the module's documentation). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    /// The known secret values, longest first (so a value that contains another is
    /// replaced whole).
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// A redactor that knows the secrets of a URL and of `Name: value` headers.
    pub(crate) fn new<'a>(url: &str, headers: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets = Vec::new();
        // Read as text first: an invalid URL is printed in the error that refuses it.
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_credential_name(name)
            {
                secrets.push(value.to_owned());
            }
        }
        if let Ok(parsed) = reqwest::Url::parse(url) {
            for (name, value) in parsed.query_pairs() {
                if is_credential_name(&name) {
                    secrets.push(value.into_owned());
                }
            }
            secrets.push(parsed.username().to_owned());
            secrets.extend(parsed.password().map(str::to_owned));
        }
        for header in headers {
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            if !is_credential_name(name.trim()) {
                continue;
            }
            let value = value.trim();
            secrets.push(value.to_owned());
            // `Bearer TOKEN`, `Basic CREDENTIALS`: the part after the scheme alone too;
            // `a=TOKEN; b=TOKEN` (cookies): each value alone too.
            if let Some((_, token)) = value.split_once(' ') {
                secrets.push(token.trim().to_owned());
            }
            for part in value.split(';') {
                if let Some((_, token)) = part.split_once('=') {
                    secrets.push(token.trim().to_owned());
                }
            }
        }
        secrets.retain(|s| s.len() >= SHORTEST_SECRET);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    /// `text` with every credential replaced by [`REDACTED`].
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = redact_pairs(text);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// A log writer that redacts each line before writing it to stderr.
    pub(crate) fn stderr(&self) -> RedactingWriter<io::Stderr> {
        RedactingWriter {
            redactor: self.clone(),
            inner: io::stderr(),
        }
    }
}

/// Replaces the value of every `name=value` pair whose name looks like a credential.
fn redact_pairs(text: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || "_-.[]%".contains(c);
    let ends_value = |c: char| c.is_whitespace() || "&#\"'<>()[]{},;`".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        let (before, after) = rest.split_at(at);
        let after = &after[1..];
        let name_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_name(*c))
            .last()
            .map_or(before.len(), |(i, _)| i);
        let value_len = after.find(ends_value).unwrap_or(after.len());
        out.push_str(before);
        out.push('=');
        if value_len > 0 && is_credential_name(&before[name_start..]) {
            out.push_str(REDACTED);
            rest = &after[value_len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A writer (stderr, for the log subscriber) through a [`Redactor`]. The subscriber
/// writes each line with one call, so a secret is never split between two writes.
pub(crate) struct RedactingWriter<W> {
    redactor: Redactor,
    inner: W,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(self.redactor.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_pairs_are_redacted_wherever_they_are() {
        let none = Redactor::default();
        assert_eq!(
            none.redact("http://h/.well-known/mercure?topic=/a&authorization=eyJ.x-y_z&b=1"),
            "http://h/.well-known/mercure?topic=/a&authorization=REDACTED&b=1"
        );
        assert_eq!(
            none.redact("redirecting 'http://h/?access_token=abc' to 'http://i/?Token=def#f'"),
            "redirecting 'http://h/?access_token=REDACTED' to 'http://i/?Token=REDACTED#f'"
        );
        assert_eq!(
            none.redact("x-amz-signature=00ff api_key=k1 topic=t mercureAuthorization=c;"),
            "x-amz-signature=REDACTED api_key=REDACTED topic=t mercureAuthorization=REDACTED;"
        );
        // Nothing else changes, `=` at the edges included.
        for text in ["a == b", "=", "auth=", "id=7 retry=10", "no pairs at all"] {
            assert_eq!(none.redact(text), text);
        }
    }

    #[test]
    fn known_secrets_are_redacted_in_any_form() {
        let redactor = Redactor::new(
            "https://user:hunter22@h/s?topic=x&authorization=tok%2Fen1&jwt=a",
            [
                "Authorization: Bearer header-token-2",
                "Cookie: mercureAuthorization=cookie-token-3",
                "X-Trace: 42",
            ],
        );
        let text = "tok%2Fen1 tok/en1 hunter22 user header-token-2 \
                    Bearer header-token-2 cookie-token-3 42";
        assert_eq!(
            redactor.redact(text),
            "REDACTED REDACTED REDACTED REDACTED REDACTED REDACTED REDACTED 42"
        );
        // A URL that does not parse still has its query read.
        let redactor = Redactor::new("http://h:1:2/?authorization=secret-5", []);
        assert_eq!(
            redactor.redact("invalid URL `http://h:1:2/?authorization=secret-5`; secret-5"),
            "invalid URL `http://h:1:2/?authorization=REDACTED`; REDACTED"
        );
    }

    #[test]
    fn log_lines_are_redacted_as_they_are_written() {
        let mut writer = RedactingWriter {
            redactor: Redactor::new("http://h/?token=abcd1234", ["X-Api-Key: k-5678"]),
            inner: Vec::new(),
        };
        let line =
            b"DEBUG sent key k-5678 to http://h/?token=abcd1234 (next=\"http://i/?sig=ff\")\n";
        writer.write_all(line).unwrap();
        writer.flush().unwrap();
        assert_eq!(
            String::from_utf8(writer.inner).unwrap(),
            "DEBUG sent key REDACTED to http://h/?token=REDACTED (next=\"http://i/?sig=REDACTED\")\n"
        );
    }

    #[test]
    fn credential_names() {
        for name in [
            "authorization",
            "Authorization",
            "access_token",
            "X-Api-Key",
            "Cookie",
        ] {
            assert!(is_credential_name(name), "{name}");
        }
        for name in ["topic", "lastEventID", "X-Trace", "retry", "id"] {
            assert!(!is_credential_name(name), "{name}");
        }
    }
}
