//! The extractors of every route: a JSON body, path parameters and a query string. Each
//! rejection is the error envelope with a stable code, never axum's plain-text answer.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode};
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES, RequestId};
use crate::error_code::ErrorCode;

fn request_id(extensions: &Extensions) -> String {
    extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// A JSON body: at most [`MAX_BODY_BYTES`] (else 413), unknown fields rejected by the target
/// type.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let rid = request_id(request.extensions());
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
        if bytes.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "invalid request body: empty body",
                &rid,
            ));
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
