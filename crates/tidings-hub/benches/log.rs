#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn.

//! The durable log on its own, no HTTP: appends per second with 8 and 64
//! concurrent appenders (each waits for its append to be durable before the
//! next, as a publisher does), and the resume of 100,000 updates read back
//! in the batches a reconnecting subscriber's replay asks for: from the
//! log's tail in memory (the recent history a reconnecting subscriber
//! usually asks for), and from the file (just reopened, so the tail is
//! empty).
//!
//! ```text
//! cargo bench -p tidings-hub --bench log
//! TIDINGS_BENCH_DIR=/some/disk cargo bench -p tidings-hub --bench log   # another disk's fsync
//! ```
//!
//! Each append carries a 200-byte payload and no id, so the log generates
//! one, as it does for most publishes. Retention is the default (100,000
//! updates), so the appends prune as they go once the log is full.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tidings_hub::log::{Cursor, Log, Retention, Update};

/// What the hub's replay asks for per read (`stream::REPLAY_BATCH`).
const REPLAY_BATCH: usize = 256;
const RESUME_EVENTS: u64 = 100_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn dir() -> tempfile::TempDir {
    match std::env::var_os("TIDINGS_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory")
}

fn update(n: u64) -> Update {
    Update::builder("https://example.com/bench")
        .data(format!("{n:0>200}"))
        .build()
}

/// Appends `total` updates from `appenders` tasks at once; returns how long
/// that took.
async fn append_concurrently(log: &Log, appenders: u64, total: u64) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|task| {
            let log = log.clone();
            let count = total / appenders + u64::from(task < total % appenders);
            tokio::spawn(async move {
                for n in 0..count {
                    log.append(update(n)).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("an appender");
    }
    started.elapsed()
}

fn appends(c: &mut Criterion) {
    let rt = runtime();
    let dir = dir();
    let mut group = c.benchmark_group("log/append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for appenders in [8u64, 64] {
        let path = dir.path().join(format!("append-{appenders}.db"));
        let log = rt
            .block_on(Log::open(&path, Retention::default()))
            .expect("open");
        // Full already, so that every commit prunes, as in a hub that has
        // run for a while.
        rt.block_on(append_concurrently(&log, 256, RESUME_EVENTS));
        let before = log.stats();
        group.bench_function(format!("concurrency/{appenders}"), |b| {
            b.iter_custom(|iters| rt.block_on(append_concurrently(&log, appenders, iters)));
        });
        let after = log.stats();
        eprintln!(
            "concurrency {appenders}: {:.2} appends per commit",
            (after.appended - before.appended) as f64
                / (after.commits - before.commits).max(1) as f64
        );
        rt.block_on(log.close());
    }
    group.finish();
}

async fn resume(log: &Log, batch: usize) -> u64 {
    let mut cursor = Cursor::Earliest;
    let mut read = 0;
    loop {
        let updates = log.read_after(cursor, batch).await.expect("read");
        read += updates.len() as u64;
        match updates.last() {
            Some(last) if updates.len() == batch => cursor = Cursor::Position(last.position),
            _ => break,
        }
        black_box(&updates);
    }
    read
}

fn resumes(c: &mut Criterion) {
    let rt = runtime();
    let dir = dir();
    let log = rt
        .block_on(Log::open(
            dir.path().join("resume.db"),
            Retention::default(),
        ))
        .expect("open");
    rt.block_on(append_concurrently(&log, 256, RESUME_EVENTS));
    let mut group = c.benchmark_group("log/resume");
    group.throughput(Throughput::Elements(RESUME_EVENTS));
    group.sample_size(10);
    for batch in [REPLAY_BATCH, 4096] {
        group.bench_function(format!("100k/batch-{batch}"), |b| {
            b.iter(|| {
                let read = rt.block_on(resume(&log, batch));
                assert_eq!(read, RESUME_EVENTS);
            });
        });
    }
    // Reopened, the log's tail of recent updates in memory is empty: this
    // is the read from the file itself.
    rt.block_on(log.close());
    let log = rt
        .block_on(Log::open(
            dir.path().join("resume.db"),
            Retention::default(),
        ))
        .expect("reopen");
    group.bench_function(format!("100k-from-file/batch-{REPLAY_BATCH}"), |b| {
        b.iter(|| {
            let read = rt.block_on(resume(&log, REPLAY_BATCH));
            assert_eq!(read, RESUME_EVENTS);
        });
    });
    group.finish();
    rt.block_on(log.close());
}

criterion::criterion_group!(benches, appends, resumes);
criterion::criterion_main!(benches);
