//! `tidings listen` as a process: output, `--json`, filters, `--count`, the request it
//! sends, and its exit status.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// How the scripted server answers one connection.
#[derive(Clone, Copy)]
enum Reply {
    /// Writes these bytes (a whole response) and closes the connection.
    Close(&'static str),
    /// Writes these bytes and keeps the connection open.
    Hang(&'static str),
}

/// A whole 200 event-stream response head followed by `$body`.
macro_rules! sse {
    ($body:literal) => {
        concat!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
            $body
        )
    };
}

/// Serves connection `n` with `replies[n]` (the last reply repeats); sends each request
/// head (and body) it reads to the returned channel.
async fn serve(replies: Vec<Reply>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for n in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let reply = replies[n.min(replies.len() - 1)];
            let request = read_request(&mut socket).await;
            let _ = tx.send(request);
            let (Reply::Close(bytes) | Reply::Hang(bytes)) = reply;
            let _ = socket.write_all(bytes.as_bytes()).await;
            match reply {
                Reply::Close(_) => drop(socket),
                Reply::Hang(_) => held.push(socket),
            }
        }
    });
    (url, rx)
}

/// Reads one request: the head, then `content-length` bytes of body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(n @ 1..) = socket.read(&mut chunk).await {
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `tidings listen ARGS…` to completion (at most 20 s) off the runtime's thread.
async fn listen(args: &[&str]) -> Output {
    listen_logging(args, "warn").await
}

/// [`listen`] with `RUST_LOG` set to `log`.
async fn listen_logging(args: &[&str], log: &str) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let log = log.to_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidings"))
            .arg("listen")
            .args(&args)
            .env("RUST_LOG", log)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("tidings listen did not exit within 20 s")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test]
async fn prints_events_reconnects_and_exits_0_when_the_server_says_204() {
    let first = sse!(
        "retry: 10\nid: 1\nevent: greeting\ndata: hello\ndata: world\n\n\
         data: plain\n\n"
    );
    let (url, mut requests) = serve(vec![
        Reply::Close(first),
        Reply::Close("HTTP/1.1 204 No Content\r\n\r\n"),
    ])
    .await;
    let output = listen(&[&url]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // No colours: stdout is a pipe.
    assert_eq!(
        stdout(&output),
        "greeting  id 1\nhello\nworld\n\nmessage  id 1\nplain\n\n"
    );
    let err = stderr(&output);
    assert!(err.contains("connected to"), "{err}");
    assert!(
        err.contains("tidings: the server ended the stream; retrying in "),
        "{err}"
    );
    assert!(err.contains("204"), "{err}");
    // The reconnection resumed after event 1.
    requests.recv().await.unwrap();
    let second = requests.recv().await.unwrap().to_ascii_lowercase();
    assert!(second.contains("last-event-id: 1\r\n"), "{second}");
}

#[tokio::test]
async fn json_prints_one_object_per_line() {
    let body = sse!("id: 7\nevent: score\ndata: 2-1\ndata: \"half\"\n\n: ping\ndata: x\n\n");
    let (url, _requests) = serve(vec![Reply::Hang(body)]).await;
    let output = listen(&[&url, "--json", "--comments", "--count", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"type": "score", "id": "7", "data": "2-1\n\"half\""}),
            serde_json::json!({"comment": "ping"}),
            serde_json::json!({"type": "message", "id": "7", "data": "x"}),
        ]
    );
}

#[tokio::test]
async fn count_stops_after_n_printed_events_and_event_filters() {
    let body = sse!(
        "event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: a\ndata: 3\n\nevent: a\ndata: 4\n\n"
    );
    // The stream stays open: only --count can end the process.
    let (url, _requests) = serve(vec![Reply::Hang(body)]).await;
    let output = listen(&[&url, "--event", "a", "--count", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "a\n1\n\na\n3\n\n");
}

#[tokio::test]
async fn sends_headers_last_event_id_and_a_post_body() {
    let (url, mut requests) = serve(vec![Reply::Hang(sse!("data: ok\n\n"))]).await;
    let output = listen(&[
        &url,
        "-H",
        "Authorization: Bearer abc",
        "-H",
        "X-Trace:  42 ",
        "--last-event-id",
        "99",
        "--data",
        r#"{"stream":true}"#,
        "-n",
        "1",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let request = requests.recv().await.unwrap();
    let lower = request.to_ascii_lowercase();
    assert!(
        request.starts_with("POST /events HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(lower.contains("authorization: bearer abc\r\n"), "{request}");
    assert!(lower.contains("x-trace: 42\r\n"), "{request}");
    assert!(lower.contains("last-event-id: 99\r\n"), "{request}");
    assert!(lower.contains("accept: text/event-stream\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n{\"stream\":true}"), "{request}");
}

#[tokio::test]
async fn a_404_fails_with_a_one_line_reason() {
    let (url, _requests) = serve(vec![Reply::Close(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let output = listen(&[&url]).await;
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(
        err.lines().last(),
        Some("tidings: the hub refused the subscription: 404 Not Found"),
        "{err}"
    );
    assert!(stdout(&output).is_empty());
}

#[tokio::test]
async fn a_wrong_content_type_fails_with_a_one_line_reason() {
    let (url, _requests) = serve(vec![Reply::Close(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let output = listen(&[&url]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).lines().last(),
        Some("tidings: the response is `text/html`, not text/event-stream")
    );
}

#[tokio::test]
async fn a_refusal_prints_the_first_line_of_the_hubs_body() {
    let (url, _requests) = serve(vec![Reply::Close(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: 33\r\nconnection: close\r\n\r\ntoken expired 6s ago\nsecond line\n",
    )])
    .await;
    let output = listen(&[&url]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "tidings: the hub refused the subscription: 401 Unauthorized: token expired 6s ago\n"
    );
}

#[tokio::test]
async fn a_body_that_repeats_the_token_is_redacted() {
    let (url, _requests) = serve(vec![Reply::Close(
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 31\r\nconnection: close\r\n\r\n\
         bad token SECRET-BODY-6 for you",
    )])
    .await;
    let url = format!("{url}?authorization=SECRET-BODY-6");
    let output = listen(&[&url]).await;
    assert_eq!(
        stderr(&output),
        "tidings: the hub refused the subscription: 403 Forbidden: bad token REDACTED for you\n"
    );
}

/// The lines `tidings listen` printed while the hub was down: one per distinct failure,
/// then the one it gave up with. The wait has jitter: it is checked apart.
fn split_retry_wait(line: &str) -> (String, Duration) {
    let (text, wait) = line.rsplit_once(" retrying in ").expect(line);
    let wait = match wait.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().unwrap()),
        None => Duration::from_secs_f64(wait.strip_suffix('s').unwrap().parse().unwrap()),
    };
    (text.to_owned(), wait)
}

#[tokio::test]
async fn a_hub_that_is_down_is_named_once_with_what_to_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let url = format!("{origin}/.well-known/mercure?topic=a&authorization=SECRET-DOWN-7");
    let output = listen(&[
        &url,
        "--max-retries",
        "4",
        "--retry",
        "10ms",
        "--min-retry",
        "0",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(!err.contains("SECRET-DOWN-7"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    // Five failures, the same each time: printed once, then the last one gives up.
    assert_eq!(lines.len(), 2, "{err}");
    let refused =
        format!("cannot connect to {origin}: connection refused; is `tidings serve` running?");
    let (first, wait) = split_retry_wait(lines[0]);
    assert_eq!(first, format!("tidings: {refused}"));
    // 10 ms, and at most as much again of jitter for the first failure (less the
    // moment it took to print).
    assert!(wait <= Duration::from_millis(20), "{wait:?}");
    assert_eq!(
        lines[1],
        format!("tidings: gave up after 4 reconnection attempts: {refused}")
    );
}

#[tokio::test]
async fn exhausted_retries_fail_and_a_bad_header_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let output = listen(&[&url, "--max-retries", "1", "--retry", "10ms"]).await;
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(
            "tidings: gave up after 1 reconnection attempt: cannot connect to http://127.0.0.1:"
        ),
        "{err}"
    );

    let output = listen(&[&url, "-H", "no colon"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("invalid header `no colon`"));
}

#[tokio::test]
async fn timeout_reconnects_a_silent_stream() {
    let (url, mut requests) = serve(vec![
        Reply::Hang(sse!("retry: 10\nid: 1\ndata: a\n\n")),
        Reply::Hang(sse!("data: b\n\n")),
    ])
    .await;
    let output = listen(&[&url, "--timeout", "100ms", "--count", "2"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "message  id 1\na\n\nmessage  id 1\nb\n\n");
    let err = stderr(&output);
    assert!(
        err.contains("tidings: nothing received for 100 ms; retrying in "),
        "{err}"
    );
    requests.recv().await.unwrap();
    let second = requests.recv().await.unwrap().to_ascii_lowercase();
    assert!(second.contains("last-event-id: 1\r\n"), "{second}");
}

/// Everything the process printed, stdout and stderr.
fn printed(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

#[tokio::test]
async fn credentials_in_the_url_and_headers_are_never_printed() {
    // A stream that ends, then a 401 on the reconnection: `connected to URL`, a
    // reconnection message and the final error are printed; every log line too.
    let (url, mut requests) = serve(vec![
        Reply::Close(sse!("data: one\n\n")),
        Reply::Close("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
    ])
    .await;
    let url = format!("{url}?topic=/books/1&authorization=SECRET-QUERY-1");
    let output = listen_logging(
        &[
            &url,
            "-H",
            "Authorization: Bearer SECRET-HEADER-2",
            "-H",
            "Cookie: mercureAuthorization=SECRET-COOKIE-3",
            "--retry",
            "10ms",
            "--min-retry",
            "0",
        ],
        "trace",
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let all = printed(&output);
    for secret in ["SECRET-QUERY-1", "SECRET-HEADER-2", "SECRET-COOKIE-3"] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    let err = stderr(&output);
    let redacted = url.replace("SECRET-QUERY-1", "REDACTED");
    assert!(
        err.contains(&format!("tidings: connected to {redacted}\n")),
        "{err}"
    );
    assert!(redacted.ends_with("&authorization=REDACTED"));
    assert_eq!(
        err.lines().last(),
        Some("tidings: the hub refused the subscription: 401 Unauthorized"),
        "{err}"
    );
    // The credentials were sent, of course.
    let request = requests.recv().await.unwrap();
    assert!(
        request.contains("authorization=SECRET-QUERY-1"),
        "{request}"
    );
    assert!(request.contains("Bearer SECRET-HEADER-2"), "{request}");
}

#[tokio::test]
async fn a_token_in_an_invalid_url_or_a_redirect_is_not_printed() {
    // The URL that does not parse is quoted in the error, redacted.
    let output = listen(&["http://127.0.0.1:1:2/?authorization=SECRET-QUERY-4"]).await;
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(!printed(&output).contains("SECRET-QUERY-4"), "{err}");
    assert!(
        err.starts_with("tidings: invalid URL `http://127.0.0.1:1:2/?authorization=REDACTED`"),
        "{err}"
    );

    // A redirect to a URL with a token that was never on the command line: the final
    // URL is printed and the HTTP library logs the redirect (at debug), both redacted.
    let (url, _requests) = serve(vec![
        Reply::Close(
            "HTTP/1.1 302 Found\r\nlocation: /events?access_token=SECRET-REDIRECT-5\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n",
        ),
        Reply::Hang(sse!("data: there\n\n")),
    ])
    .await;
    let output = listen_logging(&[&url, "--count", "1"], "trace").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let all = printed(&output);
    assert!(!all.contains("SECRET-REDIRECT-5"), "{all}");
    let err = stderr(&output);
    assert!(
        err.contains("tidings: connected to http://127.0.0.1:")
            && err.contains("/events?access_token=REDACTED\n"),
        "{err}"
    );
    assert_eq!(stdout(&output), "message\nthere\n\n");
}
