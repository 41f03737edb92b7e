//! The hub's Prometheus metrics.
//!
//! Each hub owns its own recorder instead of installing a global one: a library must
//! not take over the process's metrics, and two hubs in one process (tests) must not
//! count into each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    pub(crate) timeouts_handshake: Counter,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) tls_reloads_ok: Counter,
    pub(crate) tls_reloads_failed: Counter,
    /// Observability (issue 11): latency histograms, refusals by reason, connections by
    /// protocol version, build info.
    pub(crate) observed: Arc<Observed>,
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
            timeouts_handshake: timeouts(&recorder, "tls_handshake"),
            tls_handshake_failures: counter(
                "tidings_tls_handshake_failures_total",
                "TLS handshakes that failed (protocol errors, no shared version or cipher, peers that went away); the ones cut by the deadline are tidings_timeouts_total{kind=\"tls_handshake\"}.",
            ),
            tls_reloads_ok: tls_reloads(&recorder, "ok"),
            tls_reloads_failed: tls_reloads(&recorder, "error"),
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
            observed: Arc::new(Observed::new(recorder)),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut text = self.handle.render();
        self.observed.render_histograms(&mut text);
        text
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
        "Connections closed by a deadline: request head (header), socket not draining (write), no request (idle), TLS handshake not finished within the request-head deadline (tls_handshake).",
        ("kind", kind),
    )
}

/// `tidings_tls_reloads_total{result}`.
fn tls_reloads(recorder: &PrometheusRecorder, result: &'static str) -> Counter {
    labelled(
        recorder,
        "tidings_tls_reloads_total",
        "TLS certificate reloads (SIGHUP, a change of the files, the library's handle), by result; a failed one keeps the certificate in use.",
        ("result", result),
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

/// The upper bounds of the latency histograms' buckets, in seconds: from 100 µs (a
/// delivery on an idle hub) to 10 s (a disk that stalls), about three per decade.
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets, kept as counters.
///
/// The exporter's own histograms keep every sample until `/metrics` is rendered (or an
/// upkeep task drains them): a hub nobody scrapes would grow by 8 bytes per delivery.
/// This one is a fixed set of atomics, whatever the rate and however rarely it is read.
pub(crate) struct LatencyHistogram {
    name: &'static str,
    help: &'static str,
    /// The bucket bounds in nanoseconds.
    bounds: [u64; LATENCY_BUCKETS.len()],
    /// Samples per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            bounds: LATENCY_BUCKETS.map(|secs| (secs * 1e9) as u64),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one sample.
    pub(crate) fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts the time since `start`.
    pub(crate) fn record_since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    /// Appends the Prometheus text of the histogram.
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
        out.push('\n');
    }
}

/// How many recent acceptances [`AcceptClock`] remembers.
const ACCEPT_SLOTS: usize = 16_384;

/// When each recent update was accepted, by log position, for the delivery lag: a ring
/// of [`ACCEPT_SLOTS`] (position, time) pairs, so that the fan-out's queues carry no
/// timestamp. An update delivered after 16k later ones were accepted has lost its slot
/// and is not measured (the dispatch queue holds 4,096, a subscriber's 1,024 by default).
pub(crate) struct AcceptClock {
    base: Instant,
    positions: Box<[AtomicU64]>,
    /// Nanoseconds since `base`.
    times: Box<[AtomicU64]>,
}

impl AcceptClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            positions: (0..ACCEPT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            times: (0..ACCEPT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Remembers that the update stored at `position` was accepted at `at`.
    pub(crate) fn accepted(&self, position: u64, at: Instant) {
        let slot = (position % ACCEPT_SLOTS as u64) as usize;
        // Position 0 first: a reader between the two stores sees no match, never this
        // position with the time of the update before it.
        self.positions[slot].store(0, Ordering::Release);
        self.times[slot].store(self.nanos(at), Ordering::Release);
        self.positions[slot].store(position, Ordering::Release);
    }

    /// How long ago the update at `position` was accepted, if it is still remembered.
    fn since(&self, position: u64, now: Instant) -> Option<Duration> {
        let slot = (position % ACCEPT_SLOTS as u64) as usize;
        if self.positions[slot].load(Ordering::Acquire) != position {
            return None;
        }
        let accepted = self.times[slot].load(Ordering::Acquire);
        if self.positions[slot].load(Ordering::Acquire) != position {
            return None;
        }
        Some(Duration::from_nanos(
            self.nanos(now).saturating_sub(accepted),
        ))
    }
}

/// The metrics of issue 11's observability part, apart from the others so that they
/// can be added to without touching every constructor.
pub(crate) struct Observed {
    /// Registers the refusal counters on first use (their labels are a fixed set).
    recorder: PrometheusRecorder,
    /// A publish request in, its response out (HTTP publishes that succeed).
    pub(crate) publish_duration: LatencyHistogram,
    /// An update handed to the history until its append is durable.
    pub(crate) log_commit_duration: LatencyHistogram,
    /// An update accepted until its bytes are written to a subscriber.
    pub(crate) delivery_lag: LatencyHistogram,
    pub(crate) accepts: AcceptClock,
    http1_0: Gauge,
    http1_1: Gauge,
    http2: Gauge,
}

impl Observed {
    fn new(recorder: PrometheusRecorder) -> Self {
        recorder.describe_gauge(
            "tidings_build_info".into(),
            None,
            "Always 1; the labels say which build is running.".into(),
        );
        let key = Key::from_parts(
            "tidings_build_info",
            vec![
                metrics::Label::new("version", env!("CARGO_PKG_VERSION")),
                metrics::Label::new(
                    "commit",
                    option_env!("TIDINGS_GIT_COMMIT").unwrap_or("unknown"),
                ),
            ],
        );
        recorder.register_gauge(&key, &META).set(1.0);
        recorder.describe_counter(
            "tidings_refusals_total".into(),
            None,
            "Requests refused with a 4xx or 5xx status and a one-line reason, by status and reason."
                .into(),
        );
        recorder.describe_gauge(
            "tidings_http_connections".into(),
            None,
            "Open connections that have sent a request, by HTTP version.".into(),
        );
        let version = |v: &'static str| {
            let key = Key::from_parts(
                "tidings_http_connections",
                vec![metrics::Label::new("version", v)],
            );
            recorder.register_gauge(&key, &META)
        };
        Self {
            http1_0: version("HTTP/1.0"),
            http1_1: version("HTTP/1.1"),
            http2: version("HTTP/2"),
            publish_duration: LatencyHistogram::new(
                "tidings_publish_duration_seconds",
                "Publish requests that succeeded, from the request to its response (the update durable).",
            ),
            log_commit_duration: LatencyHistogram::new(
                "tidings_log_commit_duration_seconds",
                "Updates handed to the history until their append was durable (group commit included).",
            ),
            delivery_lag: LatencyHistogram::new(
                "tidings_delivery_lag_seconds",
                "Live updates from their acceptance by the hub to the write of their bytes to a subscriber.",
            ),
            accepts: AcceptClock::new(),
            recorder,
        }
    }

    /// Counts a refusal: `reason` is one of a fixed set of short names, never text a
    /// client chose.
    pub(crate) fn refused(&self, status: u16, reason: &'static str) {
        let key = Key::from_parts(
            "tidings_refusals_total",
            vec![
                metrics::Label::new("status", status_label(status)),
                metrics::Label::new("reason", reason),
            ],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// The gauge of open connections of this HTTP version.
    pub(crate) fn http_connections(&self, version: axum::http::Version) -> &Gauge {
        match version {
            axum::http::Version::HTTP_10 | axum::http::Version::HTTP_09 => &self.http1_0,
            axum::http::Version::HTTP_2 | axum::http::Version::HTTP_3 => &self.http2,
            _ => &self.http1_1,
        }
    }

    /// Records the delivery lag of the update at `position`, written at `now` (nothing
    /// for one no longer remembered, nor for a live-only one, position 0).
    pub(crate) fn delivered(&self, position: u64, now: Instant) {
        if let Some(lag) = self.accepts.since(position, now) {
            self.delivery_lag.record(lag);
        }
    }

    fn render_histograms(&self, out: &mut String) {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        self.publish_duration.render(out);
        self.log_commit_duration.render(out);
        self.delivery_lag.render(out);
    }
}

/// A status as a label value without allocating: the statuses the hub refuses with.
fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ if status < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_cover_sub_millisecond_to_seconds() {
        let histogram = LatencyHistogram::new("t_seconds", "test");
        histogram.record(Duration::from_micros(50));
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60));
        let mut text = String::new();
        histogram.render(&mut text);
        assert!(text.contains("# TYPE t_seconds histogram"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{le=\"0.0001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"0.0025\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("t_seconds_count 4\n"), "{text}");
        assert!(text.contains("t_seconds_sum 60.00315\n"), "{text}");
    }

    #[test]
    fn the_accept_clock_forgets_a_slot_reused_by_a_later_position() {
        let clock = AcceptClock::new();
        let at = Instant::now();
        clock.accepted(7, at);
        let later = at + Duration::from_millis(5);
        assert_eq!(clock.since(7, later), Some(Duration::from_millis(5)));
        clock.accepted(7 + ACCEPT_SLOTS as u64, at);
        assert_eq!(clock.since(7, later), None);
        assert_eq!(clock.since(8, later), None);
    }

    #[test]
    fn metrics_render_the_new_names() {
        let metrics = Metrics::new();
        metrics.observed.refused(401, "invalid_token");
        metrics
            .observed
            .http_connections(axum::http::Version::HTTP_2)
            .increment(1.0);
        let text = metrics.render();
        for name in [
            "tidings_build_info{version=\"",
            "tidings_refusals_total{status=\"401\",reason=\"invalid_token\"} 1",
            "tidings_http_connections{version=\"HTTP/2\"} 1",
            "tidings_publish_duration_seconds_bucket",
            "tidings_log_commit_duration_seconds_count",
            "tidings_delivery_lag_seconds_sum",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
