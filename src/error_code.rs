//! The stable error codes of the API (API.md's table). The set is part of the contract: codes
//! are added, never renamed.

use serde::{Deserialize, Serialize};

/// A stable, snake_case error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed body, unknown field, missing or ill-typed argument.
    InvalidArgument,
    /// Missing or wrong credentials (trusted-headers mode).
    Unauthorized,
    /// Refused by policy (roles, risk, paths, argument rules, ownership).
    PolicyDenied,
    /// Unknown session, tool, invocation, artifact, route or file.
    NotFound,
    /// Known route, wrong method.
    MethodNotAllowed,
    /// A lost optimistic-concurrency race, or a session in the wrong state.
    Conflict,
    /// Body over the limit.
    PayloadTooLarge,
    /// The tool requires `"approved": true`.
    ApprovalRequired,
    /// A rate or concurrency quota.
    RateLimited,
    /// The tool ran and failed.
    ExecutionFailed,
    /// git exited 128.
    GitRepoError,
    /// git exited 129.
    GitUsageError,
    /// A bug or a broken dependency.
    Internal,
    /// The event store, read models or sandbox cannot be reached; retryable.
    Unavailable,
    /// The tool's timeout expired; its process tree was killed.
    Timeout,
    /// A request body that is not `application/json`.
    UnsupportedMediaType,
    /// The invocation was running when its executor stopped (a crash): its effect may or may
    /// not have happened. Retryable.
    Interrupted,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthorized,
        ErrorCode::PolicyDenied,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ApprovalRequired,
        ErrorCode::RateLimited,
        ErrorCode::ExecutionFailed,
        ErrorCode::GitRepoError,
        ErrorCode::GitUsageError,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Interrupted,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ApprovalRequired => "approval_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ExecutionFailed => "execution_failed",
            ErrorCode::GitRepoError => "git_repo_error",
            ErrorCode::GitUsageError => "git_usage_error",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Interrupted => "interrupted",
        }
    }

    /// Parses a wire code.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }

    /// The HTTP status the API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::PolicyDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ApprovalRequired => 428,
            ErrorCode::RateLimited => 429,
            ErrorCode::ExecutionFailed | ErrorCode::GitRepoError | ErrorCode::GitUsageError => 500,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Interrupted => 503,
        }
    }

    /// Whether an invocation refused with this code is `denied` (never ran) rather than
    /// `failed`.
    pub fn is_denial(self) -> bool {
        matches!(
            self,
            ErrorCode::PolicyDenied | ErrorCode::ApprovalRequired | ErrorCode::RateLimited
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
        }
    }
}
