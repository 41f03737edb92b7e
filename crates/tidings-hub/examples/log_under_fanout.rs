//! Durable appends while a fan-out keeps the runtime busy: how long a
//! publisher waits for its append when every update wakes many subscriber
//! tasks.
//!
//! A dispatch task hands each appended update to every subscriber's queue,
//! as the hub's fan-out does, and each subscriber task spends a little CPU
//! on it (the encoding and the write it would do). Publishers append at a
//! set total rate (0: as fast as they can), each append and its hand-over to
//! the dispatch in a task of its own as in the hub, and measure each round
//! trip, from the call to the answer in the publisher's task.
//!
//! ```text
//! cargo run --release -p tidings-hub --example log_under_fanout -- \
//!     [subscribers=10000] [rate/s=100] [seconds=10] [publishers=4] [file|memory] [directory] [work=1000] [history=100000]
//! ```
//!
//! `history` is the retention's count: a smaller one makes the appends
//! prune as they go, as in a hub whose history is full.
//!
//! `work` is how many rounds of a multiply-add each subscriber spends on
//! each update (1,000: about 1 µs here, about the hub's own cost per
//! delivery).
//!
//! The directory (default: a fresh one under the system's temporary
//! directory) decides the disk; on a tmpfs (`/dev/shm`) `fsync` costs
//! nothing, which leaves what the scheduling costs.

use std::time::{Duration, Instant};

use tidings_hub::log::{Log, Retention, Stored, Update};
use tokio::sync::mpsc;

fn arg<T: std::str::FromStr>(args: &[String], n: usize, default: T) -> T {
    args.get(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let subscribers: usize = arg(&args, 0, 10_000);
    let rate: f64 = arg(&args, 1, 100.0);
    let seconds: f64 = arg(&args, 2, 10.0);
    let publishers: usize = arg(&args, 3, 4);
    let backend: String = arg(&args, 4, "file".to_owned());
    let dir = match args.get(5) {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let work: u64 = arg(&args, 6, 1000);
    let history: u64 = arg(&args, 7, 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(Setup {
        subscribers,
        rate,
        seconds,
        publishers,
        backend,
        dir: dir.path().to_path_buf(),
        work,
        history,
    }))
}

/// What the command line asked for.
struct Setup {
    subscribers: usize,
    rate: f64,
    seconds: f64,
    publishers: usize,
    backend: String,
    dir: std::path::PathBuf,
    work: u64,
    history: u64,
}

async fn run(setup: Setup) -> Result<(), Box<dyn std::error::Error>> {
    let Setup {
        subscribers,
        rate,
        seconds,
        publishers,
        backend,
        dir,
        work,
        history,
    } = setup;
    let backend = backend.as_str();
    let retention = Retention::default().with_max_updates(Some(history));
    let log = match backend {
        "memory" => Log::memory(retention),
        _ => Log::open(dir.join("history.db"), retention).await?,
    };
    let mut queues = Vec::with_capacity(subscribers);
    let mut delivered = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let (tx, mut rx) = mpsc::channel::<Stored>(1024);
        queues.push(tx);
        delivered.push(tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(stored) = rx.recv().await {
                // About what encoding and writing one event costs.
                let mut hash = stored.position;
                for round in 0..work {
                    hash = std::hint::black_box(hash.wrapping_mul(31).wrapping_add(round));
                }
                std::hint::black_box(hash);
                n += 1;
            }
            n
        }));
    }
    let (dispatch_tx, mut dispatch_rx) = mpsc::channel::<Stored>(4096);
    let dispatch = tokio::spawn(async move {
        while let Some(stored) = dispatch_rx.recv().await {
            for queue in &queues {
                let _ = queue.try_send(stored.clone());
            }
        }
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(publishers as f64 / rate));
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let log = log.clone();
            let dispatch_tx = dispatch_tx.clone();
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut next = tokio::time::Instant::now();
                while Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next).await;
                        next += interval;
                    }
                    let asked = Instant::now();
                    let update = Update::builder("/bench").data("x".repeat(100)).build();
                    // As the hub does it: the append and the hand-over to
                    // the dispatch in a task of their own, awaited by the
                    // request's task.
                    let (log, dispatch_tx) = (log.clone(), dispatch_tx.clone());
                    tokio::spawn(async move {
                        let stored = log.append(update).await.expect("append");
                        let _ = dispatch_tx.send(stored).await;
                    })
                    .await
                    .expect("the append task");
                    waits.push(asked.elapsed());
                }
                waits
            })
        })
        .collect();
    drop(dispatch_tx);
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    dispatch.await?;
    let mut total = 0;
    for task in delivered {
        total += task.await?;
    }
    waits.sort();
    let at = |q: f64| waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)];
    let stats = log.stats();
    println!(
        "{backend}: {subscribers} subscribers, {publishers} publishers, asked {rate}/s: \
         {:.1} appends/s, round trip p50 {:.2?} p99 {:.2?} max {:.2?}, \
         {:.2} appends/commit, {total} deliveries",
        waits.len() as f64 / elapsed,
        at(0.5),
        at(0.99),
        waits[waits.len() - 1],
        stats.appended as f64 / stats.commits.max(1) as f64,
    );
    log.close().await;
    Ok(())
}
