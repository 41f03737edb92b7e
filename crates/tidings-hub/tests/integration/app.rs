//! The hub as a library inside an application: its routes beside the app's own, nested
//! under a prefix, served by `axum::serve` with a graceful shutdown.

use std::future::IntoFuture;

use axum::Router;
use axum::routing::get;
use tidings_hub::Hub;
use tidings_hub::auth::KeyConfig;
use tidings_hub::log::Update;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{KEY, PATIENCE, Stream, token};

/// An app served by axum (not by [`Hub::serve`]) until `stop` is sent, the hub's event
/// streams ended by [`Hub::shutdown_on`].
struct App {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl App {
    async fn serve(hub: &Hub, app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(hub.shutdown_on(stopped))
                .into_future(),
        );
        Self {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    async fn subscribe(&self, path: &str) -> Stream {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "subscribe {path}");
        Stream::new(response)
    }

    /// Sends the shutdown signal and waits, within [`PATIENCE`], for the server to return.
    async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let served = tokio::time::timeout(PATIENCE, self.server)
            .await
            .expect("the graceful shutdown did not complete in time");
        served.unwrap().unwrap();
    }
}

async fn hub() -> Hub {
    Hub::builder()
        .jwt_key(KeyConfig::hmac(KEY))
        .build()
        .await
        .unwrap()
}

fn link(response: &reqwest::Response) -> String {
    let values: Vec<_> = response
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(values.len(), 1, "one Link header: {values:?}");
    values.into_iter().next().unwrap()
}

#[tokio::test]
async fn nested_under_a_prefix_beside_the_apps_own_health_check() {
    let hub = hub().await;
    let app = Router::new()
        .route("/", get(|| async { "the app's page" }))
        .route("/healthz", get(|| async { "the app's own check" }))
        .nest("/events", hub.router())
        .nest("/ops", hub.ops_router());
    let app = App::serve(&hub, app).await;

    // The app keeps its routes; the hub's checks are where the app put them.
    assert_eq!(app.get("/").await.text().await.unwrap(), "the app's page");
    assert_eq!(
        app.get("/healthz").await.text().await.unwrap(),
        "the app's own check"
    );
    let health = app.get("/ops/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("link").is_none());
    assert_eq!(health.text().await.unwrap(), "ok\n");
    assert_eq!(
        app.get("/ops/readyz").await.text().await.unwrap(),
        "ready\n"
    );
    let metrics = app.get("/ops/metrics").await.text().await.unwrap();
    assert!(metrics.contains("tidings_publishes_total"), "{metrics}");
    // Nothing of the hub's at the root.
    assert_eq!(app.get("/.well-known/mercure?topic=/t").await.status(), 404);
    assert_eq!(app.get("/metrics").await.status(), 404);

    // The hub is found, and advertised, under the prefix.
    let mut stream = app.subscribe("/events/.well-known/mercure?topic=/t").await;
    assert_eq!(
        stream.header("link").as_deref(),
        Some("</events/.well-known/mercure>; rel=\"mercure\"")
    );
    let published = app
        .client
        .post(format!("{}/events/.well-known/mercure", app.base))
        .bearer_auth(token(&["*"], &[]))
        .form(&[("topic", "/t"), ("data", "over HTTP")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        link(&published),
        "</events/.well-known/mercure>; rel=\"mercure\""
    );
    assert_eq!(published.status(), 200);
    assert_eq!(stream.expect().await.data, "over HTTP");
    let api = app.get("/events/.well-known/mercure/subscriptions").await;
    assert_eq!(api.status(), 401, "the subscriptions API needs a token");
    assert_eq!(link(&api), "</events/.well-known/mercure>; rel=\"mercure\"");
    app.shut_down().await;
}

#[tokio::test]
async fn merged_at_the_root_advertises_the_root() {
    let hub = hub().await;
    let app = Router::new()
        .route("/healthz", get(|| async { "mine" }))
        .merge(hub.router());
    let app = App::serve(&hub, app).await;
    assert_eq!(app.get("/healthz").await.text().await.unwrap(), "mine");
    let stream = app.subscribe("/.well-known/mercure?topic=/t").await;
    assert_eq!(
        stream.header("link").as_deref(),
        Some("</.well-known/mercure>; rel=\"mercure\"")
    );
    app.shut_down().await;
}

#[tokio::test]
async fn pages_nested_with_the_hub_advertise_it_under_their_prefix() {
    let hub = hub().await;
    let app = Router::new().nest("/live", hub.router().merge(tidings_hub::web::routes()));
    let app = App::serve(&hub, app).await;
    let console = app.get("/live/console").await;
    assert_eq!(console.status(), 200);
    assert_eq!(
        link(&console),
        "</live/.well-known/mercure>; rel=\"mercure\""
    );
    let ping = app.get("/live").await;
    assert_eq!(ping.status(), 200);
    assert_eq!(link(&ping), "</live/.well-known/mercure>; rel=\"mercure\"");
    app.shut_down().await;
}

#[tokio::test]
async fn a_prefix_with_a_parameter_is_advertised_as_requested() {
    let hub = hub().await;
    let app = Router::new().nest("/tenants/{tenant}", hub.router());
    let app = App::serve(&hub, app).await;
    let stream = app
        .subscribe("/tenants/a%20b/.well-known/mercure?topic=/t")
        .await;
    assert_eq!(
        stream.header("link").as_deref(),
        Some("</tenants/a%20b/.well-known/mercure>; rel=\"mercure\"")
    );
    app.shut_down().await;
}

#[tokio::test]
async fn graceful_shutdown_ends_open_event_streams() {
    let hub = hub().await;
    let app = Router::new()
        .route("/healthz", get(|| async { "mine" }))
        .nest("/events", hub.router());
    let app = App::serve(&hub, app).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(app.subscribe("/events/.well-known/mercure?topic=/t").await);
    }
    // The streams are live: they get an update.
    hub.publish(Update::builder("/t").data("before").build())
        .await
        .unwrap();
    for stream in &mut streams {
        assert_eq!(stream.expect().await.data, "before");
    }

    app.shut_down().await;
    for stream in &mut streams {
        assert!(stream.next().await.is_none(), "the stream went on");
    }
    // The hub itself still takes publishes until it is closed.
    hub.publish(Update::builder("/t").build()).await.unwrap();
    hub.close().await;
}

#[tokio::test]
async fn shutdown_on_completes_when_the_hub_is_shut_down() {
    let hub = hub().await;
    let signal = hub.shutdown_on(std::future::pending::<()>());
    hub.shutdown();
    tokio::time::timeout(PATIENCE, signal)
        .await
        .expect("shutdown_on waits for the hub's shutdown too");
}
