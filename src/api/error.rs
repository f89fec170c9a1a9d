//! Classifying failures at the edge: every error becomes a stable code, an HTTP status and a
//! message safe to show; the cause chain is logged once, here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use workspace_projections::{InvocationView, SessionView};

use crate::error_code::ErrorCode;
use crate::readmodel::ReadModelError;

/// An error answer: `{"error":{"code","message","request_id"}}`, plus the invocation or
/// session it concerns when there is one.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
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
    pub fn new(code: ErrorCode, message: impl Into<String>, request_id: &str) -> Self {
        Self {
            code,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
