//! `tidings bench` against a real hub on 127.0.0.1:0: a few subscribers, two
//! publishers for a couple of seconds, and the JSON summary checked for what a load
//! generator must get right (every update delivered to every subscriber, nothing
//! refused). No performance figure is asserted: those go to docs/BENCHMARKS.md.

use serde_json::Value;

use crate::process::{KEY, Server, tidings};

fn bench(server: &Server, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let hub = server.url.trim_end_matches("/.well-known/mercure");
    let output = tidings()
        .args([
            "bench",
            "--hub",
            hub,
            "--jwt-key",
            KEY,
            "--quiet",
            "--settle",
            "200ms",
        ])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tidings bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tidings bench failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("events "), "{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON summary");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn fanout_delivers_every_update_to_every_subscriber() {
    let server = Server::start(&["--jwt-key", KEY, "--no-history", "--no-demo"], None);
    let pid = server.child.id().to_string();
    let summary = bench(
        &server,
        &[
            "--preset",
            "fanout",
            "--subscribers",
            "5",
            "--topics",
            "2",
            "--publishers",
            "2",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--ramp",
            "100",
            "--server-pid",
            &pid,
        ],
    );
    let acked = summary["publish"]["acked"].as_u64().unwrap();
    assert!(acked > 0, "{summary:#}");
    assert_eq!(summary["publish"]["errors"], 0, "{summary:#}");
    assert_eq!(summary["subscribers"]["connected"], 5, "{summary:#}");
    assert_eq!(summary["subscribers"]["failed"], 0, "{summary:#}");
    // Subscribers 0, 2 and 4 are on topic 0, 1 and 3 on topic 1; publishes alternate.
    let per_topic = summary["events"]["expected"].as_u64().unwrap();
    assert!(
        per_topic >= acked * 2 && per_topic <= acked * 3,
        "{summary:#}"
    );
    assert_eq!(
        summary["events"]["received"], summary["events"]["expected"],
        "{summary:#}"
    );
    assert_eq!(summary["events"]["duplicates"], 0, "{summary:#}");
    assert_eq!(summary["events"]["gaps"], 0, "{summary:#}");
    assert_eq!(
        summary["latency_ms"]["count"], summary["events"]["received"],
        "{summary:#}"
    );
    assert!(
        summary["server"]["rss_end_kb"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert_eq!(summary["errors"], Value::Array(Vec::new()), "{summary:#}");
    assert_eq!(summary["ok"], true, "{summary:#}");
}

#[test]
fn resume_replays_the_history_it_filled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let server = Server::start(&["--jwt-key", KEY, "--no-demo"], Some(&db));
    let summary = bench(
        &server,
        &[
            "--preset",
            "resume",
            "--history",
            "200",
            "--publishers",
            "4",
            "--duration",
            "30s",
        ],
    );
    assert_eq!(summary["publish"]["acked"], 200, "{summary:#}");
    let resume = &summary["resume"];
    assert_eq!(resume["expected"], 199, "{summary:#}");
    assert_eq!(resume["received"], 199, "{summary:#}");
    assert_eq!(resume["complete"], true, "{summary:#}");
    assert_eq!(summary["ok"], true, "{summary:#}");
}
