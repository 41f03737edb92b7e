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
        "wrong key!",
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
