//! One subscriber: a raw TCP connection, a hand-written `GET`, and the event stream
//! read into the process' one scratch buffer.
//!
//! A subscriber is a task holding its socket, a [`Dechunker`], a [`Scanner`] and the
//! last sequence number per publisher: a few hundred bytes. It owns no read buffer:
//! it waits with `readable()` and reads with `try_read` into the shared scratch, which
//! works because the runtime has one thread and nothing awaits while it is borrowed.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::http::{Dechunker, Head, MAX_HEAD, parse_head};
use super::scan::{Scanned, Scanner};
use super::stats::{SubStats, record, sample_error};
use super::template::{Template, Values};

/// The highest publisher number a payload may carry (a bound on per-subscriber state).
const MAX_PUBLISHERS: u32 = 4096;

/// What every subscriber of a process shares: where and how to connect.
#[derive(Debug)]
pub(crate) struct SubPlan {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: String,
    pub(crate) path: Template,
    /// The topic name template (`{t}`).
    pub(crate) topic: Template,
    pub(crate) topics: usize,
    /// Extra header lines, each ending in CRLF.
    pub(crate) headers: String,
    /// Sent as `Last-Event-ID`.
    pub(crate) last_event_id: Option<String>,
    /// Source addresses to spread over (bind before connect), if any.
    pub(crate) sources: Vec<Ipv4Addr>,
    /// How long connecting and the response head may take.
    pub(crate) connect_timeout: Duration,
}

impl SubPlan {
    /// The request of subscriber `index`.
    fn request(&self, index: usize) -> String {
        let topic_index = index % self.topics.max(1);
        let topic = self.topic.expand(&Values {
            topic_index,
            index,
            ..Values::default()
        });
        let mut request = String::with_capacity(256);
        request.push_str("GET ");
        self.path.expand_into(
            &Values {
                topic: &topic,
                topic_index,
                index,
                data: "",
            },
            &mut request,
        );
        request.push_str(" HTTP/1.1\r\nHost: ");
        request.push_str(&self.authority);
        request.push_str("\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n");
        if let Some(id) = &self.last_event_id {
            request.push_str("Last-Event-ID: ");
            request.push_str(id);
            request.push_str("\r\n");
        }
        request.push_str(&self.headers);
        request.push_str("\r\n");
        request
    }
}

/// Counters other tasks and the progress line read while the run goes on.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) connected: AtomicU64,
    /// Subscribers that connected or failed: the ramp is over when all have.
    pub(crate) settled: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What the subscribers of one process share.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) scratch: RefCell<Vec<u8>>,
    pub(crate) stats: RefCell<SubStats>,
    pub(crate) live: Arc<Live>,
    /// When `goal` events have arrived, the time is noted and `reached` notified
    /// (the resume scenario).
    pub(crate) goal: Cell<u64>,
    pub(crate) reached: tokio::sync::Notify,
}

impl Shard {
    pub(crate) fn new(live: Arc<Live>) -> Shard {
        Shard {
            scratch: RefCell::new(vec![0; 256 * 1024]),
            stats: RefCell::new(SubStats::default()),
            live,
            goal: Cell::new(u64::MAX),
            reached: tokio::sync::Notify::new(),
        }
    }

    fn fail(&self, message: String, connected: bool) {
        let mut stats = self.stats.borrow_mut();
        if connected {
            stats.disconnects += 1;
        } else {
            stats.failed += 1;
            self.live.settled.fetch_add(1, Ordering::Relaxed);
        }
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        sample_error(&mut stats.errors, message);
    }
}

/// The microseconds since the Unix epoch (the clock payloads carry).
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A stream's parsing state.
#[derive(Debug, Default)]
struct Stream {
    /// Bytes of a response head that is not complete yet.
    head: Vec<u8>,
    started: bool,
    chunked: bool,
    dechunker: Dechunker,
    scanner: Scanner,
    /// The last sequence number seen per publisher.
    last: Vec<u32>,
}

enum Flow {
    More,
    /// The body ended (the last chunk).
    Ended,
}

impl Stream {
    fn feed(&mut self, bytes: &[u8], shard: &Shard) -> Result<Flow, String> {
        let mut body = bytes;
        let owned;
        if !self.started {
            let head = if self.head.is_empty() {
                parse_head(bytes)?
            } else {
                self.head.extend_from_slice(bytes);
                parse_head(&self.head)?
            };
            let Some(head) = head else {
                if self.head.is_empty() {
                    self.head.extend_from_slice(bytes);
                }
                if self.head.len() > MAX_HEAD {
                    return Err("response head too long".into());
                }
                return Ok(Flow::More);
            };
            check_head(&head)?;
            self.started = true;
            self.chunked = head.chunked;
            shard.stats.borrow_mut().connected += 1;
            shard.live.connected.fetch_add(1, Ordering::Relaxed);
            shard.live.settled.fetch_add(1, Ordering::Relaxed);
            if self.head.is_empty() {
                body = &bytes[head.len..];
            } else {
                owned = std::mem::take(&mut self.head);
                body = &owned[head.len..];
            }
        }
        let now = now_micros();
        let mut stats = shard.stats.borrow_mut();
        let before = stats.events;
        let mut scan_error = None;
        let last = &mut self.last;
        let scanner = &mut self.scanner;
        let mut scan = |data: &[u8]| {
            if scan_error.is_some() {
                return;
            }
            let result = scanner.feed(data, |event| match event {
                Scanned::Payload(payload) if payload.publisher < MAX_PUBLISHERS => {
                    stats.events += 1;
                    record(&mut stats.latency, now.saturating_sub(payload.sent_us));
                    let publisher = payload.publisher as usize;
                    if last.len() <= publisher {
                        last.resize(publisher + 1, 0);
                    }
                    let seq = u32::try_from(payload.seq).unwrap_or(u32::MAX);
                    let previous = last[publisher];
                    if seq <= previous {
                        stats.duplicates += 1;
                    } else {
                        stats.gaps += u64::from(seq - previous - 1);
                        last[publisher] = seq;
                    }
                }
                Scanned::Payload(_) | Scanned::Foreign => stats.foreign += 1,
            });
            if let Err(err) = result {
                scan_error = Some(err);
            }
        };
        let ended = if self.chunked {
            self.dechunker.feed(body, &mut scan)?
        } else {
            scan(body);
            false
        };
        if let Some(err) = scan_error {
            return Err(err);
        }
        let received = stats.events - before;
        drop(stats);
        if received > 0 {
            let total = shard.live.events.fetch_add(received, Ordering::Relaxed) + received;
            if total >= shard.goal.get() {
                shard.goal.set(u64::MAX);
                shard.reached.notify_one();
            }
        }
        Ok(if ended { Flow::Ended } else { Flow::More })
    }
}

fn check_head(head: &Head) -> Result<(), String> {
    if head.status != 200 {
        return Err(format!("HTTP {} {}", head.status, head.reason));
    }
    if !head.content_type.starts_with("text/event-stream") {
        return Err(format!(
            "content type `{}`, not text/event-stream",
            head.content_type
        ));
    }
    Ok(())
}

async fn connect(plan: &SubPlan, index: usize) -> std::io::Result<TcpStream> {
    let socket = match plan.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if !plan.sources.is_empty() && plan.addr.is_ipv4() {
        let source = plan.sources[index % plan.sources.len()];
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    socket.connect(plan.addr).await
}

/// Runs subscriber `index` until its stream ends or the task is dropped.
pub(crate) async fn run(index: usize, plan: Rc<SubPlan>, shard: Rc<Shard>) {
    let opened = tokio::time::timeout(plan.connect_timeout, async {
        let mut stream = connect(&plan, index).await?;
        stream.write_all(plan.request(index).as_bytes()).await?;
        Ok::<_, std::io::Error>(stream)
    })
    .await;
    let stream = match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return shard.fail(format!("connect: {err}"), false),
        Err(_) => return shard.fail("connect: timed out".into(), false),
    };
    let mut state = Stream::default();
    let head_deadline = tokio::time::Instant::now() + plan.connect_timeout;
    loop {
        if !state.started {
            match tokio::time::timeout_at(head_deadline, stream.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return shard.fail(format!("read: {err}"), false),
                Err(_) => return shard.fail("response head: timed out".into(), false),
            }
        } else if let Err(err) = stream.readable().await {
            return shard.fail(format!("read: {err}"), true);
        }
        // Reads until the socket is drained, each read into the shared scratch.
        loop {
            let result = {
                let mut scratch = shard.scratch.borrow_mut();
                match stream.try_read(&mut scratch) {
                    Ok(0) => Err("the server ended the stream".to_owned()),
                    Ok(n) => state
                        .feed(&scratch[..n], &shard)
                        .map(|flow| (flow, n == scratch.len())),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) => Err(format!("read: {err}")),
                }
            };
            match result {
                Ok((Flow::More, true)) => continue,
                Ok((Flow::More, false)) => break,
                Ok((Flow::Ended, _)) => {
                    return shard.fail("the server ended the stream".into(), state.started);
                }
                Err(err) => return shard.fail(err, state.started),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::template::{Encoding, Var};

    fn plan() -> SubPlan {
        SubPlan {
            addr: "127.0.0.1:9".parse().unwrap(),
            authority: "127.0.0.1:9".into(),
            path: Template::parse("/sub?topic={topic}", Encoding::Percent, &[Var::Topic]).unwrap(),
            topic: Template::parse("bench/{t}", Encoding::Raw, &[Var::TopicIndex]).unwrap(),
            topics: 3,
            headers: "Authorization: Bearer x\r\n".into(),
            last_event_id: Some("urn:1".into()),
            sources: Vec::new(),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_request_names_the_topic_of_the_subscriber() {
        assert_eq!(
            plan().request(4),
            "GET /sub?topic=bench%2F1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nLast-Event-ID: urn:1\r\nAuthorization: Bearer x\r\n\r\n"
        );
    }

    #[test]
    fn events_latency_duplicates_and_gaps_are_counted() {
        let shard = Shard::new(Arc::default());
        shard.goal.set(4);
        let mut stream = Stream::default();
        let sent = now_micros() - 2_000;
        let event = |p: u32, s: u64| format!("data: {{\"p\":{p},\"s\":{s},\"t\":{sent}}}\n\n");
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let body = format!(
            "{}{}{}{}: ping\n\ndata: hi\n\n",
            event(0, 1),
            event(1, 1),
            event(0, 3),
            event(0, 3)
        );
        let wire = format!("{head}{:x}\r\n{body}\r\n", body.len());
        // Split inside the head: the head waits in the stream's own buffer.
        let split = 20;
        assert!(matches!(
            stream.feed(&wire.as_bytes()[..split], &shard),
            Ok(Flow::More)
        ));
        assert!(!stream.started);
        assert!(matches!(
            stream.feed(&wire.as_bytes()[split..], &shard),
            Ok(Flow::More)
        ));
        assert!(stream.head.is_empty(), "the head's buffer is released");
        let stats = shard.stats.borrow();
        assert_eq!((stats.connected, stats.events, stats.foreign), (1, 4, 1));
        assert_eq!((stats.duplicates, stats.gaps), (1, 1));
        assert_eq!(stats.latency.len(), 4);
        assert!(stats.latency.min() >= 1_900, "{}", stats.latency.min());
        assert_eq!(shard.live.events.load(Ordering::Relaxed), 4);
        assert_eq!(shard.goal.get(), u64::MAX, "the goal was reached");
        drop(stats);
        assert!(matches!(stream.feed(b"0\r\n\r\n", &shard), Ok(Flow::Ended)));
    }

    /// The state a subscriber keeps while it waits for bytes: its task's future (the
    /// socket's registration and the task header come on top, about 200 bytes).
    #[test]
    fn a_subscriber_is_a_few_hundred_bytes() {
        let future = run(0, Rc::new(plan()), Rc::new(Shard::new(Arc::default())));
        let size = std::mem::size_of_val(&future);
        assert!(size <= 640, "a subscriber's future takes {size} bytes");
    }

    #[test]
    fn a_refusal_is_an_error_with_its_status() {
        let shard = Shard::new(Arc::default());
        let mut stream = Stream::default();
        let err = stream
            .feed(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
                &shard,
            )
            .err()
            .unwrap();
        assert_eq!(err, "HTTP 401 Unauthorized");
        let mut stream = Stream::default();
        let err = stream
            .feed(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\n",
                &shard,
            )
            .err()
            .unwrap();
        assert!(err.contains("text/html"), "{err}");
    }
}
