//! `tidings`: serve the hub, publish, mint tokens and listen, from one binary.
//!
//! Each subcommand lives in its own module; this file only parses the command line,
//! installs the log subscriber and turns an error into one line for a person.

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

mod config;
mod listen;
mod publish;
mod redact;
mod serve;
mod token;

/// Tidings: a Server-Sent Events hub (Mercure protocol), client and toolkit.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to an SSE stream and print its events (a curl for SSE).
    Listen(listen::Args),
    /// Run the hub (Mercure protocol) with durable history.
    Serve(Box<serve::Args>),
    /// Publish one update to a hub and print its id.
    Publish(publish::Args),
    /// Mint a JWT for publishers and subscribers.
    Token(token::Args),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(ansi && std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("tidings: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Listen(args) => listen::run(args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Token(args) => token::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tidings: {err:#}");
            ExitCode::FAILURE
        }
    }
}
