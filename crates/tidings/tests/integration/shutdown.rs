//! SIGTERM ends `tidings serve` within its grace period, whatever its peers do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tidings_hub::auth::{MercureClaims, SigningKey, mint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use crate::process::{KEY, Server, run, tidings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_subscriber_that_never_reads_exits_0_within_the_grace_period() {
    let grace = Duration::from_secs(2);
    let mut server = Server::start(
        &[
            "--no-history",
            "--no-demo",
            "--no-subscriptions",
            "--jwt-key",
            KEY,
            "--shutdown-grace",
            "2s",
            // Only the grace period may end the stalled connection.
            "--write-timeout",
            "0",
            "--queue-size",
            "4",
        ],
        None,
    );
    let authority = server
        .url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let addr: SocketAddr = authority.parse().unwrap();
    let base = format!("http://{authority}");

    // A subscriber that never reads, with a small receive buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: hub\r\n\r\n")
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let subscribers = || async {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("tidings_connections "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let started = Instant::now();
    while subscribers().await != 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Publish until the hub gives up on it (its queue overflows because its socket is
    // full): the connection then hangs on bytes that the peer never reads.
    let claims = MercureClaims {
        publish: Some(vec!["*".into()]),
        ..MercureClaims::default()
    };
    let token = mint(&SigningKey::hmac(KEY), &claims, None).unwrap();
    let data = "x".repeat(256 * 1024);
    // Nothing in it needs escaping.
    let body = format!("topic=big&data={data}");
    while subscribers().await == 1.0 {
        assert!(started.elapsed() < Duration::from_secs(60), "never stalled");
        let response = client
            .post(&server.url)
            .bearer_auth(&token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let pid = server.child.id().to_string();
    let stopping = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < grace + Duration::from_secs(20),
            "tidings serve still running {:?} after SIGTERM",
            stopping.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    assert!(
        stopping.elapsed() >= grace - Duration::from_millis(100),
        "exited after {:?}: the stalled connection was not waited for",
        stopping.elapsed()
    );
    drop(stalled);
}

#[test]
fn server_limits_from_flags_environment_and_file() {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "no_history = true\nmax_connections = 500\nmax_connections_per_ip = 7\nmax_requests_per_ip = 5\n\
         header_timeout = \"5s\"\nwrite_timeout = \"0\"\nkeep_alive_timeout = \"2m\"\n\
         trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nh2_max_streams = 10\nshutdown_grace = \"3s\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let from_file = run(&["serve", "--config", config, "--check"]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let out = text(&from_file.stdout);
    assert!(
        out.contains("at most 500 connections (7 per client address)"),
        "{out}"
    );

    let from_env = tidings()
        .args(["serve", "--config", config, "--check"])
        .env("TIDINGS_MAX_CONNECTIONS_PER_IP", "9")
        .output()
        .unwrap();
    assert!(text(&from_env.stdout).contains("(9 per client address)"));
    let from_flag = tidings()
        .args([
            "serve",
            "--config",
            config,
            "--check",
            "--max-connections",
            "40",
        ])
        .env("TIDINGS_MAX_CONNECTIONS_PER_IP", "9")
        .output()
        .unwrap();
    assert!(text(&from_flag.stdout).contains("at most 40 connections (9 per client address)"));

    for (flag, value) in [
        ("--header-timeout", "soon"),
        ("--write-timeout", "5 weeks"),
        ("--keep-alive-timeout", "10y"),
        ("--shutdown-grace", "x"),
        ("--trusted-proxy", "10.0.0.0/33"),
        ("--h2-max-streams", "0"),
        ("--max-connections", "many"),
    ] {
        let bad = run(&["serve", "--check", "--no-history", flag, value]);
        assert!(!bad.status.success(), "{flag} {value} accepted");
        let err = text(&bad.stderr);
        assert!(err.contains(flag) || err.contains(value), "{flag}: {err}");
    }
}
