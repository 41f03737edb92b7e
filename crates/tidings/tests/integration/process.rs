//! Runs the `tidings` binary built by cargo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const KEY: &str = "process-test secret, long enough for HS256";

pub(crate) fn tidings() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    // The tests decide every setting; none may leak in from the environment.
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

pub(crate) fn run(args: &[&str]) -> Output {
    tidings().args(args).output().expect("run tidings")
}

/// A `tidings serve` process and what it printed.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) stdout: Vec<String>,
}

impl Server {
    /// Starts `tidings serve --addr 127.0.0.1:0 <args>` (no `--addr` of its own when
    /// `args` has one) and waits until it listens.
    pub(crate) fn start(args: &[&str], db: Option<&Path>) -> Server {
        let mut command = tidings();
        command.arg("serve");
        if !args.contains(&"--addr") {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        command.args(args);
        if let Some(db) = db {
            command.arg("--db").arg(db);
        }
        Server::spawn(command)
    }

    /// Like [`Server::start`] without a history file, with these environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = tidings();
        command.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
        command.envs(env.iter().copied());
        Server::spawn(command)
    }

    fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tidings serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("tidings serve did not start");
            lines.push(line.clone());
            if let Some(url) = line.strip_prefix("tidings: hub listening on ") {
                break url.to_owned();
            }
        };
        // The getting-started text follows at once when a key was generated.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        Server {
            child,
            url,
            stdout: lines,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
