//! The wire form of an update: one SSE event, encoded once and shared by every
//! subscriber it goes to.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidings_wire::EventBuilder;

use crate::log::Update;

/// Encodes an update as one SSE event: `id`, `event` (the Mercure `type`), `retry`, `data`.
///
/// Updates are validated before they are stored, so a type or id that would inject
/// fields cannot be here; if one ever is (a log written by something else), the field
/// is left out rather than written, and the event still carries its data.
pub(crate) fn encode(update: &Update) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(update, &mut buf);
    buf.freeze()
}

/// Appends the event [`encode`] gives to `buf`, so that many updates written together
/// (a replay) are encoded straight into one buffer.
pub(crate) fn encode_into(update: &Update, buf: &mut BytesMut) {
    write_event(update, true, buf);
}

/// Encodes an update that is not in the log (a subscription event) without its id: an
/// `id` field would become the client's last event ID, and resuming from an id the log
/// does not know replays everything.
pub(crate) fn encode_live(update: &Update) -> Bytes {
    let mut buf = BytesMut::new();
    write_event(update, false, &mut buf);
    buf.freeze()
}

fn write_event(update: &Update, with_id: bool, buf: &mut BytesMut) {
    let mut event = EventBuilder::new().data(&update.data);
    if with_id {
        match event.try_id(&update.id) {
            Ok(identified) => event = identified,
            Err(_) => {
                tracing::warn!(id = %update.id.escape_debug(), "stored update id cannot be sent as an SSE id")
            }
        }
    }
    if let Some(event_type) = &update.event_type {
        match event.try_event(event_type) {
            Ok(with_type) => event = with_type,
            Err(err) => {
                tracing::warn!(id = %update.id, cause = %err, "stored update type left out")
            }
        }
    }
    if let Some(retry) = update.retry {
        event = event.retry(Duration::from_millis(retry));
    }
    event.build_into(buf);
}

/// The heartbeat: an SSE comment, which every client ignores but which keeps proxies
/// and idle timeouts from closing a quiet connection.
pub(crate) const HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

#[cfg(test)]
mod tests {
    use super::*;

    fn update(data: &str) -> Update {
        Update {
            id: "urn:uuid:1".into(),
            topics: vec!["https://example.com/a".into()],
            data: data.into(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    #[test]
    fn encodes_every_field_in_order() {
        let mut u = update("line 1\nline 2");
        u.event_type = Some("score".into());
        u.retry = Some(2500);
        assert_eq!(
            &encode(&u)[..],
            b"event: score\nid: urn:uuid:1\nretry: 2500\ndata: line 1\ndata: line 2\n\n"
        );
    }

    #[test]
    fn encode_into_appends_what_encode_gives() {
        let first = update("1");
        let mut second = update("2");
        second.event_type = Some("score".into());
        let mut buf = BytesMut::from(&b"data: before\n\n"[..]);
        encode_into(&first, &mut buf);
        encode_into(&second, &mut buf);
        let mut expected = b"data: before\n\n".to_vec();
        expected.extend_from_slice(&encode(&first));
        expected.extend_from_slice(&encode(&second));
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn empty_data_is_still_an_event() {
        // Without a `data:` line the browser would never dispatch the update.
        assert_eq!(&encode(&update(""))[..], b"id: urn:uuid:1\ndata:\n\n");
    }
}
