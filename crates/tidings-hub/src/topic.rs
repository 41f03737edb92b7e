//! Topic selectors: `*`, exact topics and RFC 6570 URI templates.
//!
//! A subscriber names what it wants with *topic selectors* (the `topic` query
//! parameters), and a JWT lists what its holder may publish or receive with
//! selectors too (`mercure.publish`, `mercure.subscribe`). A selector is one of:
//!
//! - `*`, which matches every topic;
//! - a [URI template](https://www.rfc-editor.org/rfc/rfc6570) such as
//!   `https://example.com/books/{id}`, which matches every topic that expanding
//!   the template with *some* values could have produced;
//! - anything else, matched by exact string equality. A string that is not a
//!   valid template (`https://example.com/{`, `{=x}`) is an exact selector too,
//!   and a template also matches the topic equal to its own text, as Mercure does.
//!
//! ```
//! use tidings_hub::topic::{Selector, SelectorSet};
//!
//! let books = Selector::new("https://example.com/books/{id}");
//! assert!(books.matches("https://example.com/books/42"));
//! assert!(!books.matches("https://example.com/books/42/reviews"));
//!
//! let set = SelectorSet::new(["https://example.com/users/1", "https://example.com/books/{id}"]);
//! assert!(set.matches("https://example.com/users/1"));
//! assert!(set.matches_any_topic(["https://example.com/nope", "https://example.com/books/7"]));
//! ```
//!
//! # Template matching
//!
//! A template is compiled once, when the selector is built, into an anchored
//! regular expression of [`regex_automata`] (a finite automaton: matching time is linear in the topic's length,
//! there is no backtracking to exploit). Compiled templates are kept in a
//! bounded process-wide cache, as the same few come back in every token and
//! from many subscribers. The semantics follow RFC 6570 levels 1 to 4 and,
//! where the RFC leaves room, the matcher Mercure uses
//! (`github.com/yosida95/uritemplate`):
//!
//! | operator | first | separator | named | value characters |
//! |----------|-------|-----------|-------|------------------|
//! | none     |       | `,`       | no    | unreserved, pct-encoded |
//! | `+`      |       | `,`       | no    | unreserved, reserved, pct-encoded |
//! | `#`      | `#`   | `,`       | no    | unreserved, reserved, pct-encoded |
//! | `.`      | `.`   | `.`       | no    | unreserved, pct-encoded |
//! | `/`      | `/`   | `/`       | no    | unreserved, pct-encoded |
//! | `;`      | `;`   | `;`       | yes (`name` when empty) | unreserved, pct-encoded |
//! | `?`      | `?`   | `&`       | yes (`name=` when empty) | unreserved, pct-encoded |
//! | `&`      | `&`   | `&`       | yes (`name=` when empty) | unreserved, pct-encoded |
//!
//! *Unreserved* is `A-Z a-z 0-9 - . _ ~`; *reserved* is `: / ? # [ ] @ ! $ & ' ( ) * + , ; =`;
//! *pct-encoded* is `%` and two hex digits (either case). Expansion percent-encodes
//! everything else, so a value never contains a raw space or a raw non-ASCII
//! character; the literal parts of a template must appear verbatim.
//!
//! - A variable may be undefined: it then contributes nothing, not even its
//!   separator, and an expression whose variables are all undefined expands to
//!   nothing (`/books{/id}` matches `/books` and `/books/1`).
//! - A variable may be empty (`{/id}` matches `/`) or a list: without explode,
//!   list items are joined with `,` (`{x}` matches `a,b`, `{;x}` matches `;x=a,b`);
//!   with explode (`*`) they are joined with the operator's separator
//!   (`{/x*}` matches `/a/b/c`, `{?x*}` matches `?x=1&x=2`).
//! - A prefix modifier `:N` allows a string value of at most `N` characters, a
//!   percent-encoded UTF-8 character counting as one. Lengths above 256 are
//!   treated as unbounded, to keep the compiled automaton small.
//! - Associative-array values are not matched (`{?q*}` matches `?q=1&q=2`, not
//!   `?a=1&b=2`), like the matcher Mercure uses: a selector in a JWT grants
//!   exactly the topics it grants on a Mercure hub.
//! - A template has at most 16 KiB and compiles to at most 1 MiB of automaton;
//!   a template beyond these limits is treated as an exact selector (no real
//!   topic template comes close).
//!
//! Where yosida95/uritemplate accepts strings that no expansion produces,
//! Tidings does not: a second first character (`{?x,y}` against `?x=1?y=2`),
//! a leading separator (`{/x,y}` against `//b` is fine, `{?x,y}` against
//! `&y=1` is not), a list under a prefix modifier (`{x:2}` against `ab,cd`).
//! It also counts a prefix in characters where that library counts
//! pct-encoded octets (`{x:1}` matches `%C3%A9`, an `é`), and refuses the
//! empty expression `{}`, which RFC 6570 does not allow.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, Look, Repetition};

/// Prefix lengths above this compile to an unbounded repetition.
const MAX_COUNTED_PREFIX: u16 = 256;
/// Upper bounds on one compiled template, so that a hostile selector from a
/// query string cannot make the hub spend much time or memory compiling it.
const MAX_TEMPLATE_LEN: usize = 16 * 1024;
const MAX_COMPILED_SIZE: usize = 1 << 20;
/// Distinct templates kept compiled (see [`cached_template`]).
const TEMPLATE_CACHE_CAPACITY: usize = 1024;

/// One topic selector, compiled once.
///
/// Equality and hashing consider the selector's text only; cloning is cheap
/// (the text and the compiled template are shared).
///
/// ```
/// use tidings_hub::topic::Selector;
///
/// assert!(Selector::new("*").matches("anything at all"));
/// assert!(Selector::new("urn:example:1").matches("urn:example:1"));
/// assert!(!Selector::new("urn:example:1").matches("urn:example:2"));
///
/// let s = Selector::new("https://example.com/{+path}{?q,lang}");
/// assert!(s.is_template());
/// assert!(s.matches("https://example.com/a/b/c?q=rust&lang=en"));
/// assert!(s.matches("https://example.com/a"));
/// assert!(!s.matches("http://example.com/a"));
/// ```
#[derive(Clone)]
pub struct Selector {
    source: Arc<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Wildcard,
    Exact,
    /// Shared: a clone of a `Regex` gets a cache pool of its own and has to warm it up,
    /// so every selector of the same template uses one compiled matcher.
    Template(Arc<Regex>),
}

impl Selector {
    /// Compiles a selector. Never fails: text that is neither `*` nor a valid
    /// URI template is an exact selector.
    pub fn new(source: &str) -> Selector {
        let kind = if source == "*" {
            Kind::Wildcard
        } else if source.contains('{') {
            match cached_template(source) {
                Some(regex) => Kind::Template(regex),
                None => Kind::Exact,
            }
        } else {
            Kind::Exact
        };
        Selector {
            source: source.into(),
            kind,
        }
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.kind {
            Kind::Wildcard => true,
            Kind::Exact => *self.source == *topic,
            Kind::Template(regex) => *self.source == *topic || regex.is_match(topic),
        }
    }

    /// The selector's text, as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this is `*`, which matches every topic.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.kind, Kind::Wildcard)
    }

    /// Whether this selector matches exactly one topic, its own text (so it can
    /// be looked up in an index instead of being tried against every topic).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact)
    }

    /// Whether this selector is a valid URI template, matched by template matching.
    pub fn is_template(&self) -> bool {
        matches!(self.kind, Kind::Template(_))
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Wildcard => "wildcard",
            Kind::Exact => "exact",
            Kind::Template(_) => "template",
        };
        f.debug_struct("Selector")
            .field("source", &self.source)
            .field("kind", &kind)
            .finish()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl From<&str> for Selector {
    fn from(source: &str) -> Self {
        Selector::new(source)
    }
}

impl From<String> for Selector {
    fn from(source: String) -> Self {
        Selector::new(&source)
    }
}

/// Several selectors; a topic is selected when any of them matches it.
///
/// ```
/// use tidings_hub::topic::SelectorSet;
///
/// let set = SelectorSet::new(["https://example.com/books/{id}", "urn:news"]);
/// assert_eq!(set.len(), 2);
/// assert!(set.matches("urn:news"));
/// assert!(!set.matches("urn:weather"));
/// assert!(set.matches_any_topic(["urn:weather", "https://example.com/books/1"]));
/// assert!(!SelectorSet::default().matches("urn:news"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectorSet {
    selectors: Vec<Selector>,
    has_wildcard: bool,
}

impl SelectorSet {
    /// Compiles every selector of `sources`.
    pub fn new<I>(sources: I) -> SelectorSet
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        sources
            .into_iter()
            .map(|s| Selector::new(s.as_ref()))
            .collect()
    }

    /// Whether any selector matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.has_wildcard || self.selectors.iter().any(|s| s.matches(topic))
    }

    /// Whether any selector matches any of `topics` (an update is delivered
    /// when one of its topics is selected).
    pub fn matches_any_topic<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        if self.selectors.is_empty() {
            return false;
        }
        topics.into_iter().any(|t| self.matches(t))
    }

    /// Whether some selector is `*`.
    pub fn has_wildcard(&self) -> bool {
        self.has_wildcard
    }

    /// The selectors, in the order given.
    pub fn iter(&self) -> std::slice::Iter<'_, Selector> {
        self.selectors.iter()
    }

    /// Whether there is no selector (the set then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// The number of selectors.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<T: IntoIterator<Item = Selector>>(iter: T) -> Self {
        let selectors: Vec<Selector> = iter.into_iter().collect();
        let has_wildcard = selectors.iter().any(Selector::is_wildcard);
        SelectorSet {
            selectors,
            has_wildcard,
        }
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::slice::Iter<'a, Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.selectors.iter()
    }
}

// ---------------------------------------------------------------------------
// RFC 6570 parsing

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    PathParameter,
    Query,
    QueryContinuation,
}

impl Operator {
    fn from_char(c: char) -> Option<Operator> {
        Some(match c {
            '+' => Operator::Reserved,
            '#' => Operator::Fragment,
            '.' => Operator::Label,
            '/' => Operator::Path,
            ';' => Operator::PathParameter,
            '?' => Operator::Query,
            '&' => Operator::QueryContinuation,
            _ => return None,
        })
    }

    fn first(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved => "",
            Operator::Fragment => "#",
            Operator::Label => ".",
            Operator::Path => "/",
            Operator::PathParameter => ";",
            Operator::Query => "?",
            Operator::QueryContinuation => "&",
        }
    }

    fn separator(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved | Operator::Fragment => ",",
            Operator::Label => ".",
            Operator::Path => "/",
            Operator::PathParameter => ";",
            Operator::Query | Operator::QueryContinuation => "&",
        }
    }

    fn named(self) -> bool {
        matches!(
            self,
            Operator::PathParameter | Operator::Query | Operator::QueryContinuation
        )
    }

    /// What a named variable with an empty value expands to after its name.
    fn if_empty(self) -> &'static str {
        match self {
            Operator::Query | Operator::QueryContinuation => "=",
            _ => "",
        }
    }

    fn allows_reserved(self) -> bool {
        matches!(self, Operator::Reserved | Operator::Fragment)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modifier {
    None,
    Prefix(u16),
    Explode,
}

#[derive(Debug)]
struct VarSpec<'a> {
    name: &'a str,
    modifier: Modifier,
}

#[derive(Debug)]
enum Part<'a> {
    Literal(&'a str),
    Expression {
        operator: Operator,
        vars: Vec<VarSpec<'a>>,
    },
}

fn is_hex_pair(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_hexdigit() && b[1].is_ascii_hexdigit()
}

/// RFC 6570 §2.1 `literals`: any character but CTL, SP, `"`, `'`, `%` (unless
/// pct-encoded), `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, and only the
/// Unicode ranges of `ucschar` / `iprivate`.
fn is_literal_char(c: char) -> bool {
    matches!(c,
        '\u{21}' | '\u{23}'..='\u{24}' | '\u{26}' | '\u{28}'..='\u{3B}' | '\u{3D}'
        | '\u{3F}'..='\u{5B}' | '\u{5D}' | '\u{5F}' | '\u{61}'..='\u{7A}' | '\u{7E}'
        | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFEF}')
        || (c >= '\u{10000}' && (u32::from(c) & 0xFFFF) <= 0xFFFD && c < '\u{E0000}')
        || ('\u{E1000}'..='\u{EFFFD}').contains(&c)
        || ('\u{F0000}'..='\u{10FFFD}').contains(&c) && (u32::from(c) & 0xFFFF) <= 0xFFFD
}

fn parse_template(source: &str) -> Result<Vec<Part<'_>>, &'static str> {
    let mut parts = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        if let Some(after_brace) = rest.strip_prefix('{') {
            let end = after_brace
                .find('}')
                .ok_or("an expression is not closed with `}`")?;
            let body = &after_brace[..end];
            parts.push(parse_expression(body)?);
            rest = &after_brace[end + 1..];
            continue;
        }
        let end = rest.find('{').unwrap_or(rest.len());
        let literal = &rest[..end];
        let mut i = 0;
        while i < literal.len() {
            let c = literal[i..].chars().next().unwrap_or_default();
            if c == '%' {
                if !is_hex_pair(&literal[i + 1..]) {
                    return Err("a `%` in a literal is not followed by two hex digits");
                }
                i += 3;
            } else if is_literal_char(c) {
                i += c.len_utf8();
            } else {
                return Err("a literal contains a character not allowed in a URI template");
            }
        }
        parts.push(Part::Literal(literal));
        rest = &rest[end..];
    }
    Ok(parts)
}

fn parse_expression(body: &str) -> Result<Part<'_>, &'static str> {
    let mut chars = body.chars();
    let (operator, list) = match chars.next() {
        None => return Err("an expression is empty"),
        Some(c) => match Operator::from_char(c) {
            Some(op) => (op, &body[1..]),
            None if matches!(c, '=' | ',' | '!' | '@' | '|') => {
                return Err("an expression uses an operator reserved for future extensions");
            }
            None => (Operator::Simple, body),
        },
    };
    let vars = list
        .split(',')
        .map(parse_varspec)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Part::Expression { operator, vars })
}

fn parse_varspec(spec: &str) -> Result<VarSpec<'_>, &'static str> {
    let (name, modifier) = if let Some(name) = spec.strip_suffix('*') {
        (name, Modifier::Explode)
    } else if let Some((name, len)) = spec.split_once(':') {
        let valid = !len.is_empty()
            && len.len() <= 4
            && !len.starts_with('0')
            && len.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err("a prefix modifier is not a number from 1 to 9999");
        }
        let len: u16 = len
            .parse()
            .map_err(|_| "a prefix modifier is not a number from 1 to 9999")?;
        (name, Modifier::Prefix(len))
    } else {
        (spec, Modifier::None)
    };
    // varname = varchar *( ["."] varchar ), varchar = ALPHA / DIGIT / "_" / pct-encoded
    let mut previous_dot = true;
    let mut i = 0;
    let bytes = name.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'%' if is_hex_pair(&name[i + 1..]) => {
                i += 3;
                previous_dot = false;
                continue;
            }
            b'.' if !previous_dot => previous_dot = true,
            b if b.is_ascii_alphanumeric() || b == b'_' => previous_dot = false,
            _ => return Err("a variable name is empty or contains a character not allowed"),
        }
        i += 1;
    }
    if previous_dot {
        return Err("a variable name is empty or ends with `.`");
    }
    Ok(VarSpec { name, modifier })
}

// ---------------------------------------------------------------------------
// Compilation to an automaton
//
// The template is turned straight into the syntax tree of a regular
// expression (regex-syntax's `Hir`) and compiled by regex-automata's meta
// engine. Going through regex text instead would spend most of the compile
// time in parsing what we just printed.

fn ranges(pairs: &[(char, char)]) -> Vec<ClassUnicodeRange> {
    pairs
        .iter()
        .map(|&(a, b)| ClassUnicodeRange::new(a, b))
        .collect()
}

fn class(ranges: Vec<ClassUnicodeRange>) -> Hir {
    Hir::class(Class::Unicode(ClassUnicode::new(ranges)))
}

fn literal(text: &str) -> Hir {
    Hir::literal(text.as_bytes())
}

fn repeat(sub: Hir, min: u32, max: Option<u32>) -> Hir {
    Hir::repetition(Repetition {
        min,
        max,
        greedy: true,
        sub: Box::new(sub),
    })
}

fn star(sub: Hir) -> Hir {
    repeat(sub, 0, None)
}

fn optional(sub: Hir) -> Hir {
    repeat(sub, 0, Some(1))
}

const HEX: &[(char, char)] = &[('0', '9'), ('A', 'F'), ('a', 'f')];
const UNRESERVED: &[(char, char)] = &[
    ('A', 'Z'),
    ('a', 'z'),
    ('0', '9'),
    ('-', '.'),
    ('_', '_'),
    ('~', '~'),
];
/// `: / ? # [ ] @ ! $ & ' ( ) * + , ; =`
const RESERVED: &[(char, char)] = &[
    ('!', '!'),
    ('#', '$'),
    ('&', ','),
    ('/', '/'),
    (':', ';'),
    ('=', '='),
    ('?', '@'),
    ('[', '['),
    (']', ']'),
];

fn value_ranges(reserved: bool) -> Vec<ClassUnicodeRange> {
    let mut all = ranges(UNRESERVED);
    if reserved {
        all.extend(ranges(RESERVED));
    }
    all
}

/// `%` and two hex digits, the first from `first`.
fn pct_encoded(first: &[(char, char)]) -> Hir {
    Hir::concat(vec![literal("%"), class(ranges(first)), class(ranges(HEX))])
}

/// Any sequence of value characters (raw or pct-encoded) and `joiner`: list
/// items joined by `joiner`, as one flat loop (cheaper to build and to run
/// than `value (joiner value)*`, and the same language).
fn joined_values(reserved: bool, joiner: char) -> Hir {
    let mut raw = value_ranges(reserved);
    raw.push(ClassUnicodeRange::new(joiner, joiner));
    star(Hir::alternation(vec![class(raw), pct_encoded(HEX)]))
}

/// One value: raw or pct-encoded characters.
fn value(reserved: bool) -> Hir {
    star(Hir::alternation(vec![
        class(value_ranges(reserved)),
        pct_encoded(HEX),
    ]))
}

/// One *character* of a value for prefix counting: a percent-encoded UTF-8
/// sequence counts as one. With `+` and `#`, pct-encoded octets already in the
/// value pass through, so any octet is accepted there.
fn prefix_unit(reserved: bool) -> Hir {
    let continuation = || pct_encoded(&[('8', '9'), ('A', 'B'), ('a', 'b')]);
    let mut alternatives = vec![
        class(value_ranges(reserved)),
        pct_encoded(&[('0', '7')]),
        Hir::concat(vec![pct_encoded(&[('C', 'D'), ('c', 'd')]), continuation()]),
        Hir::concat(vec![
            pct_encoded(&[('E', 'E'), ('e', 'e')]),
            continuation(),
            continuation(),
        ]),
        Hir::concat(vec![
            literal("%"),
            class(ranges(&[('F', 'F'), ('f', 'f')])),
            class(ranges(&[('0', '7')])),
            continuation(),
            continuation(),
            continuation(),
        ]),
    ];
    if reserved {
        alternatives.push(pct_encoded(HEX));
    }
    Hir::alternation(alternatives)
}

fn prefix_value(reserved: bool, len: u16, at_least_one: bool) -> Hir {
    let min = u32::from(at_least_one);
    let max = (len <= MAX_COUNTED_PREFIX).then_some(u32::from(len));
    repeat(prefix_unit(reserved), min, max)
}

/// `item (sep item)*`
fn separated(item: Hir, sep: &str) -> Hir {
    Hir::concat(vec![
        item.clone(),
        star(Hir::concat(vec![literal(sep), item])),
    ])
}

/// One variable's expansion (without the expression's first character or
/// the separator before it).
fn varspec_hir(operator: Operator, var: &VarSpec<'_>) -> Hir {
    let reserved = operator.allows_reserved();
    let sep = operator.separator();
    // A non-exploded list joins its items with `,`.
    let list = || joined_values(reserved, ',');
    if !operator.named() {
        return match var.modifier {
            Modifier::None => list(),
            Modifier::Prefix(len) => prefix_value(reserved, len, false),
            Modifier::Explode => joined_values(reserved, sep.chars().next().unwrap_or(',')),
        };
    }
    let name = literal(var.name);
    if operator.if_empty().is_empty() {
        // `;name` when empty, else `;name=value`.
        let with_value = |value: Hir| {
            Hir::concat(vec![
                name.clone(),
                optional(Hir::concat(vec![literal("="), value])),
            ])
        };
        match var.modifier {
            Modifier::None => with_value(list()),
            Modifier::Prefix(len) => with_value(prefix_value(reserved, len, true)),
            Modifier::Explode => separated(with_value(value(reserved)), sep),
        }
    } else {
        // `?name=` when empty, else `?name=value`.
        let with_value =
            |value: Hir| Hir::concat(vec![name.clone(), literal(operator.if_empty()), value]);
        match var.modifier {
            Modifier::None => with_value(list()),
            Modifier::Prefix(len) => with_value(prefix_value(reserved, len, false)),
            Modifier::Explode => separated(with_value(value(reserved)), sep),
        }
    }
}

/// An expression expands to its first character and the defined variables,
/// in order, joined by the separator; or to nothing when none is defined.
fn expression_hir(operator: Operator, vars: &[VarSpec<'_>]) -> Hir {
    // "A non-empty ordered selection of the first k variables, joined by the
    // separator" is W(k) = W(k-1) (sep P(k))? | P(k): each level contains the
    // previous one once, so the automaton grows linearly with the variables.
    let mut selection: Option<Hir> = None;
    for var in vars {
        let piece = varspec_hir(operator, var);
        selection = Some(match selection {
            None => piece,
            Some(previous) => Hir::alternation(vec![
                Hir::concat(vec![
                    previous,
                    optional(Hir::concat(vec![
                        literal(operator.separator()),
                        piece.clone(),
                    ])),
                ]),
                piece,
            ]),
        });
    }
    let selection = selection.unwrap_or_else(Hir::empty);
    optional(Hir::concat(vec![literal(operator.first()), selection]))
}

fn template_hir(source: &str) -> Result<Hir, &'static str> {
    if source.len() > MAX_TEMPLATE_LEN {
        return Err("template too long");
    }
    let mut hir = vec![Hir::look(Look::Start)];
    for part in parse_template(source)? {
        hir.push(match part {
            Part::Literal(text) => literal(text),
            Part::Expression { operator, vars } => expression_hir(operator, &vars),
        });
    }
    hir.push(Hir::look(Look::End));
    Ok(Hir::concat(hir))
}

type TemplateCache = Mutex<HashMap<Box<str>, Option<Arc<Regex>>>>;

/// Compiles a template, or returns `None` when `source` is not one, through a
/// process-wide cache. The same few templates come back in every token and
/// from many subscribers, and compiling one costs tens of microseconds where a
/// lookup costs tens of nanoseconds. The cache is bounded: a client sending
/// endless distinct templates only evicts entries.
fn cached_template(source: &str) -> Option<Arc<Regex>> {
    static CACHE: OnceLock<TemplateCache> = OnceLock::new();
    let cache = CACHE.get_or_init(TemplateCache::default);
    // A panic elsewhere while holding the lock cannot leave the map
    // inconsistent (every operation is a single insert or remove).
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(compiled) = lock().get(source) {
        return compiled.clone();
    }
    // Compile without holding the lock; a concurrent duplicate is harmless.
    let compiled = match compile_template(source) {
        Ok(regex) => Some(Arc::new(regex)),
        Err(reason) => {
            tracing::trace!(selector = source, %reason, "not a URI template, matching exactly");
            None
        }
    };
    let mut map = lock();
    if map.len() >= TEMPLATE_CACHE_CAPACITY
        && let Some(victim) = map.keys().next().cloned()
    {
        map.remove(&victim);
    }
    map.insert(source.into(), compiled.clone());
    compiled
}

fn compile_template(source: &str) -> Result<Regex, String> {
    let hir = template_hir(source)?;
    Regex::builder()
        .configure(
            Regex::config()
                .nfa_size_limit(Some(MAX_COMPILED_SIZE))
                // Only `is_match` is used: no capture groups to track.
                .which_captures(WhichCaptures::None),
        )
        .build_from_hir(&hir)
        .map_err(|e| format!("template too complex: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(template: &str, topic: &str, expected: bool) {
        let s = Selector::new(template);
        assert!(
            s.is_template(),
            "{template:?} should be a valid template ({:?})",
            compile_template(template).err()
        );
        assert_eq!(
            s.matches(topic),
            expected,
            "{template:?} matching {topic:?}"
        );
    }

    #[test]
    fn template_matching_table() {
        // (template, topic, matches)
        let cases: &[(&str, &str, bool)] = &[
            // Level 1: simple string expansion, unreserved + pct-encoded only.
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/a-b.c_d~e",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/%20x",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/%e2%82%ac",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1/2",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/a b",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/caf\u{e9}",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/%2",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/%zz",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/book/1",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1?x",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "xhttps://example.com/books/1",
                false,
            ),
            ("{var}", "value", true),
            ("{var}", "", true),
            ("{var}", "a,b,c", true),
            ("{var}", "a:b", false),
            ("{x,y}", "1024,768", true),
            ("{x,y}", "1024", true),
            ("{x,y}", ",768", true),
            ("{x,y}", "1024/768", false),
            ("/users/{user}/books/{book}", "/users/a/books/b", true),
            ("/users/{user}/books/{book}", "/users/a/books", false),
            ("/users/{user}/books/{book}", "/users/a/b/books/c", false),
            // Level 2: reserved `+` lets reserved characters through.
            ("{+path}/here", "/foo/bar/here", true),
            ("{+path}/here", "here", false),
            ("{+path}/here", "/here", true),
            (
                "https://example.com/{+rest}",
                "https://example.com/a/b?c=d#e",
                true,
            ),
            (
                "https://example.com/{+rest}",
                "https://example.com/a b",
                false,
            ),
            ("{+x,hello,y}", "1024,Hello%20World!,768", true),
            // Level 2: fragment `#`.
            ("/page{#section}", "/page#intro", true),
            ("/page{#section}", "/page", true),
            ("/page{#section}", "/page#a/b:c", true),
            ("/page{#section}", "/pageintro", false),
            ("/page{#section}", "/page?intro", false),
            ("{#x,hello,y}", "#1024,Hello%20World!,768", true),
            // Level 3: label `.`.
            ("/file{.ext}", "/file.json", true),
            ("/file{.ext}", "/file", true),
            ("/file{.ext}", "/file.", true),
            ("/file{.ext}", "/filejson", false),
            ("/file{.ext}", "/file.a/b", false),
            ("X{.x,y}", "X.1024.768", true),
            ("X{.x,y}", "X.1024", true),
            // Level 3: path segments `/`.
            ("/books{/id}", "/books/1", true),
            ("/books{/id}", "/books", true),
            ("/books{/id}", "/books/1/2", false),
            ("{/var,x}/here", "/value/1024/here", true),
            ("{/var,x}/here", "/here", true),
            ("{/var,x}/here", "/a/b/c/here", false),
            // Level 3: path-style parameters `;`.
            ("/m{;x,y}", "/m;x=1024;y=768", true),
            ("/m{;x,y}", "/m;y=768", true),
            ("/m{;x,y}", "/m;x", true),
            ("/m{;x,y}", "/m", true),
            ("/m{;x,y}", "/m;y=768;x=1024", false),
            ("/m{;x,y}", "/m;z=1", false),
            ("/m{;x,y}", "/m;x=1;x=2", false),
            // Level 3: form-style query `?` and continuation `&`.
            ("/search{?q,lang}", "/search?q=rust&lang=en", true),
            ("/search{?q,lang}", "/search?lang=en", true),
            ("/search{?q,lang}", "/search?q=", true),
            ("/search{?q,lang}", "/search", true),
            ("/search{?q,lang}", "/search?q", false),
            ("/search{?q,lang}", "/search?lang=en&q=rust", false),
            ("/search{?q,lang}", "/search?q=a b", false),
            ("/search{?q,lang}", "/search?page=2", false),
            ("/search{?q,lang}", "/search?q=1?lang=en", false),
            ("/search?fixed=yes{&x}", "/search?fixed=yes&x=1024", true),
            ("/search?fixed=yes{&x}", "/search?fixed=yes", true),
            ("/search?fixed=yes{&x}", "/search?fixed=yes?x=1024", false),
            // Level 4: prefix modifier.
            ("/dict/{term:1}/{term}", "/dict/c/cat", true),
            ("/dict/{term:1}/{term}", "/dict/ca/cat", false),
            ("/dict/{term:1}/{term}", "/dict//cat", true),
            ("{var:3}", "val", true),
            ("{var:3}", "valu", false),
            ("{var:3}", "%C3%A9t%C3%A9", true),
            ("{var:3}", "a,b", false),
            ("{;hello:5}", ";hello=Hello", true),
            ("{;hello:5}", ";hello", true),
            ("{;hello:5}", ";hello=HelloW", false),
            ("{?q:2}", "?q=ab", true),
            ("{?q:2}", "?q=", true),
            ("{?q:2}", "?q=abc", false),
            ("{+path:6}/here", "/foo/b/here", true),
            ("{+path:6}/here", "/foo/ba/here", false),
            ("{#path:6}", "#/foo/b", true),
            ("{#path:6}", "#/foo/ba", false),
            ("{var:300}", &"a".repeat(1000), true),
            // Level 4: explode modifier with lists.
            ("{list*}", "red,green,blue", true),
            ("{/list*}", "/red/green/blue", true),
            ("{/list*}", "/red,green", false),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo", true),
            ("{.list*}", ".red.green.blue", true),
            ("{.list}", ".red,green,blue", true),
            ("{;list}", ";list=red,green,blue", true),
            ("{;list*}", ";list=red;list=green;list=blue", true),
            ("{;list*}", ";list=red;list;list=blue", true),
            ("{;list*}", ";list=red;other=green", false),
            ("{?list}", "?list=red,green,blue", true),
            ("{?list*}", "?list=red&list=green&list=blue", true),
            ("{?list*}", "?list=red&other=green", false),
            ("{?list*}", "?a=1&b=2", false),
            ("{&list*}", "&list=red&list=green", true),
            ("{+list*}", "red,green,blue", true),
            ("{#list*}", "#red,gr/een", true),
            // Mixed templates as Mercure users write them.
            (
                "https://example.com/users/{user}/books{/book}{?format}",
                "https://example.com/users/kevin/books/42?format=json",
                true,
            ),
            (
                "https://example.com/users/{user}/books{/book}{?format}",
                "https://example.com/users/kevin/books",
                true,
            ),
            (
                "https://example.com/users/{user}/books{/book}{?format}",
                "https://example.com/users/kevin/books?format=json&x=1",
                false,
            ),
            // Literals compare verbatim, including pct-encoded ones and Unicode.
            ("/caf%C3%A9/{id}", "/caf%C3%A9/1", true),
            ("/caf%C3%A9/{id}", "/caf\u{e9}/1", false),
            ("/caf\u{e9}/{id}", "/caf\u{e9}/1", true),
            ("/a.b/{id}", "/aXb/1", false),
            ("/a+b/{id}", "/aab/1", false),
            ("/(x)/{id}", "/(x)/1", true),
            // Stricter than yosida95/uritemplate where no expansion fits.
            ("{?x,y}", "&y=1", false),
            ("{?x,y}", "?y=1", true),
            ("{/x,y}", "//b", true),
            ("{x:2}", "ab,cd", false),
            ("{x:1}", "%C3%A9", true),
            ("{x:1}", "%C3%A9%C3%A9", false),
            ("{.x}", "..", true), // x = "."
            // Variable names: dots, digits, pct-encoded.
            ("{a.b}", "x", true),
            ("{?a.b}", "?a.b=1", true),
            ("{?a%20b}", "?a%20b=1", true),
            ("{?_1}", "?_1=1", true),
        ];
        for (template, topic, expected) in cases {
            check(template, topic, *expected);
        }
    }

    #[test]
    fn the_template_cache_is_bounded_and_transparent() {
        for i in 0..TEMPLATE_CACHE_CAPACITY + 10 {
            let s = Selector::new(&format!("/cache/{i}/{{id}}"));
            assert!(s.matches(&format!("/cache/{i}/x")));
            assert!(!s.matches(&format!("/cache/{}/x", i + 1)));
        }
        // Results are the same through the cache.
        for _ in 0..2 {
            assert!(Selector::new("/again/{id}").matches("/again/1"));
            assert!(Selector::new("/again/{").is_exact());
        }
    }

    #[test]
    fn a_template_matches_its_own_text() {
        let s = Selector::new("https://example.com/books/{id}");
        assert!(s.matches("https://example.com/books/{id}"));
        assert!(
            !Selector::new("https://example.com/books/{id}x")
                .matches("https://example.com/books/{id}")
        );
    }

    #[test]
    fn invalid_templates_are_exact_selectors() {
        for source in [
            "https://example.com/{",
            "https://example.com/{id",
            "https://example.com/{}",
            "https://example.com/{=x}",
            "https://example.com/{,x}",
            "https://example.com/{!x}",
            "https://example.com/{@x}",
            "https://example.com/{|x}",
            "https://example.com/{x,}",
            "https://example.com/{x y}",
            "https://example.com/{x-y}",
            "https://example.com/{.x.}",
            "https://example.com/{x..y}",
            "https://example.com/{x:0}",
            "https://example.com/{x:01}",
            "https://example.com/{x:10000}",
            "https://example.com/{x:}",
            "https://example.com/{x:2*}",
            "https://example.com/{x*:2}",
            "https://example.com/{x%2}",
            "https://example.com/{{x}}",
            "https://example.com/a b/{x}",
            "https://example.com/a|b/{x}",
            "https://example.com/a\"b/{x}",
            "https://example.com/a'b/{x}",
            "https://example.com/a^b/{x}",
            "https://example.com/a<b>/{x}",
            "https://example.com/100%/{x}",
            "https://example.com/x}/{x}",
            "https://example.com/\u{7}/{x}",
        ] {
            let s = Selector::new(source);
            assert!(s.is_exact(), "{source:?} should not be a template");
            assert!(!s.is_template());
            assert!(s.matches(source), "{source:?} matches itself");
            assert!(!s.matches("https://example.com/x"), "{source:?}");
        }
    }

    #[test]
    fn many_variables_compile_linearly() {
        let names: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        let s = Selector::new(&format!("/x{{?{}}}", names.join(",")));
        assert!(s.is_template());
        assert!(s.matches("/x?v3=a&v17=b&v39=c"));
        assert!(s.matches("/x?v0=&v1=1"));
        assert!(!s.matches("/x?v17=b&v3=a"));
        assert!(!s.matches("/x?v40=a"));
    }

    #[test]
    fn oversized_templates_fall_back_to_exact() {
        let huge = "{a:256}".repeat(200);
        let s = Selector::new(&huge);
        assert!(s.is_exact());
        assert!(s.matches(&huge));
        assert!(!s.matches("a"));
    }

    #[test]
    fn wildcard_and_exact() {
        let all = Selector::new("*");
        assert!(all.is_wildcard() && !all.is_exact() && !all.is_template());
        assert!(all.matches(""));
        assert!(all.matches("https://example.com/anything"));
        assert_eq!(all.as_str(), "*");

        let exact = Selector::new("https://example.com/books/1");
        assert!(exact.is_exact());
        assert!(exact.matches("https://example.com/books/1"));
        assert!(!exact.matches("https://example.com/books/1/"));
        assert!(!exact.matches("https://example.com/books/"));
        // No glob semantics for `*` inside a longer selector.
        let star = Selector::new("https://example.com/*");
        assert!(star.is_exact());
        assert!(!star.matches("https://example.com/books"));
        // The empty selector is exact and only matches the empty topic.
        assert!(Selector::new("").matches(""));
        assert!(!Selector::new("").matches("x"));
    }

    #[test]
    fn equality_is_on_the_source_text() {
        assert_eq!(Selector::new("{x}"), Selector::from("{x}".to_string()));
        assert_ne!(Selector::new("{x}"), Selector::new("{y}"));
        assert_eq!(Selector::new("urn:a").to_string(), "urn:a");
        let debug = format!("{:?}", Selector::new("/b/{id}"));
        assert!(
            debug.contains("template") && debug.contains("/b/{id}"),
            "{debug}"
        );
    }

    #[test]
    fn selector_sets() {
        let set = SelectorSet::new(vec!["urn:a".to_string(), "/b/{id}".to_string()]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty() && !set.has_wildcard());
        assert!(set.matches("urn:a"));
        assert!(set.matches("/b/2"));
        assert!(!set.matches("/c/2"));
        assert!(set.matches_any_topic(["/c/2", "/b/3"]));
        assert!(!set.matches_any_topic(["/c/2", "urn:b"]));
        assert!(!set.matches_any_topic([]));
        let sources: Vec<&str> = set.iter().map(Selector::as_str).collect();
        assert_eq!(sources, ["urn:a", "/b/{id}"]);
        assert_eq!((&set).into_iter().count(), 2);

        let empty = SelectorSet::new(Vec::<String>::new());
        assert!(empty.is_empty());
        assert!(!empty.matches("urn:a"));
        assert!(!empty.matches_any_topic(["urn:a"]));

        let all = SelectorSet::new(["urn:x", "*"]);
        assert!(all.has_wildcard());
        assert!(all.matches("whatever"));
        assert!(!all.matches_any_topic([]));
    }

    #[test]
    fn hostile_templates_compile_quickly_or_fall_back() {
        // Many expressions each with the maximum number of variables.
        let expr = format!(
            "{{;{}}}",
            (0..16)
                .map(|i| format!("v{i}:9999"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let hostile = expr.repeat(50);
        let start = std::time::Instant::now();
        let s = Selector::new(&hostile);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert!(s.matches(&hostile));
        // Matching a long topic against a template is linear.
        let s = Selector::new("{+a}x{+b}y{+c}z");
        let topic = "x".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!s.matches(&topic));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}

/// Property tests: whatever values a template is expanded with (by an
/// independent RFC 6570 expander written for these tests), the selector
/// matches the expansion, and nothing with a raw space in it.
#[cfg(test)]
mod expansion_properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Value {
        Undefined,
        Text(String),
        List(Vec<String>),
    }

    fn encode(value: &str, reserved: bool) -> String {
        let mut out = String::new();
        let bytes = value.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            let reserved_char = b":/?#[]@!$&'()*+,;=".contains(&b);
            if reserved && b == b'%' && is_hex_pair(&value[i + 1..]) {
                out.push_str(&value[i..i + 3]);
                i += 3;
                continue;
            }
            if unreserved || (reserved && reserved_char) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
            i += 1;
        }
        out
    }

    /// RFC 6570 Appendix A.
    fn expand(template: &str, value_of: impl Fn(&str) -> Value) -> String {
        let mut out = String::new();
        for part in parse_template(template).unwrap() {
            let (operator, vars) = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Expression { operator, vars } => (operator, vars),
            };
            let reserved = operator.allows_reserved();
            let mut first = true;
            for var in &vars {
                let value = match value_of(var.name) {
                    Value::List(items) if items.is_empty() => Value::Undefined,
                    v => v,
                };
                if matches!(value, Value::Undefined) {
                    continue;
                }
                out.push_str(if first {
                    operator.first()
                } else {
                    operator.separator()
                });
                first = false;
                match value {
                    Value::Undefined => unreachable!(),
                    Value::Text(text) => {
                        if operator.named() {
                            out.push_str(var.name);
                            if text.is_empty() {
                                out.push_str(operator.if_empty());
                                continue;
                            }
                            out.push('=');
                        }
                        let text = match var.modifier {
                            Modifier::Prefix(n) => text.chars().take(usize::from(n)).collect(),
                            _ => text,
                        };
                        out.push_str(&encode(&text, reserved));
                    }
                    Value::List(items) if var.modifier != Modifier::Explode => {
                        if operator.named() {
                            out.push_str(var.name);
                            out.push('=');
                        }
                        let items: Vec<String> =
                            items.iter().map(|i| encode(i, reserved)).collect();
                        out.push_str(&items.join(","));
                    }
                    Value::List(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .map(|item| {
                                if !operator.named() {
                                    encode(item, reserved)
                                } else if item.is_empty() {
                                    format!("{}{}", var.name, operator.if_empty())
                                } else {
                                    format!("{}={}", var.name, encode(item, reserved))
                                }
                            })
                            .collect();
                        out.push_str(&items.join(operator.separator()));
                    }
                }
            }
        }
        out
    }

    const TEMPLATES: &[&str] = &[
        "{x}",
        "{+x}",
        "{#x}",
        "{.x}",
        "{/x}",
        "{;x}",
        "{?x}",
        "{&x}",
        "{x,y,z}",
        "{+x,y}",
        "{#x,y,z}",
        "{.x,y}",
        "{/x,y,z}",
        "{;x,y,z}",
        "{?x,y,z}",
        "{&x,y}",
        "{x*}",
        "{+x*}",
        "{#x*}",
        "{.x*}",
        "{/x*}",
        "{;x*}",
        "{?x*}",
        "{&x*}",
        "{p:3}",
        "{+p:3}",
        "{#p:3}",
        "{.p:3}",
        "{/p:3}",
        "{;p:3}",
        "{?p:3}",
        "{&p:3}",
        "https://example.com/{x}/b{/y*,p:2}{?z,x*}{#y}",
        "/a{;x,y*}{&p:5}",
        "{p:1}{y}.{z}",
        "/users/{x}/books/{y}",
        "https://example.com/{+x}/{y}{.z*}",
    ];

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 %/?#=&;,.:\\-_~!$'()*+@\\[\\]é€ж😀]{0,6}")
            .unwrap()
    }

    fn value(prefix_only: bool) -> BoxedStrategy<Value> {
        if prefix_only {
            prop_oneof![Just(Value::Undefined), text().prop_map(Value::Text)].boxed()
        } else {
            prop_oneof![
                Just(Value::Undefined),
                text().prop_map(Value::Text),
                proptest::collection::vec(text(), 0..4).prop_map(Value::List),
            ]
            .boxed()
        }
    }

    proptest! {
        #[test]
        fn every_expansion_matches(
            template in proptest::sample::select(TEMPLATES),
            x in value(false),
            y in value(false),
            z in value(false),
            p in value(true),
            insert_at in any::<proptest::sample::Index>(),
        ) {
            let expansion = expand(template, |name| match name {
                "x" => x.clone(),
                "y" => y.clone(),
                "z" => z.clone(),
                _ => p.clone(),
            });
            let selector = Selector::new(template);
            prop_assert!(selector.is_template());
            prop_assert!(selector.matches(&expansion), "{} should match {:?}", template, expansion);
            // Expansion never produces a raw space.
            let at = insert_at.index(expansion.len() + 1);
            if expansion.is_char_boundary(at) {
                let mut broken = expansion.clone();
                broken.insert(at, ' ');
                prop_assert!(!selector.matches(&broken), "{} should not match {:?}", template, broken);
            }
        }

        #[test]
        fn arbitrary_selectors_never_panic(source in "\\PC{0,40}", topic in "\\PC{0,40}") {
            let selector = Selector::new(&source);
            let _ = selector.matches(&topic);
            prop_assert!(selector.matches(&source));
        }

        #[test]
        fn template_like_selectors_never_panic(
            source in "[{}a-z0-9:*,.%+#/;?&=!@|]{0,24}",
            topic in "[a-z0-9:,.%/;?&=]{0,24}",
        ) {
            let selector = Selector::new(&source);
            let _ = selector.matches(&topic);
            prop_assert!(selector.matches(&source));
        }
    }
}
