//! Measures the file log's group commit: appends per second and appends per
//! `fsync` with 1, 16 and 256 concurrent publishers, and the number of
//! commits 1,000 simultaneous appends take.
//!
//! ```text
//! cargo run --release -p tidings-hub --example log_throughput [seconds per run] [directory]
//! ```
//!
//! The directory (default: a fresh one under the system's temporary
//! directory) decides which disk, and so which `fsync`, is measured.

use std::time::{Duration, Instant};

use tidings_hub::log::{Log, Retention, Update};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(Ok(3.0), |s| s.parse())?;
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!("history file in {}", dir.path().display());
    println!("publishers  appends/s  commits  appends/commit  mean latency");
    for (run, publishers) in [1usize, 16, 256].into_iter().enumerate() {
        let log = Log::open(
            dir.path().join(format!("run{run}.db")),
            Retention::default(),
        )
        .await?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..publishers)
            .map(|publisher| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let update =
                            Update::new(format!("p{publisher}-{n}"), "/bench", "x".repeat(200));
                        log.append(update).await?;
                        n += 1;
                    }
                    Ok::<_, tidings_hub::log::LogError>(n)
                })
            })
            .collect();
        let mut appends = 0;
        for task in tasks {
            appends += task.await??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let stats = log.stats();
        println!(
            "{publishers:>10}  {:>9.0}  {:>7}  {:>14.1}  {:>9.2} ms",
            appends as f64 / elapsed,
            stats.commits,
            stats.appended as f64 / stats.commits.max(1) as f64,
            elapsed * 1000.0 * publishers as f64 / appends.max(1) as f64,
        );
        log.close().await;
    }

    let log = Log::open(dir.path().join("burst.db"), Retention::default()).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(Update::new(format!("b{n}"), "/bench", "x"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let stats = log.stats();
    println!(
        "1000 simultaneous appends: {} commits, {:.1} ms",
        stats.commits,
        started.elapsed().as_secs_f64() * 1000.0
    );
    log.close().await;
    Ok(())
}
