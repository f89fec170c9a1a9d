//! The extractors of every route: a JSON object body, path parameters and a query string. Each
//! rejection is the error envelope with a stable code, never axum's plain-text answer, and a
//! body is refused before any handler runs, so a refused request records nothing.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};

use super::{ApiError, MAX_BODY_BYTES, RequestId};
use crate::error_code::ErrorCode;

fn request_id(extensions: &Extensions) -> String {
    extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

const NOT_JSON: &str = "request body must be application/json";

/// Why a request's `Content-Type` does not declare JSON, or `None` when it does: present, and
/// every value (a repeated header is not read one way here and another way elsewhere)
/// `application/json` in any case, parameters allowed, a `charset` only when it is UTF-8.
/// `+json` types (`application/merge-patch+json`, …) carry semantics these routes do not
/// implement and are refused too.
fn not_json(headers: &HeaderMap) -> Option<&'static str> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter().peekable();
    if values.peek().is_none() {
        return Some("request body must be application/json; Content-Type is missing");
    }
    values.find_map(|value| match value.to_str() {
        Ok(value) => not_json_value(value),
        Err(_) => Some(NOT_JSON),
    })
}

fn not_json_value(value: &str) -> Option<&'static str> {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Some(NOT_JSON);
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            return Some(NOT_JSON);
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if name.trim().eq_ignore_ascii_case("charset") && !value.eq_ignore_ascii_case("utf-8") {
            return Some("request body must be application/json in UTF-8");
        }
    }
    None
}

/// A JSON object body: `Content-Type: application/json` (else 415, checked before the body is
/// read), at most [`MAX_BODY_BYTES`] (else 413), a JSON object (else 400: serde's derived
/// structs would also read an array by position), unknown fields rejected by the target type.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let rid = request_id(request.extensions());
        if let Some(message) = not_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                message,
                &rid,
            ));
        }
        let bytes = match axum::body::Bytes::from_request(request, state).await {
            Ok(b) => b,
            Err(rejection) => {
                let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
                return Err(if too_large {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                        &rid,
                    )
                } else {
                    ApiError::new(ErrorCode::InvalidArgument, "invalid request body", &rid)
                });
            }
        };
        // The first byte serde_json would read (it skips the same whitespace) decides the kind
        // of value: cheaper than decoding into a `Value` first.
        match bytes
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "invalid request body: empty body",
                    &rid,
                ));
            }
            Some(b'{') => {}
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "request body must be a JSON object",
                    &rid,
                ));
            }
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid request body: {e}"),
                &rid,
            )
        })
    }
}

/// `#[serde(default, deserialize_with = "object")]` for an optional nested struct: a JSON
/// object or `null` (absent), never an array read by position.
pub fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OptionalObject<T>(PhantomData<T>);
    struct Object<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionalObject<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(Object(PhantomData)).map(Some)
        }
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_option(OptionalObject(PhantomData))
}

/// Path parameters; a value that is not UTF-8 or does not parse is `invalid_argument`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::PathRejection;
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if e.status().is_client_error() =>
            {
                Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("invalid path parameter: {}", e.kind()),
                    &request_id(&parts.extensions),
                ))
            }
            // A route whose parameters do not fit its handler: a bug.
            Err(other) => Err(ApiError::internal(
                &other.body_text(),
                &request_id(&parts.extensions),
            )),
        }
    }
}

/// A query string; one that does not parse (unknown key, ill-typed value) is
/// `invalid_argument`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid query: {}", e.body_text()),
                &request_id(&parts.extensions),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::CONTENT_TYPE, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn json_with_or_without_a_utf8_charset_is_json() {
        for v in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; profile=x",
        ] {
            assert_eq!(not_json(&content_type(&[v])), None, "{v}");
        }
        let repeated = content_type(&["application/json", "application/json; charset=utf-8"]);
        assert_eq!(not_json(&repeated), None);
    }

    #[test]
    fn other_missing_or_conflicting_content_types_are_not_json() {
        for v in [
            &[][..],
            &["text/plain"],
            &["text/plain;charset=UTF-8"],
            &["application/x-www-form-urlencoded"],
            &["multipart/form-data; boundary=x"],
            &["application/merge-patch+json"],
            &["application/jsonx"],
            &["application/json; charset=latin1"],
            &["application/json; utf-8"],
            &["application/json", "text/plain"],
            &["text/plain", "application/json"],
        ] {
            assert!(not_json(&content_type(v)).is_some(), "{v:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        a: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "object")]
        inner: Option<Inner>,
    }

    #[test]
    fn a_nested_struct_is_an_object_or_null_never_an_array() {
        let parse = |s: &str| serde_json::from_str::<Outer>(s);
        assert_eq!(
            parse(r#"{"inner": {"a": "x"}}"#).unwrap().inner.unwrap().a,
            "x"
        );
        assert!(parse(r#"{"inner": null}"#).unwrap().inner.is_none());
        assert!(parse(r#"{}"#).unwrap().inner.is_none());
        for refused in [
            r#"{"inner": ["x"]}"#,
            r#"{"inner": []}"#,
            r#"{"inner": "x"}"#,
        ] {
            let e = parse(refused).unwrap_err().to_string();
            assert!(e.contains("expected a JSON object"), "{refused}: {e}");
        }
        let e = parse(r#"{"inner": {"b": 1}}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
