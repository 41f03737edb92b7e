//! What the binary says to a newcomer's mistakes (issue 12, "the first hour"): each
//! message asserted whole, as a person reads it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, SystemTime};

use tidings_hub::auth::{Authorizer, KeyConfig};

use crate::process::{KEY, Server, run, tidings};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first line of stderr: clap's `error: ...`, or `tidings: ...` from `main`.
fn first_error_line(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "accepted: {}",
        text(&output.stdout)
    );
    text(&output.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

const GRAMMAR: &str =
    "a duration is a number and a unit (ms, s, m, h or d), as in 90s, 1.5h or 2m30s";

#[test]
fn help_lists_the_subcommands_in_the_order_a_user_needs_them_with_examples() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    assert_eq!(
        commands,
        [
            "  serve    Run the hub (Mercure protocol) with durable history",
            "  publish  Publish one update to a hub and print its id",
            "  listen   Connect to an SSE stream and print its events (a curl for SSE)",
            "  token    Mint a JWT for publishers and subscribers",
            "  bench    Load-test an SSE server (this hub or another): subscribers, publishers, latency",
            "  help     Print this message or the help of the given subcommand(s)",
        ]
    );
    let examples = help
        .split_once("\nExamples:\n")
        .map(|(_, rest)| rest)
        .expect("an Examples section");
    assert_eq!(
        examples,
        "  tidings serve          run a hub on 127.0.0.1:3000; it prints a key and a token
  tidings publish --topic /books/1 --data '{\"title\":\"Dune\"}' --token \"$TOKEN\"
  tidings listen 'http://127.0.0.1:3000/.well-known/mercure?topic=/books/1'
  tidings token --jwt-key \"$TIDINGS_JWT_KEY\" --publish '*' --subscribe '*' --ttl 1h

Durations are a number and a unit: 500ms, 90s, 1.5h, 2m30s (a bare number is seconds).
Yes/no variables (TIDINGS_NO_DEMO...) take 1/0, true/false, yes/no or on/off.
"
    );
    // `:PORT` is explained where it is accepted.
    let serve = text(&run(&["serve", "--help"]).stdout);
    assert!(
        serve.contains("or `:PORT` for every IPv4 interface (0.0.0.0:PORT)"),
        "{serve}"
    );
}

#[test]
fn one_duration_grammar_for_every_flag() {
    let output = run(&[
        "token",
        "--jwt-key",
        KEY,
        "--subscribe",
        "*",
        "--ttl",
        "1.5h",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_owned();
    let claims = Authorizer::new(None, Some(KeyConfig::hmac(KEY)))
        .verify_subscriber(&token)
        .expect("a valid token");
    let left = claims
        .expires_at
        .expect("an expiry")
        .duration_since(SystemTime::now())
        .expect("in the future");
    // 90 minutes, less the time the process took (generous: a loaded machine).
    assert!(
        left <= Duration::from_secs(5400) && left > Duration::from_secs(5400 - 600),
        "{left:?}"
    );

    // Refused by clap, with the flag and the value, then why.
    for (args, flag) in [
        (vec!["token", "--jwt-key", KEY, "--ttl", "1.5x"], "--ttl"),
        (
            vec!["listen", "http://127.0.0.1:1/", "--retry", "1.5x"],
            "--retry",
        ),
        (
            vec![
                "publish",
                "--topic",
                "/t",
                "--token",
                "t",
                "--timeout",
                "1.5x",
            ],
            "--timeout",
        ),
    ] {
        assert_eq!(
            first_error_line(&run(&args)),
            format!(
                "error: invalid value '1.5x' for '{flag} <DURATION>': unknown unit \"x\"; {GRAMMAR}"
            ),
            "{args:?}"
        );
    }
    // Refused by `serve`, which merges flags, variables and the file first.
    assert_eq!(
        first_error_line(&run(&["serve", "--check", "--heartbeat", "1h30"])),
        format!("tidings: invalid --heartbeat \"1h30\": 30 has no unit; {GRAMMAR}")
    );
    assert_eq!(
        first_error_line(
            &tidings()
                .args(["serve", "--check"])
                .env("TIDINGS_SHUTDOWN_GRACE", "soon")
                .output()
                .unwrap()
        ),
        format!("tidings: invalid --shutdown-grace \"soon\": not a duration; {GRAMMAR}")
    );
    // The same grammar in the file, where a bare number is seconds too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "no_history = true\nheartbeat = 5\nwrite_timeout = \"1.5m\"\nhistory_max_age = \"1d 12h\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let ok = run(&[
        "serve",
        "--check",
        "--config",
        config,
        "--shutdown-grace",
        "2m30s",
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    std::fs::write(dir.path().join("tidings.toml"), "heartbeat = \"5 weeks\"\n").unwrap();
    assert_eq!(
        first_error_line(&run(&["serve", "--check", "--config", config])),
        format!("tidings: invalid --heartbeat \"5 weeks\": unknown unit \"weeks\"; {GRAMMAR}")
    );
}

#[test]
fn yes_no_variables_take_1_0_yes_no_on_off() {
    let check = |name: &str, value: &str| {
        tidings()
            .args(["serve", "--check"])
            .env(name, value)
            .output()
            .unwrap()
    };
    for value in ["1", "true", "yes", "on", "YES"] {
        let out = check("TIDINGS_NO_HISTORY", value);
        assert!(out.status.success(), "{value}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("history in memory"), "{value}");
        let out = check("TIDINGS_NO_ANONYMOUS", value);
        assert!(
            text(&out.stdout).contains("anonymous subscribers refused"),
            "{value}"
        );
        assert!(check("TIDINGS_NO_DEMO", value).status.success(), "{value}");
    }
    for value in ["0", "false", "no", "off"] {
        let out = check("TIDINGS_NO_HISTORY", value);
        assert!(out.status.success(), "{value}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("history ./tidings.db"),
            "{value}"
        );
    }
    assert_eq!(
        first_error_line(&check("TIDINGS_NO_DEMO", "maybe")),
        "error: invalid value 'maybe' for '--no-demo': value was not a boolean"
    );
    let weak = tidings()
        .args(["token", "--jwt-key", "x", "--subscribe", "*"])
        .env("TIDINGS_ALLOW_WEAK_KEY", "1")
        .output()
        .unwrap();
    assert!(weak.status.success(), "{}", text(&weak.stderr));
}

/// Reads SSE from `url` until an event arrives or `within` passes; whether one did.
async fn an_event_arrives(url: &str, within: Duration) -> bool {
    let mut stream = reqwest::Client::new()
        .get(url)
        .query(&[("topic", "*")])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut decoder = tidings_wire::Decoder::new();
    let wait = async {
        loop {
            let Ok(Some(chunk)) = stream.chunk().await else {
                return false;
            };
            decoder.feed(chunk);
            while let Ok(Some(frame)) = decoder.next_frame() {
                if matches!(frame, tidings_wire::Frame::Event(_)) {
                    return true;
                }
            }
        }
    };
    tokio::time::timeout(within, wait).await.unwrap_or(false)
}

#[tokio::test]
async fn tidings_no_demo_1_turns_the_demo_off() {
    // The demo pings every second: with it on, an event comes soon (allow 30 s).
    let on = Server::start_with_env(
        &["--no-history", "--jwt-key", KEY, "--no-subscriptions"],
        &[("TIDINGS_NO_DEMO", "0")],
    );
    assert!(an_event_arrives(&on.url, Duration::from_secs(30)).await);
    drop(on);
    let off = Server::start_with_env(
        &["--no-history", "--jwt-key", KEY, "--no-subscriptions"],
        &[("TIDINGS_NO_DEMO", "1")],
    );
    assert!(!an_event_arrives(&off.url, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn addr_takes_port_alone_localhost_and_brackets() {
    for (addr, listens) in [
        (":3000", "0.0.0.0:3000"),
        ("localhost:3000", "127.0.0.1:3000"),
        ("[::1]:3000", "[::1]:3000"),
        ("127.0.0.1:3000", "127.0.0.1:3000"),
    ] {
        let out = run(&["serve", "--check", "--addr", addr]);
        assert!(out.status.success(), "{addr}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with(&format!("configuration OK: listen on {listens},")),
            "{addr}: {}",
            text(&out.stdout)
        );
    }
    let forms = "expected IP:PORT, HOST:PORT, [IPv6]:PORT or :PORT";
    for (addr, reason) in [
        (
            "3000",
            "a port alone is ambiguous: give :3000 (every interface) or 127.0.0.1:3000 (this machine only)".to_owned(),
        ),
        ("localhost", format!("no port; {forms}")),
        ("localhost:http", format!("invalid port \"http\"; {forms}")),
        (
            "::1:3000",
            "an IPv6 address needs brackets, as in [::1]:3000".to_owned(),
        ),
    ] {
        assert_eq!(
            first_error_line(&run(&["serve", "--check", "--addr", addr])),
            format!("tidings: invalid --addr \"{addr}\": {reason}")
        );
    }
    // For real: `:0` listens on every interface, so 127.0.0.1 reaches it; `localhost:0`
    // listens on 127.0.0.1.
    for addr in [":0", "localhost:0"] {
        let server = Server::start(&["--no-history", "--no-demo", "--addr", addr], None);
        let port = server
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap()
            .to_owned();
        let host = if addr == ":0" { "0.0.0.0" } else { "127.0.0.1" };
        assert!(
            server.url.starts_with(&format!("http://{host}:")),
            "{}",
            server.url
        );
        let stream = reqwest::get(format!(
            "http://127.0.0.1:{port}{}?topic=/t",
            tidings_hub::HUB_PATH
        ))
        .await
        .unwrap();
        assert_eq!(stream.status(), 200, "{addr}");
    }
}

/// A port on which nothing listens: bound, then freed.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Publishes `/books/1` to `hub` with `extra` arguments.
fn publish(hub: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "publish", "--hub", hub, "--topic", "/books/1", "--data", "x",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn publish_names_the_address_and_the_likely_cause_when_it_cannot_connect() {
    let port = closed_port();
    let out = publish(&format!("http://127.0.0.1:{port}"), &["--token", "t"]);
    assert_eq!(
        first_error_line(&out),
        format!(
            "tidings: cannot connect to http://127.0.0.1:{port}: connection refused; is `tidings serve` running?"
        )
    );
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // A server that accepts and never answers: the wait is bounded and says so.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || silent.accept().map(|(socket, _)| socket));
    let out = publish(
        &format!("http://127.0.0.1:{port}/"),
        &["--token", "t", "--timeout", "1s"],
    );
    assert_eq!(
        first_error_line(&out),
        format!(
            "tidings: no answer from http://127.0.0.1:{port} within 1s; is the address right? (--timeout sets the wait)"
        )
    );
    drop(hold.join());

    // Something that is not an HTTP server on that port.
    let (port, server) = answer_once(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    let out = publish(&format!("http://127.0.0.1:{port}"), &["--token", "t"]);
    server.join().unwrap();
    assert_eq!(
        first_error_line(&out),
        format!(
            "tidings: http://127.0.0.1:{port} gave no HTTP answer (invalid HTTP version parsed); is it a Tidings hub, over plain HTTP?"
        )
    );

    // A host name that cannot resolve (`.invalid` never does, RFC 2606); the resolver's
    // own words vary by system.
    let out = publish(
        "http://tidings-test.invalid",
        &["--token", "t", "--timeout", "20s"],
    );
    let line = first_error_line(&out);
    assert!(
        line.starts_with(
            "tidings: cannot connect to http://tidings-test.invalid: cannot resolve its host name ("
        ) && line.ends_with("); check --hub"),
        "{line}"
    );

    let out = publish("not a url", &["--token", "t"]);
    assert_eq!(
        first_error_line(&out),
        "tidings: invalid --hub \"not a url\": relative URL without a base"
    );
}

#[tokio::test]
async fn publish_shows_the_hubs_reason_for_a_refusal() {
    let server = Server::start(&["--no-history", "--no-demo", "--jwt-key", KEY], None);
    let hub = server.url.clone();
    let (wrong_key, wrong_topic) = tokio::task::spawn_blocking(move || {
        let other = "another key, long enough for HS256 too";
        let wrong_key = publish(&hub, &["--jwt-key", other]);
        let token = run(&["token", "--jwt-key", KEY, "--publish", "/authors/{id}"]);
        let token = text(&token.stdout).trim().to_owned();
        let wrong_topic = publish(&hub, &["--token", &token]);
        (wrong_key, wrong_topic)
    })
    .await
    .unwrap();
    assert_eq!(
        first_error_line(&wrong_key),
        "tidings: the hub refused the publish: 401 Unauthorized: bad signature: the token was not signed with the key this hub is configured with"
    );
    assert_eq!(
        first_error_line(&wrong_topic),
        "tidings: the hub refused the publish: 403 Forbidden: not allowed: the token's mercure.publish does not cover topic \"/books/1\""
    );
}

/// Answers one request with `response`, after reading the request head.
fn answer_once(response: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = socket.write_all(&response);
    });
    (port, thread)
}

#[test]
fn publish_shows_one_bounded_line_of_a_foreign_servers_refusal() {
    // A proxy's page: the first non-empty line, cut at 200 characters.
    let body = format!("\n{}\n<p>second line</p>\n", "x".repeat(300));
    let response = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (port, server) = answer_once(response.into_bytes());
    let out = publish(&format!("http://127.0.0.1:{port}"), &["--token", "t"]);
    server.join().unwrap();
    assert_eq!(
        first_error_line(&out),
        format!(
            "tidings: the hub refused the publish: 502 Bad Gateway: {}…",
            "x".repeat(200)
        )
    );
    // No body: the status alone.
    let (port, server) = answer_once(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let out = publish(&format!("http://127.0.0.1:{port}"), &["--token", "t"]);
    server.join().unwrap();
    assert_eq!(
        first_error_line(&out),
        "tidings: the hub refused the publish: 404 Not Found"
    );
}

#[test]
fn a_locked_history_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidings.db");
    let _first = Server::start(&["--no-demo", "--jwt-key", KEY], Some(&db));
    let second = run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--jwt-key",
        KEY,
        "--db",
        db.to_str().unwrap(),
    ]);
    let stderr = text(&second.stderr);
    assert_eq!(stderr.matches("Cannot acquire lock").count(), 1, "{stderr}");
    assert_eq!(
        first_error_line(&second),
        format!(
            "tidings: cannot start the hub: history: cannot open the history file {}: Database already open. Cannot acquire lock.",
            db.display()
        )
    );
}
