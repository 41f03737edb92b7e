//! `tidings`: serve the hub, publish, mint tokens and listen, from one binary.
//!
//! Each subcommand lives in its own module; this file only parses the command line,
//! installs the log subscriber and turns an error into one line for a person.

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

mod bench;
mod config;
mod listen;
mod publish;
mod redact;
mod serve;
mod token;

/// Tidings: a Server-Sent Events hub (Mercure protocol), client and toolkit.
#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about,
    propagate_version = true,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One line per subcommand, in the order of the help's list (the order a newcomer
/// needs them in): start a hub, publish to it, listen to it, mint tokens for an app.
const EXAMPLES: &str = "\
Examples:
  tidings serve          run a hub on 127.0.0.1:3000; it prints a key and a token
  tidings publish --topic /books/1 --data '{\"title\":\"Dune\"}' --token \"$TOKEN\"
  tidings listen 'http://127.0.0.1:3000/.well-known/mercure?topic=/books/1'
  tidings token --jwt-key \"$TIDINGS_JWT_KEY\" --publish '*' --subscribe '*' --ttl 1h

Durations are a number and a unit: 500ms, 90s, 1.5h, 2m30s (a bare number is seconds).
Yes/no variables (TIDINGS_NO_DEMO...) take 1/0, true/false, yes/no or on/off.";

// The variants' order is the order `--help` lists them in.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (Mercure protocol) with durable history.
    Serve(Box<serve::Args>),
    /// Publish one update to a hub and print its id.
    Publish(publish::Args),
    /// Connect to an SSE stream and print its events (a curl for SSE).
    Listen(listen::Args),
    /// Mint a JWT for publishers and subscribers.
    Token(token::Args),
    /// Load-test an SSE server (this hub or another): subscribers, publishers, latency.
    Bench(Box<bench::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `listen` logs through its redactor, without colours (whose escapes would split a
    // `name=value` pair), so no log line shows a credential of its URL or headers.
    let (writer, ansi) = match &cli.command {
        Command::Listen(args) => {
            let redactor = args.redactor();
            let writer = BoxMakeWriter::new(move || redactor.stderr());
            (writer, false)
        }
        _ => (BoxMakeWriter::new(std::io::stderr), true),
    };
    let filter = match log_filter(std::env::var_os("RUST_LOG")) {
        Ok(filter) => filter,
        Err(message) => {
            eprintln!("tidings: {message}");
            return ExitCode::FAILURE;
        }
    };
    let format = match &cli.command {
        Command::Serve(args) => args.log_format(),
        _ => LogFormat::Text,
    };
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(ansi && std::io::stderr().is_terminal())
            .init(),
        // One object per line: the event's fields at the top level, the request span's
        // under `span`.
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
    // `bench` runs on one thread of its own (a load generator must be cheaper than the
    // server it measures).
    let command = match cli.command {
        Command::Bench(args) => return finish(bench::main(*args)),
        command => command,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("tidings: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Listen(args) => listen::run(args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Bench(_) => unreachable!("bench runs on its own runtime"),
        }
    });
    finish(result)
}

/// The exit code of a subcommand's result, its error printed on one line.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tidings: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The log filter of `RUST_LOG` (`info` when it is unset or empty). A filter with a
/// directive that does not parse is refused, with the reason, rather than dropped: a
/// typo would otherwise silence the very lines one asked for.
fn log_filter(value: Option<std::ffi::OsString>) -> Result<EnvFilter, String> {
    let Some(value) = value else {
        return Ok(EnvFilter::new("info"));
    };
    let Some(text) = value.to_str() else {
        return Err("invalid RUST_LOG: not UTF-8".to_owned());
    };
    if text.trim().is_empty() {
        return Ok(EnvFilter::new("info"));
    }
    EnvFilter::builder().parse(text).map_err(|err| {
        format!(
            "invalid RUST_LOG {text:?}: {err} (expected directives such as `info`, \
             `tidings_hub=debug` or `warn,tower_http=trace`)"
        )
    })
}

/// An error and its causes on one line, `error: cause: cause`, each cause once.
///
/// The workspace's errors name their source in their own message *and* return it from
/// `source()` (so that a plain `{err}` says everything), which anyhow's `{:#}` would
/// print twice or more; a cause whose text is already in the line is skipped. Line
/// breaks inside a message become spaces.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error that, like the workspace's, names its source in its message too.
    #[derive(Debug)]
    struct Wrapping(&'static str, Option<Box<Wrapping>>);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match &self.1 {
                Some(source) => write!(f, "{}: {source}", self.0),
                None => f.write_str(self.0),
            }
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|s| s as _)
        }
    }

    #[test]
    fn an_invalid_log_filter_is_refused() {
        use super::log_filter;
        assert!(log_filter(None).is_ok());
        assert!(log_filter(Some("".into())).is_ok());
        assert!(log_filter(Some("warn,tidings_hub=debug".into())).is_ok());
        let err = log_filter(Some("tidings_hub=loud".into())).unwrap_err();
        assert!(
            err.starts_with("invalid RUST_LOG \"tidings_hub=loud\": "),
            "{err}"
        );
    }

    #[test]
    fn each_cause_is_printed_once() {
        let lock = Wrapping("Database already open. Cannot acquire lock.", None);
        let storage = Wrapping("history storage failed", Some(Box::new(lock)));
        let open = Wrapping("cannot open the history file t.db", Some(Box::new(storage)));
        let err = anyhow::Error::new(open).context("cannot start the hub");
        assert_eq!(
            one_line(&err),
            "cannot start the hub: cannot open the history file t.db: history storage \
             failed: Database already open. Cannot acquire lock."
        );
        // Causes that do not repeat themselves are all kept, in order.
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(one_line(&err), "outer: middle: inner");
        let err = anyhow::anyhow!("two\nlines").context("outer");
        assert_eq!(one_line(&err), "outer: two lines");
    }
}
