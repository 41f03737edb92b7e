//! Carries the writer thread's answers into the runtime that opened the log.
//!
//! The writer thread is outside the runtime. A task it wakes directly (by
//! sending on the append's `oneshot`) goes to the runtime's global queue,
//! behind every task already there. Under fan-out that queue is long: each
//! update wakes one task per subscriber, more than a worker's local queue
//! holds, so the overflow (thousands of subscriber tasks) goes to the global
//! queue, and the publisher that waits for its append is woken behind all of
//! them (measured: 82 ms per append with 10,000 subscribers).
//!
//! So the writer does not wake the publishers itself. It leaves the answers
//! of a commit in an outbox and rings a bell: one byte on a Unix socket pair
//! whose other end is registered with the runtime's I/O driver. The workers
//! poll that driver every few dozen tasks even when busy, and a task the
//! driver wakes goes to the polling worker's own queue, next in line; that
//! task, the courier, then sends the answers from inside the runtime, so
//! each publisher is woken onto the worker's queue too. The bell rings once
//! per batch of answers the courier has not yet taken, not once per answer.
//!
//! Without a runtime I/O driver to register with (no Unix sockets on this
//! platform, or the socket could not be made), and once the courier's
//! runtime is gone, the writer answers directly, as before.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{LogError, Stored};

/// The answer to one append, and where it goes.
pub(super) type Answer = (
    oneshot::Sender<Result<Stored, LogError>>,
    Result<Stored, LogError>,
);

/// The writer's end: where it leaves answers.
pub(super) struct Courier {
    outbox: Arc<Mutex<Outbox>>,
    #[cfg(unix)]
    bell: Option<std::os::unix::net::UnixStream>,
}

#[derive(Default)]
struct Outbox {
    /// Whether the courier task runs and will take what is left here.
    open: bool,
    answers: Vec<Answer>,
    /// Whether the bell was rung since the courier last took the answers.
    rung: bool,
}

fn lock(outbox: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Courier {
    /// Starts the courier task on the current runtime. Falls back to
    /// answering directly when the bell cannot be made (logged).
    pub(super) fn start() -> Courier {
        let outbox = Arc::new(Mutex::new(Outbox::default()));
        #[cfg(unix)]
        {
            match bell_pair() {
                Ok((bell, ringing)) => {
                    lock(&outbox).open = true;
                    tokio::spawn(run(Arc::clone(&outbox), ringing));
                    return Courier {
                        outbox,
                        bell: Some(bell),
                    };
                }
                Err(error) => {
                    tracing::warn!(cause = %error, "no bell for the history's answers; the writer answers directly");
                }
            }
            Courier { outbox, bell: None }
        }
        #[cfg(not(unix))]
        Courier { outbox }
    }

    /// Answers appends: through the courier while it runs, else at once.
    pub(super) fn deliver(&self, answers: Vec<Answer>) {
        let ring = {
            let mut outbox = lock(&self.outbox);
            if !outbox.open {
                drop(outbox);
                answer(answers);
                return;
            }
            outbox.answers.extend(answers);
            !std::mem::replace(&mut outbox.rung, true)
        };
        if ring {
            self.ring();
        }
    }

    #[cfg(unix)]
    fn ring(&self) {
        use std::io::Write;
        if let Some(mut bell) = self.bell.as_ref() {
            // Would block only with bytes still unread: the courier wakes
            // anyway. Any other error means it is gone, and then it has
            // closed the outbox and answered what was in it, or will.
            let _ = bell.write(&[1]);
        }
    }

    #[cfg(not(unix))]
    fn ring(&self) {}
}

fn answer(answers: Vec<Answer>) {
    for (reply, result) in answers {
        // A caller that went away still had its update written.
        let _ = reply.send(result);
    }
}

#[cfg(unix)]
fn bell_pair() -> std::io::Result<(std::os::unix::net::UnixStream, tokio::net::UnixStream)> {
    let (bell, ringing) = std::os::unix::net::UnixStream::pair()?;
    bell.set_nonblocking(true)?;
    ringing.set_nonblocking(true)?;
    Ok((bell, tokio::net::UnixStream::from_std(ringing)?))
}

/// Closes the outbox when the courier task ends, also when the runtime
/// drops it, and answers what was left in it: from then on the writer
/// answers directly.
struct Closing(Arc<Mutex<Outbox>>);

impl Drop for Closing {
    fn drop(&mut self) {
        let answers = {
            let mut outbox = lock(&self.0);
            outbox.open = false;
            std::mem::take(&mut outbox.answers)
        };
        answer(answers);
    }
}

/// The courier task: takes the answers each time the bell rings, until the
/// writer's end of the bell is closed (the writer stopped).
#[cfg(unix)]
async fn run(outbox: Arc<Mutex<Outbox>>, ringing: tokio::net::UnixStream) {
    use tokio::io::AsyncReadExt;
    let _closing = Closing(Arc::clone(&outbox));
    let mut ringing = ringing;
    let mut rings = [0u8; 64];
    loop {
        let read = ringing.read(&mut rings).await;
        let answers = {
            let mut outbox = lock(&outbox);
            outbox.rung = false;
            std::mem::take(&mut outbox.answers)
        };
        answer(answers);
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(cause = %error, "the history's bell failed; the writer answers directly");
                return;
            }
        }
    }
}
