//! The hub's Prometheus metrics.
//!
//! Each hub owns its own recorder instead of installing a global one: a library must
//! not take over the process's metrics, and two hubs in one process (tests) must not
//! count into each other.

use metrics::{Counter, Gauge, Key, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Handles to every metric the hub records; cheap to clone.
#[derive(Clone)]
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    pub(crate) connections: Gauge,
    pub(crate) subscriptions: Gauge,
    pub(crate) publishes: Counter,
    pub(crate) publish_refusals: Counter,
    pub(crate) deliveries: Counter,
    pub(crate) slow_disconnects: Counter,
    pub(crate) history_size: Gauge,
    pub(crate) replays: Counter,
    pub(crate) replayed_updates: Counter,
    pub(crate) log_appends: Counter,
    pub(crate) log_commits: Counter,
    pub(crate) tcp_connections: Gauge,
    pub(crate) refusals_max_connections: Counter,
    pub(crate) refusals_per_ip: Counter,
    pub(crate) refusals_forwarded: Counter,
    pub(crate) timeouts_header: Counter,
    pub(crate) timeouts_write: Counter,
    pub(crate) timeouts_idle: Counter,
    pub(crate) selector_refusals: Counter,
    pub(crate) template_cache_bytes: Gauge,
    pub(crate) history_bytes: Gauge,
    pub(crate) storage_ready: Gauge,
    pub(crate) log_write_errors: Counter,
    pub(crate) history_corrupt_records: Counter,
    pub(crate) subscription_refusals_subscribers: Counter,
    pub(crate) subscription_refusals_templates: Counter,
    pub(crate) refusals_requests_per_ip: Counter,
    pub(crate) invalid_forwarded_for: Counter,
    pub(crate) cluster_errors: Counter,
    pub(crate) cluster_regressions: Counter,
    pub(crate) cluster_reconnects: Counter,
    pub(crate) cluster_reader_lag: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Metrics {
    pub(crate) fn new() -> Self {
        let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, help.into());
            recorder.register_counter(&Key::from_static_name(name), &META)
        };
        let gauge = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(name.into(), None, help.into());
            recorder.register_gauge(&Key::from_static_name(name), &META)
        };
        Self {
            connections: gauge(
                "tidings_connections",
                "Open subscriber connections (event streams).",
            ),
            subscriptions: gauge(
                "tidings_subscriptions",
                "Active subscriptions (one per topic selector of each connection).",
            ),
            publishes: counter("tidings_publishes_total", "Updates accepted and stored."),
            publish_refusals: counter(
                "tidings_publish_refusals_total",
                "Publish requests refused (bad input, authorization, storage).",
            ),
            deliveries: counter(
                "tidings_deliveries_total",
                "Updates queued to a live subscriber.",
            ),
            slow_disconnects: counter(
                "tidings_slow_subscriber_disconnects_total",
                "Subscribers disconnected because their queue was full.",
            ),
            history_size: gauge("tidings_history_updates", "Updates held in history."),
            replays: counter(
                "tidings_replays_total",
                "Subscriptions that asked for history (Last-Event-ID).",
            ),
            replayed_updates: counter(
                "tidings_replayed_updates_total",
                "Updates sent from history to reconnecting subscribers.",
            ),
            log_appends: counter(
                "tidings_log_appends_total",
                "Updates appended to history (subscription events included).",
            ),
            log_commits: counter(
                "tidings_log_commits_total",
                "Durable history commits, one fsync each; appends per commit is the group-commit batch.",
            ),
            tcp_connections: gauge(
                "tidings_tcp_connections",
                "Open TCP connections (refused ones not included).",
            ),
            refusals_max_connections: refusals(&recorder, "max_connections"),
            refusals_per_ip: refusals(&recorder, "max_connections_per_ip"),
            refusals_forwarded: refusals(&recorder, "forwarded_per_ip"),
            timeouts_header: timeouts(&recorder, "header"),
            timeouts_write: timeouts(&recorder, "write"),
            timeouts_idle: timeouts(&recorder, "idle"),
            selector_refusals: counter(
                "tidings_selector_refusals_total",
                "Subscriptions refused for their topic selectors: over a limit (length, complexity, compiled size; 400), or too many waiting to compile (503).",
            ),
            template_cache_bytes: gauge(
                "tidings_template_cache_bytes",
                "Bytes of compiled URI templates in the process-wide cache.",
            ),
            history_bytes: gauge(
                "tidings_history_bytes",
                "Bytes of the updates held in history (what --history-max-bytes bounds).",
            ),
            storage_ready: gauge(
                "tidings_storage_ready",
                "1 when the history accepts writes, 0 while it cannot write (see /readyz).",
            ),
            log_write_errors: counter(
                "tidings_log_write_errors_total",
                "History writes that failed (commits, expiries, attempts to reopen the file).",
            ),
            history_corrupt_records: counter(
                "tidings_history_corrupt_records_total",
                "History records found undecodable and skipped by replays.",
            ),
            subscription_refusals_subscribers: subscription_refusals(&recorder, "max_subscribers"),
            subscription_refusals_templates: subscription_refusals(&recorder, "max_templates"),
            refusals_requests_per_ip: refusals(&recorder, "max_requests_per_ip"),
            invalid_forwarded_for: counter(
                "tidings_invalid_forwarded_for_total",
                "Requests from a trusted proxy refused with 400: the X-Forwarded-For entry naming the client was not an IP address.",
            ),
            cluster_errors: counter(
                "tidings_cluster_redis_errors_total",
                "Cluster mode: commands to Redis that failed or timed out (appends, reads, retention).",
            ),
            cluster_regressions: counter(
                "tidings_cluster_stream_regressions_total",
                "Cluster mode: times the Redis stream was found behind what this node had read (Redis lost acknowledged updates).",
            ),
            cluster_reconnects: counter(
                "tidings_cluster_redis_reconnects_total",
                "Cluster mode: connections to Redis made again after a failure.",
            ),
            cluster_reader_lag: gauge(
                "tidings_cluster_reader_lag_seconds",
                "Cluster mode: how far behind the stream this node's reader was at its last batch (0 when caught up).",
            ),
            handle: recorder.handle(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }
}

/// `tidings_connection_refusals_total{reason}`.
fn refusals(recorder: &PrometheusRecorder, reason: &'static str) -> Counter {
    labelled(
        recorder,
        "tidings_connection_refusals_total",
        "Connections, and requests in flight, refused with 503 over a cap, by cap.",
        ("reason", reason),
    )
}

/// `tidings_subscription_refusals_total{reason}`.
fn subscription_refusals(recorder: &PrometheusRecorder, reason: &'static str) -> Counter {
    labelled(
        recorder,
        "tidings_subscription_refusals_total",
        "Subscriptions refused with 503 over a hub-wide cap (subscribers, distinct live templates).",
        ("reason", reason),
    )
}

/// `tidings_timeouts_total{kind}`.
fn timeouts(recorder: &PrometheusRecorder, kind: &'static str) -> Counter {
    labelled(
        recorder,
        "tidings_timeouts_total",
        "Connections closed by a deadline: request head (header), socket not draining (write), no request (idle).",
        ("kind", kind),
    )
}

fn labelled(
    recorder: &PrometheusRecorder,
    name: &'static str,
    help: &'static str,
    (label, value): (&'static str, &'static str),
) -> Counter {
    recorder.describe_counter(name.into(), None, help.into());
    let key = Key::from_parts(name, vec![metrics::Label::new(label, value)]);
    recorder.register_counter(&key, &META)
}
