//! A subscription's log lines: `subscription opened` once its stream is set up, and
//! `subscription closed` when it ends (from the [`super::Subscription`] guard's drop),
//! with how long it lasted, what it sent and why it ended.

use crate::fanout::SubscriberInfo;

/// What a subscription's log lines say: its request's span, when it opened, what it
/// sent and why it ended.
pub(super) struct Tally {
    /// The `request` span of the request that opened it, so that the close line (written
    /// outside it, when the body is dropped) names the request and its client.
    span: tracing::Span,
    started: std::time::Instant,
    /// Events written (replayed and live; heartbeats are not events).
    pub(super) events: u64,
    pub(super) bytes: u64,
    /// Why the stream ended; `None` when its body was dropped before it did: the client
    /// went away (or the server's write deadline dropped the connection).
    pub(super) end: Option<End>,
    /// The open line was written: a stream that fails while opening (its refusal is
    /// logged) has no close line.
    open: bool,
}

/// Why a stream ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Shutdown,
    TokenExpired,
    /// The fan-out dropped it: its queue was full.
    TooSlow,
    ReplayFailed,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Shutdown => "hub shutting down",
            End::TokenExpired => "token expired",
            End::TooSlow => "too slow: its queue of updates was full",
            End::ReplayFailed => "history could not be read for replay",
        }
    }
}

/// The longest topic list written in a subscription line.
const MAX_LOGGED_TOPICS: usize = 1024;
/// The longest `Last-Event-ID` written in the open line.
const MAX_LOGGED_ID: usize = 256;

/// `text` cut at `max` bytes (on a character boundary).
fn cut(text: &str, max: usize) -> &str {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    &text[..at]
}

impl Tally {
    /// Starts counting, in the current span (the request's).
    pub(super) fn new() -> Self {
        Self {
            span: tracing::Span::current(),
            started: std::time::Instant::now(),
            events: 0,
            bytes: 0,
            end: None,
            open: false,
        }
    }

    /// Writes the open line.
    pub(super) fn opened(&mut self, info: &SubscriberInfo, last_event_id: Option<&str>) {
        self.open = true;
        // A client's header: cut, as a line must stay a line's length.
        let last_event_id = last_event_id.map(|id| cut(id, MAX_LOGGED_ID));
        tracing::info!(
            subscriber = %info.id,
            topics = %logged_topics(&info.topics),
            last_event_id,
            "subscription opened"
        );
    }

    /// Writes the close line, if the open line was written.
    pub(super) fn closed(&self, info: &SubscriberInfo) {
        if !self.open {
            return;
        }
        let reason = self.end.map_or("client went away", End::as_str);
        tracing::info!(
            parent: &self.span,
            subscriber = %info.id,
            topics = %logged_topics(&info.topics),
            duration_ms = crate::http::trace::millis(self.started.elapsed()),
            events = self.events,
            bytes = self.bytes,
            reason,
            "subscription closed"
        );
    }
}

/// The topics, quoted and comma-separated, cut at [`MAX_LOGGED_TOPICS`] bytes.
fn logged_topics(topics: &[String]) -> String {
    let mut out = String::new();
    let mut truncated = false;
    for topic in topics {
        if out.len() >= MAX_LOGGED_TOPICS {
            truncated = true;
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&format!("{topic:?}"));
    }
    if out.len() > MAX_LOGGED_TOPICS {
        let at = cut(&out, MAX_LOGGED_TOPICS).len();
        out.truncate(at);
        truncated = true;
    }
    if truncated {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_quoted_and_cut() {
        assert_eq!(
            logged_topics(&["/a".into(), "b c".into()]),
            "\"/a\",\"b c\""
        );
        let many: Vec<String> = (0..500).map(|n| format!("/topic/{n}")).collect();
        let logged = logged_topics(&many);
        assert!(logged.len() <= MAX_LOGGED_TOPICS + 3, "{}", logged.len());
        assert!(logged.ends_with("..."), "{logged}");
        assert_eq!(cut("ab\u{e9}", 3), "ab");
        assert_eq!(cut("ab", 5), "ab");
    }
}
