//! Templates of URLs, bodies and topic names with `{name}` placeholders, compiled once
//! and expanded per connection or per request without re-parsing.

use std::fmt::Write as _;

/// A value a template can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    /// `{topic}`: the topic's name (itself expanded from `--topic`).
    Topic,
    /// `{t}`: the topic's number, from 0.
    TopicIndex,
    /// `{i}`: the subscriber's (or publisher's) number, from 0.
    Index,
    /// `{data}`: the payload (publish bodies and URLs only).
    Data,
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "topic" => Var::Topic,
            "t" => Var::TopicIndex,
            "i" => Var::Index,
            "data" => Var::Data,
            _ => return None,
        })
    }
}

/// How a value is written where a placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is (a raw request body, a topic name).
    Raw,
    /// Percent-encoded: every byte but `A-Z a-z 0-9 - . _ ~` (a URL's query or path, a
    /// form field).
    Percent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
    encoding: Encoding,
}

/// The values of one expansion; a variable without a value expands to nothing.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub(crate) topic: &'a str,
    pub(crate) topic_index: usize,
    pub(crate) index: usize,
    pub(crate) data: &'a str,
}

impl Template {
    /// Compiles `text`, whose placeholders must be among `allowed`.
    ///
    /// `{{` and `}}` stand for literal braces.
    pub(crate) fn parse(
        text: &str,
        encoding: Encoding,
        allowed: &[Var],
    ) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "`{text}`: a `}}` without its `{{` (write `}}}}` for a brace)"
                ));
            }
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "`{text}`: a `{{` without its `}}` (write `{{{{` for a brace)"
                ));
            };
            let name = &tail[1..end];
            let var = Var::from_name(name)
                .filter(|var| allowed.contains(var))
                .ok_or_else(|| {
                    let names: Vec<&str> = allowed.iter().map(|var| var.name()).collect();
                    format!(
                        "`{text}`: unknown placeholder `{{{name}}}` (known here: {})",
                        names.join(", ")
                    )
                })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts, encoding })
    }

    /// Appends the expansion to `out`.
    pub(crate) fn expand_into(&self, values: &Values<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => {
                    let text = match var {
                        Var::Topic => values.topic,
                        Var::Data => values.data,
                        Var::TopicIndex => {
                            let _ = write!(out, "{}", values.topic_index);
                            continue;
                        }
                        Var::Index => {
                            let _ = write!(out, "{}", values.index);
                            continue;
                        }
                    };
                    match self.encoding {
                        Encoding::Raw => out.push_str(text),
                        Encoding::Percent => percent_encode(text, out),
                    }
                }
            }
        }
    }

    /// The expansion as a new string.
    pub(crate) fn expand(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        self.expand_into(values, &mut out);
        out
    }
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Topic => "{topic}",
            Var::TopicIndex => "{t}",
            Var::Index => "{i}",
            Var::Data => "{data}",
        }
    }
}

/// Percent-encodes every byte of `text` but the unreserved ones (RFC 3986).
pub(crate) fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Var] = &[Var::Topic, Var::TopicIndex, Var::Index, Var::Data];

    #[test]
    fn placeholders_expand_encoded_or_raw() {
        let url =
            Template::parse("/sub?topic={topic}&n={i}&t={t}", Encoding::Percent, ALL).unwrap();
        let values = Values {
            topic: "/bench/7 x",
            topic_index: 7,
            index: 42,
            data: "",
        };
        assert_eq!(url.expand(&values), "/sub?topic=%2Fbench%2F7%20x&n=42&t=7");
        let raw = Template::parse("{data}!{{x}}", Encoding::Raw, ALL).unwrap();
        let values = Values {
            data: r#"{"s":1}"#,
            ..Values::default()
        };
        assert_eq!(raw.expand(&values), r#"{"s":1}!{x}"#);
    }

    #[test]
    fn mistakes_are_named() {
        let err = Template::parse("/x?{nope}", Encoding::Raw, ALL).unwrap_err();
        assert!(err.contains("unknown placeholder `{nope}`"), "{err}");
        let err = Template::parse("bench-{i}", Encoding::Raw, &[Var::TopicIndex]).unwrap_err();
        assert!(err.contains("known here: {t}"), "{err}");
        assert!(Template::parse("a{b", Encoding::Raw, ALL).is_err());
        assert!(Template::parse("a}b", Encoding::Raw, ALL).is_err());
        assert_eq!(
            Template::parse("plain", Encoding::Raw, ALL)
                .unwrap()
                .expand(&Values::default()),
            "plain"
        );
    }
}
