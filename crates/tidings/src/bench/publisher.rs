//! Publishers: persistent HTTP/1.1 keep-alive connections that each send one request
//! at a time, taking their turns from one shared [`Schedule`].

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http::{Dechunker, parse_head};
use super::scan::Payload;
use super::stats::{PubStats, record, sample_error};
use super::subscriber::now_micros;
use super::template::{Template, Values};

/// When the publishers may send: at a rate, or as fast as they are answered, until a
/// deadline or a count.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Seconds between two publishes (all connections together); zero for no limit.
    interval: Duration,
    deadline: Instant,
    next: Cell<Instant>,
    remaining: Cell<u64>,
    /// Turns skipped because every publisher was busy when they came.
    pub(crate) missed: Cell<u64>,
}

/// How far behind its turns a schedule may fall before it skips them: a publisher that
/// is held back (the server answers slowly) does not then burst to catch up.
const MAX_LAG: Duration = Duration::from_millis(100);

impl Schedule {
    /// `rate` publishes per second (0: as fast as possible), until `deadline` and at
    /// most `count` publishes.
    pub(crate) fn new(rate: f64, deadline: Instant, count: u64) -> Schedule {
        let interval = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        Schedule {
            interval,
            deadline,
            next: Cell::new(Instant::now()),
            remaining: Cell::new(count),
            missed: Cell::new(0),
        }
    }

    /// Takes the next turn and waits for it; `None` when the schedule is over.
    pub(crate) fn take(&self, now: Instant) -> Option<Instant> {
        if self.remaining.get() == 0 || now >= self.deadline {
            return None;
        }
        let mut turn = self.next.get();
        if !self.interval.is_zero() && turn + MAX_LAG < now {
            let behind = now - turn;
            self.missed.set(
                self.missed.get() + (behind.as_nanos() / self.interval.as_nanos().max(1)) as u64,
            );
            turn = now;
        }
        if turn >= self.deadline {
            return None;
        }
        self.next.set(turn + self.interval);
        self.remaining.set(self.remaining.get() - 1);
        Some(turn)
    }

    async fn next(&self) -> bool {
        match self.take(Instant::now()) {
            Some(turn) => {
                tokio::time::sleep_until(turn).await;
                true
            }
            None => false,
        }
    }
}

/// What every publisher shares.
#[derive(Debug)]
pub(crate) struct PubPlan {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: String,
    pub(crate) path: Template,
    pub(crate) body: Template,
    pub(crate) content_type: String,
    /// Extra header lines (the token's among them), each ending in CRLF.
    pub(crate) headers: String,
    pub(crate) topic: Template,
    pub(crate) topics: usize,
    /// The payload's size in bytes (padded).
    pub(crate) size: usize,
    pub(crate) timeout: Duration,
}

impl PubPlan {
    /// Writes the request of publisher `publisher` for `payload` on topic `topic_index`.
    fn request(&self, publisher: usize, topic_index: usize, payload: &Payload, out: &mut String) {
        let topic = self.topic.expand(&Values {
            topic_index,
            index: publisher,
            ..Values::default()
        });
        let mut data = String::with_capacity(self.size.max(48));
        payload.write(self.size, &mut data);
        let values = Values {
            topic: &topic,
            topic_index,
            index: publisher,
            data: &data,
        };
        let mut body = String::with_capacity(data.len() * 2 + topic.len() + 16);
        self.body.expand_into(&values, &mut body);
        out.clear();
        out.push_str("POST ");
        self.path.expand_into(&values, out);
        out.push_str(" HTTP/1.1\r\nHost: ");
        out.push_str(&self.authority);
        out.push_str("\r\nContent-Type: ");
        out.push_str(&self.content_type);
        out.push_str("\r\nContent-Length: ");
        out.push_str(&body.len().to_string());
        out.push_str("\r\n");
        out.push_str(&self.headers);
        out.push_str("\r\n");
        out.push_str(&body);
    }
}

/// A response: its status, body (its start), and whether the connection must close.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

/// The most bytes of a response body kept (an id, an error's text).
const MAX_BODY: usize = 64 * 1024;

async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Answer, String> {
    stream
        .write_all(request)
        .await
        .map_err(|err| format!("write: {err}"))?;
    buf.clear();
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|err| format!("read: {err}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
    };
    let mut rest = buf.split_off(head.len);
    let mut body = Vec::new();
    if head.chunked {
        let mut dechunker = Dechunker::default();
        loop {
            let done = dechunker.feed(&rest, |data| {
                if body.len() < MAX_BODY {
                    body.extend_from_slice(data);
                }
            })?;
            if done {
                break;
            }
            rest.clear();
            if stream
                .read_buf(&mut rest)
                .await
                .map_err(|err| format!("read: {err}"))?
                == 0
            {
                return Err("the server closed the connection mid-body".into());
            }
        }
    } else if let Some(length) = head.content_length {
        let length = usize::try_from(length).map_err(|_| "huge body")?;
        if length > MAX_BODY {
            return Err(format!("a response body of {length} bytes"));
        }
        while rest.len() < length {
            if stream
                .read_buf(&mut rest)
                .await
                .map_err(|err| format!("read: {err}"))?
                == 0
            {
                return Err("the server closed the connection mid-body".into());
            }
        }
        rest.truncate(length);
        body = rest;
    } else if !(head.status == 204 || head.status == 304) {
        // Delimited by the end of the connection.
        while stream
            .read_buf(&mut rest)
            .await
            .map_err(|err| format!("read: {err}"))?
            > 0
        {
            if rest.len() > MAX_BODY {
                return Err("a response body without a length, too long".into());
            }
        }
        body = rest;
        return Ok(Answer {
            status: head.status,
            body,
            close: true,
        });
    }
    Ok(Answer {
        status: head.status,
        body,
        close: head.close,
    })
}

/// Runs publisher `index` until `schedule` is over.
pub(crate) async fn run(
    index: usize,
    plan: Rc<PubPlan>,
    schedule: Rc<Schedule>,
    stats: Rc<RefCell<PubStats>>,
) {
    let topics = plan.topics.max(1);
    let mut seqs = vec![0u64; topics];
    let mut topic = index % topics;
    let mut connection: Option<TcpStream> = None;
    let mut request = String::with_capacity(1024);
    let mut buf = Vec::with_capacity(4096);
    while schedule.next().await {
        let seq = seqs[topic] + 1;
        let sent_us = now_micros();
        let payload = Payload {
            publisher: index as u32,
            seq,
            sent_us,
        };
        plan.request(index, topic, &payload, &mut request);
        let started = Instant::now();
        stats.borrow_mut().sent += 1;
        // A kept-alive connection the server closed meanwhile fails at once: one retry on
        // a fresh connection (the request was not processed).
        let mut outcome = Err(String::new());
        for attempt in 0..2 {
            let reused = connection.is_some();
            let stream = match &mut connection {
                Some(stream) => stream,
                None => {
                    match tokio::time::timeout(plan.timeout, TcpStream::connect(plan.addr)).await {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            connection.insert(stream)
                        }
                        Ok(Err(err)) => {
                            outcome = Err(format!("connect: {err}"));
                            break;
                        }
                        Err(_) => {
                            outcome = Err("connect: timed out".into());
                            break;
                        }
                    }
                }
            };
            outcome = match tokio::time::timeout(
                plan.timeout,
                exchange(stream, request.as_bytes(), &mut buf),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", plan.timeout)),
            };
            if outcome.is_err() {
                connection = None;
                if reused && attempt == 0 {
                    continue;
                }
            }
            break;
        }
        let failed = {
            let mut stats = stats.borrow_mut();
            match outcome {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    record(&mut stats.ack, started.elapsed().as_micros() as u64);
                    stats.acked += 1;
                    stats.acked_per_topic[topic] += 1;
                    if stats.first_id.is_none() {
                        stats.first_id =
                            Some(String::from_utf8_lossy(&answer.body).trim().to_owned());
                    }
                    seqs[topic] = seq;
                    topic = (topic + 1) % topics;
                    if answer.close {
                        connection = None;
                    }
                    false
                }
                Ok(answer) => {
                    stats.errors += 1;
                    let text: String = String::from_utf8_lossy(&answer.body)
                        .chars()
                        .take(200)
                        .collect();
                    sample_error(
                        &mut stats.errors_seen,
                        format!("publish: HTTP {}: {}", answer.status, text.trim()),
                    );
                    if answer.close {
                        connection = None;
                    }
                    false
                }
                Err(err) => {
                    stats.errors += 1;
                    sample_error(&mut stats.errors_seen, format!("publish: {err}"));
                    true
                }
            }
        };
        if failed {
            // A server that refuses connections is not hammered in a tight loop.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::template::{Encoding, Var};

    #[test]
    fn the_request_is_a_form_with_the_payload() {
        let all = &[Var::Topic, Var::TopicIndex, Var::Index, Var::Data];
        let plan = PubPlan {
            addr: "127.0.0.1:9".parse().unwrap(),
            authority: "localhost:9".into(),
            path: Template::parse("/.well-known/mercure", Encoding::Percent, all).unwrap(),
            body: Template::parse("topic={topic}&data={data}", Encoding::Percent, all).unwrap(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: "Authorization: Bearer t\r\n".into(),
            topic: Template::parse("b/{t}", Encoding::Raw, all).unwrap(),
            topics: 2,
            size: 0,
            timeout: Duration::from_secs(1),
        };
        let mut request = String::new();
        let payload = Payload {
            publisher: 1,
            seq: 2,
            sent_us: 3,
        };
        plan.request(1, 1, &payload, &mut request);
        let body = "topic=b%2F1&data=%7B%22p%22%3A1%2C%22s%22%3A2%2C%22t%22%3A3%7D";
        assert_eq!(
            request,
            format!(
                "POST /.well-known/mercure HTTP/1.1\r\nHost: localhost:9\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: {}\r\nAuthorization: Bearer t\r\n\r\n{body}",
                body.len()
            )
        );
        let form: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
        assert_eq!(form[1].1, r#"{"p":1,"s":2,"t":3}"#);
    }

    #[test]
    fn a_schedule_keeps_its_rate_and_skips_what_it_missed() {
        let start = Instant::now();
        let schedule = Schedule::new(100.0, start + Duration::from_secs(1), u64::MAX);
        schedule.next.set(start);
        let turns: Vec<Instant> = (0..3).map(|_| schedule.take(start).unwrap()).collect();
        assert_eq!(turns[1] - turns[0], Duration::from_millis(10));
        assert_eq!(turns[2] - turns[0], Duration::from_millis(20));
        // Half a second later, the 47 turns in between are skipped, not burst.
        let late = start + Duration::from_millis(500);
        assert_eq!(schedule.take(late), Some(late));
        assert_eq!(schedule.missed.get(), 47);
        assert_eq!(schedule.take(late), Some(late + Duration::from_millis(10)));
        assert_eq!(schedule.take(start + Duration::from_secs(1)), None);

        let counted = Schedule::new(0.0, start + Duration::from_secs(60), 2);
        assert!(counted.take(start).is_some());
        assert!(counted.take(start).is_some());
        assert!(counted.take(start).is_none());
    }
}
