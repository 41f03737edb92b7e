//! Shard processes: when one process may not hold all the subscribers (its open-file
//! limit), the coordinator runs `tidings bench <same flags> --shard K/N` for K = 1..N-1.
//! Shard K holds subscribers K, K+N, K+2N… and ramps at 1/N of the rate.
//!
//! The protocol is lines: a shard prints `progress CONNECTED SETTLED EVENTS ERRORS`
//! every 200 ms and `result JSON` (its [`SubStatsWire`]) when the coordinator writes
//! `stop` to its stdin, or when its stdin closes (the coordinator died), or at its own
//! deadline, whichever comes first.

use std::cell::{Cell, RefCell};
use std::process::Stdio;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::stats::{SubStats, SubStatsWire};
use super::subscriber::{Live, Shard};

/// Counters a shard reports while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) connected: u64,
    pub(crate) settled: u64,
    pub(crate) events: u64,
    pub(crate) errors: u64,
}

impl Progress {
    pub(crate) fn of(live: &Live) -> Progress {
        Progress {
            connected: live.connected.load(Ordering::Relaxed),
            settled: live.settled.load(Ordering::Relaxed),
            events: live.events.load(Ordering::Relaxed),
            errors: live.errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(self, other: Progress) -> Progress {
        Progress {
            connected: self.connected + other.connected,
            settled: self.settled + other.settled,
            events: self.events + other.events,
            errors: self.errors + other.errors,
        }
    }

    fn line(&self) -> String {
        format!(
            "progress {} {} {} {}",
            self.connected, self.settled, self.events, self.errors
        )
    }

    fn parse(line: &str) -> Option<Progress> {
        let mut fields = line
            .strip_prefix("progress ")?
            .split(' ')
            .map(|f| f.parse().ok());
        Some(Progress {
            connected: fields.next()??,
            settled: fields.next()??,
            events: fields.next()??,
            errors: fields.next()??,
        })
    }
}

/// `K/N` of `--shard`.
pub(crate) fn parse(text: &str) -> anyhow::Result<(usize, usize)> {
    let (k, n) = text.split_once('/').context("--shard is K/N")?;
    let (k, n): (usize, usize) = (k.parse()?, n.parse()?);
    if k == 0 || k >= n {
        anyhow::bail!("--shard K/N needs 0 < K < N");
    }
    Ok((k, n))
}

/// A running shard process, as the coordinator sees it.
pub(crate) struct Child {
    process: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    pub(crate) progress: Rc<Cell<Progress>>,
    result: Rc<RefCell<Option<SubStats>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Child {
    /// Starts shard `k` of `n` with this process' own arguments.
    pub(crate) fn spawn(k: usize, n: usize) -> anyhow::Result<Child> {
        let exe =
            std::env::current_exe().context("cannot find the tidings binary to start shards")?;
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        args.push("--shard".into());
        args.push(format!("{k}/{n}").into());
        let mut process = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a shard process")?;
        let stdout = process.stdout.take().context("shard stdout")?;
        let progress = Rc::new(Cell::new(Progress::default()));
        let result = Rc::new(RefCell::new(None));
        let reader = tokio::task::spawn_local({
            let progress = progress.clone();
            let result = result.clone();
            async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(p) = Progress::parse(&line) {
                        progress.set(p);
                    } else if let Some(Ok(wire)) = line
                        .strip_prefix("result ")
                        .map(serde_json::from_str::<SubStatsWire>)
                    {
                        *result.borrow_mut() = Some(SubStats::from_wire(wire));
                    }
                }
            }
        });
        Ok(Child {
            stdin: process.stdin.take(),
            process,
            progress,
            result,
            reader,
        })
    }

    /// The shard's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Whether the shard's output has ended (it exited or died).
    pub(crate) fn exited(&self) -> bool {
        self.reader.is_finished()
    }

    /// Asks the shard to stop and returns what it counted (`None` if it died).
    pub(crate) async fn finish(mut self) -> Option<SubStats> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n").await;
            let _ = stdin.flush().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.reader).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.process.wait()).await;
        self.result.borrow_mut().take()
    }
}

/// The shard side: reports progress until told to stop (or `deadline`), then the result.
pub(crate) async fn report(shard: Rc<Shard>, deadline: Duration) {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let stop = async {
        loop {
            match stdin.next_line().await {
                Ok(Some(line)) if line.trim() == "stop" => break,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    };
    let ticks = async {
        let mut out = tokio::io::stdout();
        loop {
            let line = Progress::of(&shard.live).line() + "\n";
            let _ = out.write_all(line.as_bytes()).await;
            let _ = out.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = stop => {}
        () = ticks => {}
        () = tokio::time::sleep(deadline) => {}
    }
    let wire = shard.stats.borrow().to_wire();
    let line = format!(
        "result {}\n",
        serde_json::to_string(&wire).unwrap_or_default()
    );
    let mut out = tokio::io::stdout();
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip() {
        let p = Progress {
            connected: 1,
            settled: 2,
            events: 3,
            errors: 4,
        };
        assert_eq!(Progress::parse(&p.line()), Some(p));
        assert_eq!(Progress::parse("progress 1 2"), None);
        assert_eq!(p.add(p).events, 6);
        assert_eq!(parse("1/3").unwrap(), (1, 3));
        assert!(parse("0/3").is_err() && parse("3/3").is_err() && parse("x").is_err());
    }
}
