//! `tidings serve` over TLS: certificate files reloaded on SIGHUP while a stream flows,
//! the self-signed development certificate, and the flags' mistakes.

use std::time::Duration;

use tidings_hub::auth::{MercureClaims, SigningKey, mint};
use tidings_hub::tls::SelfSigned;

use crate::process::{KEY, Server, run};

fn generate() -> SelfSigned {
    SelfSigned::generate(&["localhost", "127.0.0.1"]).unwrap()
}

fn client(roots: &[&str]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .tls_info(true);
    for pem in roots {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn der(cert: &SelfSigned) -> Vec<u8> {
    cert.config().unwrap().handle().certificate_der()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_files_while_a_stream_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (a, b) = (generate(), generate());
    std::fs::write(&cert_file, a.certificate_pem()).unwrap();
    std::fs::write(&key_file, a.private_key_pem()).unwrap();
    let server = Server::start(
        &[
            "--jwt-key",
            KEY,
            "--no-history",
            "--no-demo",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            // SIGHUP alone: the files are not polled.
            "--tls-reload-interval",
            "0",
        ],
        None,
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(
        server
            .stdout
            .iter()
            .any(|line| line.contains(&a.fingerprint())),
        "{:?}",
        server.stdout
    );
    let roots = [a.certificate_pem(), b.certificate_pem()];
    let topic = "https://example.com/tls/sighup";
    let mut stream = client(&roots)
        .get(format!("{}?topic={topic}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer_certificate(&stream), der(&a));

    std::fs::write(&cert_file, b.certificate_pem()).unwrap();
    std::fs::write(&key_file, b.private_key_pem()).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let base = server
        .url
        .trim_end_matches("/.well-known/mercure")
        .to_owned();
    let started = std::time::Instant::now();
    loop {
        let response = client(&roots)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        if peer_certificate(&response) == der(&b) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let claims = MercureClaims {
        publish: Some(vec!["*".into()]),
        subscribe: None,
        payload: None,
    };
    let token = mint(&SigningKey::hmac(KEY), &claims, None).unwrap();
    let published = client(&roots)
        .post(&server.url)
        .bearer_auth(token)
        .form(&[("topic", topic), ("data", "after the reload")])
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let mut received = String::new();
    while !received.contains("data: after the reload") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the old stream stalled")
            .unwrap()
            .expect("the old stream ended");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_self_signed_certificate_is_written_beside_the_history_and_trusted_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let server = Server::start(
        &["--jwt-key", KEY, "--no-demo", "--tls-self-signed"],
        Some(&db),
    );
    let cert_file = dir.path().join("hub.cert.pem");
    let pem = std::fs::read_to_string(&cert_file).expect("the certificate file");
    let written = server
        .stdout
        .iter()
        .find_map(|line| line.strip_prefix("tidings: certificate written to "))
        .expect("where the certificate went");
    assert_eq!(written, cert_file.to_str().unwrap());
    assert!(
        server.stdout.iter().any(|line| line.starts_with(
            "tidings: Chromium can trust it with --ignore-certificate-errors-spki-list="
        )),
        "{:?}",
        server.stdout
    );
    let base = server
        .url
        .trim_end_matches("/.well-known/mercure")
        .to_owned();
    assert!(base.starts_with("https://"));
    let response = client(&[&pem])
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let fingerprint = server
        .stdout
        .iter()
        .find_map(|line| line.strip_prefix("tidings: certificate SHA-256 fingerprint "))
        .expect("the fingerprint line");
    assert_eq!(
        fingerprint,
        tidings_hub::tls::fingerprint(&peer_certificate(&response))
    );
}

#[test]
fn tls_flags_that_do_not_go_together_or_do_not_load_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, a.certificate_pem()).unwrap();
    std::fs::write(&key, generate().private_key_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for (args, expected) in [
        (vec!["--tls-cert", cert], "--tls-cert needs --tls-key"),
        (
            vec!["--tls-self-signed", "--tls-key", key],
            "--tls-self-signed generates its own certificate",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key],
            "--tls-cert/--tls-key: the private key does not match the certificate",
        ),
        (
            vec!["--tls-cert", key, "--tls-key", key],
            "no CERTIFICATE block in it",
        ),
        (
            vec!["--tls-reload-interval", "10s"],
            "--tls-reload-interval needs --tls-cert and --tls-key",
        ),
        (vec!["--tls-no-http2"], "--tls-no-http2 needs TLS"),
    ] {
        let mut argv = vec!["serve", "--check", "--jwt-key", KEY];
        argv.extend(args);
        let output = run(&argv);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{argv:?} accepted");
        assert!(stderr.contains(expected), "{argv:?}: {stderr}");
    }
    let good_key = dir.path().join("good.pem");
    std::fs::write(&good_key, a.private_key_pem()).unwrap();
    let output = run(&[
        "serve",
        "--check",
        "--jwt-key",
        KEY,
        "--tls-cert",
        cert,
        "--tls-key",
        good_key.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("(TLS, certificate SHA-256 {})", a.fingerprint())),
        "{stdout}"
    );

    // The same pair from the TOML file.
    let toml = dir.path().join("tidings.toml");
    std::fs::write(
        &toml,
        format!(
            "tls_cert = {cert:?}\ntls_key = {:?}\ntls_reload_interval = \"1m\"\n",
            good_key.to_str().unwrap()
        ),
    )
    .unwrap();
    let output = run(&[
        "serve",
        "--check",
        "--jwt-key",
        KEY,
        "--config",
        toml.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(&a.fingerprint()), "{stdout}");
}
