//! `tidings bench`: a load generator for any SSE server.
//!
//! Subscribers connect from a URL template, spread over source addresses and ramped at a
//! set rate; publishers send at a set rate over keep-alive connections; every payload
//! carries its send time, so subscribers measure publish-to-receive latency into an HDR
//! histogram. The whole run is one thread (a `current_thread` runtime); when one
//! process' open-file limit is not enough, the coordinator re-executes itself as shard
//! processes that hold the other subscribers and report back on stdout.
//!
//! The parts: [`template`] (placeholders), [`http`] (URLs, response heads, chunked
//! bodies), [`scan`] (the event-stream scanner and the payload), [`subscriber`],
//! [`publisher`], [`stats`] (counting and merging), [`procstat`] (the server's RSS and
//! CPU), and [`shard`] (the processes).

mod http;
mod procstat;
mod publisher;
mod run;
mod scan;
mod shard;
mod stats;
mod subscriber;
mod template;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::config::parse_duration;

pub(crate) use run::run;

/// A scenario: the defaults of every flag for one row of docs/BENCHMARKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Preset {
    /// 10,000 subscribers that receive nothing, for memory per connection.
    Idle,
    /// 10,000 subscribers on one topic, 100 updates/s from 4 connections.
    Fanout,
    /// 100 subscribers on one topic, publishing as fast as 64 connections are answered.
    Throughput,
    /// 10,000 subscribers over 1,000 topics, 2,000 updates/s from 8 connections.
    Channels,
    /// Fill history with 100,000 updates, then time one subscriber resuming from the first.
    Resume,
    /// One subscriber, 10 updates/s: the publish-to-receive latency of a quiet hub.
    Latency,
}

/// What a preset sets when its flag is not given.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    subscribers: usize,
    topics: usize,
    rate: f64,
    publishers: usize,
    duration: Duration,
}

impl Preset {
    fn defaults(self) -> Defaults {
        let secs = Duration::from_secs;
        let (subscribers, topics, rate, publishers, duration) = match self {
            Preset::Idle => (10_000, 1, 0.0, 0, secs(10)),
            Preset::Fanout => (10_000, 1, 100.0, 4, secs(20)),
            Preset::Throughput => (100, 1, 0.0, 64, secs(10)),
            Preset::Channels => (10_000, 1_000, 2_000.0, 8, secs(20)),
            Preset::Resume => (1, 1, 0.0, 8, secs(60)),
            Preset::Latency => (1, 1, 10.0, 1, secs(10)),
        };
        Defaults {
            subscribers,
            topics,
            rate,
            publishers,
            duration,
        }
    }
}

/// Where the resuming subscriber of the resume preset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResumeFrom {
    /// `Last-Event-ID:` the id the first publish was answered with (the body).
    First,
    /// `Last-Event-ID: earliest` (Tidings: all history).
    Earliest,
    /// No `Last-Event-ID` (for a server configured to send history to new subscribers).
    None,
}

const AFTER_HELP: &str = "\
Presets (each flag overrides its preset's value):
  idle        10000 subscribers, no publishing, 10s hold      (memory per connection)
  fanout      10000 subscribers, 1 topic, 100/s, 4 publishers, 20s
  throughput  100 subscribers, 1 topic, max rate, 64 publishers, 10s
  channels    10000 subscribers over 1000 topics, 2000/s, 8 publishers, 20s
  resume      fill history with 100000 events, time one subscriber resuming from the first
  latency     1 subscriber, 10/s, 1 publisher, 10s

Placeholders: {topic} (the topic's name from --topic), {t} (its number), {i} (the
subscriber's or publisher's number), {data} (the payload: {\"p\":..,\"s\":..,\"t\":..}),
{hub} (--hub). In URLs and in a form body they are percent-encoded; in another body, raw.

Examples:
  tidings bench --preset fanout --jwt-key \"$KEY\" --server-pid $(pgrep -n tidings)
  tidings bench --preset idle --subscribers 19900 --ramp 5000 --server-pid $PID --json idle.json
  tidings bench --preset throughput --sub-url 'http://127.0.0.1:8080/sub?id={topic}' \\
      --pub-url 'http://127.0.0.1:8080/pub?id={topic}' --pub-body '{data}' \\
      --pub-content-type text/plain";

/// Options of `tidings bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The scenario whose defaults apply.
    #[arg(long, value_enum, default_value = "fanout")]
    pub(crate) preset: Preset,
    /// The server's base URL, `{hub}` in the URL templates.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub(crate) hub: String,
    /// The subscribers' URL template.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "{hub}/.well-known/mercure?topic={topic}"
    )]
    pub(crate) sub_url: String,
    /// The publishers' URL template.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "{hub}/.well-known/mercure"
    )]
    pub(crate) pub_url: String,
    /// The publish request's body template.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "topic={topic}&data={data}"
    )]
    pub(crate) pub_body: String,
    /// The publish request's content type (a form encodes the body's placeholders).
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "application/x-www-form-urlencoded"
    )]
    pub(crate) pub_content_type: String,
    /// The topic name template (`{t}` is the topic's number).
    #[arg(long, value_name = "TEMPLATE", default_value = "bench-{t}")]
    pub(crate) topic: String,
    /// An extra header of the subscribers' requests, `Name: value` (repeatable).
    #[arg(long = "sub-header", value_name = "HEADER")]
    pub(crate) sub_headers: Vec<String>,
    /// An extra header of the publishers' requests, `Name: value` (repeatable).
    #[arg(long = "pub-header", value_name = "HEADER")]
    pub(crate) pub_headers: Vec<String>,
    /// The publishers' JWT (sent as `Authorization: Bearer`).
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true, conflicts_with_all = ["token_file", "jwt_key"])]
    pub(crate) token: Option<String>,
    /// A file holding the publishers' JWT.
    #[arg(long, value_name = "PATH", conflicts_with = "jwt_key")]
    pub(crate) token_file: Option<PathBuf>,
    /// The hub's key, to sign a publisher token for every topic (for one hour).
    #[arg(long, env = "TIDINGS_JWT_KEY", hide_env_values = true)]
    pub(crate) jwt_key: Option<String>,
    /// A subscriber JWT (sent as `Authorization: Bearer`).
    #[arg(long, value_name = "TOKEN")]
    pub(crate) sub_token: Option<String>,
    /// Subscribers (subscriber `i` is on topic `i % topics`).
    #[arg(long)]
    pub(crate) subscribers: Option<usize>,
    /// Topics.
    #[arg(long)]
    pub(crate) topics: Option<usize>,
    /// Publishes per second over all publisher connections; 0 for as fast as answered.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Publisher connections (each sends one request at a time).
    #[arg(long)]
    pub(crate) publishers: Option<usize>,
    /// How long to publish (idle: to hold the connections; resume: the most to wait).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// New subscriber connections per second; 0 for all at once.
    #[arg(long, default_value_t = 5000.0)]
    pub(crate) ramp: f64,
    /// How long to wait after the ramp before publishing (and measuring idle memory).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) settle: Duration,
    /// After publishing, how long to wait for more events once they stop coming (events
    /// still flowing are waited for, two minutes at most).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) drain: Duration,
    /// The payload's size in bytes (padded JSON; the minimum is about 40).
    #[arg(long, default_value_t = 0)]
    pub(crate) size: usize,
    /// Resume: the events to fill history with.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) history: u64,
    /// Resume: where the resuming subscriber starts.
    #[arg(long, value_enum, default_value = "first")]
    pub(crate) resume_from: ResumeFrom,
    /// Source addresses for subscribers, `FIRST-LAST` (IPv4), or `none`; by default
    /// 127.0.0.2-127.0.0.254 when the server is on loopback.
    #[arg(long, value_name = "RANGE")]
    pub(crate) source_addrs: Option<String>,
    /// A server process to sample RSS and CPU of (repeatable: the figures are summed).
    #[arg(long = "server-pid", value_name = "PID")]
    pub(crate) server_pids: Vec<u32>,
    /// Processes to spread subscribers over [default: one per 18,000 subscribers].
    #[arg(long)]
    pub(crate) processes: Option<usize>,
    /// How long connecting and a response head may take.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub(crate) connect_timeout: Duration,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,
    /// A name for the server measured, kept in the summary.
    #[arg(long)]
    pub(crate) label: Option<String>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Internal: this process is shard K of N (started by the coordinator).
    #[arg(long, hide = true, value_name = "K/N")]
    pub(crate) shard: Option<String>,
}

/// Subscribers one process holds at most when `--processes` is not given (below the
/// 20,000 open files a process may hold here, with room for the rest).
const PER_PROCESS: usize = 18_000;

/// The settings of a run, presets applied.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) preset: Preset,
    pub(crate) label: Option<String>,
    pub(crate) subscribers: usize,
    pub(crate) topics: usize,
    pub(crate) rate: f64,
    pub(crate) publishers: usize,
    pub(crate) duration_s: f64,
    pub(crate) ramp: f64,
    pub(crate) processes: usize,
    pub(crate) size: usize,
    pub(crate) history: u64,
    pub(crate) sub_url: String,
    pub(crate) pub_url: String,
}

impl Args {
    fn settings(&self) -> anyhow::Result<Settings> {
        let defaults = self.preset.defaults();
        let subscribers = self.subscribers.unwrap_or(defaults.subscribers);
        let topics = self.topics.unwrap_or(defaults.topics);
        if topics == 0 {
            anyhow::bail!("--topics must be at least 1");
        }
        let rate = self.rate.unwrap_or(defaults.rate);
        if !(rate >= 0.0 && rate.is_finite()) {
            anyhow::bail!("--rate must be a number of publishes per second, 0 for no limit");
        }
        if !(self.ramp >= 0.0 && self.ramp.is_finite()) {
            anyhow::bail!("--ramp must be a number of connections per second, 0 for no limit");
        }
        let publishers = self.publishers.unwrap_or(defaults.publishers);
        if self.preset == Preset::Resume && publishers == 0 {
            anyhow::bail!("--preset resume needs at least one publisher to fill history");
        }
        let processes = match self.processes {
            Some(0) => anyhow::bail!("--processes must be at least 1"),
            Some(n) => n.min(subscribers.max(1)),
            None => subscribers.div_ceil(PER_PROCESS).max(1),
        };
        Ok(Settings {
            preset: self.preset,
            label: self.label.clone(),
            subscribers: if self.preset == Preset::Resume {
                1
            } else {
                subscribers
            },
            topics,
            rate,
            publishers,
            duration_s: self.duration.unwrap_or(defaults.duration).as_secs_f64(),
            ramp: self.ramp,
            processes: if self.preset == Preset::Resume {
                1
            } else {
                processes
            },
            size: self.size,
            history: self.history,
            sub_url: self
                .sub_url
                .replace("{hub}", self.hub.trim_end_matches('/')),
            pub_url: self
                .pub_url
                .replace("{hub}", self.hub.trim_end_matches('/')),
        })
    }

    /// The publishers' token, if any.
    fn publisher_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?;
            return Ok(Some(text.trim().to_owned()));
        }
        if let Some(key) = &self.jwt_key {
            let key = crate::config::signing_key(key, "--jwt-key", true)?;
            let claims = tidings_hub::auth::MercureClaims {
                publish: Some(vec!["*".into()]),
                subscribe: Some(vec!["*".into()]),
                payload: None,
            };
            let token = tidings_hub::auth::mint(&key, &claims, Some(Duration::from_secs(3600)))
                .context("cannot sign a token")?;
            return Ok(Some(token));
        }
        Ok(None)
    }
}

/// Header lines from `Name: value` arguments, each checked and ended with CRLF.
fn header_lines(headers: &[String], token: Option<&str>) -> anyhow::Result<String> {
    let mut lines = String::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            anyhow::bail!("header `{header}`: write it as `Name: value`");
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
        {
            anyhow::bail!("header `{header}`: not a header name");
        }
        if value.contains(['\r', '\n']) {
            anyhow::bail!("header `{name}`: a value cannot hold a line break");
        }
        lines.push_str(name);
        lines.push_str(": ");
        lines.push_str(value.trim());
        lines.push_str("\r\n");
    }
    if let Some(token) = token {
        if token.contains(['\r', '\n']) {
            anyhow::bail!("the token cannot hold a line break");
        }
        lines.push_str("Authorization: Bearer ");
        lines.push_str(token);
        lines.push_str("\r\n");
    }
    Ok(lines)
}

/// The source addresses of `--source-addrs` (or the default for `server`).
fn source_addrs(arg: Option<&str>, server: std::net::IpAddr) -> anyhow::Result<Vec<Ipv4Addr>> {
    let range = match arg {
        Some("none") => return Ok(Vec::new()),
        Some(range) => range,
        None if server.is_loopback() && server.is_ipv4() => "127.0.0.2-127.0.0.254",
        None => return Ok(Vec::new()),
    };
    let parse = |text: &str| {
        text.trim()
            .parse::<Ipv4Addr>()
            .with_context(|| format!("--source-addrs `{range}`: `{text}` is not an IPv4 address"))
    };
    let (first, last) = match range.split_once('-') {
        Some((first, last)) => (parse(first)?, parse(last)?),
        None => (parse(range)?, parse(range)?),
    };
    let (first, last) = (u32::from(first), u32::from(last));
    if last < first || last - first >= 65_536 {
        anyhow::bail!("--source-addrs `{range}`: give FIRST-LAST, at most 65,536 addresses");
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

/// Runs `tidings bench` on its own single-threaded runtime.
pub(crate) fn main(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("bench").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn presets_give_defaults_and_flags_override_them() {
        let s = args(&["--preset", "channels"]).settings().unwrap();
        assert_eq!(
            (s.subscribers, s.topics, s.rate, s.publishers),
            (10_000, 1_000, 2_000.0, 8)
        );
        assert_eq!(
            s.sub_url,
            "http://127.0.0.1:3000/.well-known/mercure?topic={topic}"
        );
        let s = args(&[
            "--preset",
            "idle",
            "--subscribers",
            "40000",
            "--hub",
            "http://h:1/",
        ])
        .settings()
        .unwrap();
        assert_eq!((s.subscribers, s.publishers, s.processes), (40_000, 0, 3));
        assert_eq!(s.pub_url, "http://h:1/.well-known/mercure");
        let s = args(&["--preset", "resume", "--processes", "4"])
            .settings()
            .unwrap();
        assert_eq!((s.subscribers, s.processes, s.history), (1, 1, 100_000));
        assert!(args(&["--topics", "0"]).settings().is_err());
        assert!(args(&["--rate=-1"]).settings().is_err());
        assert!(
            args(&["--preset", "resume", "--publishers", "0"])
                .settings()
                .is_err()
        );
    }

    #[test]
    fn headers_and_sources_are_checked() {
        let lines = header_lines(&["X-A: 1".into()], Some("tok")).unwrap();
        assert_eq!(lines, "X-A: 1\r\nAuthorization: Bearer tok\r\n");
        assert!(header_lines(&["no colon".into()], None).is_err());
        assert!(header_lines(&["Bad Name: x".into()], None).is_err());
        let loopback = "127.0.0.1".parse().unwrap();
        assert_eq!(source_addrs(None, loopback).unwrap().len(), 253);
        assert!(
            source_addrs(None, "10.0.0.1".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(source_addrs(Some("none"), loopback).unwrap().is_empty());
        assert_eq!(
            source_addrs(Some("127.0.0.5-127.0.0.6"), loopback).unwrap(),
            vec![Ipv4Addr::new(127, 0, 0, 5), Ipv4Addr::new(127, 0, 0, 6)]
        );
        assert!(source_addrs(Some("127.0.0.6-127.0.0.5"), loopback).is_err());
        assert!(source_addrs(Some("x"), loopback).is_err());
    }
}
