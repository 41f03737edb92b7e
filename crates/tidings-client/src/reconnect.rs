//! The reconnect policy: when to reconnect, when a connection is dead, when to give up.
//!
//! [`Reconnect`] is a plain state machine. It never reads a clock and owns no timer or
//! socket: the driver in `event_source.rs` tells it what happened and when ("now"), asks
//! it for the next instant it must be woken at ([`Reconnect::deadline`]) and acts on the
//! answers. The tests below drive it with instants they make up, so every timing rule is
//! checked without waiting.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::ReadyState;

/// Waits are clamped to this for the deadline (a century is "never" for a client).
const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How the wait before a reconnection grows while connections keep failing.
///
/// The wait starts from the *base*: the reconnection time (the builder's initial value,
/// or the server's last `retry:`), as the standard asks, but never less than the floor
/// of [`EventSourceBuilder::min_retry`](crate::EventSourceBuilder::min_retry) (500 ms by
/// default), so that a server sending `retry: 0` cannot make a client hammer it. With
/// exponential backoff, the *n*-th consecutive failure waits the base plus a uniformly
/// random extra ("full jitter") of up to `base × (2ⁿ − 1)`, the total never above the
/// cap, so that clients dropped together by a restarting server do not come back
/// together. A connection that opens and then ends counts as a failure too: the count
/// resets only when a connection stayed open for
/// [`backoff_reset_after`](crate::EventSourceBuilder::backoff_reset_after) (60 s by
/// default), so a server that accepts and drops at once is backed off from as well.
///
/// ```
/// use std::time::Duration;
/// use tidings_client::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_secs(60));
/// assert_eq!(backoff.cap(), Some(Duration::from_secs(60)));
/// assert_eq!(Backoff::none().cap(), None);
/// assert_eq!(Backoff::default(), Backoff::exponential(Duration::from_secs(30)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    cap: Option<Duration>,
}

impl Backoff {
    /// No backoff and no jitter: every reconnection waits exactly the reconnection time
    /// (but not less than the floor), as a browser does.
    pub const fn none() -> Self {
        Self { cap: None }
    }

    /// Exponential backoff with full jitter, the wait capped at `cap` (a reconnection
    /// time above the cap is still honoured: the server's `retry:` wins).
    pub const fn exponential(cap: Duration) -> Self {
        Self { cap: Some(cap) }
    }

    /// The cap of an exponential backoff; `None` for [`Backoff::none`].
    pub const fn cap(&self) -> Option<Duration> {
        self.cap
    }

    /// The wait after the `failures`-th consecutive failure (1 for the first), from the
    /// `base` wait (the reconnection time, raised to the floor), with `extra` drawing
    /// the jitter: called with the largest extra allowed, it returns a value between
    /// zero and that.
    fn delay(
        &self,
        base: Duration,
        failures: u32,
        extra: impl FnOnce(Duration) -> Duration,
    ) -> Duration {
        let Some(cap) = self.cap else {
            return base;
        };
        // 2^failures overflows nothing below 31, and the cap is reached long before.
        let ceiling = base.saturating_mul(1u32 << failures.min(31)).min(cap);
        let span = ceiling.saturating_sub(base);
        if span.is_zero() {
            return base;
        }
        base + extra(span).min(span)
    }
}

impl Default for Backoff {
    /// Exponential, capped at 30 seconds.
    fn default() -> Self {
        Self::exponential(Duration::from_secs(30))
    }
}

/// The settings the policy runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) reconnection_time: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: Option<u32>,
    pub(crate) idle_timeout: Option<Duration>,
    /// The shortest wait before any reconnection, whatever `retry:` says.
    pub(crate) min_retry: Duration,
    /// How long a connection must stay open for the backoff to start over.
    pub(crate) backoff_reset_after: Duration,
}

/// Where the event source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created; no request made yet.
    Idle,
    /// A request is in flight, sent at `since`.
    Connecting { since: Instant },
    /// The response is an event stream since `since`; bytes last arrived at
    /// `last_activity`.
    Open {
        since: Instant,
        last_activity: Instant,
    },
    /// A connection failed; the next one starts at `until`.
    Waiting { until: Instant },
    /// Closed for good.
    Closed,
}

/// What to do after a failure that allows reconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Reconnect after this wait; [`Reconnect::on_timeout`] says when it is over.
    ReconnectAfter(Duration),
    /// The allowed number of retries is used up; the source is closed.
    GiveUp {
        /// How many reconnections were tried since the last connection that opened.
        retries: u32,
    },
}

/// What a deadline that passed means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Nothing yet: the deadline moved (bytes arrived meanwhile). Ask for it again.
    NotYet,
    /// The wait is over: start a request now.
    Reconnect,
    /// No bytes for the idle timeout: the connection is dead. Drop it and report the
    /// failure with [`Reconnect::failed`].
    IdleTimeout,
}

/// The reconnect state machine. `R` draws the jitter; tests give it a seeded generator.
#[derive(Debug)]
pub(crate) struct Reconnect<R> {
    policy: Policy,
    reconnection_time: Duration,
    /// Consecutive failures for the backoff: connections that failed, or opened and
    /// ended within the reset period, since the last one that stayed open longer.
    failures: u32,
    /// Failed attempts since the last connection that opened, for the retry budget.
    retries: u32,
    phase: Phase,
    rng: R,
}

impl<R: Rng> Reconnect<R> {
    pub(crate) fn new(policy: Policy, rng: R) -> Self {
        Self {
            reconnection_time: policy.reconnection_time,
            policy,
            failures: 0,
            retries: 0,
            phase: Phase::Idle,
            rng,
        }
    }

    /// The state as `EventSource.readyState` names it.
    pub(crate) fn ready_state(&self) -> ReadyState {
        match self.phase {
            Phase::Idle | Phase::Connecting { .. } | Phase::Waiting { .. } => {
                ReadyState::Connecting
            }
            Phase::Open { .. } => ReadyState::Open,
            Phase::Closed => ReadyState::Closed,
        }
    }

    /// The current reconnection time: the initial one, or the last `retry:` value.
    pub(crate) fn reconnection_time(&self) -> Duration {
        self.reconnection_time
    }

    /// The idle timeout, if one is set.
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.policy.idle_timeout
    }

    /// When the next attempt starts, while waiting to reconnect.
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { until } => Some(until),
            _ => None,
        }
    }

    /// Whether the driver must make the first request (nothing has happened yet).
    pub(crate) fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// The driver sends the first request at `now`.
    pub(crate) fn start(&mut self, now: Instant) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Connecting { since: now };
        }
    }

    /// A `retry:` field set a new reconnection time.
    pub(crate) fn set_reconnection_time(&mut self, time: Duration) {
        self.reconnection_time = time;
    }

    /// The response at `now` is an event stream: the source is open and the retry
    /// budget whole again. The backoff resets only if it stays open for the reset
    /// period (see [`failed`](Self::failed)).
    pub(crate) fn opened(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Connecting { .. }) {
            self.phase = Phase::Open {
                since: now,
                last_activity: now,
            };
            self.retries = 0;
        }
    }

    /// Bytes arrived at `now` (any bytes: an event, a comment, half a line).
    pub(crate) fn activity(&mut self, now: Instant) {
        if let Phase::Open { last_activity, .. } = &mut self.phase {
            *last_activity = now;
        }
    }

    /// The request or the open connection failed at `now` in a way that allows
    /// reconnecting (a network error, the end of the body, an idle timeout).
    pub(crate) fn failed(&mut self, now: Instant) -> Decision {
        if self.phase == Phase::Closed {
            return Decision::GiveUp {
                retries: self.retries.saturating_sub(1),
            };
        }
        // Only a connection that lasted starts the backoff over: one that opens and
        // ends at once (a server that sends `retry: 0` and closes) is backed off from.
        if let Phase::Open { since, .. } = self.phase
            && now.saturating_duration_since(since) >= self.policy.backoff_reset_after
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.retries = self.retries.saturating_add(1);
        // The n-th failure would need the n-th retry.
        if let Some(max) = self.policy.max_retries
            && self.retries > max
        {
            self.phase = Phase::Closed;
            return Decision::GiveUp { retries: max };
        }
        let rng = &mut self.rng;
        let base = self.reconnection_time.max(self.policy.min_retry);
        let delay = self.policy.backoff.delay(base, self.failures, |span| {
            let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rng.random_range(0..=nanos))
        });
        // A `retry:` of billions of years is the server's right, but no clock goes there.
        let until = now.checked_add(delay.min(LONGEST_WAIT)).unwrap_or(now);
        self.phase = Phase::Waiting { until };
        Decision::ReconnectAfter(delay)
    }

    /// The user asked for a new connection at `now`: the current one (or the wait, or
    /// the request) is dropped and a request starts. Not a failure: the retry and
    /// backoff counts stay, except that a connection open for the reset period starts
    /// the backoff over, as its failure would have.
    pub(crate) fn restart(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle | Phase::Closed => return,
            Phase::Open { since, .. }
                if now.saturating_duration_since(since) >= self.policy.backoff_reset_after =>
            {
                self.failures = 0;
            }
            _ => {}
        }
        self.phase = Phase::Connecting { since: now };
    }

    /// The connection failed for good (a status other than 200, a wrong content type,
    /// a limit exceeded), or the user closed the source.
    pub(crate) fn close(&mut self) {
        self.phase = Phase::Closed;
    }

    /// The next instant at which [`on_timeout`](Self::on_timeout) must be called, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let idle = self.policy.idle_timeout;
        match self.phase {
            Phase::Idle | Phase::Closed => None,
            Phase::Waiting { until } => Some(until),
            Phase::Connecting { since } => idle.and_then(|t| since.checked_add(t)),
            Phase::Open { last_activity, .. } => idle.and_then(|t| last_activity.checked_add(t)),
        }
    }

    /// The deadline given by [`deadline`](Self::deadline) may have passed: it is `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Wake {
        match self.deadline() {
            Some(deadline) if now >= deadline => {}
            _ => return Wake::NotYet,
        }
        match self.phase {
            Phase::Waiting { .. } => {
                self.phase = Phase::Connecting { since: now };
                Wake::Reconnect
            }
            Phase::Connecting { .. } | Phase::Open { .. } => Wake::IdleTimeout,
            Phase::Idle | Phase::Closed => Wake::NotYet,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    const RESET: Duration = Duration::from_secs(60);

    /// A reconnection time of 100 ms, no floor, a backoff reset after 60 s open.
    fn policy(backoff: Backoff) -> Policy {
        Policy {
            reconnection_time: 100 * MS,
            backoff,
            max_retries: None,
            idle_timeout: None,
            min_retry: Duration::ZERO,
            backoff_reset_after: RESET,
        }
    }

    fn machine(policy: Policy) -> Reconnect<StdRng> {
        Reconnect::new(policy, StdRng::seed_from_u64(7))
    }

    /// Fails `n` times in a row (reconnecting after each wait) and returns the waits.
    fn fail_n(m: &mut Reconnect<StdRng>, t0: Instant, n: usize) -> Vec<Duration> {
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..n {
            match m.failed(now) {
                Decision::ReconnectAfter(wait) => {
                    now += wait;
                    assert_eq!(m.deadline(), Some(now));
                    assert_eq!(m.on_timeout(now), Wake::Reconnect);
                    waits.push(wait);
                }
                Decision::GiveUp { .. } => break,
            }
        }
        waits
    }

    #[test]
    fn starts_idle_then_connecting_then_open() {
        let mut m = machine(policy(Backoff::none()));
        let t0 = Instant::now();
        assert!(m.is_idle());
        assert_eq!(m.ready_state(), ReadyState::Connecting);
        assert_eq!(m.deadline(), None);
        m.start(t0);
        assert!(!m.is_idle());
        assert_eq!(m.ready_state(), ReadyState::Connecting);
        m.opened(t0);
        assert_eq!(m.ready_state(), ReadyState::Open);
        assert_eq!(m.deadline(), None, "no idle timeout configured");
    }

    #[test]
    fn restart_connects_now_and_keeps_the_counts() {
        let mut m = machine(Policy {
            max_retries: Some(2),
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.restart(t0);
        assert!(m.is_idle(), "nothing to restart before the first request");
        m.start(t0);
        assert_eq!(m.failed(t0), Decision::ReconnectAfter(100 * MS));
        // During the wait: a request starts now, the failure still counts.
        m.restart(t0 + MS);
        assert_eq!(m.deadline(), None);
        assert_eq!(m.failed(t0 + 2 * MS), Decision::ReconnectAfter(100 * MS));
        m.restart(t0 + 3 * MS);
        assert_eq!(m.failed(t0 + 4 * MS), Decision::GiveUp { retries: 2 });
        m.restart(t0 + 5 * MS);
        assert_eq!(m.ready_state(), ReadyState::Closed, "closed is final");
    }

    #[test]
    fn restart_after_a_long_connection_starts_the_backoff_over() {
        let mut m = machine(policy(Backoff::exponential(60_000 * MS)));
        let t0 = Instant::now();
        m.start(t0);
        fail_n(&mut m, t0, 5);
        assert_eq!(m.failures, 5);
        let t1 = t0 + Duration::from_secs(100);
        m.opened(t1);
        m.restart(t1 + RESET - MS);
        assert_eq!(m.failures, 5, "a short connection does not reset");
        let t2 = t1 + RESET;
        m.opened(t2);
        m.restart(t2 + RESET);
        assert_eq!(m.failures, 0);
    }

    #[test]
    fn without_backoff_every_wait_is_the_reconnection_time() {
        let mut m = machine(policy(Backoff::none()));
        let t0 = Instant::now();
        m.start(t0);
        let waits = fail_n(&mut m, t0, 10);
        assert_eq!(waits, vec![100 * MS; 10]);
    }

    #[test]
    fn waiting_reports_connecting_and_wakes_exactly_at_the_deadline() {
        let mut m = machine(policy(Backoff::none()));
        let t0 = Instant::now();
        m.start(t0);
        m.opened(t0);
        assert_eq!(m.failed(t0), Decision::ReconnectAfter(100 * MS));
        assert_eq!(m.ready_state(), ReadyState::Connecting);
        assert_eq!(m.on_timeout(t0 + 99 * MS), Wake::NotYet);
        assert_eq!(m.ready_state(), ReadyState::Connecting);
        assert_eq!(m.on_timeout(t0 + 100 * MS), Wake::Reconnect);
        // Now connecting, without an idle timeout: nothing to wake for.
        assert_eq!(m.deadline(), None);
        assert_eq!(m.on_timeout(t0 + 500 * MS), Wake::NotYet);
    }

    #[test]
    fn retry_field_replaces_the_reconnection_time() {
        let mut m = machine(policy(Backoff::none()));
        let t0 = Instant::now();
        m.start(t0);
        m.opened(t0);
        m.set_reconnection_time(25 * MS);
        assert_eq!(m.reconnection_time(), 25 * MS);
        assert_eq!(m.failed(t0), Decision::ReconnectAfter(25 * MS));
        // It stays for later connections too.
        assert_eq!(m.on_timeout(t0 + 25 * MS), Wake::Reconnect);
        assert_eq!(m.failed(t0 + 30 * MS), Decision::ReconnectAfter(25 * MS));
    }

    #[test]
    fn exponential_waits_stay_within_their_bounds() {
        let cap = 5_000 * MS;
        let mut m = machine(policy(Backoff::exponential(cap)));
        let t0 = Instant::now();
        m.start(t0);
        let waits = fail_n(&mut m, t0, 40);
        assert_eq!(waits.len(), 40);
        for (i, wait) in waits.iter().enumerate() {
            let n = i as u32 + 1;
            let ceiling = (100 * MS).saturating_mul(1 << n.min(31)).min(cap);
            assert!(
                *wait >= 100 * MS,
                "failure {n}: {wait:?} below the reconnection time"
            );
            assert!(*wait <= ceiling, "failure {n}: {wait:?} above {ceiling:?}");
        }
    }

    #[test]
    fn exponential_waits_are_jittered_and_grow() {
        let mut m = machine(policy(Backoff::exponential(Duration::from_secs(3600))));
        let t0 = Instant::now();
        m.start(t0);
        let waits = fail_n(&mut m, t0, 12);
        // Full jitter: the waits are not all equal, and later ones reach far beyond the
        // first ceiling (2 × 100 ms) — with this seed, deterministically.
        assert!(waits.windows(2).any(|w| w[0] != w[1]));
        assert!(waits[8..].iter().any(|w| *w > 200 * MS), "{waits:?}");
    }

    #[test]
    fn the_seed_makes_jitter_reproducible() {
        let run = || {
            let mut m = machine(policy(Backoff::default()));
            let t0 = Instant::now();
            m.start(t0);
            fail_n(&mut m, t0, 8)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_retry_above_the_cap_is_still_honoured() {
        let mut m = machine(policy(Backoff::exponential(50 * MS)));
        let t0 = Instant::now();
        m.start(t0);
        let waits = fail_n(&mut m, t0, 5);
        assert_eq!(waits, vec![100 * MS; 5]);
    }

    #[test]
    fn a_connection_open_for_the_reset_period_resets_the_backoff() {
        let mut m = machine(Policy {
            max_retries: Some(3),
            ..policy(Backoff::exponential(Duration::from_secs(3600)))
        });
        let t0 = Instant::now();
        m.start(t0);
        let waits = fail_n(&mut m, t0, 3);
        assert_eq!(waits.len(), 3);
        let opened = t0 + Duration::from_secs(100);
        m.opened(opened);
        // Open for exactly the reset period: the first failure waits within the first
        // ceiling again, and the retry budget is whole again.
        let Decision::ReconnectAfter(wait) = m.failed(opened + RESET) else {
            panic!("gave up although the connection had opened");
        };
        assert!((100 * MS..=200 * MS).contains(&wait), "{wait:?}");
    }

    /// Opens, then fails `after` later, `n` times; returns the waits.
    fn open_and_fail_n(
        m: &mut Reconnect<StdRng>,
        t0: Instant,
        after: Duration,
        n: usize,
    ) -> Vec<Duration> {
        let mut now = t0;
        m.start(now);
        let mut waits = Vec::new();
        for _ in 0..n {
            m.opened(now);
            assert_eq!(m.ready_state(), ReadyState::Open);
            now += after;
            let Decision::ReconnectAfter(wait) = m.failed(now) else {
                panic!("gave up although every connection opened");
            };
            waits.push(wait);
            now += wait;
            assert_eq!(m.on_timeout(now), Wake::Reconnect);
        }
        waits
    }

    #[test]
    fn retry_zero_then_close_is_backed_off_from_above_the_floor() {
        // The server says `retry: 0` and closes as soon as each connection opens.
        let floor = 500 * MS;
        let mut m = machine(Policy {
            min_retry: floor,
            ..policy(Backoff::default())
        });
        m.set_reconnection_time(Duration::ZERO);
        let waits = open_and_fail_n(&mut m, Instant::now(), Duration::ZERO, 12);
        for (i, wait) in waits.iter().enumerate() {
            let ceiling = floor
                .saturating_mul(1 << (i + 1))
                .min(Duration::from_secs(30));
            assert!(*wait >= floor, "wait {i}: {wait:?} below the floor");
            assert!(*wait <= ceiling, "wait {i}: {wait:?} above {ceiling:?}");
        }
        // The waits grow: the later ones go far beyond the floor, and twelve
        // reconnections take far longer than twelve floors (with this seed, certainly).
        assert!(waits[6..].iter().all(|w| *w > 2 * floor), "{waits:?}");
        let total: Duration = waits.iter().sum();
        assert!(total > Duration::from_secs(60), "{waits:?}");
    }

    #[test]
    fn retry_zero_without_backoff_waits_the_floor_every_time() {
        let mut m = machine(Policy {
            min_retry: 500 * MS,
            ..policy(Backoff::none())
        });
        m.set_reconnection_time(Duration::ZERO);
        let waits = open_and_fail_n(&mut m, Instant::now(), Duration::ZERO, 5);
        assert_eq!(waits, vec![500 * MS; 5]);
        // The floor raises the builder's own reconnection time too, and a longer
        // `retry:` is honoured.
        let mut m = machine(Policy {
            min_retry: 500 * MS,
            reconnection_time: 10 * MS,
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.start(t0);
        assert_eq!(m.failed(t0), Decision::ReconnectAfter(500 * MS));
        m.set_reconnection_time(2_000 * MS);
        assert_eq!(m.on_timeout(t0 + 500 * MS), Wake::Reconnect);
        assert_eq!(
            m.failed(t0 + 500 * MS),
            Decision::ReconnectAfter(2_000 * MS)
        );
    }

    #[test]
    fn short_connections_keep_the_backoff_growing_long_ones_reset_it() {
        let backoff = Backoff::exponential(Duration::from_secs(3600));
        // Connections of 59 s: each failure is one more in a row.
        let mut m = machine(policy(backoff));
        let waits = open_and_fail_n(&mut m, Instant::now(), RESET - MS, 10);
        assert!(waits[5..].iter().any(|w| *w > 200 * MS), "{waits:?}");
        assert_eq!(m.failures, 10);
        // Connections of 60 s: every failure is the first.
        let mut m = machine(policy(backoff));
        let waits = open_and_fail_n(&mut m, Instant::now(), RESET, 10);
        assert!(waits.iter().all(|w| *w <= 200 * MS), "{waits:?}");
        assert_eq!(m.failures, 1);
    }

    #[test]
    fn max_retries_gives_up_after_that_many_reconnections() {
        let mut m = machine(Policy {
            max_retries: Some(2),
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.start(t0);
        assert_eq!(m.failed(t0), Decision::ReconnectAfter(100 * MS));
        assert_eq!(m.on_timeout(t0 + 100 * MS), Wake::Reconnect);
        assert_eq!(m.failed(t0 + 100 * MS), Decision::ReconnectAfter(100 * MS));
        assert_eq!(m.on_timeout(t0 + 200 * MS), Wake::Reconnect);
        assert_eq!(m.failed(t0 + 200 * MS), Decision::GiveUp { retries: 2 });
        assert_eq!(m.ready_state(), ReadyState::Closed);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn zero_max_retries_gives_up_at_the_first_failure() {
        let mut m = machine(Policy {
            max_retries: Some(0),
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.start(t0);
        assert_eq!(m.failed(t0), Decision::GiveUp { retries: 0 });
        assert_eq!(m.ready_state(), ReadyState::Closed);
    }

    #[test]
    fn idle_timeout_while_connecting_and_while_open() {
        let mut m = machine(Policy {
            idle_timeout: Some(50 * MS),
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.start(t0);
        assert_eq!(m.deadline(), Some(t0 + 50 * MS));
        assert_eq!(m.on_timeout(t0 + 49 * MS), Wake::NotYet);
        m.opened(t0 + 10 * MS);
        assert_eq!(m.deadline(), Some(t0 + 60 * MS));
        // Bytes push the deadline; a timer armed for the old one finds nothing to do.
        m.activity(t0 + 40 * MS);
        assert_eq!(m.on_timeout(t0 + 60 * MS), Wake::NotYet);
        assert_eq!(m.deadline(), Some(t0 + 90 * MS));
        assert_eq!(m.on_timeout(t0 + 90 * MS), Wake::IdleTimeout);
        // Still open until the driver reports the failure.
        assert_eq!(m.ready_state(), ReadyState::Open);
        assert_eq!(m.failed(t0 + 90 * MS), Decision::ReconnectAfter(100 * MS));
        assert_eq!(m.deadline(), Some(t0 + 190 * MS));
        assert_eq!(m.on_timeout(t0 + 190 * MS), Wake::Reconnect);
        // The new request has its own idle deadline.
        assert_eq!(m.deadline(), Some(t0 + 240 * MS));
        assert_eq!(m.on_timeout(t0 + 240 * MS), Wake::IdleTimeout);
    }

    #[test]
    fn activity_outside_an_open_connection_changes_nothing() {
        let mut m = machine(Policy {
            idle_timeout: Some(50 * MS),
            ..policy(Backoff::none())
        });
        let t0 = Instant::now();
        m.start(t0);
        m.activity(t0 + 30 * MS);
        assert_eq!(m.deadline(), Some(t0 + 50 * MS));
    }

    #[test]
    fn close_is_final_from_every_phase() {
        let t0 = Instant::now();
        for step in 0..4 {
            let mut m = machine(Policy {
                idle_timeout: Some(50 * MS),
                ..policy(Backoff::none())
            });
            if step >= 1 {
                m.start(t0);
            }
            if step >= 2 {
                m.opened(t0);
            }
            if step >= 3 {
                let _ = m.failed(t0);
            }
            m.close();
            assert_eq!(m.ready_state(), ReadyState::Closed, "step {step}");
            assert_eq!(m.deadline(), None);
            assert_eq!(m.on_timeout(t0 + Duration::from_secs(9)), Wake::NotYet);
            m.start(t0);
            m.opened(t0);
            assert_eq!(m.ready_state(), ReadyState::Closed);
            assert!(matches!(m.failed(t0), Decision::GiveUp { .. }));
        }
    }

    #[test]
    fn opened_only_counts_while_connecting() {
        let mut m = machine(policy(Backoff::none()));
        let t0 = Instant::now();
        m.opened(t0);
        assert_eq!(m.ready_state(), ReadyState::Connecting, "not started yet");
        m.start(t0);
        let _ = m.failed(t0);
        m.opened(t0);
        assert_eq!(
            m.ready_state(),
            ReadyState::Connecting,
            "waiting, not connecting"
        );
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut m = machine(Policy {
            reconnection_time: Duration::MAX / 2,
            ..policy(Backoff::exponential(Duration::MAX))
        });
        let t0 = Instant::now();
        m.start(t0);
        for _ in 0..100 {
            let Decision::ReconnectAfter(wait) = m.failed(t0) else {
                panic!("no max retries");
            };
            assert!(wait >= Duration::MAX / 2);
            m.phase = Phase::Connecting { since: t0 };
        }
    }

    #[test]
    fn backoff_delay_uses_the_whole_span() {
        let b = Backoff::exponential(Duration::from_secs(10));
        let rt = Duration::from_secs(1);
        assert_eq!(b.delay(rt, 1, |_| Duration::ZERO), rt);
        assert_eq!(b.delay(rt, 1, |span| span), 2 * rt);
        assert_eq!(b.delay(rt, 2, |span| span), 4 * rt);
        assert_eq!(b.delay(rt, 3, |span| span), 8 * rt);
        assert_eq!(b.delay(rt, 4, |span| span), 10 * rt, "capped");
        assert_eq!(b.delay(rt, 60, |span| span), 10 * rt, "capped");
        // A generator that overshoots cannot push the wait past the ceiling.
        assert_eq!(b.delay(rt, 1, |_| Duration::MAX), 2 * rt);
        assert_eq!(Backoff::none().delay(rt, 9, |_| Duration::MAX), rt);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Step {
            Open,
            Activity,
            Fail,
            Retry(u64),
            Advance(u64),
            Restart,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                Just(Step::Open),
                Just(Step::Activity),
                Just(Step::Fail),
                Just(Step::Restart),
                (0u64..5_000).prop_map(Step::Retry),
                (0u64..20_000).prop_map(Step::Advance),
            ]
        }

        proptest! {
            /// Whatever happens in whatever order, against a model of the rules: waits
            /// are never below the reconnection time nor the floor, nor above the
            /// ceiling of the consecutive failures (which only a connection open for
            /// the reset period starts over), the retry budget is exact, closed is
            /// final, and wake-ups never come early.
            #[test]
            fn the_policy_keeps_its_rules(
                steps in proptest::collection::vec(step(), 1..60),
                cap_ms in proptest::option::of(1u64..10_000),
                max_retries in proptest::option::of(0u32..6),
                idle_ms in proptest::option::of(1u64..10_000),
                floor_ms in 0u64..1_000,
                reset_ms in 0u64..30_000,
                seed in any::<u64>(),
            ) {
                let backoff = cap_ms.map_or(Backoff::none(), |ms| Backoff::exponential(Duration::from_millis(ms)));
                let floor = Duration::from_millis(floor_ms);
                let reset = Duration::from_millis(reset_ms);
                let mut m = Reconnect::new(
                    Policy {
                        reconnection_time: 100 * MS,
                        backoff,
                        max_retries,
                        idle_timeout: idle_ms.map(Duration::from_millis),
                        min_retry: floor,
                        backoff_reset_after: reset,
                    },
                    StdRng::seed_from_u64(seed),
                );
                let mut now = Instant::now();
                m.start(now);
                // The model: attempts since the last open (the retry budget), failures
                // in a row (the backoff), and since when the connection is open.
                let mut failures = 0u32;
                let mut streak = 0u32;
                let mut open_since: Option<Instant> = None;
                let mut closed = false;
                for step in steps {
                    let before = m.ready_state();
                    match step {
                        Step::Open => {
                            // Ignored while waiting; from a request, it resets the count.
                            m.opened(now);
                            if m.ready_state() == ReadyState::Open && before != ReadyState::Open {
                                failures = 0;
                                open_since = Some(now);
                            }
                        }
                        Step::Activity => m.activity(now),
                        Step::Restart => {
                            // Not a failure: only a long connection resets the backoff.
                            if open_since.take().is_some_and(|since| now - since >= reset) {
                                streak = 0;
                            }
                            m.restart(now);
                            if !closed {
                                prop_assert_eq!(m.ready_state(), ReadyState::Connecting);
                                let idle = idle_ms.map(Duration::from_millis);
                                prop_assert_eq!(m.deadline(), idle.map(|t| now + t));
                            }
                        }
                        Step::Retry(ms) => m.set_reconnection_time(Duration::from_millis(ms)),
                        Step::Advance(ms) => {
                            let deadline = m.deadline();
                            now += Duration::from_millis(ms);
                            let wake = m.on_timeout(now);
                            if wake != Wake::NotYet {
                                prop_assert!(deadline.is_some_and(|d| now >= d));
                            }
                            if wake == Wake::IdleTimeout {
                                prop_assert!(idle_ms.is_some());
                            }
                        }
                        Step::Fail => {
                            let base = m.reconnection_time().max(floor);
                            if open_since.take().is_some_and(|since| now - since >= reset) {
                                streak = 0;
                            }
                            match m.failed(now) {
                                Decision::ReconnectAfter(wait) => {
                                    prop_assert!(!closed);
                                    failures += 1;
                                    streak += 1;
                                    prop_assert!(max_retries.is_none_or(|max| failures <= max));
                                    prop_assert!(wait >= base);
                                    match cap_ms {
                                        None => prop_assert_eq!(wait, base),
                                        Some(cap) => {
                                            let ceiling = base
                                                .saturating_mul(1 << streak.min(31))
                                                .min(Duration::from_millis(cap));
                                            prop_assert!(wait <= base.max(ceiling));
                                        }
                                    }
                                    prop_assert_eq!(m.deadline(), Some(now + wait));
                                }
                                Decision::GiveUp { retries } => {
                                    if !closed {
                                        prop_assert_eq!(Some(retries), max_retries);
                                        prop_assert_eq!(failures, retries);
                                    }
                                    closed = true;
                                }
                            }
                        }
                    }
                    prop_assert_eq!(m.ready_state() == ReadyState::Closed, closed);
                    if closed {
                        prop_assert_eq!(m.deadline(), None);
                    }
                }
            }
        }
    }
}
