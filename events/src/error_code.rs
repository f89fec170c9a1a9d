//! Error codes: the stable snake_case codes of the API's error table, as this build knows them
//! ([`ErrorCode`]), and a code as recorded in an event or a view ([`Code`]), which may be one a
//! newer build wrote.
//!
//! The set of codes is part of the contract: codes are added, never renamed. A reader therefore
//! meets codes it does not know (an event or view written by a newer build); it keeps them as
//! written ([`Code::Unknown`]) and never turns them into another code.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stable error code this build knows and can produce.
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
    /// A network tool (git fetch, pull, push) asked for a remote this runtime cannot reach: the
    /// local sandbox has no network. Not retryable: the same call fails the same way here.
    NetworkDisabled,
    /// The program a tool needs (a compiler, a test runner) is absent from the runtime, or
    /// cannot work offline; the message names it. Never a synthetic result instead.
    ToolchainUnavailable,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 19] = [
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
        ErrorCode::NetworkDisabled,
        ErrorCode::ToolchainUnavailable,
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
            ErrorCode::NetworkDisabled => "network_disabled",
            ErrorCode::ToolchainUnavailable => "toolchain_unavailable",
        }
    }

    /// The code a wire name stands for, if this build knows it.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
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

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error code as recorded in an event or a view ([`crate::ErrorInfo::code`]): one this build
/// knows, or one it does not (written by a newer build), kept exactly as written.
///
/// On the wire both are the bare snake_case string, so a known code's JSON is what
/// [`ErrorCode`] writes, and an unknown one round-trips unchanged into views and API answers.
/// Code of this build produces only [`Code::Known`] (`ErrorCode::X.into()`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Code {
    /// A code of this build's table.
    Known(ErrorCode),
    /// A code this build does not know.
    Unknown(UnknownCode),
}

/// The text of a code this build does not know. Never the name of a known code: only
/// [`Code::parse`] makes one, and it reads known names as [`Code::Known`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownCode(Box<str>);

impl UnknownCode {
    /// The code as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Code {
    /// Reads a wire code: a known one as [`Code::Known`], anything else as [`Code::Unknown`],
    /// kept as written. Never fails and never substitutes another code.
    pub fn parse(value: &str) -> Self {
        match ErrorCode::parse(value) {
            Some(code) => Code::Known(code),
            None => Code::Unknown(UnknownCode(value.into())),
        }
    }

    /// [`Code::parse`] of an owned string, keeping its buffer for an unknown code.
    fn parse_owned(value: String) -> Self {
        match ErrorCode::parse(&value) {
            Some(code) => Code::Known(code),
            None => Code::Unknown(UnknownCode(value.into_boxed_str())),
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Code::Known(code) => code.as_str(),
            Code::Unknown(code) => code.as_str(),
        }
    }

    /// The code of this build's table, if it is one.
    pub fn known(&self) -> Option<ErrorCode> {
        match self {
            Code::Known(code) => Some(*code),
            Code::Unknown(_) => None,
        }
    }
}

impl From<ErrorCode> for Code {
    fn from(code: ErrorCode) -> Self {
        Code::Known(code)
    }
}

impl PartialEq<ErrorCode> for Code {
    fn eq(&self, other: &ErrorCode) -> bool {
        *self == Code::Known(*other)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl Visitor<'_> for CodeVisitor {
            type Value = Code;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error code string")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Code, E> {
                Ok(Code::parse(value))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<Code, E> {
                Ok(Code::parse_owned(value))
            }
        }

        deserializer.deserialize_str(CodeVisitor)
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

    #[test]
    fn a_known_code_reads_as_its_variant_and_writes_what_error_code_writes() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).unwrap();
            let read: Code = serde_json::from_str(&wire).unwrap();
            assert_eq!(read, Code::Known(code));
            assert_eq!(read, code);
            assert_eq!(read.known(), Some(code));
            assert_eq!(serde_json::to_string(&read).unwrap(), wire);
            assert_eq!(serde_json::to_string(&Code::from(code)).unwrap(), wire);
        }
    }

    #[test]
    fn an_unknown_code_is_kept_as_written_never_as_internal() {
        for text in ["quota_exhausted", "", "Not_Found", "esc\"aped é \u{1}"] {
            let wire = serde_json::to_string(text).unwrap();
            let read: Code = serde_json::from_str(&wire).unwrap();
            assert!(matches!(read, Code::Unknown(_)), "{wire}: {read:?}");
            assert_eq!((read.known(), read.as_str()), (None, text));
            assert_ne!(read, ErrorCode::Internal, "{wire}");
            assert_eq!(serde_json::to_string(&read).unwrap(), wire);
            // Also when the deserializer hands over an owned string.
            let value = serde_json::Value::String(text.into());
            assert_eq!(serde_json::from_value::<Code>(value).unwrap(), read);
        }
        let read = Code::parse("quota_exhausted");
        assert_eq!(read.as_str(), "quota_exhausted");
        assert_eq!(read.to_string(), "quota_exhausted");
    }

    #[test]
    fn a_code_that_is_not_a_string_does_not_decode() {
        assert!(serde_json::from_str::<Code>("404").is_err());
        assert!(serde_json::from_str::<Code>("null").is_err());
    }
}
