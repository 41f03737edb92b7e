//! `POST /.well-known/mercure`: publish an update.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::Refusal;
use crate::auth::{Claims, TokenSource};
use crate::hub::{Hub, PublishError};
use crate::log::Update;

const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) async fn publish(
    State(hub): State<Hub>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let start = std::time::Instant::now();
    match accept(&hub, &headers, &uri, body).await {
        Ok(id) => {
            let observed = &hub.inner.metrics.observed;
            observed.publish_duration.record_since(start);
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], id).into_response()
        }
        Err(refusal) => {
            // The request log writes the refusal's line.
            hub.inner.metrics.publish_refusals.increment(1);
            refusal.into_response()
        }
    }
}

async fn accept(hub: &Hub, headers: &HeaderMap, uri: &Uri, body: Body) -> Result<String, Refusal> {
    let claims = authenticate(hub, headers, uri)?;
    check_content_type(headers)?;
    let body = read_body(body, hub.config().max_body).await?;
    let update = parse_form(&body)?;
    let update = hub.validate(update).map_err(refusal)?;
    if let Some(topic) = update
        .topics
        .iter()
        .find(|topic| !claims.can_publish_all([topic.as_str()]))
    {
        return Err(Refusal::forbidden(format!(
            "not allowed: the token's mercure.publish does not cover topic {topic:?}"
        ))
        .code("not_allowed"));
    }
    let stored = hub.append(update).await.map_err(refusal)?;
    Ok(stored.update.id.clone())
}

fn authenticate(hub: &Hub, headers: &HeaderMap, uri: &Uri) -> Result<Claims, Refusal> {
    let (token, source) = crate::auth::extract_token(headers, uri.query())
        .map_err(|err| Refusal::unauthorized(err.to_string()).code("invalid_token"))?
        .ok_or_else(|| {
            Refusal::unauthorized(
                "missing token: publishing needs a JWT (Authorization: Bearer, the authorization \
                 query parameter or the mercureAuthorization cookie)",
            )
            .code("missing_token")
        })?;
    if source == TokenSource::Cookie {
        check_publish_origin(hub, headers)?;
    }
    hub.inner
        .auth
        .verify_publisher(&token)
        .map_err(|err| Refusal::unauthorized(err.to_string()).code("invalid_token"))
}

/// A browser sends the cookie with any site's form post: only the allowed origins may
/// publish on its strength.
fn check_publish_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), Refusal> {
    let allowed = &hub.config().publish_origins;
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let referer = headers.get(header::REFERER)?.to_str().ok()?;
            let uri: Uri = referer.parse().ok()?;
            Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
        });
    let Some(origin) = origin else {
        return Err(Refusal::forbidden(
            "cookie-authenticated publish without Origin or Referer header (CSRF protection)",
        )
        .code("origin"));
    };
    if allowed
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    {
        Ok(())
    } else {
        Err(Refusal::forbidden(format!(
            "origin {origin:?} may not publish with a cookie (not an allowed publish origin)"
        ))
        .code("origin"))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(FORM) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("wrong content type {content_type:?}: a publish body is {FORM}"),
        ))
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Refusal> {
    let too_big = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body too large: at most {limit} bytes"),
        )
    };
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|err| Refusal::bad_request(format!("cannot read the body: {err}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_big());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The update described by a publish form. Unknown fields are ignored, as Mercure does.
pub(crate) fn parse_form(body: &[u8]) -> Result<Update, Refusal> {
    let pairs = form_pairs(body)?;
    let mut update = Update {
        id: String::new(),
        topics: Vec::new(),
        data: String::new(),
        private: false,
        event_type: None,
        retry: None,
    };
    let mut seen_data = false;
    let mut seen_id = false;
    for (name, value) in pairs {
        match name.as_str() {
            "topic" => update.topics.push(value),
            "data" => {
                if std::mem::replace(&mut seen_data, true) {
                    return Err(Refusal::bad_request("data given more than once"));
                }
                update.data = value;
            }
            "private" => update.private = true,
            "id" => {
                if std::mem::replace(&mut seen_id, true) {
                    return Err(Refusal::bad_request("id given more than once"));
                }
                if value.is_empty() {
                    return Err(Refusal::bad_request(
                        "invalid id: an update id must not be empty",
                    ));
                }
                update.id = value;
            }
            "type" if update.event_type.is_some() => {
                return Err(Refusal::bad_request("type given more than once"));
            }
            "type" => update.event_type = Some(value),
            "retry" => {
                if update.retry.is_some() {
                    return Err(Refusal::bad_request("retry given more than once"));
                }
                update.retry = Some(parse_retry(&value)?);
            }
            _ => {}
        }
    }
    Ok(update)
}

/// The name/value pairs of an `application/x-www-form-urlencoded` body. Decoded here
/// rather than by a form library, which would turn bytes that are not UTF-8 (raw, or
/// percent-encoded like `%FF`) into U+FFFD silently: an update is text, so say so.
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((form_text(name)?, form_text(value)?))
        })
        .collect()
}

/// One percent-encoded form component, `+` standing for a space.
fn form_text(raw: &[u8]) -> Result<String, Refusal> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|err| {
            Refusal::bad_request(format!(
                "malformed form body: a field is not UTF-8 once percent-decoded ({err})"
            ))
        })
}

fn parse_retry(value: &str) -> Result<u64, Refusal> {
    let invalid = || {
        Refusal::bad_request(format!(
            "invalid retry {value:?}: must be a number of milliseconds (digits only)"
        ))
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

fn refusal(err: PublishError) -> Refusal {
    let (status, code) = match err {
        PublishError::Log(crate::log::LogError::Unavailable { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        }
        PublishError::Log(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        PublishError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        _ => (StatusCode::BAD_REQUEST, "invalid_update"),
    };
    if status.is_server_error() {
        tracing::error!(cause = %err, "publish failed");
    }
    Refusal::new(status, err.to_string()).code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_like_a_browser_form() {
        let pairs = form_pairs(b"topic=a+b%2Fc&private&data=x%3Dy=z&&id=%E2%9C%93").unwrap();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let expected = [
            ("topic", "a b/c"),
            ("private", ""),
            ("data", "x=y=z"),
            ("id", "\u{2713}"),
        ];
        assert_eq!(pairs, expected);
        assert!(form_pairs(b"data=%C3").is_err());
        assert!(form_pairs(b"da\xffta=x").is_err());
    }

    #[test]
    fn form_with_every_field() {
        let update =
            parse_form(b"topic=a&topic=b&data=x%0Ay&private=on&id=i1&type=t&retry=15&extra=1")
                .unwrap();
        assert_eq!(update.topics, ["a", "b"]);
        assert_eq!(update.data, "x\ny");
        assert!(update.private);
        assert_eq!(update.id, "i1");
        assert_eq!(update.event_type.as_deref(), Some("t"));
        assert_eq!(update.retry, Some(15));
    }

    #[test]
    fn retry_must_be_digits() {
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.5",
            "1e3",
            "99999999999999999999999",
        ] {
            assert!(parse_retry(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_retry("0").unwrap(), 0);
    }

    #[test]
    fn repeated_single_fields_are_refused() {
        assert!(parse_form(b"topic=a&data=1&data=2").is_err());
        assert!(parse_form(b"topic=a&id=1&id=2").is_err());
    }
}
