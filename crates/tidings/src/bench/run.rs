//! A run from start to summary: ramp the subscribers (here and in shard processes), let
//! them settle, publish (or hold, or fill history and resume), drain, report.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use serde::Serialize;
use tokio::time::Instant;

use super::http::UrlTemplate;
use super::procstat::{Sample, load_average, sample};
use super::publisher::{self, PubPlan, Schedule};
use super::shard::{self, Child, Progress};
use super::stats::{PubStats, Quantiles, SubStats, expected_events};
use super::subscriber::{self, Live, Shard, SubPlan};
use super::template::{Encoding, Template, Var};
use super::{Args, Preset, ResumeFrom, Settings, header_lines, source_addrs};

async fn resolve(url: &UrlTemplate) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(url.host_port())
        .await
        .with_context(|| format!("cannot resolve {}", url.authority))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("{} resolves to no address", url.authority))
}

/// The server's memory and CPU over the run.
#[derive(Debug, Default)]
struct ServerTrack {
    /// The CPU time of this process and its shards when the main phase starts and ends.
    generator_start: std::time::Duration,
    generator_end: std::time::Duration,
    before: Sample,
    ramped: Sample,
    peak_rss_kb: u64,
    publish_start: Sample,
    publish_end: Sample,
    end: Sample,
}

/// What the summary says about the server.
#[derive(Debug, Serialize)]
struct ServerSummary {
    pids: Vec<u32>,
    rss_before_kb: u64,
    rss_ramped_kb: u64,
    rss_peak_kb: u64,
    rss_end_kb: u64,
    /// RSS growth from before the ramp to after it, per connected subscriber.
    rss_per_subscriber_bytes: f64,
    /// CPU time while publishing (or holding).
    cpu_s: f64,
    /// The same, as a share of one core.
    cpu_percent: f64,
    cpu_total_s: f64,
}

#[derive(Debug, Serialize)]
struct SubSummary {
    asked: usize,
    connected: u64,
    failed: u64,
    disconnects: u64,
    ramp_s: f64,
}

#[derive(Debug, Serialize)]
struct PubSummary {
    connections: usize,
    asked_rate: f64,
    seconds: f64,
    sent: u64,
    acked: u64,
    errors: u64,
    missed_turns: u64,
    /// Acknowledged publishes per second.
    rate: f64,
    ack_ms: Quantiles,
}

#[derive(Debug, Serialize)]
struct EventSummary {
    expected: u64,
    received: u64,
    missing: u64,
    duplicates: u64,
    gaps: u64,
    foreign: u64,
}

#[derive(Debug, Serialize)]
struct ResumeSummary {
    from: ResumeFrom,
    fill_rate: f64,
    expected: u64,
    received: u64,
    seconds: f64,
    complete: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    tool: &'static str,
    version: &'static str,
    settings: Settings,
    started_at_unix: u64,
    load_average_start: [f64; 3],
    load_average_end: [f64; 3],
    subscribers: SubSummary,
    publish: Option<PubSummary>,
    events: EventSummary,
    latency_ms: Quantiles,
    /// The load generator's own CPU time (all its processes) in the main phase, and
    /// as a share of one core.
    generator_cpu_s: f64,
    generator_cpu_percent: f64,
    server: Option<ServerSummary>,
    resume: Option<ResumeSummary>,
    errors: Vec<String>,
    ok: bool,
}

/// The longest drain, however long events keep coming.
const MAX_DRAIN: Duration = Duration::from_secs(120);

/// Everything a phase needs.
struct Run {
    settings: Settings,
    sub_plan: Rc<SubPlan>,
    pub_plan: Rc<PubPlan>,
    shard: Rc<Shard>,
    children: Vec<Child>,
    child_views: Rc<RefCell<Vec<Rc<Cell<Progress>>>>>,
    pids: Vec<u32>,
    track: Rc<RefCell<ServerTrack>>,
    phase: Rc<Cell<&'static str>>,
    pub_stats: Rc<RefCell<PubStats>>,
}

impl Run {
    fn totals(&self) -> Progress {
        self.children
            .iter()
            .fold(Progress::of(&self.shard.live), |total, child| {
                total.add(child.progress.get())
            })
    }

    /// The CPU time of the load generator: this process and its shards.
    fn generator_cpu(&self) -> Duration {
        let mut pids = vec![std::process::id()];
        pids.extend(self.children.iter().filter_map(Child::pid));
        pids.iter()
            .filter_map(|&pid| sample(&[pid]).ok())
            .map(|s| s.cpu)
            .sum()
    }

    fn sample(&self) -> anyhow::Result<Sample> {
        if self.pids.is_empty() {
            return Ok(Sample::default());
        }
        let now = sample(&self.pids).map_err(|err| anyhow!("--server-pid: {err}"))?;
        let mut track = self.track.borrow_mut();
        track.peak_rss_kb = track.peak_rss_kb.max(now.rss_kb);
        Ok(now)
    }

    /// Runs publishers `first..first + connections` on `schedule` until it is over;
    /// returns how long it took. (A publisher's number keeps its sequence numbers apart
    /// from the others'.)
    async fn publish(&self, first: usize, connections: usize, schedule: Schedule) -> Duration {
        let schedule = Rc::new(schedule);
        let start = Instant::now();
        let tasks: Vec<_> = (first..first + connections)
            .map(|index| {
                tokio::task::spawn_local(publisher::run(
                    index,
                    self.pub_plan.clone(),
                    schedule.clone(),
                    self.pub_stats.clone(),
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        self.pub_stats.borrow_mut().missed_turns += schedule.missed.get();
        start.elapsed()
    }
}

/// Runs `tidings bench`: the coordinator, or a shard when `--shard` is given.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    let sub_url = UrlTemplate::parse(
        &settings.sub_url,
        &[Var::Topic, Var::TopicIndex, Var::Index],
    )
    .map_err(|err| anyhow!("--sub-url {err}"))?;
    let all = &[Var::Topic, Var::TopicIndex, Var::Index, Var::Data];
    let pub_url =
        UrlTemplate::parse(&settings.pub_url, all).map_err(|err| anyhow!("--pub-url {err}"))?;
    let topic = Template::parse(&args.topic, Encoding::Raw, &[Var::TopicIndex])
        .map_err(|err| anyhow!("--topic {err}"))?;
    let form = args
        .pub_content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded");
    let body = Template::parse(
        &args.pub_body,
        if form {
            Encoding::Percent
        } else {
            Encoding::Raw
        },
        all,
    )
    .map_err(|err| anyhow!("--pub-body {err}"))?;
    let sub_addr = resolve(&sub_url).await?;
    let token = args.publisher_token()?;
    let sub_plan = Rc::new(SubPlan {
        addr: sub_addr,
        authority: sub_url.authority.clone(),
        path: sub_url.path,
        topic: topic.clone(),
        topics: settings.topics,
        headers: header_lines(&args.sub_headers, args.sub_token.as_deref())?,
        last_event_id: None,
        sources: source_addrs(args.source_addrs.as_deref(), sub_addr.ip())?,
        connect_timeout: args.connect_timeout,
    });
    let ramp_time = if settings.ramp > 0.0 {
        settings.subscribers as f64 / settings.ramp
    } else {
        0.0
    };
    let ramp_limit =
        Duration::from_secs_f64(ramp_time) + args.connect_timeout + Duration::from_secs(30);
    let live = Arc::new(Live::default());
    let shard = Rc::new(Shard::new(live));

    if let Some(text) = &args.shard {
        let (k, n) = shard::parse(text)?;
        tokio::task::spawn_local(ramp(
            k,
            n,
            settings.subscribers,
            settings.ramp / n as f64,
            sub_plan,
            shard.clone(),
        ));
        let deadline = ramp_limit
            + args.settle
            + args.drain
            + Duration::from_secs_f64(settings.duration_s)
            + MAX_DRAIN
            + Duration::from_secs(120);
        shard::report(shard, deadline).await;
        return Ok(ExitCode::SUCCESS);
    }

    let pub_addr = resolve(&pub_url).await?;
    let pub_plan = Rc::new(PubPlan {
        addr: pub_addr,
        authority: pub_url.authority.clone(),
        path: pub_url.path,
        body,
        content_type: args.pub_content_type.clone(),
        headers: header_lines(&args.pub_headers, token.as_deref())?,
        topic,
        topics: settings.topics,
        size: settings.size,
        timeout: Duration::from_secs(30),
    });
    let started_at_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load_average_start = load_average();
    let mut run = Run {
        pub_stats: Rc::new(RefCell::new(PubStats::new(settings.topics))),
        settings,
        sub_plan,
        pub_plan,
        shard,
        children: Vec::new(),
        child_views: Rc::default(),
        pids: args.server_pids.clone(),
        track: Rc::default(),
        phase: Rc::new(Cell::new("ramp")),
    };
    let before = run.sample()?;
    run.track.borrow_mut().before = before;
    let progress = (!args.quiet && std::io::stderr().is_terminal())
        .then(|| tokio::task::spawn_local(progress_line(run_view(&run))));
    let sampler = (!run.pids.is_empty()).then(|| {
        let pids = run.pids.clone();
        let track = run.track.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(now) = sample(&pids) {
                    let mut track = track.borrow_mut();
                    track.peak_rss_kb = track.peak_rss_kb.max(now.rss_kb);
                }
            }
        })
    });

    let n = run.settings.processes;
    for k in 1..n {
        run.children.push(Child::spawn(k, n)?);
    }
    // The progress line started before the shards; it reads their counters from here.
    *run.child_views.borrow_mut() = run.children.iter().map(|c| c.progress.clone()).collect();

    // Ramp.
    let ramp_start = Instant::now();
    let resume = run.settings.preset == Preset::Resume;
    if !resume {
        tokio::task::spawn_local(ramp(
            0,
            n,
            run.settings.subscribers,
            run.settings.ramp / n as f64,
            run.sub_plan.clone(),
            run.shard.clone(),
        ));
        while (run.totals().settled as usize) < run.settings.subscribers
            && ramp_start.elapsed() < ramp_limit
            && !run.children.iter().any(Child::exited)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    run.phase.set("settle");
    tokio::time::sleep(args.settle).await;
    let ramped = run.sample()?;
    run.track.borrow_mut().ramped = ramped;

    let duration = Duration::from_secs_f64(run.settings.duration_s);
    let mut publish_seconds = 0.0;
    let mut resume_summary = None;
    let mut resume_stats = None;
    run.track.borrow_mut().generator_start = run.generator_cpu();
    let publish_start = run.sample()?;
    run.track.borrow_mut().publish_start = publish_start;
    let phase_start = Instant::now();
    if resume {
        run.phase.set("fill");
        let first = Schedule::new(0.0, Instant::now() + duration, 1);
        let mut fill = run.publish(run.settings.publishers, 1, first).await;
        let rest = run.settings.history.saturating_sub(1);
        let schedule = Schedule::new(run.settings.rate, Instant::now() + duration, rest);
        fill += run.publish(0, run.settings.publishers, schedule).await;
        publish_seconds = fill.as_secs_f64();
        let (acked, first_id) = {
            let stats = run.pub_stats.borrow();
            (stats.acked, stats.first_id.clone())
        };
        let expected = match args.resume_from {
            ResumeFrom::First => acked.saturating_sub(1),
            _ => acked,
        };
        let last_event_id = match args.resume_from {
            ResumeFrom::First => Some(first_id.unwrap_or_default()),
            ResumeFrom::Earliest => Some("earliest".to_owned()),
            ResumeFrom::None => None,
        };
        run.phase.set("resume");
        let plan = Rc::new(SubPlan {
            last_event_id,
            addr: run.sub_plan.addr,
            authority: run.sub_plan.authority.clone(),
            path: run.sub_plan.path.clone(),
            topic: run.sub_plan.topic.clone(),
            topics: run.sub_plan.topics,
            headers: run.sub_plan.headers.clone(),
            sources: Vec::new(),
            connect_timeout: run.sub_plan.connect_timeout,
        });
        let resumer = Rc::new(Shard::new(Arc::default()));
        resumer.goal.set(expected.max(1));
        let start = Instant::now();
        let task = tokio::task::spawn_local(subscriber::run(0, plan, resumer.clone()));
        let complete = tokio::time::timeout(duration, resumer.reached.notified())
            .await
            .is_ok();
        let seconds = start.elapsed().as_secs_f64();
        task.abort();
        let received = resumer.stats.borrow().events;
        resume_summary = Some(ResumeSummary {
            from: args.resume_from,
            fill_rate: acked as f64 / publish_seconds.max(1e-9),
            expected,
            received,
            seconds,
            complete,
        });
        resume_stats = Some(std::mem::take(&mut *resumer.stats.borrow_mut()));
    } else if run.settings.publishers > 0 {
        run.phase.set("publish");
        let schedule = Schedule::new(run.settings.rate, Instant::now() + duration, u64::MAX);
        publish_seconds = run
            .publish(0, run.settings.publishers, schedule)
            .await
            .as_secs_f64();
    } else {
        run.phase.set("hold");
        tokio::time::sleep(duration).await;
    }
    let phase_seconds = phase_start.elapsed().as_secs_f64();
    run.track.borrow_mut().generator_end = run.generator_cpu();
    let publish_end = run.sample()?;
    run.track.borrow_mut().publish_end = publish_end;

    // Drain: the last events may still be on their way.
    let expected = if resume {
        resume_summary.as_ref().map_or(0, |r| r.expected)
    } else {
        expected_events(
            &run.pub_stats.borrow().acked_per_topic,
            run.settings.subscribers,
        )
    };
    if !resume {
        run.phase.set("drain");
        // Waits while events keep coming: it ends `--drain` after the last one arrived
        // (a backlog still flowing is not counted as lost), and after two minutes at most.
        let drain_start = Instant::now();
        let mut last = (run.totals().events, Instant::now());
        while run.totals().events < expected
            && last.1.elapsed() < args.drain
            && drain_start.elapsed() < MAX_DRAIN.max(args.drain)
        {
            let now = run.totals().events;
            if now > last.0 {
                last = (now, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let end = run.sample()?;
    run.track.borrow_mut().end = end;
    if let Some(sampler) = sampler {
        sampler.abort();
    }

    // Collect.
    let mut subs = match resume_stats {
        Some(stats) => stats,
        None => std::mem::take(&mut *run.shard.stats.borrow_mut()),
    };
    for child in std::mem::take(&mut run.children) {
        match child.finish().await {
            Some(stats) => subs.merge(&stats),
            None => super::stats::sample_error(
                &mut subs.errors,
                "a shard process died before reporting".into(),
            ),
        }
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let summary = summarize(SummaryParts {
        run: &run,
        subs,
        expected,
        ramp_s,
        publish_seconds,
        phase_seconds,
        resume: resume_summary,
        started_at_unix,
        load_average_start,
    });
    print!("{}", text(&summary));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Starts subscribers `first`, `first + step`, … below `count`, `rate` per second.
async fn ramp(
    first: usize,
    step: usize,
    count: usize,
    rate: f64,
    plan: Rc<SubPlan>,
    shard: Rc<Shard>,
) {
    let start = Instant::now();
    for (started, index) in (first..count).step_by(step.max(1)).enumerate() {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(started as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        tokio::task::spawn_local(subscriber::run(index, plan.clone(), shard.clone()));
    }
}

struct SummaryParts<'a> {
    run: &'a Run,
    subs: SubStats,
    expected: u64,
    ramp_s: f64,
    publish_seconds: f64,
    phase_seconds: f64,
    resume: Option<ResumeSummary>,
    started_at_unix: u64,
    load_average_start: [f64; 3],
}

fn summarize(parts: SummaryParts<'_>) -> Summary {
    let SummaryParts {
        run,
        subs,
        expected,
        ramp_s,
        publish_seconds,
        phase_seconds,
        resume,
        started_at_unix,
        load_average_start,
    } = parts;
    let settings = &run.settings;
    let pubs = run.pub_stats.borrow();
    let publish = (settings.publishers > 0).then(|| PubSummary {
        connections: settings.publishers,
        asked_rate: settings.rate,
        seconds: round3(publish_seconds),
        sent: pubs.sent,
        acked: pubs.acked,
        errors: pubs.errors,
        missed_turns: pubs.missed_turns,
        rate: round3(pubs.acked as f64 / publish_seconds.max(1e-9)),
        ack_ms: Quantiles::of(&pubs.ack),
    });
    let track = run.track.borrow();
    let server = (!run.pids.is_empty()).then(|| {
        let cpu = track
            .publish_end
            .cpu
            .saturating_sub(track.publish_start.cpu)
            .as_secs_f64();
        ServerSummary {
            pids: run.pids.clone(),
            rss_before_kb: track.before.rss_kb,
            rss_ramped_kb: track.ramped.rss_kb,
            rss_peak_kb: track.peak_rss_kb,
            rss_end_kb: track.end.rss_kb,
            rss_per_subscriber_bytes: round3(
                (track.ramped.rss_kb as f64 - track.before.rss_kb as f64) * 1024.0
                    / subs.connected.max(1) as f64,
            ),
            cpu_s: round3(cpu),
            cpu_percent: round3(100.0 * cpu / phase_seconds.max(1e-9)),
            cpu_total_s: round3(track.end.cpu.as_secs_f64()),
        }
    });
    let generator_cpu = track
        .generator_end
        .saturating_sub(track.generator_start)
        .as_secs_f64();
    let mut errors = subs.errors.clone();
    for error in &pubs.errors_seen {
        super::stats::sample_error(&mut errors, error.clone());
    }
    let missing = expected.saturating_sub(subs.events.saturating_sub(subs.duplicates));
    let resume_ok = resume.as_ref().is_none_or(|r| r.complete);
    let ok = subs.failed == 0
        && subs.disconnects == 0
        && pubs.errors == 0
        && missing == 0
        && subs.duplicates == 0
        && (subs.gaps == 0 || resume.is_some())
        && resume_ok;
    Summary {
        tool: "tidings bench",
        version: env!("CARGO_PKG_VERSION"),
        settings: settings.clone(),
        started_at_unix,
        load_average_start,
        load_average_end: load_average(),
        subscribers: SubSummary {
            asked: settings.subscribers,
            connected: subs.connected,
            failed: subs.failed,
            disconnects: subs.disconnects,
            ramp_s: round3(ramp_s),
        },
        publish,
        events: EventSummary {
            expected,
            received: subs.events,
            missing,
            duplicates: subs.duplicates,
            gaps: subs.gaps,
            foreign: subs.foreign,
        },
        latency_ms: Quantiles::of(&subs.latency),
        generator_cpu_s: round3(generator_cpu),
        generator_cpu_percent: round3(100.0 * generator_cpu / phase_seconds.max(1e-9)),
        server,
        resume,
        errors,
        ok,
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn text(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let label = s
        .settings
        .label
        .as_deref()
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "tidings bench: preset {:?}{label}, {}",
        s.settings.preset, s.settings.sub_url
    );
    let sub = &s.subscribers;
    let _ = writeln!(
        out,
        "  subscribers  {} asked, {} connected, {} failed, {} disconnected; ramp {:.2} s over {} process(es)",
        sub.asked, sub.connected, sub.failed, sub.disconnects, sub.ramp_s, s.settings.processes
    );
    if let Some(p) = &s.publish {
        let asked = if p.asked_rate > 0.0 {
            format!("{}/s", p.asked_rate)
        } else {
            "max".into()
        };
        let _ = writeln!(
            out,
            "  publish      {} connections, asked {asked}, got {:.1}/s: {} acknowledged of {} sent, {} errors, {} turns missed",
            p.connections, p.rate, p.acked, p.sent, p.errors, p.missed_turns
        );
        let _ = writeln!(out, "  ack          {}", quantiles(&p.ack_ms));
    }
    let e = &s.events;
    let _ = writeln!(
        out,
        "  events       {} received of {} expected ({} missing), {} duplicates, {} gaps, {} foreign",
        e.received, e.expected, e.missing, e.duplicates, e.gaps, e.foreign
    );
    let _ = writeln!(out, "  latency      {}", quantiles(&s.latency_ms));
    if let Some(r) = &s.resume {
        let _ = writeln!(
            out,
            "  resume       {} of {} events in {:.3} s{} (history filled at {:.0}/s)",
            r.received,
            r.expected,
            r.seconds,
            if r.complete { "" } else { ", INCOMPLETE" },
            r.fill_rate
        );
    }
    if let Some(v) = &s.server {
        let _ = writeln!(
            out,
            "  server       RSS {} kB before, {} kB ramped ({:.0} B per subscriber), peak {} kB, end {} kB; CPU {:.2} s ({:.0}% of a core) in the main phase",
            v.rss_before_kb,
            v.rss_ramped_kb,
            v.rss_per_subscriber_bytes,
            v.rss_peak_kb,
            v.rss_end_kb,
            v.cpu_s,
            v.cpu_percent
        );
    }
    let _ = writeln!(
        out,
        "  generator    CPU {:.2} s ({:.0}% of a core) in the main phase",
        s.generator_cpu_s, s.generator_cpu_percent
    );
    for error in &s.errors {
        let _ = writeln!(out, "  error        {error}");
    }
    let l = s.load_average_start;
    let _ = writeln!(
        out,
        "  load average {:.2} {:.2} {:.2} at the start; {}",
        l[0],
        l[1],
        l[2],
        if s.ok { "OK" } else { "NOT OK" }
    );
    out
}

fn quantiles(q: &Quantiles) -> String {
    if q.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {:.3} ms, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3} ({} samples)",
        q.p50, q.p90, q.p99, q.p999, q.max, q.count
    )
}

/// What the progress line reads.
struct View {
    live: Arc<Live>,
    children: Rc<RefCell<Vec<Rc<Cell<Progress>>>>>,
    phase: Rc<Cell<&'static str>>,
    pub_stats: Rc<RefCell<PubStats>>,
    asked: usize,
}

fn run_view(run: &Run) -> View {
    View {
        live: run.shard.live.clone(),
        children: run.child_views.clone(),
        phase: run.phase.clone(),
        pub_stats: run.pub_stats.clone(),
        asked: run.settings.subscribers,
    }
}

async fn progress_line(view: View) {
    let start = Instant::now();
    let mut last = (Progress::default(), 0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let total = view
            .children
            .borrow()
            .iter()
            .fold(Progress::of(&view.live), |t, c| t.add(c.get()));
        let acked = view.pub_stats.borrow().acked;
        let now = Instant::now();
        let dt = (now - last.2).as_secs_f64().max(1e-9);
        let events_rate = (total.events - last.0.events) as f64 / dt;
        let pub_rate = (acked - last.1) as f64 / dt;
        eprint!(
            "\r\x1b[2K[{:>5.1}s {:<7}] subscribers {}/{}  events {} ({:.0}/s)  published {} ({:.0}/s)  errors {}",
            start.elapsed().as_secs_f64(),
            view.phase.get(),
            total.connected,
            view.asked,
            total.events,
            events_rate,
            acked,
            pub_rate,
            total.errors
        );
        last = (total, acked, now);
    }
}
