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
//! A template is compiled once, when the selector is built, into an automaton
//! of [`regex_automata`] anchored at both ends (a forward NFA matched by a lazy
//! DFA or the PikeVM: matching time is linear in the topic's length, there is
//! no backtracking to exploit). Compiled templates are kept in a process-wide
//! cache bounded in bytes (see [Limits](#limits)), as the same few come back
//! in every token and from many subscribers. The semantics follow RFC 6570 levels 1 to 4 and,
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
//!   percent-encoded UTF-8 character counting as one (`N` is bounded, see
//!   [Limits](#limits)).
//! - Associative-array values are not matched (`{?q*}` matches `?q=1&q=2`, not
//!   `?a=1&b=2`), like the matcher Mercure uses: a selector in a JWT grants
//!   exactly the topics it grants on a Mercure hub.
//!
//! Where yosida95/uritemplate accepts strings that no expansion produces,
//! Tidings does not: a second first character (`{?x,y}` against `?x=1?y=2`),
//! a leading separator (`{/x,y}` against `//b` is fine, `{?x,y}` against
//! `&y=1` is not), a list under a prefix modifier (`{x:2}` against `ab,cd`).
//! It also counts a prefix in characters where that library counts
//! pct-encoded octets (`{x:1}` matches `%C3%A9`, an `é`), and refuses the
//! empty expression `{}`, which RFC 6570 does not allow.
//!
//! # Limits
//!
//! A selector costs memory and compile time, and anyone may send one in a
//! query string, so every selector is checked against [`SelectorLimits`]:
//! its length, then for a template the number of expressions and variables
//! and the largest prefix modifier (checked before compiling), then the
//! memory of the compiled automaton (checked while and after compiling), and
//! for a subscription the memory of all its templates together. The defaults
//! (1 KiB, 16 expressions, 32 variables, `:64`, 128 KiB per template, 1 MiB
//! per subscription) leave room for any real template: those Mercure users
//! write take 1.5 to 2.5 kB. Only a prefix modifier is costly, about 0.9 kB
//! per counted character, as the automaton counts with one state per
//! character (`{v:256}` takes 228 kB, hence the cap of 64).
//!
//! - [`Selector::parse`] refuses a selector over a limit with a
//!   [`SelectorError`] (the hub answers 400 with its text). A string that is
//!   not a valid template is not an error: it is an exact selector.
//! - [`Selector::new`] is for selectors from a trusted source (a signed
//!   token): over [`SelectorLimits::trusted`], a template is treated as an
//!   exact selector, which grants less, never more.
//! - Compiling is cheap within the default limits (optimized build, this
//!   crate's regex-automata): 3 to 5 µs for a typical template, 40 µs for
//!   `{v:16}`, 150 µs for `{v:64}`; but a subscription may hold up to 1 MiB
//!   of templates, a few milliseconds of compiling (ten times that in a debug
//!   build). So the hub compiles the templates of a subscription on tokio's
//!   blocking pool, a bounded number of subscriptions at a time, and never on
//!   the async workers; templates already cached cost a lookup.
//! - The process-wide cache keeps at most [`DEFAULT_TEMPLATE_CACHE_BYTES`] of
//!   compiled automata ([`set_template_cache_capacity`]), evicting the least
//!   recently used; a template evicted while selectors use it stays alive for
//!   them. Each template also keeps, per thread that matched with it, a lazy
//!   DFA cache of at most 128 KiB, not counted there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use regex_automata::hybrid;
use regex_automata::nfa::thompson::{self, NFA, WhichCaptures, pikevm::PikeVM};
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, Look, Repetition};

/// Default [`SelectorLimits::max_length`]: 1 KiB.
pub const DEFAULT_MAX_SELECTOR_LENGTH: usize = 1024;
/// Default [`SelectorLimits::max_expressions`].
pub const DEFAULT_MAX_EXPRESSIONS: usize = 16;
/// Default [`SelectorLimits::max_variables`].
pub const DEFAULT_MAX_VARIABLES: usize = 32;
/// Default [`SelectorLimits::max_prefix`].
pub const DEFAULT_MAX_PREFIX: u16 = 64;
/// Default [`SelectorLimits::max_template_bytes`]: 128 KiB.
pub const DEFAULT_MAX_TEMPLATE_BYTES: usize = 128 * 1024;
/// Default [`SelectorLimits::max_subscription_bytes`]: 1 MiB.
pub const DEFAULT_MAX_SUBSCRIPTION_BYTES: usize = 1024 * 1024;
/// Default capacity of the process-wide template cache: 32 MiB of compiled automata.
pub const DEFAULT_TEMPLATE_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The most memory one lazy DFA cache of a template may take (one per thread
/// that matches with it). A template whose automaton needs more is matched by
/// the slower PikeVM instead, which needs no such cache.
const LAZY_DFA_CACHE_BYTES: usize = 128 * 1024;

/// Bounds on what a topic selector may cost, so that selectors from a query
/// string cannot make the hub spend much time or memory compiling and keeping
/// them. A selector over a limit is refused ([`Selector::parse`]), not
/// matched differently.
///
/// What the limits buy, measured with `regex_automata`'s `memory_usage()`: a
/// template as Mercure users write them (`https://example.com/books/{id}`,
/// `https://example.com/users/{user}/books{/book}{?format}`) compiles to 1.5
/// to 2.5 kB; one with 32 query variables to 24 kB. Only the prefix modifier
/// is expensive: `{v:N}` counts characters, so its automaton has one copy of
/// "a character, raw or a percent-encoded UTF-8 sequence" per counted
/// character, about 0.9 kB each: `{v:16}` takes 15 kB, `{v:64}` 58 kB,
/// `{v:256}` 228 kB (hence the default `max_prefix` of 64).
///
/// ```
/// use tidings_hub::topic::{Selector, SelectorError, SelectorLimits};
///
/// let mut limits = SelectorLimits::default();
/// limits.max_length = 64;
/// let long = format!("https://example.com/{}", "a".repeat(100));
/// let err = Selector::parse(&long, &limits).unwrap_err();
/// assert_eq!(err.to_string(), "topic selector too long: 120 bytes, at most 64");
/// assert!(matches!(
///     Selector::parse("/a/{v:300}", &limits),
///     Err(SelectorError::PrefixTooLong { length: 300, limit: 64 })
/// ));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelectorLimits {
    /// The longest selector, in bytes, whatever its kind. Default: 1 KiB.
    pub max_length: usize,
    /// The most expressions (`{…}`) in one template. Default: 16.
    pub max_expressions: usize,
    /// The most variables in one template, all expressions together. Default: 32.
    pub max_variables: usize,
    /// The largest prefix modifier (`{v:N}`). Default: 64. RFC 6570 allows up
    /// to 9999; each counted character costs about 0.9 kB of automaton.
    pub max_prefix: u16,
    /// The most memory one compiled template may take, in bytes. Default: 128 KiB.
    pub max_template_bytes: usize,
    /// The most memory the templates of one subscription may take together,
    /// in bytes (a template shared with other subscribers counts too). Default: 1 MiB.
    pub max_subscription_bytes: usize,
}

impl Default for SelectorLimits {
    fn default() -> Self {
        SelectorLimits {
            max_length: DEFAULT_MAX_SELECTOR_LENGTH,
            max_expressions: DEFAULT_MAX_EXPRESSIONS,
            max_variables: DEFAULT_MAX_VARIABLES,
            max_prefix: DEFAULT_MAX_PREFIX,
            max_template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            max_subscription_bytes: DEFAULT_MAX_SUBSCRIPTION_BYTES,
        }
    }
}

impl SelectorLimits {
    /// The limits of [`Selector::new`], for selectors from a trusted source (the
    /// claims of a signed token): 16 KiB of text, 64 expressions, 128
    /// variables, prefixes up to 256, 1 MiB per template.
    pub fn trusted() -> Self {
        SelectorLimits {
            max_length: 16 * 1024,
            max_expressions: 64,
            max_variables: 128,
            max_prefix: 256,
            max_template_bytes: 1024 * 1024,
            max_subscription_bytes: usize::MAX,
        }
    }
}

/// Why a selector was refused: it is over one of its [`SelectorLimits`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The selector is longer than [`SelectorLimits::max_length`].
    #[error("topic selector too long: {length} bytes, at most {limit}")]
    TooLong {
        /// Its length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// The template has more than [`SelectorLimits::max_expressions`].
    #[error("topic template too complex: {count} expressions, at most {limit}")]
    TooManyExpressions {
        /// Its expressions.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The template has more than [`SelectorLimits::max_variables`].
    #[error("topic template too complex: {count} variables, at most {limit}")]
    TooManyVariables {
        /// Its variables.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A prefix modifier is above [`SelectorLimits::max_prefix`].
    #[error("topic template too complex: prefix modifier :{length}, at most :{limit}")]
    PrefixTooLong {
        /// The largest prefix modifier of the template.
        length: u16,
        /// The limit.
        limit: u16,
    },
    /// The compiled template would take more than [`SelectorLimits::max_template_bytes`].
    #[error("topic template too complex: it compiles to more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The templates of one subscription would take more than
    /// [`SelectorLimits::max_subscription_bytes`] together.
    #[error("topic templates too complex: together they compile to more than {limit} bytes")]
    SubscriptionTooLarge {
        /// The limit.
        limit: usize,
    },
    /// So many subscriptions are waiting to compile new templates that this one is
    /// turned away (a temporary condition: 503 over HTTP).
    #[error(
        "too many subscriptions are compiling new topic templates; retry in a moment (templates already in use need no compiling)"
    )]
    Busy,
}

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
    /// Shared: every selector of the same template uses one compiled matcher
    /// (and its warmed-up caches).
    Template(Arc<Template>),
}

/// Makes a matching engine's scratch space, for a [`Pool`] of them.
type MakeCache<T> =
    Box<dyn Fn() -> T + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// A compiled template and what it costs.
///
/// A forward NFA, matched by a lazy DFA (which builds the states it needs as
/// topics come, in a cache of at most [`LAZY_DFA_CACHE_BYTES`] per thread) and,
/// when that cache cannot hold the automaton or keeps being cleared, by the
/// PikeVM. Matching is always anchored at both ends, so no reverse automaton
/// is needed, which halves the memory `regex_automata`'s meta engine would take.
struct Template {
    lazy: Option<(
        hybrid::dfa::DFA,
        Pool<hybrid::dfa::Cache, MakeCache<hybrid::dfa::Cache>>,
    )>,
    pike: PikeVM,
    pike_caches: Pool<thompson::pikevm::Cache, MakeCache<thompson::pikevm::Cache>>,
    /// `memory_usage()` of the NFA plus the text it is cached under.
    bytes: usize,
}

impl Template {
    fn is_match(&self, topic: &str) -> bool {
        let input = Input::new(topic).anchored(Anchored::Yes).earliest(true);
        if let Some((dfa, caches)) = &self.lazy {
            // An error means the lazy DFA gave up (its cache thrashed): the PikeVM answers.
            if let Ok(found) = dfa.try_search_fwd(&mut caches.get(), &input) {
                return found.is_some();
            }
        }
        self.pike.is_match(&mut self.pike_caches.get(), input)
    }
}

/// What a selector's text is, before anything is compiled.
enum Prepared<'a> {
    Wildcard,
    Exact,
    Template(Vec<Part<'a>>),
}

/// Classifies `source` and checks the limits that need no compiling.
fn prepare<'a>(source: &'a str, limits: &SelectorLimits) -> Result<Prepared<'a>, SelectorError> {
    if source.len() > limits.max_length {
        return Err(SelectorError::TooLong {
            length: source.len(),
            limit: limits.max_length,
        });
    }
    if source == "*" {
        return Ok(Prepared::Wildcard);
    }
    if !source.contains('{') {
        return Ok(Prepared::Exact);
    }
    let parts = match parse_template(source) {
        Ok(parts) => parts,
        Err(reason) => {
            tracing::trace!(selector = source, %reason, "not a URI template, matching exactly");
            return Ok(Prepared::Exact);
        }
    };
    let mut expressions = 0;
    let mut variables = 0;
    let mut prefix = 0;
    for part in &parts {
        if let Part::Expression { vars, .. } = part {
            expressions += 1;
            variables += vars.len();
            for var in vars {
                if let Modifier::Prefix(len) = var.modifier {
                    prefix = prefix.max(len);
                }
            }
        }
    }
    if expressions > limits.max_expressions {
        return Err(SelectorError::TooManyExpressions {
            count: expressions,
            limit: limits.max_expressions,
        });
    }
    if variables > limits.max_variables {
        return Err(SelectorError::TooManyVariables {
            count: variables,
            limit: limits.max_variables,
        });
    }
    if prefix > limits.max_prefix {
        return Err(SelectorError::PrefixTooLong {
            length: prefix,
            limit: limits.max_prefix,
        });
    }
    Ok(Prepared::Template(parts))
}

impl Selector {
    /// Compiles a selector from a trusted source (a signed token's claims).
    /// Never fails: text that is neither `*` nor a valid URI template is an
    /// exact selector, and so is a template over [`SelectorLimits::trusted`]
    /// (it then matches only its own text, which grants less, never more).
    pub fn new(source: &str) -> Selector {
        Selector::parse(source, &SelectorLimits::trusted()).unwrap_or_else(|err| {
            tracing::debug!(selector = source, cause = %err, "template over the limits, matching exactly");
            Selector {
                source: source.into(),
                kind: Kind::Exact,
            }
        })
    }

    /// Compiles a selector from an untrusted source (a `topic` query
    /// parameter), refusing one over `limits`. Text that is neither `*` nor a
    /// valid URI template is an exact selector, as the protocol says.
    ///
    /// A template is compiled on the calling thread (at most a few
    /// milliseconds within the default limits) unless it is in the
    /// process-wide cache.
    pub fn parse(source: &str, limits: &SelectorLimits) -> Result<Selector, SelectorError> {
        let kind = match prepare(source, limits)? {
            Prepared::Wildcard => Kind::Wildcard,
            Prepared::Exact => Kind::Exact,
            Prepared::Template(parts) => Kind::Template(cached_template(source, &parts, limits)?),
        };
        Ok(Selector {
            source: source.into(),
            kind,
        })
    }

    /// The memory the compiled template takes, in bytes (0 for `*` and exact
    /// selectors); shared by every selector of the same template.
    pub fn compiled_bytes(&self) -> usize {
        match &self.kind {
            Kind::Template(template) => template.bytes,
            _ => 0,
        }
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.kind {
            Kind::Wildcard => true,
            Kind::Exact => *self.source == *topic,
            Kind::Template(template) => *self.source == *topic || template.is_match(topic),
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
    // A UTF-8 sequence is a lead octet and 0 to 3 continuation octets. The
    // alternatives are nested so that each continuation is compiled once, not
    // once per sequence length: `%` ( [0-7]H | ( [CD]H | ( [E]H | [F][0-7] C ) C ) C ).
    // Counted repetition copies this unit `N` times, so its size is the cost
    // of a prefix modifier.
    let continuation = || pct_encoded(&[('8', '9'), ('A', 'B'), ('a', 'b')]);
    let hex = || class(ranges(HEX));
    let four = Hir::concat(vec![
        class(ranges(&[('F', 'F'), ('f', 'f')])),
        class(ranges(&[('0', '7')])),
        continuation(),
    ]);
    let three = Hir::concat(vec![
        Hir::alternation(vec![
            Hir::concat(vec![class(ranges(&[('E', 'E'), ('e', 'e')])), hex()]),
            four,
        ]),
        continuation(),
    ]);
    let two = Hir::concat(vec![
        Hir::alternation(vec![
            Hir::concat(vec![class(ranges(&[('C', 'D'), ('c', 'd')])), hex()]),
            three,
        ]),
        continuation(),
    ]);
    let mut after_percent = vec![Hir::concat(vec![class(ranges(&[('0', '7')])), hex()]), two];
    if reserved {
        // With `+` and `#`, pct-encoded octets already in the value pass through.
        after_percent.push(Hir::concat(vec![hex(), hex()]));
    }
    Hir::alternation(vec![
        class(value_ranges(reserved)),
        Hir::concat(vec![literal("%"), Hir::alternation(after_percent)]),
    ])
}

fn prefix_value(reserved: bool, len: u16, at_least_one: bool) -> Hir {
    // `SelectorLimits::max_prefix` keeps `len` small enough to count.
    repeat(
        prefix_unit(reserved),
        u32::from(at_least_one),
        Some(u32::from(len)),
    )
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

fn template_hir(parts: &[Part<'_>]) -> Hir {
    let mut hir = vec![Hir::look(Look::Start)];
    for part in parts {
        hir.push(match part {
            Part::Literal(text) => literal(text),
            Part::Expression { operator, vars } => expression_hir(*operator, vars),
        });
    }
    hir.push(Hir::look(Look::End));
    Hir::concat(hir)
}

fn compile_template(
    source: &str,
    parts: &[Part<'_>],
    limits: &SelectorLimits,
) -> Result<Template, SelectorError> {
    let too_large = SelectorError::TooLarge {
        limit: limits.max_template_bytes,
    };
    let nfa = NFA::compiler()
        .configure(
            NFA::config()
                // Stops building once well over the limit. The builder's own
                // states take more than the NFA they become (about 1.5 times
                // for a long prefix), so the exact check is on the result.
                .nfa_size_limit(Some(limits.max_template_bytes.saturating_mul(4)))
                // Only whether it matches is asked: no capture groups to track.
                .which_captures(WhichCaptures::None),
        )
        .build_from_hir(&template_hir(parts))
        .map_err(|_| too_large.clone())?;
    let bytes = nfa.memory_usage() + source.len();
    if bytes > limits.max_template_bytes {
        return Err(too_large);
    }
    let lazy = hybrid::dfa::DFA::builder()
        .configure(
            hybrid::dfa::DFA::config()
                .cache_capacity(LAZY_DFA_CACHE_BYTES)
                // Give up (and let the PikeVM answer) rather than rebuild states forever.
                .minimum_cache_clear_count(Some(3))
                .minimum_bytes_per_state(Some(10)),
        )
        .build_from_nfa(nfa.clone())
        // The automaton needs more cache than allowed: the PikeVM does it all.
        .ok()
        .map(|dfa| {
            let for_caches = dfa.clone();
            let make: MakeCache<hybrid::dfa::Cache> = Box::new(move || for_caches.create_cache());
            (dfa, Pool::new(make))
        });
    let pike = PikeVM::builder()
        .build_from_nfa(nfa)
        .map_err(|_| too_large)?;
    let for_caches = pike.clone();
    let make: MakeCache<thompson::pikevm::Cache> = Box::new(move || for_caches.create_cache());
    Ok(Template {
        lazy,
        pike,
        pike_caches: Pool::new(make),
        bytes,
    })
}

// ---------------------------------------------------------------------------
// The process-wide cache of compiled templates

/// Compiled templates by text, bounded by the bytes they take, least recently
/// used evicted first.
///
/// The same few templates come back in every token and from many subscribers,
/// and compiling one costs tens of microseconds to milliseconds where a lookup
/// costs tens of nanoseconds. Entries are `Arc`s: every selector of a template
/// shares one matcher, and a template evicted while subscribers use it stays
/// alive for them (it is only no longer found by new ones).
struct TemplateCache {
    entries: HashMap<Arc<str>, CacheEntry>,
    /// Last use → template text: the first is the least recently used.
    by_use: BTreeMap<u64, Arc<str>>,
    clock: u64,
    bytes: usize,
    capacity: usize,
}

struct CacheEntry {
    template: Arc<Template>,
    last_used: u64,
}

impl TemplateCache {
    fn new(capacity: usize) -> Self {
        TemplateCache {
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            capacity,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn get(&mut self, source: &str) -> Option<Arc<Template>> {
        let now = self.tick();
        let entry = self.entries.get_mut(source)?;
        let key = self
            .by_use
            .remove(&entry.last_used)
            .expect("every cache entry is in the use order");
        entry.last_used = now;
        self.by_use.insert(now, key);
        Some(Arc::clone(&entry.template))
    }

    /// Caches a compiled template and returns the one to use: the one already
    /// cached if another caller compiled the same text meanwhile, so that they
    /// share it.
    fn insert(&mut self, source: &str, template: Arc<Template>) -> Arc<Template> {
        if let Some(existing) = self.get(source) {
            return existing;
        }
        if template.bytes > self.capacity {
            return template;
        }
        self.make_room(self.capacity - template.bytes);
        let now = self.tick();
        let key: Arc<str> = source.into();
        self.bytes += template.bytes;
        self.by_use.insert(now, Arc::clone(&key));
        self.entries.insert(
            key,
            CacheEntry {
                template: Arc::clone(&template),
                last_used: now,
            },
        );
        template
    }

    /// Evicts the least recently used entries until at most `bytes` are cached.
    fn make_room(&mut self, bytes: usize) {
        while self.bytes > bytes {
            let Some((_, key)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= entry.template.bytes;
            }
        }
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.make_room(capacity);
    }
}

static CACHE_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_TEMPLATE_CACHE_BYTES);

fn cache() -> MutexGuard<'static, TemplateCache> {
    static CACHE: OnceLock<Mutex<TemplateCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| Mutex::new(TemplateCache::new(CACHE_CAPACITY.load(Ordering::Relaxed))))
        .lock()
        // Every operation leaves the cache consistent before it can panic.
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets how many bytes of compiled templates the process keeps cached (default
/// [`DEFAULT_TEMPLATE_CACHE_BYTES`]), evicting the least recently used ones at
/// once if more are cached. The cache is shared by every hub of the process.
pub fn set_template_cache_capacity(bytes: usize) {
    CACHE_CAPACITY.store(bytes, Ordering::Relaxed);
    cache().set_capacity(bytes);
}

/// How many bytes of compiled templates the process-wide cache holds (the
/// `tidings_template_cache_bytes` gauge).
pub fn template_cache_bytes() -> usize {
    cache().bytes
}

/// Finds a template in the cache or compiles it (on this thread) and caches it.
fn cached_template(
    source: &str,
    parts: &[Part<'_>],
    limits: &SelectorLimits,
) -> Result<Arc<Template>, SelectorError> {
    let cached = cache().get(source);
    let template = match cached {
        Some(template) => template,
        // Compile without holding the lock.
        None => {
            let compiled = Arc::new(compile_template(source, parts, limits)?);
            cache().insert(source, compiled)
        }
    };
    // Cached under another caller's limits, which may be larger.
    if template.bytes > limits.max_template_bytes {
        return Err(SelectorError::TooLarge {
            limit: limits.max_template_bytes,
        });
    }
    Ok(template)
}

/// Compiles the topic selectors of a subscription under `limits`, off the async
/// workers: templates found in the cache cost a lookup; the others are compiled
/// on tokio's blocking pool, at most [`compile_permits`] subscriptions at a
/// time, so that clients sending costly templates cannot hold up the workers
/// that serve everything else.
pub(crate) async fn compile_subscription(
    sources: &[String],
    limits: &SelectorLimits,
) -> Result<Vec<Selector>, SelectorError> {
    let mut selectors: Vec<Option<Selector>> = Vec::with_capacity(sources.len());
    let mut counted: HashSet<&str> = HashSet::new();
    let mut bytes = 0usize;
    let mut missing = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let kind = match prepare(source, limits)? {
            Prepared::Wildcard => Some(Kind::Wildcard),
            Prepared::Exact => Some(Kind::Exact),
            Prepared::Template(_) => match cache().get(source) {
                Some(template) => {
                    if template.bytes > limits.max_template_bytes {
                        return Err(SelectorError::TooLarge {
                            limit: limits.max_template_bytes,
                        });
                    }
                    if counted.insert(source) {
                        bytes += template.bytes;
                    }
                    Some(Kind::Template(template))
                }
                None => {
                    missing.push(i);
                    None
                }
            },
        };
        selectors.push(kind.map(|kind| Selector {
            source: source.as_str().into(),
            kind,
        }));
    }
    if bytes > limits.max_subscription_bytes {
        return Err(SelectorError::SubscriptionTooLarge {
            limit: limits.max_subscription_bytes,
        });
    }
    if !missing.is_empty() {
        let to_compile: Vec<String> = missing.iter().map(|&i| sources[i].clone()).collect();
        let budget = limits.max_subscription_bytes - bytes;
        let limits = limits.clone();
        // The queue for a permit is bounded: past it, turn away at once rather than make
        // every later subscription, legitimate ones too, wait behind hostile ones.
        if COMPILE_WAITING.fetch_add(1, Ordering::AcqRel) >= COMPILE_QUEUE {
            COMPILE_WAITING.fetch_sub(1, Ordering::AcqRel);
            return Err(SelectorError::Busy);
        }
        let waiting = Waiting;
        let permit = compile_semaphore()
            .acquire_owned()
            .await
            .expect("the compile semaphore is never closed");
        drop(waiting);
        // A client that goes away while its templates compile stops the compiling
        // between two templates.
        let abandoned = Abandoned(Arc::new(AtomicBool::new(false)));
        let flag = Arc::clone(&abandoned.0);
        let compiled = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            compile_all(&to_compile, &limits, budget, &flag)
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
        for (i, selector) in missing.into_iter().zip(compiled) {
            selectors[i] = Some(selector);
        }
    }
    Ok(selectors.into_iter().flatten().collect())
}

/// Subscriptions that may wait for a compile permit at once.
const COMPILE_QUEUE: usize = 64;
/// Subscriptions waiting for a compile permit now.
static COMPILE_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Counts a subscription out of [`COMPILE_WAITING`] however its wait ends.
struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        COMPILE_WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Set when the subscription that asked for a compile is dropped.
struct Abandoned(Arc<AtomicBool>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Compiles templates one after the other, stopping as soon as they take more
/// than `budget` bytes together, or when the subscription was `abandoned`.
fn compile_all(
    sources: &[String],
    limits: &SelectorLimits,
    budget: usize,
    abandoned: &AtomicBool,
) -> Result<Vec<Selector>, SelectorError> {
    let mut bytes = 0usize;
    let mut counted = HashSet::new();
    let mut selectors = Vec::with_capacity(sources.len());
    for source in sources {
        if abandoned.load(Ordering::Relaxed) {
            // Nobody is waiting for the result.
            return Err(SelectorError::Busy);
        }
        let selector = Selector::parse(source, limits)?;
        if counted.insert(source.as_str()) {
            bytes += selector.compiled_bytes();
        }
        if bytes > budget {
            return Err(SelectorError::SubscriptionTooLarge {
                limit: limits.max_subscription_bytes,
            });
        }
        selectors.push(selector);
    }
    Ok(selectors)
}

/// How many subscriptions may compile templates at the same time: half the
/// CPUs, at least one. Compiling is CPU work; the rest of the hub keeps the
/// other half.
pub(crate) fn compile_permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn compile_semaphore() -> Arc<tokio::sync::Semaphore> {
    static SEMAPHORE: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    Arc::clone(SEMAPHORE.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(compile_permits()))))
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
            Selector::parse(template, &SelectorLimits::trusted()).err()
        );
        assert_eq!(
            s.matches(topic),
            expected,
            "{template:?} matching {topic:?}"
        );
        let (lazy, pike) = engines(&s, topic);
        assert_eq!(pike, expected, "PikeVM: {template:?} matching {topic:?}");
        if let Some(lazy) = lazy {
            assert_eq!(lazy, expected, "lazy DFA: {template:?} matching {topic:?}");
        }
    }

    /// What each engine of a template says, apart (`None`: no lazy DFA).
    pub(super) fn engines(s: &Selector, topic: &str) -> (Option<bool>, bool) {
        let Kind::Template(t) = &s.kind else {
            panic!("{s:?} is not a template");
        };
        let own = *s.source == *topic;
        let input = Input::new(topic).anchored(Anchored::Yes).earliest(true);
        let pike = own || t.pike.is_match(&mut t.pike_caches.get(), input.clone());
        let lazy = t.lazy.as_ref().map(|(dfa, caches)| {
            own || dfa
                .try_search_fwd(&mut caches.get(), &input)
                .expect("no cache thrashing on short topics")
                .is_some()
        });
        (lazy, pike)
    }

    #[test]
    fn small_templates_use_the_lazy_dfa_and_large_ones_may_not() {
        let small = Selector::new("https://example.com/users/{user}/books{/book}{?format}");
        assert!(engines(&small, "https://example.com/users/a/books").0 == Some(true));
        let large = Selector::new("/t/{v:256}");
        assert!(engines(&large, &format!("/t/{}", "a".repeat(256))).1);
        assert!(!engines(&large, &format!("/t/{}", "a".repeat(257))).1);
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
            ("{var:256}", &"a".repeat(256), true),
            ("{var:256}", &"a".repeat(257), false),
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
    fn the_template_cache_is_transparent() {
        for i in 0..50 {
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

    fn compiled(source: &str) -> Arc<Template> {
        let parts = parse_template(source).unwrap();
        Arc::new(compile_template(source, &parts, &SelectorLimits::default()).unwrap())
    }

    #[test]
    fn the_cache_never_exceeds_its_byte_bound_and_evicts_the_least_recently_used() {
        let one = compiled("/bound/0/{id}").bytes;
        // Room for about five templates of this size.
        let capacity = one * 5 + one / 2;
        let mut cache = TemplateCache::new(capacity);
        for i in 0..40 {
            let source = format!("/bound/{i}/{{id}}");
            cache.insert(&source, compiled(&source));
            assert!(cache.bytes <= capacity, "{} > {capacity}", cache.bytes);
            let sum: usize = cache.entries.values().map(|e| e.template.bytes).sum();
            assert_eq!(cache.bytes, sum);
            assert_eq!(cache.entries.len(), cache.by_use.len());
            // Keep the first one in use: it must survive every eviction.
            assert!(cache.get("/bound/0/{id}").is_some(), "after {i}");
        }
        assert!(cache.entries.len() >= 4, "{}", cache.entries.len());
        assert!(
            cache.get("/bound/1/{id}").is_none(),
            "the oldest unused is gone"
        );
        assert!(cache.get("/bound/39/{id}").is_some(), "the newest is kept");

        // A template larger than the whole cache is used but not kept.
        let mut tiny = TemplateCache::new(one / 2);
        let template = tiny.insert("/bound/x/{id}", compiled("/bound/x/{id}"));
        assert!(template.is_match("/bound/x/1"));
        assert_eq!(tiny.bytes, 0);

        // Shrinking evicts at once.
        cache.set_capacity(one);
        assert!(cache.bytes <= one);
        assert!(cache.entries.len() <= 1);
    }

    #[test]
    fn an_evicted_template_still_matches_for_its_holder() {
        let (held, other) = (compiled("/held/{id}"), compiled("/other/{id}"));
        // Room for one of them only.
        let mut cache = TemplateCache::new(held.bytes.max(other.bytes));
        let held = cache.insert("/held/{id}", held);
        cache.insert("/other/{id}", other);
        assert!(cache.get("/other/{id}").is_some());
        assert!(cache.get("/held/{id}").is_none(), "evicted");
        assert!(held.is_match("/held/1"));
        assert!(!held.is_match("/other/1"));
    }

    #[test]
    fn identical_templates_share_one_compiled_matcher() {
        let source = "/shared/{id}/{+rest}";
        let a = Selector::new(source);
        let b = Selector::parse(source, &SelectorLimits::default()).unwrap();
        let (Kind::Template(x), Kind::Template(y)) = (&a.kind, &b.kind) else {
            panic!("both are templates");
        };
        assert!(Arc::ptr_eq(x, y));
        // Two callers compiling the same text at once end up sharing the first one cached.
        let mut cache = TemplateCache::new(1 << 20);
        let first = cache.insert(source, compiled(source));
        let second = cache.insert(source, compiled(source));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn selectors_over_the_limits_are_refused_with_a_reason() {
        let limits = SelectorLimits::default();
        let long = "a".repeat(60_000);
        let err = Selector::parse(&long, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic selector too long: 60000 bytes, at most 1024"
        );
        let many = "{a}".repeat(17);
        assert_eq!(
            Selector::parse(&many, &limits).unwrap_err().to_string(),
            "topic template too complex: 17 expressions, at most 16"
        );
        let vars: Vec<String> = (0..33).map(|i| format!("v{i}")).collect();
        let wide = format!("/x{{?{}}}", vars.join(","));
        assert_eq!(
            Selector::parse(&wide, &limits).unwrap_err().to_string(),
            "topic template too complex: 33 variables, at most 32"
        );
        assert_eq!(
            Selector::parse("/t/{v:256}", &limits)
                .unwrap_err()
                .to_string(),
            "topic template too complex: prefix modifier :256, at most :64"
        );
        // Each under the limits, too large together.
        let err = Selector::parse("/t/{a:64}/{b:64}/{c:64}", &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic template too complex: it compiles to more than 131072 bytes"
        );
        // Invalid templates are still exact selectors, not errors.
        assert!(Selector::parse("/a/{", &limits).unwrap().is_exact());
        assert!(Selector::parse("*", &limits).unwrap().is_wildcard());
        // The trusted constructor falls back to exact.
        let s = Selector::new("/t/{v:300}");
        assert!(s.is_exact() && s.matches("/t/{v:300}") && !s.matches("/t/a"));
    }

    #[test]
    fn what_templates_cost() {
        let limits = SelectorLimits::default();
        let cost = |source: &str| Selector::parse(source, &limits).unwrap().compiled_bytes();
        let typical = cost("https://example.com/users/{user}/books{/book}{?format}");
        assert!((500..8_000).contains(&typical), "{typical}");
        let prefix = cost("/cost/{v:64}");
        assert!((20_000..100_000).contains(&prefix), "{prefix}");
        assert!(cost("/cost/{v:16}") * 3 < prefix);
        assert_eq!(cost("urn:exact"), 0);
    }

    #[tokio::test]
    async fn subscriptions_compile_off_the_workers_within_their_budget() {
        let limits = SelectorLimits::default();
        let sources: Vec<String> = [
            "*",
            "urn:a",
            "/sub/{id}",
            "/sub/{id}",
            "/sub/{",
            "/sub/x/{y}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // One of them cached already.
        Selector::new("/sub/x/{y}");
        let selectors = compile_subscription(&sources, &limits).await.unwrap();
        let kinds: Vec<(bool, bool)> = selectors
            .iter()
            .map(|s| (s.is_wildcard(), s.is_template()))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, false),
                (false, false),
                (false, true),
                (false, true),
                (false, false),
                (false, true)
            ]
        );
        let texts: Vec<&str> = selectors.iter().map(Selector::as_str).collect();
        assert_eq!(texts, sources);
        assert!(selectors[2].matches("/sub/1") && !selectors[2].matches("/sub/1/2"));

        // Twenty large templates are more than a subscription may hold.
        let large: Vec<String> = (0..20).map(|i| format!("/large/{i}/{{v:64}}")).collect();
        let err = compile_subscription(&large, &limits).await.unwrap_err();
        assert_eq!(
            err,
            SelectorError::SubscriptionTooLarge {
                limit: DEFAULT_MAX_SUBSCRIPTION_BYTES
            }
        );
        // A refused selector anywhere refuses the subscription.
        let mut mixed = sources.clone();
        mixed.push("x".repeat(2000));
        assert!(matches!(
            compile_subscription(&mixed, &limits).await,
            Err(SelectorError::TooLong { length: 2000, .. })
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn compiling_a_subscription_leaves_the_async_thread_free() {
        // Templates never seen before, so they are compiled, which takes milliseconds.
        let sources: Vec<String> = (0..8).map(|n| format!("/free/{n}/{{v:64}}")).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let ticks = std::sync::atomic::AtomicUsize::new(0);
        let compile = async {
            let selectors = compile_subscription(&sources, &SelectorLimits::default()).await;
            done.store(true, Ordering::SeqCst);
            (selectors, ticks.load(Ordering::SeqCst))
        };
        let ticker = async {
            while !done.load(Ordering::SeqCst) {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        };
        let ((selectors, ticks_while_compiling), ()) = tokio::join!(compile, ticker);
        assert_eq!(selectors.unwrap().len(), 8);
        // On one thread, an inline compile would have finished before the ticker ran.
        assert!(ticks_while_compiling > 0);
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
            let (lazy, pike) = super::tests::engines(&selector, &expansion);
            prop_assert!(pike && lazy != Some(false), "{} engines disagree on {:?}", template, expansion);
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
