//! TLS: HTTP/2 by ALPN beside HTTP/1.1, certificate reloads while streams flow, and
//! handshakes that fail or never finish.

use std::time::Duration;

use reqwest::Version;
use tidings_hub::tls::{SelfSigned, TlsConfig};
use tidings_hub::{Hub, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{KEY, PATIENCE, Stream, TestHub, token, topics_query};

fn generate() -> SelfSigned {
    SelfSigned::generate(&["localhost", "127.0.0.1", "::1"]).expect("generate a certificate")
}

/// A client that trusts exactly `certs` and reports the peer's certificate.
fn client(certs: &[&SelfSigned], http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .tls_info(true);
    for cert in certs {
        let root = reqwest::Certificate::from_pem(cert.certificate_pem().as_bytes()).unwrap();
        builder = builder.add_root_certificate(root);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// A hub served over TLS on an ephemeral port, with `client` as its test client.
async fn serve(tls: TlsConfig, limits: ServerLimits, client: reqwest::Client) -> TestHub {
    let hub = Hub::builder()
        .jwt_key(tidings_hub::auth::KeyConfig::hmac(KEY))
        .server_limits(limits)
        .tls(tls)
        .build()
        .await
        .expect("build the hub");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(hub.clone().serve(listener, std::future::pending()));
    TestHub {
        hub,
        base,
        client,
        publisher: token(&["*"], &[]),
    }
}

/// The leaf certificate the server presented on the connection of `response`.
fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the TLS info of the response")
        .to_vec()
}

/// Subscribes to `topic` over a connection of `client` (a new one if `client` is new).
async fn open(client: &reqwest::Client, hub: &TestHub, topic: &str) -> Stream {
    let response = client
        .get(format!("{}?{}", hub.url(), topics_query(&[topic])))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    Stream::new(response)
}

/// One series' value from the hub's metrics, read without a connection (a new one would
/// have to finish its handshake within the test's short deadline).
fn local_metric(hub: &Hub, series: &str) -> f64 {
    let text = hub.metrics();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in the metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn der(cert: &SelfSigned) -> Vec<u8> {
    let config = cert.config().unwrap();
    config.handle().certificate_der()
}

#[tokio::test]
async fn http2_and_http1_subscribers_over_tls_receive_updates() {
    let cert = generate();
    let hub = serve(
        cert.config().unwrap(),
        ServerLimits::default(),
        client(&[&cert], false),
    )
    .await;
    let topic = "https://example.com/tls/1";
    let mut h2 = hub.subscribe(&topics_query(&[topic])).await;
    assert_eq!(h2.response.version(), Version::HTTP_2, "ALPN h2");
    assert_eq!(peer_certificate(&h2.response), der(&cert));

    let mut h1 = open(&client(&[&cert], true), &hub, topic).await;
    assert_eq!(h1.response.version(), Version::HTTP_11, "ALPN http/1.1");

    for n in 0..3 {
        let data = format!("update {n}");
        let id = hub.publish(&[("topic", topic), ("data", &data)]).await;
        for stream in [&mut h2, &mut h1] {
            let event = stream.expect().await;
            assert_eq!(&*event.data, data);
            assert_eq!(&*event.id, id);
        }
    }
    assert_eq!(
        hub.metric("tidings_tls_handshake_failures_total").await,
        0.0
    );
}

#[tokio::test]
async fn without_http2_alpn_offers_only_http1() {
    let cert = generate();
    let hub = serve(
        cert.config().unwrap().http2(false),
        ServerLimits::default(),
        client(&[&cert], false),
    )
    .await;
    let response = hub
        .client
        .get(format!("{}/healthz", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
}

#[tokio::test]
async fn a_reloaded_certificate_is_served_to_new_connections_while_old_streams_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |cert: &SelfSigned| {
        std::fs::write(&cert_file, cert.certificate_pem()).unwrap();
        std::fs::write(&key_file, cert.private_key_pem()).unwrap();
    };
    let (a, b, c) = (generate(), generate(), generate());
    write(&a);
    let tls = TlsConfig::from_pem_files(&cert_file, &key_file)
        .unwrap()
        .poll_interval(Some(Duration::from_millis(100)));
    let handle = tls.handle();
    let trusting_all = || client(&[&a, &b, &c], false);
    let hub = serve(tls, ServerLimits::default(), trusting_all()).await;
    let topic = "https://example.com/tls/reload";
    let mut old = hub.subscribe(&topics_query(&[topic])).await;
    assert_eq!(peer_certificate(&old.response), der(&a));

    // SIGHUP's way: an explicit reload.
    write(&b);
    handle.reload().expect("reload");
    let mut new = open(&trusting_all(), &hub, topic).await;
    assert_eq!(
        peer_certificate(&new.response),
        der(&b),
        "new connection, new cert"
    );
    let id = hub.publish(&[("topic", topic), ("data", "after b")]).await;
    assert_eq!(&*old.expect().await.id, id, "the old stream still flows");
    assert_eq!(&*new.expect().await.id, id);

    // The watcher's way: the files change and the poll notices.
    write(&c);
    let started = std::time::Instant::now();
    loop {
        let response = trusting_all()
            .get(format!("{}/healthz", hub.base))
            .send()
            .await
            .unwrap();
        if peer_certificate(&response) == der(&c) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "files never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = hub.publish(&[("topic", topic), ("data", "after c")]).await;
    assert_eq!(
        &*old.expect().await.id,
        id,
        "the first stream outlives two reloads"
    );
    assert_eq!(&*new.expect().await.id, id);
    // The explicit reload and the watcher's; the watcher may also have seen B's files
    // before the explicit reload did.
    assert!(hub.metric("tidings_tls_reloads_total{result=\"ok\"}").await >= 2.0);
}

#[tokio::test]
async fn a_bad_reload_keeps_the_certificate_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (a, b) = (generate(), generate());
    std::fs::write(&cert_file, a.certificate_pem()).unwrap();
    std::fs::write(&key_file, a.private_key_pem()).unwrap();
    let tls = TlsConfig::from_pem_files(&cert_file, &key_file)
        .unwrap()
        .poll_interval(None);
    let handle = tls.handle();
    let hub = serve(tls, ServerLimits::default(), client(&[&a, &b], false)).await;

    // Bad PEM, then a certificate with another's key.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    assert!(handle.reload().is_err());
    std::fs::write(&cert_file, b.certificate_pem()).unwrap();
    let err = handle.reload().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the private key does not match the certificate"
    );

    let response = client(&[&a, &b], false)
        .get(format!("{}/healthz", hub.base))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), der(&a));
    assert_eq!(
        hub.metric("tidings_tls_reloads_total{result=\"error\"}")
            .await,
        2.0
    );
    assert_eq!(
        hub.metric("tidings_tls_reloads_total{result=\"ok\"}").await,
        0.0
    );
}

/// A peer that starts a handshake and never finishes it is closed at the request-head
/// deadline; one that speaks plain HTTP to the TLS port fails the handshake. Both are
/// counted, neither holds its socket.
#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_and_counted() {
    let cert = generate();
    let mut limits = ServerLimits::default();
    limits.header_read_timeout = Duration::from_millis(500);
    let hub = serve(cert.config().unwrap(), limits, client(&[&cert], false)).await;
    let addr = hub.base.trim_start_matches("https://").to_owned();

    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The first bytes of a ClientHello record, and then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut sink = Vec::new();
    // Closed, by a FIN or a reset: either ends the read.
    let _ = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut sink))
        .await
        .expect("the server never closed the stalled handshake");
    assert_eq!(
        local_metric(&hub.hub, "tidings_timeouts_total{kind=\"tls_handshake\"}"),
        1.0
    );

    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("the server never closed the plain-text connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer over a TLS port"
    );
    assert_eq!(
        local_metric(&hub.hub, "tidings_tls_handshake_failures_total"),
        1.0
    );
}

/// A connection over a cap gets its one-line 503 over TLS too (after a handshake that
/// offers only HTTP/1.1, the answer's protocol), even from an HTTP/2 client.
#[tokio::test]
async fn a_refused_connection_gets_its_503_over_tls() {
    let cert = generate();
    let mut limits = ServerLimits::default();
    limits.max_connections_per_ip = 1;
    let hub = serve(cert.config().unwrap(), limits, client(&[&cert], false)).await;
    let topic = "https://example.com/tls/refused";
    let _held = hub.subscribe(&topics_query(&[topic])).await;
    let refused = client(&[&cert], false)
        .get(format!("{}/healthz", hub.base))
        .send()
        .await
        .expect("an answer, not a broken connection");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.version(), Version::HTTP_11);
    assert_eq!(
        refused.text().await.unwrap(),
        "too many connections from 127.0.0.1: at most 1 per client address\n"
    );
    assert_eq!(
        local_metric(
            &hub.hub,
            "tidings_connection_refusals_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0
    );
}

/// The HTTP/2 settings of `ServerLimits` reach connections over TLS: the stream limit is
/// announced in the server's SETTINGS (seen by a bare h2 client over tokio-rustls).
#[tokio::test]
async fn http2_settings_apply_over_tls() {
    let cert = generate();
    let mut limits = ServerLimits::default();
    limits.h2_max_concurrent_streams = 7;
    let hub = serve(cert.config().unwrap(), limits, client(&[&cert], false)).await;
    let addr = hub.base.trim_start_matches("https://").to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&cert).into()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, mut connection) = h2::client::handshake(tls).await.unwrap();
    let request = async move {
        let mut send = send.ready().await.unwrap();
        let request = axum::http::Request::get(format!("https://{addr}/healthz"))
            .body(())
            .unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        response.await.unwrap().status()
    };
    let mut request = std::pin::pin!(request);
    // The connection must be driven for the request to go, and SETTINGS to arrive.
    let status = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            status = &mut request => status,
            ended = &mut connection => panic!("the connection ended first: {ended:?}"),
        }
    })
    .await
    .expect("no answer in time");
    assert_eq!(status, 200);
    assert_eq!(connection.max_concurrent_send_streams(), 7);
}
