//! The subcommands and the configuration of `tidings serve`.

use std::time::Duration;

use tidings_hub::auth::{Authorizer, KeyConfig};

use crate::process::{KEY, Server, run, tidings};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn token_mints_what_the_hub_accepts() {
    let output = run(&[
        "token",
        "--jwt-key",
        KEY,
        "--publish",
        "/books/{id}",
        "--subscribe",
        "*",
        "--payload",
        "{\"user\":7}",
        "--ttl",
        "1h",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_owned();
    let claims = Authorizer::new(Some(KeyConfig::hmac(KEY)), Some(KeyConfig::hmac(KEY)))
        .verify_publisher(&token)
        .expect("a valid token");
    assert!(claims.can_publish_all(["/books/1"]));
    assert!(!claims.can_publish_all(["/authors/1"]));
    assert_eq!(claims.payload, Some(serde_json::json!({"user": 7})));
    assert!(claims.expires_at.is_some());

    let bad = run(&["token", "--jwt-key", KEY, "--payload", "{not json"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("--payload"));
}

#[test]
fn check_validates_without_starting_and_applies_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "addr = \"127.0.0.1:7001\"\nno_history = true\nheartbeat = \"5s\"\nno_demo = true\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let from_file = run(&["serve", "--config", config, "--check"]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    let out = text(&from_file.stdout);
    assert!(
        out.contains("127.0.0.1:7001") && out.contains("in memory"),
        "{out}"
    );

    let from_env = tidings()
        .args(["serve", "--config", config, "--check"])
        .env("TIDINGS_ADDR", "127.0.0.1:7002")
        .output()
        .unwrap();
    assert!(text(&from_env.stdout).contains("127.0.0.1:7002"));

    let from_flag = tidings()
        .args([
            "serve",
            "--config",
            config,
            "--check",
            "--addr",
            "127.0.0.1:7003",
        ])
        .env("TIDINGS_ADDR", "127.0.0.1:7002")
        .output()
        .unwrap();
    assert!(text(&from_flag.stdout).contains("127.0.0.1:7003"));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "adress = \"127.0.0.1:1\"\n").unwrap();
    let refused = run(&["serve", "--config", typo.to_str().unwrap(), "--check"]);
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("adress"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    let nowhere = run(&["serve", "--check", "--db", "/nonexistent-dir/tidings.db"]);
    assert!(!nowhere.status.success());
    assert!(text(&nowhere.stderr).contains("/nonexistent-dir"));

    for (flag, value) in [
        ("--heartbeat", "soon"),
        ("--addr", "localhost"),
        ("--history-max-age", "3 weeks"),
        ("--history-max-bytes", "5 parsecs"),
    ] {
        let bad = run(&["serve", "--check", flag, value]);
        assert!(!bad.status.success(), "{flag} {value} accepted");
        assert!(text(&bad.stderr).contains(flag) || text(&bad.stderr).contains(value));
    }
}

#[tokio::test]
async fn serve_without_a_key_prints_one_that_works_then_stops_on_sigterm() {
    let mut server = Server::start(&["--no-history"], None);
    let printed = server.stdout.join("\n");
    assert!(printed.contains("TIDINGS_JWT_KEY="), "{printed}");
    assert!(printed.contains("curl "), "{printed}");
    let token = server
        .stdout
        .iter()
        .skip_while(|l| !l.contains("A token"))
        .nth(1)
        .expect("a token line")
        .trim()
        .to_owned();

    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{}?topic=/books/1", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let hub = server.url.clone();
    let publish = tokio::task::spawn_blocking(move || {
        run(&[
            "publish", "--hub", &hub, "--topic", "/books/1", "--data", "hello", "--type",
            "greeting", "--token", &token,
        ])
    })
    .await
    .unwrap();
    assert!(publish.status.success(), "{}", text(&publish.stderr));
    let id = text(&publish.stdout).trim().to_owned();
    assert!(id.starts_with("urn:uuid:"), "{id}");

    let mut decoder = tidings_wire::Decoder::new();
    let event = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("event in time")
            .unwrap()
            .expect("stream open");
        decoder.feed(chunk);
        if let Some(tidings_wire::Frame::Event(event)) = decoder.next_frame().unwrap() {
            break event;
        }
    };
    assert_eq!(event.id, id.as_str());
    assert_eq!(event.event_type, "greeting");
    assert_eq!(event.data, "hello");

    let refused = run(&[
        "publish",
        "--hub",
        &server.url,
        "--topic",
        "/x",
        "--jwt-key",
        "a wrong key, but long enough to be accepted",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );

    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The hub ends the open stream itself, cleanly (the chunked body's last chunk), while
    // it is still running: a process that died, or a stream cut by the OS at exit, would
    // end it with an error instead.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue, // a heartbeat, or the last bytes before the end
                other => break other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ends within 10 s of SIGTERM");
    assert!(end.is_ok(), "the stream ended with an error: {end:?}");
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let status = server.child.wait();
            (status, server)
        }),
    )
    .await
    .expect("the hub exits within 10 s of SIGTERM")
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[test]
fn pem_keys_from_files() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/../tidings-hub/tests/keys");
    let private = format!("{keys}/p256-private.pem");
    let public = std::fs::read(format!("{keys}/p256-public.pem")).unwrap();
    let output = run(&["token", "--jwt-key", &private, "--subscribe", "*"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_owned();
    let key = KeyConfig::from_pem(&public).unwrap();
    let claims = Authorizer::new(None, Some(key))
        .verify_subscriber(&token)
        .expect("an ES256 token");
    assert!(claims.can_subscribe_any(["/anything"]));

    let check = run(&[
        "serve",
        "--check",
        "--jwt-key",
        &format!("{keys}/p256-public.pem"),
    ]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[test]
fn a_secret_in_a_file_is_read_not_taken_as_the_path() {
    // A raw HMAC secret in a file (as container secrets are mounted): the file's
    // contents are the key, never the path itself.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt-secret");
    std::fs::write(&file, "a-secret-of-thirty-two-bytes-xyz\n").unwrap();
    let output = run(&[
        "token",
        "--jwt-key",
        file.to_str().unwrap(),
        "--subscribe",
        "*",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout).trim().to_owned();
    let by_contents = KeyConfig::hmac("a-secret-of-thirty-two-bytes-xyz");
    assert!(
        Authorizer::new(None, Some(by_contents))
            .verify_subscriber(&token)
            .is_ok()
    );
    let by_path = KeyConfig::hmac(file.to_str().unwrap());
    assert!(
        Authorizer::new(None, Some(by_path))
            .verify_subscriber(&token)
            .is_err()
    );

    // A JWK set can verify but not sign.
    let jwks = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tidings-hub/tests/keys/jwks.json"
    );
    let refused = run(&["token", "--jwt-key", jwks, "--subscribe", "*"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot sign"),
        "{}",
        text(&refused.stderr)
    );
}

/// The last line of stderr, where `tidings` says why it stopped.
fn last_error_line(output: &std::process::Output) -> String {
    text(&output.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_key_file_that_does_not_exist_is_refused_by_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tidings_jwt_key");
    let missing = missing.to_str().unwrap();
    let expected = format!(
        "tidings: --jwt-key: cannot read the key file {missing}: No such file or directory (os error 2)"
    );
    for value in [
        missing.to_owned(),
        format!("@{missing}"),
        format!("file:{missing}"),
    ] {
        for args in [
            vec!["token", "--jwt-key", &value, "--subscribe", "*"],
            vec!["serve", "--check", "--jwt-key", &value],
            // Refused before any request: nothing listens on port 1.
            vec![
                "publish",
                "--hub",
                "http://127.0.0.1:1",
                "--topic",
                "/t",
                "--jwt-key",
                &value,
            ],
        ] {
            let output = run(&args);
            assert!(!output.status.success(), "{args:?} accepted");
            assert_eq!(last_error_line(&output), expected, "{args:?}");
            assert!(output.stdout.is_empty(), "{args:?}");
        }
    }
    // The role keys of `serve` and the TOML file are read the same way.
    let refused = run(&[
        "serve",
        "--check",
        "--publisher-jwt-key",
        &format!("@{missing}"),
    ]);
    assert_eq!(
        last_error_line(&refused),
        format!(
            "tidings: --publisher-jwt-key: cannot read the key file {missing}: No such file or directory (os error 2)"
        )
    );
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, format!("jwt_key = \"{missing}\"\n")).unwrap();
    let refused = run(&["serve", "--check", "--config", config.to_str().unwrap()]);
    assert_eq!(last_error_line(&refused), expected);
    // A directory cannot be read as a key either.
    let refused = run(&[
        "serve",
        "--check",
        "--jwt-key",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        last_error_line(&refused).contains("cannot read the key file"),
        "{}",
        last_error_line(&refused)
    );
}

#[test]
fn a_short_hmac_secret_is_refused_unless_allowed() {
    let expected = "tidings: --jwt-key: HMAC secret too short: 1 byte; at least 32 bytes (256 bits) are needed; pass --allow-weak-key to accept it anyway";
    let token = run(&["token", "--jwt-key", "x", "--subscribe", "*"]);
    assert!(!token.status.success());
    assert_eq!(last_error_line(&token), expected);
    assert!(token.stdout.is_empty());
    let check = run(&["serve", "--check", "--jwt-key", "x"]);
    assert!(!check.status.success());
    assert_eq!(last_error_line(&check), expected);
    let short = run(&["serve", "--check", "--subscriber-jwt-key", &"s".repeat(31)]);
    assert_eq!(
        last_error_line(&short),
        "tidings: --subscriber-jwt-key: HMAC secret too short: 31 bytes; at least 32 bytes (256 bits) are needed; pass --allow-weak-key to accept it anyway"
    );

    // --allow-weak-key, its variable and its TOML key accept it.
    let token = run(&[
        "token",
        "--jwt-key",
        "x",
        "--allow-weak-key",
        "--subscribe",
        "*",
    ]);
    assert!(token.status.success(), "{}", text(&token.stderr));
    let minted = text(&token.stdout).trim().to_owned();
    assert!(
        Authorizer::new(None, Some(KeyConfig::hmac("x")))
            .verify_subscriber(&minted)
            .is_ok()
    );
    let check = run(&["serve", "--check", "--jwt-key", "x", "--allow-weak-key"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let from_env = tidings()
        .args(["serve", "--check", "--jwt-key", "x"])
        .env("TIDINGS_ALLOW_WEAK_KEY", "true")
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "jwt_key = \"x\"\nallow_weak_key = true\n").unwrap();
    let from_file = run(&["serve", "--check", "--config", config.to_str().unwrap()]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));

    // A secret as `openssl rand -base64 32` prints it is a secret even with a `/`.
    let base64 = "q2Jd/8sK+3kZpW0vXr7yTn5mLc1hBf9gAe4uIo6jQs8=";
    let check = run(&["serve", "--check", "--jwt-key", base64]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[tokio::test]
async fn serve_refuses_a_missing_key_file_instead_of_starting() {
    // Not only `--check`: the real start refuses it too, and exits without listening.
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(|| {
            run(&[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--no-history",
                "--jwt-key",
                "/nonexistent-dir/tidings_jwt_key",
            ])
        }),
    )
    .await
    .expect("tidings serve exits at once")
    .unwrap();
    assert!(!output.status.success());
    assert_eq!(
        last_error_line(&output),
        "tidings: --jwt-key: cannot read the key file /nonexistent-dir/tidings_jwt_key: No such file or directory (os error 2)"
    );
    assert!(!text(&output.stdout).contains("listening"));
}

#[tokio::test]
async fn selector_limits_come_from_flags_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(
        &config,
        "max_template_prefix = 8\ntemplate_cache_size = 65536\n",
    )
    .unwrap();
    let server = Server::start(
        &[
            "--no-history",
            "--no-demo",
            "--jwt-key",
            KEY,
            "--config",
            config.to_str().unwrap(),
            "--max-selector-length",
            "32",
        ],
        None,
    );
    let client = reqwest::Client::new();
    let get = |topic: &str| {
        let request = client.get(&server.url).query(&[("topic", topic)]);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, body) = get(&"a".repeat(40)).await;
    assert_eq!(status, 400);
    assert_eq!(body, "topic selector too long: 40 bytes, at most 32\n");
    let (status, body) = get("/p/{v:9}").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "topic template too complex: prefix modifier :9, at most :8\n"
    );

    check_refuses(&[
        ("--max-selector-length", "0"),
        ("--max-template-prefix", "10000"),
        ("--max-template-bytes", "0"),
        ("--max-subscription-template-bytes", "lots"),
    ]);
}

#[tokio::test]
async fn body_and_topic_limits_come_from_flags_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "max_body_size = \"64B\"\n").unwrap();
    let server = Server::start(
        &[
            "--no-history",
            "--no-demo",
            "--jwt-key",
            KEY,
            "--config",
            config.to_str().unwrap(),
            "--max-topics",
            "2",
        ],
        None,
    );
    let client = reqwest::Client::new();
    let response = client
        .get(&server.url)
        .query(&[("topic", "a"), ("topic", "b"), ("topic", "c")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        "too many topics: at most 2 per subscription\n"
    );
    let publisher = run(&["token", "--jwt-key", KEY, "--publish", "*"]);
    let publisher = text(&publisher.stdout).trim().to_owned();
    let response = client
        .post(&server.url)
        .bearer_auth(&publisher)
        .form(&[("topic", "a"), ("data", &"x".repeat(100))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    check_refuses(&[("--max-topics", "0"), ("--max-body-size", "lots")]);
}

/// `serve --check` refuses each flag with its value, in a message that names the flag.
fn check_refuses(cases: &[(&str, &str)]) {
    for &(flag, value) in cases {
        let bad = run(&["serve", "--check", flag, value]);
        assert!(!bad.status.success(), "{flag} {value} accepted");
        assert!(text(&bad.stderr).contains(flag), "{}", text(&bad.stderr));
    }
}
