//! The hub's browser pages, the demo publisher and the digits stream.
//!
//! The pages (`crates/tidings-hub/web/`: plain HTML, CSS and JavaScript modules)
//! are compiled into the binary, so the hub serves them without any file at run time:
//!
//! | path              | what                                                                 |
//! |-------------------|----------------------------------------------------------------------|
//! | `/`               | **Ping**: the demo topic's pings and messages as they come           |
//! | `/digits`         | **Digits**: an `EventSource`'s whole life, reconnects included       |
//! | `/console`        | **Live console**: subscribe to selectors and publish, to debug topics |
//! | `/assets/…`       | the stylesheet, scripts and icon                                     |
//! | `/demo/digits`    | the stream the Digits page reads                                     |
//!
//! The pages talk to the hub at `.well-known/mercure`, relative to themselves, and
//! advertise it with a `Link: </.well-known/mercure>; rel="mercure"` header (under the
//! prefix they are nested at, if any: mount them beside [`Hub::router`]).
//!
//! [`Hub::serve`] serves these routes when the hub is built with
//! [`HubBuilder::pages`](crate::HubBuilder::pages) on; [`Hub::router`] never includes
//! them. An application mounts them itself, on any router state:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidings_hub::HubError> {
//! use axum::Router;
//!
//! let hub = tidings_hub::Hub::builder().build().await?;
//! let hub_and_pages = hub.router().merge(tidings_hub::web::routes());
//! let app: Router<()> = Router::new().nest("/live", hub_and_pages);
//! # let _ = app; Ok(()) }
//! ```
//!
//! The demo publisher ([`spawn_demo`], or [`run_demo`] for any publish function) sends,
//! on [`DEMO_TOPIC`], an `event: ping` with `{"time":"<ISO 8601>"}` every second and a
//! plain message at random intervals of 1 to 10 seconds, to live subscribers only: the
//! demo never writes to history.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tidings_wire::EventBuilder;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Hub;
use crate::log::Update;

/// The topic the demo publisher publishes on, and the Ping page subscribes to.
pub const DEMO_TOPIC: &str = "/demo/ping";

/// Pages may load only their own scripts and styles and talk only to their own origin:
/// event data is rendered as text, and this keeps it so even if a page had a bug.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The pages, by path.
const PAGES: &[(&str, &str)] = &[
    ("/", include_str!("../web/index.html")),
    ("/digits", include_str!("../web/digits.html")),
    ("/console", include_str!("../web/console.html")),
];

/// The assets under `/assets/`, by file name, with their content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", CSS, include_str!("../web/assets/style.css")),
    ("dom.js", JAVASCRIPT, include_str!("../web/assets/dom.js")),
    ("ping.js", JAVASCRIPT, include_str!("../web/assets/ping.js")),
    (
        "digits.js",
        JAVASCRIPT,
        include_str!("../web/assets/digits.js"),
    ),
    ("sse.js", JAVASCRIPT, include_str!("../web/assets/sse.js")),
    (
        "console.js",
        JAVASCRIPT,
        include_str!("../web/assets/console.js"),
    ),
    (
        "favicon.svg",
        SVG,
        include_str!("../web/assets/favicon.svg"),
    ),
];

/// The routes of the pages, their assets and the digits stream, to merge into the
/// hub's router (any state: the handlers use none).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    for &(path, page) in PAGES {
        router = router.route(
            path,
            get(move |request: Request| async move { page_response(page, &request) }),
        );
    }
    router
        .route("/assets/{file}", get(asset))
        .route("/demo/digits", get(digits))
}

fn page_response(page: &'static str, request: &Request) -> Response {
    let mut response = static_response(HTML, page);
    let headers = response.headers_mut();
    headers.insert(header::LINK, crate::http::hub_link(request));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

fn static_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Tiny files: revalidating each time keeps a browser from running old scripts
            // against a newer hub.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some(&(_, content_type, body)) => static_response(content_type, body),
        None => (StatusCode::NOT_FOUND, format!("no asset named {file:?}\n")).into_response(),
    }
}

/// Query of `/demo/digits`.
#[derive(Debug, Deserialize)]
struct DigitsQuery {
    /// `204` answers 204 No Content, which tells a browser to stop reconnecting.
    status: Option<u16>,
}

/// The gap between two events of the digits stream.
const DIGITS_STEP: Duration = Duration::from_secs(1);

/// The reconnection time the digits stream asks for, short so the demo does not drag.
const DIGITS_RETRY: Duration = Duration::from_secs(1);

async fn digits(Query(query): Query<DigitsQuery>) -> Response {
    match query.status {
        None => {}
        Some(204) => return StatusCode::NO_CONTENT.into_response(),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("status={other} is not offered: only 204 is\n"),
            )
                .into_response();
        }
    }
    let body = futures_util::stream::unfold(0_u8, |step| async move {
        let event = match step {
            0 => EventBuilder::new()
                .retry(DIGITS_RETRY)
                .id("1")
                .data("1")
                .build(),
            1 => EventBuilder::new().id("2").data("2").build(),
            2 => EventBuilder::new().id("3").data("3").build(),
            3 => EventBuilder::new().event("bye").data("bye-bye").build(),
            _ => return None,
        };
        if step > 0 {
            tokio::time::sleep(DIGITS_STEP).await;
        }
        Some((Ok::<Bytes, Infallible>(event), step + 1))
    });
    (
        [
            (header::CONTENT_TYPE, tidings_wire::MIME_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One update of the demo publisher, for the publish function given to [`run_demo`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoUpdate {
    /// Always [`DEMO_TOPIC`].
    pub topic: &'static str,
    /// `Some("ping")` for pings, `None` for the plain messages.
    pub event_type: Option<&'static str>,
    /// `{"time":"…"}` for pings, a sentence for messages.
    pub data: String,
}

impl DemoUpdate {
    fn ping(now: SystemTime) -> Self {
        Self {
            topic: DEMO_TOPIC,
            event_type: Some("ping"),
            data: format!("{{\"time\":\"{}\"}}", iso8601(now)),
        }
    }

    fn message(now: SystemTime) -> Self {
        Self {
            topic: DEMO_TOPIC,
            event_type: None,
            data: format!("This is a message at time {}", iso8601(now)),
        }
    }
}

/// The demo publisher: calls `publish` with a ping every second and a message at random
/// intervals of 1 to 10 seconds, forever (abort the task to stop it).
///
/// A failed publish is logged and the demo goes on.
///
/// ```
/// use std::time::Duration;
/// use tidings_hub::web::{DemoUpdate, run_demo};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DemoUpdate>();
/// let demo = tokio::spawn(run_demo(move |update| {
///     let tx = tx.clone();
///     async move { tx.send(update).map_err(|_| "receiver gone") }
/// }));
/// let first = rx.recv().await.unwrap();
/// assert_eq!(first.event_type, Some("ping"));
/// assert!(first.data.starts_with("{\"time\":\""));
/// demo.abort();
/// # }
/// ```
pub async fn run_demo<F, Fut, E>(mut publish: F)
where
    F: FnMut(DemoUpdate) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut pings = tokio::time::interval(Duration::from_secs(1));
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next_message = Instant::now() + random_message_gap();
    loop {
        let update = tokio::select! {
            _ = pings.tick() => DemoUpdate::ping(SystemTime::now()),
            () = tokio::time::sleep_until(next_message) => {
                next_message = Instant::now() + random_message_gap();
                DemoUpdate::message(SystemTime::now())
            }
        };
        if let Err(err) = publish(update).await {
            tracing::warn!(cause = %err, topic = DEMO_TOPIC, "demo publish failed");
        }
    }
}

/// Starts the demo publisher on `hub` (see [`run_demo`]); abort the task to stop it.
/// Its updates go to live subscribers only ([`Hub::publish_live`]): never into history.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidings_hub::HubError> {
/// let hub = tidings_hub::Hub::builder().build().await?;
/// let demo = tidings_hub::web::spawn_demo(&hub);
/// // … serve the hub; the Ping page shows the demo's updates …
/// demo.abort();
/// # Ok(()) }
/// ```
pub fn spawn_demo(hub: &Hub) -> JoinHandle<()> {
    let hub = hub.clone();
    tokio::spawn(run_demo(move |demo: DemoUpdate| {
        let hub = hub.clone();
        async move {
            let mut update = Update::new("", demo.topic, demo.data);
            update.event_type = demo.event_type.map(str::to_owned);
            // Live only: a ping a second would otherwise fill the history (100,000 a
            // day, the default size) and push real updates out of it.
            hub.publish_live(update)
        }
    }))
}

/// A uniformly random gap in [1 s, 10 s], at millisecond resolution.
fn random_message_gap() -> Duration {
    // A v4 UUID is 122 random bits from the OS; its low 62 bits are all random. This saves
    // a dependency for one number a demo needs.
    let random = uuid::Uuid::new_v4().as_u128() as u64 & ((1 << 62) - 1);
    Duration::from_millis(1_000 + random % 9_001)
}

/// `2026-11-21T03:36:09.123Z`: UTC, millisecond precision (RFC 3339, a profile of ISO 8601).
fn iso8601(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`, eras of 400 years).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    async fn get_path(path: &str) -> Response {
        routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    #[test]
    fn iso8601_formats_utc_with_milliseconds() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z: a leap day, the last millisecond of it.
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_199_999);
        assert_eq!(iso8601(leap), "2024-02-29T23:59:59.999Z");
        let y2k = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(iso8601(y2k), "2000-01-01T00:00:00.000Z");
        let end_of_2099 = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(iso8601(end_of_2099), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn civil_from_days_round_trips_every_day_of_four_centuries() {
        // Walk day by day from 1900-01-01 and check each date follows the previous one.
        let mut previous = civil_from_days(-25_567);
        assert_eq!(previous, (1900, 1, 1));
        for days in -25_566..120_000 {
            let (year, month, day) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (year, month, day) == (py, pm, pd + 1);
            let next_month = (year, month, day) == (py, pm + 1, 1);
            let next_year = (year, month, day) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {year}-{month}-{day}"
            );
            previous = (year, month, day);
        }
    }

    #[test]
    fn message_gaps_stay_within_one_to_ten_seconds() {
        let gaps: Vec<Duration> = (0..2_000).map(|_| random_message_gap()).collect();
        assert!(
            gaps.iter()
                .all(|gap| (Duration::from_secs(1)..=Duration::from_secs(10)).contains(gap))
        );
        // Random, not constant: both halves of the range turn up.
        assert!(gaps.iter().any(|gap| *gap < Duration::from_secs(5)));
        assert!(gaps.iter().any(|gap| *gap > Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn demo_pings_every_second_and_messages_every_one_to_ten() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let demo = tokio::spawn(run_demo(move |update| {
            let tx = tx.clone();
            async move { tx.send((Instant::now(), update)).map_err(|_| "closed") }
        }));
        let start = Instant::now();
        let mut pings = Vec::new();
        let mut messages = Vec::new();
        while let Some((at, update)) = rx.recv().await {
            if at - start > Duration::from_secs(120) {
                break;
            }
            assert_eq!(update.topic, DEMO_TOPIC);
            match update.event_type {
                Some("ping") => {
                    let json: serde_json::Value = serde_json::from_str(&update.data).unwrap();
                    assert_eq!(json["time"].as_str().unwrap().len(), 24, "{json}");
                    pings.push(at);
                }
                None => {
                    assert!(update.data.starts_with("This is a message at time "));
                    messages.push(at);
                }
                other => panic!("unexpected event type {other:?}"),
            }
        }
        demo.abort();
        assert_eq!(pings.len(), 121);
        for pair in pings.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(1));
        }
        assert!(messages.len() >= 12, "{} messages in 120 s", messages.len());
        let mut previous = start;
        for at in messages {
            let gap = at - previous;
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(10)).contains(&gap),
                "{gap:?}"
            );
            previous = at;
        }
    }

    #[tokio::test]
    async fn pages_are_html_and_advertise_the_hub() {
        for (path, marker) in [
            ("/", "Ping"),
            ("/digits", "Digits"),
            ("/console", "Live console"),
        ] {
            let response = get_path(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), HTML);
            assert_eq!(
                header_of(&response, header::LINK),
                "</.well-known/mercure>; rel=\"mercure\""
            );
            assert!(
                header_of(&response, header::CONTENT_SECURITY_POLICY)
                    .contains("default-src 'self'")
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = std::str::from_utf8(&body).unwrap();
            assert!(body.contains(&format!("<h1>{marker}</h1>")), "{path}");
        }
    }

    #[test]
    fn the_ping_page_subscribes_to_the_demo_topic() {
        let (_, page) = PAGES.iter().find(|(path, _)| *path == "/").unwrap();
        assert!(page.contains(&format!("<code id=\"topic\">{DEMO_TOPIC}</code>")));
    }

    #[tokio::test]
    async fn assets_have_their_content_types_and_unknown_ones_are_404() {
        for (file, content_type) in [
            ("style.css", CSS),
            ("console.js", JAVASCRIPT),
            ("dom.js", JAVASCRIPT),
            ("favicon.svg", SVG),
        ] {
            let response = get_path(&format!("/assets/{file}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{file}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
        }
        let missing = get_path("/assets/nope.js").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn every_module_a_page_imports_is_served() {
        // A page whose script import 404s fails silently in the browser; catch it here.
        for (_, _, body) in ASSETS.iter().filter(|(_, t, _)| *t == JAVASCRIPT) {
            for import in body
                .lines()
                .filter_map(|line| line.split("from './").nth(1))
            {
                let file = import.split('\'').next().unwrap();
                assert!(
                    ASSETS.iter().any(|(name, _, _)| *name == file),
                    "{file} is not embedded"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn digits_sends_one_two_three_bye_a_second_apart_then_ends() {
        let response = get_path("/demo/digits").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/event-stream"
        );
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        let start = Instant::now();
        let mut chunks = Vec::new();
        let mut body = response.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            chunks.push((start.elapsed(), chunk.unwrap()));
        }
        let expected: [(u64, &[u8]); 4] = [
            (0, b"id: 1\nretry: 1000\ndata: 1\n\n"),
            (1, b"id: 2\ndata: 2\n\n"),
            (2, b"id: 3\ndata: 3\n\n"),
            (3, b"event: bye\ndata: bye-bye\n\n"),
        ];
        assert_eq!(chunks.len(), expected.len());
        for ((at, bytes), (secs, want)) in chunks.iter().zip(expected) {
            assert_eq!(*at, Duration::from_secs(secs));
            assert_eq!(&bytes[..], want);
        }
    }

    #[tokio::test]
    async fn digits_answers_204_when_asked_and_refuses_other_statuses() {
        let response = get_path("/demo/digits?status=204").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let response = get_path("/demo/digits?status=500").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
