//! `tidings listen`: a curl for SSE. Connects to a stream, prints its events on stdout,
//! reports connections and losses on stderr, and reconnects until the stream fails for
//! good, the server says 204, or `--count` is reached. What it prints on stderr goes
//! through a [`Redactor`]: a token in the URL's query or a header is never shown.

use std::{
    io::{self, IsTerminal, Read, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use tidings_client::{Error, Event, EventSource, MessageEvent};

use crate::config::parse_duration;
use crate::redact::Redactor;

/// Options of `tidings listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stream's URL. Credentials in its query (`authorization=`, `access_token=`,
    /// any parameter whose name contains auth, token, key, secret, password, sig,
    /// session, credential, cookie or jwt) are shown as REDACTED in every message.
    url: String,

    /// Adds a request header, `Name: value` (repeatable). The values of headers named
    /// like credentials (Authorization, Cookie, X-Api-Key...) are never printed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Resumes after this event ID (sent as `Last-Event-ID`).
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,

    /// The HTTP method [default: GET, or POST with --data].
    #[arg(short = 'X', long)]
    method: Option<String>,

    /// The request body, sent again at every reconnection; `@FILE` reads a file, `@-`
    /// stdin.
    #[arg(short = 'd', long, value_name = "BODY")]
    data: Option<String>,

    /// Prints only events of this type (repeatable; `message` is the default type).
    #[arg(short = 'e', long = "event", value_name = "TYPE")]
    events: Vec<String>,

    /// Stops after this many printed events.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,

    /// Reconnects when nothing (not even a keep-alive comment) arrives for this long,
    /// e.g. `30s`, `500ms`, `2m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// The reconnection time until the server sets one with `retry:` [default: 3s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry: Option<Duration>,

    /// The shortest wait before a reconnection, whatever `--retry` or the server's
    /// `retry:` say; `0` honours them all [default: 500ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    min_retry: Option<Duration>,

    /// Gives up after this many failed reconnections in a row.
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,

    /// Prints one JSON object per line: `{"type", "id", "data"}` (and `{"comment"}`).
    #[arg(long)]
    json: bool,

    /// Also prints comment lines (servers send them as keep-alives).
    #[arg(long)]
    comments: bool,
}

impl Args {
    /// The redactor of everything printed about this run.
    pub(crate) fn redactor(&self) -> Redactor {
        Redactor::new(&self.url, self.headers.iter().map(String::as_str))
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let redactor = args.redactor();
    // The error is printed by `main`: redact it whole, each cause once.
    listen(args, &redactor)
        .await
        .map_err(|err| anyhow::anyhow!(redactor.redact(&crate::one_line(&err))))
}

async fn listen(args: Args, redactor: &Redactor) -> anyhow::Result<ExitCode> {
    let mut source = source(&args)?;
    let mut out = Output::new(args.json);
    let mut printed = 0u64;
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let origin = origin(&args.url);
    // The last failure printed since the last connection: the same one again (every
    // retry while the hub is down) is not printed again.
    let mut last_failure: Option<String> = None;
    while let Some(item) = source.next().await {
        let written = match item {
            Ok(Event::Open { url }) => {
                last_failure = None;
                eprintln!("tidings: connected to {}", redactor.redact(&url));
                Ok(())
            }
            Ok(Event::Message(message)) => {
                if !args.events.is_empty() && !args.events.iter().any(|t| *t == *message.event_type)
                {
                    continue;
                }
                printed += 1;
                out.message(&message)
            }
            Ok(Event::Comment(text)) => out.comment(&text),
            Ok(_) => Ok(()),
            Err(err) if err.status() == Some(204) => {
                eprintln!("tidings: the server ended the stream (204 No Content)");
                return Ok(ExitCode::SUCCESS);
            }
            Err(err @ Error::Skipped { .. }) => {
                eprintln!("tidings: {err}");
                Ok(())
            }
            Err(err) if err.is_terminal() => {
                // The message alone: it already names the innermost cause.
                bail!("{}", describe(&err, &origin));
            }
            Err(err) => {
                let failure = describe(&err, &origin);
                if last_failure.as_ref() != Some(&failure) {
                    let wait = source
                        .retry_in()
                        .map_or_else(String::new, |wait| format!(" in {}", human(wait)));
                    // After a question ("is `tidings serve` running?"), no semicolon.
                    let join = if failure.ends_with('?') { " " } else { "; " };
                    eprintln!("tidings: {}{join}retrying{wait}", redactor.redact(&failure));
                    last_failure = Some(failure);
                } else {
                    tracing::debug!("{failure}; retrying");
                }
                Ok(())
            }
        };
        match written {
            Ok(()) => {}
            // The reader went away (`| head`): a clean stop.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(err) => return Err(err).context("cannot write to stdout"),
        }
        if args.count.is_some_and(|count| printed >= count) {
            source.close();
            return Ok(ExitCode::SUCCESS);
        }
    }
    // The stream ends after a terminal error, which returned above.
    Ok(ExitCode::SUCCESS)
}

fn source(args: &Args) -> anyhow::Result<EventSource> {
    let mut builder = EventSource::builder(&args.url).comments(args.comments);
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("invalid header `{header}`: expected `Name: value`");
        };
        builder = builder.header(name.trim(), value.trim());
    }
    if let Some(id) = &args.last_event_id {
        builder = builder.last_event_id(id);
    }
    let body = args.data.as_deref().map(read_body).transpose()?;
    let method = match (&args.method, &body) {
        (Some(method), _) => method.as_str(),
        (None, Some(_)) => "POST",
        (None, None) => "GET",
    };
    builder = builder.method(method);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    if let Some(timeout) = args.timeout {
        builder = builder.idle_timeout(timeout);
    }
    if let Some(retry) = args.retry {
        builder = builder.reconnection_time(retry);
    }
    if let Some(floor) = args.min_retry {
        builder = builder.min_retry(floor);
    }
    if let Some(max) = args.max_retries {
        builder = builder.max_retries(max);
    }
    Ok(builder.build()?)
}

/// `scheme://host:port` of the stream's URL, to say where a connection was tried
/// (without the path and query, which may carry a token).
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map_or_else(|_| url.to_owned(), |url| url.origin().ascii_serialization())
}

/// What went wrong, for a person: a refusal with the hub's reason, a connection failure
/// with where it was tried and what to check; other errors as the client says them.
fn describe(err: &Error, origin: &str) -> String {
    match err {
        Error::Status { status, body } if *status >= 300 => {
            let reason = reqwest::StatusCode::from_u16(*status)
                .map_or_else(|_| status.to_string(), crate::publish::describe_status);
            match crate::publish::body_line(body, '\u{fffd}') {
                Some(line) => format!("the hub refused the subscription: {reason}: {line}"),
                None => format!("the hub refused the subscription: {reason}"),
            }
        }
        Error::Connect { source } => {
            let (cause, hint) = connect_cause(source);
            format!("cannot connect to {origin}: {cause}{hint}")
        }
        Error::RetriesExhausted { retries, last } => format!(
            "gave up after {retries} reconnection attempt{}: {}",
            if *retries == 1 { "" } else { "s" },
            describe(last, origin)
        ),
        other => other.to_string(),
    }
}

/// Why a connection failed, in a few words, and what to check: the cause the
/// operating system gave when there is one.
fn connect_cause(err: &tidings_client::TransportError) -> (String, &'static str) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = err.to_string();
    let mut dns = false;
    while let Some(current) = cause {
        dns |= current.to_string().starts_with("dns error");
        if let Some(io) = current.downcast_ref::<io::Error>() {
            let (text, hint) = match io.kind() {
                io::ErrorKind::ConnectionRefused => {
                    ("connection refused", "; is `tidings serve` running?")
                }
                io::ErrorKind::TimedOut => ("timed out", "; is the address right and reachable?"),
                io::ErrorKind::ConnectionReset => ("connection reset", ""),
                io::ErrorKind::PermissionDenied => ("permission denied", ""),
                _ => {
                    innermost = io.to_string();
                    break;
                }
            };
            return (text.to_owned(), hint);
        }
        innermost = current.to_string();
        cause = current.source();
    }
    let hint = if dns { "; is the host name right?" } else { "" };
    (innermost, hint)
}

/// A wait as a person says it: `250ms`, `3s`, `4.5s`.
pub(crate) fn human(wait: Duration) -> String {
    if wait < Duration::from_secs(1) {
        return format!("{}ms", wait.as_millis());
    }
    let tenths = (wait.as_millis() + 50) / 100;
    if tenths.is_multiple_of(10) {
        format!("{}s", tenths / 10)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

/// The body given to `--data`: literal, `@FILE` or `@-` (stdin).
fn read_body(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut body = Vec::new();
            io::stdin()
                .read_to_end(&mut body)
                .context("cannot read the body from stdin")?;
            Ok(body)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read `{path}`")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

/// How events are written to stdout.
struct Output {
    json: bool,
    /// ANSI colours: only when stdout is a terminal and `NO_COLOR` is not set.
    colour: bool,
}

impl Output {
    fn new(json: bool) -> Self {
        let colour = !json && io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { json, colour }
    }

    fn message(&mut self, message: &MessageEvent) -> io::Result<()> {
        let mut out = io::stdout().lock();
        self.write_message(&mut out, message)?;
        out.flush()
    }

    fn comment(&mut self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        self.write_comment(&mut out, text)?;
        out.flush()
    }

    fn write_message(&self, out: &mut impl Write, message: &MessageEvent) -> io::Result<()> {
        if self.json {
            let line = serde_json::json!({
                "type": message.event_type.as_str(),
                "id": message.last_event_id.as_str(),
                "data": message.data.as_str(),
            });
            return writeln!(out, "{line}");
        }
        let (bold, dim, reset) = if self.colour {
            ("\x1b[1;36m", "\x1b[2m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        write!(out, "{bold}{}{reset}", message.event_type)?;
        if !message.last_event_id.is_empty() {
            write!(out, "  {dim}id {}{reset}", message.last_event_id)?;
        }
        writeln!(out, "\n{}\n", message.data)
    }

    fn write_comment(&self, out: &mut impl Write, text: &str) -> io::Result<()> {
        if self.json {
            writeln!(out, "{}", serde_json::json!({ "comment": text }))
        } else if self.colour {
            writeln!(out, "\x1b[2m: {text}\x1b[0m")
        } else {
            writeln!(out, ": {text}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the client yields it, from the wire.
    fn message(wire: &str) -> MessageEvent {
        let mut decoder = tidings_wire::Decoder::new();
        decoder.feed_slice(wire.as_bytes());
        let Ok(Some(tidings_wire::Frame::Event(event))) = decoder.next_frame() else {
            panic!("no event in {wire:?}");
        };
        MessageEvent::new(event, "http://127.0.0.1/")
    }

    fn render(output: &Output, wire: &str) -> String {
        let mut out = Vec::new();
        output.write_message(&mut out, &message(wire)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn colours_only_when_asked() {
        let plain = Output {
            json: false,
            colour: false,
        };
        let colour = Output {
            json: false,
            colour: true,
        };
        let wire = "id: 4\nevent: up\ndata: a\ndata: b\n\n";
        assert_eq!(render(&plain, wire), "up  id 4\na\nb\n\n");
        assert_eq!(
            render(&colour, wire),
            "\x1b[1;36mup\x1b[0m  \x1b[2mid 4\x1b[0m\na\nb\n\n"
        );
        assert_eq!(render(&plain, "data: x\n\n"), "message\nx\n\n");
        let mut out = Vec::new();
        colour.write_comment(&mut out, "hi").unwrap();
        assert_eq!(out, b"\x1b[2m: hi\x1b[0m\n");
    }

    #[test]
    fn json_escapes_what_needs_escaping() {
        let json = Output {
            json: true,
            colour: false,
        };
        let line = render(&json, "data: \"q\" \\ \u{1}\ndata: 2\n\n");
        assert_eq!(line.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["data"], "\"q\" \\ \u{1}\n2");
        assert_eq!(value["type"], "message");
        assert_eq!(value["id"], "");
    }

    #[test]
    fn refusals_show_the_first_line_of_the_body() {
        let refused = |status, body: &str| {
            describe(
                &Error::Status {
                    status,
                    body: body.to_owned(),
                },
                "http://h",
            )
        };
        assert_eq!(
            refused(401, "token expired 6s ago\nmore\n"),
            "the hub refused the subscription: 401 Unauthorized: token expired 6s ago"
        );
        assert_eq!(
            refused(404, ""),
            "the hub refused the subscription: 404 Not Found"
        );
        assert_eq!(
            refused(599, "\n  x\u{1b}[31m  \n"),
            "the hub refused the subscription: 599: x\u{fffd}[31m"
        );
        let long = refused(400, &"a".repeat(500));
        assert!(
            long.ends_with(&format!(": {}…", "a".repeat(crate::publish::REASON_CHARS))),
            "{long}"
        );
        // A 2xx other than 200 and 204 is not a refusal.
        assert_eq!(
            refused(206, ""),
            "the server answered 206 Partial Content instead of 200 OK"
        );
    }

    #[test]
    fn waits_read_like_a_person_writes_them() {
        assert_eq!(human(Duration::from_millis(10)), "10ms");
        assert_eq!(human(Duration::from_millis(3000)), "3s");
        assert_eq!(human(Duration::from_millis(4460)), "4.5s");
        assert_eq!(human(Duration::from_millis(29_990)), "30s");
    }

    #[test]
    fn literal_body() {
        assert_eq!(read_body("{\"a\":1}").unwrap(), b"{\"a\":1}");
        assert!(
            read_body("@/nonexistent/body")
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/body")
        );
    }
}
