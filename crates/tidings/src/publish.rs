//! `tidings publish`: send one update to a hub and print its id.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use tidings_hub::auth::{MercureClaims, mint};

use crate::config::{key_rule, parse_duration, signing_key};

/// Options of `tidings publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The hub's URL (its `/.well-known/mercure` path is added when missing).
    #[arg(long, env = "TIDINGS_HUB", default_value = "http://127.0.0.1:3000")]
    hub: String,
    /// A topic of the update (repeatable: the first is canonical, the others alternates).
    #[arg(long = "topic", required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// The update's data.
    #[arg(long, default_value = "")]
    data: String,
    /// The event type (the SSE `event` field).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// The update's id (the hub generates one when absent).
    #[arg(long)]
    id: Option<String>,
    /// The reconnection time to send to subscribers, e.g. `500ms` or `3s` (sent in
    /// milliseconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry: Option<Duration>,
    /// Send the update only to subscribers authorised for one of its topics.
    #[arg(long)]
    private: bool,
    /// A publisher JWT.
    #[arg(
        long,
        env = "TIDINGS_TOKEN",
        hide_env_values = true,
        conflicts_with = "jwt_key"
    )]
    token: Option<String>,
    /// The hub's key, to sign a short-lived token for exactly these topics.
    #[arg(
        long,
        env = "TIDINGS_JWT_KEY",
        hide_env_values = true,
        long_help = concat!(
            "The hub's key (an HS256 secret or a PEM private key, inline or in a file), \
             to sign a short-lived token for exactly these topics.\n\n",
            key_rule!()
        )
    )]
    jwt_key: Option<String>,
    /// Accept an HMAC secret shorter than 32 bytes (256 bits), which can be guessed.
    #[arg(long, env = "TIDINGS_ALLOW_WEAK_KEY", value_parser = BoolishValueParser::new())]
    allow_weak_key: bool,
    /// How long to wait for the hub to answer, connecting included.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = match (&args.token, &args.jwt_key) {
        (Some(token), _) => token.clone(),
        (None, Some(key)) => {
            let key = signing_key(key, "--jwt-key", args.allow_weak_key)?;
            let claims = MercureClaims {
                publish: Some(args.topics.clone()),
                ..MercureClaims::default()
            };
            mint(&key, &claims, Some(Duration::from_secs(60))).context("cannot sign a token")?
        }
        (None, None) => bail!("publishing needs a token: give --token or --jwt-key"),
    };
    let url = hub_url(&args.hub);
    let parsed = reqwest::Url::parse(&url)
        .map_err(|err| anyhow::anyhow!("invalid --hub {:?}: {err}", args.hub))?;
    let origin = parsed.origin().ascii_serialization();
    let mut form: Vec<(&str, &str)> = args.topics.iter().map(|t| ("topic", t.as_str())).collect();
    form.push(("data", &args.data));
    if let Some(event_type) = &args.event_type {
        form.push(("type", event_type));
    }
    if let Some(id) = &args.id {
        form.push(("id", id));
    }
    let retry = args.retry.map(|r| r.as_millis().to_string());
    if let Some(retry) = &retry {
        form.push(("retry", retry));
    }
    if args.private {
        form.push(("private", "on"));
    }
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("cannot set up the HTTP client")?;
    let mut response = client
        .post(parsed)
        .bearer_auth(token)
        .form(&form)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!(send_failure(&err, &origin, args.timeout)))?;
    let status = response.status();
    let body = read_bounded(&mut response, BODY_LIMIT)
        .await
        .map_err(|err| anyhow::anyhow!(send_failure(&err, &origin, args.timeout)))?;
    if !status.is_success() {
        let reason = first_line(&body);
        let status = describe_status(status);
        if reason.is_empty() {
            bail!("the hub refused the publish: {status}");
        }
        bail!("the hub refused the publish: {status}: {reason}");
    }
    println!("{}", first_line(&body));
    Ok(ExitCode::SUCCESS)
}

/// The most bytes of the hub's answer read: an id or a one-line reason is far shorter,
/// and a hostile or misconfigured server (a proxy's HTML page) must not fill memory.
const BODY_LIMIT: usize = 64 * 1024;

/// The most characters of the hub's answer shown in an error.
pub(crate) const REASON_CHARS: usize = 200;

/// Reads at most `limit` bytes of the body; the rest is left unread.
async fn read_bounded(response: &mut reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// The first non-empty line of a body, trimmed, control characters shown as `?`, cut
/// to [`REASON_CHARS`] characters (with `…` when cut): safe to print on a terminal.
fn first_line(body: &[u8]) -> String {
    body_line(&String::from_utf8_lossy(body), '?').unwrap_or_default()
}

/// The first line of `body` that has text, trimmed, at most [`REASON_CHARS`]
/// characters (with `…` when cut), control characters (a terminal's escape sequences)
/// replaced by `control`; `None` when no line has text. For the refusals that
/// `publish` and `listen` print.
pub(crate) fn body_line(body: &str, control: char) -> Option<String> {
    let line = body.lines().map(str::trim).find(|line| !line.is_empty())?;
    let mut shown: String = line
        .chars()
        .take(REASON_CHARS)
        .map(|c| if c.is_control() { control } else { c })
        .collect();
    if line.chars().nth(REASON_CHARS).is_some() {
        shown.push('…');
    }
    Some(shown)
}

/// `401 Unauthorized`, or the bare code when it has no standard reason.
pub(crate) fn describe_status(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Why a publish got no answer, in words that say what to check.
fn send_failure(err: &reqwest::Error, origin: &str, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!(
            "no answer from {origin} within {}; is the address right? (--timeout sets the wait)",
            crate::listen::human(timeout)
        );
    }
    let mut causes = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return format!(
                "cannot connect to {origin}: connection refused; is `tidings serve` running?"
            );
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    let innermost = causes.last().cloned().unwrap_or_default();
    if causes.iter().any(|c| c.starts_with("dns error")) {
        return format!(
            "cannot connect to {origin}: cannot resolve its host name ({innermost}); check --hub"
        );
    }
    if err.is_connect() {
        return format!("cannot connect to {origin}: {innermost}");
    }
    // Connected, but what came back (or its absence) is not an HTTP answer: another
    // service on that port, or TLS spoken to plain HTTP or the reverse.
    let scheme = if origin.starts_with("https:") {
        "HTTPS"
    } else {
        "plain HTTP"
    };
    format!("{origin} gave no HTTP answer ({innermost}); is it a Tidings hub, over {scheme}?")
}

fn hub_url(hub: &str) -> String {
    let hub = hub.trim_end_matches('/');
    if hub.ends_with(tidings_hub::HUB_PATH) {
        hub.to_owned()
    } else {
        format!("{hub}{}", tidings_hub::HUB_PATH)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reason_shown_is_one_bounded_printable_line() {
        use super::first_line;
        assert_eq!(
            first_line(b"token expired 6s ago\n"),
            "token expired 6s ago"
        );
        assert_eq!(first_line(b"\n  \r\nfirst\nsecond\n"), "first");
        assert_eq!(first_line(b""), "");
        assert_eq!(first_line(b"a\x1b[31mb"), "a?[31mb");
        let long = "x".repeat(500);
        assert_eq!(first_line(long.as_bytes()), format!("{}…", "x".repeat(200)));
        assert_eq!(first_line("é".repeat(200).as_bytes()), "é".repeat(200));
        assert_eq!(first_line(b"\xff ok"), "\u{fffd} ok");
    }

    #[test]
    fn statuses_read_as_code_and_reason() {
        use reqwest::StatusCode;
        assert_eq!(
            super::describe_status(StatusCode::UNAUTHORIZED),
            "401 Unauthorized"
        );
        assert_eq!(
            super::describe_status(StatusCode::from_u16(499).unwrap()),
            "499"
        );
    }

    #[test]
    fn hub_path_added_once() {
        assert_eq!(
            super::hub_url("http://h:1/"),
            "http://h:1/.well-known/mercure"
        );
        assert_eq!(
            super::hub_url("http://h:1/.well-known/mercure"),
            "http://h:1/.well-known/mercure"
        );
    }
}
