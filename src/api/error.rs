//! Classifying failures at the edge: every error becomes a stable code, an HTTP status and a
//! message safe to show; the cause chain is logged once, here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use workspace_projections::{InvocationView, SessionView};

use crate::error_code::{Code, ErrorCode};
use crate::readmodel::ReadModelError;

/// An error answer: `{"error":{"code","message","request_id"}}`, plus the invocation or
/// session it concerns when there is one.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code: one of this build's, or one an event or view recorded that this build does
    /// not know (a newer build's), answered as written with a 500.
    pub code: Code,
    /// Message safe to show.
    pub message: String,
    /// Request id.
    pub request_id: String,
    /// The invocation, for invoke errors.
    pub invocation: Option<Value>,
    /// The session, for session errors.
    pub session: Option<Box<SessionView>>,
    /// Seconds after which a retry may succeed (`Retry-After`); an `unavailable` error
    /// without one is answered with [`UNAVAILABLE_RETRY_AFTER`].
    pub retry_after: Option<u64>,
}

/// The `Retry-After` of every `unavailable` (503) answer, in seconds: a store that went away
/// is reconnected in the background, and the answer to `/readyz` says when it is back.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 1;

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<Code>, message: impl Into<String>, request_id: &str) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            request_id: request_id.to_owned(),
            invocation: None,
            session: None,
            retry_after: None,
        }
    }

    /// Attaches the invocation.
    pub fn with_invocation(mut self, invocation: &InvocationView) -> Self {
        self.invocation = serde_json::to_value(invocation).ok();
        self
    }

    /// Attaches an already rendered invocation.
    pub fn with_invocation_value(mut self, invocation: Value) -> Self {
        self.invocation = Some(invocation);
        self
    }

    /// Logs the cause behind this error once, here at the edge, and returns the error.
    pub fn tap_log(self, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = %self.request_id, error = %cause, code = %self.code, "request failed");
        self
    }

    /// The answer to a failed read of the read models (`.map_err(ApiError::read_model(&rid))`):
    /// `unavailable` (503, retry after a second) when the store cannot be reached, otherwise
    /// the error's own code; the cause is logged, never shown.
    pub fn read_model(request_id: &str) -> impl FnOnce(ReadModelError) -> Self + '_ {
        move |err| {
            let code = err.code();
            let message = match code {
                ErrorCode::Unavailable => "read model unavailable",
                ErrorCode::Conflict => "read model is being rebuilt; retry",
                _ => "internal error",
            };
            Self::new(code, message, request_id).tap_log(&err)
        }
    }

    /// A 500 that hides its cause from the caller and logs it.
    pub fn internal(cause: &dyn std::fmt::Display, request_id: &str) -> Self {
        tracing::error!(request_id, error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error", request_id)
    }
}

/// The HTTP status of a code (API.md's table). A code this build does not know is a 500: the
/// answer still carries it as written.
pub fn http_status(code: &Code) -> StatusCode {
    let Code::Known(code) = code else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::PolicyDenied | ErrorCode::NetworkDisabled => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::ApprovalRequired => StatusCode::PRECONDITION_REQUIRED,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ExecutionFailed
        | ErrorCode::GitRepoError
        | ErrorCode::GitUsageError
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable | ErrorCode::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::ToolchainUnavailable => StatusCode::NOT_IMPLEMENTED,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(&self.code);
        if let Code::Unknown(code) = &self.code {
            tracing::warn!(
                request_id = %self.request_id,
                code = code.as_str(),
                "answering with an error code this build does not know (recorded by a newer build?)"
            );
        }
        let mut body = json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "request_id": self.request_id,
            }
        });
        if let Some(inv) = self.invocation {
            body["invocation"] = inv;
        }
        if let Some(session) = self.session {
            body["session"] = serde_json::to_value(*session).unwrap_or(Value::Null);
        }
        let retry_after = self
            .retry_after
            .or((self.code == ErrorCode::Unavailable).then_some(UNAVAILABLE_RETRY_AFTER));
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answered(err: ApiError) -> (StatusCode, Value) {
        let response = err.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn every_code_has_the_status_of_the_error_table() {
        let table = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::PolicyDenied, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::MethodNotAllowed, 405),
            (ErrorCode::Conflict, 409),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::ApprovalRequired, 428),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::ExecutionFailed, 500),
            (ErrorCode::GitRepoError, 500),
            (ErrorCode::GitUsageError, 500),
            (ErrorCode::Internal, 500),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Interrupted, 503),
            (ErrorCode::Timeout, 504),
            (ErrorCode::NetworkDisabled, 403),
            (ErrorCode::ToolchainUnavailable, 501),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, status) in table {
            assert_eq!(http_status(&code.into()).as_u16(), status, "{code}");
        }
    }

    #[tokio::test]
    async fn a_known_code_is_answered_with_its_status_and_name() {
        let (status, body) = answered(ApiError::new(ErrorCode::NotFound, "gone", "req-1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "gone", "request_id": "req-1"}})
        );
    }

    #[tokio::test]
    async fn a_code_this_build_does_not_know_is_a_500_that_keeps_the_code_as_written() {
        let err = ApiError::new(Code::parse("quota_exhausted"), "over quota", "req-1");
        let (status, body) = answered(err).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "quota_exhausted");
        assert_eq!(body["error"]["message"], "over quota");
    }
}
