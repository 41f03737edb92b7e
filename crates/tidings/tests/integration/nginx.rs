//! Debian's nginx in front of a real `tidings serve`, with the configuration that
//! docs/OPERATIONS.md documents (`docs/nginx/tidings.conf`, read when the test runs), only
//! its ports, upstream address and certificate paths changed. Clients speak HTTP/2 over
//! TLS to nginx, which speaks HTTP/1.1 to the hub. nginx runs in the foreground from a
//! prefix directory of its own (configuration, logs, pid file, temporary files), never
//! touching /etc/nginx, and is killed when the test ends.
//!
//! Without nginx the tests say so and pass, except under CI (`CI=true`), where they fail:
//! `scripts/test.sh` installs it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Version};
use tidings_hub::auth::{MercureClaims, SigningKey, mint};

use crate::process::{KEY, Server};

/// The documented configuration, read when the test runs (the packaged crate does not
/// hold the repository's docs, so the tests must not need it to compile).
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/nginx/tidings.conf");
/// The server name of the documented configuration, and of the test's certificate.
const HOST: &str = "hub.example.com";
/// A guard against a hang, never the thing measured.
const STEP: Duration = Duration::from_secs(30);

/// Where nginx is, if it is installed.
fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// nginx, or `None` (with a note) when it is missing outside CI; under CI a missing
/// nginx fails the test.
fn nginx_or_skip() -> Option<PathBuf> {
    let found = nginx_binary();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is not installed: scripts/test.sh installs it (apt-get install nginx)"
        );
        eprintln!("nginx is not installed (apt-get install nginx): skipping the nginx test");
    }
    found
}

/// docs/OPERATIONS.md, which quotes [`CONFIG`] whole.
const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/OPERATIONS.md");

#[test]
fn operations_quotes_the_tested_configuration_whole() {
    let config = std::fs::read_to_string(CONFIG).expect("read docs/nginx/tidings.conf");
    let doc = std::fs::read_to_string(OPERATIONS).expect("read docs/OPERATIONS.md");
    assert!(
        doc.contains(&format!("```nginx\n{config}```\n")),
        "docs/OPERATIONS.md should quote docs/nginx/tidings.conf whole, as it is"
    );
}

/// The documented configuration with this test's ports, upstream and certificate. Each
/// replaced text must be in the file exactly once, so that the file cannot change under
/// the test unnoticed.
fn site_config(hub: SocketAddr, https: u16, http: u16, cert: &Path, key: &Path) -> String {
    let mut text = std::fs::read_to_string(CONFIG).expect("read docs/nginx/tidings.conf");
    let replacements = [
        (
            "server 127.0.0.1:3000;".to_owned(),
            format!("server {hub};"),
        ),
        (
            "listen 443 ssl http2;".to_owned(),
            format!("listen 127.0.0.1:{https} ssl http2;"),
        ),
        ("listen 80;".to_owned(), format!("listen 127.0.0.1:{http};")),
        (
            "/etc/ssl/certs/hub.example.com.pem".to_owned(),
            cert.display().to_string(),
        ),
        (
            "/etc/ssl/private/hub.example.com.key".to_owned(),
            key.display().to_string(),
        ),
    ];
    for (from, to) in replacements {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "docs/nginx/tidings.conf should hold {from:?} once"
        );
        text = text.replace(&from, &to);
    }
    text
}

/// A port that was free a moment ago (nginx needs a number, not port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx process in front of a hub, killed on drop.
struct Nginx {
    _child: Running,
    /// The prefix directory: configuration, certificate, logs, pid and temporary files,
    /// removed after nginx is killed.
    _dir: tempfile::TempDir,
    /// The TLS (HTTP/2 and HTTP/1.1) listener.
    https: SocketAddr,
    /// The plain-HTTP listener that redirects to HTTPS.
    http: SocketAddr,
    /// The certificate nginx serves (self-signed, for [`HOST`]).
    cert_pem: String,
}

impl Nginx {
    /// Starts nginx with the documented configuration in front of the hub at `hub`.
    fn start(binary: &Path, hub: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
        let cert_pem = certified.cert.pem();
        let cert = dir.path().join("hub.pem");
        let key = dir.path().join("hub.key");
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let prefix = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        // The main file is the test's own (nginx needs one around the `http` block); the
        // site is the documented file.
        let main = format!(
            "pid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log info;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             access_log {prefix}/access.log;\n\
             client_body_temp_path {prefix}/tmp/body;\n\
             proxy_temp_path {prefix}/tmp/proxy;\n\
             fastcgi_temp_path {prefix}/tmp/fastcgi;\n\
             uwsgi_temp_path {prefix}/tmp/uwsgi;\n\
             scgi_temp_path {prefix}/tmp/scgi;\n\
             include {prefix}/tidings.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        // A port taken between free_port() and nginx's bind makes nginx exit: try again.
        for _ in 0..5 {
            let (https, http) = (free_port(), free_port());
            let _ = std::fs::remove_file(dir.path().join("error.log"));
            std::fs::write(
                dir.path().join("tidings.conf"),
                site_config(hub, https, http, &cert, &key),
            )
            .unwrap();
            let mut child = Running(
                Command::new(binary)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(dir.path().join("nginx.conf"))
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    // One process in the foreground: killing it leaves no worker behind.
                    .args(["-g", "daemon off; master_process off;"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("start nginx"),
            );
            let https = SocketAddr::from((Ipv4Addr::LOCALHOST, https));
            let http = SocketAddr::from((Ipv4Addr::LOCALHOST, http));
            if wait_listening(&mut child.0, &[https, http], dir.path()) {
                return Nginx {
                    _child: child,
                    https,
                    http,
                    _dir: dir,
                    cert_pem,
                };
            }
            let log = error_log(dir.path());
            assert!(
                log.contains("Address already in use"),
                "nginx did not start:\n{log}"
            );
        }
        panic!("nginx found no free ports in five tries");
    }

    /// A client of nginx's TLS listener that trusts its certificate, resolves [`HOST`]
    /// to it and connects from `from` (an address of 127.0.0.0/8), speaking HTTP/2 (by
    /// ALPN) or, with `Version::HTTP_11`, HTTP/1.1 only.
    fn client(&self, from: Ipv4Addr, version: Version) -> reqwest::Client {
        let builder = if version == Version::HTTP_11 {
            reqwest::Client::builder().http1_only()
        } else {
            reqwest::Client::builder()
        };
        builder
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve(HOST, self.https)
            .local_address(IpAddr::V4(from))
            .connect_timeout(STEP)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The hub's URL through nginx's TLS listener.
    fn hub_url(&self) -> String {
        format!("https://{HOST}:{}/.well-known/mercure", self.https.port())
    }
}

/// A child process, killed (and reaped) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until nginx accepts connections on every address (true), or exits (false).
fn wait_listening(child: &mut Child, addrs: &[SocketAddr], dir: &Path) -> bool {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let up = |addr| TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok();
        if addrs.iter().all(up) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nginx did not listen within {STEP:?}:\n{}", error_log(dir));
}

/// What nginx logged in its prefix directory.
fn error_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}

/// The address of a hub from the URL it printed (`http://ADDR/.well-known/mercure`).
fn hub_addr(server: &Server) -> SocketAddr {
    let rest = server.url.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

fn publisher_token() -> String {
    mint(
        &SigningKey::hmac(KEY),
        &MercureClaims {
            publish: Some(vec!["*".into()]),
            ..MercureClaims::default()
        },
        None,
    )
    .unwrap()
}

/// One event stream's events, in order.
struct Events {
    response: reqwest::Response,
    decoder: tidings_wire::Decoder,
}

impl Events {
    /// Opens `url` with `client` (and `Last-Event-ID` when given); must be a 200 event
    /// stream over HTTP/2, or HTTP/1.1 when the client speaks that only.
    async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Events {
        Events::open_over(client, url, last_event_id, Version::HTTP_2).await
    }

    async fn open_over(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
        version: Version,
    ) -> Events {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(STEP, request.send())
            .await
            .expect("the subscribe answered in time")
            .expect("subscribe through nginx");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            response,
            decoder: tidings_wire::Decoder::new(),
        }
    }

    /// The next event: (id, data).
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                if let tidings_wire::Frame::Event(event) = frame {
                    return (event.id.to_string(), event.data.to_string());
                }
                continue;
            }
            let chunk = tokio::time::timeout(STEP, self.response.chunk())
                .await
                .expect("an event within the step's time")
                .expect("read the stream")
                .expect("the stream is open");
            self.decoder.feed(chunk);
        }
    }
}

/// Publishes `data` to `topic` through nginx; answers the update's id.
async fn publish(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    topic: &str,
    data: &str,
) -> String {
    let response = client
        .post(url)
        .bearer_auth(token)
        .form(&[("topic", topic), ("data", data)])
        .timeout(STEP)
        .send()
        .await
        .expect("publish through nginx");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_cross_nginx_at_once_and_a_reconnect_resumes_with_last_event_id() {
    let Some(binary) = nginx_or_skip() else {
        return;
    };
    // No heartbeats: the stream's head must get through nginx without one (the hub
    // opens every stream with a comment; nginx holds an HTTP/2 head until body bytes).
    let hub = Server::start(
        &[
            "--jwt-key",
            KEY,
            "--no-history",
            "--no-demo",
            "--heartbeat",
            "0",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        None,
    );
    let nginx = Nginx::start(&binary, hub_addr(&hub));
    let client = nginx.client(Ipv4Addr::LOCALHOST, Version::HTTP_2);
    let url = nginx.hub_url();
    let token = publisher_token();
    let topic = "https://example.com/nginx";
    let subscribe = format!("{url}?topic={topic}");

    // The plain-HTTP listener sends browsers to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}/.well-known/mercure", nginx.http))
        .timeout(STEP)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
    assert!(
        plain.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://127.0.0.1")
    );

    // Each update is timed from just before its publish to its arrival at the
    // subscriber, both through nginx, for a subscriber over HTTP/1.1 and one over HTTP/2.
    // With buffering on (proxy_buffering on and X-Accel-Buffering ignored), nginx 1.22
    // holds an HTTP/1.1 stream, its head included, until a buffer's worth of bytes has
    // come: this test then fails at the subscribe. The best of several rounds is
    // measured, so one slow moment of a loaded machine cannot fail it.
    let mut last_id = String::new();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let subscriber = nginx.client(Ipv4Addr::LOCALHOST, version);
        let mut events = Events::open_over(&subscriber, &subscribe, None, version).await;
        let mut lags = Vec::new();
        for round in 0..10 {
            let data = format!("{version:?} round {round}");
            let start = Instant::now();
            let arrival = async {
                let event = events.next().await;
                (event, start.elapsed())
            };
            let (id, ((event_id, event_data), lag)) =
                tokio::join!(publish(&client, &url, &token, topic, &data), arrival);
            lags.push(lag);
            assert_eq!(
                (event_id.as_str(), event_data.as_str()),
                (id.as_str(), data.as_str())
            );
            last_id = id;
        }
        let best = *lags.iter().min().unwrap();
        eprintln!("publish → subscriber over {version:?} through nginx, 10 rounds: {lags:?}");
        assert!(
            best < Duration::from_millis(100),
            "no update reached the {version:?} subscriber within 100 ms of its publish: \
             {lags:?}"
        );
    }

    // Away: three updates are published while no stream is open; the reconnect with
    // the last id it saw gets exactly those, in order.
    let mut missed = Vec::new();
    for n in 0..3 {
        let data = format!("missed {n}");
        missed.push((publish(&client, &url, &token, topic, &data).await, data));
    }
    let mut events = Events::open(&client, &subscribe, Some(&last_id)).await;
    for expected in &missed {
        assert_eq!(&events.next().await, expected);
    }
    let data = "live again".to_owned();
    let (id, event) = tokio::join!(publish(&client, &url, &token, topic, &data), events.next());
    assert_eq!(event, (id, data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_takes_the_client_address_from_x_forwarded_for_of_a_trusted_proxy_only() {
    let Some(binary) = nginx_or_skip() else {
        return;
    };
    // One request in flight per client address: a refusal names the address the hub
    // took for the client.
    let limit = [
        "--jwt-key",
        KEY,
        "--no-history",
        "--no-demo",
        "--heartbeat",
        "0",
        "--max-requests-per-ip",
        "1",
    ];
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let subscribe = |nginx: &Nginx| format!("{}?topic=/ip", nginx.hub_url());

    // nginx (127.0.0.1) trusted: each client is counted by its own address, and a
    // forged X-Forwarded-For does not change it (nginx appends the real one, which the
    // hub reads from the right).
    let hub = Server::start(
        &[&limit[..], &["--trusted-proxy", "127.0.0.1"]].concat(),
        None,
    );
    let nginx = Nginx::start(&binary, hub_addr(&hub));
    let (client_a, client_b) = (
        nginx.client(a, Version::HTTP_2),
        nginx.client(b, Version::HTTP_2),
    );
    let _stream_a = Events::open(&client_a, &subscribe(&nginx), None).await;
    let second = client_a
        .get(subscribe(&nginx))
        .header("x-forwarded-for", "198.51.100.7")
        .timeout(STEP)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = second.text().await.unwrap();
    assert!(
        body.contains("too many requests in flight from 127.0.0.2:"),
        "{body}"
    );
    let _stream_b = Events::open(&client_b, &subscribe(&nginx), None).await;
    drop((_stream_a, _stream_b, nginx, hub));

    // nginx not trusted: every client is nginx's address, so the second client is
    // refused as if it were the first.
    let hub = Server::start(&limit, None);
    let nginx = Nginx::start(&binary, hub_addr(&hub));
    let _stream_a = Events::open(&nginx.client(a, Version::HTTP_2), &subscribe(&nginx), None).await;
    let refused = nginx
        .client(b, Version::HTTP_2)
        .get(subscribe(&nginx))
        .timeout(STEP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("too many requests in flight from 127.0.0.1:"),
        "{body}"
    );
}
