//! `tidings serve`'s logs and metrics as an operator meets them: `--log-format json`
//! (flag and TOML key) lines that parse, a refused subscribe logged with its reason and
//! without its token, `RUST_LOG` refused when it does not parse, `--metrics-addr`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::{KEY, Server, run, tidings};

/// A `tidings serve` whose stderr (the log) is read line by line.
struct Logged {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
}

impl Logged {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Logged {
        let mut command = tidings();
        command
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--no-history",
                "--no-demo",
            ])
            .args(["--jwt-key", KEY])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start tidings serve");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (url_tx, url_rx) = mpsc::channel();
        // Read to the end: a closed pipe would fail the hub's later prints.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("tidings: hub listening on ") {
                    let _ = url_tx.send(url.to_owned());
                }
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tidings serve did not start");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logged { child, url, log }
    }

    /// Log lines until one holds `part`; every line read so far, that one last.
    fn lines_until(&self, part: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {part:?} in:\n{}", lines.join("\n")));
            let done = line.contains(part);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token the hub refuses (signed with another key), with a recognisable signature.
const FOREIGN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtZXJjdXJlIjp7InN1YnNjcmliZSI6WyIqIl19fQ.c2lnbmF0dXJlLW9mLWFub3RoZXIta2V5LXh4eHh4eHh4";

/// Subscribes with the foreign token in the query; the body's reason.
async fn refused_subscribe(url: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{url}?topic=/a&authorization={FOREIGN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    response.text().await.unwrap().trim().to_owned()
}

fn check_json_refusal(lines: &[String], reason: &str) {
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(!line.contains(FOREIGN), "the token is in the log: {line}");
    }
    let refused: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(refused["message"], "refused");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["reason"], reason);
    assert_eq!(refused["span"]["method"], "GET");
    assert_eq!(
        refused["span"]["path"],
        "/.well-known/mercure?topic=/a&authorization=REDACTED"
    );
}

#[tokio::test]
async fn json_log_lines_parse_and_name_a_refusal_without_its_token() {
    let server = Logged::start(&["--log-format", "json"], &[]);
    let reason = refused_subscribe(&server.url).await;
    let lines = server.lines_until("\"refused\"");
    check_json_refusal(&lines, &reason);
    // The same from the variable and from the configuration file.
    let server = Logged::start(&[], &[("TIDINGS_LOG_FORMAT", "json")]);
    let reason = refused_subscribe(&server.url).await;
    check_json_refusal(&server.lines_until("\"refused\""), &reason);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let server = Logged::start(&["--config", config.to_str().unwrap()], &[]);
    let reason = refused_subscribe(&server.url).await;
    check_json_refusal(&server.lines_until("\"refused\""), &reason);
}

#[tokio::test]
async fn text_log_lines_name_the_request_and_the_refusal() {
    let server = Logged::start(&[], &[]);
    let reason = refused_subscribe(&server.url).await;
    let lines = server.lines_until(" refused ");
    let line = lines.last().unwrap();
    assert!(line.contains("INFO request{method=GET"), "{line}");
    assert!(line.contains("authorization=REDACTED"), "{line}");
    assert!(line.contains("status=401"), "{line}");
    assert!(line.contains(&format!("reason={reason:?}")), "{line}");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(lines.iter().all(|line| !line.contains(FOREIGN)));
}

#[test]
fn an_invalid_rust_log_is_refused_at_start() {
    let output = tidings()
        .args(["serve", "--check", "--no-history", "--jwt-key", KEY])
        .env("RUST_LOG", "tidings_hub=loud")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("tidings: invalid RUST_LOG \"tidings_hub=loud\": "),
        "{stderr}"
    );
    // A valid one starts.
    let output = tidings()
        .args(["serve", "--check", "--no-history", "--jwt-key", KEY])
        .env("RUST_LOG", "warn,tidings_hub=debug")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An unknown format is refused by name.
    let output = run(&["serve", "--check", "--log-format", "xml"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("xml"));
}

#[tokio::test]
async fn metrics_addr_serves_metrics_and_health_apart_from_the_public_port() {
    let server = Server::start(
        &[
            "--no-history",
            "--jwt-key",
            KEY,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    let ops = server
        .stdout
        .iter()
        .find_map(|line| line.strip_prefix("tidings: metrics and health checks on "))
        .unwrap_or_else(|| panic!("no metrics address in {:?}", server.stdout))
        .to_owned();
    let public = server
        .url
        .trim_end_matches("/.well-known/mercure")
        .to_owned();
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    assert_eq!(get(format!("{public}/metrics")).await.status(), 404);
    assert_eq!(get(format!("{public}/healthz")).await.status(), 200);
    let metrics = get(ops.clone()).await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for name in [
        "tidings_build_info{",
        "tidings_refusals_total{status=\"404\",reason=\"other\"} 1",
        "tidings_http_connections{version=\"HTTP/1.1\"}",
        "tidings_publish_duration_seconds_bucket",
        "tidings_log_commit_duration_seconds_bucket",
        "tidings_delivery_lag_seconds_bucket",
        "tidings_connections ",
    ] {
        assert!(text.contains(name), "{name} not in:\n{text}");
    }
    let ops_base = ops.trim_end_matches("/metrics");
    assert_eq!(get(format!("{ops_base}/healthz")).await.status(), 200);
    assert_eq!(get(format!("{ops_base}/readyz")).await.status(), 200);
    // A wrong address stops the start with a message.
    let output = run(&[
        "serve",
        "--no-history",
        "--jwt-key",
        KEY,
        "--metrics-addr",
        "nowhere",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid --metrics-addr \"nowhere\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
