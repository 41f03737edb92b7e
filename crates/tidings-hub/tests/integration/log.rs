//! The file log across processes: what `append` acknowledged survives the
//! process being killed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tidings_hub::log::{Cursor, Log, Retention, Update};

/// Where the child process writes; set by the parent test only.
const CRASH_FILE: &str = "TIDINGS_LOG_CRASH_FILE";
/// Acknowledgements the parent waits for before killing the child.
const ACKS_BEFORE_KILL: usize = 300;

/// Runs [`crash_child`] in a child process, kills it with SIGKILL while it is
/// appending from many tasks, reopens the file and checks that every append
/// the child saw acknowledged is there, at the position it was given.
#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["log::crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CRASH_FILE, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (id, position) = ack.split_once(' ').unwrap();
        acked.push((id.to_owned(), position.parse::<u64>().unwrap()));
        if acked.len() == ACKS_BEFORE_KILL && !killed {
            child.kill().unwrap(); // SIGKILL: no destructor, no flush
            killed = true;
        }
    }
    // The lines still in the pipe were printed before the kill: they count.
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child stopped by itself after {} acks: {status}",
        acked.len()
    );
    assert!(acked.len() >= ACKS_BEFORE_KILL);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = Log::open(&path, Retention::default()).await.unwrap();
        for (id, position) in &acked {
            assert_eq!(
                log.position_of(id).await.unwrap(),
                Some(*position),
                "acknowledged {id} at {position} is lost"
            );
        }
        let all = log.read_after(Cursor::Earliest, usize::MAX).await.unwrap();
        assert!(
            all.windows(2).all(|w| w[0].position < w[1].position),
            "positions are not ascending"
        );
        let in_log: HashSet<_> = all.iter().map(|s| s.update.id.as_str()).collect();
        assert!(acked.iter().all(|(id, _)| in_log.contains(id.as_str())));
        let last = all.last().unwrap().position;
        assert_eq!(log.last_position(), last);
        assert_eq!(
            log.append(Update::new("after", "/t", "x"))
                .await
                .unwrap()
                .position,
            last + 1
        );
        log.close().await;
    });
}

/// The child of [`acknowledged_appends_survive_kill_9`]: appends from 32
/// tasks and prints each acknowledged id with its position until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_appends_survive_kill_9, which runs it"]
async fn crash_child() {
    let path = std::env::var_os(CRASH_FILE).expect("run by acknowledged_appends_survive_kill_9");
    let log = Log::open(path, Retention::default()).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                // Bounded, so that an orphaned child ends by itself.
                for n in 0..2_000 {
                    let id = format!("t{task}-{n}");
                    let stored = log
                        .append(Update::new(id.clone(), "/crash", "x".repeat(100)))
                        .await
                        .unwrap();
                    println!("ACK {id} {}", stored.position);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
