//! The README's first screen, run verbatim: its install, serve and second-terminal blocks
//! (marked `<!-- first-screen: NAME -->`) are extracted from README.md and run with bash
//! in a fresh directory, against a fresh `tidings serve`; the subscriber must receive the
//! update the publisher sends.
//!
//! Only `cargo install` and `cargo run` lines are changed: the built binary is first on
//! PATH instead. The README's 127.0.0.1:3000 is the default address; when something else
//! holds that port, the hub gets a free one through `TIDINGS_ADDR` and the README's
//! address is rewritten to it, nothing else.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository's README, read when the test runs (the packaged crate holds no
/// README of the repository, so it must not be needed to compile the tests).
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
const README_ADDR: &str = "127.0.0.1:3000";
/// How long any one step may take on a loaded machine.
const STEP: Duration = Duration::from_secs(60);

/// The README's code blocks, in order: the name of the `first-screen` mark before each
/// one (if any) and its lines.
fn code_blocks(readme: &str) -> Vec<(Option<String>, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut mark = None;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("<!-- first-screen: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        {
            mark = Some(name.to_owned());
        } else if line.starts_with("```") {
            let body = lines
                .by_ref()
                .take_while(|line| !line.starts_with("```"))
                .map(str::to_owned)
                .collect();
            blocks.push((mark.take(), body));
        } else if !line.trim().is_empty() {
            assert!(
                mark.is_none(),
                "a first-screen mark must come right before its code block: {line:?}"
            );
        }
    }
    blocks
}

/// The block's lines for bash: a `cargo install` line goes (the binary under test is on
/// PATH), a `cargo run … -- ARGS` line becomes `tidings ARGS`; the rest is verbatim.
fn for_bash(block: &[String]) -> Vec<String> {
    block
        .iter()
        .filter_map(|line| {
            if line.starts_with("cargo install ") {
                assert_eq!(
                    line.split('#').next().unwrap().trim(),
                    "cargo install --path crates/tidings",
                    "the README installs another binary than the one tested"
                );
                None
            } else if line.starts_with("cargo run ") {
                let (_, args) = line
                    .split_once(" -- ")
                    .expect("a `cargo run` line passes its arguments after --");
                Some(format!("tidings {args}"))
            } else {
                Some(line.clone())
            }
        })
        .collect()
}

/// A bash started in its own process group, killed with the group on drop.
struct Bash {
    child: Child,
}

impl Bash {
    fn spawn(dir: &Path, addr: Option<&str>) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_tidings")).parent().unwrap();
        let path = std::env::join_paths(
            std::iter::once(bin.to_owned())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let mut command = Command::new("bash");
        for (name, _) in std::env::vars() {
            if name.starts_with("TIDINGS_") {
                command.env_remove(name);
            }
        }
        if let Some(addr) = addr {
            command.env("TIDINGS_ADDR", addr);
        }
        command
            .env("PATH", path)
            .env("RUST_LOG", "warn")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        command
    }

    fn signal_group(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([signal, "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Bash {
    fn drop(&mut self) {
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// What a pipe brings, chunk by chunk, from a thread.
fn chunks(mut pipe: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            if tx
                .send(String::from_utf8_lossy(&buffer[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Reads from `rx` into `text` until `done(text)` (true) or `STEP` has passed (false).
fn read_until(rx: &mpsc::Receiver<String>, text: &mut String, done: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + STEP;
    while !done(text) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => text.push_str(&chunk),
            Err(_) => return false,
        }
    }
    true
}

/// The hub's `tidings_connections` gauge: open event streams.
fn event_streams(addr: &str) -> Option<u64> {
    let output = Command::new("curl")
        .args(["-sf", &format!("http://{addr}/metrics")])
        .output()
        .expect("run curl (the README needs it)");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("tidings_connections "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// Starts the serve block; `None` when the address was taken meanwhile.
fn start_hub(dir: &Path, serve: &[String], addr: Option<&str>) -> Option<(Bash, String)> {
    let mut child = Bash::spawn(dir, addr)
        .arg("-c")
        .arg(serve.join("\n"))
        .spawn()
        .expect("run bash");
    let rx = chunks(child.stdout.take().unwrap());
    let bash = Bash { child };
    let mut text = String::new();
    let deadline = Instant::now() + STEP;
    while !text.contains("tidings: demo and live console at ") {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => text.push_str(&chunk),
            // The hub exited: a port taken since it was found free.
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the hub did not start:\n{text}"),
        }
    }
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || rx.into_iter().for_each(drop));
    Some((bash, text))
}

#[test]
fn the_first_screen_works_pasted_line_by_line() {
    let readme = std::fs::read_to_string(README).expect("read the repository's README.md");
    let blocks = code_blocks(&readme);
    let marked: Vec<_> = blocks
        .iter()
        .filter_map(|(mark, _)| mark.as_deref())
        .collect();
    assert_eq!(marked, ["install", "serve", "second terminal"]);
    // The README's promise: after the install, the first two commands run the hub with
    // its embedded defaults and run every test, each in a block of its own.
    let first: Vec<_> = blocks
        .iter()
        .take(3)
        .map(|(_, lines)| lines.clone())
        .collect();
    assert_eq!(first[0], ["cargo install --path crates/tidings"]);
    assert_eq!(first[1], ["tidings serve"]);
    assert_eq!(first[2], ["scripts/test.sh"]);
    let block = |name: &str| {
        let (_, lines) = blocks
            .iter()
            .find(|(mark, _)| mark.as_deref() == Some(name))
            .unwrap();
        for_bash(lines)
    };
    // The binary's own README shows the same second terminal.
    let crate_readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read crates/tidings/README.md");
    let same: Vec<_> = code_blocks(&crate_readme)
        .into_iter()
        .filter(|(mark, _)| mark.as_deref() == Some("second terminal"))
        .map(|(_, lines)| lines)
        .collect();
    assert_eq!(same, [block("second terminal")], "crates/tidings/README.md");
    let install = block("install");
    assert!(
        install.is_empty(),
        "only `cargo install` lines: {install:?}"
    );
    let serve = block("serve");

    let dir = tempfile::tempdir().unwrap();
    let started = if std::net::TcpListener::bind(README_ADDR).is_ok() {
        start_hub(dir.path(), &serve, None).map(|hub| (hub, README_ADDR.to_owned()))
    } else {
        None
    };
    let ((hub, printed), addr) = started.unwrap_or_else(|| {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        let hub = start_hub(dir.path(), &serve, Some(&addr)).expect("the hub did not start");
        (hub, addr)
    });
    assert!(
        printed.contains(&format!(
            "tidings: hub listening on http://{addr}/.well-known/mercure"
        )),
        "{printed}"
    );
    let token_file = dir.path().join("tidings.token");
    assert!(token_file.exists(), "{printed}");

    // curl's progress meters (stderr is no terminal here) go to a file, shown on failure.
    let errors = dir.path().join("second-terminal.stderr");
    let mut terminal = Bash::spawn(dir.path(), None)
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .expect("run bash");
    let mut stdin = terminal.stdin.take().unwrap();
    let rx = chunks(terminal.stdout.take().unwrap());
    let mut terminal = Bash { child: terminal };
    for line in block("second terminal") {
        let line = line.replace(README_ADDR, &addr);
        let before = event_streams(&addr).expect("the hub's /metrics");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        // A person waits for a backgrounded subscriber to be connected before the next
        // line; so does the test, on the hub's gauge of open streams.
        if line.trim_end().ends_with('&') && !line.trim_end().ends_with("&&") {
            let deadline = Instant::now() + STEP;
            while event_streams(&addr).is_none_or(|now| now <= before) {
                assert!(Instant::now() < deadline, "the subscriber did not connect");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(stdin);
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = terminal.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second terminal's lines hang"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let errors = std::fs::read_to_string(&errors).unwrap_or_default();
    assert!(status.success(), "{status:?}:\n{errors}");

    // The subscriber (still running in the background) prints the update, and the
    // publisher printed its id, with no end of line: the two may run into each other.
    let event_id = |text: &str| {
        let (_, rest) = text.split_once("id: ")?;
        Some(rest.lines().next()?.to_owned())
    };
    let mut text = String::new();
    let received = read_until(&rx, &mut text, |text| {
        text.contains("data: {\"title\":\"Dune\"}\n")
            && event_id(text).is_some_and(|id| text.matches(&id).count() >= 2)
    });
    assert!(
        received,
        "no update after {STEP:?}; the terminal printed:\n{text}\n{errors}"
    );
    let id = event_id(&text).unwrap();
    assert!(id.starts_with("urn:uuid:"), "{text}\n{errors}");
    assert_eq!(text.matches(&id).count(), 2, "{text}\n{errors}");
    terminal.signal_group("-KILL");

    // Ctrl-C (SIGINT to the foreground group) stops the hub, which removes its token.
    hub.signal_group("-INT");
    let deadline = Instant::now() + STEP;
    let mut hub = hub;
    while hub.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the hub did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!token_file.exists(), "the token file outlived the hub");
}
