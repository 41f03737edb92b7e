//! What makes a response an event stream: status 200 and a `text/event-stream` content type.

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};

use crate::Error;

/// Checks the final response (after the redirects reqwest followed). A response that is
/// not an event stream fails the connection for good.
pub(crate) fn check(status: u16, headers: &HeaderMap) -> Result<(), Error> {
    if matches!(status, 301 | 302 | 303 | 307 | 308) {
        // reqwest hands back a redirect it could not follow: no Location, or one that is
        // not a URL.
        return Err(Error::Redirect {
            status,
            location: headers
                .get(LOCATION)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()),
        });
    }
    if status != 200 {
        // The body is read afterwards, by the source.
        return Err(Error::Status {
            status,
            body: String::new(),
        });
    }
    let content_type = headers.get_all(CONTENT_TYPE);
    let essence = content_type
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(essence)
        .next_back();
    match essence {
        Some(essence) if essence.eq_ignore_ascii_case(tidings_wire::MIME_TYPE.as_bytes()) => Ok(()),
        _ => Err(Error::ContentType {
            content_type: if content_type.iter().next().is_none() {
                None
            } else {
                let values: Vec<_> = content_type
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .collect();
                Some(values.join(", "))
            },
        }),
    }
}

/// The essence (`type/subtype`, parameters dropped) of one media type, if it parses:
/// both parts non-empty HTTP tokens, surrounded by optional whitespace.
fn essence(media_type: &[u8]) -> Option<&[u8]> {
    let end = media_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(media_type.len());
    let essence = media_type[..end].trim_ascii();
    let slash = essence.iter().position(|&b| b == b'/')?;
    let (kind, subtype) = (&essence[..slash], &essence[slash + 1..]);
    let is_token = |part: &[u8]| !part.is_empty() && part.iter().all(|&b| is_token_byte(b));
    (is_token(kind) && is_token(subtype)).then_some(essence)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn with_content_type(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn accepts_the_essence_whatever_the_parameters_and_case() {
        for value in [
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "text/event-stream;charset=iso-8859-1",
            "TEXT/Event-Stream",
            "  text/event-stream  ; x=\"y\"",
        ] {
            assert!(check(200, &with_content_type(&[value])).is_ok(), "{value}");
        }
    }

    #[test]
    fn refuses_other_essences() {
        for value in [
            "text/html",
            "text/event-streams",
            "text/event-stream/x",
            "text /event-stream",
            "application/json",
            "event-stream",
            "",
        ] {
            let err = check(200, &with_content_type(&[value])).unwrap_err();
            assert!(
                matches!(&err, Error::ContentType { content_type: Some(v) } if v == value),
                "{value}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_content_type_is_refused() {
        let err = check(200, &HeaderMap::new()).unwrap_err();
        assert!(matches!(err, Error::ContentType { content_type: None }));
    }

    #[test]
    fn the_last_valid_media_type_counts_as_fetch_extracts_it() {
        assert!(check(200, &with_content_type(&["text/html, text/event-stream"])).is_ok());
        assert!(check(200, &with_content_type(&["text/html", "text/event-stream"])).is_ok());
        assert!(
            check(
                200,
                &with_content_type(&["text/event-stream", "text/plain"])
            )
            .is_err()
        );
        assert!(check(200, &with_content_type(&["text/event-stream, nonsense"])).is_ok());
    }

    #[test]
    fn statuses_other_than_200_fail() {
        let ok = with_content_type(&["text/event-stream"]);
        for status in [201, 204, 206, 400, 401, 404, 500, 503] {
            assert!(
                matches!(check(status, &ok), Err(Error::Status { status: s, .. }) if s == status),
                "{status}"
            );
        }
        for status in [301, 302, 303, 307, 308] {
            assert!(matches!(
                check(status, &ok),
                Err(Error::Redirect { status: s, location: None }) if s == status
            ));
        }
    }
}
