//! What the load generator counts: per process, the subscribers' events, latencies and
//! failures, and the publishers' acknowledgements; merged across processes at the end.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The most distinct error messages kept, to show what went wrong without a flood.
const ERROR_SAMPLES: usize = 8;

/// A latency histogram in microseconds, from 1 µs to one hour at 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `micros` (clamped into the histogram's range).
pub(crate) fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, 3_600_000_000));
}

/// Keeps `message` among the error samples if it is new and there is room.
pub(crate) fn sample_error(samples: &mut Vec<String>, message: String) {
    if samples.len() < ERROR_SAMPLES && !samples.contains(&message) {
        samples.push(message);
    }
}

/// The subscribers' side of one process.
#[derive(Debug)]
pub(crate) struct SubStats {
    /// Subscribers that received a `200` response head.
    pub(crate) connected: u64,
    /// Subscribers that could not connect or were refused.
    pub(crate) failed: u64,
    /// Streams the server ended (or broke) after they had started.
    pub(crate) disconnects: u64,
    /// Benchmark payloads received.
    pub(crate) events: u64,
    /// Events with data that was not a benchmark payload.
    pub(crate) foreign: u64,
    /// Payloads whose sequence number was not above the last one seen.
    pub(crate) duplicates: u64,
    /// Sequence numbers skipped.
    pub(crate) gaps: u64,
    /// Publish-to-receive latency, µs.
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: Vec<String>,
}

impl Default for SubStats {
    fn default() -> Self {
        SubStats {
            connected: 0,
            failed: 0,
            disconnects: 0,
            events: 0,
            foreign: 0,
            duplicates: 0,
            gaps: 0,
            latency: histogram(),
            errors: Vec::new(),
        }
    }
}

/// [`SubStats`] as a shard process prints it for the coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SubStatsWire {
    connected: u64,
    failed: u64,
    disconnects: u64,
    events: u64,
    foreign: u64,
    duplicates: u64,
    gaps: u64,
    /// `[value µs, count]` pairs.
    latency: Vec<(u64, u64)>,
    errors: Vec<String>,
}

impl SubStats {
    /// Adds another process' counts to these.
    pub(crate) fn merge(&mut self, other: &SubStats) {
        self.connected += other.connected;
        self.failed += other.failed;
        self.disconnects += other.disconnects;
        self.events += other.events;
        self.foreign += other.foreign;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        let _ = self.latency.add(&other.latency);
        for error in &other.errors {
            sample_error(&mut self.errors, error.clone());
        }
    }

    pub(crate) fn to_wire(&self) -> SubStatsWire {
        SubStatsWire {
            connected: self.connected,
            failed: self.failed,
            disconnects: self.disconnects,
            events: self.events,
            foreign: self.foreign,
            duplicates: self.duplicates,
            gaps: self.gaps,
            latency: self
                .latency
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            errors: self.errors.clone(),
        }
    }

    pub(crate) fn from_wire(wire: SubStatsWire) -> SubStats {
        let mut latency = histogram();
        for (value, count) in wire.latency {
            let _ = latency.record_n(value.clamp(1, 3_600_000_000), count);
        }
        SubStats {
            connected: wire.connected,
            failed: wire.failed,
            disconnects: wire.disconnects,
            events: wire.events,
            foreign: wire.foreign,
            duplicates: wire.duplicates,
            gaps: wire.gaps,
            latency,
            errors: wire.errors,
        }
    }
}

/// The publishers' side.
#[derive(Debug)]
pub(crate) struct PubStats {
    /// Requests written.
    pub(crate) sent: u64,
    /// Requests answered with a 2xx status.
    pub(crate) acked: u64,
    /// Requests refused or lost.
    pub(crate) errors: u64,
    /// Turns of the schedule skipped because every publisher was busy.
    pub(crate) missed_turns: u64,
    /// Acknowledged publishes per topic.
    pub(crate) acked_per_topic: Vec<u64>,
    /// The body of the first acknowledgement (the update's id, for Tidings).
    pub(crate) first_id: Option<String>,
    /// Request-to-response time, µs.
    pub(crate) ack: Histogram<u64>,
    pub(crate) errors_seen: Vec<String>,
}

impl PubStats {
    pub(crate) fn new(topics: usize) -> PubStats {
        PubStats {
            sent: 0,
            acked: 0,
            errors: 0,
            missed_turns: 0,
            acked_per_topic: vec![0; topics],
            first_id: None,
            ack: histogram(),
            errors_seen: Vec::new(),
        }
    }
}

/// The quantiles of a latency histogram, in milliseconds.
#[derive(Debug, Serialize, Default, Clone, PartialEq)]
pub(crate) struct Quantiles {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Quantiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Quantiles {
        if histogram.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Quantiles {
            count: histogram.len(),
            mean: (histogram.mean() / 10.0).round() / 100.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// The events every subscriber should have received: each topic's acknowledged
/// publishes times the subscribers of that topic (subscriber `i` is on topic
/// `i % topics`).
pub(crate) fn expected_events(acked_per_topic: &[u64], subscribers: usize) -> u64 {
    let topics = acked_per_topic.len().max(1);
    acked_per_topic
        .iter()
        .enumerate()
        .map(|(topic, &acked)| {
            let on_topic = subscribers / topics + usize::from(topic < subscribers % topics);
            acked * on_topic as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_events_follow_the_topic_assignment() {
        assert_eq!(expected_events(&[10], 100), 1000);
        // 5 subscribers over 3 topics: topics 0 and 1 have two, topic 2 one.
        assert_eq!(expected_events(&[1, 10, 100], 5), 2 + 20 + 100);
        assert_eq!(expected_events(&[], 0), 0);
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut stats = SubStats::default();
        for us in [150, 900, 1_200, 45_000, 45_000] {
            record(&mut stats.latency, us);
        }
        record(&mut stats.latency, 0); // clamped, not lost
        stats.events = 6;
        sample_error(&mut stats.errors, "refused".into());
        sample_error(&mut stats.errors, "refused".into());
        let text = serde_json::to_string(&stats.to_wire()).unwrap();
        let back = SubStats::from_wire(serde_json::from_str(&text).unwrap());
        assert_eq!(Quantiles::of(&back.latency), Quantiles::of(&stats.latency));
        let mut total = SubStats::default();
        total.merge(&back);
        total.merge(&stats);
        assert_eq!(total.events, 12);
        assert_eq!(total.latency.len(), 12);
        assert_eq!(total.errors, vec!["refused".to_owned()]);
        let q = Quantiles::of(&total.latency);
        assert_eq!(q.count, 12);
        assert!((q.max - 45.0).abs() < 0.1, "{q:?}");
        assert!(q.p50 >= 0.9 && q.p50 <= 1.21, "{q:?}");
    }
}
