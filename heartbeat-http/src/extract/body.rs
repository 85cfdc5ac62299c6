//! Request bodies: read up to `BODY_LIMIT`, as JSON or (heartbeat routes) as an HTML form,
//! the two forms the Node server's Express parses (SPEC §3.5).
//!
//! A body over the limit is read on and thrown away, up to [`DRAIN_LIMIT`], before the 413
//! is sent: clients that send the whole body before they read the answer (Node's `fetch`,
//! browsers) then see the 413 instead of a connection reset, as Express answers them.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::App;

/// How much of a body over the limit is read and discarded before the 413; a larger one
/// is cut off (the connection closes).
pub const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// A request's headers and its body of at most the server's `BODY_LIMIT`, read whole.
///
/// The headers come with the body (the handlers that read a body read its media type):
/// taken from the request, not cloned as axum's `HeaderMap` extractor clones them.
#[derive(Debug, Clone)]
pub struct LimitedBody {
    /// The request's headers.
    pub headers: HeaderMap,
    /// The body.
    pub bytes: Bytes,
}

impl FromRequest<App> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, ApiError> {
        read_limited(request, app.settings().body_limit).await
    }
}

async fn read_limited(request: Request, limit: usize) -> Result<LimitedBody, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is too large: at most {limit} bytes are accepted."),
        )
    };
    let (parts, body) = request.into_parts();
    let mut chunks = body.into_data_stream();
    // A body that comes in one chunk (most do) is kept as it came, without a copy.
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request(format!("The request body could not be read: {error}"))
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            if first.is_empty() {
                first = chunk;
            } else {
                joined
                    .get_or_insert_with(|| first.to_vec())
                    .extend_from_slice(&chunk);
            }
        } else if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(LimitedBody {
        headers: parts.headers,
        bytes: joined.map_or(first, Bytes::from),
    })
}

/// What the body's `Content-Type` says it is (its media type, without parameters, in any
/// case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    /// `application/json` or `application/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// Another type, or none.
    Other,
}

fn media_type(headers: &HeaderMap) -> MediaType {
    let Some(mime) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
    else {
        return MediaType::Other;
    };
    let ends_with_json = mime
        .len()
        .checked_sub(5)
        .and_then(|at| mime.get(at..))
        .is_some_and(|end| end.eq_ignore_ascii_case("+json"));
    if mime.eq_ignore_ascii_case("application/json") || ends_with_json {
        MediaType::Json
    } else if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        MediaType::Form
    } else {
        MediaType::Other
    }
}

/// The body without a leading UTF-8 byte order mark, which Express's JSON parser skips
/// (some Windows tools write one): a body the Node server reads is read here too.
fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// Reads a JSON body (`Content-Type: application/json`).
///
/// # Errors
///
/// 415 for another content type, 400 for text that is not JSON.
pub fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if media_type(headers) != MediaType::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json.",
        ));
    }
    parse_json(body)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(without_bom(body))
        .map_err(|error| ApiError::bad_request(format!("The body is not valid JSON: {error}")))
}

/// Reads a JSON or an HTML form body (`application/x-www-form-urlencoded`) and returns
/// the values of the fields `names`, in that order (`None`: absent; an empty body has
/// none). A field given more than once in a form becomes an array of its values, as
/// Express (`querystring`) makes it; in JSON the last one counts, as in `JSON.parse`.
/// Other fields are checked as JSON but not kept.
///
/// # Errors
///
/// 415 for another content type, 400 for a JSON body that is not an object.
pub fn json_or_form_fields<const N: usize>(
    headers: &HeaderMap,
    body: &[u8],
    names: [&str; N],
) -> Result<[Option<Value>; N], ApiError> {
    match media_type(headers) {
        MediaType::Form => Ok(form_fields(body, names)),
        // An empty body is no fields, as Express's JSON parser reads it (`{}`).
        MediaType::Json if without_bom(body).is_empty() => Ok([const { None }; N]),
        MediaType::Json => {
            let mut seed = Fields {
                names,
                values: [const { None }; N],
            };
            let mut reader = serde_json::Deserializer::from_slice(without_bom(body));
            let read = serde::de::DeserializeSeed::deserialize(&mut seed, &mut reader)
                .and_then(|()| reader.end());
            match read {
                Ok(()) => Ok(seed.values),
                Err(error) if error.is_data() => {
                    Err(ApiError::bad_request("The body must be a JSON object."))
                }
                Err(error) => Err(ApiError::bad_request(format!(
                    "The body is not valid JSON: {error}"
                ))),
            }
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or application/x-www-form-urlencoded.",
        )),
    }
}

/// The fields `names` of a form; one given more than once becomes an array of its values.
fn form_fields<const N: usize>(body: &[u8], names: [&str; N]) -> [Option<Value>; N] {
    let mut values = [const { None }; N];
    for (name, value) in form_urlencoded::parse(body) {
        let Some(at) = names.iter().position(|wanted| *wanted == name) else {
            continue;
        };
        let value = Value::String(value.into_owned());
        match &mut values[at] {
            slot @ None => *slot = Some(value),
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    values
}

/// Reads a JSON object keeping only the values of `names` (the last of a repeated one);
/// the others are read past without being built.
struct Fields<'n, const N: usize> {
    names: [&'n str; N],
    values: [Option<Value>; N],
}

impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for &mut Fields<'_, N> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_map(self)
    }
}

impl<'de, const N: usize> serde::de::Visitor<'de> for &mut Fields<'_, N> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(FieldName(&self.names))? {
            match key {
                Some(at) => self.values[at] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key of the object: the position of the name among those wanted, if it is one.
struct FieldName<'a, 'n>(&'a [&'n str]);

impl<'de> serde::de::DeserializeSeed<'de> for FieldName<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        reader: D,
    ) -> Result<Option<usize>, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldName<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|wanted| *wanted == name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn media_types_are_read_in_any_case_without_parameters() {
        for (mime, expected) in [
            ("application/json", MediaType::Json),
            ("Application/JSON; charset=utf-8", MediaType::Json),
            (" application/json ;x=1", MediaType::Json),
            ("application/merge-patch+json", MediaType::Json),
            ("APPLICATION/VND.API+JSON", MediaType::Json),
            ("application/x-www-form-urlencoded", MediaType::Form),
            (
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                MediaType::Form,
            ),
            ("text/plain", MediaType::Other),
            ("application/jsonx", MediaType::Other),
            ("json", MediaType::Other),
            // Not visible ASCII: not a type at all.
            ("é+json", MediaType::Other),
            ("", MediaType::Other),
        ] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(mime) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            assert_eq!(media_type(&headers), expected, "{mime:?}");
        }
        assert_eq!(media_type(&HeaderMap::new()), MediaType::Other);
    }

    /// A request whose body comes in `chunks`, with a content type.
    fn chunked(chunks: &[&'static str]) -> Request {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|chunk| Ok(Bytes::from_static(chunk.as_bytes())))
            .collect();
        Request::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_is_read_whole_whatever_its_chunks() {
        for chunks in [
            &[][..],
            &[""],
            &[r#"{"token":"abc"}"#],
            &[r#"{"tok"#, r#"en":"#, r#""abc"}"#],
            &["", r#"{"token":"#, "", r#""abc"}"#],
        ] {
            let read = read_limited(chunked(chunks), 15).await.unwrap();
            assert_eq!(read.bytes, chunks.concat().as_bytes(), "{chunks:?}");
            assert_eq!(read.headers[header::CONTENT_TYPE], "application/json");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_in_one_chunk_or_many() {
        for chunks in [
            &[r#"{"token":"abcd"}"#][..],
            &[r#"{"token":"#, r#""abcd"}"#],
        ] {
            let error = read_limited(chunked(chunks), 15).await.unwrap_err();
            assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE, "{chunks:?}");
        }
    }

    fn typed(mime: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
        headers
    }

    fn json_fields(body: &str) -> Result<[Option<Value>; 2], String> {
        json_or_form_fields(&typed("application/json"), body.as_bytes(), ["a", "b"])
            .map_err(|error| error.message)
    }

    #[test]
    fn json_keeps_the_named_fields_and_the_last_of_a_repeated_one() {
        let body = r#"{"x": {"deep": [1, {"y": null}]}, "b": 2.5, "a": "one", "a": ["two"]}"#;
        assert_eq!(
            json_fields(body).unwrap(),
            [Some(json!(["two"])), Some(json!(2.5))]
        );
        assert_eq!(json_fields(r#"{"c": 1}"#).unwrap(), [None, None]);
        assert_eq!(
            json_fields("\u{feff}{\"a\": 1}").unwrap(),
            [Some(json!(1)), None],
            "a byte order mark is skipped, as Express skips it"
        );
        assert_eq!(
            json_fields(r#"{"a\u0062": 1, "b": null}"#).unwrap(),
            [None, Some(Value::Null)],
            "an escaped name is read as its text"
        );
    }

    #[test]
    fn json_that_is_not_an_object_or_not_json_says_so_as_serde_json_does() {
        for body in ["[1]", "\"a\"", "null", "3"] {
            assert_eq!(
                json_fields(body).unwrap_err(),
                "The body must be a JSON object.",
                "{body}"
            );
        }
        assert_eq!(
            json_fields("").unwrap(),
            [None, None],
            "empty: no fields, as Express"
        );
        for body in [" ", "{", r#"{"a": 1} x"#, r#"{"c": [1,}"#, r#"{"a": tru}"#] {
            let expected = serde_json::from_str::<Value>(body).unwrap_err();
            assert_eq!(
                json_fields(body).unwrap_err(),
                format!("The body is not valid JSON: {expected}"),
                "{body}"
            );
        }
    }

    #[test]
    fn a_form_field_given_twice_is_an_array_and_other_types_are_refused() {
        let headers = typed("application/x-www-form-urlencoded");
        let fields = json_or_form_fields(&headers, b"a=1&c=2&a=%C3%A9&b=", ["a", "b"]).unwrap();
        assert_eq!(fields, [Some(json!(["1", "é"])), Some(json!(""))]);
        let refused = json_or_form_fields(&typed("text/plain"), b"{}", ["a"]).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
